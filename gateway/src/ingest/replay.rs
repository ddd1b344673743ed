//! Replays: a stored webhook re-mapped through the plugin its source is bound to now, its
//! new events added to the outbox beside the old ones and handed to the relay; dead events
//! put back in the outbox; bulk replays run as jobs, in small batches, one job at a time.
//! Every replay is recorded (`webhook_replays`), the failed ones with their reason.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Delivery, Pipeline, header};
use crate::metrics::ReplayLabel;
use crate::plugin::{
    Credentials, MapFailure, MapOutcome, OwnedCallInput, Timestamp, WebhookRequest,
};
use crate::store::{
    Cursor, DeadFilter, EntryFilter, JobKind, JobProgress, JobStatus, NewEvent, OutboxEvent,
    PluginRef, Remapped, ReplayJob, ReplayKind, ReplayOutcome, ReplayRecord, Requester, Store,
    StoreError, StoredEntry,
};

/// Webhooks a job re-maps between two progress checkpoints and pauses.
const JOB_BATCH: u32 = 25;
/// Dead events a job re-queues per transaction: a cheap update each, but every one of
/// them is then a publication the relay makes alongside live traffic.
const DLQ_BATCH: u32 = 200;
/// The pause between two batches of a job: live webhooks get the plugin threads, the
/// storage's writer and the relay in between.
const JOB_PAUSE: Duration = Duration::from_millis(100);
/// How often a job that is waiting or running records that it is alive.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// A job not heard of for this long was stopped with its gateway: shown as interrupted.
pub const STALE_AFTER: Duration = Duration::from_secs(120);
/// Storage retries before a job gives up (waits 1, 2, 4, 8, 16 s).
const STORE_RETRIES: u32 = 5;

/// Who asked, as recorded: the first 8 hex digits of the admin token's SHA-256. Enough to
/// tell tokens apart across a rotation; the token itself is never stored or shown.
pub fn token_fingerprint(token: &str) -> String {
    let digest = hex::encode(Sha256::digest(token.trim().as_bytes()));
    format!("token:{}", &digest[..8])
}

/// What re-mapping one stored webhook through its source's current plugin gives.
#[derive(Debug, Clone)]
pub enum Remap {
    /// Mapped: these events would be (or are) published.
    Mapped {
        plugin: PluginRef,
        remapped: Remapped,
    },
    /// Not mapped, and why. `plugin` is none when the source is no longer configured.
    Failed {
        plugin: Option<PluginRef>,
        reason: String,
    },
}

/// A bulk replay's selection.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Stored webhooks to re-map.
    Webhooks(EntryFilter),
    /// Dead events to re-queue.
    Dlq(DeadFilter),
}

/// The request of a stored webhook as its plugin saw it, as far as it is stored. The path
/// and query of the original request are not: the plugin sees the stored topic as the
/// path's, which is where the bundled sources that take one from the path would have
/// found it.
pub fn stored_request(entry: &StoredEntry) -> Arc<WebhookRequest> {
    let path = match &entry.topic {
        Some(topic) => format!("/api/v1/webhooks/{}/{topic}", entry.source),
        None => format!("/api/v1/webhooks/{}", entry.source),
    };
    Arc::new(WebhookRequest {
        method: "POST".into(),
        path,
        topic: entry.topic.clone(),
        query: None,
        headers: entry.headers.clone(),
        body: entry.body.clone(),
    })
}

