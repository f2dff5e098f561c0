-- Durable agent cursors and per-agent event policies (the newer VES clients' routes).
--
-- agent_cursors: the highest sequence number an agent has acknowledged in a stream
-- (`PUT /api/v1/ves/cursors/{agent_id}`). Monotonic: an acknowledgement below the stored value leaves
-- it as it is (the upsert takes GREATEST), so a late retry never moves a consumer back.
CREATE TABLE agent_cursors (
    tenant_id             UUID        NOT NULL,
    store_id              UUID        NOT NULL,
    agent_id              UUID        NOT NULL,
    acknowledged_sequence BIGINT      NOT NULL CHECK (acknowledged_sequence >= 0),
    updated_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, store_id, agent_id)
);

-- agent_event_policies: what an agent may write, enforced at ingest
-- (`GET/PUT /api/v1/agents/{agent_id}/policy`). Rules are exact names or a prefix ending in `*`.

CREATE TABLE agent_event_policies (
    tenant_id            UUID        NOT NULL,
    agent_id             UUID        NOT NULL,
    allowed_event_types  TEXT[]      NOT NULL DEFAULT '{}',
    allowed_entity_types TEXT[]      NOT NULL DEFAULT '{}',
    require_base_version BOOLEAN     NOT NULL DEFAULT TRUE,
    max_payload_bytes    INTEGER     CHECK (max_payload_bytes IS NULL OR max_payload_bytes > 0),
    enabled              BOOLEAN     NOT NULL DEFAULT TRUE,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, agent_id)
);
