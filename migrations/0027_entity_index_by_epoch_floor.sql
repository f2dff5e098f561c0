-- The entity index of signed events is keyed by id epoch (step 1 of 4: the floor; 0028 builds the
-- epoch-keyed index of `ves_events`, 0029 an entity index of `legacy_events` alone, 0030 drops the entity
-- index of the whole log).
--
-- Why: the entity index `(tenant_id, store_id, entity_type, entity_id, sequence_number)` put each new
-- event at its entity's place in the whole history, a random leaf of an index that grows with the log.
-- Once it outgrew the buffers, nearly every insert into a growing stream dirtied a leaf last written
-- before the checkpoint: most of the full-page images a growing stream still wrote on a log of 10^7
-- events, where it ran at 79-84% of an empty database's rate. Keyed by the epoch that already keys event
-- ids (0024), `(tenant_id, store_id, id_epoch, entity_type, entity_id, sequence_number)`, a stream's new
-- events go into the current epoch's region, which the buffers hold; emulated on the same log, growing
-- streams ran at 95-101% with 0.03-0.04 full-page images per event (README, "The entity index keyed by
-- epoch").
--
-- Contract (migrations/README.md), with no schema object changed here: a binary from before this
-- migration finds an entity's events and counts its versions with the entity alone, which 0030 leaves
-- no index for on `ves_events`. Its answers stay right, but each one reads the stream's whole history
-- (and a `base_version` check sits in the write path). The floor rises to 27, so that such a binary
-- does not start on this schema; one already running keeps serving, slowly, until it is replaced.
UPDATE schema_compatibility
   SET min_binary_version = GREATEST(min_binary_version, 27),
       reason = 'migration 0027: entities of signed events are looked up by id epoch, which binaries before 0027 do not do',
       updated_at = NOW();
