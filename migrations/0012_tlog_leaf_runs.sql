-- Transparency log leaves in the leaf runs: each sequencing statement also writes the RFC 6962 leaf
-- hashes of the entries it appended (the events as served, see sequencer/src/tlog), beside the VES
-- leaves of migration 0004, and the time it numbered them.
--
-- Why: the integrator read every new event back (all columns, the payload included) to encode its
-- entry and hash it: at the 64-stream benchmark load, that read and its decoding were most of what the
-- log added to the CPU per event (ingest ran 29% slower with the log on). The sequencer holds each
-- event when it numbers it, so it hashes the entry there, and the integrator reads one run row per
-- sequencing statement, 32 bytes per event.
--
-- Expand only (migrations/README.md): both columns are NULL in runs written before this migration,
-- by an older binary, by legacy ingest, by an import, or for a group with an event whose stored form
-- the sequencer cannot predict byte for byte (a float PostgreSQL's jsonb prints differently); the
-- integrator reads those events back as before.

ALTER TABLE event_leaf_runs
    ADD COLUMN tlog_leaves  BYTEA,
    ADD COLUMN sequenced_at TIMESTAMPTZ;
-- Hashes do not compress (as `leaves`).
ALTER TABLE event_leaf_runs ALTER COLUMN tlog_leaves SET STORAGE EXTERNAL;
-- NOT VALID: every existing row has NULL there, so there is nothing to check, and checking would scan
-- the table under this migration's lock; new rows are checked.
ALTER TABLE event_leaf_runs ADD CONSTRAINT event_leaf_runs_tlog_length
    CHECK (tlog_leaves IS NULL OR length(tlog_leaves) = length(leaves)) NOT VALID;
