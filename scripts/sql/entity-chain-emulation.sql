-- An entity's history kept as a chain instead of the entity index, emulated on a database of today's
-- schema (issue 15, item 3). What it measured is in README § Performance, "Whose index the growing
-- streams pay for": the trigger cost more than the index it replaces, and growing streams did not gain.
-- Not a migration: `scripts/bench-growth-ab` runs it on both of its databases with AB_SETUP=<this
-- file>, to measure what ingest into growing streams would cost with it. Nothing here is read by the
-- sequencer, which still counts versions and reads history through the entity index; the index is
-- dropped only to take its writes out of the measurement (entity history and `base_version` checks
-- then scan).
-- Never run it on a database you keep.
--
-- The design: an event no longer goes into an index keyed by its entity, whose pages written per event
-- grow toward one per entity that receives events (160,000 in the benchmark's fill, 1.25 GB of pages).
-- Instead
-- - `entity_heads` holds one row per entity: its version and its newest event's sequence number, moved by
--   every statement that writes events (an update that changes no indexed column: HOT, on a table of
--   about 100 bytes per entity, which the buffers hold);
-- - `entity_links` holds, per event, the sequence number of its entity's previous event, keyed by the
--   event's own (tenant, store, sequence), so it is appended at the end of each stream like the log's
--   sequence index;
-- - a statement-level trigger writes both from the statement's new rows, so every writer (this release,
--   the previous one during a rolling update, restore) keeps them, with one statement each per insert
--   rather than per row.
-- A version check then reads one row, and an entity's history is walked back from its head, one step
-- per event through `entity_links` and the sequence index.
CREATE TABLE entity_heads (
    tenant_id UUID NOT NULL, store_id UUID NOT NULL, entity_type VARCHAR(128) NOT NULL,
    entity_id VARCHAR(512) NOT NULL, version BIGINT NOT NULL, last_sequence BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, store_id, entity_type, entity_id)) WITH (fillfactor = 80);
CREATE TABLE entity_links (
    tenant_id UUID NOT NULL, store_id UUID NOT NULL, sequence_number BIGINT NOT NULL, prev BIGINT,
    PRIMARY KEY (tenant_id, store_id, sequence_number));
INSERT INTO entity_heads SELECT tenant_id, store_id, entity_type, entity_id, count(*), max(sequence_number)
  FROM ves_events GROUP BY 1, 2, 3, 4;
INSERT INTO entity_links SELECT tenant_id, store_id, sequence_number,
       lag(sequence_number) OVER (PARTITION BY tenant_id, store_id, entity_type, entity_id ORDER BY sequence_number)
  FROM ves_events ORDER BY 1, 2, 3;
CREATE FUNCTION move_entity_heads() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- each new row's previous event of its entity: an earlier row of the statement, or the entity's head
  INSERT INTO entity_links
  SELECT n.tenant_id, n.store_id, n.sequence_number, COALESCE(n.prev, h.last_sequence)
    FROM (SELECT tenant_id, store_id, entity_type, entity_id, sequence_number,
                 lag(sequence_number) OVER (PARTITION BY tenant_id, store_id, entity_type, entity_id
                                            ORDER BY sequence_number) AS prev
            FROM new_rows) n
    LEFT JOIN entity_heads h ON h.tenant_id = n.tenant_id AND h.store_id = n.store_id
          AND h.entity_type = n.entity_type AND h.entity_id = n.entity_id;
  INSERT INTO entity_heads AS h
  SELECT tenant_id, store_id, entity_type, entity_id, count(*), max(sequence_number) FROM new_rows GROUP BY 1, 2, 3, 4
  ON CONFLICT (tenant_id, store_id, entity_type, entity_id)
  DO UPDATE SET version = h.version + excluded.version, last_sequence = excluded.last_sequence;
  RETURN NULL;
END $$;
CREATE TRIGGER ves_events_move_entity_heads AFTER INSERT ON ves_events REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION move_entity_heads();
DROP INDEX idx_events_entity;
VACUUM ANALYZE entity_heads, entity_links;
CHECKPOINT;
