-- The upper bound of both lookups log-structured, on a database of today's schema (issue 15, item 3):
-- the event id's unique index of signed events and the entity index dropped, nothing put in their place.
-- Not a migration: `scripts/bench-growth-ab` runs it on both of its databases with AB_SETUP=<this file>,
-- to measure what ingest into growing streams would cost if neither lookup wrote into a large index (a
-- log-structured design writes small recent tables and merges, which costs more than nothing, so this
-- is the most it could gain). The load generator never repeats an id nor sends `base_version`, so ingest
-- takes the same path as with the indexes; replays, version checks and entity history would scan.
-- What it measured is in README § Performance, "The event id's index is the decline, and what
-- would keep it flat".
-- Never run it on a database you keep.
-- For the schema before migration 0024 only.
\ir guards/before-0024.sql
DROP INDEX IF EXISTS uq_ves_events_event_id;
DROP INDEX IF EXISTS idx_events_entity;
