//! Metrics: every name in one place, described once at start-up, with
//! bounded labels only (topic, reason, kind; never a customer id), and the
//! Prometheus endpoint. Hot paths hold pre-registered handles
//! ([`PipelineMetrics`]) instead of looking metrics up per event.

pub(crate) mod events;

use std::collections::BTreeSet;
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::decode::Reason;
use crate::engine::churn::Health;
use crate::engine::event::EventKind;
use crate::engine::lifecycle::Stage;
use crate::engine::store::Store;
use crate::vocab::{ClickKind, InputKind};

/// Input records read, by `topic` (clickstream, purchases).
pub const RECORDS_IN: &str = "engage_records_in_total";
/// Valid events decoded, by `topic` and event `type` (page_view, ...,
/// purchase, refund; `unknown` for unknown clickstream types).
pub const EVENTS: &str = "engage_events_total";
/// Input record consumed → each of its outputs acknowledged by the broker.
pub const PROCESSING_LATENCY: &str = "engage_processing_latency_seconds";
/// Input record's Kafka timestamp (when it was produced) → each of its
/// outputs acknowledged: what a downstream consumer experiences.
pub const END_TO_END_LATENCY: &str = "engage_end_to_end_latency_seconds";
/// Records behind the committed offset, by `topic` and `partition`, from
/// librdkafka statistics (`statistics.interval.ms`).
pub const CONSUMER_LAG: &str = "engage_consumer_lag";
/// Customers by lifecycle `stage`, from the periodic census.
pub const CUSTOMERS_BY_STAGE: &str = "engage_customers_by_stage";
/// Customers by churn `health`, from the periodic census.
pub const CUSTOMERS_BY_HEALTH: &str = "engage_customers_by_health";
/// Customers by last published composite score, in ten-point `band`s
/// (`0-10`, …, `90-100`), from the periodic census: the score distribution.
pub const CUSTOMERS_BY_SCORE: &str = "engage_customers_by_score_band";
/// Time one sweep tick took (all owned partitions, one slice).
pub const SWEEP_DURATION: &str = "engage_sweep_duration_seconds";
/// Resident set size of the process.
pub const RESIDENT_MEMORY: &str = "engage_process_resident_memory_bytes";
/// Messages in the producer's queues (librdkafka statistics).
pub const PRODUCER_QUEUE: &str = "engage_producer_queue_messages";
/// 1 when `/readyz` would answer 200 (joined, nothing restoring), else 0.
pub const READY: &str = "engage_ready";
/// Partitions whose state is being restored from the changelog right now.
pub const RESTORING: &str = "engage_restoring_partitions";
/// Output, dead-letter and changelog records the broker refused, by
/// `topic`. Any is fatal: engage stops without committing past it.
pub const DELIVERY_ERRORS: &str = "engage_producer_delivery_errors_total";
/// Events of unknown clickstream types (accepted, no effect), by `topic`.
pub const UNKNOWN_TYPES: &str = "engage_unknown_event_types_total";
/// Records sent to the dead-letter topic, by `reason` (docs/model.md "Events" codes).
pub const DEAD_LETTERS: &str = "engage_dead_letters_total";
/// Records already reflected in state (skipped), by `topic`.
pub const DUPLICATES: &str = "engage_duplicates_total";
/// Counter: events at or before the bootstrap's as-of, skipped as already
/// in the restored state, by topic.
pub const BOOTSTRAPPED: &str = "engage_bootstrapped_events_total";
/// Messages published, by `kind` (score, alert).
pub const OUTPUTS: &str = "engage_outputs_total";
/// Outputs sent and not yet acknowledged by the broker.
pub const IN_FLIGHT: &str = "engage_producer_in_flight";
/// Customers held in memory on this instance, by input `partition`.
pub const CUSTOMERS: &str = "engage_customers";
/// Churn alerts published, by `kind` (at_risk, dormant, reactivated).
pub const ALERTS: &str = "engage_alerts_total";
/// Consumer-group rebalances seen, by `kind` (assign, revoke).
pub const REBALANCES: &str = "engage_rebalances_total";
/// Input partitions currently assigned and restored.
pub const ASSIGNED_PARTITIONS: &str = "engage_assigned_partitions";
/// Changelog records written (states and tombstones).
pub const CHANGELOG_WRITES: &str = "engage_changelog_records_written_total";
/// Changelog records read while restoring partitions.
pub const RESTORE_RECORDS: &str = "engage_restore_records_total";
/// Time each partition restore took.
pub const RESTORE_DURATION: &str = "engage_restore_duration_seconds";
/// Times consumption was paused or resumed by backpressure, by `state`
/// (paused, resumed).
pub const BACKPRESSURE: &str = "engage_backpressure_total";
/// Times a partition pair stopped waiting for a lagging input after
/// `run.alignment_wait` and went on without it.
pub const ALIGNMENT_TIMEOUTS: &str = "engage_alignment_timeouts_total";
/// Input records held to be applied in event-time order.
pub const ALIGNMENT_HELD: &str = "engage_alignment_held_records";
/// Erasure requests applied (docs/model.md "Erasure").
pub const ERASURES: &str = "engage_erasures_total";
/// Events ignored because their customer was erased after them.
pub const BEFORE_ERASURE: &str = "engage_events_before_erasure_total";

