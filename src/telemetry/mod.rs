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

use serde::Serialize;

use crate::decode::Reason;
use crate::engine::Outcome;
use crate::engine::churn::Health;
use crate::engine::event::EventKind;
use crate::engine::lifecycle::Stage;
use crate::engine::output::{AlertKind, Output};
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
/// Events that changed a customer's state, by `topic`.
pub const APPLIED: &str = "engage_events_applied_total";
/// Events of unknown clickstream types (accepted, no effect), by `topic`.
pub const UNKNOWN_TYPES: &str = "engage_unknown_event_types_total";
/// Records sent to the dead-letter topic, by `reason` (docs/model.md "Events" codes).
pub const DEAD_LETTERS: &str = "engage_dead_letters_total";
/// Records already reflected in state (skipped), by `topic`.
pub const DUPLICATES: &str = "engage_duplicates_total";
/// Counter: events at or before the bootstrap's as-of, skipped as already
/// in the restored state, by topic.
pub const BOOTSTRAPPED: &str = "engage_bootstrapped_events_total";
/// Messages published, by `kind` (score, alert, erasure_confirmation).
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

/// Errors Kafka clients reported, by `client` (consumer, producer, admin,
/// restore, …) and librdkafka error `code`.
pub const CLIENT_ERRORS: &str = "engage_kafka_client_errors_total";
/// Times pausing or resuming input partitions failed (tried again).
pub const PAUSE_FAILURES: &str = "engage_pause_failures_total";
/// Revoked partitions that could not be finished (their next owner
/// reprocesses what was not committed).
pub const REVOKE_UNFINISHED: &str = "engage_revoke_unfinished_total";
/// Committable offsets that could not be stored for commit.
pub const OFFSET_STORE_ERRORS: &str = "engage_offset_store_errors_total";
/// Errors that stopped the pipeline.
pub const FATAL_ERRORS: &str = "engage_fatal_errors_total";
/// Customers evicted by retention.
pub const EVICTED: &str = "engage_customers_evicted_total";
/// Changelog requests asked again during restores, by `step` (end, read).
pub const CHANGELOG_RETRIES: &str = "engage_changelog_retries_total";
/// Changelog records skipped as unreadable during restores, by `what`
/// (state, key, marker).
pub const CHANGELOG_UNREADABLE: &str = "engage_changelog_unreadable_total";
/// Times the HTTP server stopped with an error.
pub const HTTP_ERRORS: &str = "engage_http_errors_total";
/// 1 when the metrics upkeep thread could not start (histogram samples are
/// then folded only when `/metrics` is scraped).
pub const UPKEEP_MISSING: &str = "engage_metrics_upkeep_missing";
/// Customer API requests answered, by `route` (customer, list, other) and
/// status `code`.
pub const API_REQUESTS: &str = "engage_api_requests_total";
/// Customer API request duration, by `route`.
pub const API_DURATION: &str = "engage_api_request_duration_seconds";
/// Requests this instance forwarded to a partition's owner, by `outcome`
/// (answered, unreachable, timeout, token_refused).
pub const API_FORWARDS: &str = "engage_api_forwards_total";
/// Connections refused because `api.max_connections` were open.
pub const API_REFUSED_CONNECTIONS: &str = "engage_api_refused_connections_total";
/// Failed reads of the consumer group's members and assignments.
pub const API_MEMBERSHIP_ERRORS: &str = "engage_api_membership_errors_total";
/// Input partitions whose owner the API knows (from the group's latest
/// stable assignment, with an advertised URL).
pub const API_ROUTABLE_PARTITIONS: &str = "engage_api_routable_partitions";
/// Customers the API found in another input partition than
/// `topics.upstream_partitioner` puts their id in.
pub const API_PARTITIONER_MISMATCHES: &str = "engage_api_partitioner_mismatches_total";
/// Token or TLS files that could not be read again after a change, by
/// `file` (tokens, tls); the previous ones stay in use.
pub const API_RELOAD_ERRORS: &str = "engage_api_reload_errors_total";

