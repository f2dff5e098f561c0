-- The first of two steps that stop storing two hashes of a signed event that its other columns already
-- determine:
--   * `receipt_hash` = SHA256("VES_RECEIPT_V1" || UUID(tenant) || UUID(store) || UUID(event_id)
--     || U64_BE(sequence_number) || event_signing_hash) (ves-wire §2.5), 32 bytes of every row;
--   * `payload_cipher_hash` of a plaintext (kind 0) event, which is 32 zero bytes by the wire format.
--
-- Why: the log never deletes anything, so every byte of a row is paid for as long as the log lives. The
-- two are 66 bytes of a signed event's row (about 740 bytes of heap with a 200-byte payload; README.md,
-- § Performance, "Shapes of the row that were measured and not made") and as many bytes of WAL per event,
-- and PostgreSQL unnests and copies them on every insert. A signed event's `event_signing_hash` stays: the
-- receipt and the leaf are computed from it, and deriving it would take the whole signing preimage's
-- encoding into SQL.
--
-- The two steps (migrations/README.md, "Expand and contract"):
--   1. This migration (expand): `ves_receipt_hash(...)`, which computes a receipt hash exactly as the
--      sequencer does, and readers that take each hash from its column or, where that is NULL, derive it
--      (sequencer/src/store/events.rs, `EVENT_COLUMNS` and `EXISTING_COLUMNS`). Writers still write both,
--      so a binary from before this migration keeps working on this schema, and this release rolls back
--      to it.
--   2. 0021 (contract): writers leave both NULL, and the floor rises to 20, because a binary from before
--      this one would read a NULL receipt hash (and a NULL cipher hash) where it expects 32 bytes.
-- Rows written before step 2 keep their stored hashes; nothing is rewritten, and `verify` goes on
-- comparing a stored receipt hash with its recomputation.
--
-- The constraint below keeps the cipher hash of an encrypted (kind 1) payload stored: that one is a hash
-- of the ciphertext and cannot be derived. NOT VALID: every existing row has it, and checking would scan
-- the log under this migration's lock; new rows are checked. Adding it takes the table's exclusive lock,
-- which waits for every transaction reading the log, so the migration gives up after 10 s rather than
-- hold up ingest behind the longest reader (the operator's migration Job, or the next start-up, runs it
-- again).
SET LOCAL lock_timeout = '10s';

CREATE FUNCTION ves_receipt_hash(tenant_id uuid, store_id uuid, event_id uuid, sequence_number bigint,
                                 event_signing_hash bytea)
    RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT sha256('VES_RECEIPT_V1'::bytea || uuid_send(tenant_id) || uuid_send(store_id) || uuid_send(event_id)
                  || int8send(sequence_number) || event_signing_hash)
$$;

ALTER TABLE ves_events ADD CONSTRAINT ves_events_cipher_hash_of_ciphertext
    CHECK (payload_kind = 0 OR payload_cipher_hash IS NOT NULL) NOT VALID;
