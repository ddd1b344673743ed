//! PostgreSQL backend: the production store, shared by every gateway instance.
//!
//! Everything lives in one schema (default `hookgate`) selected through the connection's
//! `search_path`, so migrations, `_sqlx_migrations` and queries never name it. The hot
//! path, [`Store::insert_batch`], writes a whole batch of webhooks and their events with
//! one set-based statement (arrays bound once and expanded by `unnest`).

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row};
use uuid::Uuid;

use super::common::{
    ENTRY_COLUMNS, PURGEABLE_ENTRY, classify, count, earlier_twins, encode_headers, entry_listing,
    envelope_for_view, headers_for_view, new_entry_state, ordered_entry_listing, read_envelope,
    sort_due_rows, stored_envelope,
};
use super::replays::{
    JOB_COLUMNS, REPLAY_COLUMNS, count_u64, dead_events_to_requeue, dead_letter_listing,
    decode_ids, encode_ids, job_listing, parsed, progress_column, replay_listing, requeue_records,
};
use super::*;

/// The schema `connect` uses.
pub const DEFAULT_SCHEMA: &str = "hookgate";

/// Connections per gateway: enough for group-committed inserts, the relay and the admin
/// API on a small machine without exhausting the server's `max_connections`.
const POOL_SIZE: u32 = 12;
/// A down database must turn into a quick 503, not requests piling up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Bounds how often a batch is retried when a conflicting row vanished before its id could
/// be read (only possible when entries are deleted concurrently).
const MAX_INSERT_ROUNDS: usize = 3;

pub struct PgStore {
    pool: PgPool,
    schema: String,
}

