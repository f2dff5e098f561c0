-- Leaf runs and partial hash tiles stay in their tables' own pages up to a page's worth, instead of
-- going to TOAST at 2 KB.
--
-- Why: a run's `leaves` and `tlog_leaves` (32 bytes per event each, STORAGE EXTERNAL since 0004 and
-- 0012) went out of line as soon as the row passed PostgreSQL's default toast_tuple_target (about
-- 2 KB: 31 events with the log on, 61 with it off). At the 64-stream benchmark load (runs of 100
-- events) each sequencing statement then also allocated two TOAST value ids (an index probe each),
-- wrote four TOAST chunks and four TOAST index entries. With the target at its maximum, a run of up
-- to 126 events (252 with the log off) is one heap row. Measured (`loadgen --clients 32 --streams 64
-- --batch 100 --events 150000`, pg_stat_wal around the timed run): WAL records per event 4.81 -> 4.72
-- with the log on, 4.57 -> 4.53 with it off; WAL bytes per event unchanged (1,644 / 1,639 and 1,509 /
-- 1,507); the table with its TOAST 14.3 MB -> 13.8 MB for 166,000 events.
--
-- A proof's substring() of an inline run reads its one heap page, as it read one TOAST chunk before.
-- Longer runs are still moved out of line, uncompressed.
--
-- Expand only (migrations/README.md): a storage parameter; an older binary does not notice it, and
-- rows already written stay where they are. SET (...) takes a SHARE UPDATE EXCLUSIVE lock: reads and
-- writes go on while it runs.
ALTER TABLE event_leaf_runs SET (toast_tuple_target = 8160);

-- The same for the transparency log's hash tiles: the integrator rewrites each stream's partial
-- level-0 tile every round it moves the tree (migration 0009), and from 62 hashes on every rewrite
-- wrote the tile as new TOAST chunks with their index entries and deleted the old ones. A partial tile
-- of up to 252 hashes is now one heap row (a full tile, 8 KiB of hashes, is still stored out of line,
-- written once). Measured as above, the log on, with 0013's first statement not yet applied: WAL
-- records per event 4.81 -> 4.74, WAL bytes unchanged (1,643 / 1,639), the tiles' TOAST 12.9 MB ->
-- 5.4 MB; the rewrites are no longer HOT updates (an 8 KB row does not fit beside its old version)
-- and so add an entry to the primary key each, which bottom-up index deletion reclaims.
ALTER TABLE tlog_tiles SET (toast_tuple_target = 8160);
