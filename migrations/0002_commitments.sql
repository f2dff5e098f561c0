-- Merkle commitments over contiguous ranges of a stream, chained by state root, and the levels of
-- each commitment's tree (so that an inclusion proof is one indexed read, never a rebuild).

CREATE TABLE commitments (
    batch_id           UUID        PRIMARY KEY,
    tenant_id          UUID        NOT NULL,
    store_id           UUID        NOT NULL,
    ves_version        INTEGER     NOT NULL DEFAULT 1,
    tree_depth         INTEGER     NOT NULL CHECK (tree_depth >= 0),
    leaf_count         INTEGER     NOT NULL CHECK (leaf_count >= 1),
    padded_leaf_count  INTEGER     NOT NULL CHECK (padded_leaf_count >= leaf_count),
    merkle_root        BYTEA       NOT NULL CHECK (length(merkle_root) = 32),
    prev_state_root    BYTEA       NOT NULL CHECK (length(prev_state_root) = 32),
    new_state_root     BYTEA       NOT NULL CHECK (length(new_state_root) = 32),
    sequence_start     BIGINT      NOT NULL CHECK (sequence_start >= 1),
    sequence_end       BIGINT      NOT NULL,
    committed_at       TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    -- Anchoring on the L2 (all NULL until anchored).
    chain_id           BIGINT,
    chain_tx_hash      BYTEA       CHECK (chain_tx_hash IS NULL OR length(chain_tx_hash) = 32),
    chain_block_number BIGINT,
    anchored_at        TIMESTAMPTZ,
    -- Correction without deletion: a correcting commitment names the one it corrects, which is then
    -- marked superseded (and says so in its metadata) but stays readable.
    corrects_batch_id  UUID        REFERENCES commitments (batch_id),
    superseded_by      UUID        REFERENCES commitments (batch_id) DEFERRABLE INITIALLY DEFERRED,
    metadata           JSONB       NOT NULL DEFAULT '{}',
    CONSTRAINT commitments_sequence_range CHECK (sequence_end >= sequence_start),
    CONSTRAINT commitments_leaf_count CHECK (leaf_count = sequence_end - sequence_start + 1),
    CONSTRAINT commitments_anchor_consistent CHECK ((chain_tx_hash IS NULL) = (chain_id IS NULL))
);
-- One live commitment per (stream, start); superseded ones stay alongside their corrections.
CREATE UNIQUE INDEX ux_commitments_stream_start ON commitments (tenant_id, store_id, sequence_start)
    WHERE superseded_by IS NULL;
CREATE INDEX idx_commitments_stream_end ON commitments (tenant_id, store_id, sequence_end DESC)
    WHERE superseded_by IS NULL;
CREATE INDEX idx_commitments_unanchored ON commitments (committed_at)
    WHERE chain_tx_hash IS NULL AND superseded_by IS NULL;

CREATE TABLE commitment_tree_levels (
    batch_id UUID    NOT NULL REFERENCES commitments (batch_id),
    -- 0 = leaves; the root level is not stored (it is `merkle_root`).
    level    INTEGER NOT NULL CHECK (level >= 0),
    -- The level's real nodes, 32 bytes each, concatenated.
    nodes    BYTEA   NOT NULL CHECK (length(nodes) % 32 = 0),
    PRIMARY KEY (batch_id, level)
);
-- NB: uncompressed out-of-line storage lets substring() read one node without fetching the level.
ALTER TABLE commitment_tree_levels ALTER COLUMN nodes SET STORAGE EXTERNAL;

-- Commitments are never deleted (that would break the chain) and their content never changes: only
-- the anchoring columns, `superseded_by` (once) and `metadata` may be written after insert.
CREATE FUNCTION guard_commitment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION 'commitments are never deleted; create a correcting commitment that references the bad one instead'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.batch_id IS DISTINCT FROM OLD.batch_id OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id
       OR NEW.store_id IS DISTINCT FROM OLD.store_id OR NEW.ves_version IS DISTINCT FROM OLD.ves_version
       OR NEW.tree_depth IS DISTINCT FROM OLD.tree_depth OR NEW.leaf_count IS DISTINCT FROM OLD.leaf_count
       OR NEW.padded_leaf_count IS DISTINCT FROM OLD.padded_leaf_count
       OR NEW.merkle_root IS DISTINCT FROM OLD.merkle_root OR NEW.prev_state_root IS DISTINCT FROM OLD.prev_state_root
       OR NEW.new_state_root IS DISTINCT FROM OLD.new_state_root
       OR NEW.sequence_start IS DISTINCT FROM OLD.sequence_start OR NEW.sequence_end IS DISTINCT FROM OLD.sequence_end
       OR NEW.committed_at IS DISTINCT FROM OLD.committed_at
       OR NEW.corrects_batch_id IS DISTINCT FROM OLD.corrects_batch_id
       OR (OLD.superseded_by IS NOT NULL AND NEW.superseded_by IS DISTINCT FROM OLD.superseded_by) THEN
        RAISE EXCEPTION 'a commitment''s content is immutable; create a correcting commitment instead'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER commitments_guard BEFORE UPDATE OR DELETE ON commitments
    FOR EACH ROW EXECUTE FUNCTION guard_commitment();
CREATE TRIGGER commitments_no_truncate BEFORE TRUNCATE ON commitments
    FOR EACH STATEMENT EXECUTE FUNCTION guard_commitment();
CREATE TRIGGER commitment_tree_levels_append_only BEFORE UPDATE OR DELETE ON commitment_tree_levels
    FOR EACH ROW EXECUTE FUNCTION refuse_event_mutation();
CREATE TRIGGER commitment_tree_levels_no_truncate BEFORE TRUNCATE ON commitment_tree_levels
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_event_mutation();
