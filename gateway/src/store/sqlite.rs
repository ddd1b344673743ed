//! SQLite backend: the embedded mode's store, one file next to the gateway.
//!
//! Durability first: WAL journal with `synchronous=FULL`, so a committed batch survives a
//! power cut and a 2xx means what it says. Every write transaction starts with
//! `BEGIN IMMEDIATE`: SQLite has one writer at a time, and taking the write lock up front
//! makes concurrent writers wait (busy timeout) instead of failing to upgrade a read lock.
//! Timestamps are stored as unix microseconds, UUIDs as 16-byte blobs.
//!
//! `webhook_entries` is a view: an entry's record (what was received, written once) and
//! its state (status, attempts, last error) are rows of two tables, so moving an entry on
//! rewrites a few dozen bytes instead of the page that holds its body
//! (`migrations/sqlite/20261202000001_entry_state_apart.sql`). Reads go through the view
//! or, where the plan needs it, the tables; writes go to the tables.

use std::borrow::Cow;
use std::collections::HashSet;
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

use super::common::{
    ENTRY_COLUMNS, PURGEABLE_ENTRY, classify, count, encode_headers, entry_listing,
    envelope_for_view, headers_for_view, new_entry_state, ordered_entry_listing, read_envelope,
    sort_due_rows, stored_envelope,
};
use super::replays::{
    JOB_COLUMNS, REPLAY_COLUMNS, count_u64, dead_events_to_requeue, dead_letter_listing,
    decode_ids, encode_ids, job_listing, parsed, progress_column, replay_listing, requeue_records,
};
use super::*;

/// Read connections; writes have one of their own.
const POOL_SIZE: u32 = 4;
/// The entry holding (source, idempotency key): a duplicate's answer.
const ID_BY_KEY: &str =
    "SELECT id FROM webhook_entry_records WHERE source = ? AND idempotency_key = ?";
/// What a query that holds a whole write transaction starts and ends with (see
/// [`SqliteStore::write`]): the write lock is taken up front, as every writer here does.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE;\n";
const END_WRITE: &str = "COMMIT";
/// Marks the given events (a JSON array of ids) published.
const PUBLISH_EVENTS: &str = "UPDATE webhook_events \
     SET status = 'published', published_at = ?, next_attempt_at = NULL \
     WHERE id IN (SELECT value FROM json_each(?)) AND status = 'pending'";
/// How often the background task checkpoints the WAL.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);
/// The WAL size (in pages) at which a commit checkpoints by itself after all. The
/// background task copies nearly everything, but under sustained load a commit always
/// lands while it copies, so the WAL never starts over until this bound (~130 MB) is
/// reached; then it cycles there. A bound of 4,096 pages measured slower (BENCHMARKS.md).
const BACKSTOP_CHECKPOINT_PAGES: u32 = 32 * 1024;
/// SQLite's limit on bound parameters per statement (`SQLITE_MAX_VARIABLE_NUMBER`).
const MAX_PARAMETERS: usize = 32_766;
const RECORD_COLUMN_COUNT: usize = 12;
const STATE_COLUMN_COUNT: usize = 4;
const EVENT_COLUMN_COUNT: usize = 7;

/// How many rows of `columns` bound values fit in one statement.
const fn rows_per_statement(columns: usize) -> usize {
    MAX_PARAMETERS / columns
}
/// How long a writer waits for the write lock before giving up with `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqliteStore {
    /// Readers: run in parallel under WAL.
    pool: SqlitePool,
    /// The one connection every write transaction of this process goes through. SQLite
    /// takes one writer at a time anyway; queueing for this connection costs nothing,
    /// whereas writers on separate connections meet the lock and sleep in SQLite's busy
    /// handler (1, 2, 5, ... ms), idling the gateway while the lock is already free.
    writer: SqlitePool,
    /// Copies the WAL back into the database file off the write path.
    checkpointer: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Some(task) = self.checkpointer.take() {
            task.abort();
        }
    }
}

