-- Makes the operations runbook's index-usage query run verbatim:
--
--   SELECT schemaname, tablename, indexname, idx_scan, idx_tup_read
--   FROM pg_stat_user_indexes ORDER BY idx_scan DESC;
--
-- PostgreSQL's pg_stat_user_indexes names those columns relname and indexrelname. A view in this
-- database's public schema adds the runbook's names (tablename, indexname) next to every original
-- column, and the database's search_path puts public before pg_catalog so that the unqualified name
-- in the runbook finds it. Fully qualified pg_catalog.pg_stat_user_indexes is untouched.
--
-- NB: changing a database's search_path needs its owner or a superuser. Where the migration role has
-- neither, the view is still created (query it as public.pg_stat_user_indexes) and a notice says so.

CREATE VIEW public.pg_stat_user_indexes AS
    SELECT s.*, s.relname AS tablename, s.indexrelname AS indexname
    FROM pg_catalog.pg_stat_user_indexes s;

DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET search_path = "$user", public, pg_catalog', current_database());
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'could not set the search_path of database %: the runbook index query needs public.pg_stat_user_indexes', current_database();
END;
$$;
