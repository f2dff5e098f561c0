//! Per-agent event policies: what an agent may write, enforced at ingest (as upstream 0.8+:
//! `GET/PUT /api/v1/agents/{agent_id}/policy`).
//!
//! A policy lists the event types and entity types the agent may write (exact names, a namespace
//! prefix ending in `*` such as `order.*`, or `*` for any), whether it must name the version it
//! modifies (`requireBaseVersion`: every event that does not create an entity, i.e. whose type does
//! not end in `.created`, needs a `base_version`), and an optional payload size limit. A disabled
//! policy, or no policy, restricts nothing. This module is pure: the store reads and writes the rows,
//! ingest asks [`AgentPolicy::check`] per event.

use std::sync::Arc;

use uuid::Uuid;
use ves::envelope::{RawPayload, VesEventEnvelope};

/// The reason written into an ingest rejection (and the `sequencer_events_rejected_total` label) when
/// an event breaks its agent's policy.
pub const REJECTION_REASON: &str = "agent_policy_violation";

/// Most rules in one list, and the longest rule.
pub const MAX_RULES: usize = 128;
const MAX_EVENT_RULE_LEN: usize = 256;
const MAX_ENTITY_RULE_LEN: usize = 128;
/// Largest payload limit a policy may set.
pub const MAX_POLICY_PAYLOAD_BYTES: u32 = 10 * 1024 * 1024;

pub use crate::store::policies::AgentPolicy;

/// Why an event breaks a policy (the message is upstream's wording).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    EventType(String),
    EntityType(String),
    BaseVersionRequired,
    PayloadTooLarge { limit: i32 },
}

impl Violation {
    pub fn message(&self) -> String {
        match self {
            Violation::EventType(t) => format!("event type is not allowed for this agent: {t}"),
            Violation::EntityType(t) => format!("entity type is not allowed for this agent: {t}"),
            Violation::BaseVersionRequired => "base_version is required when modifying an existing entity".into(),
            Violation::PayloadTooLarge { limit } => format!("payload exceeds this agent's {limit} byte policy limit"),
        }
    }
}

/// Policies as ingest reads them: cached per agent for [`CACHE_TTL`] (a change through this process
/// applies at once; other replicas see it within the TTL).
pub struct PolicyCache {
    store: crate::store::Store,
    cache: moka::future::Cache<(Uuid, Uuid), Option<Arc<AgentPolicy>>>,
}

/// How long a replica may apply a policy that another replica has since replaced.
pub const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

impl PolicyCache {
    pub fn new(store: crate::store::Store) -> Self {
        PolicyCache {
            store,
            cache: moka::future::Cache::builder().max_capacity(100_000).time_to_live(CACHE_TTL).build(),
        }
    }

    /// The events (by index) that break their agent's policy, and how. All events of an ingest request
    /// come from one agent of one tenant; each comes with its index and, when the caller has worked it
    /// out, its payload's size as [`AgentPolicy::check`] measures it.
    pub async fn violations<'a>(
        &self,
        tenant_id: Uuid,
        agent_id: Uuid,
        events: impl IntoIterator<Item = (usize, &'a VesEventEnvelope<RawPayload>, Option<usize>)>,
    ) -> crate::error::Result<Vec<(usize, Violation)>> {
        let policy = match self.cache.get(&(tenant_id, agent_id)).await {
            Some(p) => p,
            None => {
                let p = self.store.agent_policy(tenant_id, agent_id).await?.map(Arc::new);
                self.cache.insert((tenant_id, agent_id), p.clone()).await;
                p
            }
        };
        let Some(policy) = policy.filter(|p| p.enabled) else { return Ok(Vec::new()) };
        Ok(events.into_iter().filter_map(|(i, e, size)| policy.check(e, size).err().map(|v| (i, v))).collect())
    }

    /// Forgets an agent's cached policy (after a change through this process).
    pub async fn forget(&self, tenant_id: Uuid, agent_id: Uuid) {
        self.cache.invalidate(&(tenant_id, agent_id)).await;
    }
}

/// True when a rule list admits `value`.
pub fn matches_any(rules: &[String], value: &str) -> bool {
    rules.iter().any(|rule| {
        rule == "*" || rule == value || rule.strip_suffix('*').is_some_and(|prefix| value.starts_with(prefix))
    })
}

impl AgentPolicy {
    /// The first rule this event breaks, if any. `payload_size` is the length of the plaintext payload's
    /// compact JSON when the caller already has it (ingest's payload check); it is worked out here
    /// otherwise, and only when the policy limits the size.
    pub fn check(&self, event: &VesEventEnvelope<RawPayload>, payload_size: Option<usize>) -> Result<(), Violation> {
        if !self.enabled {
            return Ok(());
        }
        if !matches_any(&self.allowed_event_types, &event.event_type) {
            return Err(Violation::EventType(event.event_type.clone()));
        }
        if !matches_any(&self.allowed_entity_types, &event.entity_type) {
            return Err(Violation::EntityType(event.entity_type.clone()));
        }
        if self.require_base_version && !event.event_type.ends_with(".created") && event.base_version.is_none() {
            return Err(Violation::BaseVersionRequired);
        }
        if let Some(limit) = self.max_payload_bytes {
            let size = match (&event.payload, &event.payload_encrypted) {
                (Some(_), _) if let Some(size) = payload_size => size,
                // NB: the length of the payload's compact JSON, as it is stored: its text when that is
                // canonical, which is compact too.
                (Some(p), _) if ves::jcs::is_canonical(p.get()) => p.get().len(),
                (Some(p), _) => {
                    p.to_value().and_then(|v| serde_json::to_vec(&v)).map(|v| v.len()).unwrap_or(usize::MAX)
                }
                (None, Some(p)) => serde_json::to_vec(p).map(|v| v.len()).unwrap_or(usize::MAX),
                (None, None) => 0,
            };
            if size > usize::try_from(limit).unwrap_or(0) {
                return Err(Violation::PayloadTooLarge { limit });
            }
        }
        Ok(())
    }
}

