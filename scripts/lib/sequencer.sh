# Sourced by the benchmark scripts that run a release sequencer on a fresh database of the PostgreSQL
# of scripts/test (tlog-bench, tlog-share). The caller sets ADMIN_URL (an admin connection URL), KEY
# (the bootstrap admin API key), DB_PREFIX (the benchmark databases' name prefix), bin (the release
# binaries) and work (a scratch directory), and calls sequencer_cleanup from its EXIT trap.

pid=""
db=""
url=""

# start VAR=VALUE...: a sequencer on a fresh database, VAR=VALUE in its environment; sets $pid, $db
# and $url.
start() {
  db="${DB_PREFIX}_$(openssl rand -hex 6)"
  local log
  log="$(mktemp -p "$work")"
  psql -q "$ADMIN_URL" -c "CREATE DATABASE $db" >/dev/null
  env DATABASE_URL="${ADMIN_URL%/*}/$db" HOST=127.0.0.1 PORT=0 BOOTSTRAP_ADMIN_API_KEY="$KEY" \
    VES_SEQUENCER_SIGNING_KEY="$(openssl rand -hex 32)" LOG_FORMAT=text RUST_LOG=warn,sequencer=info \
    "$@" "$bin/stateset-sequencer" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    url="$(grep -so 'listening on http://[0-9.:]*' "$log" | head -1 | sed 's/listening on //')" || true
    [ -n "$url" ] && return 0
    sleep 0.1
  done
  cat "$log"; echo "the sequencer did not start" >&2; exit 1
}

# stop: stops the sequencer and drops its database.
stop() {
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null; db=""
}

# metric NAME: the value of an unlabelled metric of the running sequencer.
metric() { curl -s "$url/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

sequencer_cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  [ -n "$db" ] && psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
  rm -rf "$work"
}