impl Pipeline {
    /// Re-maps a stored webhook through the plugin its source is bound to now, without
    /// writing anything. Its signature was checked on arrival and is not checked again.
    /// `replay_id` is what the new events' ids derive from.
    pub async fn remap_stored(&self, entry: &StoredEntry, replay_id: Uuid) -> Remap {
        let Some(source) = self.sources().get(&entry.source).cloned() else {
            return Remap::Failed {
                plugin: None,
                reason: format!(
                    "source {:?} is not configured (or is disabled) now",
                    entry.source
                ),
            };
        };
        let metadata = source.plugin.metadata();
        let plugin = PluginRef {
            name: metadata.name.clone(),
            version: metadata.version.clone(),
            sha256: source.plugin.sha256_hex(),
        };
        if let Some(error) = &entry.headers_error {
            return Remap::Failed {
                plugin: Some(plugin),
                reason: error.clone(),
            };
        }
        let request = stored_request(entry);
        let input = OwnedCallInput {
            request: request.clone(),
            credentials: Credentials::default(),
            settings: source.settings.clone(),
            // The plugin's clock reads the arrival time, as it did then.
            now_unix_seconds: Some(entry.received_at.timestamp()),
            correlation_id: entry.correlation_id.clone(),
        };
        let mapping = match source.plugin.map_stored_async(input).await {
            Ok(MapOutcome::Events(mapping)) => mapping,
            Ok(MapOutcome::Respond(_)) => {
                return Remap::Failed {
                    plugin: Some(plugin),
                    reason: "the plugin now answers this webhook with a handshake response: \
                             there is nothing to publish"
                        .into(),
                };
            }
            Err(failure) => {
                let reason = match &failure {
                    MapFailure::Plugin(error) => error.to_string(),
                    MapFailure::Fault(fault) => {
                        self.count_fault(&source, fault);
                        format!("plugin fault: {fault}")
                    }
                };
                return Remap::Failed {
                    plugin: Some(plugin),
                    reason,
                };
            }
        };
        let delivery = Delivery {
            source: entry.source.clone(),
            request: WebhookRequest::default(),
            correlation_id: entry.correlation_id.clone(),
            received_at: entry.received_at,
        };
        let occurred = mapping
            .occurred_at
            .as_ref()
            .and_then(Timestamp::to_utc)
            .unwrap_or(entry.received_at);
        let plugin_tag = format!("{}@{}", plugin.name, plugin.version);
        let content_type = header(&request, "content-type");
        let mut events: Vec<NewEvent> = Vec::with_capacity(mapping.events.len());
        for (seq, event) in mapping.events.iter().enumerate() {
            match self.encode_event(
                &source,
                &request,
                &delivery,
                entry.id,
                replay_id,
                seq,
                event,
                occurred,
                &mapping,
                &plugin_tag,
                content_type,
            ) {
                Ok(encoded) => events.push(encoded),
                Err(reason) => {
                    return Remap::Failed {
                        plugin: Some(plugin),
                        reason,
                    };
                }
            }
        }
        Remap::Mapped {
            plugin,
            remapped: Remapped {
                topic: Some(mapping.topic),
                tenant: mapping.tenant,
                events,
                body: entry.body.clone(),
            },
        }
    }

    /// Replays one stored webhook: re-maps it, records the replay and, when it mapped,
    /// its new events, in one transaction, then hands the events to the relay. A webhook
    /// that still fails to map is left as it was; the record says why. `None` when the
    /// entry was deleted meanwhile.
    pub async fn replay_entry(
        &self,
        store: &Arc<dyn Store>,
        entry: &StoredEntry,
        requested_by: &str,
        job_id: Option<Uuid>,
    ) -> Result<Option<ReplayRecord>, StoreError> {
        let replay_id = Uuid::now_v7();
        let requested_at = Utc::now();
        let (plugin, remapped, error) = match self.remap_stored(entry, replay_id).await {
            Remap::Mapped { plugin, remapped } => (Some(plugin), Some(remapped), None),
            Remap::Failed { plugin, reason } => (plugin, None, Some(reason)),
        };
        let outcome = match &remapped {
            None => ReplayOutcome::Failed,
            Some(r) if r.events.is_empty() => ReplayOutcome::NoEvents,
            Some(_) => ReplayOutcome::Queued,
        };
        let record = ReplayRecord {
            id: replay_id,
            entry_id: entry.id,
            job_id,
            kind: ReplayKind::Remap,
            requested_at,
            requested_by: requested_by.to_owned(),
            plugin,
            event_ids: remapped
                .iter()
                .flat_map(|r| r.events.iter().map(|e| e.id.clone()))
                .collect(),
            outcome,
            error,
        };
        if !store.record_remap(&record, remapped.as_ref()).await? {
            return Ok(None);
        }
        self.count_replay(&record);
        match &record.error {
            Some(reason) => {
                tracing::warn!(webhook_id = %entry.id, source = %entry.source, replay_id = %record.id, %reason, "replayed webhook still cannot be mapped")
            }
            None => {
                tracing::info!(webhook_id = %entry.id, source = %entry.source, replay_id = %record.id, events = record.event_ids.len(), "webhook replayed")
            }
        }
        if let Some(remapped) = remapped {
            self.relay.notify(
                remapped
                    .events
                    .into_iter()
                    .map(|event| OutboxEvent {
                        id: event.id,
                        entry_id: entry.id,
                        subject: event.subject,
                        envelope: event.envelope,
                        attempts: 0,
                        created_at: requested_at,
                    })
                    .collect(),
            );
        }
        Ok(Some(record))
    }

