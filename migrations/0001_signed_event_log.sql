-- The signed event log, its per-stream counters, agent signing keys, API keys and the dead-letter queue.
--
-- How an event is split between `events` and `ves_events`:
--   `events` is the log itself: one row per sequenced event of a stream (tenant_id, store_id), whatever
--   kind of ingest produced it, so the runbook's gap query, its per-tenant counts and the commitment range
--   count see every event. It is partitioned by `signed`: the partition `ves_events` holds the signed VES
--   events (with their signature material, receipts and the exact signed `created_at` string) and the
--   partition `legacy_events` holds events from the unsigned legacy ingest. Each event is therefore
--   written exactly once (one row, one insert), and `VACUUM ANALYZE events` / `VACUUM ANALYZE ves_events`
--   both act on real tables.
--   NB: PostgreSQL cannot enforce a unique index across partitions unless it includes the partition key,
--   so (tenant_id, store_id, sequence_number) and event_id are unique within each partition, and the
--   stream's row lock in `sequence_counters` (which every writer of a stream, signed or legacy, takes
--   before choosing a number) is what keeps them unique across the two. `stateset-sequencer-admin verify`
--   checks it.

CREATE TABLE sequence_counters (
    tenant_id        UUID        NOT NULL,
    store_id         UUID        NOT NULL,
    -- The head of the stream: the highest sequence number handed out (0 = empty stream).
    current_sequence BIGINT      NOT NULL DEFAULT 0 CHECK (current_sequence >= 0),
    -- Set by an operator to stop ingestion of one stream (runbook: "stop event ingestion").
    paused           BOOLEAN     NOT NULL DEFAULT FALSE,
    paused_reason    TEXT,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (tenant_id, store_id)
);

CREATE TABLE events (
    tenant_id           UUID         NOT NULL,
    store_id            UUID         NOT NULL,
    sequence_number     BIGINT       NOT NULL CHECK (sequence_number >= 1),
    event_id            UUID         NOT NULL,
    signed              BOOLEAN      NOT NULL,
    entity_type         VARCHAR(128) NOT NULL CHECK (length(entity_type) >= 1),
    entity_id           VARCHAR(512) NOT NULL CHECK (length(entity_id) >= 1),
    event_type          VARCHAR(256) NOT NULL CHECK (length(event_type) >= 1),
    -- The client's created_at, parsed. The exact signed string is `created_at_str`.
    created_at          TIMESTAMPTZ  NOT NULL,
    sequenced_at        TIMESTAMPTZ  NOT NULL,
    source_agent_id     UUID         NOT NULL,
    command_id          UUID,
    base_version        BIGINT,
    payload             JSONB,
    -- Signed (VES) events only.
    ves_version         INTEGER,
    agent_key_id        BIGINT,
    created_at_str      TEXT,
    payload_kind        SMALLINT,
    payload_encrypted   JSONB,
    payload_plain_hash  BYTEA,
    payload_cipher_hash BYTEA,
    event_signing_hash  BYTEA,
    agent_signature     BYTEA,
    receipt_hash        BYTEA,
    sequencer_id        UUID,
    sequencer_signature BYTEA,
    -- The event's Merkle leaf (ves-wire §2.6), computed once when the event is sequenced so that a
    -- commitment reads 32 bytes per event from an index instead of recomputing it.
    leaf_hash           BYTEA,
    -- Legacy (unsigned) events only: SHA-256 of the payload as the legacy API defines it.
    payload_hash        BYTEA
) PARTITION BY LIST (signed);

CREATE TABLE ves_events PARTITION OF events (
    CONSTRAINT ves_events_signed_fields CHECK (
        ves_version IS NOT NULL AND agent_key_id IS NOT NULL AND created_at_str IS NOT NULL
        AND payload_kind IN (0, 1)
        AND length(payload_plain_hash) = 32 AND length(payload_cipher_hash) = 32
        AND length(event_signing_hash) = 32 AND length(agent_signature) = 64
        AND length(receipt_hash) = 32 AND length(leaf_hash) = 32 AND sequencer_id IS NOT NULL
        AND (sequencer_signature IS NULL OR length(sequencer_signature) = 64)),
    CONSTRAINT ves_events_payload_kind CHECK (
        (payload_kind = 0 AND payload_encrypted IS NULL)
        OR (payload_kind = 1 AND payload IS NULL AND payload_encrypted IS NOT NULL))
) FOR VALUES IN (TRUE);

CREATE TABLE legacy_events PARTITION OF events (
    CONSTRAINT legacy_events_payload_hash CHECK (length(payload_hash) = 32 AND length(leaf_hash) = 32)
) FOR VALUES IN (FALSE);

