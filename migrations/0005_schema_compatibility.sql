-- The schema's compatibility floor (migrations/README.md, "Expand and contract"): the oldest migration
-- a sequencer binary must embed to run on this schema. A binary that embeds less refuses to start
-- with a message that says so; any binary at or above the floor runs, even when the schema carries
-- newer, additive migrations it does not know (so an image can be rolled back).
--
-- 4, not 5: this migration only adds this table. 0004 raised the effective floor (every writer must
-- write the leaf runs of the events it sequences), which is why it is not lower.
CREATE TABLE IF NOT EXISTS schema_compatibility (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    min_binary_version BIGINT NOT NULL,
    reason TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

INSERT INTO schema_compatibility (min_binary_version, reason)
VALUES (4, 'migration 0004: every writer must write the leaf runs of the events it sequences')
ON CONFLICT (singleton) DO NOTHING;
