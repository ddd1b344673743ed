-- Tuning of the hot path, measured under load (see BENCHMARKS.md).

-- Identifiers compare byte for byte. Under any collation but "C" (C.UTF-8 and
-- en_US.UTF-8 included, before PostgreSQL 17) every B-tree comparison of these keys goes
-- through strcoll; they are opaque ids, never sorted for people, so nothing is lost.
ALTER TABLE webhook_entries
    ALTER COLUMN source TYPE text COLLATE "C",
    ALTER COLUMN idempotency_key TYPE text COLLATE "C",
    ALTER COLUMN tenant TYPE text COLLATE "C";
ALTER TABLE webhook_events
    ALTER COLUMN id TYPE text COLLATE "C";

-- Bodies and envelopes (JSON of a few KB) are compressed once a row passes ~2 KB. With
-- the default pglz that compression was a fifth of PostgreSQL's CPU under load; lz4
-- compresses JSON nearly as well at a fraction of the cost. A server built without lz4
-- keeps pglz: the columns work the same either way.
DO $$
BEGIN
    ALTER TABLE webhook_entries ALTER COLUMN body SET COMPRESSION lz4;
    ALTER TABLE webhook_events ALTER COLUMN envelope SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available on this server; payloads stay pglz-compressed';
END
$$;
