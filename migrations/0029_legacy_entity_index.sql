-- no-transaction
-- Step 3 of 4 (see 0027): an entity index of legacy events alone, with the key the whole log's had, to
-- replace that index's legacy partition when 0030 drops it. Legacy events keep the epoch 0 their column's
-- default gives them: their ids are unique through their own index, and no epoch ever closes over them.
--
-- CONCURRENTLY and IF NOT EXISTS, as 0028.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_legacy_events_entity
    ON legacy_events (tenant_id, store_id, entity_type, entity_id, sequence_number);
