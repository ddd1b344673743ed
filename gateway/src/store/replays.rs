//! What the storage keeps of replays: the record of each webhook re-driven, the bulk
//! jobs with their progress, and the dead-letter queue they draw from. Types here, and the
//! queries both backends build the same way.

use chrono::{DateTime, Utc};
use sqlx::{Database, Encode, QueryBuilder, Type};
use uuid::Uuid;

use super::{NewEvent, StoreError};

/// How a webhook was re-driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplayKind {
    /// Its stored request mapped again through the plugin serving now; new events.
    Remap,
    /// Its dead events put back in the outbox as they were.
    Requeue,
}

impl ReplayKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Remap => "remap",
            Self::Requeue => "requeue",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "remap" => Self::Remap,
            "requeue" => Self::Requeue,
            _ => return None,
        })
    }
}

/// How one webhook's replay went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplayOutcome {
    /// Mapped; its new events wait in the outbox.
    Queued,
    /// Mapped to no event at all: nothing to publish, the entry is done.
    NoEvents,
    /// Still cannot be mapped (or its source is gone); the entry is left as it was.
    Failed,
    /// Dead events re-queued.
    Requeued,
}

impl ReplayOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::NoEvents => "no_events",
            Self::Failed => "failed",
            Self::Requeued => "requeued",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "queued" => Self::Queued,
            "no_events" => Self::NoEvents,
            "failed" => Self::Failed,
            "requeued" => Self::Requeued,
            _ => return None,
        })
    }
}

/// The plugin a replay ran through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginRef {
    pub name: String,
    pub version: String,
    /// Of the component's bytes, hex.
    pub sha256: String,
}

/// One webhook's replay, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRecord {
    pub id: Uuid,
    pub entry_id: Uuid,
    /// The bulk job it was part of, if any.
    pub job_id: Option<Uuid>,
    pub kind: ReplayKind,
    pub requested_at: DateTime<Utc>,
    /// A fingerprint of the admin token that asked, never the token.
    pub requested_by: String,
    /// None for a re-queue, and for a remap whose source is no longer configured.
    pub plugin: Option<PluginRef>,
    /// The events this replay queued.
    pub event_ids: Vec<String>,
    pub outcome: ReplayOutcome,
    pub error: Option<String>,
}

/// What a successful re-mapping adds to its entry.
#[derive(Debug, Clone)]
pub struct Remapped {
    /// As the plugin serving now reads the webhook.
    pub topic: Option<String>,
    pub tenant: Option<String>,
    /// The new events, ids already in their envelopes; `seq` is their position in the new
    /// mapping (the store places them after the entry's existing events).
    pub events: Vec<NewEvent>,
    /// The entry's body, which envelopes carrying it are stored without.
    pub body: bytes::Bytes,
}

/// Which replay records to list.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    pub entry_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
}

/// Who re-queues dead events, and as part of which job.
#[derive(Debug, Clone)]
pub struct Requester {
    pub job_id: Option<Uuid>,
    pub requested_at: DateTime<Utc>,
    pub requested_by: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Re-mapping stored webhooks.
    Webhooks,
    /// Re-queueing dead events.
    Dlq,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhooks => "webhooks",
            Self::Dlq => "dlq",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "webhooks" => Self::Webhooks,
            "dlq" => Self::Dlq,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Waiting for the replay slot (one job runs at a time).
    Queued,
    Running,
    Completed,
    /// Stopped by a storage failure; `error` says so.
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            _ => return None,
        })
    }

    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

/// Counts of a job so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobProgress {
    /// Webhooks looked at.
    pub processed: u64,
    /// Webhooks whose replay queued events (or found none to queue).
    pub replayed: u64,
    /// Webhooks that still could not be mapped.
    pub failed: u64,
    /// Events queued.
    pub events: u64,
}

/// A bulk replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayJob {
    pub id: Uuid,
    pub kind: JobKind,
    /// The selection, a JSON object.
    pub filter: String,
    pub requested_by: String,
    pub status: JobStatus,
    pub progress: JobProgress,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// What the dead-letter queue holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadKind {
    /// An event past its retry budget.
    Event,
    /// A webhook stored as failed (never mapped).
    Webhook,
}

impl DeadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Event => "event",
            Self::Webhook => "webhook",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "event" => Self::Event,
            "webhook" => Self::Webhook,
            _ => return None,
        })
    }
}

/// Filters of the dead-letter queue. Every field narrows; none means any.
#[derive(Debug, Clone, Default)]
pub struct DeadFilter {
    pub source: Option<String>,
    pub tenant: Option<String>,
    /// The webhook received at or after.
    pub since: Option<DateTime<Utc>>,
    /// The webhook received strictly before.
    pub until: Option<DateTime<Utc>>,
    pub kind: Option<DeadKind>,
    /// One dead event.
    pub event_id: Option<String>,
}

