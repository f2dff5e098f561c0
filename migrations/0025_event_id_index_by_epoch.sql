-- no-transaction
-- Step 2 of 3 (see 0024): the unique index of event ids by epoch, beside the old one, which keeps ids
-- unique across the whole log until 0026 drops it. The epoch leads, so that the ids of the current
-- epoch are one region of the index, and the filter of a closed epoch is built from one range of it.
--
-- CONCURRENTLY, so that a log of any size keeps taking writes while it is built (migrations/README.md,
-- "Indexes on a live log"); `Store::migrate_with` drops a failed build of this name before it runs the
-- migrations again, and IF NOT EXISTS covers a build that finished but was not recorded.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS uq_ves_events_epoch_event_id
    ON ves_events (id_epoch, tenant_id, event_id);
