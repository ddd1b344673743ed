//! SQLite backend: the embedded mode's store, one file next to the gateway.
//!
//! Durability first: WAL journal with `synchronous=FULL`, so a committed batch survives a
//! power cut and a 2xx means what it says. Every write transaction starts with
//! `BEGIN IMMEDIATE`: SQLite has one writer at a time, and taking the write lock up front
//! makes concurrent writers wait (busy timeout) instead of failing to upgrade a read lock.
//! Timestamps are stored as unix microseconds, UUIDs as 16-byte blobs.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};
use uuid::Uuid;

use super::common::{classify, count, decode_headers, encode_headers};
use super::*;

/// Readers run in parallel under WAL; writers queue on the write lock anyway.
const POOL_SIZE: u32 = 4;
/// How long a writer waits for the write lock before giving up with `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens `sqlite://path` (relative to the working directory; the file and its parent
    /// directory are created if missing) or `sqlite::memory:` (one private database that
    /// lives as long as the store).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl(format!("cannot parse SQLite url: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool_options = if in_memory {
            // An in-memory database vanishes with its last connection, and a shared-cache
            // one answers SQLITE_LOCKED (no busy wait) to concurrent writers: keep exactly
            // one connection, forever.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            let file = options.get_filename();
            if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
                create_dir(parent).await?;
            }
            SqlitePoolOptions::new().max_connections(POOL_SIZE)
        };
        let pool = pool_options
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(sqlite_error)?;
        Ok(Self { pool })
    }

    /// The underlying pool, for tests and tooling that need raw SQL.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(sqlite_error)
    }
}

