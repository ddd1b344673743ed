//! The pipeline of one webhook: source lookup, plugin verify and map, dedupe, durable
//! storage with its outbox, and the hand-off to the relay. HTTP concerns stay outside.

pub mod batch;
pub mod replay;
pub mod rotation;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::dedupe;
use crate::metrics::{Metrics, PluginFailure, PluginLabel, SecretLabel, SourceLabel};
use crate::plugin::{
    Credentials, DomainEvent, Handshake, MapFailure, MapOutcome, Mapping, OwnedCallInput, Plugin,
    PluginFault, PluginRegistry, Processed, Timestamp, VerifyError, WebhookRequest,
};
use crate::publish::envelope::{self, EnvelopeInput, EventData};
use crate::publish::relay::RelayHandle;
use crate::secrets::TenantSecrets;
use crate::store::{
    EntryStatus, InsertOutcome, NewEntry, NewEvent, NewWebhook, OutboxEvent, StoreError,
};
use batch::BatchWriter;

/// One configured source, ready to serve: its plugin, secrets and settings.
pub struct SourceRuntime {
    pub name: String,
    pub plugin: Arc<Plugin>,
    /// Secrets, keys and the signed URL; the plugin sees only handles.
    pub credentials: Credentials,
    pub settings: Arc<crate::plugin::Settings>,
    pub dedupe_ttl: Duration,
    /// [`rotation::fingerprint`] of each secret, in `credentials.secrets` order.
    pub secret_ids: Arc<[String]>,
}

/// The sources by name; swapped whole on reload.
pub type SourceTable = HashMap<String, Arc<SourceRuntime>>;

/// What serves webhooks now: the sources and the plugin set they were bound from,
/// swapped together so the admin API never shows a plugin set the sources do not use.
struct Serving {
    sources: Arc<SourceTable>,
    plugins: PluginRegistry,
}

/// A webhook as the HTTP layer hands it over.
pub struct Delivery {
    pub source: String,
    pub request: WebhookRequest,
    pub correlation_id: String,
    pub received_at: DateTime<Utc>,
}

/// How a webhook ended, when it ended well for the sender (2xx).
#[derive(Debug)]
pub enum Ingested {
    /// Stored under this id (mapped, or marked failed when it could not be mapped).
    Accepted(Uuid),
    /// Already stored under this id.
    Duplicate(Uuid),
    /// The plugin asked for this response instead; nothing stored.
    Handshake(Handshake),
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("unknown or disabled source")]
    UnknownSource,
    #[error("verification failed: {0}")]
    Rejected(VerifyError),
    #[error("plugin fault: {0}")]
    PluginFault(PluginFault),
    #[error("storage unavailable: {0}")]
    StorageUnavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub struct Pipeline {
    serving: RwLock<Arc<Serving>>,
    writer: BatchWriter,
    relay: RelayHandle,
    metrics: Arc<Metrics>,
    subject_prefix: String,
    /// This deployment's share of the dedupe cache (`Config::dedupe_namespace`).
    cache_namespace: String,
    secret_usage: rotation::SecretUsage,
    tenant_secrets: Arc<TenantSecrets>,
    /// Bulk replays run one at a time, so they never take more than a sliver of the
    /// plugin threads, the storage and the relay from live traffic.
    replay_slot: tokio::sync::Semaphore,
}

