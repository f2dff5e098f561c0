-- The entity index keyed by a 64-bit hash of the entity (step 1 of 4: the hash; 0025 and 0026 build the
-- new index on each partition, 0027 drops 0001's index and raises the floor).
--
-- Why: 0001's entity index is keyed by (tenant_id, store_id, entity_type, entity_id, sequence_number):
-- about 110 bytes per event, and every insert descends it comparing the entity's text with the
-- database's collation. A stream that keeps growing inserts all over its own region of that index, so on a
-- log of 10^7 events each insert paid a descent through levels whose keys all share the stream and differ
-- only in the entity's text, with the index far larger than the CPU's caches. Measured with PostgreSQL
-- alone (2026-12-07, `scripts/entity-probe`, README § Performance, "The entity index keyed by a hash"; 64
-- streams of 156,250 events over 10,000 entities each, 10^7 rows, the index in shared_buffers of 3 GB,
-- microseconds per row of 2,000 inserts of 100 rows, two runs each): 0001's index 1,063 MB, inserts into
-- the growing streams 14.7 and 10.4 against 4.0 and 4.0 into new streams; the same columns with
-- COLLATE "C" 11.9 and 10.4 against 3.7 and 4.1; keyed by this hash and the sequence number 391 MB, 6.1
-- and 6.1 against 6.3 and 6.0: the same for every stream, and a third of the size.
--
-- `entity_key` is PostgreSQL's own extended hash of the four columns, chained (the same functions hash
-- partitioning uses, stable across releases; deterministic collations hash the text's bytes). Two entities
-- whose keys collide share index entries: every statement that uses the index also compares the four
-- columns themselves, so a collision costs reads of the other entity's rows and never changes an answer.
-- The hash is not cryptographic; a writer who crafts entity ids to collide with another entity's key
-- slows that entity's reads by the events it writes itself (each one counted against its rate limit).
--
-- Expand (migrations/README.md): a new function only.
CREATE FUNCTION entity_key(tenant_id UUID, store_id UUID, entity_type TEXT, entity_id TEXT) RETURNS BIGINT
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN hashtextextended(entity_id,
               hashtextextended(entity_type, uuid_hash_extended(store_id, uuid_hash_extended(tenant_id, 0))));
