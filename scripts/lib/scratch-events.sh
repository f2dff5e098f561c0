# shellcheck shell=bash
# A scratch database of real signed events, for the scripts that time the sequencing INSERT inside one
# backend (scripts/insert-cost, scripts/schema-variants). Sourced after `cd` to the repository root.
#
# scratch_events NAME: builds the release binaries, creates database NAME_<pid> (its URL in `url`), fills
# it with 100 signed events through loadgen --spawn, and stores their columns as the sequencer binds them
# (one array per column) in the one-row table `x_arr`. `q` runs psql on it; `scratch_drop` drops it (call
# it from the caller's EXIT trap). `median` prints the median of the numbers on its input. The receipt and
# cipher hashes, which the sequencer no longer stores (migration 0021), are taken as every reader takes
# them, so the arrays are those of the statements these scripts time (which store both).

ADMIN_URL="${LOADGEN_ADMIN_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

q() { psql -X -q -At "$url" "$@"; }
scratch_drop() { [ -n "${db:-}" ] || return 0; psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; }
median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

scratch_events() {
  db="$1_$$"
  url="${ADMIN_URL%/*}/$db"
  scripts/ensure-postgres
  cargo build --release --locked -p stateset-sequencer -p e2e
  psql -q "$ADMIN_URL" -c "CREATE DATABASE $db"
  DATABASE_URL="$url" "$CARGO_TARGET_DIR/release/loadgen" --spawn --no-build --sequencer-bin \
    "$CARGO_TARGET_DIR/release/stateset-sequencer" --clients 1 --streams 1 --batch 100 --events 100 >/dev/null 2>&1
  q <<'SQL'
CREATE TABLE x_arr AS
SELECT array_agg(sequence_number ORDER BY sequence_number) seq, array_agg(event_id) event_id,
  array_agg(entity_type::text) entity_type, array_agg(entity_id::text) entity_id, array_agg(event_type::text) event_type,
  array_agg(created_at) created_at, array_agg(source_agent_id) source_agent, array_agg(command_id) command_id,
  array_agg(base_version) base_version, array_agg(COALESCE(payload_text, payload::text)) payload, array_agg(ves_version) ves_version,
  array_agg(agent_key_id) agent_key_id, array_agg(created_at_str) created_at_str, array_agg(payload_kind) payload_kind,
  array_agg(payload_encrypted) payload_encrypted, array_agg(payload_plain_hash) plain_hash,
  array_agg(COALESCE(payload_cipher_hash, decode(repeat('00', 32), 'hex'))) cipher_hash,
  array_agg(event_signing_hash) signing_hash, array_agg(agent_signature) signature,
  array_agg(COALESCE(receipt_hash, ves_receipt_hash(tenant_id, store_id, event_id, sequence_number, event_signing_hash))) receipt_hash, array_agg(sequencer_signature) sequencer_signature, array_agg(leaf_hash) leaf_hash,
  min(sequencer_id::text)::uuid sequencer_id
FROM (SELECT * FROM ves_events ORDER BY sequence_number LIMIT 100) s;
SQL
}
