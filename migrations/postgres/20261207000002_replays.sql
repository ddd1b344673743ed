-- Replays: what failed is re-driven by an operator, and each re-drive is recorded.
--
-- A replay re-maps a stored webhook through the plugin serving now and adds its events to
-- the outbox under new ids, keeping the old ones; or it re-queues dead events as they are.
-- Either way the events' `created_at` is the replay's time, since the retry budget must
-- count from the moment publication is asked for again, not from the original receipt.

-- Set on the dead events of an entry that a later replay re-mapped: they stay, as
-- history, but leave the dead-letter queue, so replaying the queue cannot publish the
-- output of the old plugin next to the new one.
ALTER TABLE webhook_events ADD COLUMN superseded_by uuid NULL;

-- Bulk replays run as jobs; progress is rewritten after each small batch. A job left
-- `queued` or `running` by a stopped gateway is reported as interrupted once its
-- `updated_at` stops moving.
CREATE TABLE replay_jobs (
    id           uuid        PRIMARY KEY,
    kind         text        NOT NULL CHECK (kind IN ('webhooks', 'dlq')),
    -- The selection as the operator gave it (JSON object), shown back as is.
    filter       text        NOT NULL,
    -- A fingerprint of the admin token (first 8 hex digits of its SHA-256), never the token.
    requested_by text        NOT NULL,
    status       text        NOT NULL
        CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    processed    bigint      NOT NULL DEFAULT 0,
    replayed     bigint      NOT NULL DEFAULT 0,
    failed       bigint      NOT NULL DEFAULT 0,
    events       bigint      NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    finished_at  timestamptz NULL,
    error        text        NULL
);

-- One row per webhook per replay: when, by whom, through which plugin, which new events,
-- and how it went (`failed` with the reason when the plugin still cannot map it).
CREATE TABLE webhook_replays (
    id             uuid        PRIMARY KEY,
    entry_id       uuid        NOT NULL
        REFERENCES webhook_entry_records (id) ON DELETE CASCADE,
    job_id         uuid        NULL REFERENCES replay_jobs (id) ON DELETE SET NULL,
    kind           text        NOT NULL CHECK (kind IN ('remap', 'requeue')),
    requested_at   timestamptz NOT NULL,
    requested_by   text        NOT NULL,
    plugin         text        NULL,
    plugin_version text        NULL,
    plugin_sha256  text        NULL,
    -- JSON array of the event ids this replay queued.
    event_ids      text        NOT NULL,
    outcome        text        NOT NULL
        CHECK (outcome IN ('queued', 'no_events', 'failed', 'requeued')),
    error          text        NULL
);
CREATE INDEX webhook_replays_entry_idx ON webhook_replays (entry_id, id);
CREATE INDEX webhook_replays_job_idx ON webhook_replays (job_id, id) WHERE job_id IS NOT NULL;
