-- no-transaction
-- Step 3 of 3 (see 0024): the unique index of event ids over the whole log goes. 0025's index keeps ids
-- unique within an epoch, and the sequencer across epochs. CONCURRENTLY, so that reads and writes go on
-- while it is dropped; IF EXISTS, so that a run stopped after the drop and before its record can run
-- again.
--
-- Expand above the floor 0024 raised (rollback.rs's DECIDED): every binary that may run on this schema
-- looks ids up by epoch, and no statement names this index.
DROP INDEX CONCURRENTLY IF EXISTS uq_ves_events_event_id;
