-- no-transaction
-- Step 2 of 4 (see 0024): the entity index of the signed events, keyed by `entity_key` and the sequence
-- number. CONCURRENTLY, so that a log of any size keeps taking writes while it is built (migrations/
-- README.md, "Indexes on a live log"); `Store::migrate_with` drops an INVALID leftover of a failed build.
--
-- Expand: an index no statement of an older release uses.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_ves_events_entity_key
    ON ves_events (entity_key(tenant_id, store_id, entity_type, entity_id), sequence_number);
