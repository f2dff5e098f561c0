//! Request rate limits that hold for the whole deployment, not per process.
//!
//! - `RATE_LIMIT_PER_MINUTE`: every tenant's requests per minute (unset: no tenant limit).
//! - `RATE_LIMIT_TENANT_OVERRIDES`: JSON object `{"<tenant uuid>": <per minute>}` replacing that default
//!   for the tenants named.
//! - An API key's own `rateLimit` (per minute) applies on top, to that key alone.
//!
//! How (with a database, i.e. in every real deployment): each limit has one counter per calendar
//! minute in PostgreSQL (`rate_limit_windows`) shared by all replicas. A replica does not touch it per
//! request: it takes a *lease* of tokens (about 1/32 of the limit, at most 1024) with one statement and
//! hands them out locally; once PostgreSQL says the minute is used up, the replica refuses locally
//! until the minute ends. So:
//!
//! - **Never more than the limit** is admitted per calendar minute across all replicas (the counter
//!   is only ever raised up to the limit, atomically). As with any window (and as with the per-process
//!   GCRA before), a client can spend one minute's allowance at the end of a minute and the next one's
//!   at the start: at most 2x the limit in a sliding 60 s.
//! - **At most `replicas x (lease - 1)` fewer** than the limit per minute: tokens leased by a replica
//!   that does not use them before the minute ends are lost (that is the stated tolerance; with the
//!   default lease it is under 1/32 of the limit per replica).
//! - Cost: one short statement per lease per replica (not per request); refusals cost nothing.
//!
//! If the database cannot be reached, each replica falls back to its own in-process GCRA limiter from
//! the `governor` crate (the limit per process, as before) rather than refusing or admitting
//! everything. A refused request gets 429 with `Retry-After` (the seconds to the end of the minute).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use moka::sync::Cache;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::metrics::ScopeLabels;
use crate::store::Store;

// NB: the configuration types live in `config` (a leaf of the module graph), so that config does not
// import this module, which imports auth, which imports config.
pub use crate::config::{RateLimitConfig, parse_rate_limit_overrides as parse_overrides};

/// The limiters of this process.
pub struct RateLimiters {
    clock: DefaultClock,
    default_tenant: Option<DefaultKeyedRateLimiter<Uuid>>,
    overridden: HashMap<Uuid, DefaultDirectRateLimiter>,
    default_limit: Option<NonZeroU32>,
    overridden_limits: HashMap<Uuid, NonZeroU32>,
    per_key: Cache<(Uuid, u32), Arc<DefaultDirectRateLimiter>>,
    rejected: Family<ScopeLabels, Counter>,
    /// Set in a running server: the deployment-wide counters.
    shared: Option<SharedLimits>,
    /// `TLOG_PUBLIC_READ_RATE_PER_SECOND`: reads of a public log without a credential, per process.
    public_read: Option<DefaultDirectRateLimiter>,
}

/// The deployment-wide side: leases of tokens from the counters in PostgreSQL.
struct SharedLimits {
    store: Store,
    // Per limit key: what this replica holds of the current minute.
    leases: Cache<String, Arc<tokio::sync::Mutex<Lease>>>,
}

#[derive(Default)]
struct Lease {
    window: i64,
    remaining: i64,
    exhausted: bool,
}

/// Tokens taken per statement: small against the limit (the tolerance), large enough that a busy limit
/// costs few statements.
pub fn lease_size(limit: u32) -> i64 {
    i64::from(limit.div_ceil(32)).clamp(1, 1024)
}

/// The current minute (since the Unix epoch) and the seconds left in it (at least 1).
fn current_window() -> (i64, u64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    ((secs / 60) as i64, (60 - secs % 60).max(1))
}

/// The decision for one request against one limit, given what this replica holds. Pure: the caller
/// asks PostgreSQL for a lease only when this says [`LeaseStep::Refill`].
#[derive(Debug, PartialEq, Eq)]
enum LeaseStep {
    Admit,
    Refuse,
    Refill,
}

