-- Headers compressed with lz4 too. After the body is compressed, a Shopify entry's row is
-- still over TOAST's ~2 KB target, so PostgreSQL goes on to compress the next widest
-- column, the headers (~600 bytes of JSON text), with the default pglz: 2% of the server's
-- CPU under load, for every webhook. Same fallback as the body's when lz4 is missing.
DO $$
BEGIN
    ALTER TABLE webhook_entries ALTER COLUMN headers SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available on this server; headers stay pglz-compressed';
END
$$;
