-- The upper bound of a log-structured event id lookup, on a database of today's schema (issue 15, item
-- 3): the event id's unique index of signed events dropped, nothing put in its place. Not a migration:
-- `scripts/bench-growth-ab` runs it on both of its databases with AB_SETUP=<this file>, to measure what
-- ingest into growing streams would cost if the event id's lookup wrote nothing into a large index. A
-- log-structured lookup writes its recent entries into a small table the buffers hold, and merges; that
-- costs more than nothing, so this is the most it could gain. The load generator never repeats an id,
-- so ingest takes the same path as with the index; an exact replay would no longer be recognised.
-- What it measured is in README § Performance, "The event id's index is the decline, and what
-- would keep it flat".
-- Never run it on a database you keep.
-- For the schema before migration 0024 only.
\ir guards/before-0024.sql
DROP INDEX IF EXISTS uq_ves_events_event_id;