/// 1 while the pipeline is stalled for `reason` (authentication, tls,
/// authorization, unknown_topic, unsupported, no_progress), else 0.
pub const STALLED: &str = "engage_stalled";
/// librdkafka's own log lines at warning level or above, by `level`.
pub const LIBRDKAFKA_LOG: &str = "engage_librdkafka_log_lines_total";

/// Describes every metric (help text in `/metrics`).
pub fn describe() {
    describe_counter!(RECORDS_IN, "Input records read, by topic.");
    describe_counter!(APPLIED, "Events that changed a customer's state, by topic.");
    describe_counter!(UNKNOWN_TYPES, "Events of unknown clickstream types: accepted, counted, no effect.");
    describe_counter!(DEAD_LETTERS, "Records sent to the dead-letter topic, by reason code.");
    describe_counter!(DUPLICATES, "Records already reflected in state and skipped, by topic.");
    describe_counter!(
        BOOTSTRAPPED,
        "Events at or before the bootstrap's as-of, already in the restored state and skipped, by topic."
    );
    describe_counter!(OUTPUTS, "Score changes, churn alerts and erasure confirmations published, by kind.");
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
    describe_counter!(CLIENT_ERRORS, "Errors Kafka clients reported, by client and librdkafka error code.");
    describe_counter!(PAUSE_FAILURES, "Times pausing or resuming input partitions failed (tried again).");
    describe_counter!(REVOKE_UNFINISHED, "Revoked partitions that could not be flushed and committed.");
    describe_counter!(OFFSET_STORE_ERRORS, "Committable offsets that could not be stored for commit.");
    describe_counter!(FATAL_ERRORS, "Errors that stopped the pipeline.");
    describe_counter!(EVICTED, "Customers evicted by retention.");
    describe_counter!(CHANGELOG_RETRIES, "Changelog requests asked again during restores, by step.");
    describe_counter!(CHANGELOG_UNREADABLE, "Changelog records skipped as unreadable during restores, by what.");
    describe_counter!(HTTP_ERRORS, "Times the HTTP server stopped with an error.");
    describe_gauge!(UPKEEP_MISSING, "1 when the metrics upkeep thread could not start.");
    describe_gauge!(STALLED, "1 while the pipeline is stalled for this reason (see /readyz for the cause).");
    describe_counter!(LIBRDKAFKA_LOG, "librdkafka's own log lines at warning level or above, by level.");
    describe_counter!(API_REQUESTS, "Customer API requests answered, by route and status code.");
    describe_histogram!(API_DURATION, Unit::Seconds, "Customer API request duration, by route.");
    describe_counter!(API_FORWARDS, "Requests forwarded to a partition's owner, by outcome.");
    describe_counter!(API_REFUSED_CONNECTIONS, "API connections refused at api.max_connections.");
    describe_counter!(API_MEMBERSHIP_ERRORS, "Failed reads of the consumer group's members and assignments.");
    describe_gauge!(API_ROUTABLE_PARTITIONS, "Input partitions whose owner's API URL is known.");
    describe_counter!(
        API_PARTITIONER_MISMATCHES,
        "Customers found in another partition than topics.upstream_partitioner says."
    );
    describe_counter!(API_RELOAD_ERRORS, "Token or TLS files that could not be read again, by file.");
}

/// An error with its sources, `: `-separated, for log lines.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
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
        events::UpkeepNotStarted { error: &e }.emit();
    }
    Ok(handle)
}

/// What a run did, as its counts: derived from the pipeline's metrics
/// ([`PipelineMetrics::summary`]), never counted apart from them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunSummary {
    /// Input records read.
    pub records: u64,
    /// Events that changed state.
    pub applied: u64,
    /// Records already reflected in state.
    pub duplicates: u64,
    /// Events of unknown clickstream types.
    pub unknown_types: u64,
    /// Records sent to the dead-letter topic.
    pub dead_letters: u64,
    /// Erasure requests applied.
    pub erasures: u64,
    /// Events ignored because their customer was erased after them.
    pub before_erasure: u64,
    /// Score changes, alerts and erasure confirmations sent.
    pub outputs: u64,
    /// Events at or before the bootstrap's as-of, already in the state.
    pub bootstrapped: u64,
}

