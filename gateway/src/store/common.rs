//! Helpers shared by the storage backends: header encoding, envelopes stored without the
//! body they embed, batch planning, the admin listing's query and the classification of
//! `sqlx` errors into [`StoreError`].

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use sqlx::{Database, Encode, QueryBuilder, Type};
use uuid::Uuid;

use super::{
    Cursor, DueEvents, EntryFilter, EntryStatus, NewEntry, NewEvent, NewWebhook, OutboxEvent,
    StoreError, UnreadableEvent,
};
use crate::publish::envelope;

/// Headers as stored: JSON text `[[name, value], ...]`, which keeps their order and
/// repeated names, unlike a JSON object.
pub(crate) fn encode_headers(headers: &[(String, String)]) -> Result<String, StoreError> {
    serde_json::to_string(headers)
        .map_err(|e| StoreError::Internal(format!("cannot encode headers: {e}")))
}

/// Stored headers for the admin view: unreadable ones (the column edited by hand, say)
/// become their reason, so the entry can still be listed and inspected.
pub(crate) fn headers_for_view(text: &str) -> (Vec<(String, String)>, Option<String>) {
    match serde_json::from_str(text) {
        Ok(headers) => (headers, None),
        Err(e) => (
            Vec::new(),
            Some(format!("the stored headers cannot be read: {e}")),
        ),
    }
}

/// The state row a new entry needs, as `(status, last_error)`, if its events will not
/// tell where it stands: a `failed` entry, or one stored with an error. The status is NULL
/// (derived) unless the storage records it (see [`EntryStatus::is_stated`]).
pub(crate) fn new_entry_state(entry: &NewEntry) -> Option<(Option<&'static str>, Option<&str>)> {
    let status = entry.status.is_stated().then(|| entry.status.as_str());
    (status.is_some() || entry.last_error.is_some())
        .then_some((status, entry.last_error.as_deref()))
}

/// For each webhook of a batch, the index of an earlier webhook of the same batch with the
/// same (source, idempotency key), if any. Those later ones are never sent to the
/// database: the first occurrence wins, whatever order the database would process them in.
pub(crate) fn earlier_twins(batch: &[NewWebhook]) -> Vec<Option<usize>> {
    let mut first: HashMap<(&str, &str), usize> = HashMap::with_capacity(batch.len());
    batch
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let key = (w.entry.source.as_str(), w.entry.idempotency_key.as_str());
            match first.get(&key) {
                Some(&j) => Some(j),
                None => {
                    first.insert(key, i);
                    None
                }
            }
        })
        .collect()
}

/// Errors worth retrying (the database is down, overloaded or lost a race) become
/// `Unavailable` so the caller answers 503 and the sender retries; everything else is a
/// bug or bad data and becomes `Internal`.
pub(crate) fn classify(err: sqlx::Error, transient_db_code: impl Fn(&str) -> bool) -> StoreError {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => StoreError::Unavailable(err.to_string()),
        sqlx::Error::Database(ref db) => {
            if db.code().is_some_and(|code| transient_db_code(&code)) {
                StoreError::Unavailable(err.to_string())
            } else {
                StoreError::Internal(err.to_string())
            }
        }
        sqlx::Error::Migrate(inner) => match *inner {
            sqlx::migrate::MigrateError::Execute(e)
            | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => classify(e, transient_db_code),
            other => StoreError::Internal(format!("migration failed: {other}")),
        },
        other => StoreError::Internal(other.to_string()),
    }
}

pub(crate) fn migrate_error(
    err: sqlx::migrate::MigrateError,
    transient_db_code: impl Fn(&str) -> bool,
) -> StoreError {
    classify(sqlx::Error::Migrate(Box::new(err)), transient_db_code)
}

/// Row counts come back signed; a negative one would be a corrupt answer, not a panic.
pub(crate) fn count(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Internal(format!("negative count {value}")))
}

/// An event's envelope as stored, with its `body_at` column: without the entry's body when
/// the event locates it there. An offset that does not locate the body (never produced by
/// the pipeline) stores the envelope whole, which is always correct.
pub(crate) fn stored_envelope<'a>(
    event: &'a NewEvent,
    body: &[u8],
) -> (Cow<'a, [u8]>, Option<i32>) {
    let split = event.body_at.and_then(|at| {
        let column = i32::try_from(at).ok()?;
        Some((envelope::without_body(&event.envelope, at, body)?, column))
    });
    match split {
        Some((stored, column)) => (Cow::Owned(stored), Some(column)),
        None => (Cow::Borrowed(&event.envelope[..]), None),
    }
}