-- INCLUDE (leaf_hash): commitments and proofs read a range's leaves with an index-only scan.
CREATE UNIQUE INDEX uq_ves_events_sequence ON ves_events (tenant_id, store_id, sequence_number) INCLUDE (leaf_hash);
CREATE UNIQUE INDEX uq_ves_events_event_id ON ves_events (event_id);
CREATE UNIQUE INDEX uq_ves_events_command ON ves_events (tenant_id, store_id, command_id) WHERE command_id IS NOT NULL;
CREATE UNIQUE INDEX uq_legacy_events_sequence ON legacy_events (tenant_id, store_id, sequence_number) INCLUDE (leaf_hash);
CREATE UNIQUE INDEX uq_legacy_events_event_id ON legacy_events (event_id);
CREATE UNIQUE INDEX uq_legacy_events_command ON legacy_events (tenant_id, store_id, command_id) WHERE command_id IS NOT NULL;
-- Entity history and optimistic concurrency (base_version = number of earlier events of the entity).
CREATE INDEX idx_events_entity ON events (tenant_id, store_id, entity_type, entity_id, sequence_number);
-- The runbook's per-tenant volume query filters on created_at.
CREATE INDEX idx_events_created_at ON events (created_at);

-- The log is append-only: no row of it is ever updated or deleted by the sequencer, and the database
-- refuses it from anyone else too. (A superuser can still bypass triggers, e.g. with
-- session_replication_role = replica; `stateset-sequencer-admin verify` finds what that breaks.)
CREATE FUNCTION refuse_event_mutation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on % is not allowed', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION refuse_event_mutation();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON ves_events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_event_mutation();
CREATE TRIGGER legacy_events_no_truncate BEFORE TRUNCATE ON legacy_events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_event_mutation();

-- Agent signing keys (Ed25519). `active` is false once a key is revoked; validity windows are checked
-- against server time on every use.
CREATE TABLE agent_keys (
    tenant_id         UUID        NOT NULL,
    agent_id          UUID        NOT NULL,
    key_id            BIGINT      NOT NULL CHECK (key_id BETWEEN 0 AND 4294967295),
    public_key        BYTEA       NOT NULL CHECK (length(public_key) = 32),
    key_algorithm     SMALLINT    NOT NULL DEFAULT 1,
    active            BOOLEAN     NOT NULL DEFAULT TRUE,
    valid_from        TIMESTAMPTZ,
    valid_to          TIMESTAMPTZ,
    revoked_at        TIMESTAMPTZ,
    revocation_reason TEXT,
    -- Set on the old key when it was rotated: the key that replaced it.
    rotated_to_key_id BIGINT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (tenant_id, agent_id, key_id),
    CONSTRAINT agent_keys_revoked_consistent CHECK (active = (revoked_at IS NULL)),
    CONSTRAINT agent_keys_validity_window CHECK (valid_from IS NULL OR valid_to IS NULL OR valid_to > valid_from)
);
CREATE INDEX idx_agent_keys_agent ON agent_keys (agent_id) WHERE active;
CREATE INDEX idx_agent_keys_created_at ON agent_keys (created_at DESC);

-- API keys, stored only as the hex SHA-256 of the full key string.
CREATE TABLE api_keys (
    id          UUID        PRIMARY KEY,
    key_hash    TEXT        NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    tenant_id   UUID        NOT NULL,
    -- Empty = every store of the tenant.
    store_ids   UUID[]      NOT NULL DEFAULT '{}',
    can_read    BOOLEAN     NOT NULL DEFAULT TRUE,
    can_write   BOOLEAN     NOT NULL DEFAULT FALSE,
    can_admin   BOOLEAN     NOT NULL DEFAULT FALSE,
    agent_id    UUID,
    rate_limit  INTEGER     CHECK (rate_limit IS NULL OR rate_limit > 0),
    label       TEXT,
    active      BOOLEAN     NOT NULL DEFAULT TRUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX idx_api_keys_tenant ON api_keys (tenant_id, created_at DESC);

-- Events the sequencer could not accept for a reason that a fix could remove (unknown, revoked or
-- expired key, bad signature, version conflict, clock skew). The full envelope as received is kept
-- so that an operator can fix the cause and replay it.
CREATE TABLE dead_letter_events (
    id                       UUID        PRIMARY KEY,
    event_id                 UUID        NOT NULL,
    tenant_id                UUID        NOT NULL,
    store_id                 UUID        NOT NULL,
    agent_id                 UUID,
    event_type               TEXT,
    -- 'ves' for signed events, 'legacy' for the unsigned ingest.
    source                   TEXT        NOT NULL DEFAULT 'ves' CHECK (source IN ('ves', 'legacy')),
    -- Machine-readable cause, e.g. invalid_signature, agent_key_invalid, version_conflict.
    reason                   TEXT        NOT NULL,
    error_message            TEXT        NOT NULL,
    status                   TEXT        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'resolved')),
    -- How often the event was received and refused (client resubmissions and replays alike).
    retry_count              INTEGER     NOT NULL DEFAULT 0,
    last_retry_at            TIMESTAMPTZ,
    resolved_at              TIMESTAMPTZ,
    resolved_sequence_number BIGINT,
    created_at               TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at               TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    payload                  JSONB       NOT NULL,
    metadata                 JSONB
);
CREATE UNIQUE INDEX uq_dead_letter_event_id ON dead_letter_events (event_id);
CREATE INDEX idx_dead_letter_stream ON dead_letter_events (tenant_id, store_id);
CREATE INDEX idx_dead_letter_reason ON dead_letter_events (reason) WHERE status = 'pending';
CREATE INDEX idx_dead_letter_created_at ON dead_letter_events (created_at DESC);
