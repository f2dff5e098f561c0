//! The transparency log's series (registered with the sequencer's registry, `sequencer_tlog_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Which witness (its key name).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WitnessLabels {
    pub witness: String,
}

pub struct TlogMetrics {
    pub integrated_events: Counter,
    pub integration_failures: Counter,
    /// From an event's `sequenced_at` (its receipt) to the commit of a signed checkpoint covering it.
    pub integration_delay: Histogram,
    pub witness_cosignatures: Family<WitnessLabels, Counter>,
    pub witness_failures: Family<WitnessLabels, Counter>,
    /// 1 when the witness's last answer was a cosignature, 0 when it refused or was unreachable.
    pub witness_up: Family<WitnessLabels, Gauge>,
}

impl TlogMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = TlogMetrics {
            integrated_events: Counter::default(),
            integration_failures: Counter::default(),
            integration_delay: Histogram::new([0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0]),
            witness_cosignatures: Family::default(),
            witness_failures: Family::default(),
            witness_up: Family::default(),
        };
        registry.register(
            "tlog_integrated_events",
            "Events appended to their stream's transparency log",
            m.integrated_events.clone(),
        );
        registry.register(
            "tlog_integration_failures",
            "Failed transparency log integrations (retried next round)",
            m.integration_failures.clone(),
        );
        registry.register(
            "tlog_integration_delay_seconds",
            "Time from an event's sequencing to a signed transparency log checkpoint covering it",
            m.integration_delay.clone(),
        );
        registry.register(
            "tlog_witness_cosignatures",
            "Cosignatures received, by witness",
            m.witness_cosignatures.clone(),
        );
        registry.register(
            "tlog_witness_failures",
            "Checkpoints a witness refused or could not be reached for, by witness",
            m.witness_failures.clone(),
        );
        registry.register(
            "tlog_witness_up",
            "1 when the witness cosigned the last checkpoint sent",
            m.witness_up.clone(),
        );
        m
    }
}