impl PgStore {
    /// Connects using the `hookgate` schema.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with_schema(url, DEFAULT_SCHEMA).await
    }

    /// Connects using `schema` (lower-case letters, digits and `_`; created by `migrate`).
    pub async fn connect_with_schema(url: &str, schema: &str) -> Result<Self, StoreError> {
        if !valid_schema_name(schema) {
            return Err(StoreError::BadUrl(format!(
                "schema name {schema:?} must be 1-63 characters of a-z, 0-9 and _, not starting with a digit"
            )));
        }
        // The parse error never echoes the URL, which may hold a password.
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl(format!("cannot parse PostgreSQL url: {e}")))?
            // Set at connection start-up: no extra round trip per connection.
            // JIT compiling pays off for long analytical queries; a batch insert whose
            // row estimates pass `jit_above_cost` would spend ~150 ms compiling instead.
            .options([("search_path", schema), ("jit", "off")])
            .application_name("hookgate");
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(pg_error)?;
        Ok(Self {
            pool,
            schema: schema.to_owned(),
        })
    }

    /// The schema this store works in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The underlying pool, for tests and tooling that need raw SQL.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// One set-based insert of entries (skipping those whose key is taken) and of the
    /// events of the entries it did insert. A single statement is its own transaction:
    /// either the batch is durable when it returns, or nothing of it is.
    async fn insert_entries(&self, batch: &[&NewWebhook]) -> Result<Vec<Uuid>, StoreError> {
        let n = batch.len();
        let mut ids = Vec::with_capacity(n);
        let mut sources = Vec::with_capacity(n);
        let mut topics = Vec::with_capacity(n);
        let mut tenants = Vec::with_capacity(n);
        let mut keys = Vec::with_capacity(n);
        let mut headers = Vec::with_capacity(n);
        let mut bodies: Vec<&[u8]> = Vec::with_capacity(n);
        let mut received = Vec::with_capacity(n);
        let mut plugins = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut shas = Vec::with_capacity(n);
        let mut correlations = Vec::with_capacity(n);
        // State rows only for the entries whose events do not tell where they stand.
        let mut st_ids = Vec::new();
        let mut st_statuses = Vec::new();
        let mut st_errors = Vec::new();
        let mut st_at = Vec::new();
        let mut ev_ids = Vec::new();
        let mut ev_entries = Vec::new();
        let mut ev_seqs = Vec::new();
        let mut ev_subjects = Vec::new();
        let mut ev_stored = Vec::new();
        let mut ev_body_at: Vec<Option<i32>> = Vec::new();
        let mut ev_at = Vec::new();
        for webhook in batch {
            let e = &webhook.entry;
            ids.push(e.id);
            sources.push(e.source.as_str());
            topics.push(e.topic.as_deref());
            tenants.push(e.tenant.as_deref());
            keys.push(e.idempotency_key.as_str());
            headers.push(encode_headers(&e.headers)?);
            bodies.push(&e.body);
            received.push(e.received_at);
            plugins.push(e.plugin.as_str());
            versions.push(e.plugin_version.as_str());
            shas.push(e.plugin_sha256.as_str());
            correlations.push(e.correlation_id.as_str());
            if let Some((status, last_error)) = new_entry_state(e) {
                st_ids.push(e.id);
                st_statuses.push(status);
                st_errors.push(last_error);
                st_at.push(e.received_at);
            }
            for event in &webhook.events {
                ev_ids.push(event.id.as_str());
                ev_entries.push(e.id);
                ev_seqs.push(event.seq);
                ev_subjects.push(event.subject.as_str());
                let (envelope, body_at) = stored_envelope(event, &e.body);
                ev_stored.push(envelope);
                ev_body_at.push(body_at);
                ev_at.push(e.received_at);
            }
        }
        let ev_envelopes: Vec<&[u8]> = ev_stored.iter().map(|stored| &stored[..]).collect();
        // The states and events CTEs only see the records this statement inserted, so a
        // duplicate's are never written. Foreign keys are checked at the end of the
        // statement, when the records exist.
        let rows = sqlx::query(
            "WITH ins AS ( \
                INSERT INTO webhook_entry_records (id, source, topic, tenant, \
                    idempotency_key, headers, body, received_at, plugin, plugin_version, \
                    correlation_id, plugin_sha256) \
                SELECT t.id, t.source, t.topic, t.tenant, t.key, t.headers, t.body, t.at, \
                    t.plugin, t.version, t.correlation, t.sha \
                FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
                    $6::text[], $7::bytea[], $8::timestamptz[], $9::text[], $10::text[], \
                    $11::text[], $23::text[]) \
                    AS t(id, source, topic, tenant, key, headers, body, at, plugin, version, \
                        correlation, sha) \
                ON CONFLICT (source, idempotency_key) DO NOTHING \
                RETURNING id \
            ), st AS ( \
                INSERT INTO webhook_entry_states (id, status, last_error, received_at) \
                SELECT t.id, t.status, t.last_error, t.at \
                FROM unnest($12::uuid[], $13::text[], $14::text[], $15::timestamptz[]) \
                    AS t(id, status, last_error, at) \
                WHERE t.id IN (SELECT id FROM ins) \
            ), ev AS ( \
                INSERT INTO webhook_events (id, entry_id, seq, subject, envelope, body_at, \
                    status, attempts, next_attempt_at, created_at) \
                SELECT t.id, t.entry_id, t.seq, t.subject, t.envelope, t.body_at, 'pending', 0, \
                    t.at, t.at \
                FROM unnest($16::text[], $17::uuid[], $18::int4[], $19::text[], \
                    $20::bytea[], $21::int4[], $22::timestamptz[]) \
                    AS t(id, entry_id, seq, subject, envelope, body_at, at) \
                WHERE t.entry_id IN (SELECT id FROM ins) \
            ) \
            SELECT id FROM ins",
        )
        .bind(ids)
        .bind(sources)
        .bind(topics)
        .bind(tenants)
        .bind(keys)
        .bind(headers)
        .bind(bodies)
        .bind(received)
        .bind(plugins)
        .bind(versions)
        .bind(correlations)
        .bind(st_ids)
        .bind(st_statuses)
        .bind(st_errors)
        .bind(st_at)
        .bind(ev_ids)
        .bind(ev_entries)
        .bind(ev_seqs)
        .bind(ev_subjects)
        .bind(ev_envelopes)
        .bind(ev_body_at)
        .bind(ev_at)
        .bind(shas)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?;
        rows.iter()
            .map(|row| row.try_get::<Uuid, _>(0).map_err(pg_error))
            .collect()
    }

    /// The ids already stored under the given (source, key) pairs, in one round trip.
    /// Runs after the insert committed, so it sees rows committed by concurrent batches.
    async fn existing_ids(
        &self,
        pairs: &[(&str, &str)],
    ) -> Result<HashMap<(String, String), Uuid>, StoreError> {
        let sources: Vec<&str> = pairs.iter().map(|p| p.0).collect();
        let keys: Vec<&str> = pairs.iter().map(|p| p.1).collect();
        let rows = sqlx::query(
            "SELECT w.id, w.source, w.idempotency_key \
             FROM webhook_entry_records w \
             JOIN unnest($1::text[], $2::text[]) AS k(source, key) \
               ON w.source = k.source AND w.idempotency_key = k.key",
        )
        .bind(sources)
        .bind(keys)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?;
        let mut found = HashMap::with_capacity(rows.len());
        for row in rows {
            let id: Uuid = row.try_get(0).map_err(pg_error)?;
            let source: String = row.try_get(1).map_err(pg_error)?;
            let key: String = row.try_get(2).map_err(pg_error)?;
            found.insert((source, key), id);
        }
        Ok(found)
    }
}

