-- Initial schema. Runs inside the schema named by the connection's search_path
-- (default `hookgate`), so tables are never schema-qualified here.

-- Every stored webhook. `headers` is JSON text ([[name, value], ...]) and not jsonb: the
-- gateway only writes it and reads it back whole, and jsonb parsing would cost CPU on
-- every insert of the hot path.
CREATE TABLE webhook_entries (
    id              uuid        PRIMARY KEY,
    source          text        NOT NULL,
    topic           text        NULL,
    tenant          text        NULL,
    idempotency_key text        NOT NULL,
    headers         text        NOT NULL,
    body            bytea       NOT NULL,
    received_at     timestamptz NOT NULL,
    status          text        NOT NULL
        CHECK (status IN ('accepted', 'published', 'failed', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text        NULL,
    plugin          text        NOT NULL,
    plugin_version  text        NOT NULL,
    correlation_id  text        NOT NULL,
    -- The authoritative duplicate check: outlives any TTL cache.
    CONSTRAINT webhook_entries_source_key_uq UNIQUE (source, idempotency_key)
);

-- The admin listing pages newest first by (received_at, id); each filter gets an index
-- with the same trailing order so a filtered page is still an index range scan.
CREATE INDEX webhook_entries_received_idx
    ON webhook_entries (received_at DESC, id DESC);
CREATE INDEX webhook_entries_source_received_idx
    ON webhook_entries (source, received_at DESC, id DESC);
CREATE INDEX webhook_entries_status_received_idx
    ON webhook_entries (status, received_at DESC, id DESC);
CREATE INDEX webhook_entries_tenant_received_idx
    ON webhook_entries (tenant, received_at DESC, id DESC) WHERE tenant IS NOT NULL;

-- The outbox: one row per event to publish, written in the same transaction as its entry.
CREATE TABLE webhook_events (
    id              text        PRIMARY KEY,
    entry_id        uuid        NOT NULL REFERENCES webhook_entries (id) ON DELETE CASCADE,
    seq             integer     NOT NULL,
    subject         text        NOT NULL,
    envelope        bytea       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'published', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NULL,
    published_at    timestamptz NULL,
    last_error      text        NULL,
    -- The entry's received_at: the retry budget counts from here.
    created_at      timestamptz NOT NULL,
    -- Also serves the FK, get_entry (ordered by seq) and the "all published?" check.
    CONSTRAINT webhook_events_entry_seq_uq UNIQUE (entry_id, seq)
);

-- The relay polls for due pending events; published rows (the vast majority over time)
-- stay out of this index, which also makes the pending count for metrics cheap.
CREATE INDEX webhook_events_due_idx
    ON webhook_events (next_attempt_at, entry_id, seq) WHERE status = 'pending';
-- Dead-letter queue: counted for metrics and listed for replay.
CREATE INDEX webhook_events_dead_idx
    ON webhook_events (created_at) WHERE status = 'dead';

-- Per source and tenant configuration; created now, used by later features.
CREATE TABLE platform_configurations (
    id         uuid        PRIMARY KEY,
    source     text        NOT NULL,
    tenant     text        NULL,
    secrets    text        NOT NULL DEFAULT '[]',
    settings   text        NOT NULL DEFAULT '{}',
    enabled    boolean     NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- NULLS NOT DISTINCT (PostgreSQL 15+) so one tenant-less row per source, not many.
CREATE UNIQUE INDEX platform_configurations_source_tenant_uq
    ON platform_configurations (source, tenant) NULLS NOT DISTINCT;