/// A stored envelope made whole again; `body` is the entry's, needed when `body_at` is set.
pub(crate) fn read_envelope(
    stored: Vec<u8>,
    body_at: Option<i32>,
    body: Option<&[u8]>,
) -> Result<Bytes, StoreError> {
    let Some(at) = body_at else {
        return Ok(Bytes::from(stored));
    };
    let body = body.ok_or_else(|| {
        StoreError::Internal("an envelope stored without its body was read without it".into())
    })?;
    usize::try_from(at)
        .ok()
        .and_then(|at| envelope::with_body(&stored, at, body))
        .ok_or_else(|| StoreError::Internal(format!("stored envelope offset {at} is past its end")))
}

/// Sorts due rows into events and unreadable events (any field but the id fails to
/// read). A row whose id cannot be read fails the whole sweep: nothing could be done with
/// it, not even dead-lettering.
pub(crate) fn sort_due_rows<R>(
    rows: &[R],
    id_of: impl Fn(&R) -> Result<String, StoreError>,
    entry_id_of: impl Fn(&R) -> Option<Uuid>,
    event_of: impl Fn(&R) -> Result<OutboxEvent, StoreError>,
) -> Result<DueEvents, StoreError> {
    let mut due = DueEvents::default();
    for row in rows {
        match event_of(row) {
            Ok(event) => due.events.push(event),
            Err(error) => due.unreadable.push(UnreadableEvent {
                id: id_of(row)?,
                entry_id: entry_id_of(row),
                reason: error.to_string(),
            }),
        }
    }
    Ok(due)
}

/// [`read_envelope`] for the admin view: an unreadable envelope becomes its reason, so
/// the entry and its other events can still be inspected.
pub(crate) fn envelope_for_view(
    stored: Vec<u8>,
    body_at: Option<i32>,
    body: &[u8],
) -> (Bytes, Option<String>) {
    match read_envelope(stored, body_at, Some(body)) {
        Ok(envelope) => (envelope, None),
        Err(error) => (Bytes::new(), Some(error.to_string())),
    }
}

/// The admin listing's query on either backend: entries matching `filter`, newest first,
/// after `after`; `time` binds a timestamp the way the backend stores it.
///
/// The tables rather than the `webhook_entries` view, so that each listing reads from the
/// index that serves it: `failed` and `dead` entries in order from the states' status
/// index (only such entries, and retried ones, have a state row); `accepted` ones from the
/// pending events (the backlog, sorted: it is what the listing asks for, and an ordered
/// walk of every entry could pass millions of published ones to find it); everything else
/// in order from the records' indexes. The order must name the same table's columns as
/// the index for the planner to see that.
pub(crate) fn entry_listing<DB, T>(
    filter: &EntryFilter,
    after: Option<Cursor>,
    limit: u32,
    time: fn(DateTime<Utc>) -> T,
) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    T: for<'t> Encode<'t, DB> + Type<DB>,
    String: for<'t> Encode<'t, DB> + Type<DB>,
    &'static str: for<'t> Encode<'t, DB> + Type<DB>,
    Uuid: for<'t> Encode<'t, DB> + Type<DB>,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
{
    ordered_entry_listing(filter, after, limit, time, false)
}

