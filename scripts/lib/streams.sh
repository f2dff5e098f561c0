# Sourced by scripts/bench-growth and scripts/bench-growth-ab: which streams of a log their entity pages read.

# oldest_stream DATABASE_URL: "<tenant> <store>" of the largest stream as old as the log, whose first signed
# event is in id epoch 0 (after a bench-growth fill, one of its 64 streams: its entities are in every epoch
# of the log).
oldest_stream() {
  psql "$1" -Atc "SELECT c.tenant_id || ' ' || c.store_id FROM sequence_counters c \
    WHERE (SELECT v.id_epoch FROM ves_events v WHERE v.tenant_id = c.tenant_id AND v.store_id = c.store_id \
           ORDER BY v.sequence_number LIMIT 1) = 0 ORDER BY c.current_sequence DESC LIMIT 1"
}
