//! Durable storage of webhook entries and their outbox of events.
//!
//! The trait is what the pipeline, the outbox relay and the admin API need; each backend
//! (SQLite for the embedded mode, PostgreSQL for production) lives beside it and is
//! chosen once, from the URL scheme, by [`connect`].

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

mod common;
mod migrations;
pub mod postgres;
mod replays;
pub mod sqlite;
mod tenant_secrets;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_replay;
#[cfg(test)]
mod tests_tenant_secrets;

pub use replays::{
    DeadCursor, DeadFilter, DeadKind, DeadLetter, JobKind, JobProgress, JobStatus, PluginRef,
    Remapped, ReplayFilter, ReplayJob, ReplayKind, ReplayOutcome, ReplayRecord, Requester,
    RequeuedPage,
};

/// Where a stored webhook stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryStatus {
    /// Stored; its events wait in the outbox.
    Accepted,
    /// Every event of the entry has been acknowledged by the bus.
    Published,
    /// Verified but could not be mapped (unknown topic, bad JSON, plugin trap): replayable.
    Failed,
    /// At least one of its events exhausted its retry budget.
    Dead,
}

impl EntryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Published => "published",
            Self::Failed => "failed",
            Self::Dead => "dead",
        }
    }

    /// Whether the storage records this status in the entry's state row; the others
    /// follow from its events.
    pub fn is_stated(self) -> bool {
        matches!(self, Self::Failed | Self::Dead)
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "accepted" => Self::Accepted,
            "published" => Self::Published,
            "failed" => Self::Failed,
            "dead" => Self::Dead,
            _ => return None,
        })
    }
}

/// Where one outbox event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventStatus {
    /// Waiting to be published (first try or a retry).
    Pending,
    /// Acknowledged by the bus.
    Published,
    /// Retry budget exhausted: in the dead-letter queue.
    Dead,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Published => "published",
            Self::Dead => "dead",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => Self::Pending,
            "published" => Self::Published,
            "dead" => Self::Dead,
            _ => return None,
        })
    }
}

/// A webhook to store, with the events it maps to.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub entry: NewEntry,
    pub events: Vec<NewEvent>,
}

/// The `webhook_entries` row of a webhook about to be stored.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub id: Uuid,
    pub source: String,
    /// Normalised topic (`orders/create`; Stripe: the event type); none if unmapped.
    pub topic: Option<String>,
    pub tenant: Option<String>,
    pub idempotency_key: String,
    /// Request headers, names lower case, as the plugin saw them (see
    /// [`WebhookRequest::headers`](crate::plugin::WebhookRequest::headers)).
    pub headers: Vec<(String, String)>,
    /// The raw body, byte for byte.
    pub body: Bytes,
    pub received_at: DateTime<Utc>,
    /// `Accepted` when it mapped, `Failed` when it did not (then `last_error` says why).
    pub status: EntryStatus,
    pub last_error: Option<String>,
    pub plugin: String,
    pub plugin_version: String,
    /// SHA-256 of the plugin component that handled it, hex: which build, not only which
    /// version (provenance across reloads).
    pub plugin_sha256: String,
    pub correlation_id: String,
}

/// One outbox row: an event ready to publish, envelope already encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The CloudEvents id, also the `Nats-Msg-Id`.
    pub id: String,
    /// Position of the event within its webhook's mapping.
    pub seq: i32,
    /// Full bus subject (`webhooks.shopify.order.created`).
    pub subject: String,
    /// The CloudEvents JSON envelope, exactly the bytes to publish.
    pub envelope: Bytes,
    /// Where the entry's body sits in `envelope` when the event's data is that body
    /// ([`crate::publish::envelope::Encoded::body_at`]): the backend then stores the
    /// envelope without it and puts it back on every read.
    pub body_at: Option<usize>,
}

/// What happened to one webhook of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored, with its events, under the entry's id.
    Inserted,
    /// Another entry already holds (source, idempotency key): nothing was written.
    Duplicate { existing_id: Uuid },
}

/// An outbox event due for (re)publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub id: String,
    pub entry_id: Uuid,
    pub subject: String,
    pub envelope: Bytes,
    /// Publication attempts so far.
    pub attempts: i32,
    /// When the webhook was received: the retry budget counts from here.
    pub created_at: DateTime<Utc>,
}

/// What a sweep of the outbox found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DueEvents {
    /// Ready to publish, oldest first.
    pub events: Vec<OutboxEvent>,
    /// Due, but stored so that no envelope can be made of them (a row edited by hand, a
    /// bug of an older version): the relay dead-letters them, so one bad row neither
    /// stalls the outbox nor is retried for ever.
    pub unreadable: Vec<UnreadableEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableEvent {
    pub id: String,
    pub entry_id: Option<Uuid>,
    pub reason: String,
}

