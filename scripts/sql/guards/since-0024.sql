-- Included (`\ir`) by the AB_SETUP files written for the schema of migration 0024 and later (every
-- signed event carries its id epoch): on an earlier schema they stop here.
DO $$
BEGIN
    IF to_regclass('event_id_epochs') IS NULL THEN
        RAISE EXCEPTION 'this setup is for the schema of migration 0024 (event ids by epoch) or later';
    END IF;
END
$$;
