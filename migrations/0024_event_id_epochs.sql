-- Event ids are unique per tenant within an epoch, and the sequencer keeps them unique across epochs
-- (step 1 of 3: the column, the epoch row and the floor; 0025 builds the epoch-keyed unique index,
-- 0026 drops the old one).
--
-- Why: an event id is chosen by its client, so it is random, and the unique index on (tenant_id,
-- event_id) put every new event on a random leaf of an index that grows with the log. Once the index
-- outgrew the buffers, each insert dirtied a leaf last written before the checkpoint: about one full-page
-- image and one buffer miss per event. Measured through the sequencer on a log of 10^7 events (README,
-- "The event id's index is the decline, and what would keep it flat"): with that index, growing streams
-- ran at 75-80% of an empty database's rate; without it at 99-101%; keyed by an epoch (emulated) at
-- 93-100%, its full-page images per event from about 1 to 0.2-0.3.
--
-- How: every signed event is written with the epoch current when it is written (`id_epoch`), and the
-- unique index leads with it, so new ids go into one region the buffers hold, and a closed epoch's
-- region is never written again. The worker leader closes an epoch once it holds
-- EVENT_ID_EPOCH_EVENTS events (`Store::advance_event_id_epoch`); every process keeps a binary fuse
-- filter of each closed epoch's ids (`store::epochs`) and looks an id up in a closed epoch only where
-- that epoch's filter does not rule it out. A writer reads the epoch from this row under a share lock
-- in the statement that writes (and writes nothing if it is not the epoch its filters cover), and the
-- leader takes the table's EXCLUSIVE lock to advance it, so an epoch is closed only once every write
-- into it has committed, and a filter built afterwards holds every id of it.
--
-- Contract (migrations/README.md): `ves_events.id_epoch` has no default, so a binary from before this
-- migration, which neither writes an epoch nor checks closed ones, cannot insert a signed event (its
-- request fails; nothing is written) rather than duplicate an id of a closed epoch. The floor rises to
-- 24. `legacy_events` keeps the default 0: its own unique index (tenant_id, event_id) is unchanged.
-- The column is added with a constant default, which PostgreSQL records without rewriting the table.
-- Its ALTER TABLE takes the log's ACCESS EXCLUSIVE lock for a moment, but waits for every reader before
-- it (a long `verify`, a `pg_dump`) with ingest queued behind it: as 0018 does, it gives up after 10 s and
-- the migration fails (nothing is applied; the migration Job or the next start-up runs it again).
SET LOCAL lock_timeout = '10s';

ALTER TABLE events ADD COLUMN id_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE ves_events ALTER COLUMN id_epoch DROP DEFAULT;

CREATE TABLE event_id_epochs (
    only_row    BOOLEAN     PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    current     INTEGER     NOT NULL DEFAULT 0 CHECK (current >= 0),
    -- The log's events (the sum of its streams' heads) when the epoch became current: the leader closes it
    -- once the log holds EVENT_ID_EPOCH_EVENTS more. 0 for epoch 0, so that on a log that already
    -- holds that many the first epoch closes at once and new ids leave the old index's region.
    events_at_start BIGINT      NOT NULL DEFAULT 0,
    advanced_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
INSERT INTO event_id_epochs DEFAULT VALUES;

-- Each closed epoch's filter, as the first process to build it stored it, so that a process starting
-- on a large log reads about 2.26 bytes per id instead of every id (`store::epochs`). `format` 1: a
-- binary fuse filter (xorf's `BinaryFuse16`: its 20-byte descriptor, then its 16-bit fingerprints,
-- little-endian) of the
-- (tenant, id) pairs' 64-bit keys; `filter` is NULL for an epoch without ids.
CREATE TABLE event_id_epoch_filters (
    epoch    INTEGER     PRIMARY KEY,
    format   SMALLINT    NOT NULL,
    ids      BIGINT      NOT NULL,
    filter   BYTEA,
    built_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

UPDATE schema_compatibility
   SET min_binary_version = GREATEST(min_binary_version, 24),
       reason = 'migration 0024: signed events carry the epoch of their id, which binaries before 0024 do not write or check',
       updated_at = NOW();
