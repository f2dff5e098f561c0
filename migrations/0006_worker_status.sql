-- What the leader of the commitment and anchoring worker sees, published every few seconds, so that
-- any replica's GET /api/v1/admin/status reports the leader's circuit breaker (only the leader
-- anchors in the background; every other replica's breaker stays closed whatever the chain does).
--
-- One row at most. Only the holder of the worker's advisory lock can write it (the statement checks
-- pg_locks), so a replica that lost the lock without noticing cannot overwrite the leader's report.
-- Additive (expand only): an older binary ignores the table.

CREATE TABLE worker_status (
    singleton         BOOLEAN     PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    -- The leading replica (its HOSTNAME: the pod name in Kubernetes).
    instance          TEXT        NOT NULL,
    anchoring_enabled BOOLEAN     NOT NULL,
    -- closed, open, half_open, or disabled when the leader has no anchoring configured.
    circuit_state     TEXT        NOT NULL,
    -- Times the leader's breaker opened since the leader started.
    circuit_opened    BIGINT      NOT NULL DEFAULT 0,
    leader_since      TIMESTAMPTZ NOT NULL,
    reported_at       TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
