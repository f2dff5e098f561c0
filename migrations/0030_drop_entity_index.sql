-- Step 4 of 4 (see 0027): the entity index of the whole log goes; 0028's and 0029's indexes take its
-- place on each partition.
--
-- Not CONCURRENTLY: PostgreSQL cannot drop an index of a partitioned table concurrently. The drop takes
-- the log's ACCESS EXCLUSIVE lock for a moment, but waits for every reader before it (a long `verify`, a
-- `pg_dump`) with ingest queued behind it: as 0024 does, it gives up after 10 s and the migration fails
-- (nothing is applied; the migration Job or the next start-up runs it again). IF EXISTS, for a schema
-- whose index an operator dropped by hand.
--
-- Expand above the floor 0027 raised (rollback.rs's DECIDED): every binary at or above it reads entities
-- through 0028's and 0029's indexes, and no statement names this one.
SET LOCAL lock_timeout = '10s';

DROP INDEX IF EXISTS idx_events_entity;