/// [`entry_listing`], oldest first when `oldest_first` (then `after` is the last entry
/// seen and the page starts strictly after it): the same indexes, walked the other way.
pub(crate) fn ordered_entry_listing<DB, T>(
    filter: &EntryFilter,
    after: Option<Cursor>,
    limit: u32,
    time: fn(DateTime<Utc>) -> T,
    oldest_first: bool,
) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    T: for<'t> Encode<'t, DB> + Type<DB>,
    String: for<'t> Encode<'t, DB> + Type<DB>,
    &'static str: for<'t> Encode<'t, DB> + Type<DB>,
    Uuid: for<'t> Encode<'t, DB> + Type<DB>,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
{
    let (beyond, direction) = if oldest_first {
        (">", "ASC")
    } else {
        ("<", "DESC")
    };
    let stated = matches!(filter.status, Some(status) if status.is_stated());
    let (ordered, from) = if stated {
        (
            "s",
            "webhook_entry_states s JOIN webhook_entry_records r ON r.id = s.id",
        )
    } else {
        (
            "r",
            "webhook_entry_records r LEFT JOIN webhook_entry_states s ON s.id = r.id",
        )
    };
    let mut q: QueryBuilder<DB> = QueryBuilder::new(format!(
        "SELECT {JOINED_ENTRY_COLUMNS}, {ENTRY_STATUS} AS status FROM {from} WHERE true"
    ));
    if let Some(source) = &filter.source {
        q.push(" AND r.source = ").push_bind(source.clone());
    }
    match filter.status {
        Some(status @ (EntryStatus::Failed | EntryStatus::Dead)) => {
            q.push(" AND s.status = ").push_bind(status.as_str());
        }
        Some(EntryStatus::Accepted) => {
            q.push(
                " AND s.status IS NULL AND r.id IN \
                 (SELECT entry_id FROM webhook_events WHERE status = 'pending')",
            );
        }
        Some(EntryStatus::Published) => {
            q.push(
                " AND s.status IS NULL AND NOT EXISTS \
                 (SELECT 1 FROM webhook_events p WHERE p.entry_id = r.id AND p.status = 'pending')",
            );
        }
        None => {}
    }
    if let Some(tenant) = &filter.tenant {
        q.push(" AND r.tenant = ").push_bind(tenant.clone());
    }
    if let Some(plugin) = &filter.plugin {
        q.push(" AND r.plugin = ").push_bind(plugin.clone());
    }
    if let Some(version) = &filter.plugin_version {
        q.push(" AND r.plugin_version = ")
            .push_bind(version.clone());
    }
    if let Some(since) = filter.since {
        q.push(format!(" AND {ordered}.received_at >= "))
            .push_bind(time(since));
    }
    if let Some(until) = filter.until {
        q.push(format!(" AND {ordered}.received_at < "))
            .push_bind(time(until));
    }
    if let Some(cursor) = after {
        q.push(format!(
            " AND ({ordered}.received_at, {ordered}.id) {beyond} ("
        ))
        .push_bind(time(cursor.received_at))
        .push(", ")
        .push_bind(cursor.id)
        .push(")");
    }
    q.push(format!(
        " ORDER BY {ordered}.received_at {direction}, {ordered}.id {direction} LIMIT "
    ))
    .push_bind(i64::from(limit));
    q
}

/// The columns of the `webhook_entries` view, which `StoredEntry` is read from.
pub(crate) const ENTRY_COLUMNS: &str = "id, source, topic, tenant, idempotency_key, \
    headers, body, received_at, status, attempts, last_error, plugin, plugin_version, \
    correlation_id, plugin_sha256";
/// [`ENTRY_COLUMNS`] but the status, from the records (`r`) joined with their states
/// (`s`), as the view has them.
const JOINED_ENTRY_COLUMNS: &str = "r.id, r.source, r.topic, r.tenant, r.idempotency_key, \
    r.headers, r.body, r.received_at, COALESCE(s.attempts, 0) AS attempts, s.last_error, \
    r.plugin, r.plugin_version, r.correlation_id, r.plugin_sha256";
/// An entry's status as the view derives it: its state row's when that says `failed` or
/// `dead`, otherwise `accepted` while one of its events is pending and `published` after.
const ENTRY_STATUS: &str = "COALESCE(s.status, CASE WHEN EXISTS \
    (SELECT 1 FROM webhook_events e WHERE e.entry_id = r.id AND e.status = 'pending') \
    THEN 'accepted' ELSE 'published' END)";

/// An entry (`r`, a `webhook_entry_records` row) the retention purge may remove: neither
/// failed nor dead (no stated status) and no event left that is not published. Shared by
/// both backends so they agree on what is kept.
pub(crate) const PURGEABLE_ENTRY: &str = "NOT EXISTS (SELECT 1 FROM webhook_entry_states s \
        WHERE s.id = r.id AND s.status IS NOT NULL) \
    AND NOT EXISTS (SELECT 1 FROM webhook_events e \
        WHERE e.entry_id = r.id AND e.status <> 'published')";