impl Pipeline {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sources: SourceTable,
        plugins: PluginRegistry,
        writer: BatchWriter,
        relay: RelayHandle,
        metrics: Arc<Metrics>,
        subject_prefix: String,
        cache_namespace: String,
        tenant_secrets: Arc<TenantSecrets>,
    ) -> Self {
        Self {
            serving: RwLock::new(Arc::new(Serving {
                sources: Arc::new(sources),
                plugins,
            })),
            writer,
            relay,
            metrics,
            subject_prefix,
            cache_namespace,
            secret_usage: rotation::SecretUsage::default(),
            tenant_secrets,
            replay_slot: tokio::sync::Semaphore::new(1),
        }
    }

    fn serving(&self) -> Arc<Serving> {
        match self.serving.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn sources(&self) -> Arc<SourceTable> {
        self.serving().sources.clone()
    }

    /// The plugin set the sources were bound from.
    pub fn plugins(&self) -> PluginRegistry {
        self.serving().plugins.clone()
    }

    /// Replaces every source and the plugin set at once; requests in flight keep the
    /// sources they started with.
    pub fn replace(&self, table: SourceTable, plugins: PluginRegistry) {
        let serving = Arc::new(Serving {
            sources: Arc::new(table),
            plugins,
        });
        match self.serving.write() {
            Ok(mut guard) => *guard = serving,
            Err(poisoned) => *poisoned.into_inner() = serving,
        }
    }

    /// Replaces every source, keeping the plugin set.
    pub fn replace_sources(&self, table: SourceTable) {
        self.replace(table, self.plugins());
    }

    pub async fn ingest(&self, delivery: Delivery) -> Result<Ingested, IngestError> {
        let source_name = delivery.source.clone();
        let result = self.run(delivery).await;
        let outcome = match &result {
            Ok(Ingested::Accepted(_)) => "accepted",
            Ok(Ingested::Duplicate(_)) => "duplicate",
            Ok(Ingested::Handshake(_)) => "handshake",
            Err(IngestError::UnknownSource) => "unknown_source",
            Err(IngestError::Rejected(_)) => "rejected",
            Err(IngestError::PluginFault(_)) => "plugin_fault",
            Err(IngestError::StorageUnavailable(_)) => "unavailable",
            Err(IngestError::Internal(_)) => "error",
        };
        // Unknown sources are not labelled by name: anyone can invent paths.
        let label = if matches!(result, Err(IngestError::UnknownSource)) {
            "unknown"
        } else {
            &source_name
        };
        self.metrics.webhook(label, outcome);
        result
    }

    async fn run(&self, mut delivery: Delivery) -> Result<Ingested, IngestError> {
        let source = self
            .sources()
            .get(&delivery.source)
            .cloned()
            .ok_or(IngestError::UnknownSource)?;
        let request = Arc::new(std::mem::take(&mut delivery.request));
        let (processed, tenant_ids) = self
            .call_plugin(&source, request.clone(), &delivery.correlation_id)
            .await?;
        let (mapped, matched_secret, matched_key) = match processed {
            Processed::Rejected(error) => {
                tracing::warn!(source = %source.name, correlation_id = %delivery.correlation_id, reason = %error, "webhook failed verification");
                return Err(IngestError::Rejected(error));
            }
            Processed::Verified {
                matched_secret,
                matched_key,
                mapped,
            } => (mapped, matched_secret, matched_key),
        };
        tracing::debug!(source = %source.name, correlation_id = %delivery.correlation_id, ?matched_secret, ?matched_key, "webhook verified");
        let ids = tenant_ids.unwrap_or_else(|| source.secret_ids.clone());
        if let Some(id) = matched_secret.and_then(|i| ids.get(i)) {
            self.secret_matched(&source.name, id, delivery.received_at);
        }
        let webhook = match mapped {
            Ok(MapOutcome::Respond(handshake)) => return Ok(Ingested::Handshake(handshake)),
            Ok(MapOutcome::Events(mapping)) => {
                self.mapped_webhook(&source, &request, &delivery, mapping)
            }
            Err(failure) => {
                let reason = match &failure {
                    MapFailure::Plugin(error) => error.to_string(),
                    MapFailure::Fault(fault) => {
                        self.count_fault(&source, fault);
                        format!("plugin fault: {fault}")
                    }
                };
                tracing::warn!(source = %source.name, correlation_id = %delivery.correlation_id, %reason, "verified webhook could not be mapped; storing it as failed");
                Ok(self.failed_webhook(&source, &request, &delivery, None, None, None, reason))
            }
        };
        let webhook = webhook?;
        self.store(&source, webhook).await
    }

    async fn call_plugin(
        &self,
        source: &Arc<SourceRuntime>,
        request: Arc<WebhookRequest>,
        correlation_id: &str,
    ) -> Result<(Processed, Option<Arc<[String]>>), IngestError> {
        let started = Instant::now();
        let input = OwnedCallInput {
            request,
            credentials: source.credentials.clone(),
            settings: source.settings.clone(),
            now_unix_seconds: None,
            correlation_id: correlation_id.to_owned(),
        };
        // Only a source some tenant holds secrets for pays for the `tenant-hint` call. The
        // result carries the ids of the tenant secrets it was verified with, if any.
        let result = if let Some(tenants) = self.tenant_secrets.for_source(&source.name) {
            let lookup = tenants.lookup(&source.credentials);
            source
                .plugin
                .process_for_tenant_async(input, lookup)
                .await
                .map(|(processed, tenant)| (processed, tenant.and_then(|t| tenants.ids(&t))))
        } else {
            source
                .plugin
                .process_async(input)
                .await
                .map(|processed| (processed, None))
        };
        let plugin_name = source.plugin.metadata().name.clone();
        self.metrics
            .plugin_call_duration
            .get_or_create(&PluginLabel {
                plugin: plugin_name,
            })
            .observe(started.elapsed().as_secs_f64());
        result.map_err(|fault| {
            self.count_fault(source, &fault);
            tracing::error!(source = %source.name, correlation_id, %fault, "plugin fault during verify");
            IngestError::PluginFault(fault)
        })
    }

    fn secret_matched(&self, source: &str, id: &str, at: DateTime<Utc>) {
        self.metrics
            .secret_matches
            .get_or_create(&SecretLabel {
                source: source.to_owned(),
                secret: id.to_owned(),
            })
            .inc();
        self.secret_usage.record(source, id, at);
    }

    /// How often, and when last, each secret of `source` matched.
    pub fn secret_use(&self, source: &str, id: &str) -> Option<rotation::SecretUse> {
        self.secret_usage.get(source, id)
    }

    fn count_fault(&self, source: &SourceRuntime, fault: &PluginFault) {
        self.metrics
            .plugin_failures
            .get_or_create(&PluginFailure {
                plugin: source.plugin.metadata().name.clone(),
                kind: fault.code(),
            })
            .inc();
    }

    fn mapped_webhook(
        &self,
        source: &SourceRuntime,
        request: &WebhookRequest,
        delivery: &Delivery,
        mapping: Mapping,
    ) -> Result<NewWebhook, IngestError> {
        let entry_id = Uuid::now_v7();
        let occurred = mapping
            .occurred_at
            .as_ref()
            .and_then(Timestamp::to_utc)
            .unwrap_or(delivery.received_at);
        let metadata = source.plugin.metadata();
        let plugin = format!("{}@{}", metadata.name, metadata.version);
        let content_type = header(request, "content-type");
        let mut events = Vec::with_capacity(mapping.events.len());
        for (seq, event) in mapping.events.iter().enumerate() {
            match self.encode_event(
                source,
                request,
                delivery,
                entry_id,
                entry_id,
                seq,
                event,
                occurred,
                &mapping,
                &plugin,
                content_type,
            ) {
                Ok(encoded) => events.push(encoded),
                Err(reason) => {
                    // The plugin produced something unpublishable: keep the webhook for replay.
                    tracing::warn!(source = %source.name, correlation_id = %delivery.correlation_id, %reason, "mapping output rejected");
                    return Ok(self.failed_webhook(
                        source,
                        request,
                        delivery,
                        Some(mapping.topic.clone()),
                        mapping.tenant.clone(),
                        mapping.idempotency_key.clone(),
                        reason,
                    ));
                }
            }
        }
        // Nothing to publish means nothing left to do for this entry.
        let status = if events.is_empty() {
            EntryStatus::Published
        } else {
            EntryStatus::Accepted
        };
        let idempotency_key = mapping
            .idempotency_key
            .clone()
            .unwrap_or_else(|| body_key(&request.body));
        Ok(NewWebhook {
            entry: NewEntry {
                id: entry_id,
                source: source.name.clone(),
                topic: Some(mapping.topic),
                tenant: mapping.tenant,
                idempotency_key,
                headers: request.headers.clone(),
                body: request.body.clone(),
                received_at: delivery.received_at,
                status,
                last_error: None,
                plugin: metadata.name.clone(),
                plugin_version: metadata.version.clone(),
                plugin_sha256: source.plugin.sha256_hex(),
                correlation_id: delivery.correlation_id.clone(),
            },
            events,
        })
    }

    /// `ids_from`: what the event's id derives from, the entry's id on arrival and the
    /// replay's id on a replay (new events get new ids).
    #[allow(clippy::too_many_arguments)]
    fn encode_event(
        &self,
        source: &SourceRuntime,
        request: &WebhookRequest,
        delivery: &Delivery,
        entry_id: Uuid,
        ids_from: Uuid,
        seq: usize,
        event: &DomainEvent,
        occurred: DateTime<Utc>,
        mapping: &Mapping,
        plugin: &str,
        content_type: Option<&str>,
    ) -> Result<NewEvent, String> {
        let subject = envelope::subject(&self.subject_prefix, &source.name, &event.event_type)
            .map_err(|e| e.to_string())?;
        let id = event_id(ids_from, seq);
        let data = match &event.data {
            Some(json) => EventData::Json(json.as_bytes()),
            None => EventData::Body {
                bytes: &request.body,
                content_type,
            },
        };
        let encoded = envelope::encode_located(&EnvelopeInput {
            id: &id,
            source: &source.name,
            event_type: &event.event_type,
            subject: event.subject.as_deref(),
            time: occurred,
            data,
            correlation_id: &delivery.correlation_id,
            webhook_id: entry_id,
            tenant: mapping.tenant.as_deref(),
            plugin,
        })
        .map_err(|e| e.to_string())?;
        Ok(NewEvent {
            id,
            seq: seq as i32,
            subject,
            envelope: encoded.bytes,
            body_at: encoded.body_at,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn failed_webhook(
        &self,
        source: &SourceRuntime,
        request: &WebhookRequest,
        delivery: &Delivery,
        topic: Option<String>,
        tenant: Option<String>,
        idempotency_key: Option<String>,
        reason: String,
    ) -> NewWebhook {
        let metadata = source.plugin.metadata();
        NewWebhook {
            entry: NewEntry {
                id: Uuid::now_v7(),
                source: source.name.clone(),
                topic,
                tenant,
                // The sender's retry carries the same bytes: it must find this entry.
                idempotency_key: idempotency_key.unwrap_or_else(|| body_key(&request.body)),
                headers: request.headers.clone(),
                body: request.body.clone(),
                received_at: delivery.received_at,
                status: EntryStatus::Failed,
                last_error: Some(reason),
                plugin: metadata.name.clone(),
                plugin_version: metadata.version.clone(),
                plugin_sha256: source.plugin.sha256_hex(),
                correlation_id: delivery.correlation_id.clone(),
            },
            events: Vec::new(),
        }
    }

    async fn store(
        &self,
        source: &SourceRuntime,
        webhook: NewWebhook,
    ) -> Result<Ingested, IngestError> {
        let cache_key = dedupe::cache_key(
            &self.cache_namespace,
            &source.name,
            &webhook.entry.idempotency_key,
        );
        let entry_id = webhook.entry.id;
        let received_at = webhook.entry.received_at;
        let fresh: Vec<OutboxEvent> = webhook
            .events
            .iter()
            .map(|event| OutboxEvent {
                id: event.id.clone(),
                entry_id,
                subject: event.subject.clone(),
                envelope: event.envelope.clone(),
                attempts: 0,
                created_at: received_at,
            })
            .collect();
        let outcome = self
            .writer
            .insert(webhook, cache_key, source.dedupe_ttl)
            .await
            .map_err(|error| match error {
                StoreError::Unavailable(message) => IngestError::StorageUnavailable(message),
                other => IngestError::Internal(other.to_string()),
            })?;
        match outcome {
            InsertOutcome::Inserted => {
                self.relay.notify(fresh);
                Ok(Ingested::Accepted(entry_id))
            }
            InsertOutcome::Duplicate { existing_id } => {
                self.metrics
                    .dedupe_hits
                    .get_or_create(&SourceLabel {
                        source: source.name.clone(),
                    })
                    .inc();
                Ok(Ingested::Duplicate(existing_id))
            }
        }
    }
}

/// The first value of a header (names are lower case in requests).
pub fn header<'a>(request: &'a WebhookRequest, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// The idempotency key of a source that has none: the body's digest.
fn body_key(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
}

/// Stable for a given webhook entry and event position, so re-publishes are dropped by
/// JetStream's `Nats-Msg-Id` window; and ordered like the entry ids (UUIDv7) it comes
/// from: the entry's time-ordered first half, then half of a name-based hash of (entry,
/// index). A purely hashed id scattered every insert across the whole event-id index, one
/// random B-tree page written per event (and a full-page image in PostgreSQL's WAL).
fn event_id(entry_id: Uuid, seq: usize) -> String {
    let hashed = Uuid::new_v5(&entry_id, format!("event/{seq}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&entry_id.as_bytes()[..8]);
    bytes[8..].copy_from_slice(&hashed.as_bytes()[8..]);
    Uuid::new_v8(bytes).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_stable_and_distinct() {
        let entry = Uuid::now_v7();
        assert_eq!(event_id(entry, 0), event_id(entry, 0));
        assert_ne!(event_id(entry, 0), event_id(entry, 1));
        assert_ne!(event_id(entry, 0), event_id(Uuid::now_v7(), 0));
        let parsed = Uuid::parse_str(&event_id(entry, 3)).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 8);
    }

    #[test]
    fn event_ids_sort_like_the_entries_they_come_from() {
        let entries: Vec<Uuid> = (0..64)
            .map(|i| {
                // Distinct milliseconds, in order.
                let ts = uuid::Timestamp::from_unix(uuid::NoContext, 1_790_000_000 + i, 0);
                Uuid::new_v7(ts)
            })
            .collect();
        let events_of =
            |entry: Uuid| -> Vec<String> { (0..3).map(|seq| event_id(entry, seq)).collect() };
        for pair in entries.windows(2) {
            let (earlier, later) = (events_of(pair[0]), events_of(pair[1]));
            let last_of_earlier = earlier.iter().max().expect("three ids");
            let first_of_later = later.iter().min().expect("three ids");
            assert!(
                last_of_earlier < first_of_later,
                "{last_of_earlier} sorts after {first_of_later}"
            );
        }
    }

    #[test]
    fn body_key_is_the_sha256_of_the_raw_bytes() {
        assert_eq!(
            body_key(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
