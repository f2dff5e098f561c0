# Sourced by the benchmark scripts that measure a sequencer while loadgen drives it (allocs-per-request,
# cpu-split). The caller sets loadgen (its binary) and kills "$lg" from its EXIT trap if it is set.

lg=""

# loadgen_timed LOG ARGS...: starts `loadgen --spawn --no-build ARGS...` in the background, its output in
# LOG, and returns once its timed run has started (the events are signed); sets $lg (loadgen's pid) and
# $pid (the sequencer's, which loadgen names before signing).
loadgen_timed() {
  local log="$1"
  shift
  "$loadgen" --spawn --no-build "$@" >"$log" 2>&1 &
  lg=$!
  for _ in $(seq 1 1200); do
    grep -aq "not timed" "$log" && break
    kill -0 "$lg" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
  done
  pid="$(grep -aoE '\(pid [0-9]+\)' "$log" | head -1 | tr -dc 0-9)"
  [ -n "$pid" ] || { echo "loadgen named no sequencer pid" >&2; cat "$log" >&2; exit 1; }
}
