-- Dead letters are keyed by their stream and event id: an event refused in one stream never
-- overwrites (or is overwritten by) a dead letter of another tenant or store that happens to carry
-- the same event_id.
DROP INDEX IF EXISTS uq_dead_letter_event_id;
CREATE UNIQUE INDEX uq_dead_letter_stream_event ON dead_letter_events (tenant_id, store_id, event_id);
