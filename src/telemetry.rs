//! Metrics: every name in one place, described once at start-up, with
//! bounded labels only (topic, reason, kind; never a customer id), and the
//! Prometheus endpoint. Hot paths hold pre-registered handles
//! ([`PipelineMetrics`]) instead of looking metrics up per event.

use metrics::{Counter, Gauge, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::decode::Reason;
use crate::event::InputTopic;

/// Input records read, by `topic` (clickstream, purchases).
pub const RECORDS_IN: &str = "engage_records_in_total";
/// Events of unknown clickstream types (accepted, no effect), by `topic`.
pub const UNKNOWN_TYPES: &str = "engage_unknown_event_types_total";
/// Records sent to the dead-letter topic, by `reason` (SPEC §3 codes).
pub const DEAD_LETTERS: &str = "engage_dead_letters_total";
/// Records already reflected in state (skipped), by `topic`.
pub const DUPLICATES: &str = "engage_duplicates_total";
/// Messages published, by `kind` (score, alert).
pub const OUTPUTS: &str = "engage_outputs_total";
/// Outputs sent and not yet acknowledged by the broker.
pub const IN_FLIGHT: &str = "engage_producer_in_flight";
/// Customers held in memory on this instance.
pub const CUSTOMERS: &str = "engage_customers";
/// Churn alerts published, by `kind` (at_risk, dormant, reactivated).
pub const ALERTS: &str = "engage_alerts_total";
/// Consumer-group rebalances seen, by `kind` (assign, revoke).
pub const REBALANCES: &str = "engage_rebalances_total";
/// Input partitions currently assigned and restored.
pub const ASSIGNED_PARTITIONS: &str = "engage_assigned_partitions";
/// Changelog records read while restoring partitions.
pub const RESTORE_RECORDS: &str = "engage_restore_records_total";
/// Time each partition restore took.
pub const RESTORE_DURATION: &str = "engage_restore_duration_seconds";

/// Describes every metric (help text in `/metrics`).
pub fn describe() {
    describe_counter!(RECORDS_IN, "Input records read, by topic.");
    describe_counter!(UNKNOWN_TYPES, "Events of unknown clickstream types: accepted, counted, no effect.");
    describe_counter!(DEAD_LETTERS, "Records sent to the dead-letter topic, by reason code.");
    describe_counter!(DUPLICATES, "Records already reflected in state and skipped, by topic.");
    describe_counter!(OUTPUTS, "Score changes and churn alerts published, by kind.");
    describe_gauge!(IN_FLIGHT, "Outputs sent and not yet acknowledged by the broker.");
    describe_gauge!(CUSTOMERS, "Customers held in memory on this instance.");
    describe_counter!(ALERTS, "Churn alerts published, by kind.");
    describe_counter!(REBALANCES, "Consumer-group rebalances, by kind (assign, revoke).");
    describe_gauge!(ASSIGNED_PARTITIONS, "Input partitions currently assigned and restored.");
    describe_counter!(RESTORE_RECORDS, "Changelog records read while restoring partitions.");
    metrics::describe_histogram!(RESTORE_DURATION, metrics::Unit::Seconds, "Time each partition restore took.");
}

/// Installs the Prometheus recorder; the handle renders `/metrics`
/// ([`crate::http`]).
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    describe();
    Ok(handle)
}

/// Pre-registered handles for the pipeline's per-record counters.
pub struct PipelineMetrics {
    records_in: [Counter; 2],
    unknown_types: [Counter; 2],
    duplicates: [Counter; 2],
    dead_letters: Vec<(Reason, Counter)>,
    /// Score changes published.
    pub scores: Counter,
    /// Alerts published.
    pub alerts: Counter,
    /// Alerts by kind: at_risk, dormant, reactivated.
    pub alerts_by_kind: [Counter; 3],
    /// Unacknowledged outputs.
    pub in_flight: Gauge,
    /// Customers held.
    pub customers: Gauge,
}

fn by_topic(name: &'static str) -> [Counter; 2] {
    [counter!(name, "topic" => "clickstream"), counter!(name, "topic" => "purchases")]
}

impl PipelineMetrics {
    /// Registers the handles (with whatever recorder is installed; a no-op
    /// without one).
    pub fn new() -> Self {
        PipelineMetrics {
            records_in: by_topic(RECORDS_IN),
            unknown_types: by_topic(UNKNOWN_TYPES),
            duplicates: by_topic(DUPLICATES),
            dead_letters: Reason::ALL.iter().map(|r| (*r, counter!(DEAD_LETTERS, "reason" => r.as_str()))).collect(),
            scores: counter!(OUTPUTS, "kind" => "score"),
            alerts: counter!(OUTPUTS, "kind" => "alert"),
            alerts_by_kind: [
                counter!(ALERTS, "kind" => "at_risk"),
                counter!(ALERTS, "kind" => "dormant"),
                counter!(ALERTS, "kind" => "reactivated"),
            ],
            in_flight: gauge!(IN_FLIGHT),
            customers: gauge!(CUSTOMERS),
        }
    }

    /// One input record read.
    pub fn record_in(&self, topic: InputTopic) {
        self.records_in[topic.index()].increment(1);
    }

    /// One event of an unknown type.
    pub fn unknown_type(&self, topic: InputTopic) {
        self.unknown_types[topic.index()].increment(1);
    }

    /// One duplicate skipped.
    pub fn duplicate(&self, topic: InputTopic) {
        self.duplicates[topic.index()].increment(1);
    }

    /// One alert published.
    pub fn alert(&self, kind: crate::output::AlertKind) {
        let i = match kind {
            crate::output::AlertKind::AtRisk => 0,
            crate::output::AlertKind::Dormant => 1,
            crate::output::AlertKind::Reactivated => 2,
        };
        self.alerts_by_kind[i].increment(1);
    }

    /// One dead letter.
    pub fn dead_letter(&self, reason: Reason) {
        if let Some((_, c)) = self.dead_letters.iter().find(|(r, _)| *r == reason) {
            c.increment(1);
        }
    }
}

impl Default for PipelineMetrics {
    fn default() -> Self {
        Self::new()
    }
}
