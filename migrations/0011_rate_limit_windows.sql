-- Deployment-wide rate limits: one row per (limit, one-minute window) counting the requests that every
-- replica admitted in that window. Replicas take tokens in small leases (one statement per lease, not
-- per request), so a row is written a few times a minute per replica at most. A replica deletes the
-- limit's past windows when it takes its first lease of a new window. UNLOGGED: a database crash loses
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
