-- The transparency log of each stream (sequencer/src/tlog): an RFC 6962 tree over the stream's events
-- in sequence order, stored as C2SP tlog-tiles, integrated off the write path by the leader.

-- Each stream's integrated tree: size (entries 0..size-1 are events 1..size), root, signed checkpoint.
CREATE TABLE tlog_trees (
    tenant_id     UUID        NOT NULL,
    store_id      UUID        NOT NULL,
    size          BIGINT      NOT NULL CHECK (size >= 0),
    root          BYTEA       NOT NULL CHECK (length(root) = 32),
    checkpoint    BYTEA       NOT NULL,
    integrated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (tenant_id, store_id)
);

-- Hash tiles (tlog_tiles level numbering). A partial tile is rewritten as it grows; a full tile
-- (width 256) is written once and never changes. Entry bundles are not stored: they are encoded from
-- the (append-only) events on request.
CREATE TABLE tlog_tiles (
    tenant_id UUID     NOT NULL,
    store_id  UUID     NOT NULL,
    level     SMALLINT NOT NULL CHECK (level >= 0 AND level < 8),
    idx       BIGINT   NOT NULL CHECK (idx >= 0),
    width     INTEGER  NOT NULL CHECK (width BETWEEN 1 AND 256),
    data      BYTEA    NOT NULL,
    PRIMARY KEY (tenant_id, store_id, level, idx)
);
-- Hashes do not compress: keep tiles out of TOAST compression.
ALTER TABLE tlog_tiles ALTER COLUMN data SET STORAGE EXTERNAL;

-- Checkpoints sent to witnesses, and the cosignatures (cosignature/v1 note lines) they returned.
CREATE TABLE tlog_checkpoints (
    tenant_id  UUID        NOT NULL,
    store_id   UUID        NOT NULL,
    size       BIGINT      NOT NULL CHECK (size > 0),
    checkpoint BYTEA       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (tenant_id, store_id, size)
);

CREATE TABLE tlog_cosignatures (
    tenant_id   UUID        NOT NULL,
    store_id    UUID        NOT NULL,
    size        BIGINT      NOT NULL,
    witness     TEXT        NOT NULL,
    signature   TEXT        NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (tenant_id, store_id, size, witness),
    FOREIGN KEY (tenant_id, store_id, size) REFERENCES tlog_checkpoints (tenant_id, store_id, size)
);

-- What each witness last cosigned for each stream, and its last refusal.
CREATE TABLE tlog_witness_state (
    tenant_id       UUID        NOT NULL,
    store_id        UUID        NOT NULL,
    witness         TEXT        NOT NULL,
    cosigned_size   BIGINT      NOT NULL DEFAULT 0,
    last_error      TEXT,
    last_attempt_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    cosigned_at     TIMESTAMPTZ,
    PRIMARY KEY (tenant_id, store_id, witness)
);