/// Checkpoints the WAL every [`CHECKPOINT_INTERVAL`] from a read connection.
///
/// Left to SQLite, the commit that crosses `wal_autocheckpoint` does the checkpoint itself:
/// under load that is several times a second, each copying megabytes and syncing the
/// database file while every webhook of the batch waits for its answer. A passive
/// checkpoint from another connection does the same work in parallel with the writer and
/// never blocks it.
async fn checkpoint_loop(pool: SqlitePool) {
    let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::debug!(%error, "background WAL checkpoint failed; will retry");
        }
    }
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
            .foreign_keys(true)
            // Checkpoints run in the background (see `checkpoint_loop`); this bounds the
            // WAL's file, which those alone never shrink under load.
            .pragma("wal_autocheckpoint", BACKSTOP_CHECKPOINT_PAGES.to_string())
            // Pages are read through the mapping instead of a read syscall each.
            .pragma("mmap_size", (256 * 1024 * 1024).to_string())
            // A multi-row INSERT keeps a statement journal (to undo itself half-way); in a
            // temp file that was a sixth of the writer thread's time, spent in pwrite.
            .pragma("temp_store", "MEMORY");
        // The page cache stays at SQLite's default (2 MiB): a 64 MiB cache made every
        // commit slower, as SQLite walks the cache's whole hash table at the end of each
        // write transaction (`pcache1TruncateUnsafe`, 10% of the writer thread in perf).
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if in_memory {
            // An in-memory database vanishes with its last connection, and a shared-cache
            // one answers SQLITE_LOCKED (no busy wait) to concurrent writers: keep exactly
            // one connection, forever, for reads and writes alike.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await
                .map_err(sqlite_error)?;
            return Ok(Self {
                writer: pool.clone(),
                pool,
                checkpointer: None,
            });
        }
        let file = options.get_filename();
        if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_dir(parent).await?;
        }
        // The writer connects first, so it is the one that creates the file with the
        // options above.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            // The pool's default ping before each hand-out is a round trip to the
            // connection's thread per write transaction, for a file that cannot go away
            // the way a server can; a broken connection fails the write itself anyway.
            .test_before_acquire(false)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(sqlite_error)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(sqlite_error)?;
        let checkpointer = tokio::spawn(checkpoint_loop(pool.clone()));
        Ok(Self {
            pool,
            writer,
            checkpointer: Some(checkpointer),
        })
    }

    /// The underlying pool, for tests and tooling that need raw SQL.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The query plan of the admin listing for `filter`, one step a line.
    #[cfg(test)]
    pub(crate) async fn explain_listing(
        &self,
        filter: &EntryFilter,
    ) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "EXPLAIN QUERY PLAN {}",
            entry_listing::<Sqlite, _>(filter, None, 50, micros)
                .sql()
                .as_str()
        );
        // Any values do for a plan; only their number must match.
        let placeholders = sql.matches('?').count();
        let mut explain = sqlx::query(sqlx::AssertSqlSafe(sql));
        for _ in 0..placeholders {
            explain = explain.bind(0_i64);
        }
        let rows = explain.fetch_all(&self.pool).await.map_err(sqlite_error)?;
        rows.iter()
            .map(|row| row.try_get::<String, _>("detail").map_err(sqlite_error))
            .collect()
    }

    /// Runs a query that holds a whole write transaction, from [`BEGIN_WRITE`] to
    /// [`END_WRITE`], on the writer connection, in one round trip to its thread; returns the
    /// rows its statements returned. When a statement fails, SQLite stops there with the
    /// transaction still open: it is rolled back before the connection goes back to the pool.
    async fn write(
        &self,
        query: sqlx::query::Query<'_, Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> Result<Vec<SqliteRow>, StoreError> {
        let mut conn = self.writer.acquire().await.map_err(sqlite_error)?;
        match query.fetch_all(&mut *conn).await {
            Ok(rows) => Ok(rows),
            Err(error) => {
                // Nothing to roll back (an error, ignored) when it was the BEGIN that failed,
                // or a COMMIT that ended the transaction as it failed.
                if let Err(rollback) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
                    tracing::debug!(%rollback, "nothing to roll back after a failed write");
                }
                Err(sqlite_error(error))
            }
        }
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.writer
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

    async fn list_tenant_secrets(&self) -> Result<Vec<TenantSecretsRow>, StoreError> {
        tenant_secrets::sqlite::list(&self.pool).await
    }

    async fn tenant_secrets_version(&self) -> Result<String, StoreError> {
        tenant_secrets::sqlite::version(&self.pool).await
    }

    async fn add_tenant_secrets(
        &self,
        source: &str,
        tenant: &str,
        secrets: &[SealedSecret],
    ) -> Result<(), StoreError> {
        tenant_secrets::sqlite::add(self.begin_write().await?, source, tenant, secrets).await
    }

    async fn remove_tenant_secret(
        &self,
        source: &str,
        tenant: &str,
        id: Uuid,
    ) -> Result<bool, StoreError> {
        tenant_secrets::sqlite::remove(self.begin_write().await?, source, tenant, id).await
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
        // Encoded before the write lock is taken: nothing but SQL runs while it is held.
        let headers = batch
            .iter()
            .map(|webhook| encode_headers(&webhook.entry.headers))
            .collect::<Result<Vec<_>, _>>()?;
        // One query holds the whole transaction, BEGIN to COMMIT: each query is a round trip
        // to the connection's worker thread and back through the scheduler, and those trips,
        // not SQLite's work, were most of a batch's time. Multi-row statements for the same
        // reason. Rows are inserted in batch order, so a later twin of the same batch
        // conflicts with the first. States and events are written only for the records that
        // went in: their ids are fresh, so a record with the id exists only if it was
        // inserted just now.
        let mut write: QueryBuilder<Sqlite> = QueryBuilder::new(BEGIN_WRITE);
        let rows: Vec<(&NewWebhook, &String)> = batch.iter().zip(&headers).collect();
        for chunk in rows.chunks(rows_per_statement(RECORD_COLUMN_COUNT)) {
            write.push(
                "INSERT INTO webhook_entry_records (id, source, topic, tenant, \
                    idempotency_key, headers, body, received_at, plugin, plugin_version, \
                    correlation_id, plugin_sha256) ",
            );
            write.push_values(chunk, |mut row, (webhook, headers)| {
                let e = &webhook.entry;
                row.push_bind(e.id)
                    .push_bind(e.source.as_str())
                    .push_bind(e.topic.as_deref())
                    .push_bind(e.tenant.as_deref())
                    .push_bind(e.idempotency_key.as_str())
                    .push_bind(headers.as_str())
                    .push_bind(&e.body[..])
                    .push_bind(micros(e.received_at))
                    .push_bind(e.plugin.as_str())
                    .push_bind(e.plugin_version.as_str())
                    .push_bind(e.correlation_id.as_str())
                    .push_bind(e.plugin_sha256.as_str());
            });
            write.push(" ON CONFLICT (source, idempotency_key) DO NOTHING RETURNING id;\n");
        }
        // State rows only for the entries whose events do not tell where they stand.
        let states: Vec<(&NewEntry, (Option<&str>, Option<&str>))> = batch
            .iter()
            .filter_map(|webhook| {
                new_entry_state(&webhook.entry).map(|state| (&webhook.entry, state))
            })
            .collect();
        for chunk in states.chunks(rows_per_statement(STATE_COLUMN_COUNT)) {
            write.push(
                "INSERT INTO webhook_entry_states (id, status, last_error, received_at) \
                 SELECT column1, column2, column3, column4 FROM (",
            );
            write.push_values(chunk, |mut row, (entry, (status, last_error))| {
                row.push_bind(entry.id)
                    .push_bind(*status)
                    .push_bind(*last_error)
                    .push_bind(micros(entry.received_at));
            });
            write
                .push(") WHERE EXISTS (SELECT 1 FROM webhook_entry_records WHERE id = column1);\n");
        }
        let events: Vec<(&NewEntry, &NewEvent, (Cow<[u8]>, Option<i32>))> = batch
            .iter()
            .flat_map(|webhook| {
                webhook.events.iter().map(move |event| {
                    let stored = stored_envelope(event, &webhook.entry.body);
                    (&webhook.entry, event, stored)
                })
            })
            .collect();
        for chunk in events.chunks(rows_per_statement(EVENT_COLUMN_COUNT)) {
            write.push(
                "INSERT INTO webhook_events (id, entry_id, seq, subject, envelope, body_at, \
                    status, attempts, next_attempt_at, created_at) \
                 SELECT column1, column2, column3, column4, column5, column6, 'pending', 0, \
                    column7, column7 FROM (",
            );
            write.push_values(chunk, |mut row, (entry, event, (envelope, body_at))| {
                row.push_bind(event.id.as_str())
                    .push_bind(entry.id)
                    .push_bind(event.seq)
                    .push_bind(event.subject.as_str())
                    .push_bind(&envelope[..])
                    .push_bind(*body_at)
                    .push_bind(micros(entry.received_at));
            });
            write
                .push(") WHERE EXISTS (SELECT 1 FROM webhook_entry_records WHERE id = column2);\n");
        }
        write.push(END_WRITE);
        let inserted: HashSet<Uuid> = self
            .write(write.build())
            .await?
            .iter()
            .map(|row| row.try_get(0).map_err(sqlite_error))
            .collect::<Result<_, _>>()?;
        // A duplicate's key is committed now (by an earlier batch or by this one's first
        // twin): its holder is read after the write lock is released.
        let mut outcomes = Vec::with_capacity(batch.len());
        for webhook in batch {
            if inserted.contains(&webhook.entry.id) {
                outcomes.push(InsertOutcome::Inserted);
                continue;
            }
            let e = &webhook.entry;
            let existing_id = self
                .find_by_key(&e.source, &e.idempotency_key)
                .await?
                .ok_or_else(|| {
                    StoreError::Internal(format!(
                        "the key of source {} was refused as a duplicate but no entry holds it",
                        e.source
                    ))
                })?;
            outcomes.push(InsertOutcome::Duplicate { existing_id });
        }
        Ok(outcomes)
    }

    async fn find_by_key(
        &self,
        source: &str,
        idempotency_key: &str,
    ) -> Result<Option<Uuid>, StoreError> {
        sqlx::query_scalar(ID_BY_KEY)
            .bind(source)
            .bind(idempotency_key)
            .fetch_optional(&self.pool)
            .await
            .map_err(sqlite_error)
    }

    async fn due_events(&self, now: DateTime<Utc>, limit: u32) -> Result<DueEvents, StoreError> {
        let rows = sqlx::query(
            "SELECT id, entry_id, subject, envelope, body_at, attempts, created_at, \
                    (SELECT w.body FROM webhook_entry_records w \
                     WHERE w.id = e.entry_id AND e.body_at IS NOT NULL) AS body \
             FROM webhook_events e \
             WHERE status = 'pending' AND next_attempt_at <= ? \
             ORDER BY next_attempt_at, entry_id, seq \
             LIMIT ?",
        )
        .bind(micros(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(sqlite_error)?;
        sort_due_rows(
            &rows,
            |row| row.try_get("id").map_err(sqlite_error),
            |row| row.try_get("entry_id").ok(),
            outbox_event_from_row,
        )
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
        // One statement is its own transaction: it needs no BEGIN/COMMIT around it.
        sqlx::query(PUBLISH_EVENTS)
            .bind(micros(at))
            .bind(ids.as_str())
            .execute(&self.writer)
            .await
            .map(|_| ())
            .map_err(sqlite_error)
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
        let entry: Option<(Uuid, i64)> = sqlx::query_as(
            "UPDATE webhook_events \
             SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? \
             WHERE id = ? AND status = 'pending' \
             RETURNING entry_id, created_at",
        )
        .bind(micros(next_attempt_at))
        .bind(error)
        .bind(event_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(sqlite_error)?;
        if let Some((entry, received_at)) = entry {
            sqlx::query(
                "INSERT INTO webhook_entry_states (id, attempts, last_error, received_at) \
                 VALUES (?, 1, ?, ?) \
                 ON CONFLICT (id) DO UPDATE \
                 SET attempts = attempts + 1, last_error = excluded.last_error",
            )
            .bind(entry)
            .bind(error)
            .bind(received_at)
            .execute(&mut *tx)
            .await
            .map_err(sqlite_error)?;
        }
        tx.commit().await.map_err(sqlite_error)
    }

    async fn mark_dead(&self, event_id: &str, error: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let entry: Option<(Uuid, i64)> = sqlx::query_as(
            "UPDATE webhook_events \
             SET status = 'dead', next_attempt_at = NULL, last_error = ? \
             WHERE id = ? AND status = 'pending' \
             RETURNING entry_id, created_at",
        )
        .bind(error)
        .bind(event_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(sqlite_error)?;
        if let Some((entry, received_at)) = entry {
            sqlx::query(
                "INSERT INTO webhook_entry_states (id, status, last_error, received_at) \
                 VALUES (?, 'dead', ?, ?) \
                 ON CONFLICT (id) DO UPDATE \
                 SET status = 'dead', last_error = excluded.last_error",
            )
            .bind(entry)
            .bind(error)
            .bind(received_at)
            .execute(&mut *tx)
            .await
            .map_err(sqlite_error)?;
        }
        tx.commit().await.map_err(sqlite_error)
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        // Each count reads only its partial index (dead events a replay superseded, few,
        // are left out: they are no longer in the dead-letter queue).
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM webhook_events WHERE status = 'pending'), \
                    (SELECT count(*) FROM webhook_events \
                     WHERE status = 'dead' AND superseded_by IS NULL)",
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
        let rows = entry_listing::<Sqlite, _>(filter, after, limit, micros)
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
            "SELECT id, entry_id, seq, subject, envelope, body_at, status, attempts, \
                    next_attempt_at, published_at, last_error \
             FROM webhook_events WHERE entry_id = ? ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(sqlite_error)?;
        tx.commit().await.map_err(sqlite_error)?;
        let events = rows
            .iter()
            .map(|row| event_from_row(row, &entry.body))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((entry, events)))
    }

    async fn postpone(
        &self,
        events: &[(String, DateTime<Utc>)],
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        // As in mark_published: one JSON bind, here of [id, micros] pairs.
        let pairs: Vec<(&str, i64)> = events
            .iter()
            .map(|(id, at)| (id.as_str(), micros(*at)))
            .collect();
        let pairs = serde_json::to_string(&pairs)
            .map_err(|e| StoreError::Internal(format!("cannot encode event ids: {e}")))?;
        sqlx::query(
            "UPDATE webhook_events \
             SET next_attempt_at = t.at, last_error = COALESCE(?, webhook_events.last_error) \
             FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS at \
                   FROM json_each(?)) AS t \
             WHERE webhook_events.id = t.id AND webhook_events.status = 'pending'",
        )
        .bind(error)
        .bind(pairs.as_str())
        .execute(&self.writer)
        .await
        .map(|_| ())
        .map_err(sqlite_error)
    }

    async fn count_purgeable(&self, received_before: DateTime<Utc>) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM webhook_entry_records r \
             WHERE r.received_at < ? AND {PURGEABLE_ENTRY}"
        )))
        .bind(micros(received_before))
        .fetch_one(&self.pool)
        .await
        .map_err(sqlite_error)?;
        count(n)
    }

    async fn purge_published(
        &self,
        received_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        // One statement on the writer, so the choice and the delete see the same rows; the
        // events and any state row go with their record (ON DELETE CASCADE).
        let deleted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM webhook_entry_records WHERE id IN ( \
                SELECT r.id FROM webhook_entry_records r \
                WHERE r.received_at < ? AND {PURGEABLE_ENTRY} \
                ORDER BY r.received_at \
                LIMIT ?)"
        )))
        .bind(micros(received_before))
        .bind(i64::from(limit))
        .execute(&self.writer)
        .await
        .map_err(sqlite_error)?;
        Ok(deleted.rows_affected())
    }

    async fn list_entries_oldest_first(
        &self,
        filter: &EntryFilter,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<StoredEntry>, StoreError> {
        let rows = ordered_entry_listing::<Sqlite, _>(filter, after, limit, micros, true)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(sqlite_error)?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn record_remap(
        &self,
        replay: &ReplayRecord,
        remapped: Option<&Remapped>,
    ) -> Result<bool, StoreError> {
        // The write lock, taken up front, also serializes replays of one entry: each places
        // its events after the ones already there.
        let mut tx = self.begin_write().await?;
        let found: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM webhook_entry_records WHERE id = ?")
                .bind(replay.entry_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(sqlite_error)?;
        if found.is_none() {
            return Ok(false);
        }
        if let Some(remapped) = remapped {
            let base: i64 = sqlx::query_scalar(
                "SELECT COALESCE(max(seq) + 1, 0) FROM webhook_events WHERE entry_id = ?",
            )
            .bind(replay.entry_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(sqlite_error)?;
            let at = micros(replay.requested_at);
            for event in &remapped.events {
                let seq = i32::try_from(base + i64::from(event.seq)).map_err(|_| {
                    StoreError::Internal("an entry has too many events to add more".into())
                })?;
                let (envelope, body_at) = stored_envelope(event, &remapped.body);
                sqlx::query(
                    "INSERT INTO webhook_events (id, entry_id, seq, subject, envelope, body_at, \
                        status, attempts, next_attempt_at, created_at) \
                     VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
                )
                .bind(event.id.as_str())
                .bind(replay.entry_id)
                .bind(seq)
                .bind(event.subject.as_str())
                .bind(&envelope[..])
                .bind(body_at)
                .bind(at)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(sqlite_error)?;
            }
            sqlx::query(
                "UPDATE webhook_events SET superseded_by = ? \
                 WHERE entry_id = ? AND status = 'dead' AND superseded_by IS NULL",
            )
            .bind(replay.id)
            .bind(replay.entry_id)
            .execute(&mut *tx)
            .await
            .map_err(sqlite_error)?;
            sqlx::query("UPDATE webhook_entry_records SET topic = ?, tenant = ? WHERE id = ?")
                .bind(remapped.topic.as_deref())
                .bind(remapped.tenant.as_deref())
                .bind(replay.entry_id)
                .execute(&mut *tx)
                .await
                .map_err(sqlite_error)?;
            // NULL: the status follows the events again (`entry_status_derived`).
            sqlx::query(
                "UPDATE webhook_entry_states SET status = NULL, last_error = NULL WHERE id = ?",
            )
            .bind(replay.entry_id)
            .execute(&mut *tx)
            .await
            .map_err(sqlite_error)?;
        }
        insert_replay(&mut tx, replay).await?;
        tx.commit().await.map_err(sqlite_error)?;
        Ok(true)
    }

    async fn list_replays(
        &self,
        filter: &ReplayFilter,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<ReplayRecord>, StoreError> {
        let rows = replay_listing::<Sqlite>(filter, after, limit)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(sqlite_error)?;
        rows.iter().map(replay_from_row).collect()
    }

    async fn dead_letters(
        &self,
        filter: &DeadFilter,
        after: Option<&DeadCursor>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = dead_letter_listing::<Sqlite, _>(filter, after, limit, micros)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(sqlite_error)?;
        rows.iter().map(dead_letter_from_row).collect()
    }

    async fn requeue_dead(
        &self,
        filter: &DeadFilter,
        after: Option<&DeadCursor>,
        limit: u32,
        by: &Requester,
    ) -> Result<RequeuedPage, StoreError> {
        let mut tx = self.begin_write().await?;
        let rows = dead_events_to_requeue::<Sqlite, _>(filter, after, limit, micros)
            .build()
            .fetch_all(&mut *tx)
            .await
            .map_err(sqlite_error)?;
        let mut taken = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in &rows {
            let id: String = row.try_get("id").map_err(sqlite_error)?;
            let entry_id: Uuid = row.try_get("entry_id").map_err(sqlite_error)?;
            last = Some(DeadCursor {
                received_at: time(row.try_get("at").map_err(sqlite_error)?)?,
                entry_id,
                event_id: id.clone(),
            });
            taken.push((id, entry_id));
        }
        if taken.is_empty() {
            return Ok(RequeuedPage::default());
        }
        let ids: Vec<&str> = taken.iter().map(|(id, _)| id.as_str()).collect();
        let ids = serde_json::to_string(&ids)
            .map_err(|e| StoreError::Internal(format!("cannot encode event ids: {e}")))?;
        let at = micros(by.requested_at);
        sqlx::query(
            "UPDATE webhook_events \
             SET status = 'pending', attempts = 0, next_attempt_at = ?, created_at = ? \
             WHERE id IN (SELECT value FROM json_each(?)) AND status = 'dead'",
        )
        .bind(at)
        .bind(at)
        .bind(ids.as_str())
        .execute(&mut *tx)
        .await
        .map_err(sqlite_error)?;
        let records = requeue_records(&taken, by);
        for record in &records {
            sqlx::query(
                "UPDATE webhook_entry_states SET status = NULL \
                 WHERE id = ? AND status = 'dead' AND NOT EXISTS \
                    (SELECT 1 FROM webhook_events e WHERE e.entry_id = webhook_entry_states.id \
                     AND e.status = 'dead' AND e.superseded_by IS NULL)",
            )
            .bind(record.entry_id)
            .execute(&mut *tx)
            .await
            .map_err(sqlite_error)?;
            insert_replay(&mut tx, record).await?;
        }
        tx.commit().await.map_err(sqlite_error)?;
        Ok(RequeuedPage { records, last })
    }

    async fn save_replay_job(&self, job: &ReplayJob) -> Result<(), StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO replay_jobs ({JOB_COLUMNS}) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, \
                processed = excluded.processed, replayed = excluded.replayed, \
                failed = excluded.failed, events = excluded.events, \
                updated_at = excluded.updated_at, finished_at = excluded.finished_at, \
                error = excluded.error"
        )))
        .bind(job.id)
        .bind(job.kind.as_str())
        .bind(&job.filter)
        .bind(&job.requested_by)
        .bind(job.status.as_str())
        .bind(progress_column(job.progress.processed)?)
        .bind(progress_column(job.progress.replayed)?)
        .bind(progress_column(job.progress.failed)?)
        .bind(progress_column(job.progress.events)?)
        .bind(micros(job.created_at))
        .bind(micros(job.updated_at))
        .bind(job.finished_at.map(micros))
        .bind(job.error.as_deref())
        .execute(&self.writer)
        .await
        .map(|_| ())
        .map_err(sqlite_error)
    }

    async fn get_replay_job(&self, id: Uuid) -> Result<Option<ReplayJob>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM replay_jobs WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(sqlite_error)?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list_replay_jobs(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<ReplayJob>, StoreError> {
        let rows = job_listing::<Sqlite>(after, limit)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(sqlite_error)?;
        rows.iter().map(job_from_row).collect()
    }
}

/// Writes one replay record in the caller's write transaction.
async fn insert_replay(
    tx: &mut Transaction<'static, Sqlite>,
    record: &ReplayRecord,
) -> Result<(), StoreError> {
    let plugin = record.plugin.as_ref();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO webhook_replays ({REPLAY_COLUMNS}) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )))
    .bind(record.id)
    .bind(record.entry_id)
    .bind(record.job_id)
    .bind(record.kind.as_str())
    .bind(micros(record.requested_at))
    .bind(record.requested_by.as_str())
    .bind(plugin.map(|p| p.name.as_str()))
    .bind(plugin.map(|p| p.version.as_str()))
    .bind(plugin.map(|p| p.sha256.as_str()))
    .bind(encode_ids(&record.event_ids)?)
    .bind(record.outcome.as_str())
    .bind(record.error.as_deref())
    .execute(&mut **tx)
    .await
    .map(|_| ())
    .map_err(sqlite_error)
}

