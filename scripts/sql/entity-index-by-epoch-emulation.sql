-- The entity index keyed by id epoch, write side emulated, on a database of migration 0024's schema or
-- later (issue 15, item 3). Not a migration: `scripts/bench-growth-ab` runs it on both of its databases
-- with AB_SETUP=<this file>, to measure what ingest into growing streams would cost if the entity index
-- were keyed like the event id's since 0024: `(tenant_id, store_id, id_epoch, entity_type, entity_id,
-- sequence_number)`, so that a stream's new events go into its current epoch's region of the index (a
-- region of about 2^20 events in all, which the buffers hold), not to each entity's place in the whole
-- history. Every event already carries its epoch, so the write side is exact; the sequencer still reads
-- entity history and counts versions with the old key's queries, which the load generator's ingest never
-- runs (it sends no `base_version`). What it measured is in README § Performance, "The entity index
-- keyed by epoch, emulated".
-- Migrations 0027-0030 built it for real: this file is for the schema of 0024-0026 only.
-- Never run it on a database you keep.
\ir guards/since-0024.sql
\ir guards/before-0030.sql
SET maintenance_work_mem = '1GB';
DROP INDEX IF EXISTS idx_events_entity;
CREATE INDEX idx_events_entity_epoch ON events (tenant_id, store_id, id_epoch, entity_type, entity_id, sequence_number);
CHECKPOINT;
