//! Request rate limits, per process (each replica counts its own requests; with N replicas behind a
//! load balancer a tenant gets up to N times the limit).
//!
//! - `RATE_LIMIT_PER_MINUTE`: every tenant's requests per minute (unset: no tenant limit).
//! - `RATE_LIMIT_TENANT_OVERRIDES`: JSON object `{"<tenant uuid>": <per minute>}` replacing that default
//!   for the tenants named.
//! - An API key's own `rateLimit` (per minute) applies on top, to that key alone.
//!
//! GCRA from the `governor` crate: a full minute's allowance may be spent in a burst, then requests are
//! admitted at the steady rate. A refused request gets 429 with `Retry-After`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use moka::sync::Cache;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::metrics::ScopeLabels;

// NB: the configuration types live in `config` (a leaf of the module graph), so that config does not
// import this module, which imports auth, which imports config.
pub use crate::config::{RateLimitConfig, parse_rate_limit_overrides as parse_overrides};

/// The limiters of this process.
pub struct RateLimiters {
    clock: DefaultClock,
    default_tenant: Option<DefaultKeyedRateLimiter<Uuid>>,
    overridden: HashMap<Uuid, DefaultDirectRateLimiter>,
    per_key: Cache<(Uuid, u32), Arc<DefaultDirectRateLimiter>>,
    rejected: Family<ScopeLabels, Counter>,
}

fn quota(per_minute: NonZeroU32) -> Quota {
    Quota::per_minute(per_minute)
}

impl RateLimiters {
    pub fn new(config: &RateLimitConfig, rejected: Family<ScopeLabels, Counter>) -> Self {
        RateLimiters {
            clock: DefaultClock::default(),
            default_tenant: config.per_tenant_per_minute.map(|n| RateLimiter::keyed(quota(n))),
            overridden: config.tenant_overrides.iter().map(|(t, n)| (*t, RateLimiter::direct(quota(*n)))).collect(),
            // Keys idle for ten minutes are forgotten; their allowance is full again by then anyway.
            per_key: Cache::builder().max_capacity(100_000).time_to_idle(Duration::from_secs(600)).build(),
            rejected,
        }
    }

    fn refuse(&self, scope: &'static str, wait: Duration) -> Error {
        self.rejected.get_or_create(&ScopeLabels { scope: scope.to_string() }).inc();
        Error::RateLimited { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 }
    }

    /// Admits the request or answers why not.
    pub fn check(&self, caller: &Caller) -> Result<()> {
        let tenant = caller.tenant_id;
        let tenant_result = match self.overridden.get(&tenant) {
            Some(limiter) => limiter.check(),
            None => match &self.default_tenant {
                Some(limiter) => limiter.check_key(&tenant),
                None => Ok(()),
            },
        };
        if let Err(not_until) = tenant_result {
            return Err(self.refuse("tenant", not_until.wait_time_from(self.clock.now())));
        }
        if let (Some(id), Some(limit)) = (caller.api_key_id, caller.rate_limit.and_then(NonZeroU32::new)) {
            let limiter = self.per_key.get_with((id, limit.get()), || Arc::new(RateLimiter::direct(quota(limit))));
            if let Err(not_until) = limiter.check() {
                return Err(self.refuse("api_key", not_until.wait_time_from(self.clock.now())));
            }
        }
        Ok(())
    }

    /// Drops idle tenant entries (called periodically).
    pub fn shrink(&self) {
        if let Some(l) = &self.default_tenant {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(tenant: Uuid) -> Caller {
        Caller {
            tenant_id: tenant,
            store_ids: vec![],
            can_read: true,
            can_write: true,
            can_admin: false,
            agent_id: None,
            rate_limit: None,
            api_key_id: None,
        }
    }

    #[test]
    fn a_tenant_over_its_minute_is_refused_with_a_retry_after() {
        let config = RateLimitConfig { per_tenant_per_minute: NonZeroU32::new(3), ..Default::default() };
        let limits = RateLimiters::new(&config, Family::default());
        let t = caller(Uuid::new_v4());
        for _ in 0..3 {
            limits.check(&t).unwrap();
        }
        match limits.check(&t) {
            Err(Error::RateLimited { retry_after_secs }) => assert!((1..=20).contains(&retry_after_secs)),
            other => panic!("expected 429, got {other:?}"),
        }
        // Another tenant has its own allowance.
        limits.check(&caller(Uuid::new_v4())).unwrap();
    }

    #[test]
    fn tenant_overrides_and_key_limits_apply() {
        let big = Uuid::new_v4();
        let config = RateLimitConfig {
            per_tenant_per_minute: NonZeroU32::new(1),
            tenant_overrides: [(big, NonZeroU32::new(100).unwrap())].into(),
        };
        let limits = RateLimiters::new(&config, Family::default());
        for _ in 0..50 {
            limits.check(&caller(big)).unwrap();
        }
        let keyed = Caller { rate_limit: Some(2), api_key_id: Some(Uuid::new_v4()), ..caller(big) };
        limits.check(&keyed).unwrap();
        limits.check(&keyed).unwrap();
        assert!(matches!(limits.check(&keyed), Err(Error::RateLimited { .. })));
    }

    #[test]
    fn overrides_parse_from_json_and_bad_values_are_named() {
        let t = Uuid::new_v4();
        let parsed = parse_overrides(&format!("{{\"{t}\": 500}}")).unwrap();
        assert_eq!(parsed[&t].get(), 500);
        assert!(parse_overrides("{\"nope\": 5}").unwrap_err().contains("nope"));
        assert!(parse_overrides(&format!("{{\"{t}\": 0}}")).is_err());
        assert!(parse_overrides("[1]").is_err());
    }
}