fn lease_step(lease: &mut Lease, window: i64) -> LeaseStep {
    if lease.window != window {
        *lease = Lease { window, remaining: 0, exhausted: false };
    }
    if lease.remaining > 0 {
        lease.remaining -= 1;
        LeaseStep::Admit
    } else if lease.exhausted {
        LeaseStep::Refuse
    } else {
        LeaseStep::Refill
    }
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
            default_limit: config.per_tenant_per_minute,
            overridden_limits: config.tenant_overrides.clone(),
            // Keys idle for ten minutes are forgotten; their allowance is full again by then anyway.
            per_key: Cache::builder().max_capacity(100_000).time_to_idle(Duration::from_secs(600)).build(),
            rejected,
            shared: None,
            public_read: None,
        }
    }

    /// Limits the reads of public transparency logs without a credential to `per_second` in this
    /// process (`None`: no limit). They have no tenant to charge, so they share one allowance.
    ///
    /// NB: per process, not deployment-wide like the tenant limits: it protects this replica's database
    /// connections from anonymous load, and answering it costs no statement. A public log that many
    /// read belongs behind a cache (full tiles are immutable and served with a year's `max-age`).
    pub fn with_public_read(mut self, per_second: Option<NonZeroU32>) -> Self {
        self.public_read = per_second.map(|n| RateLimiter::direct(Quota::per_second(n)));
        self
    }

    /// Admits one read of a public log without a credential, or answers 429 with `Retry-After`.
    pub fn check_public_read(&self) -> Result<()> {
        match self.public_read.as_ref().map(|l| l.check()) {
            Some(Err(not_until)) => Err(self.refuse("public_read", not_until.wait_time_from(self.clock.now()))),
            _ => Ok(()),
        }
    }

    /// Makes the limits hold across every replica that uses this database (see the module doc).
    pub fn shared_through(mut self, store: Store) -> Self {
        let leases = Cache::builder().max_capacity(100_000).time_to_idle(Duration::from_secs(180)).build();
        self.shared = Some(SharedLimits { store, leases });
        self
    }

    /// The limits that apply to this caller: (scope, limit key, per minute).
    fn applicable(&self, caller: &Caller) -> Vec<(&'static str, String, u32)> {
        let mut out = Vec::with_capacity(2);
        let tenant = caller.tenant_id;
        let tenant_limit = self.overridden_limits.get(&tenant).copied().or(self.default_limit);
        if let Some(n) = tenant_limit {
            out.push(("tenant", format!("tenant:{tenant}:{n}"), n.get()));
        }
        if let (Some(id), Some(limit)) = (caller.api_key_id, caller.rate_limit.and_then(NonZeroU32::new)) {
            out.push(("api_key", format!("key:{id}:{limit}"), limit.get()));
        }
        out
    }

    /// Admits the request or answers why not: through the shared counters when configured, else (or
    /// while the database is unreachable) with this process's own limiters.
    pub async fn check(&self, caller: &Caller) -> Result<()> {
        let Some(shared) = &self.shared else {
            return self.check_local(caller);
        };
        for (scope, key, limit) in self.applicable(caller) {
            let lease = shared.leases.get_with(key.clone(), || Arc::new(tokio::sync::Mutex::new(Lease::default())));
            let mut lease = lease.lock().await;
            let (window, left) = current_window();
            match lease_step(&mut lease, window) {
                LeaseStep::Admit => {}
                LeaseStep::Refuse => return Err(self.refuse(scope, Duration::from_secs(left))),
                LeaseStep::Refill => {
                    match shared.store.take_rate_limit_tokens(&key, window, i64::from(limit), lease_size(limit)).await {
                        Ok(0) => {
                            lease.exhausted = true;
                            return Err(self.refuse(scope, Duration::from_secs(left)));
                        }
                        Ok(granted) => lease.remaining = granted - 1,
                        Err(e) => {
                            tracing::warn!(error = %e, "shared rate-limit counter unavailable; limiting per process");
                            drop(lease);
                            return self.check_local(caller);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn refuse(&self, scope: &'static str, wait: Duration) -> Error {
        self.rejected.get_or_create(&ScopeLabels { scope: scope.to_string() }).inc();
        Error::RateLimited { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 }
    }

    /// This process's own GCRA limiters.
    fn check_local(&self, caller: &Caller) -> Result<()> {
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
            limits.check_local(&t).unwrap();
        }
        match limits.check_local(&t) {
            Err(Error::RateLimited { retry_after_secs }) => assert!((1..=20).contains(&retry_after_secs)),
            other => panic!("expected 429, got {other:?}"),
        }
        // Another tenant has its own allowance.
        limits.check_local(&caller(Uuid::new_v4())).unwrap();
    }

    #[test]
    fn reads_of_public_logs_share_one_allowance_per_second_and_none_means_no_limit() {
        let rejected = Family::<ScopeLabels, Counter>::default();
        let limits =
            RateLimiters::new(&RateLimitConfig::default(), rejected.clone()).with_public_read(NonZeroU32::new(2));
        limits.check_public_read().unwrap();
        limits.check_public_read().unwrap();
        match limits.check_public_read() {
            Err(Error::RateLimited { retry_after_secs }) => assert_eq!(retry_after_secs, 1),
            other => panic!("expected 429, got {other:?}"),
        }
        assert_eq!(rejected.get_or_create(&ScopeLabels { scope: "public_read".into() }).get(), 1);
        // Tenants' own allowances are not this one.
        limits.check_local(&caller(Uuid::new_v4())).unwrap();
        let unlimited = RateLimiters::new(&RateLimitConfig::default(), Family::default()).with_public_read(None);
        for _ in 0..1000 {
            unlimited.check_public_read().unwrap();
        }
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
            limits.check_local(&caller(big)).unwrap();
        }
        let keyed = Caller { rate_limit: Some(2), api_key_id: Some(Uuid::new_v4()), ..caller(big) };
        limits.check_local(&keyed).unwrap();
        limits.check_local(&keyed).unwrap();
        assert!(matches!(limits.check_local(&keyed), Err(Error::RateLimited { .. })));
    }

    #[test]
    fn a_lease_is_spent_locally_then_refilled_and_a_used_up_minute_refuses_until_it_ends() {
        let mut lease = Lease::default();
        assert_eq!(lease_step(&mut lease, 10), LeaseStep::Refill);
        lease.remaining = 2;
        assert_eq!(lease_step(&mut lease, 10), LeaseStep::Admit);
        assert_eq!(lease_step(&mut lease, 10), LeaseStep::Admit);
        assert_eq!(lease_step(&mut lease, 10), LeaseStep::Refill);
        lease.exhausted = true;
        assert_eq!(lease_step(&mut lease, 10), LeaseStep::Refuse);
        // A new minute forgets both the leftover tokens and the refusal.
        lease.remaining = 5;
        assert_eq!(lease_step(&mut lease, 11), LeaseStep::Refill);
        assert_eq!(lease.remaining, 0);
    }

    #[test]
    fn leases_are_a_small_share_of_the_limit() {
        assert_eq!(lease_size(1), 1);
        assert_eq!(lease_size(60), 2);
        assert_eq!(lease_size(6000), 188);
        assert_eq!(lease_size(1_000_000), 1024);
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
