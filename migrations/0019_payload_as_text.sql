-- The second of migration 0018's two steps: from this release on, the sequencer writes a signed
-- event's plaintext payload into `payload_text` only (sequencer/src/store/events.rs, `INSERT_ROWS`), as
-- the compact JSON it already holds, and PostgreSQL no longer parses it into JSONB on every insert.
--
-- Why: that parse was about a seventh of the sequencing statement's cost in one backend (README.md,
-- § Performance, "Shapes of the row that were measured and not made"), and nothing in the log needs
-- JSONB: no query reads into a payload, the sequencer serves it as JSON, and its hash is taken over the
-- client's JSON before it is stored. Readers take the payload from either column and cast the text back
-- to JSONB (`COALESCE(payload, payload_text::jsonb)`, since 0018), so every read, transparency log entry
-- and verification gives the same bytes as for a payload stored as JSONB. Rows written before this
-- release keep their JSONB payload; nothing is rewritten.
--
-- The text always casts back: the sequencer writes `serde_json`'s encoding of a parsed value (valid
-- JSON, finite numbers, no lone surrogates) and refuses a NUL anywhere in a request before it is
-- sequenced (sequencer/src/validate.rs), the one JSON value JSONB cannot hold. Encrypted payloads and
-- legacy events keep their JSONB columns.
--
-- Contract (migrations/README.md, "Expand and contract"): a binary from before 0018 reads only
-- `payload`, so it would serve these events without their payload, verify them as altered and log them
-- with entries that do not match. So the floor rises to 18: such a binary refuses to start on this
-- schema and says why. The release before this one (0018) reads both columns and can still be rolled
-- back to. Only the floor moves here; no schema object changes.
UPDATE schema_compatibility
   SET min_binary_version = GREATEST(min_binary_version, 18),
       reason = 'migration 0019: signed events'' payloads are stored as text in payload_text, which binaries before 0018 do not read',
       updated_at = NOW()
 WHERE min_binary_version < 18;