    /// Re-queues one dead event; `None` when no event with this id is in the dead-letter
    /// queue.
    pub async fn requeue_dead_event(
        &self,
        store: &Arc<dyn Store>,
        event_id: &str,
        requested_by: &str,
    ) -> Result<Option<ReplayRecord>, StoreError> {
        let filter = DeadFilter {
            event_id: Some(event_id.to_owned()),
            ..DeadFilter::default()
        };
        let by = Requester {
            job_id: None,
            requested_at: Utc::now(),
            requested_by: requested_by.to_owned(),
        };
        let page = store.requeue_dead(&filter, None, 1, &by).await?;
        for record in &page.records {
            self.count_replay(record);
        }
        Ok(page.records.into_iter().next())
    }

    pub(crate) fn count_replay(&self, record: &ReplayRecord) {
        self.metrics
            .replays
            .get_or_create(&ReplayLabel {
                kind: record.kind.as_str(),
                outcome: record.outcome.as_str(),
            })
            .inc();
    }

    /// Records a bulk replay as a job and starts it in the background; returns the job as
    /// first recorded. It waits for the replay slot, then goes through its selection
    /// oldest first in small batches, pausing between them.
    pub async fn start_replay_job(
        self: &Arc<Self>,
        store: Arc<dyn Store>,
        selection: Selection,
        filter_json: String,
        requested_by: String,
    ) -> Result<ReplayJob, StoreError> {
        let now = Utc::now();
        let job = ReplayJob {
            id: Uuid::now_v7(),
            kind: match selection {
                Selection::Webhooks(_) => JobKind::Webhooks,
                Selection::Dlq(_) => JobKind::Dlq,
            },
            filter: filter_json,
            requested_by,
            status: JobStatus::Queued,
            progress: JobProgress::default(),
            created_at: now,
            updated_at: now,
            finished_at: None,
            error: None,
        };
        store.save_replay_job(&job).await?;
        tokio::spawn(Arc::clone(self).run_job(store, job.clone(), selection));
        Ok(job)
    }

