-- A text column for the payload of signed events, beside the JSONB one: the first of two steps that
-- store a plaintext payload as the text the sequencer already holds instead of as JSONB.
--
-- Why: PostgreSQL parses every payload into JSONB when the row is written. On the 64-stream ingest
-- load that parse is about a seventh of the sequencing statement's cost in one backend (README.md,
-- § Performance, "Shapes of the row that were measured and not made": 12.21 -> 10.53 µs per event with
-- the payload as text), and nothing in the log needs JSONB: no query reads into a payload, the
-- sequencer serves it as JSON, and its hash is taken over the client's JSON before it is stored.
--
-- The two steps (migrations/README.md, "Expand and contract"):
--   1. This migration (expand): the column, always NULL, and readers that take the payload from
--      whichever column holds it (`COALESCE(payload, payload_text::jsonb)`, sequencer/src/store/events.rs
--      `EVENT_COLUMNS`). Writers still write `payload`, so a binary from before this migration keeps
--      working on this schema, and this release rolls back to it.
--   2. A later migration (contract): writers put a signed event's plaintext payload in `payload_text`
--      only, and the migration raises the compatibility floor to 18, because a binary from before this
--      one would read those rows' payload as absent. Read back through the same COALESCE, a payload
--      stored as text is the JSONB it would have been stored as, so what the sequencer serves, hashes
--      into the transparency log and verifies does not change.
--
-- Adding a nullable column without a default changes only the catalog (no rewrite), but it takes the
-- table's exclusive lock, which waits for every transaction reading the log (a long `verify`, a
-- `pg_dump`) and holds up ingest queued behind it meanwhile. So it gives up after 10 s and the
-- migration fails (nothing is applied; the operator's migration Job or the next start-up runs it again)
-- rather than stopping ingest for as long as the longest reader.
SET LOCAL lock_timeout = '10s';

ALTER TABLE events ADD COLUMN payload_text TEXT;

-- Only a plaintext (kind 0) signed event's payload goes there, and never beside a JSONB one. NOT VALID:
-- every existing row has NULL there, so there is nothing to check, and checking would scan the log
-- under this migration's lock; new rows are checked.
ALTER TABLE ves_events ADD CONSTRAINT ves_events_payload_text
    CHECK (payload_text IS NULL OR (payload_kind = 0 AND payload IS NULL)) NOT VALID;
