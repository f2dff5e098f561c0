-- no-transaction
-- Step 2 of 3 (see 0015): the old unique sequence index, with its leaves, goes. 0015's index keeps
-- (tenant_id, store_id, sequence_number) unique throughout. CONCURRENTLY, so that reads and writes
-- go on while it is dropped; IF EXISTS, so that a run stopped after the drop and before its record
-- can run again.
--
-- Expand (rollback.rs's DECIDED): no statement of any release names this index (in an ON CONFLICT
-- target, a hint or otherwise); an older binary's ON CONFLICT DO NOTHING takes any unique index, and
-- its reads of the log's own leaves fetch them from the heap.
DROP INDEX CONCURRENTLY IF EXISTS uq_ves_events_sequence;
