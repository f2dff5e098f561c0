-- Included (`\ir`) by the AB_SETUP files written for the schema before migration 0024, which made the
-- event id's index epoch-keyed for real: on a later schema they stop here.
DO $$
BEGIN
    IF to_regclass('event_id_epochs') IS NOT NULL THEN
        RAISE EXCEPTION 'this setup is for the schema before migration 0024 (event ids by epoch)';
    END IF;
END
$$;
