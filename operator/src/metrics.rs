//! The operator's own metrics, registered once in a typed struct.
//!
//! Names (Prometheus text): `sequencer_operator_reconciliations_total{controller}`,
//! `sequencer_operator_reconcile_failures_total{controller,error}`,
//! `sequencer_operator_reconcile_duration_seconds{controller}` and `sequencer_operator_leader`.

use std::time::Instant;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::Error;

/// Which controller a measurement belongs to.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Controller {
    #[allow(non_camel_case_types)]
    sequencer,
    #[allow(non_camel_case_types)]
    sequencer_action,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: Controller,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    controller: Controller,
    error: &'static str,
}

/// Reconcile counts, failures and durations of both controllers.
pub struct Metrics {
    registry: Registry,
    runs: Family<ControllerLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<ControllerLabels, Histogram>,
    leader: Gauge<i64, std::sync::atomic::AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sequencer_operator");
        let runs = Family::<ControllerLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        let leader = Gauge::default();
        registry.register("reconciliations", "Reconciles started", runs.clone());
        registry.register("reconcile_failures", "Reconciles that returned an error, by error kind", failures.clone());
        registry.register("reconcile_duration_seconds", "Duration of reconciles", duration.clone());
        registry.register(
            "leader",
            "1 while this replica holds the leader lease and runs the controllers",
            leader.clone(),
        );
        Self { registry, runs, failures, duration, leader }
    }
}

impl Metrics {
    /// Counts a reconcile of `controller` and measures it until the returned guard drops.
    pub fn reconcile(&self, controller: Controller) -> ReconcileTimer {
        self.runs.get_or_create(&ControllerLabels { controller }).inc();
        ReconcileTimer {
            histogram: self.duration.get_or_create(&ControllerLabels { controller }).clone(),
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile of `controller`.
    pub fn failure(&self, controller: Controller, error: &Error) {
        self.failures.get_or_create(&FailureLabels { controller, error: error.metric_label() }).inc();
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Reconciles started for `controller` (for tests).
    pub fn runs(&self, controller: Controller) -> u64 {
        self.runs.get_or_create(&ControllerLabels { controller }).get()
    }
}

/// Observes the duration of one reconcile when dropped.
pub struct ReconcileTimer {
    histogram: Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_with_the_operator_prefix_and_controller_label() {
        let metrics = Metrics::default();
        drop(metrics.reconcile(Controller::sequencer));
        metrics.failure(
            Controller::sequencer_action,
            &Error::Secret { namespace: "n".into(), name: "s".into(), reason: "r".into() },
        );
        metrics.set_leader(true);
        let text = metrics.encode();
        assert!(text.contains("sequencer_operator_reconciliations_total{controller=\"sequencer\"} 1"));
        assert!(text.contains(
            "sequencer_operator_reconcile_failures_total{controller=\"sequencer_action\",error=\"secret\"} 1"
        ));
        assert!(text.contains("sequencer_operator_reconcile_duration_seconds_count{controller=\"sequencer\"} 1"));
        assert!(text.contains("sequencer_operator_leader 1"));
    }
}
