//! The circuit breaker that guards the L2 RPC endpoint.
//!
//! Owns the breaker state machine and its counters; it knows nothing about RPC. It must never sleep
//! or block: a rejected call returns at once with the time left until a trial call is admitted.
//!
//! States: `closed` (calls pass; `failure_threshold` consecutive failures open the circuit) →
//! `open` (calls are rejected until `open_timeout` has elapsed) → `half_open` (one trial call at a
//! time; `success_threshold` consecutive successes close the circuit, any failure reopens it).
//! A success in `closed` resets the consecutive-failure count: unlike the existing service
//! (ves-wire.md §10 item 21), failures separated by successes never add up to an open circuit.
//!
//! NB: written here rather than taken from a crate. `failsafe` (the maintained candidate) admits
//! every call in half-open and closes on the first success (no success threshold, no single trial),
//! keeps its state private (observable only through callbacks), and cannot say how long a rejected
//! caller should wait; the status endpoint and metrics need all three. The machine is ~150 lines.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The state of the circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls pass through; consecutive failures are counted.
    Closed,
    /// Calls are rejected without touching the network until the open timeout has elapsed.
    Open,
    /// One trial call at a time is admitted to probe whether the endpoint has recovered.
    HalfOpen,
}

impl CircuitState {
    /// The state's stable name for logs, JSON status and metric labels: `closed`, `open`, `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// The state as a gauge value, ordered by severity: closed 0, half_open 1, open 2.
    pub fn as_gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When the circuit opens and how it recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failed calls in `closed` that open the circuit (default 5).
    pub failure_threshold: u32,
    /// Consecutive successful trial calls in `half_open` that close the circuit (default 2).
    pub success_threshold: u32,
    /// How long an open circuit rejects calls before admitting a trial call (default 60 s).
    pub open_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failure_threshold: 5, success_threshold: 2, open_timeout: Duration::from_secs(60) }
    }
}

/// A point-in-time view of the breaker, for metrics and the admin status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitSnapshot {
    /// The current state. An open circuit whose timeout has elapsed still reads `open` until the
    /// next call turns it `half_open`.
    pub state: CircuitState,
    /// Failed calls since the last success (or since the circuit last closed).
    pub consecutive_failures: u32,
    /// State changes since the breaker was created.
    pub transitions_total: u64,
    /// Times the circuit opened (from `closed` or from a failed trial in `half_open`).
    pub opened_total: u64,
    /// Calls rejected without being attempted.
    pub rejected_total: u64,
}

/// A source of monotonic time, so that tests can drive the breaker with a fake clock.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A thread-safe circuit breaker. Obtain a [`Permit`] with [`CircuitBreaker::try_acquire`] before each
/// call and report the outcome on it.
pub struct CircuitBreaker {
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: CircuitState,
    consecutive_failures: u32,
    half_open_successes: u32,
    opened_at: Instant,
    trial_in_flight: bool,
    transitions_total: u64,
    opened_total: u64,
    rejected_total: u64,
}

impl CircuitBreaker {
    /// A closed breaker on the real clock.
    pub fn new(config: BreakerConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A closed breaker on the given clock.
    pub fn with_clock(config: BreakerConfig, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        Self {
            config,
            clock,
            inner: Mutex::new(Inner {
                state: CircuitState::Closed,
                consecutive_failures: 0,
                half_open_successes: 0,
                opened_at: now,
                trial_in_flight: false,
                transitions_total: 0,
                opened_total: 0,
                rejected_total: 0,
            }),
        }
    }

    /// The configuration this breaker runs with.
    pub fn config(&self) -> BreakerConfig {
        self.config
    }

    /// Asks to make one call. `Err(retry_in)` means rejected: the circuit is open (for `retry_in`
    /// more) or a half-open trial call is already in flight (then `retry_in` is the open timeout,
    /// a conservative hint that keeps callers from spinning).
    pub fn try_acquire(&self) -> Result<Permit<'_>, Duration> {
        let mut inner = self.lock();
        match inner.state {
            CircuitState::Closed => Ok(Permit { breaker: self, trial: false, done: false }),
            CircuitState::Open => {
                let elapsed = self.clock.now().saturating_duration_since(inner.opened_at);
                if elapsed >= self.config.open_timeout {
                    inner.transition(CircuitState::HalfOpen);
                    inner.half_open_successes = 0;
                    inner.trial_in_flight = true;
                    Ok(Permit { breaker: self, trial: true, done: false })
                } else {
                    inner.rejected_total += 1;
                    Err(self.config.open_timeout - elapsed)
                }
            }
            CircuitState::HalfOpen if !inner.trial_in_flight => {
                inner.trial_in_flight = true;
                Ok(Permit { breaker: self, trial: true, done: false })
            }
            CircuitState::HalfOpen => {
                inner.rejected_total += 1;
                Err(self.config.open_timeout)
            }
        }
    }