/// Describes every metric (help text in `/metrics`).
pub fn describe() {
    describe_counter!(RECORDS_IN, "Input records read, by topic.");
    describe_counter!(UNKNOWN_TYPES, "Events of unknown clickstream types: accepted, counted, no effect.");
    describe_counter!(DEAD_LETTERS, "Records sent to the dead-letter topic, by reason code.");
    describe_counter!(DUPLICATES, "Records already reflected in state and skipped, by topic.");
    describe_counter!(
        BOOTSTRAPPED,
        "Events at or before the bootstrap's as-of, already in the restored state and skipped, by topic."
    );
    describe_counter!(OUTPUTS, "Score changes and churn alerts published, by kind.");
    describe_gauge!(IN_FLIGHT, "Outputs sent and not yet acknowledged by the broker.");
    describe_gauge!(CUSTOMERS, "Customers held in memory on this instance, by partition.");
    describe_counter!(EVENTS, "Valid events decoded, by topic and event type.");
    describe_histogram!(
        PROCESSING_LATENCY,
        Unit::Seconds,
        "Input record consumed to each of its outputs acknowledged."
    );
    describe_histogram!(
        END_TO_END_LATENCY,
        Unit::Seconds,
        "Input record produced (its Kafka timestamp) to each of its outputs acknowledged."
    );
    describe_gauge!(CONSUMER_LAG, "Records behind the committed offset, by topic and partition.");
    describe_gauge!(CUSTOMERS_BY_STAGE, "Customers by lifecycle stage (periodic census).");
    describe_gauge!(CUSTOMERS_BY_HEALTH, "Customers by churn health (periodic census).");
    describe_gauge!(CUSTOMERS_BY_SCORE, "Customers by last published score, ten-point bands (periodic census).");
    describe_histogram!(SWEEP_DURATION, Unit::Seconds, "Time one sweep tick took.");
    describe_gauge!(RESIDENT_MEMORY, Unit::Bytes, "Resident set size of the process.");
    describe_gauge!(PRODUCER_QUEUE, "Messages in the producer's queues.");
    describe_gauge!(READY, "1 when ready (joined the group, nothing restoring), else 0.");
    describe_gauge!(RESTORING, "Partitions being restored from the changelog right now.");
    describe_counter!(DELIVERY_ERRORS, "Records the broker refused, by topic; fatal.");
    describe_counter!(ALERTS, "Churn alerts published, by kind.");
    describe_counter!(REBALANCES, "Consumer-group rebalances, by kind (assign, revoke).");
    describe_gauge!(ASSIGNED_PARTITIONS, "Input partitions currently assigned and restored.");
    describe_counter!(CHANGELOG_WRITES, "Changelog records written: customer states and tombstones.");
    describe_counter!(RESTORE_RECORDS, "Changelog records read while restoring partitions.");
    describe_histogram!(RESTORE_DURATION, Unit::Seconds, "Time each partition restore took.");
    describe_counter!(BACKPRESSURE, "Times consumption was paused (too many outputs in flight) or resumed, by state.");
    describe_counter!(
        ALIGNMENT_TIMEOUTS,
        "Times a partition pair stopped waiting run.alignment_wait for a lagging input and went on without it."
    );
    describe_gauge!(ALIGNMENT_HELD, "Input records held to be applied in event-time order across the two inputs.");
    describe_counter!(ERASURES, "Erasure requests applied: customers whose state was dropped.");
    describe_counter!(BEFORE_ERASURE, "Events ignored because their customer was erased after them.");
}