/// Keyset position in the dead-letter queue: (webhook received at, entry id, event id; ""
/// for a failed webhook).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadCursor {
    pub received_at: DateTime<Utc>,
    pub entry_id: Uuid,
    pub event_id: String,
}

/// One item of the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub kind: DeadKind,
    pub entry_id: Uuid,
    /// The dead event; none for a failed webhook.
    pub event_id: Option<String>,
    pub source: String,
    pub topic: Option<String>,
    pub tenant: Option<String>,
    pub subject: Option<String>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub received_at: DateTime<Utc>,
    pub plugin: String,
    pub plugin_version: String,
}

impl DeadLetter {
    pub fn cursor(&self) -> DeadCursor {
        DeadCursor {
            received_at: self.received_at,
            entry_id: self.entry_id,
            event_id: self.event_id.clone().unwrap_or_default(),
        }
    }
}

/// A page of re-queued dead events: one record per webhook, and where the next page starts.
#[derive(Debug, Clone, Default)]
pub struct RequeuedPage {
    pub records: Vec<ReplayRecord>,
    /// None when nothing was left.
    pub last: Option<DeadCursor>,
}

pub(crate) fn encode_ids(ids: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(ids)
        .map_err(|e| StoreError::Internal(format!("cannot encode event ids: {e}")))
}

pub(crate) fn decode_ids(text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Internal(format!("stored replay event ids unreadable: {e}")))
}

pub(crate) fn parsed<T>(
    text: &str,
    parse: fn(&str) -> Option<T>,
    what: &str,
) -> Result<T, StoreError> {
    parse(text).ok_or_else(|| StoreError::Internal(format!("unknown {what} {text:?}")))
}

pub(crate) fn count_u64(value: i64) -> Result<u64, StoreError> {
    super::common::count(value)
}

/// The dead-letter queue as one list: dead events that no replay superseded, and webhooks
/// stored as failed (their event id `''`), newest first, after `after`; `time` binds a
/// timestamp the way the backend stores it.
pub(crate) fn dead_letter_listing<DB, T>(
    filter: &DeadFilter,
    after: Option<&DeadCursor>,
    limit: u32,
    time: fn(DateTime<Utc>) -> T,
) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    T: for<'t> Encode<'t, DB> + Type<DB>,
    String: for<'t> Encode<'t, DB> + Type<DB>,
    Uuid: for<'t> Encode<'t, DB> + Type<DB>,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
{
    let events = "SELECT 'event' AS kind, r.received_at AS at, r.id AS entry_id, \
            e.id AS event_id, r.source, r.topic, r.tenant, e.subject, e.attempts, \
            e.last_error, r.plugin, r.plugin_version \
        FROM webhook_events e JOIN webhook_entry_records r ON r.id = e.entry_id \
        WHERE e.status = 'dead' AND e.superseded_by IS NULL";
    let webhooks = "SELECT 'webhook' AS kind, r.received_at AS at, r.id AS entry_id, \
            '' AS event_id, r.source, r.topic, r.tenant, NULL AS subject, s.attempts, \
            s.last_error, r.plugin, r.plugin_version \
        FROM webhook_entry_states s JOIN webhook_entry_records r ON r.id = s.id \
        WHERE s.status = 'failed'";
    let union = match filter.kind {
        Some(DeadKind::Event) => events.to_owned(),
        Some(DeadKind::Webhook) => webhooks.to_owned(),
        None => format!("{events} UNION ALL {webhooks}"),
    };
    let mut q: QueryBuilder<DB> =
        QueryBuilder::new(format!("SELECT * FROM ({union}) d WHERE true"));
    push_dead_conditions(
        &mut q,
        filter,
        "d.source",
        "d.tenant",
        "d.at",
        "d.event_id",
        time,
    );
    if let Some(cursor) = after {
        q.push(" AND (d.at, d.entry_id, d.event_id) < (")
            .push_bind(time(cursor.received_at))
            .push(", ")
            .push_bind(cursor.entry_id)
            .push(", ")
            .push_bind(cursor.event_id.clone())
            .push(")");
    }
    q.push(" ORDER BY d.at DESC, d.entry_id DESC, d.event_id DESC LIMIT ")
        .push_bind(i64::from(limit));
    q
}

