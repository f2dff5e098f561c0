-- Included (`\ir`) by the AB_SETUP files written for the schema before migration 0030, whose entity
-- index of the whole log (`idx_events_entity`) 0028-0030 replaced by one keyed by id epoch: on a later
-- schema they stop here.
DO $$
BEGIN
    IF to_regclass('idx_events_entity') IS NULL THEN
        RAISE EXCEPTION 'this setup is for the schema before migration 0030 (the entity index keyed by id epoch)';
    END IF;
END
$$;
