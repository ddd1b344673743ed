-- An entry's status comes from its events unless it has something of its own to say.
-- `accepted` means "an event is still pending", `published` "none is": both follow from
-- `webhook_events`, so the state row that repeated them, written with every webhook and
-- rewritten when its events were published (a sixth of the embedded gateway's throughput,
-- BENCHMARKS.md), goes. A state row now exists only for an entry whose events do not tell
-- its story: `failed` (never mapped), `dead` (an event was dead-lettered), or one whose
-- publication was retried (`attempts`, `last_error`; status NULL, still derived).
-- Readers keep `webhook_entries` with every column and meaning it had.

DROP VIEW webhook_entries;

-- SQLite cannot change a column's constraint in place: the table is rebuilt.
CREATE TABLE webhook_entry_states_sparse (
    id          BLOB    NOT NULL PRIMARY KEY
        REFERENCES webhook_entry_records (id) ON DELETE CASCADE,
    status      TEXT    NULL CHECK (status IN ('failed', 'dead')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT    NULL,
    -- The record's, copied so that a listing filtered by status reads in order from the
    -- status index alone.
    received_at INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO webhook_entry_states_sparse (id, status, attempts, last_error, received_at)
SELECT id, CASE WHEN status IN ('failed', 'dead') THEN status END, attempts, last_error,
       received_at
FROM webhook_entry_states
WHERE status IN ('failed', 'dead') OR attempts <> 0 OR last_error IS NOT NULL;

DROP TABLE webhook_entry_states;
ALTER TABLE webhook_entry_states_sparse RENAME TO webhook_entry_states;
CREATE INDEX webhook_entry_states_status_received_idx
    ON webhook_entry_states (status, received_at DESC, id DESC);

CREATE VIEW webhook_entries AS
SELECT r.id, r.source, r.topic, r.tenant, r.idempotency_key, r.headers, r.body,
       r.received_at,
       COALESCE(s.status,
                CASE WHEN EXISTS (SELECT 1 FROM webhook_events e
                                  WHERE e.entry_id = r.id AND e.status = 'pending')
                     THEN 'accepted' ELSE 'published' END) AS status,
       COALESCE(s.attempts, 0) AS attempts, s.last_error, r.plugin, r.plugin_version,
       r.correlation_id
FROM webhook_entry_records r
LEFT JOIN webhook_entry_states s ON s.id = r.id;
