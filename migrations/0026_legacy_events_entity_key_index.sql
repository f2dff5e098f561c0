-- no-transaction
-- Step 3 of 4 (see 0024): the same index on the legacy events (entity history reads both partitions).
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_legacy_events_entity_key
    ON legacy_events (entity_key(tenant_id, store_id, entity_type, entity_id), sequence_number);