    /// The current state and counters.
    pub fn snapshot(&self) -> CircuitSnapshot {
        let inner = self.lock();
        CircuitSnapshot {
            state: inner.state,
            consecutive_failures: inner.consecutive_failures,
            transitions_total: inner.transitions_total,
            opened_total: inner.opened_total,
            rejected_total: inner.rejected_total,
        }
    }

    fn record(&self, trial: bool, success: bool) {
        let mut inner = self.lock();
        if trial {
            inner.trial_in_flight = false;
        }
        match (inner.state, success) {
            (CircuitState::Closed, true) => inner.consecutive_failures = 0,
            (CircuitState::Closed, false) => {
                inner.consecutive_failures += 1;
                if inner.consecutive_failures >= self.config.failure_threshold {
                    self.open(&mut inner);
                }
            }
            // Only the trial's outcome moves a half-open circuit; a call admitted while the circuit
            // was still closed and finishing late says nothing about the recovery.
            (CircuitState::HalfOpen, true) if trial => {
                inner.half_open_successes += 1;
                if inner.half_open_successes >= self.config.success_threshold {
                    inner.transition(CircuitState::Closed);
                    inner.consecutive_failures = 0;
                }
            }
            (CircuitState::HalfOpen, false) if trial => {
                inner.consecutive_failures += 1;
                self.open(&mut inner);
            }
            // Late outcomes of calls admitted before the circuit opened.
            (CircuitState::HalfOpen, _) | (CircuitState::Open, _) => {}
        }
    }

    fn release_trial(&self) {
        self.lock().trial_in_flight = false;
    }

    fn open(&self, inner: &mut Inner) {
        inner.transition(CircuitState::Open);
        inner.opened_total += 1;
        inner.opened_at = self.clock.now();
        inner.half_open_successes = 0;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // NB: no code path panics while holding the lock; recover the data if one ever does.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn transition(&mut self, to: CircuitState) {
        if self.state != to {
            self.state = to;
            self.transitions_total += 1;
        }
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker").field("config", &self.config).field("snapshot", &self.snapshot()).finish()
    }
}

/// Permission to make one call. Report the outcome with [`Permit::success`] or [`Permit::failure`];
/// dropping it unreported (the call was cancelled) frees a half-open trial slot and counts nothing.
#[must_use = "report the call's outcome with success() or failure()"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    trial: bool,
    done: bool,
}

