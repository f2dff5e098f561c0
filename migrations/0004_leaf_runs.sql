-- Leaf runs: each sequencing transaction also appends the Merkle leaves of the events it numbered, as
-- one row of concatenated 32-byte leaves over a contiguous range of the stream.
--
-- Why: a commitment needs the leaves of its range. Reading them from `events` means one index entry
-- and (until VACUUM marks the pages all-visible) one heap visit per event, ~10 ms for 10,000 events;
-- reading them from runs means one row per sequencing transaction, which under load holds tens to
-- thousands of events. Runs are written in the same statement or transaction as the events they
-- describe, so they exist exactly when the events do; `events.leaf_hash` stays the authority
-- (corrections recompute from the events, and `stateset-sequencer-admin verify` checks the runs of a
-- stream against the events' leaves).

CREATE TABLE event_leaf_runs (
    tenant_id      UUID   NOT NULL,
    store_id       UUID   NOT NULL,
    first_sequence BIGINT NOT NULL CHECK (first_sequence >= 1),
    last_sequence  BIGINT NOT NULL,
    -- Leaf i of the run (the event numbered first_sequence + i) is bytes 32*i .. 32*i+31.
    leaves         BYTEA  NOT NULL,
    PRIMARY KEY (tenant_id, store_id, first_sequence),
    CONSTRAINT event_leaf_runs_length CHECK (
        last_sequence >= first_sequence AND length(leaves) = 32 * (last_sequence - first_sequence + 1))
);
-- NB: uncompressed (hashes do not compress) and, when long, out of line so that a proof's
-- substring() reads one chunk, not the run.
ALTER TABLE event_leaf_runs ALTER COLUMN leaves SET STORAGE EXTERNAL;

CREATE TRIGGER event_leaf_runs_append_only BEFORE UPDATE OR DELETE ON event_leaf_runs
    FOR EACH ROW EXECUTE FUNCTION refuse_event_mutation();
CREATE TRIGGER event_leaf_runs_no_truncate BEFORE TRUNCATE ON event_leaf_runs
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_event_mutation();

-- Runs for the events already stored: at most 1024 events a run, split at any gap (a healthy log
-- has none; `verify` reports them) and taking one row per number should one be stored twice.
WITH e AS (
    SELECT DISTINCT ON (tenant_id, store_id, sequence_number) tenant_id, store_id, sequence_number, leaf_hash
    FROM events ORDER BY tenant_id, store_id, sequence_number, signed DESC
), islands AS (
    SELECT e.*, (sequence_number - 1) / 1024 AS chunk,
           sequence_number - row_number() OVER (PARTITION BY tenant_id, store_id ORDER BY sequence_number) AS island
    FROM e
)
INSERT INTO event_leaf_runs (tenant_id, store_id, first_sequence, last_sequence, leaves)
SELECT tenant_id, store_id, MIN(sequence_number), MAX(sequence_number),
       string_agg(leaf_hash, ''::bytea ORDER BY sequence_number)
FROM islands
GROUP BY tenant_id, store_id, chunk, island;

-- The runbook's per-tenant volume query filters events on created_at. A BRIN index answers it (the
-- log is appended in roughly created_at order) for a tiny fraction of a B-tree's cost on every insert.
DROP INDEX idx_events_created_at;
CREATE INDEX idx_events_created_at ON events USING brin (created_at) WITH (pages_per_range = 32);

-- Commitments read their leaves from the runs and trust the log's append-only guarantee: nothing of
-- `events` is ever updated or deleted (the triggers of migration 0001 refuse it). Those triggers do
-- not fire under `session_replication_role = replica`, the usual way a superuser bypasses them, so
-- that any row removed or changed that way is recorded here, by triggers that fire in every mode
-- (ENABLE ALWAYS). A stream with a record is committed from the log itself, which then reports the
-- gap ("non-contiguous sequence"), and `verify` lists the records. (Only disabling these triggers
-- outright, as the tables' owner, goes unrecorded; `verify` still finds what that broke.)
CREATE TABLE event_log_damage (
    id              BIGSERIAL   PRIMARY KEY,
    -- NULL for a TRUNCATE, which damages every stream.
    tenant_id       UUID,
    store_id        UUID,
    operation       TEXT        NOT NULL,
    sequence_number BIGINT,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX idx_event_log_damage_stream ON event_log_damage (tenant_id, store_id);

CREATE FUNCTION record_event_damage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO event_log_damage (operation) VALUES ('TRUNCATE ' || TG_TABLE_NAME);
    ELSE
        INSERT INTO event_log_damage (tenant_id, store_id, operation, sequence_number)
        VALUES (OLD.tenant_id, OLD.store_id, TG_OP || ' ' || TG_TABLE_NAME, OLD.sequence_number);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER ves_events_damage AFTER UPDATE OR DELETE ON ves_events
    FOR EACH ROW EXECUTE FUNCTION record_event_damage();
CREATE TRIGGER legacy_events_damage AFTER UPDATE OR DELETE ON legacy_events
    FOR EACH ROW EXECUTE FUNCTION record_event_damage();
CREATE TRIGGER ves_events_truncate_damage AFTER TRUNCATE ON ves_events
    FOR EACH STATEMENT EXECUTE FUNCTION record_event_damage();
CREATE TRIGGER legacy_events_truncate_damage AFTER TRUNCATE ON legacy_events
    FOR EACH STATEMENT EXECUTE FUNCTION record_event_damage();
ALTER TABLE ves_events ENABLE ALWAYS TRIGGER ves_events_damage;
ALTER TABLE legacy_events ENABLE ALWAYS TRIGGER legacy_events_damage;
ALTER TABLE ves_events ENABLE ALWAYS TRIGGER ves_events_truncate_damage;
ALTER TABLE legacy_events ENABLE ALWAYS TRIGGER legacy_events_truncate_damage;
