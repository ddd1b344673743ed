-- Provenance: which exact plugin build handled each webhook. Name and version alone do
-- not tell two builds of one version apart, and a reload can swap one for the other, so
-- the component's SHA-256 (hex) is kept beside them. Entries stored before this have none.

ALTER TABLE webhook_entry_records ADD COLUMN plugin_sha256 TEXT;

DROP VIEW webhook_entries;
CREATE VIEW webhook_entries AS
SELECT r.id, r.source, r.topic, r.tenant, r.idempotency_key, r.headers, r.body,
       r.received_at,
       COALESCE(s.status,
                CASE WHEN EXISTS (SELECT 1 FROM webhook_events e
                                  WHERE e.entry_id = r.id AND e.status = 'pending')
                     THEN 'accepted' ELSE 'published' END) AS status,
       COALESCE(s.attempts, 0) AS attempts, s.last_error, r.plugin, r.plugin_version,
       r.correlation_id, r.plugin_sha256
FROM webhook_entry_records r
LEFT JOIN webhook_entry_states s ON s.id = r.id;