impl Permit<'_> {
    /// The call succeeded (the endpoint answered).
    pub fn success(mut self) {
        self.done = true;
        self.breaker.record(self.trial, true);
    }

    /// The call failed (the endpoint could not be reached or did not answer properly).
    pub fn failure(mut self) {
        self.done = true;
        self.breaker.record(self.trial, false);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done && self.trial {
            self.breaker.release_trial();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock that only moves when told to.
    struct FakeClock(Mutex<Instant>);

    impl FakeClock {
        fn new() -> Arc<Self> {
            Arc::new(Self(Mutex::new(Instant::now())))
        }
        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(60);

    fn breaker() -> (CircuitBreaker, Arc<FakeClock>) {
        let clock = FakeClock::new();
        let config = BreakerConfig { failure_threshold: 3, success_threshold: 2, open_timeout: TIMEOUT };
        (CircuitBreaker::with_clock(config, clock.clone()), clock)
    }

    fn fail(b: &CircuitBreaker, times: u32) {
        for _ in 0..times {
            b.try_acquire().expect("call admitted").failure();
        }
    }

    fn succeed(b: &CircuitBreaker) {
        b.try_acquire().expect("call admitted").success();
    }

    #[test]
    fn a_new_breaker_is_closed_with_zero_counters() {
        let (b, _) = breaker();
        assert_eq!(
            b.snapshot(),
            CircuitSnapshot {
                state: CircuitState::Closed,
                consecutive_failures: 0,
                transitions_total: 0,
                opened_total: 0,
                rejected_total: 0
            }
        );
    }

    #[test]
    fn the_circuit_opens_after_failure_threshold_consecutive_failures() {
        let (b, _) = breaker();
        fail(&b, 2);
        assert_eq!(b.snapshot().state, CircuitState::Closed);
        assert_eq!(b.snapshot().consecutive_failures, 2);
        fail(&b, 1);
        let s = b.snapshot();
        assert_eq!(s.state, CircuitState::Open);
        assert_eq!((s.opened_total, s.transitions_total), (1, 1));
    }

    #[test]
    fn a_success_resets_the_consecutive_failures_so_scattered_failures_never_open_the_circuit() {
        let (b, _) = breaker();
        for _ in 0..10 {
            fail(&b, 2);
            succeed(&b);
            assert_eq!(b.snapshot().consecutive_failures, 0);
        }
        assert_eq!(b.snapshot().state, CircuitState::Closed);
        assert_eq!(b.snapshot().opened_total, 0);
    }

    #[test]
    fn an_open_circuit_rejects_calls_with_the_time_left_until_the_timeout() {
        let (b, clock) = breaker();
        fail(&b, 3);
        assert_eq!(b.try_acquire().err(), Some(TIMEOUT));
        clock.advance(Duration::from_secs(45));
        assert_eq!(b.try_acquire().err(), Some(Duration::from_secs(15)));
        assert_eq!(b.snapshot().rejected_total, 2);
        assert_eq!(b.snapshot().state, CircuitState::Open);
    }

    #[test]
    fn after_the_open_timeout_one_trial_call_is_admitted_and_others_are_rejected() {
        let (b, clock) = breaker();
        fail(&b, 3);
        clock.advance(TIMEOUT);
        let trial = b.try_acquire().expect("trial admitted");
        assert_eq!(b.snapshot().state, CircuitState::HalfOpen);
        assert!(b.try_acquire().is_err(), "a second concurrent call must wait for the trial");
        trial.success();
        assert!(b.try_acquire().is_ok(), "the next trial is admitted once the first one finished");
    }

    #[test]
    fn success_threshold_successful_trials_close_the_circuit() {
        let (b, clock) = breaker();
        fail(&b, 3);
        clock.advance(TIMEOUT);
        succeed(&b);
        assert_eq!(b.snapshot().state, CircuitState::HalfOpen);
        succeed(&b);
        let s = b.snapshot();
        assert_eq!(s.state, CircuitState::Closed);
        assert_eq!(s.consecutive_failures, 0);
        // closed -> open -> half_open -> closed
        assert_eq!(s.transitions_total, 3);
    }

    #[test]
    fn a_failed_trial_reopens_the_circuit_for_another_full_timeout() {
        let (b, clock) = breaker();
        fail(&b, 3);
        clock.advance(TIMEOUT);
        succeed(&b);
        fail(&b, 1);
        let s = b.snapshot();
        assert_eq!(s.state, CircuitState::Open);
        assert_eq!(s.opened_total, 2);
        assert_eq!(b.try_acquire().err(), Some(TIMEOUT));
    }

    #[test]
    fn a_cancelled_trial_frees_the_slot_without_counting() {
        let (b, clock) = breaker();
        fail(&b, 3);
        clock.advance(TIMEOUT);
        drop(b.try_acquire().expect("trial admitted"));
        assert_eq!(b.snapshot().state, CircuitState::HalfOpen);
        assert!(b.try_acquire().is_ok());
    }

    #[test]
    fn late_outcomes_of_calls_admitted_before_the_circuit_opened_do_not_move_it() {
        let (b, clock) = breaker();
        let late_failure = b.try_acquire().unwrap();
        let late_success = b.try_acquire().unwrap();
        fail(&b, 3);
        late_failure.failure();
        late_success.success();
        assert_eq!(b.snapshot().state, CircuitState::Open);
        assert_eq!(b.snapshot().opened_total, 1);
        clock.advance(TIMEOUT);
        let trial = b.try_acquire().unwrap();
        let s = b.snapshot();
        trial.success();
        assert_eq!(s.state, CircuitState::HalfOpen);
    }

    #[test]
    fn state_names_and_gauge_values_are_stable() {
        let all = [CircuitState::Closed, CircuitState::HalfOpen, CircuitState::Open];
        assert_eq!(all.map(CircuitState::as_str), ["closed", "half_open", "open"]);
        assert_eq!(all.map(CircuitState::as_gauge), [0, 1, 2]);
        assert_eq!(CircuitState::HalfOpen.to_string(), "half_open");
    }

    #[test]
    fn the_default_config_matches_the_existing_service() {
        let c = BreakerConfig::default();
        assert_eq!((c.failure_threshold, c.success_threshold, c.open_timeout), (5, 2, Duration::from_secs(60)));
    }
}
