-- Step 3 of 3 (see 0015): the new unique sequence index takes the old one's name, which the
-- runbook's index statistics and anyone's dashboards show. Renaming an index takes a SHARE UPDATE
-- EXCLUSIVE lock on the index only: reads and writes go on.
ALTER INDEX uq_ves_events_sequence_new RENAME TO uq_ves_events_sequence;