async fn create_dir(dir: &Path) -> Result<(), StoreError> {
    tokio::fs::create_dir_all(dir).await.map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot create database directory {}: {e}",
            dir.display()
        ))
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = super::migrations::migrator(super::migrations::SQLITE)?;
        // sqlx takes no lock on SQLite, so two processes starting on the same file would
        // both try to apply the same migration. Running the whole migrator inside one
        // write transaction serializes them (sqlx nests each migration as a savepoint);
        // the second then finds everything applied.
        let mut tx = self.begin_write().await?;
        migrator
            .run_direct(None, &mut *tx, false)
            .await
            .map_err(|e| super::common::migrate_error(e, transient_sqlite_code))?;
        tx.commit().await.map_err(sqlite_error)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(sqlite_error)
    }

    async fn insert_batch(&self, batch: &[NewWebhook]) -> Result<Vec<InsertOutcome>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for webhook in batch {
            let e = &webhook.entry;
            // Rows are inserted in batch order inside one transaction, so a later twin of
            // the same batch conflicts with the first one and is answered with its id.
            let inserted = sqlx::query(
                "INSERT INTO webhook_entries (id, source, topic, tenant, idempotency_key, \
                    headers, body, received_at, status, attempts, last_error, plugin, \
                    plugin_version, correlation_id) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?) \
                 ON CONFLICT (source, idempotency_key) DO NOTHING",
            )
            .bind(e.id)
            .bind(e.source.as_str())
            .bind(e.topic.as_deref())
            .bind(e.tenant.as_deref())
            .bind(e.idempotency_key.as_str())
            .bind(encode_headers(&e.headers)?)
            .bind(&e.body[..])
            .bind(micros(e.received_at))
            .bind(e.status.as_str())
            .bind(e.last_error.as_deref())
            .bind(e.plugin.as_str())
            .bind(e.plugin_version.as_str())
            .bind(e.correlation_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(sqlite_error)?
            .rows_affected()
                == 1;
            if !inserted {
                let existing_id: Uuid = sqlx::query_scalar(
                    "SELECT id FROM webhook_entries WHERE source = ? AND idempotency_key = ?",
                )
                .bind(e.source.as_str())
                .bind(e.idempotency_key.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(sqlite_error)?;
                outcomes.push(InsertOutcome::Duplicate { existing_id });
                continue;
            }
            for event in &webhook.events {
                sqlx::query(
                    "INSERT INTO webhook_events (id, entry_id, seq, subject, envelope, status, \
                        attempts, next_attempt_at, created_at) \
                     VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
                )
                .bind(event.id.as_str())
                .bind(e.id)
                .bind(event.seq)
                .bind(event.subject.as_str())
                .bind(&event.envelope[..])
                .bind(micros(e.received_at))
                .bind(micros(e.received_at))
                .execute(&mut *tx)
                .await
                .map_err(sqlite_error)?;
            }
            outcomes.push(InsertOutcome::Inserted);
        }
        tx.commit().await.map_err(sqlite_error)?;
        Ok(outcomes)
    }

    async fn find_by_key(
        &self,
        source: &str,
        idempotency_key: &str,
    ) -> Result<Option<Uuid>, StoreError> {
        sqlx::query_scalar(
            "SELECT id FROM webhook_entries WHERE source = ? AND idempotency_key = ?",
        )
        .bind(source)
        .bind(idempotency_key)
        .fetch_optional(&self.pool)
        .await
        .map_err(sqlite_error)
    }

    async fn due_events(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, entry_id, subject, envelope, attempts, created_at \
             FROM webhook_events \
             WHERE status = 'pending' AND next_attempt_at <= ? \
             ORDER BY next_attempt_at, entry_id, seq \
             LIMIT ?",
        )
        .bind(micros(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(sqlite_error)?;
        rows.iter()
            .map(|row| {
                Ok(OutboxEvent {
                    id: row.try_get("id").map_err(sqlite_error)?,
                    entry_id: row.try_get("entry_id").map_err(sqlite_error)?,
                    subject: row.try_get("subject").map_err(sqlite_error)?,
                    envelope: Bytes::from(
                        row.try_get::<Vec<u8>, _>("envelope")
                            .map_err(sqlite_error)?,
                    ),
                    attempts: row.try_get("attempts").map_err(sqlite_error)?,
                    created_at: time(row.try_get("created_at").map_err(sqlite_error)?)?,
                })
            })
            .collect()
    }

    async fn mark_published(
        &self,
        event_ids: &[String],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if event_ids.is_empty() {
            return Ok(());
        }
        // The ids travel as one JSON array, expanded by json_each: one statement and one
        // bind whatever the count, never near SQLite's bound-parameter limit.
        let ids = serde_json::to_string(event_ids)
            .map_err(|e| StoreError::Internal(format!("cannot encode event ids: {e}")))?;
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE webhook_events \
             SET status = 'published', published_at = ?, next_attempt_at = NULL \
             WHERE id IN (SELECT value FROM json_each(?)) AND status = 'pending'",
        )
        .bind(micros(at))
        .bind(ids.as_str())
        .execute(&mut *tx)
        .await
        .map_err(sqlite_error)?;
        sqlx::query(
            "UPDATE webhook_entries SET status = 'published' \
             WHERE status = 'accepted' \
               AND id IN (SELECT entry_id FROM webhook_events \
                          WHERE id IN (SELECT value FROM json_each(?))) \
               AND NOT EXISTS (SELECT 1 FROM webhook_events e \
                               WHERE e.entry_id = webhook_entries.id \
                                 AND e.status <> 'published')",
        )
        .bind(ids.as_str())
        .execute(&mut *tx)
        .await
        .map_err(sqlite_error)?;
        tx.commit().await.map_err(sqlite_error)
    }

    async fn mark_retry(
        &self,
        event_id: &str,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        // Only a pending event is touched, so a late retry cannot resurrect an event that
        // was published or dead-lettered meanwhile.
        let entry: Option<Uuid> = sqlx::query_scalar(
            "UPDATE webhook_events \
             SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? \
             WHERE id = ? AND status = 'pending' \
             RETURNING entry_id",
        )
        .bind(micros(next_attempt_at))
        .bind(error)
        .bind(event_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(sqlite_error)?;
        if let Some(entry) = entry {
            sqlx::query(
                "UPDATE webhook_entries SET attempts = attempts + 1, last_error = ? WHERE id = ?",
            )
            .bind(error)
            .bind(entry)
            .execute(&mut *tx)
            .await
            .map_err(sqlite_error)?;
        }
        tx.commit().await.map_err(sqlite_error)
    }

    async fn mark_dead(&self, event_id: &str, error: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let entry: Option<Uuid> = sqlx::query_scalar(
            "UPDATE webhook_events \
             SET status = 'dead', next_attempt_at = NULL, last_error = ? \
             WHERE id = ? AND status = 'pending' \
             RETURNING entry_id",
        )
        .bind(error)
        .bind(event_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(sqlite_error)?;
        if let Some(entry) = entry {
            sqlx::query("UPDATE webhook_entries SET status = 'dead', last_error = ? WHERE id = ?")
                .bind(error)
                .bind(entry)
                .execute(&mut *tx)
                .await
                .map_err(sqlite_error)?;
        }
        tx.commit().await.map_err(sqlite_error)
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        // Each count reads only its partial index.
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM webhook_events WHERE status = 'pending'), \
                    (SELECT count(*) FROM webhook_events WHERE status = 'dead')",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(sqlite_error)?;
        Ok(OutboxStats {
            pending: count(row.try_get(0).map_err(sqlite_error)?)?,
            dead: count(row.try_get(1).map_err(sqlite_error)?)?,
        })
    }

    async fn list_entries(
        &self,
        filter: &EntryFilter,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<StoredEntry>, StoreError> {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT {ENTRY_COLUMNS} FROM webhook_entries WHERE 1"
        ));
        if let Some(source) = &filter.source {
            q.push(" AND source = ").push_bind(source.clone());
        }
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(tenant) = &filter.tenant {
            q.push(" AND tenant = ").push_bind(tenant.clone());
        }
        if let Some(since) = filter.since {
            q.push(" AND received_at >= ").push_bind(micros(since));
        }
        if let Some(until) = filter.until {
            q.push(" AND received_at < ").push_bind(micros(until));
        }
        if let Some(cursor) = after {
            q.push(" AND (received_at, id) < (")
                .push_bind(micros(cursor.received_at))
                .push(", ")
                .push_bind(cursor.id)
                .push(")");
        }
        q.push(" ORDER BY received_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(limit));
        let rows = q
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(sqlite_error)?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn get_entry(
        &self,
        id: Uuid,
    ) -> Result<Option<(StoredEntry, Vec<StoredEvent>)>, StoreError> {
        // One read transaction so the entry and its events come from the same snapshot.
        let mut tx = self.pool.begin().await.map_err(sqlite_error)?;
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENTRY_COLUMNS} FROM webhook_entries WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(sqlite_error)?
        else {
            return Ok(None);
        };
        let entry = entry_from_row(&row)?;
        let rows = sqlx::query(
            "SELECT id, entry_id, seq, subject, envelope, status, attempts, next_attempt_at, \
                    published_at, last_error \
             FROM webhook_events WHERE entry_id = ? ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(sqlite_error)?;
        tx.commit().await.map_err(sqlite_error)?;
        let events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((entry, events)))
    }
}

const ENTRY_COLUMNS: &str = "id, source, topic, tenant, idempotency_key, headers, body, \
    received_at, status, attempts, last_error, plugin, plugin_version, correlation_id";

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn time(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::Internal(format!("stored timestamp {micros} out of range")))
}