/// Buckets of every `_seconds` histogram: 1 ms to 10 s (and 30 s), finer
/// below 100 ms where engage's latency lives, so p50 and p99 are readable
/// anywhere in that range.
pub const SECONDS_BUCKETS: [f64; 18] =
    [0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How often histogram samples are folded into their buckets.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Installs the Prometheus recorder; the handle renders `/metrics`
/// ([`crate::http`]). A thread runs the recorder's upkeep every
/// [`UPKEEP_INTERVAL`]: a histogram keeps every sample (8 bytes) until it
/// is folded into the buckets, which otherwise happens only when `/metrics`
/// is scraped, so an unscraped instance grew by about 16 bytes per output
/// delivered (two latency histograms), without bound.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)?
        .install_recorder()?;
    describe();
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new().name("engage-metrics".into()).spawn(move || {
        loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            upkeep.run_upkeep();
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "metrics upkeep thread not started: histogram samples are folded only when /metrics is scraped");
    }
    Ok(handle)
}

/// Pre-registered handles for the pipeline's per-record counters.
pub struct PipelineMetrics {
    records_in: [Counter; 3],
    unknown_types: [Counter; 3],
    duplicates: [Counter; 3],
    bootstrapped: [Counter; 3],
    dead_letters: Vec<(Reason, Counter)>,
    /// Score changes published.
    pub scores: Counter,
    /// Alerts published.
    pub alerts: Counter,
    /// Alerts by kind: at_risk, dormant, reactivated.
    pub alerts_by_kind: [Counter; 3],
    /// Unacknowledged outputs.
    pub in_flight: Gauge,
    /// Valid events by topic and type, indexed by [`event_index`].
    events: Vec<Counter>,
    /// Sweep tick durations.
    pub sweep_duration: Histogram,
    /// Erasure requests applied.
    pub erasures: Counter,
    /// Events ignored as an erased customer's.
    pub before_erasure: Counter,
}

/// Clickstream types (known, then unknown), purchase, refund.
const EVENT_TYPES: usize = ClickKind::KNOWN.len() + 3;

fn event_index(kind: &EventKind) -> usize {
    match kind {
        EventKind::Click { kind: ClickKind::Unknown, .. } => ClickKind::KNOWN.len(),
        EventKind::Click { kind, .. } => *kind as usize,
        EventKind::Purchase { .. } => EVENT_TYPES - 2,
        EventKind::Refund { .. } => EVENT_TYPES - 1,
    }
}

fn event_labels(i: usize) -> (&'static str, &'static str) {
    match i {
        i if i < ClickKind::KNOWN.len() => ("clickstream", ClickKind::KNOWN[i].as_str()),
        i if i == ClickKind::KNOWN.len() => ("clickstream", "unknown"),
        i if i == EVENT_TYPES - 2 => ("purchases", "purchase"),
        _ => ("purchases", "refund"),
    }
}

fn by_topic(name: &'static str) -> [Counter; 3] {
    InputKind::ALL.map(|t| counter!(name, "topic" => t.as_str()))
}

impl PipelineMetrics {
    /// Registers the handles (with whatever recorder is installed; a no-op
    /// without one).
    pub fn new() -> Self {
        PipelineMetrics {
            records_in: by_topic(RECORDS_IN),
            unknown_types: by_topic(UNKNOWN_TYPES),
            duplicates: by_topic(DUPLICATES),
            bootstrapped: by_topic(BOOTSTRAPPED),
            dead_letters: Reason::ALL.iter().map(|r| (*r, counter!(DEAD_LETTERS, "reason" => r.as_str()))).collect(),
            scores: counter!(OUTPUTS, "kind" => "score"),
            alerts: counter!(OUTPUTS, "kind" => "alert"),
            alerts_by_kind: [
                counter!(ALERTS, "kind" => "at_risk"),
                counter!(ALERTS, "kind" => "dormant"),
                counter!(ALERTS, "kind" => "reactivated"),
            ],
            in_flight: gauge!(IN_FLIGHT),
            events: (0..EVENT_TYPES)
                .map(|i| {
                    let (topic, kind) = event_labels(i);
                    counter!(EVENTS, "topic" => topic, "type" => kind)
                })
                .collect(),
            sweep_duration: histogram!(SWEEP_DURATION),
            erasures: counter!(ERASURES),
            before_erasure: counter!(BEFORE_ERASURE),
        }
    }