/// How many inputs there can be: the length of per-input arrays.
const INPUTS: usize = InputKind::ALL.len();

/// Clickstream types (known, then unknown), purchase, refund.
const EVENT_TYPES: usize = ClickKind::KNOWN.len() + 3;

/// The pipeline's per-record counts, each one integer in the main loop.
#[derive(Clone, Debug, Default, PartialEq)]
struct Counts {
    records_in: [u64; INPUTS],
    applied: [u64; INPUTS],
    unknown_types: [u64; INPUTS],
    duplicates: [u64; INPUTS],
    bootstrapped: [u64; INPUTS],
    before_erasure: u64,
    erasures: u64,
    events: [u64; EVENT_TYPES],
    dead_letters: [u64; Reason::ALL.len()],
    scores: u64,
    /// Indexed by [`alert_index`].
    alerts: [u64; 3],
    confirmations: u64,
}

/// The pipeline's per-record metrics. The hot path adds to plain integers;
/// [`PipelineMetrics::publish`] (on the main loop's tick) adds what moved to
/// the pre-registered metric handles, once per tick rather than per record,
/// and the run's [`RunSummary`] is read from the same integers, so the two
/// never disagree.
pub struct PipelineMetrics {
    counts: Counts,
    published: Counts,
    handles: Handles,
    /// Sweep tick durations.
    pub sweep_duration: Histogram,
    /// Unacknowledged records.
    pub in_flight: Gauge,
}

/// The metric handles behind [`Counts`], field for field.
struct Handles {
    records_in: [Counter; INPUTS],
    applied: [Counter; INPUTS],
    unknown_types: [Counter; INPUTS],
    duplicates: [Counter; INPUTS],
    bootstrapped: [Counter; INPUTS],
    before_erasure: Counter,
    erasures: Counter,
    events: [Counter; EVENT_TYPES],
    dead_letters: [Counter; Reason::ALL.len()],
    scores: Counter,
    alerts: [Counter; 3],
    alert_outputs: Counter,
    confirmations: Counter,
}

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

const ALERT_KINDS: [AlertKind; 3] = [AlertKind::AtRisk, AlertKind::Dormant, AlertKind::Reactivated];

fn alert_index(kind: AlertKind) -> usize {
    match kind {
        AlertKind::AtRisk => 0,
        AlertKind::Dormant => 1,
        AlertKind::Reactivated => 2,
    }
}

fn by_input(name: &'static str) -> [Counter; INPUTS] {
    InputKind::ALL.map(|t| counter!(name, "topic" => t.as_str()))
}

/// Adds the difference between two arrays of totals to their counters.
fn add<const N: usize>(handles: &[Counter; N], now: &[u64; N], before: &[u64; N]) {
    for ((h, n), b) in handles.iter().zip(now).zip(before) {
        add_one(h, *n, *b);
    }
}

/// Adds the difference between two totals to their counter.
fn add_one(handle: &Counter, now: u64, before: u64) {
    if now != before {
        handle.increment(now - before);
    }
}

impl PipelineMetrics {
    /// Registers the handles (with whatever recorder is installed; a no-op
    /// without one), all at 0.
    pub fn new() -> Self {
        let handles = Handles {
            records_in: by_input(RECORDS_IN),
            applied: by_input(APPLIED),
            unknown_types: by_input(UNKNOWN_TYPES),
            duplicates: by_input(DUPLICATES),
            bootstrapped: by_input(BOOTSTRAPPED),
            before_erasure: counter!(BEFORE_ERASURE),
            erasures: counter!(ERASURES),
            events: std::array::from_fn(|i| {
                let (topic, kind) = event_labels(i);
                counter!(EVENTS, "topic" => topic, "type" => kind)
            }),
            dead_letters: Reason::ALL.map(|r| counter!(DEAD_LETTERS, "reason" => r.as_str())),
            scores: counter!(OUTPUTS, "kind" => "score"),
            alerts: ALERT_KINDS.map(|k| counter!(ALERTS, "kind" => k.as_str())),
            alert_outputs: counter!(OUTPUTS, "kind" => "alert"),
            confirmations: counter!(OUTPUTS, "kind" => "erasure_confirmation"),
        };
        PipelineMetrics {
            counts: Counts::default(),
            published: Counts::default(),
            handles,
            sweep_duration: histogram!(SWEEP_DURATION),
            in_flight: gauge!(IN_FLIGHT),
        }
    }