/// Checks a rule list from a request: at most [`MAX_RULES`], each non-empty, not too long, with at
/// most one `*` and only at the end. Returns the list sorted and without duplicates.
pub fn normalise_rules(field: &str, mut rules: Vec<String>, event_types: bool) -> Result<Vec<String>, String> {
    let max_len = if event_types { MAX_EVENT_RULE_LEN } else { MAX_ENTITY_RULE_LEN };
    if rules.len() > MAX_RULES {
        return Err(format!("{field} may contain at most {MAX_RULES} rules"));
    }
    if let Some(bad) = rules.iter().find(|r| {
        r.is_empty() || r.len() > max_len || r.matches('*').count() > 1 || (r.contains('*') && !r.ends_with('*'))
    }) {
        return Err(format!("invalid {field} rule: {bad:?} (exact names, or one trailing '*')"));
    }
    rules.sort_unstable();
    rules.dedup();
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use serde_json::json;
    use ves::envelope::EventBuilder;

    fn policy() -> AgentPolicy {
        AgentPolicy {
            tenant_id: Uuid::nil(),
            agent_id: Uuid::nil(),
            allowed_event_types: vec!["order.*".into(), "inventory.adjusted".into()],
            allowed_entity_types: vec!["order".into(), "inventory".into()],
            require_base_version: true,
            max_payload_bytes: Some(64),
            enabled: true,
        }
    }

    fn event(
        entity: &str,
        event_type: &str,
        base: Option<u64>,
        payload: serde_json::Value,
    ) -> VesEventEnvelope<RawPayload> {
        let mut b = EventBuilder::new(Uuid::nil(), Uuid::nil(), Uuid::nil(), 1)
            .entity(entity, "E-1")
            .event_type(event_type)
            .payload(payload);
        if let Some(v) = base {
            b = b.base_version(v);
        }
        b.sign(&SigningKey::from_bytes(&[1; 32])).map_payload(|p| RawPayload::from_value(&p))
    }

    #[test]
    fn namespace_wildcards_match_by_prefix_only() {
        assert!(matches_any(&["order.*".into()], "order.confirmed"));
        assert!(!matches_any(&["order.*".into()], "orders.confirmed"));
        assert!(matches_any(&["*".into()], "anything"));
        assert!(!matches_any(&[], "order.created"));
    }

    #[test]
    fn each_rule_of_a_policy_refuses_with_upstreams_message() {
        let p = policy();
        assert_eq!(p.check(&event("order", "order.created", None, json!({})), None), Ok(()));
        assert_eq!(p.check(&event("order", "order.shipped", Some(1), json!({})), None), Ok(()));
        let v = p.check(&event("order", "refund.issued", Some(1), json!({})), None).unwrap_err();
        assert_eq!(v.message(), "event type is not allowed for this agent: refund.issued");
        let v = p.check(&event("customer", "order.created", None, json!({})), None).unwrap_err();
        assert_eq!(v.message(), "entity type is not allowed for this agent: customer");
        let v = p.check(&event("order", "order.shipped", None, json!({})), None).unwrap_err();
        assert_eq!(v, Violation::BaseVersionRequired);
        let v = p.check(&event("order", "order.created", None, json!({"pad": "x".repeat(100)})), None).unwrap_err();
        assert_eq!(v.message(), "payload exceeds this agent's 64 byte policy limit");
        let disabled = AgentPolicy { enabled: false, ..policy() };
        assert_eq!(disabled.check(&event("customer", "refund.issued", None, json!({})), None), Ok(()));
    }

    #[test]
    fn a_payload_size_the_caller_measured_is_the_one_judged() {
        let p = policy();
        // 64 bytes of compact JSON: {"pad":"…"} is 10 bytes around the string.
        let at_limit = event("order", "order.created", None, json!({"pad": "x".repeat(54)}));
        assert_eq!(p.check(&at_limit, None), Ok(()));
        assert_eq!(p.check(&at_limit, Some(64)), Ok(()));
        assert_eq!(p.check(&at_limit, Some(65)), Err(Violation::PayloadTooLarge { limit: 64 }));
        let over = event("order", "order.created", None, json!({"pad": "x".repeat(55)}));
        assert_eq!(p.check(&over, None), Err(Violation::PayloadTooLarge { limit: 64 }));
    }

    #[test]
    fn rule_lists_are_validated_sorted_and_deduplicated() {
        let rules = normalise_rules("allowedEventTypes", vec!["b.*".into(), "a".into(), "a".into()], true).unwrap();
        assert_eq!(rules, vec!["a".to_string(), "b.*".to_string()]);
        assert!(normalise_rules("x", vec!["order.*.created".into()], true).is_err());
        assert!(normalise_rules("x", vec![String::new()], true).is_err());
        assert!(normalise_rules("x", vec!["**".into()], true).is_err());
        assert!(normalise_rules("x", vec!["a".into(); MAX_RULES + 1], true).is_err());
    }
}