fn replay_from_row(row: &SqliteRow) -> Result<ReplayRecord, StoreError> {
    let kind: String = row.try_get("kind").map_err(sqlite_error)?;
    let outcome: String = row.try_get("outcome").map_err(sqlite_error)?;
    let event_ids: String = row.try_get("event_ids").map_err(sqlite_error)?;
    let plugin: Option<String> = row.try_get("plugin").map_err(sqlite_error)?;
    let version: Option<String> = row.try_get("plugin_version").map_err(sqlite_error)?;
    let sha256: Option<String> = row.try_get("plugin_sha256").map_err(sqlite_error)?;
    Ok(ReplayRecord {
        id: row.try_get("id").map_err(sqlite_error)?,
        entry_id: row.try_get("entry_id").map_err(sqlite_error)?,
        job_id: row.try_get("job_id").map_err(sqlite_error)?,
        kind: parsed(&kind, ReplayKind::parse, "replay kind")?,
        requested_at: time(row.try_get("requested_at").map_err(sqlite_error)?)?,
        requested_by: row.try_get("requested_by").map_err(sqlite_error)?,
        plugin: plugin.map(|name| PluginRef {
            name,
            version: version.unwrap_or_default(),
            sha256: sha256.unwrap_or_default(),
        }),
        event_ids: decode_ids(&event_ids)?,
        outcome: parsed(&outcome, ReplayOutcome::parse, "replay outcome")?,
        error: row.try_get("error").map_err(sqlite_error)?,
    })
}

