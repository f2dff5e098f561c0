-- no-transaction
-- Step 2 of 4 (see 0027): the entity index of signed events, keyed by id epoch after the stream, so that
-- a stream's new events go into the current epoch's region of it. The epochs of one stream's events
-- never go down as its sequence numbers go up (a writer reads the epoch under the share lock before it
-- locks the stream's counter row, `store::epochs`), so an entity's events, read epoch by epoch in order,
-- are in sequence order.
--
-- CONCURRENTLY, so that a log of any size keeps taking writes while it is built (migrations/README.md,
-- "Indexes on a live log"); `Store::migrate_with` drops a failed build of this name before it runs the
-- migrations again, and IF NOT EXISTS covers a build that finished but was not recorded.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_ves_events_entity
    ON ves_events (tenant_id, store_id, id_epoch, entity_type, entity_id, sequence_number);
