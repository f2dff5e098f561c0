-- Step 4 of 4 (see 0024): 0001's entity index goes, so that an insert maintains only the hashed one.
--
-- A partitioned index cannot be dropped CONCURRENTLY; dropping it takes the log's ACCESS EXCLUSIVE lock for
-- as long as removing its files takes (no scan), after the statements running on the log finish.
--
-- Contract: a binary from before 0024 counts an entity's versions and reads its history with statements
-- only 0001's index serves well; without it they stay correct but read the stream's events from the
-- entity's mark onwards through the sequence index, which on a large log makes every `base_version`
-- check and entity page slow without bound. So the floor rises to 24: such a binary refuses to start on
-- this schema and says why, and the release with 0024-0026 (which uses the new index) can still be
-- rolled back to.
DROP INDEX IF EXISTS idx_events_entity;

UPDATE schema_compatibility
   SET min_binary_version = GREATEST(min_binary_version, 24),
       reason = 'migration 0027: the entity index is keyed by entity_key() (0024), which binaries before 0024 do not use',
       updated_at = NOW()
 WHERE min_binary_version < 24;