    /// One input record read.
    pub fn record_in(&mut self, topic: InputKind) {
        self.counts.records_in[topic.index()] += 1;
    }

    /// One valid event decoded.
    pub fn event(&mut self, kind: &EventKind) {
        self.counts.events[event_index(kind)] += 1;
    }

    /// What applying an event of `topic` did.
    pub fn outcome(&mut self, topic: InputKind, outcome: Outcome) {
        let c = &mut self.counts;
        match outcome {
            Outcome::Applied => c.applied[topic.index()] += 1,
            Outcome::Duplicate => c.duplicates[topic.index()] += 1,
            Outcome::UnknownType => c.unknown_types[topic.index()] += 1,
            // Not bad input: counted, and committed like any record.
            Outcome::Bootstrapped => c.bootstrapped[topic.index()] += 1,
            Outcome::BeforeErasure | Outcome::Erased => c.before_erasure += 1,
        }
    }

    /// One duplicate skipped.
    pub fn duplicate(&mut self, topic: InputKind) {
        self.counts.duplicates[topic.index()] += 1;
    }

    /// One erasure request applied.
    pub fn erasure(&mut self) {
        self.counts.erasures += 1;
    }

    /// One dead letter.
    pub fn dead_letter(&mut self, reason: Reason) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.counts.dead_letters[i] += 1;
        }
    }

    /// Outputs about to be sent.
    pub fn outputs(&mut self, outputs: &[Output]) {
        for o in outputs {
            match o {
                Output::Score(_) => self.counts.scores += 1,
                Output::Alert(a) => self.counts.alerts[alert_index(a.kind)] += 1,
                Output::Erasure(_) => self.counts.confirmations += 1,
            }
        }
    }

    /// Adds what was counted since the last call to the metrics.
    pub fn publish(&mut self) {
        let (c, p, h) = (&self.counts, &self.published, &self.handles);
        if c == p {
            return;
        }
        add(&h.records_in, &c.records_in, &p.records_in);
        add(&h.applied, &c.applied, &p.applied);
        add(&h.unknown_types, &c.unknown_types, &p.unknown_types);
        add(&h.duplicates, &c.duplicates, &p.duplicates);
        add(&h.bootstrapped, &c.bootstrapped, &p.bootstrapped);
        add(&h.events, &c.events, &p.events);
        add(&h.dead_letters, &c.dead_letters, &p.dead_letters);
        add(&h.alerts, &c.alerts, &p.alerts);
        add_one(&h.before_erasure, c.before_erasure, p.before_erasure);
        add_one(&h.erasures, c.erasures, p.erasures);
        add_one(&h.scores, c.scores, p.scores);
        add_one(&h.confirmations, c.confirmations, p.confirmations);
        add_one(&h.alert_outputs, c.alerts.iter().sum(), p.alerts.iter().sum());
        self.published = self.counts.clone();
    }

    /// Input records read so far.
    pub fn records(&self) -> u64 {
        self.counts.records_in.iter().sum()
    }

    /// The run's counts so far.
    pub fn summary(&self) -> RunSummary {
        let c = &self.counts;
        let sum = |a: &[u64; INPUTS]| a.iter().sum();
        RunSummary {
            records: sum(&c.records_in),
            applied: sum(&c.applied),
            duplicates: sum(&c.duplicates),
            unknown_types: sum(&c.unknown_types),
            dead_letters: c.dead_letters.iter().sum(),
            erasures: c.erasures,
            before_erasure: c.before_erasure,
            outputs: c.scores + c.alerts.iter().sum::<u64>() + c.confirmations,
            bootstrapped: sum(&c.bootstrapped),
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
