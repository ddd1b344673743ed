-- Replays: what failed is re-driven by an operator, and each re-drive is recorded. Same
-- shape as the PostgreSQL migration: timestamps in unix microseconds, UUIDs as 16-byte
-- BLOBs.
--
-- A replay re-maps a stored webhook through the plugin serving now and adds its events to
-- the outbox under new ids, keeping the old ones; or it re-queues dead events as they are.
-- Either way the events' `created_at` is the replay's time, since the retry budget must
-- count from the moment publication is asked for again, not from the original receipt.

-- Set on the dead events of an entry that a later replay re-mapped: they stay, as
-- history, but leave the dead-letter queue, so replaying the queue cannot publish the
-- output of the old plugin next to the new one.
ALTER TABLE webhook_events ADD COLUMN superseded_by BLOB NULL;

-- Bulk replays run as jobs; progress is rewritten after each small batch. A job left
-- `queued` or `running` by a stopped gateway is reported as interrupted once its
-- `updated_at` stops moving.
CREATE TABLE replay_jobs (
    id           BLOB    NOT NULL PRIMARY KEY,
    kind         TEXT    NOT NULL CHECK (kind IN ('webhooks', 'dlq')),
    -- The selection as the operator gave it (JSON object), shown back as is.
    filter       TEXT    NOT NULL,
    -- A fingerprint of the admin token (first 8 hex digits of its SHA-256), never the token.
    requested_by TEXT    NOT NULL,
    status       TEXT    NOT NULL
        CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    processed    INTEGER NOT NULL DEFAULT 0,
    replayed     INTEGER NOT NULL DEFAULT 0,
    failed       INTEGER NOT NULL DEFAULT 0,
    events       INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    finished_at  INTEGER NULL,
    error        TEXT    NULL
);

-- One row per webhook per replay: when, by whom, through which plugin, which new events,
-- and how it went (`failed` with the reason when the plugin still cannot map it).
CREATE TABLE webhook_replays (
    id             BLOB    NOT NULL PRIMARY KEY,
    entry_id       BLOB    NOT NULL
        REFERENCES webhook_entry_records (id) ON DELETE CASCADE,
    job_id         BLOB    NULL REFERENCES replay_jobs (id) ON DELETE SET NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('remap', 'requeue')),
    requested_at   INTEGER NOT NULL,
    requested_by   TEXT    NOT NULL,
    plugin         TEXT    NULL,
    plugin_version TEXT    NULL,
    plugin_sha256  TEXT    NULL,
    -- JSON array of the event ids this replay queued.
    event_ids      TEXT    NOT NULL,
    outcome        TEXT    NOT NULL
        CHECK (outcome IN ('queued', 'no_events', 'failed', 'requeued')),
    error          TEXT    NULL
);
CREATE INDEX webhook_replays_entry_idx ON webhook_replays (entry_id, id);
CREATE INDEX webhook_replays_job_idx ON webhook_replays (job_id, id) WHERE job_id IS NOT NULL;
