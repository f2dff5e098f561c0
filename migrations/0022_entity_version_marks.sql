-- An entity's version is the number of its events in the stream; an event that carries `base_version`
-- is accepted only when that is its entity's version (optimistic concurrency, ves-wire.md §3.1). Until
-- this release the sequencer counted them all for every such event (`store::events::entity_versions`),
-- so checking a version cost time in proportion to the entity's whole history: a log that is never
-- trimmed made every check on a long-lived entity slower, without bound (README.md, § Performance,
-- "Checking base_version as an entity grows").
--
-- A mark records an entity's version at a position of its stream: `version` events of the entity have
-- sequence numbers up to `at_sequence`. The log is append-only (0001's triggers), so a mark stays true
-- forever, whoever writes after it: the version now is the mark's plus the events after `at_sequence`,
-- which the entity index counts directly. The sequencer writes a mark only inside an ingest transaction
-- that holds its stream's counter row (so `at_sequence` is the stream's committed head), and only when it
-- counted at least 32 events past the previous one, so a check counts fewer than that plus what came
-- since, and an entity without `base_version` events never gets a mark at all.
--
-- A row of the log changed or removed despite the triggers is recorded in `event_log_damage` (0004); the
-- marks of its stream (or, for a TRUNCATE, all of them) are then dropped, so versions are counted from the
-- log again.
--
-- Expand (migrations/README.md, "Expand and contract"): a new table and a trigger. The previous release
-- counts every version as it did and never reads or writes a mark; the marks stay true through the events
-- it writes, so rolling back and forward again needs nothing.
CREATE TABLE entity_version_marks (
    tenant_id   UUID         NOT NULL,
    store_id    UUID         NOT NULL,
    entity_type VARCHAR(128) NOT NULL,
    entity_id   VARCHAR(512) NOT NULL,
    version     BIGINT       NOT NULL CHECK (version >= 0),
    at_sequence BIGINT       NOT NULL CHECK (at_sequence >= 0),
    PRIMARY KEY (tenant_id, store_id, entity_type, entity_id)
) WITH (fillfactor = 80); -- room for a mark's newer version on its own page (a HOT update)

CREATE FUNCTION drop_damaged_entity_version_marks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.tenant_id IS NULL THEN
        DELETE FROM entity_version_marks;
    ELSE
        DELETE FROM entity_version_marks WHERE tenant_id = NEW.tenant_id AND store_id = NEW.store_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER event_log_damage_drops_marks AFTER INSERT ON event_log_damage
    FOR EACH ROW EXECUTE FUNCTION drop_damaged_entity_version_marks();
-- The damage is recorded in every mode (0004), so its consequence is drawn in every mode too.
ALTER TABLE event_log_damage ENABLE ALWAYS TRIGGER event_log_damage_drops_marks;