/// Filters of the admin listing. Every field narrows; none means any.
#[derive(Debug, Clone, Default)]
pub struct EntryFilter {
    pub source: Option<String>,
    pub status: Option<EntryStatus>,
    pub tenant: Option<String>,
    /// Received at or after.
    pub since: Option<DateTime<Utc>>,
    /// Received strictly before.
    pub until: Option<DateTime<Utc>>,
    /// Handled on arrival by this plugin (its name).
    pub plugin: Option<String>,
    /// Handled on arrival by this version of its plugin.
    pub plugin_version: Option<String>,
}

/// Keyset pagination: entries strictly older than this (received_at, id) pair, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub received_at: DateTime<Utc>,
    pub id: Uuid,
}

/// A stored entry as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub id: Uuid,
    pub source: String,
    pub topic: Option<String>,
    pub tenant: Option<String>,
    pub idempotency_key: String,
    /// Empty when they cannot be read; `headers_error` then says why.
    pub headers: Vec<(String, String)>,
    pub headers_error: Option<String>,
    pub body: Bytes,
    pub received_at: DateTime<Utc>,
    pub status: EntryStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub plugin: String,
    pub plugin_version: String,
    /// None for entries stored before provenance was recorded.
    pub plugin_sha256: Option<String>,
    pub correlation_id: String,
}

/// A stored outbox event as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: String,
    pub entry_id: Uuid,
    pub seq: i32,
    pub subject: String,
    /// Empty when it cannot be read; `envelope_error` then says why.
    pub envelope: Bytes,
    /// Why no envelope could be made of the stored row: the entry is still shown.
    pub envelope_error: Option<String>,
    pub status: EventStatus,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub published_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// Sizes the health endpoint and metrics report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OutboxStats {
    /// Events not yet published (pending, including those waiting for a retry).
    pub pending: u64,
    /// Events in the dead-letter queue.
    pub dead: u64,
}

/// One per-tenant secret as stored: sealed (`crate::secrets`), with what may be shown.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SealedSecret {
    pub id: Uuid,
    /// First 8 bytes of the secret's SHA-256, hex.
    pub fingerprint: String,
    pub created_at: DateTime<Utc>,
    /// base64(nonce ‖ ciphertext ‖ tag).
    pub sealed: String,
}

/// The stored secrets of one (source, tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSecretsRow {
    pub source: String,
    pub tenant: String,
    pub secrets: Vec<SealedSecret>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or refused the operation for a transient reason.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A bug or a corrupt row: not worth retrying.
    #[error("storage error: {0}")]
    Internal(String),
    #[error("invalid storage url: {0}")]
    BadUrl(String),
}

