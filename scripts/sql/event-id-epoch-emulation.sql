-- The event id's unique index keyed by an epoch, emulated on a database of today's schema (issue 15,
-- item 3). Not a migration: `scripts/bench-growth-ab` runs it on both of its databases with
-- AB_SETUP=<this file>, to measure what ingest into growing streams would cost with it. What it measured
-- is in README § Performance, "The event id's index is the decline, and what would keep it flat".
-- Never run it on a database you keep.
--
-- The design: every event carries the epoch it was written in, and the event id's unique index is keyed
-- (tenant_id, epoch, event_id). An epoch holds about 10^6 ids, so new ids go into a region of the index
-- the shared buffers hold, and an epoch's region is never written again once the next one has begun.
-- The index then enforces uniqueness within an epoch only; across epochs the sequencer would check a
-- group's ids against a filter per sealed epoch (a Bloom filter of about 1.2 bytes per id for 1% false
-- positives) and look up only those a filter cannot rule out; writers take the epoch from a row they lock
-- in share mode, so advancing it waits for the old epoch's writers (README: what building it takes).
--
-- What this emulates: the write side only. Rows already in the log keep their epoch (0 when the column
-- is new), rows written after it get the next one (the column's default, so the sequencer, which does
-- not know the column, writes it; run again, this begins a new epoch); the lookups, the filters and the
-- sealing are not here. The entity index is built again if an earlier setup
-- (scripts/sql/without-random-key-indexes.sql) dropped it: built in bulk it is denser than one grown by
-- inserts.
-- For the schema before migration 0024 only.
\ir guards/before-0024.sql
ALTER TABLE events ADD COLUMN IF NOT EXISTS id_epoch INTEGER NOT NULL DEFAULT 0;
DO $$
BEGIN
    EXECUTE format('ALTER TABLE events ALTER COLUMN id_epoch SET DEFAULT %s',
                   (SELECT COALESCE(max(id_epoch), 0) + 1 FROM events));
END
$$;
DROP INDEX IF EXISTS uq_ves_events_event_id;
CREATE UNIQUE INDEX uq_ves_events_event_id ON ves_events (tenant_id, id_epoch, event_id);
CREATE INDEX IF NOT EXISTS idx_events_entity ON events (tenant_id, store_id, entity_type, entity_id, sequence_number);
