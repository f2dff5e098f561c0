# Sourced by the PostgreSQL-alone probes (lookup-probe, entity-probe) after they read their settings:
# creates a throw-away database on the server ADMIN_URL names (default postgres://postgres@127.0.0.1:5432/
# postgres), named after PROBE and dropped when the script exits, and defines `run`, psql on it that stops
# at the first error.
admin_url="${ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
name="${PROBE:?set PROBE before sourcing probe-db.sh}_$(date +%s)_$$"
db="${admin_url%/*}/$name"
cleanup() { psql "$admin_url" -qc "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null 2>&1 || true; }
trap cleanup EXIT
psql "$admin_url" -qc "CREATE DATABASE $name"
run() { psql "$db" -qAt -v ON_ERROR_STOP=1 "$@"; }
