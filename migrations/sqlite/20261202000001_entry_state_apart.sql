-- `webhook_entries` becomes a view over two tables: what was received, written once and
-- never rewritten (`webhook_entry_records`: the headers, the body, where it came from), and
-- where it stands (`webhook_entry_states`: status, attempts, last error), rewritten as the
-- entry moves on. Recording a publication used to rewrite each entry's ~3.8 KB row, so its
-- whole page went to the WAL a second time for a status change of a few bytes; a state row
-- is a few dozen bytes, and one page holds the states of about a hundred consecutive
-- entries. Readers keep `webhook_entries` with every column and meaning it had; the gateway
-- writes the two tables. (PostgreSQL keeps one table: there the rewrite barely counts.)

-- The entries' table keeps its rows and becomes the records; the events' foreign key
-- follows the rename.
ALTER TABLE webhook_entries RENAME TO webhook_entry_records;

CREATE TABLE webhook_entry_states (
    id          BLOB    NOT NULL PRIMARY KEY
        REFERENCES webhook_entry_records (id) ON DELETE CASCADE,
    status      TEXT    NOT NULL
        CHECK (status IN ('accepted', 'published', 'failed', 'dead')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT    NULL,
    -- The record's, copied so that a listing filtered by status reads in order from the
    -- status index alone.
    received_at INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO webhook_entry_states (id, status, attempts, last_error, received_at)
SELECT id, status, attempts, last_error, received_at FROM webhook_entry_records;

-- Indexes named after the table they now index.
DROP INDEX webhook_entries_status_received_idx;
DROP INDEX webhook_entries_received_idx;
DROP INDEX webhook_entries_source_received_idx;
DROP INDEX webhook_entries_tenant_received_idx;
ALTER TABLE webhook_entry_records DROP COLUMN status;
ALTER TABLE webhook_entry_records DROP COLUMN attempts;
ALTER TABLE webhook_entry_records DROP COLUMN last_error;

CREATE INDEX webhook_entry_records_received_idx
    ON webhook_entry_records (received_at DESC, id DESC);
CREATE INDEX webhook_entry_records_source_received_idx
    ON webhook_entry_records (source, received_at DESC, id DESC);
CREATE INDEX webhook_entry_records_tenant_received_idx
    ON webhook_entry_records (tenant, received_at DESC, id DESC) WHERE tenant IS NOT NULL;
CREATE INDEX webhook_entry_states_status_received_idx
    ON webhook_entry_states (status, received_at DESC, id DESC);

CREATE VIEW webhook_entries AS
SELECT r.id, r.source, r.topic, r.tenant, r.idempotency_key, r.headers, r.body,
       r.received_at, s.status, s.attempts, s.last_error, r.plugin, r.plugin_version,
       r.correlation_id
FROM webhook_entry_records r
JOIN webhook_entry_states s ON s.id = r.id;