    async fn run_job(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        mut job: ReplayJob,
        selection: Selection,
    ) {
        let _slot = loop {
            match tokio::time::timeout(HEARTBEAT, self.replay_slot.acquire()).await {
                Ok(Ok(permit)) => break permit,
                // The semaphore is never closed; should it be, nothing can run.
                Ok(Err(_)) => return,
                Err(_) => checkpoint(&store, &mut job).await,
            }
        };
        job.status = JobStatus::Running;
        checkpoint(&store, &mut job).await;
        tracing::info!(job_id = %job.id, kind = job.kind.as_str(), filter = %job.filter, "replay job started");
        let result = match selection {
            // Only what was there when the job was asked for: a job always ends, and
            // webhooks stored meanwhile were mapped by the plugin serving now anyway.
            Selection::Webhooks(mut filter) => {
                filter.until = Some(
                    filter
                        .until
                        .map_or(job.created_at, |u| u.min(job.created_at)),
                );
                self.replay_entries(&store, &mut job, &filter).await
            }
            // The queue is walked in key order, and an event this job re-queues that dies
            // again keeps its key, behind the walk: the job ends once it has caught up.
            Selection::Dlq(filter) => requeue_all(&store, &mut job, &filter, &self).await,
        };
        match result {
            Ok(()) => job.status = JobStatus::Completed,
            Err(error) => {
                tracing::error!(job_id = %job.id, %error, "replay job stopped by a storage failure");
                job.status = JobStatus::Failed;
                job.error = Some(
                    match error {
                        StoreError::Unavailable(_) => {
                            "storage unavailable; run the replay again to go on where it stopped"
                        }
                        _ => "storage error; the gateway's log says which",
                    }
                    .to_owned(),
                );
            }
        }
        job.finished_at = Some(Utc::now());
        // The final state must land, or the job would look interrupted.
        for attempt in 0..STORE_RETRIES {
            job.updated_at = Utc::now();
            match store.save_replay_job(&job).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(job_id = %job.id, %error, "could not record the end of a replay job");
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        tracing::info!(job_id = %job.id, status = job.status.as_str(), processed = job.progress.processed, failed = job.progress.failed, "replay job finished");
    }

    async fn replay_entries(
        &self,
        store: &Arc<dyn Store>,
        job: &mut ReplayJob,
        filter: &EntryFilter,
    ) -> Result<(), StoreError> {
        let mut after: Option<Cursor> = None;
        let mut last_checkpoint = Instant::now();
        loop {
            let entries =
                retry(|| store.list_entries_oldest_first(filter, after, JOB_BATCH)).await?;
            let Some(last) = entries.last() else {
                return Ok(());
            };
            after = Some(Cursor {
                received_at: last.received_at,
                id: last.id,
            });
            for entry in &entries {
                let record =
                    retry(|| self.replay_entry(store, entry, &job.requested_by, Some(job.id)))
                        .await?;
                job.progress.processed += 1;
                match record {
                    Some(record) if record.outcome == ReplayOutcome::Failed => {
                        job.progress.failed += 1
                    }
                    Some(record) => {
                        job.progress.replayed += 1;
                        job.progress.events += record.event_ids.len() as u64;
                    }
                    // Deleted since it was listed: nothing to replay.
                    None => {}
                }
                if last_checkpoint.elapsed() >= Duration::from_secs(1) {
                    checkpoint(store, job).await;
                    last_checkpoint = Instant::now();
                }
            }
            checkpoint(store, job).await;
            last_checkpoint = Instant::now();
            tokio::time::sleep(JOB_PAUSE).await;
        }
    }
}

async fn requeue_all(
    store: &Arc<dyn Store>,
    job: &mut ReplayJob,
    filter: &DeadFilter,
    pipeline: &Pipeline,
) -> Result<(), StoreError> {
    let mut after = None;
    loop {
        let by = Requester {
            job_id: Some(job.id),
            requested_at: Utc::now(),
            requested_by: job.requested_by.clone(),
        };
        let page = retry(|| store.requeue_dead(filter, after.as_ref(), DLQ_BATCH, &by)).await?;
        let Some(last) = page.last else {
            return Ok(());
        };
        after = Some(last);
        for record in &page.records {
            pipeline.count_replay(record);
            job.progress.processed += 1;
            job.progress.replayed += 1;
            job.progress.events += record.event_ids.len() as u64;
        }
        checkpoint(store, job).await;
        tokio::time::sleep(JOB_PAUSE).await;
    }
}

/// Records a job's progress; a failure only delays it to the next checkpoint.
async fn checkpoint(store: &Arc<dyn Store>, job: &mut ReplayJob) {
    job.updated_at = Utc::now();
    if let Err(error) = store.save_replay_job(job).await {
        tracing::warn!(job_id = %job.id, %error, "could not record replay job progress");
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1 << attempt.min(4))
}

/// Runs a storage call, retrying while the storage is unavailable, up to [`STORE_RETRIES`].
async fn retry<T, F, Fut>(mut call: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Err(StoreError::Unavailable(error)) if attempt < STORE_RETRIES => {
                tracing::warn!(%error, attempt, "replay job waits for the storage");
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// How a job is shown: `interrupted` when it has not finished and has not been heard of for
/// [`STALE_AFTER`] (its gateway stopped).
pub fn job_state(job: &ReplayJob, now: DateTime<Utc>) -> &'static str {
    let silent = (now - job.updated_at).to_std().unwrap_or_default();
    if !job.status.is_finished() && silent > STALE_AFTER {
        "interrupted"
    } else {
        job.status.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_tokens_apart_without_showing_them() {
        let a = token_fingerprint("admin-token-one");
        let b = token_fingerprint("admin-token-two");
        assert_ne!(a, b);
        assert_eq!(a, token_fingerprint("admin-token-one"));
        assert_eq!(a.len(), "token:".len() + 8);
        assert!(!a.contains("admin"));
    }

    #[test]
    fn unfinished_jobs_not_heard_of_are_interrupted() {
        let now = Utc::now();
        let mut job = ReplayJob {
            id: Uuid::now_v7(),
            kind: JobKind::Webhooks,
            filter: "{}".into(),
            requested_by: "token:00000000".into(),
            status: JobStatus::Running,
            progress: JobProgress::default(),
            created_at: now,
            updated_at: now,
            finished_at: None,
            error: None,
        };
        assert_eq!(job_state(&job, now), "running");
        let later = now + chrono::Duration::minutes(10);
        assert_eq!(job_state(&job, later), "interrupted");
        job.status = JobStatus::Completed;
        assert_eq!(job_state(&job, later), "completed");
    }
}
