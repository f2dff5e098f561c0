# Sourced by the benchmark scripts that run a release sequencer on the PostgreSQL of scripts/test, on a
# fresh database (tlog-bench, tlog-share: `start`) or on one they keep (bench-growth, bench-growth-ab:
# `run_on`). The caller sets ADMIN_URL (an admin connection URL), KEY (the bootstrap admin API key),
# DB_PREFIX (the fresh databases' name prefix), bin (the release binaries) and work (a scratch
# directory), and calls sequencer_cleanup from its EXIT trap, which drops only a database `start` made.

pid=""
db=""
url=""

# run_on DATABASE_URL VAR=VALUE...: a sequencer on that database, left as it is, with VAR=VALUE in its
# environment (a later VAR overrides the defaults here); waits until it listens, sets $pid and $url, and
# keeps its log in $seq_log.
run_on() {
  local database="$1"
  shift
  seq_log="$(mktemp -p "$work")"
  env DATABASE_URL="$database" HOST=127.0.0.1 PORT=0 BOOTSTRAP_ADMIN_API_KEY="$KEY" \
    VES_SEQUENCER_SIGNING_KEY="$(openssl rand -hex 32)" LOG_FORMAT=text RUST_LOG=warn,sequencer=info \
    "$@" "$bin/stateset-sequencer" >"$seq_log" 2>&1 &
  pid=$!
  url=""
  for _ in $(seq 1 600); do
    url="$(grep -so 'listening on http://[0-9.:]*' "$seq_log" | head -1 | sed 's/listening on //')" || true
    [ -n "$url" ] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$seq_log"; echo "the sequencer did not start" >&2; exit 1
}

# start VAR=VALUE...: a sequencer on a fresh database, VAR=VALUE in its environment; sets $pid, $db
# and $url.
start() {
  db="${DB_PREFIX}_$(openssl rand -hex 6)"
  psql -q "$ADMIN_URL" -c "CREATE DATABASE $db" >/dev/null
  run_on "${ADMIN_URL%/*}/$db" "$@"
}

# halt: stops the sequencer (SIGTERM) and waits for it.
halt() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }

# stop: stops the sequencer and drops its database.
stop() {
  halt
  psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null; db=""
}

# metric NAME: the value of an unlabelled metric of the running sequencer.
metric() { curl -s "$url/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

sequencer_cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  [ -n "$db" ] && psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
  rm -rf "$work"
}