fn job_from_row(row: &SqliteRow) -> Result<ReplayJob, StoreError> {
    let kind: String = row.try_get("kind").map_err(sqlite_error)?;
    let status: String = row.try_get("status").map_err(sqlite_error)?;
    let counter = |name: &str| -> Result<u64, StoreError> {
        count_u64(row.try_get::<i64, _>(name).map_err(sqlite_error)?)
    };
    Ok(ReplayJob {
        id: row.try_get("id").map_err(sqlite_error)?,
        kind: parsed(&kind, JobKind::parse, "job kind")?,
        filter: row.try_get("filter").map_err(sqlite_error)?,
        requested_by: row.try_get("requested_by").map_err(sqlite_error)?,
        status: parsed(&status, JobStatus::parse, "job status")?,
        progress: JobProgress {
            processed: counter("processed")?,
            replayed: counter("replayed")?,
            failed: counter("failed")?,
            events: counter("events")?,
        },
        created_at: time(row.try_get("created_at").map_err(sqlite_error)?)?,
        updated_at: time(row.try_get("updated_at").map_err(sqlite_error)?)?,
        finished_at: optional_time(row.try_get("finished_at").map_err(sqlite_error)?)?,
        error: row.try_get("error").map_err(sqlite_error)?,
    })
}

fn dead_letter_from_row(row: &SqliteRow) -> Result<DeadLetter, StoreError> {
    let kind: String = row.try_get("kind").map_err(sqlite_error)?;
    let event_id: String = row.try_get("event_id").map_err(sqlite_error)?;
    Ok(DeadLetter {
        kind: parsed(&kind, DeadKind::parse, "dead-letter kind")?,
        entry_id: row.try_get("entry_id").map_err(sqlite_error)?,
        event_id: (!event_id.is_empty()).then_some(event_id),
        source: row.try_get("source").map_err(sqlite_error)?,
        topic: row.try_get("topic").map_err(sqlite_error)?,
        tenant: row.try_get("tenant").map_err(sqlite_error)?,
        subject: row.try_get("subject").map_err(sqlite_error)?,
        attempts: row.try_get("attempts").map_err(sqlite_error)?,
        last_error: row.try_get("last_error").map_err(sqlite_error)?,
        received_at: time(row.try_get("at").map_err(sqlite_error)?)?,
        plugin: row.try_get("plugin").map_err(sqlite_error)?,
        plugin_version: row.try_get("plugin_version").map_err(sqlite_error)?,
    })
}

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
    let (headers, headers_error) = headers_for_view(&headers);
    Ok(StoredEntry {
        id: row.try_get("id").map_err(sqlite_error)?,
        source: row.try_get("source").map_err(sqlite_error)?,
        topic: row.try_get("topic").map_err(sqlite_error)?,
        tenant: row.try_get("tenant").map_err(sqlite_error)?,
        idempotency_key: row.try_get("idempotency_key").map_err(sqlite_error)?,
        headers,
        headers_error,
        body: Bytes::from(row.try_get::<Vec<u8>, _>("body").map_err(sqlite_error)?),
        received_at: time(row.try_get("received_at").map_err(sqlite_error)?)?,
        status: EntryStatus::parse(&status)
            .ok_or_else(|| StoreError::Internal(format!("unknown entry status {status:?}")))?,
        attempts: row.try_get("attempts").map_err(sqlite_error)?,
        last_error: row.try_get("last_error").map_err(sqlite_error)?,
        plugin: row.try_get("plugin").map_err(sqlite_error)?,
        plugin_version: row.try_get("plugin_version").map_err(sqlite_error)?,
        plugin_sha256: row.try_get("plugin_sha256").map_err(sqlite_error)?,
        correlation_id: row.try_get("correlation_id").map_err(sqlite_error)?,
    })
}

