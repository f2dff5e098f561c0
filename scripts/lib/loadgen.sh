# Sourced by the benchmark scripts that measure a sequencer while loadgen drives it (allocs-per-request,
# cpu-split, cpu-areas). The caller sets loadgen (its binary) and kills "$lg" from its EXIT trap if it is set.

lg=""

# loadgen_timed LOG ARGS...: starts `loadgen --spawn --no-build ARGS...` in the background, its output in
# LOG, and returns once its timed run has started (the events are signed); sets $lg (loadgen's pid) and
# $pid (the sequencer's, which loadgen names before signing). The caller may set the array loadgen_env
# to NAME=VALUE pairs for loadgen's environment, which the sequencer it spawns inherits.
loadgen_env=()
loadgen_timed() {
  local log="$1"
  shift
  env ${loadgen_env[@]+"${loadgen_env[@]}"} "$loadgen" --spawn --no-build "$@" >"$log" 2>&1 &
  lg=$!
  for _ in $(seq 1 1200); do
    grep -aq "not timed" "$log" && break
    kill -0 "$lg" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
  done
  pid="$(grep -aoE '\(pid [0-9]+\)' "$log" | head -1 | tr -dc 0-9)"
  [ -n "$pid" ] || { echo "loadgen named no sequencer pid" >&2; cat "$log" >&2; exit 1; }
}

# loadgen_done LOG: waits for the loadgen started by loadgen_timed (failing if it failed) and clears $lg.
loadgen_done() {
  wait "$lg" || { echo "loadgen failed" >&2; cat "$1" >&2; exit 1; }
  lg=""
}

# loadgen_figures LOG: after loadgen_done, sets $cpu (loadgen's CPU/event line), $seq_us and $pg_us (the
# sequencer's and PostgreSQL's CPU per event, µs) and $rate (events/s) from its report.
loadgen_figures() {
  cpu="$(grep -a 'CPU/event' "$1" | sed 's/^ *//')"
  seq_us="$(sed -E 's/.*server ([0-9.]+) us.*/\1/' <<<"$cpu")"
  pg_us="$(sed -E 's/.*PostgreSQL ([0-9.]+) us.*/\1/' <<<"$cpu")"
  rate="$(grep -a 'events ' "$1" | grep -aoE '[0-9]+ events/s' | head -1 | tr -dc 0-9)"
}
