-- Records the compatibility floor migration 0007 should have raised (migrations/README.md, "Expand and
-- contract"). 0007 replaced the dead-letter index on (event_id) with one on (tenant_id, store_id,
-- event_id); a binary that embeds only 0001-0006 records a refused event with
-- `INSERT ... ON CONFLICT (event_id)`, which PostgreSQL refuses on this schema ("there is no unique or
-- exclusion constraint matching the ON CONFLICT specification"). Such a binary would start and serve,
-- then fail every ingest request that refuses an event. With the floor at 7 it refuses to start and
-- says why instead. Every binary that embeds 0007 or later is unaffected.
--
-- Only the floor moves (GREATEST: never lowers a floor a later migration may have raised); no schema
-- object changes.
UPDATE schema_compatibility
   SET min_binary_version = GREATEST(min_binary_version, 7),
       reason = 'migration 0007 replaced the dead-letter index on (event_id) that older binaries upsert on',
       updated_at = NOW()
 WHERE min_binary_version < 7;
