-- Today's two random-key indexes built again in bulk, on a database where an earlier AB_SETUP changed
-- or dropped them (issue 15, item 3): the control for scripts/sql/event-id-epoch-emulation.sql, which
-- builds its indexes in bulk too, denser than indexes grown by inserts. Not a migration:
-- `scripts/bench-growth-ab` runs it on both of its databases with AB_SETUP=<this file>. What it measured
-- is in README § Performance, "The event id's index is the decline, and what would keep it flat".
-- Never run it on a database you keep.
-- For the schema before migration 0024 only.
\ir guards/before-0024.sql
DROP INDEX IF EXISTS uq_ves_events_event_id;
ALTER TABLE events DROP COLUMN IF EXISTS id_epoch;
CREATE UNIQUE INDEX uq_ves_events_event_id ON ves_events (tenant_id, event_id);
CREATE INDEX IF NOT EXISTS idx_events_entity ON events (tenant_id, store_id, entity_type, entity_id, sequence_number);
