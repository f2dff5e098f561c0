-- The second of migration 0020's two steps: from this release on, the sequencer writes no receipt hash
-- and no cipher hash for a plaintext payload (sequencer/src/store/events.rs, `INSERT_ROWS` and
-- `Columns`); every reader derives them (`EVENT_COLUMNS`, `EXISTING_COLUMNS`, since 0020), so a served
-- event, a replay's receipt, a transparency log entry and `verify` are the same bytes as for a row that
-- stores them. Rows written before this release keep theirs; nothing is rewritten.
--
-- Why: 66 bytes of every new row and of its WAL, in a log that never deletes anything (README.md,
-- § Performance, "The receipt and cipher hashes derived"), and two arrays less for PostgreSQL to unnest and
-- copy per insert.
--
-- Contract (migrations/README.md, "Expand and contract"): a binary from before 0020 reads both columns as
-- they are, so it would answer a replay of such an event with an empty receipt hash, serve its cipher
-- hash as absent and fail to read it back as an envelope. So the floor rises to 20: such a binary
-- refuses to start on this schema and says why. The release with 0020 derives both and can still be
-- rolled back to. Only the floor moves here; no schema object changes.
UPDATE schema_compatibility
   SET min_binary_version = GREATEST(min_binary_version, 20),
       reason = 'migration 0021: signed events are stored without their receipt hash and a plaintext payload''s cipher hash, which binaries before 0020 do not derive',
       updated_at = NOW()
 WHERE min_binary_version < 20;