    /// One valid event decoded.
    pub fn event(&self, kind: &EventKind) {
        self.events[event_index(kind)].increment(1);
    }

    /// One input record read.
    pub fn record_in(&self, topic: InputKind) {
        self.records_in[topic.index()].increment(1);
    }

    /// One event of an unknown type.
    pub fn unknown_type(&self, topic: InputKind) {
        self.unknown_types[topic.index()].increment(1);
    }

    /// One duplicate skipped.
    pub fn duplicate(&self, topic: InputKind) {
        self.duplicates[topic.index()].increment(1);
    }

    /// One event skipped as already in the bootstrapped state.
    pub fn bootstrapped(&self, topic: InputKind) {
        self.bootstrapped[topic.index()].increment(1);
    }

    /// One alert published.
    pub fn alert(&self, kind: crate::engine::output::AlertKind) {
        let i = match kind {
            crate::engine::output::AlertKind::AtRisk => 0,
            crate::engine::output::AlertKind::Dormant => 1,
            crate::engine::output::AlertKind::Reactivated => 2,
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

/// Latency histograms, recorded as outputs are acknowledged.
pub struct LatencyMetrics {
    /// Consumed → acknowledged.
    pub processing: Histogram,
    /// Produced (input timestamp) → acknowledged.
    pub end_to_end: Histogram,
}

impl LatencyMetrics {
    /// Registers the handles.
    pub fn new() -> Self {
        LatencyMetrics { processing: histogram!(PROCESSING_LATENCY), end_to_end: histogram!(END_TO_END_LATENCY) }
    }
}

impl Default for LatencyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Consumer lag per partition from librdkafka statistics. Partitions this
/// instance no longer consumes are set to 0, so a sum over instances stays
/// true after a rebalance.
#[derive(Default)]
pub struct LagReporter {
    reported: std::sync::Mutex<BTreeSet<(String, i32)>>,
}

impl LagReporter {
    /// Publishes the lag of every partition the consumer is fetching.
    pub fn report(&self, stats: &rdkafka::Statistics) {
        let mut now = BTreeSet::new();
        for (topic, t) in &stats.topics {
            for (&partition, p) in &t.partitions {
                // -1 is librdkafka's internal unassigned partition; a lag of
                // -1 means not known yet. Some Kafka-protocol brokers report a
                // high watermark that trails the committed offset by a batch:
                // clamp at 0.
                if partition < 0 || !p.desired || p.consumer_lag < 0 {
                    continue;
                }
                gauge!(CONSUMER_LAG, "topic" => topic.clone(), "partition" => partition.to_string())
                    .set(p.consumer_lag.max(0) as f64);
                now.insert((topic.clone(), partition));
            }
        }
        let mut reported = crate::sync::lock(&self.reported);
        for (topic, partition) in reported.difference(&now) {
            gauge!(CONSUMER_LAG, "topic" => topic.clone(), "partition" => partition.to_string()).set(0.0);
        }
        *reported = now;
    }
}

/// Population counts over every customer held: by partition, stage,
/// health and score band.
#[derive(Debug, Default, PartialEq)]
pub struct Census {
    /// (partition, customers), by partition.
    pub partitions: Vec<(i32, usize)>,
    /// Indexed by `Stage as usize - 1`.
    pub stages: [usize; 4],
    /// Indexed by `Health as usize - 1`.
    pub health: [usize; 3],
    /// Ten-point score bands; a score of 100 counts in the last.
    pub scores: [usize; 10],
}

const STAGES: [Stage; 4] = [Stage::Initiation, Stage::Integration, Stage::Intelligence, Stage::ValueCreation];
const HEALTHS: [Health; 3] = [Health::Active, Health::AtRisk, Health::Dormant];
const SCORE_BANDS: [&str; 10] =
    ["0-10", "10-20", "20-30", "30-40", "40-50", "50-60", "60-70", "70-80", "80-90", "90-100"];

impl Census {
    /// Counts the store (reads each map shard under its read lock; writers
    /// to other shards are not held up).
    pub fn take(store: &Store) -> Census {
        let mut c = Census::default();
        for partition in store.partitions() {
            let mut n = 0;
            partition.for_each(|_, s| {
                n += 1;
                c.stages[s.stage as usize - 1] += 1;
                c.health[s.health as usize - 1] += 1;
                c.scores[((s.published_score.max(0.0) / 10.0) as usize).min(9)] += 1;
            });
            c.partitions.push((partition.id(), n));
        }
        c
    }

    /// Sets the census gauges; `previous` partitions no longer held are set
    /// to 0.
    pub fn publish(&self, previous: &[(i32, usize)]) {
        for (p, n) in &self.partitions {
            gauge!(CUSTOMERS, "partition" => p.to_string()).set(*n as f64);
        }
        for (p, _) in previous.iter().filter(|(p, _)| !self.partitions.iter().any(|(q, _)| q == p)) {
            gauge!(CUSTOMERS, "partition" => p.to_string()).set(0.0);
        }
        for (stage, n) in STAGES.iter().zip(self.stages) {
            gauge!(CUSTOMERS_BY_STAGE, "stage" => stage.as_str()).set(n as f64);
        }
        for (health, n) in HEALTHS.iter().zip(self.health) {
            gauge!(CUSTOMERS_BY_HEALTH, "health" => health.as_str()).set(n as f64);
        }
        for (band, n) in SCORE_BANDS.iter().zip(self.scores) {
            gauge!(CUSTOMERS_BY_SCORE, "band" => *band).set(n as f64);
        }
        if let Some(rss) = resident_memory_bytes() {
            gauge!(RESIDENT_MEMORY).set(rss as f64);
        }
    }
}

/// Takes and publishes a census every `interval` until `shutdown`, off the
/// async threads (a census of a million customers takes tens of ms).
pub async fn census_loop(
    store: std::sync::Arc<Store>,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    let mut previous = Vec::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let s = store.clone();
        let Ok(census) = tokio::task::spawn_blocking(move || Census::take(&s)).await else { return };
        census.publish(&previous);
        previous = census.partitions;
    }
}

/// The process's resident set size, from `/proc/self/status` (Linux);
/// `None` elsewhere.
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::CustomerState;

    #[test]
    fn every_event_type_has_its_own_labels() {
        let labels: BTreeSet<_> = (0..EVENT_TYPES).map(event_labels).collect();
        assert_eq!(labels.len(), EVENT_TYPES);
        let click = |kind| EventKind::Click { kind, rating: None };
        assert_eq!(event_labels(event_index(&click(ClickKind::Review))), ("clickstream", "review"));
        assert_eq!(event_labels(event_index(&click(ClickKind::Unknown))), ("clickstream", "unknown"));
        assert_eq!(event_labels(event_index(&EventKind::Refund { amount: 1.0 })), ("purchases", "refund"));
        let buy = EventKind::Purchase { amount: 1.0, loyalty_member: false, coupon_used: false };
        assert_eq!(event_labels(event_index(&buy)), ("purchases", "purchase"));
    }

    #[test]
    fn the_census_counts_every_customer_once_per_dimension() {
        let store = Store::new();
        let state = |stage, health, score| {
            let mut s = CustomerState::default();
            (s.stage, s.health, s.published_score) = (stage, health, score);
            s
        };
        store.partition(0).insert("a".into(), state(Stage::Initiation, Health::Active, 0.0));
        store.partition(0).insert("b".into(), state(Stage::Intelligence, Health::AtRisk, 55.0));
        store.partition(3).insert("c".into(), state(Stage::Intelligence, Health::Dormant, 100.0));
        let mut c = Census::take(&store);
        c.partitions.sort();
        assert_eq!(c.partitions, vec![(0, 2), (3, 1)]);
        assert_eq!(c.stages, [1, 0, 2, 0]);
        assert_eq!(c.health, [1, 1, 1]);
        assert_eq!(c.scores, [1, 0, 0, 0, 0, 1, 0, 0, 0, 1], "100 falls in the top band");
    }

    #[test]
    fn resident_memory_is_read_on_linux() {
        assert!(resident_memory_bytes().is_some_and(|b| b > 1 << 20));
    }
}
