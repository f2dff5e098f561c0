-- Event ids are unique per tenant, no longer across all tenants.
--
-- Why: with one global unique index, a tenant learned whether an id existed in another tenant (its
-- answer was "Event ID already exists" instead of a receipt) and could squat an id so that another
-- tenant's validly signed event was refused. Now an id used by another tenant is answered exactly
-- like a fresh one: every lookup of an event id is scoped to the caller's tenant and the unique
-- indexes below include tenant_id, so the other tenant's row is never seen.
--
-- Decision: per tenant, not per stream. Within a tenant nothing changes: an exact replay still answers
-- its original receipt, a reuse of the id in another store of the same tenant is still refused with
-- `duplicate_event_id` "Event ID already exists" (as upstream, whose idempotency key is the event id),
-- and command ids stay unique per stream. Per tenant is also the narrower key of the two (32 bytes of
-- key per index entry instead of 48 for (tenant_id, store_id, event_id)); it is 16 bytes more per
-- event than the global index it replaces.
--
-- Expand (migrations/README.md): the floor stays. A binary from before this migration still runs on
-- it; it looks ids up across tenants as it used to, so during a rollback a reused id may again be
-- refused for another tenant's event. Nothing it writes breaks an invariant of this schema.
--
-- The index names stay, so the runbook's index-usage query shows the same rows. Building the new
-- indexes reads the whole log once (a few seconds per 10^6 events) while ingestion waits.
DROP INDEX uq_ves_events_event_id;
CREATE UNIQUE INDEX uq_ves_events_event_id ON ves_events (tenant_id, event_id);
DROP INDEX uq_legacy_events_event_id;
CREATE UNIQUE INDEX uq_legacy_events_event_id ON legacy_events (tenant_id, event_id);