/// The dead events a re-queue takes next: oldest first, after `after`, at most `limit`;
/// columns `id`, `entry_id`, `at`.
pub(crate) fn dead_events_to_requeue<DB, T>(
    filter: &DeadFilter,
    after: Option<&DeadCursor>,
    limit: u32,
    time: fn(DateTime<Utc>) -> T,
) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    T: for<'t> Encode<'t, DB> + Type<DB>,
    String: for<'t> Encode<'t, DB> + Type<DB>,
    Uuid: for<'t> Encode<'t, DB> + Type<DB>,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
{
    let mut q: QueryBuilder<DB> = QueryBuilder::new(
        "SELECT e.id, e.entry_id, r.received_at AS at \
         FROM webhook_events e JOIN webhook_entry_records r ON r.id = e.entry_id \
         WHERE e.status = 'dead' AND e.superseded_by IS NULL",
    );
    push_dead_conditions(
        &mut q,
        filter,
        "r.source",
        "r.tenant",
        "r.received_at",
        "e.id",
        time,
    );
    if let Some(cursor) = after {
        q.push(" AND (r.received_at, e.entry_id, e.id) > (")
            .push_bind(time(cursor.received_at))
            .push(", ")
            .push_bind(cursor.entry_id)
            .push(", ")
            .push_bind(cursor.event_id.clone())
            .push(")");
    }
    q.push(" ORDER BY r.received_at, e.entry_id, e.id LIMIT ")
        .push_bind(i64::from(limit));
    q
}

fn push_dead_conditions<DB, T>(
    q: &mut QueryBuilder<DB>,
    filter: &DeadFilter,
    source: &str,
    tenant: &str,
    at: &str,
    event_id: &str,
    time: fn(DateTime<Utc>) -> T,
) where
    DB: Database,
    T: for<'t> Encode<'t, DB> + Type<DB>,
    String: for<'t> Encode<'t, DB> + Type<DB>,
{
    if let Some(value) = &filter.source {
        q.push(format!(" AND {source} = ")).push_bind(value.clone());
    }
    if let Some(value) = &filter.tenant {
        q.push(format!(" AND {tenant} = ")).push_bind(value.clone());
    }
    if let Some(since) = filter.since {
        q.push(format!(" AND {at} >= ")).push_bind(time(since));
    }
    if let Some(until) = filter.until {
        q.push(format!(" AND {at} < ")).push_bind(time(until));
    }
    if let Some(value) = &filter.event_id {
        q.push(format!(" AND {event_id} = "))
            .push_bind(value.clone());
    }
}

/// The columns of `webhook_replays`, in the order the backends read them.
pub(crate) const REPLAY_COLUMNS: &str = "id, entry_id, job_id, kind, requested_at, \
    requested_by, plugin, plugin_version, plugin_sha256, event_ids, outcome, error";

/// The columns of `replay_jobs`.
pub(crate) const JOB_COLUMNS: &str = "id, kind, filter, requested_by, status, processed, \
    replayed, failed, events, created_at, updated_at, finished_at, error";

/// The replay listing: records of one entry or one job, oldest first, after `after`.
pub(crate) fn replay_listing<DB>(
    filter: &ReplayFilter,
    after: Option<Uuid>,
    limit: u32,
) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    Uuid: for<'t> Encode<'t, DB> + Type<DB>,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
{
    let mut q: QueryBuilder<DB> = QueryBuilder::new(format!(
        "SELECT {REPLAY_COLUMNS} FROM webhook_replays WHERE true"
    ));
    if let Some(entry) = filter.entry_id {
        q.push(" AND entry_id = ").push_bind(entry);
    }
    if let Some(job) = filter.job_id {
        q.push(" AND job_id = ").push_bind(job);
    }
    if let Some(after) = after {
        q.push(" AND id > ").push_bind(after);
    }
    q.push(" ORDER BY id LIMIT ").push_bind(i64::from(limit));
    q
}

/// Jobs newest first (their ids are UUIDv7), strictly older than `after`.
pub(crate) fn job_listing<DB>(after: Option<Uuid>, limit: u32) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    Uuid: for<'t> Encode<'t, DB> + Type<DB>,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
{
    let mut q: QueryBuilder<DB> =
        QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM replay_jobs WHERE true"));
    if let Some(after) = after {
        q.push(" AND id < ").push_bind(after);
    }
    q.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(limit));
    q
}

/// Groups re-queued events by entry, in the order they were taken, into one record each.
pub(crate) fn requeue_records(taken: &[(String, Uuid)], by: &Requester) -> Vec<ReplayRecord> {
    let mut records: Vec<ReplayRecord> = Vec::new();
    for (event_id, entry_id) in taken {
        match records.iter_mut().find(|r| r.entry_id == *entry_id) {
            Some(record) => record.event_ids.push(event_id.clone()),
            None => records.push(ReplayRecord {
                id: Uuid::now_v7(),
                entry_id: *entry_id,
                job_id: by.job_id,
                kind: ReplayKind::Requeue,
                requested_at: by.requested_at,
                requested_by: by.requested_by.clone(),
                plugin: None,
                event_ids: vec![event_id.clone()],
                outcome: ReplayOutcome::Requeued,
                error: None,
            }),
        }
    }
    records
}

pub(crate) fn progress_column(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Internal(format!("count {value} out of range")))
}