/// A due event as the relay publishes it, its envelope made whole again.
fn outbox_event_from_row(row: &SqliteRow) -> Result<OutboxEvent, StoreError> {
    let body: Option<Vec<u8>> = row.try_get("body").map_err(sqlite_error)?;
    Ok(OutboxEvent {
        id: row.try_get("id").map_err(sqlite_error)?,
        entry_id: row.try_get("entry_id").map_err(sqlite_error)?,
        subject: row.try_get("subject").map_err(sqlite_error)?,
        envelope: read_envelope(
            row.try_get("envelope").map_err(sqlite_error)?,
            row.try_get("body_at").map_err(sqlite_error)?,
            body.as_deref(),
        )?,
        attempts: row.try_get("attempts").map_err(sqlite_error)?,
        created_at: time(row.try_get("created_at").map_err(sqlite_error)?)?,
    })
}

/// `body`: the entry's, which envelopes stored without it need back.
fn event_from_row(row: &SqliteRow, body: &[u8]) -> Result<StoredEvent, StoreError> {
    let status: String = row.try_get("status").map_err(sqlite_error)?;
    let (envelope, envelope_error) = envelope_for_view(
        row.try_get("envelope").map_err(sqlite_error)?,
        row.try_get("body_at").map_err(sqlite_error)?,
        body,
    );
    Ok(StoredEvent {
        id: row.try_get("id").map_err(sqlite_error)?,
        entry_id: row.try_get("entry_id").map_err(sqlite_error)?,
        seq: row.try_get("seq").map_err(sqlite_error)?,
        subject: row.try_get("subject").map_err(sqlite_error)?,
        envelope,
        envelope_error,
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

pub(crate) fn sqlite_error(err: sqlx::Error) -> StoreError {
    classify(err, transient_sqlite_code)
}
