-- An entry's status comes from its events unless it has something of its own to say.
-- `accepted` means "an event is still pending", `published` "none is": both follow from
-- `webhook_events`, so the state row that repeated them, inserted with every webhook and
-- locked and rewritten when its events were published, goes. A state row now exists only
-- for an entry whose events do not tell its story: `failed` (never mapped), `dead` (an
-- event was dead-lettered), or one whose publication was retried (`attempts`,
-- `last_error`; status NULL, still derived). Publishing is then one update of the events.
-- Readers keep `webhook_entries` with every column and meaning it had.

DROP VIEW webhook_entries;

ALTER TABLE webhook_entry_states
    DROP CONSTRAINT webhook_entry_states_status_check,
    ALTER COLUMN status DROP NOT NULL;
UPDATE webhook_entry_states SET status = NULL WHERE status IN ('accepted', 'published');
DELETE FROM webhook_entry_states
WHERE status IS NULL AND attempts = 0 AND last_error IS NULL;
ALTER TABLE webhook_entry_states
    ADD CONSTRAINT webhook_entry_states_status_check CHECK (status IN ('failed', 'dead'));

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
