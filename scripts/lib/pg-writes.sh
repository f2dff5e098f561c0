# Sourced by the benchmarks that read PostgreSQL's own write counters around a run (bench-growth,
# bench-growth-ab, tier-probe).

# checkpoints_sql URL: an SQL expression for the checkpoints the server behind URL has begun so far, timed
# and requested. The counters moved from pg_stat_bgwriter to pg_stat_checkpointer in PostgreSQL 17.
checkpoints_sql() {
  if [ "$(psql "$1" -Atqc "SELECT to_regclass('pg_catalog.pg_stat_checkpointer') IS NOT NULL")" = t ]; then
    echo "(SELECT num_timed + num_requested FROM pg_stat_checkpointer)"
  else
    echo "(SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter)"
  fi
}
