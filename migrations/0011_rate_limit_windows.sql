-- Deployment-wide rate limits: one row per (limit, one-minute window) counting the requests that every
-- replica admitted in that window. Replicas take tokens in leases of about 1/32 of the limit (one
-- statement per lease, not per request). A replica deletes the
-- limit's windows older than the previous one as it takes leases. UNLOGGED: a database crash loses
-- at most the current minute's counts (that minute may then admit up to one limit more).
CREATE UNLOGGED TABLE rate_limit_windows (
    limit_key    TEXT   NOT NULL,
    -- Minutes since the Unix epoch.
    window_index BIGINT NOT NULL,
    used         BIGINT NOT NULL,
    -- Tokens the last statement granted (written with `used` so that one round trip answers both).
    last_grant   BIGINT NOT NULL,
    PRIMARY KEY (limit_key, window_index)
);