#[async_trait]
impl Store for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn list_tenant_secrets(&self) -> Result<Vec<TenantSecretsRow>, StoreError> {
        tenant_secrets::postgres::list(&self.pool).await
    }

    async fn tenant_secrets_version(&self) -> Result<String, StoreError> {
        tenant_secrets::postgres::version(&self.pool).await
    }

    async fn add_tenant_secrets(
        &self,
        source: &str,
        tenant: &str,
        secrets: &[SealedSecret],
    ) -> Result<(), StoreError> {
        tenant_secrets::postgres::add(
            self.pool.begin().await.map_err(pg_error)?,
            source,
            tenant,
            secrets,
        )
        .await
    }

    async fn remove_tenant_secret(
        &self,
        source: &str,
        tenant: &str,
        id: Uuid,
    ) -> Result<bool, StoreError> {
        tenant_secrets::postgres::remove(
            self.pool.begin().await.map_err(pg_error)?,
            source,
            tenant,
            id,
        )
        .await
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut migrator = super::migrations::migrator(super::migrations::POSTGRES)?;
        // The migrator creates the schema after taking its advisory lock, so two gateways
        // starting at once do not race on CREATE SCHEMA. The name was validated, and is
        // quoted anyway.
        migrator.create_schema(format!("\"{}\"", self.schema));
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| super::common::migrate_error(e, transient_pg_code))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(pg_error)
    }

    async fn insert_batch(&self, batch: &[NewWebhook]) -> Result<Vec<InsertOutcome>, StoreError> {
        let twins = earlier_twins(batch);
        let mut outcomes: Vec<Option<InsertOutcome>> = vec![None; batch.len()];
        // Sorted by key so concurrent batches take unique-index locks in the same order
        // and cannot deadlock on each other.
        let mut todo: Vec<usize> = (0..batch.len()).filter(|&i| twins[i].is_none()).collect();
        todo.sort_by(|&a, &b| {
            let (a, b) = (&batch[a].entry, &batch[b].entry);
            (&a.source, &a.idempotency_key).cmp(&(&b.source, &b.idempotency_key))
        });
        for _ in 0..MAX_INSERT_ROUNDS {
            if todo.is_empty() {
                break;
            }
            let rows: Vec<&NewWebhook> = todo.iter().map(|&i| &batch[i]).collect();
            let inserted: std::collections::HashSet<Uuid> =
                self.insert_entries(&rows).await?.into_iter().collect();
            let mut conflicts = Vec::new();
            for &i in &todo {
                if inserted.contains(&batch[i].entry.id) {
                    outcomes[i] = Some(InsertOutcome::Inserted);
                } else {
                    conflicts.push(i);
                }
            }
            if conflicts.is_empty() {
                todo.clear();
                break;
            }
            let pairs: Vec<(&str, &str)> = conflicts
                .iter()
                .map(|&i| {
                    let e = &batch[i].entry;
                    (e.source.as_str(), e.idempotency_key.as_str())
                })
                .collect();
            let existing = self.existing_ids(&pairs).await?;
            todo.clear();
            for i in conflicts {
                let e = &batch[i].entry;
                match existing.get(&(e.source.clone(), e.idempotency_key.clone())) {
                    Some(&existing_id) => {
                        outcomes[i] = Some(InsertOutcome::Duplicate { existing_id })
                    }
                    // The row that blocked the insert was deleted since: try again.
                    None => todo.push(i),
                }
            }
        }
        if !todo.is_empty() {
            return Err(StoreError::Unavailable(
                "conflicting entries keep disappearing; retry the batch".into(),
            ));
        }
        for (i, twin) in twins.iter().enumerate() {
            if let Some(j) = *twin {
                let existing_id = match outcomes[j] {
                    Some(InsertOutcome::Duplicate { existing_id }) => existing_id,
                    _ => batch[j].entry.id,
                };
                outcomes[i] = Some(InsertOutcome::Duplicate { existing_id });
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| StoreError::Internal("batch outcome missing".into())))
            .collect()
    }

    async fn find_by_key(
        &self,
        source: &str,
        idempotency_key: &str,
    ) -> Result<Option<Uuid>, StoreError> {
        sqlx::query_scalar(
            "SELECT id FROM webhook_entry_records WHERE source = $1 AND idempotency_key = $2",
        )
        .bind(source)
        .bind(idempotency_key)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)
    }

    async fn due_events(&self, now: DateTime<Utc>, limit: u32) -> Result<DueEvents, StoreError> {
        let rows = sqlx::query(
            "SELECT id, entry_id, subject, envelope, body_at, attempts, created_at, \
                    (SELECT w.body FROM webhook_entry_records w \
                     WHERE w.id = e.entry_id AND e.body_at IS NOT NULL) AS body \
             FROM webhook_events e \
             WHERE status = 'pending' AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at, entry_id, seq \
             LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?;
        sort_due_rows(
            &rows,
            |row| row.try_get("id").map_err(pg_error),
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
        // One statement: an entry's `published` follows from its events (see the
        // `entry_status_derived` migration), so nothing else is written.
        //
        // `(status || '') = ...`: a condition no index can serve. On the bare column the
        // planner ANDs a bitmap of the ids with the pending events' partial index, which
        // walks the whole unpublished backlog and the dead index entries left by earlier
        // updates; the primary key alone finds the few rows. (Measured: +3% production
        // throughput, BENCHMARKS.md.)
        sqlx::query(
            "UPDATE webhook_events \
             SET status = 'published', published_at = $2, next_attempt_at = NULL \
             WHERE id = ANY($1) AND (status || '') = 'pending'",
        )
        .bind(event_ids)
        .bind(at)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(pg_error)
    }

    async fn mark_retry(
        &self,
        event_id: &str,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        // One statement, hence atomic; only a pending event is touched so a late retry
        // cannot resurrect an event another relay already published.
        sqlx::query(
            "WITH ev AS ( \
                UPDATE webhook_events \
                SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3 \
                WHERE id = $1 AND status = 'pending' \
                RETURNING entry_id, created_at \
            ) \
            INSERT INTO webhook_entry_states AS s (id, attempts, last_error, received_at) \
            SELECT entry_id, 1, $3, created_at FROM ev \
            ON CONFLICT (id) DO UPDATE \
            SET attempts = s.attempts + 1, last_error = excluded.last_error",
        )
        .bind(event_id)
        .bind(next_attempt_at)
        .bind(error)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(pg_error)
    }

    async fn mark_dead(&self, event_id: &str, error: &str) -> Result<(), StoreError> {
        sqlx::query(
            "WITH ev AS ( \
                UPDATE webhook_events \
                SET status = 'dead', next_attempt_at = NULL, last_error = $2 \
                WHERE id = $1 AND status = 'pending' \
                RETURNING entry_id, created_at \
            ) \
            INSERT INTO webhook_entry_states AS s (id, status, last_error, received_at) \
            SELECT entry_id, 'dead', $2, created_at FROM ev \
            ON CONFLICT (id) DO UPDATE SET status = 'dead', last_error = excluded.last_error",
        )
        .bind(event_id)
        .bind(error)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(pg_error)
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
        .map_err(pg_error)?;
        Ok(OutboxStats {
            pending: count(row.try_get(0).map_err(pg_error)?)?,
            dead: count(row.try_get(1).map_err(pg_error)?)?,
        })
    }

    async fn list_entries(
        &self,
        filter: &EntryFilter,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<StoredEntry>, StoreError> {
        let mut q = entry_listing::<Postgres, _>(filter, after, limit, |at| at);
        let rows = q.build().fetch_all(&self.pool).await.map_err(pg_error)?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn get_entry(
        &self,
        id: Uuid,
    ) -> Result<Option<(StoredEntry, Vec<StoredEvent>)>, StoreError> {
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENTRY_COLUMNS} FROM webhook_entries WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?
        else {
            return Ok(None);
        };
        let entry = entry_from_row(&row)?;
        let rows = sqlx::query(
            "SELECT id, entry_id, seq, subject, envelope, body_at, status, attempts, \
                    next_attempt_at, published_at, last_error \
             FROM webhook_events WHERE entry_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?;
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
        let ids: Vec<&str> = events.iter().map(|(id, _)| id.as_str()).collect();
        let times: Vec<DateTime<Utc>> = events.iter().map(|(_, at)| *at).collect();
        sqlx::query(
            "UPDATE webhook_events e \
             SET next_attempt_at = t.at, last_error = COALESCE($3, e.last_error) \
             FROM unnest($1::text[], $2::timestamptz[]) AS t(id, at) \
             WHERE e.id = t.id AND e.status = 'pending'",
        )
        .bind(ids)
        .bind(times)
        .bind(error)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(pg_error)
    }

    async fn count_purgeable(&self, received_before: DateTime<Utc>) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM webhook_entry_records r \
             WHERE r.received_at < $1 AND {PURGEABLE_ENTRY}"
        )))
        .bind(received_before)
        .fetch_one(&self.pool)
        .await
        .map_err(pg_error)?;
        count(n)
    }

    async fn purge_published(
        &self,
        received_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        // The events and any state row go with their record (ON DELETE CASCADE). The rows
        // are locked as they are chosen, and those another transaction holds (an event
        // being added by a replay, say) are left for the next round.
        let deleted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM webhook_entry_records WHERE id IN ( \
                SELECT r.id FROM webhook_entry_records r \
                WHERE r.received_at < $1 AND {PURGEABLE_ENTRY} \
                ORDER BY r.received_at \
                LIMIT $2 \
                FOR UPDATE SKIP LOCKED)"
        )))
        .bind(received_before)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(pg_error)?;
        Ok(deleted.rows_affected())
    }

    async fn list_entries_oldest_first(
        &self,
        filter: &EntryFilter,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<StoredEntry>, StoreError> {
        let mut q = ordered_entry_listing::<Postgres, _>(filter, after, limit, |at| at, true);
        let rows = q.build().fetch_all(&self.pool).await.map_err(pg_error)?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn record_remap(
        &self,
        replay: &ReplayRecord,
        remapped: Option<&Remapped>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        // The row lock serializes replays of one entry: each places its events after the
        // ones already there.
        let found: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM webhook_entry_records WHERE id = $1 FOR UPDATE")
                .bind(replay.entry_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(pg_error)?;
        if found.is_none() {
            return Ok(false);
        }
        if let Some(remapped) = remapped {
            let mut ids = Vec::with_capacity(remapped.events.len());
            let mut seqs = Vec::with_capacity(remapped.events.len());
            let mut subjects = Vec::with_capacity(remapped.events.len());
            let mut stored = Vec::with_capacity(remapped.events.len());
            let mut body_at: Vec<Option<i32>> = Vec::with_capacity(remapped.events.len());
            for event in &remapped.events {
                ids.push(event.id.as_str());
                seqs.push(event.seq);
                subjects.push(event.subject.as_str());
                let (envelope, at) = stored_envelope(event, &remapped.body);
                stored.push(envelope);
                body_at.push(at);
            }
            let envelopes: Vec<&[u8]> = stored.iter().map(|e| &e[..]).collect();
            sqlx::query(
                "INSERT INTO webhook_events (id, entry_id, seq, subject, envelope, body_at, \
                    status, attempts, next_attempt_at, created_at) \
                 SELECT t.id, $1, base.n + t.seq, t.subject, t.envelope, t.body_at, \
                    'pending', 0, $2, $2 \
                 FROM unnest($3::text[], $4::int4[], $5::text[], $6::bytea[], $7::int4[]) \
                    AS t(id, seq, subject, envelope, body_at), \
                    (SELECT COALESCE(max(seq) + 1, 0) AS n FROM webhook_events \
                     WHERE entry_id = $1) AS base",
            )
            .bind(replay.entry_id)
            .bind(replay.requested_at)
            .bind(ids)
            .bind(seqs)
            .bind(subjects)
            .bind(envelopes)
            .bind(body_at)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
            sqlx::query(
                "UPDATE webhook_events SET superseded_by = $2 \
                 WHERE entry_id = $1 AND status = 'dead' AND superseded_by IS NULL",
            )
            .bind(replay.entry_id)
            .bind(replay.id)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
            sqlx::query("UPDATE webhook_entry_records SET topic = $2, tenant = $3 WHERE id = $1")
                .bind(replay.entry_id)
                .bind(remapped.topic.as_deref())
                .bind(remapped.tenant.as_deref())
                .execute(&mut *tx)
                .await
                .map_err(pg_error)?;
            // NULL: the status follows the events again (`entry_status_derived`).
            sqlx::query(
                "UPDATE webhook_entry_states SET status = NULL, last_error = NULL WHERE id = $1",
            )
            .bind(replay.entry_id)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        }
        insert_replays(&mut tx, std::slice::from_ref(replay)).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(true)
    }

    async fn list_replays(
        &self,
        filter: &ReplayFilter,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<ReplayRecord>, StoreError> {
        let mut q = replay_listing::<Postgres>(filter, after, limit);
        let rows = q.build().fetch_all(&self.pool).await.map_err(pg_error)?;
        rows.iter().map(replay_from_row).collect()
    }

    async fn dead_letters(
        &self,
        filter: &DeadFilter,
        after: Option<&DeadCursor>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let mut q = dead_letter_listing::<Postgres, _>(filter, after, limit, |at| at);
        let rows = q.build().fetch_all(&self.pool).await.map_err(pg_error)?;
        rows.iter().map(dead_letter_from_row).collect()
    }

    async fn requeue_dead(
        &self,
        filter: &DeadFilter,
        after: Option<&DeadCursor>,
        limit: u32,
        by: &Requester,
    ) -> Result<RequeuedPage, StoreError> {
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        let mut q = dead_events_to_requeue::<Postgres, _>(filter, after, limit, |at| at);
        q.push(" FOR UPDATE OF e");
        let rows = q.build().fetch_all(&mut *tx).await.map_err(pg_error)?;
        let mut taken = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in &rows {
            let id: String = row.try_get("id").map_err(pg_error)?;
            let entry_id: Uuid = row.try_get("entry_id").map_err(pg_error)?;
            last = Some(DeadCursor {
                received_at: row.try_get("at").map_err(pg_error)?,
                entry_id,
                event_id: id.clone(),
            });
            taken.push((id, entry_id));
        }
        if taken.is_empty() {
            return Ok(RequeuedPage::default());
        }
        let ids: Vec<&str> = taken.iter().map(|(id, _)| id.as_str()).collect();
        let entries: Vec<Uuid> = taken.iter().map(|(_, entry)| *entry).collect();
        sqlx::query(
            "UPDATE webhook_events \
             SET status = 'pending', attempts = 0, next_attempt_at = $2, created_at = $2 \
             WHERE id = ANY($1) AND status = 'dead'",
        )
        .bind(&ids)
        .bind(by.requested_at)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        sqlx::query(
            "UPDATE webhook_entry_states s SET status = NULL \
             WHERE s.id = ANY($1) AND s.status = 'dead' AND NOT EXISTS \
                (SELECT 1 FROM webhook_events e \
                 WHERE e.entry_id = s.id AND e.status = 'dead' AND e.superseded_by IS NULL)",
        )
        .bind(&entries)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        let records = requeue_records(&taken, by);
        insert_replays(&mut tx, &records).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(RequeuedPage { records, last })
    }

    async fn save_replay_job(&self, job: &ReplayJob) -> Result<(), StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO replay_jobs ({JOB_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
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
        .bind(job.created_at)
        .bind(job.updated_at)
        .bind(job.finished_at)
        .bind(job.error.as_deref())
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(pg_error)
    }

    async fn get_replay_job(&self, id: Uuid) -> Result<Option<ReplayJob>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM replay_jobs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list_replay_jobs(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<ReplayJob>, StoreError> {
        let mut q = job_listing::<Postgres>(after, limit);
        let rows = q.build().fetch_all(&self.pool).await.map_err(pg_error)?;
        rows.iter().map(job_from_row).collect()
    }
}

/// Writes replay records, however many, in one statement of the caller's transaction.
async fn insert_replays(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    records: &[ReplayRecord],
) -> Result<(), StoreError> {
    let mut ids = Vec::with_capacity(records.len());
    let mut entries = Vec::with_capacity(records.len());
    let mut jobs = Vec::with_capacity(records.len());
    let mut kinds = Vec::with_capacity(records.len());
    let mut at = Vec::with_capacity(records.len());
    let mut by = Vec::with_capacity(records.len());
    let mut plugins = Vec::with_capacity(records.len());
    let mut versions = Vec::with_capacity(records.len());
    let mut digests = Vec::with_capacity(records.len());
    let mut events = Vec::with_capacity(records.len());
    let mut outcomes = Vec::with_capacity(records.len());
    let mut errors = Vec::with_capacity(records.len());
    for record in records {
        ids.push(record.id);
        entries.push(record.entry_id);
        jobs.push(record.job_id);
        kinds.push(record.kind.as_str());
        at.push(record.requested_at);
        by.push(record.requested_by.as_str());
        plugins.push(record.plugin.as_ref().map(|p| p.name.as_str()));
        versions.push(record.plugin.as_ref().map(|p| p.version.as_str()));
        digests.push(record.plugin.as_ref().map(|p| p.sha256.as_str()));
        events.push(encode_ids(&record.event_ids)?);
        outcomes.push(record.outcome.as_str());
        errors.push(record.error.as_deref());
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO webhook_replays ({REPLAY_COLUMNS}) \
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], \
            $5::timestamptz[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], \
            $11::text[], $12::text[])"
    )))
    .bind(ids)
    .bind(entries)
    .bind(jobs)
    .bind(kinds)
    .bind(at)
    .bind(by)
    .bind(plugins)
    .bind(versions)
    .bind(digests)
    .bind(events)
    .bind(outcomes)
    .bind(errors)
    .execute(&mut **tx)
    .await
    .map(|_| ())
    .map_err(pg_error)
}

fn replay_from_row(row: &PgRow) -> Result<ReplayRecord, StoreError> {
    let kind: String = row.try_get("kind").map_err(pg_error)?;
    let outcome: String = row.try_get("outcome").map_err(pg_error)?;
    let event_ids: String = row.try_get("event_ids").map_err(pg_error)?;
    let plugin: Option<String> = row.try_get("plugin").map_err(pg_error)?;
    let version: Option<String> = row.try_get("plugin_version").map_err(pg_error)?;
    let sha256: Option<String> = row.try_get("plugin_sha256").map_err(pg_error)?;
    Ok(ReplayRecord {
        id: row.try_get("id").map_err(pg_error)?,
        entry_id: row.try_get("entry_id").map_err(pg_error)?,
        job_id: row.try_get("job_id").map_err(pg_error)?,
        kind: parsed(&kind, ReplayKind::parse, "replay kind")?,
        requested_at: row.try_get("requested_at").map_err(pg_error)?,
        requested_by: row.try_get("requested_by").map_err(pg_error)?,
        plugin: plugin.map(|name| PluginRef {
            name,
            version: version.unwrap_or_default(),
            sha256: sha256.unwrap_or_default(),
        }),
        event_ids: decode_ids(&event_ids)?,
        outcome: parsed(&outcome, ReplayOutcome::parse, "replay outcome")?,
        error: row.try_get("error").map_err(pg_error)?,
    })
}

fn job_from_row(row: &PgRow) -> Result<ReplayJob, StoreError> {
    let kind: String = row.try_get("kind").map_err(pg_error)?;
    let status: String = row.try_get("status").map_err(pg_error)?;
    let counter = |name: &str| -> Result<u64, StoreError> {
        count_u64(row.try_get::<i64, _>(name).map_err(pg_error)?)
    };
    Ok(ReplayJob {
        id: row.try_get("id").map_err(pg_error)?,
        kind: parsed(&kind, JobKind::parse, "job kind")?,
        filter: row.try_get("filter").map_err(pg_error)?,
        requested_by: row.try_get("requested_by").map_err(pg_error)?,
        status: parsed(&status, JobStatus::parse, "job status")?,
        progress: JobProgress {
            processed: counter("processed")?,
            replayed: counter("replayed")?,
            failed: counter("failed")?,
            events: counter("events")?,
        },
        created_at: row.try_get("created_at").map_err(pg_error)?,
        updated_at: row.try_get("updated_at").map_err(pg_error)?,
        finished_at: row.try_get("finished_at").map_err(pg_error)?,
        error: row.try_get("error").map_err(pg_error)?,
    })
}

fn dead_letter_from_row(row: &PgRow) -> Result<DeadLetter, StoreError> {
    let kind: String = row.try_get("kind").map_err(pg_error)?;
    let event_id: String = row.try_get("event_id").map_err(pg_error)?;
    Ok(DeadLetter {
        kind: parsed(&kind, DeadKind::parse, "dead-letter kind")?,
        entry_id: row.try_get("entry_id").map_err(pg_error)?,
        event_id: (!event_id.is_empty()).then_some(event_id),
        source: row.try_get("source").map_err(pg_error)?,
        topic: row.try_get("topic").map_err(pg_error)?,
        tenant: row.try_get("tenant").map_err(pg_error)?,
        subject: row.try_get("subject").map_err(pg_error)?,
        attempts: row.try_get("attempts").map_err(pg_error)?,
        last_error: row.try_get("last_error").map_err(pg_error)?,
        received_at: row.try_get("at").map_err(pg_error)?,
        plugin: row.try_get("plugin").map_err(pg_error)?,
        plugin_version: row.try_get("plugin_version").map_err(pg_error)?,
    })
}

fn entry_from_row(row: &PgRow) -> Result<StoredEntry, StoreError> {
    let status: String = row.try_get("status").map_err(pg_error)?;
    let headers: String = row.try_get("headers").map_err(pg_error)?;
    let (headers, headers_error) = headers_for_view(&headers);
    Ok(StoredEntry {
        id: row.try_get("id").map_err(pg_error)?,
        source: row.try_get("source").map_err(pg_error)?,
        topic: row.try_get("topic").map_err(pg_error)?,
        tenant: row.try_get("tenant").map_err(pg_error)?,
        idempotency_key: row.try_get("idempotency_key").map_err(pg_error)?,
        headers,
        headers_error,
        body: Bytes::from(row.try_get::<Vec<u8>, _>("body").map_err(pg_error)?),
        received_at: row.try_get("received_at").map_err(pg_error)?,
        status: EntryStatus::parse(&status)
            .ok_or_else(|| StoreError::Internal(format!("unknown entry status {status:?}")))?,
        attempts: row.try_get("attempts").map_err(pg_error)?,
        last_error: row.try_get("last_error").map_err(pg_error)?,
        plugin: row.try_get("plugin").map_err(pg_error)?,
        plugin_version: row.try_get("plugin_version").map_err(pg_error)?,
        plugin_sha256: row.try_get("plugin_sha256").map_err(pg_error)?,
        correlation_id: row.try_get("correlation_id").map_err(pg_error)?,
    })
}

/// A due event as the relay publishes it, its envelope made whole again.
fn outbox_event_from_row(row: &PgRow) -> Result<OutboxEvent, StoreError> {
    let body: Option<Vec<u8>> = row.try_get("body").map_err(pg_error)?;
    Ok(OutboxEvent {
        id: row.try_get("id").map_err(pg_error)?,
        entry_id: row.try_get("entry_id").map_err(pg_error)?,
        subject: row.try_get("subject").map_err(pg_error)?,
        envelope: read_envelope(
            row.try_get("envelope").map_err(pg_error)?,
            row.try_get("body_at").map_err(pg_error)?,
            body.as_deref(),
        )?,
        attempts: row.try_get("attempts").map_err(pg_error)?,
        created_at: row.try_get("created_at").map_err(pg_error)?,
    })
}

/// `body`: the entry's, which envelopes stored without it need back.
fn event_from_row(row: &PgRow, body: &[u8]) -> Result<StoredEvent, StoreError> {
    let status: String = row.try_get("status").map_err(pg_error)?;
    let (envelope, envelope_error) = envelope_for_view(
        row.try_get("envelope").map_err(pg_error)?,
        row.try_get("body_at").map_err(pg_error)?,
        body,
    );
    Ok(StoredEvent {
        id: row.try_get("id").map_err(pg_error)?,
        entry_id: row.try_get("entry_id").map_err(pg_error)?,
        seq: row.try_get("seq").map_err(pg_error)?,
        subject: row.try_get("subject").map_err(pg_error)?,
        envelope,
        envelope_error,
        status: EventStatus::parse(&status)
            .ok_or_else(|| StoreError::Internal(format!("unknown event status {status:?}")))?,
        attempts: row.try_get("attempts").map_err(pg_error)?,
        next_attempt_at: row.try_get("next_attempt_at").map_err(pg_error)?,
        published_at: row.try_get("published_at").map_err(pg_error)?,
        last_error: row.try_get("last_error").map_err(pg_error)?,
    })
}

/// Lower-case only so the name needs no quoting in `search_path` and means the same
/// quoted or not.
fn valid_schema_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

/// SQLSTATEs that mean "try again later": connection exceptions (08), insufficient
/// resources (53), operator intervention such as a shutdown (57), serialization failures
/// and deadlocks (40001, 40P01), lock timeouts (55P03) and a read-only standby (25006).
fn transient_pg_code(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57")
        || matches!(code, "40001" | "40P01" | "55P03" | "25006")
}

pub(crate) fn pg_error(err: sqlx::Error) -> StoreError {
    classify(err, transient_pg_code)
}