fn optional_time(micros: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    micros.map(time).transpose()
}

fn entry_from_row(row: &SqliteRow) -> Result<StoredEntry, StoreError> {
    let status: String = row.try_get("status").map_err(sqlite_error)?;
    let headers: String = row.try_get("headers").map_err(sqlite_error)?;
    Ok(StoredEntry {
        id: row.try_get("id").map_err(sqlite_error)?,
        source: row.try_get("source").map_err(sqlite_error)?,
        topic: row.try_get("topic").map_err(sqlite_error)?,
        tenant: row.try_get("tenant").map_err(sqlite_error)?,
        idempotency_key: row.try_get("idempotency_key").map_err(sqlite_error)?,
        headers: decode_headers(&headers)?,
        body: Bytes::from(row.try_get::<Vec<u8>, _>("body").map_err(sqlite_error)?),
        received_at: time(row.try_get("received_at").map_err(sqlite_error)?)?,
        status: EntryStatus::parse(&status)
            .ok_or_else(|| StoreError::Internal(format!("unknown entry status {status:?}")))?,
        attempts: row.try_get("attempts").map_err(sqlite_error)?,
        last_error: row.try_get("last_error").map_err(sqlite_error)?,
        plugin: row.try_get("plugin").map_err(sqlite_error)?,
        plugin_version: row.try_get("plugin_version").map_err(sqlite_error)?,
        correlation_id: row.try_get("correlation_id").map_err(sqlite_error)?,
    })
}

fn event_from_row(row: &SqliteRow) -> Result<StoredEvent, StoreError> {
    let status: String = row.try_get("status").map_err(sqlite_error)?;
    Ok(StoredEvent {
        id: row.try_get("id").map_err(sqlite_error)?,
        entry_id: row.try_get("entry_id").map_err(sqlite_error)?,
        seq: row.try_get("seq").map_err(sqlite_error)?,
        subject: row.try_get("subject").map_err(sqlite_error)?,
        envelope: Bytes::from(
            row.try_get::<Vec<u8>, _>("envelope")
                .map_err(sqlite_error)?,
        ),
        status: EventStatus::parse(&status)
            .ok_or_else(|| StoreError::Internal(format!("unknown event status {status:?}")))?,
        attempts: row.try_get("attempts").map_err(sqlite_error)?,
        next_attempt_at: optional_time(row.try_get("next_attempt_at").map_err(sqlite_error)?)?,
        published_at: optional_time(row.try_get("published_at").map_err(sqlite_error)?)?,
        last_error: row.try_get("last_error").map_err(sqlite_error)?,
    })
}

/// SQLite result codes (primary code = low byte of the extended one) that mean "try again
/// later": BUSY (5) and LOCKED (6) — the write lock stayed taken past the busy timeout —
/// IOERR (10), FULL (13, disk full) and CANTOPEN (14).
fn transient_sqlite_code(code: &str) -> bool {
    code.parse::<i32>()
        .is_ok_and(|code| matches!(code & 0xff, 5 | 6 | 10 | 13 | 14))
}

fn sqlite_error(err: sqlx::Error) -> StoreError {
    classify(err, transient_sqlite_code)
}
