-- The receipt keys each sequencer process signed with. A signed event stores the id of the process that
-- sequenced it (`sequencer_id`, random per process unless VES_SEQUENCER_ID is set) and its signature over
-- the receipt hash, but until this release nothing recorded which public key that id signed with: the
-- key is a deployment's Secret, and once it is rotated the receipts and checkpoints it signed could not
-- be verified by anyone, `verify` included.
--
-- A process records its id and public key here before it signs anything (server start-up), so every
-- event it sequences has its key on record. `verify` checks each stored sequencer signature against the
-- keys of its event's `sequencer_id`; an event whose id has no key here was sequenced by a release that
-- did not record one and is counted as unchecked, not reported. `GET /api/v1/ves/sequencer` lists the
-- distinct public keys, so that a client can verify a receipt (or a checkpoint) signed before a rotation.
--
-- One row per process start when VES_SEQUENCER_ID is unset (a few hundred bytes each); the same row
-- again when it is set and the key has not changed.
--
-- Expand (migrations/README.md, "Expand and contract"): a new table. The previous release neither reads
-- nor writes it; the events it sequences have ids without a key here, which `verify` counts as unchecked.
CREATE TABLE receipt_keys (
    sequencer_id     UUID        NOT NULL,
    public_key       BYTEA       NOT NULL CHECK (length(public_key) = 32),
    first_started_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    last_started_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (sequencer_id, public_key)
);