/// The storage seam. Every method is one round of work the caller can retry.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates or upgrades the tables. Idempotent.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// A cheap reachability check for health and readiness.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Stores a batch of webhooks in one transaction: for each, the entry and all its
    /// events, or nothing when (source, idempotency key) is already stored (also when two
    /// webhooks of the same batch share it: the first wins). Returns one outcome per
    /// input, in order. When it returns `Ok`, everything `Inserted` is durable.
    async fn insert_batch(&self, batch: &[NewWebhook]) -> Result<Vec<InsertOutcome>, StoreError>;

    /// The id of the entry stored under (source, idempotency key), if any.
    async fn find_by_key(
        &self,
        source: &str,
        idempotency_key: &str,
    ) -> Result<Option<Uuid>, StoreError>;

    /// Pending events whose next attempt is due at `now`, oldest first, at most `limit`
    /// in all; those that cannot be read apart.
    async fn due_events(&self, now: DateTime<Utc>, limit: u32) -> Result<DueEvents, StoreError>;

    /// Marks events acknowledged by the bus, and every entry whose events are now all
    /// published as `published`.
    async fn mark_published(
        &self,
        event_ids: &[String],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Records a failed attempt: attempts + 1, the error, and when to try again.
    async fn mark_retry(
        &self,
        event_id: &str,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError>;

    /// Moves an event to the dead-letter queue (and its entry to `dead`).
    async fn mark_dead(&self, event_id: &str, error: &str) -> Result<(), StoreError>;

    /// Backlog sizes.
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError>;

    /// Entries matching `filter`, newest first (by received_at, then id), strictly after
    /// `after` when given, at most `limit`.
    async fn list_entries(
        &self,
        filter: &EntryFilter,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<StoredEntry>, StoreError>;

    /// One entry with its events (ordered by seq).
    async fn get_entry(
        &self,
        id: Uuid,
    ) -> Result<Option<(StoredEntry, Vec<StoredEvent>)>, StoreError>;

    /// Short name for health output (`sqlite`, `postgres`).
    fn kind(&self) -> &'static str;

    /// Every (source, tenant) with its sealed secrets.
    async fn list_tenant_secrets(&self) -> Result<Vec<TenantSecretsRow>, StoreError>;

    /// A value that changes whenever a tenant secret is added or removed, by any instance.
    async fn tenant_secrets_version(&self) -> Result<String, StoreError>;

    /// Adds sealed secrets to (source, tenant), creating its row if needed.
    async fn add_tenant_secrets(
        &self,
        source: &str,
        tenant: &str,
        secrets: &[SealedSecret],
    ) -> Result<(), StoreError>;

    /// Removes the secret `id` of (source, tenant); false when there is none.
    async fn remove_tenant_secret(
        &self,
        source: &str,
        tenant: &str,
        id: Uuid,
    ) -> Result<bool, StoreError>;
    /// Moves the next attempt of pending events to the time given with each, without
    /// counting an attempt: they were not tried (their subject's circuit breaker is open,
    /// or the bus connection is down). `error`, when given, becomes their `last_error`.
    async fn postpone(
        &self,
        events: &[(String, DateTime<Utc>)],
        error: Option<&str>,
    ) -> Result<(), StoreError>;

    /// How many entries [`Store::purge_published`] would remove for `received_before`.
    async fn count_purgeable(&self, received_before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Deletes at most `limit` entries received before `received_before` whose events are
    /// all published — never one that is failed, dead or still has an event to publish —
    /// with their events; returns how many it deleted. Oldest first.
    async fn purge_published(
        &self,
        received_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError>;

    /// Entries matching `filter`, oldest first (by received_at, then id), strictly after
    /// `after` when given, at most `limit`: the order a bulk replay re-publishes them in.
    async fn list_entries_oldest_first(
        &self,
        filter: &EntryFilter,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<StoredEntry>, StoreError>;

    /// Records the re-mapping of one entry, in one transaction: with `remapped`, its new
    /// events go into the outbox (pending, due now, placed after the entry's existing
    /// events, which stay), its dead events leave the dead-letter queue, its topic and
    /// tenant become the new mapping's and its status follows its events again; without,
    /// only the record is written (a failed replay leaves the entry as it was). Returns
    /// false, writing nothing, when no entry has `replay.entry_id`.
    async fn record_remap(
        &self,
        replay: &ReplayRecord,
        remapped: Option<&Remapped>,
    ) -> Result<bool, StoreError>;

    /// Replay records of an entry and/or a job, oldest first, after `after`.
    async fn list_replays(
        &self,
        filter: &ReplayFilter,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<ReplayRecord>, StoreError>;

    /// The dead-letter queue: dead events no replay superseded and webhooks stored as
    /// failed, newest first, after `after`.
    async fn dead_letters(
        &self,
        filter: &DeadFilter,
        after: Option<&DeadCursor>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError>;

    /// Puts up to `limit` dead events matching `filter` (oldest first, after `after`) back
    /// in the outbox in one transaction: pending, attempts reset, due now, their retry
    /// budget counting from now; an entry none of whose events is dead any more follows its
    /// events again. Writes one `requeue` record per entry.
    async fn requeue_dead(
        &self,
        filter: &DeadFilter,
        after: Option<&DeadCursor>,
        limit: u32,
        by: &Requester,
    ) -> Result<RequeuedPage, StoreError>;

    /// Inserts a job, or rewrites its status, progress and error.
    async fn save_replay_job(&self, job: &ReplayJob) -> Result<(), StoreError>;

    async fn get_replay_job(&self, id: Uuid) -> Result<Option<ReplayJob>, StoreError>;

    /// Jobs newest first, strictly older than `after`.
    async fn list_replay_jobs(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<ReplayJob>, StoreError>;
}

/// Opens the backend the URL names: `sqlite://path` (created if missing, with its parent
/// directory) or `postgres://...` / `postgresql://...` (tables in `pg_schema`).
pub async fn connect(url: &str, pg_schema: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(
            sqlite::SqliteStore::connect(url).await?,
        ))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(
            postgres::PgStore::connect_with_schema(url, pg_schema).await?,
        ))
    } else {
        Err(StoreError::BadUrl(
            "expected sqlite://... or postgres://...".into(),
        ))
    }
}
