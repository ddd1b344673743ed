-- Initial schema, same shape as the PostgreSQL one. Timestamps are INTEGER unix
-- microseconds (UTC): they order and compare correctly and round-trip exactly. UUIDs are
-- 16-byte BLOBs, which compare bytewise like PostgreSQL's uuid, so keyset pages agree.

-- `headers` is JSON text ([[name, value], ...]): only written and read back whole.
CREATE TABLE webhook_entries (
    id              BLOB    NOT NULL PRIMARY KEY,
    source          TEXT    NOT NULL,
    topic           TEXT    NULL,
    tenant          TEXT    NULL,
    idempotency_key TEXT    NOT NULL,
    headers         TEXT    NOT NULL,
    body            BLOB    NOT NULL,
    received_at     INTEGER NOT NULL,
    status          TEXT    NOT NULL
        CHECK (status IN ('accepted', 'published', 'failed', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT    NULL,
    plugin          TEXT    NOT NULL,
    plugin_version  TEXT    NOT NULL,
    correlation_id  TEXT    NOT NULL,
    -- The authoritative duplicate check: outlives any TTL cache.
    CONSTRAINT webhook_entries_source_key_uq UNIQUE (source, idempotency_key)
);

-- Newest-first listing by (received_at, id), plus one index per filter with the same order.
CREATE INDEX webhook_entries_received_idx
    ON webhook_entries (received_at DESC, id DESC);
CREATE INDEX webhook_entries_source_received_idx
    ON webhook_entries (source, received_at DESC, id DESC);
CREATE INDEX webhook_entries_status_received_idx
    ON webhook_entries (status, received_at DESC, id DESC);
CREATE INDEX webhook_entries_tenant_received_idx
    ON webhook_entries (tenant, received_at DESC, id DESC) WHERE tenant IS NOT NULL;

-- The outbox, written in the same transaction as its entry.
CREATE TABLE webhook_events (
    id              TEXT    NOT NULL PRIMARY KEY,
    entry_id        BLOB    NOT NULL REFERENCES webhook_entries (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    subject         TEXT    NOT NULL,
    envelope        BLOB    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'published', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NULL,
    published_at    INTEGER NULL,
    last_error      TEXT    NULL,
    -- The entry's received_at: the retry budget counts from here.
    created_at      INTEGER NOT NULL,
    -- Also serves the FK, get_entry (ordered by seq) and the "all published?" check.
    CONSTRAINT webhook_events_entry_seq_uq UNIQUE (entry_id, seq)
);

-- Due pending events for the relay; published rows stay out of it.
CREATE INDEX webhook_events_due_idx
    ON webhook_events (next_attempt_at, entry_id, seq) WHERE status = 'pending';
-- Dead-letter queue: counted for metrics and listed for replay.
CREATE INDEX webhook_events_dead_idx
    ON webhook_events (created_at) WHERE status = 'dead';

-- Per source and tenant configuration; created now, used by later features.
CREATE TABLE platform_configurations (
    id         BLOB    NOT NULL PRIMARY KEY,
    source     TEXT    NOT NULL,
    tenant     TEXT    NULL,
    secrets    TEXT    NOT NULL DEFAULT '[]',
    settings   TEXT    NOT NULL DEFAULT '{}',
    enabled    INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
-- SQLite treats NULLs as distinct in UNIQUE, so the tenant-less row is keyed on ''.
CREATE UNIQUE INDEX platform_configurations_source_tenant_uq
    ON platform_configurations (source, IFNULL(tenant, ''));
