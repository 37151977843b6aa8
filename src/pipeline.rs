//! `engage run`: the Kafka pipeline. One consumer-group member reads both
//! input topics, applies each record to the engine, and hands the outputs to
//! the [`Sink`]; offsets are stored only once everything before them is
//! acknowledged, and committed synchronously on revoke and on shutdown.
//!
//! Partition assignment uses librdkafka's `range` assignor: for topics with
//! the same partition count it gives partition *p* of both inputs to the
//! same member, which co-partitioning needs (a customer's clicks and
//! purchases must meet in one state). `cooperative-sticky` balances the two
//! topics independently and could split them, so it is not used.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::decode::{Envelope, decode};
use crate::engine::{Engine, Outcome, Rules, wall_clock_ms};
use crate::event::{InputTopic, Source};
use crate::kafka::{KafkaSetupError, check_inputs, client_config, create_output_topics};
use crate::sink::{CONTENT_TYPE, Progress, SharedProgress, Sink, Work, lock};
use crate::store::Store;
use crate::telemetry::PipelineMetrics;
use crate::output::Output;

/// Why the pipeline stopped with an error. Exit non-zero: a restart resumes
/// from the last committed offsets, so nothing is lost.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Start-up checks or Kafka clients failed.
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    /// An output could not be delivered; retrying (restarting) may help once
    /// the broker is healthy.
    #[error("output delivery failed, stopping without committing past it: {0}")]
    Delivery(String),
    /// The consumer failed fatally.
    #[error("consumer failed: {0}")]
    Consumer(KafkaError),
    /// Shutdown could not flush and commit within `run.shutdown_deadline`;
    /// the uncommitted records will be processed again by the next owner.
    #[error("shutdown deadline of {0:?} passed before all outputs were acknowledged")]
    ShutdownDeadline(Duration),
}

/// Counts of what a run did.
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
    /// Score changes and alerts sent.
    pub outputs: u64,
}

/// Names of the two input topics, to map a record back to its kind.
#[derive(Clone)]
struct Inputs {
    clickstream: String,
    purchases: String,
}

impl Inputs {
    fn kind(&self, topic: &str) -> InputTopic {
        if topic == self.purchases { InputTopic::Purchases } else { InputTopic::Clickstream }
    }

    fn name(&self, kind: InputTopic) -> &str {
        match kind {
            InputTopic::Clickstream => &self.clickstream,
            InputTopic::Purchases => &self.purchases,
        }
    }
}

/// Consumer callbacks: on revoke, finish and commit before letting go.
struct PipelineContext {
    sink: Arc<Sink>,
    inputs: Inputs,
    flush_timeout: Duration,
    /// Partition numbers currently assigned (only these are swept).
    owned: Arc<Mutex<BTreeSet<i32>>>,
}

impl ClientContext for PipelineContext {}

impl ConsumerContext for PipelineContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Outputs of records already handed to the sink must be acked
            // before the offsets that cover them are committed.
            if let Err(e) = self.sink.flush(self.flush_timeout) {
                warn!(error = %e, "revoke: outputs not all acknowledged; their records will be reprocessed");
            }
            store_done(consumer, self.sink.progress(), &self.inputs);
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                // NoOffset: nothing new to commit.
                debug!(error = %e, "revoke: commit");
            }
            let mut progress = lock(self.sink.progress());
            let mut owned = self.owned.lock().unwrap_or_else(PoisonError::into_inner);
            for e in tpl.elements() {
                progress.forget(self.inputs.kind(e.topic()), e.partition());
                owned.remove(&e.partition());
                info!(topic = e.topic(), partition = e.partition(), "partition revoked");
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut owned = self.owned.lock().unwrap_or_else(PoisonError::into_inner);
            for e in tpl.elements() {
                owned.insert(e.partition());
                info!(topic = e.topic(), partition = e.partition(), "partition assigned");
            }
        }
    }
}

/// Stores the offsets that became committable; auto-commit (and the
/// synchronous commits on revoke and shutdown) write them to Kafka.
fn store_done<C: ConsumerContext>(consumer: &impl Consumer<C>, progress: &SharedProgress, inputs: &Inputs) {
    let done = lock(progress).take_committable();
    if done.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::with_capacity(done.len());
    for (kind, partition, next) in done {
        if let Err(e) = tpl.add_partition_offset(inputs.name(kind), partition, Offset::Offset(next)) {
            warn!(error = %e, "cannot store offset");
        }
    }
    if let Err(e) = consumer.store_offsets(&tpl) {
        // A partition revoked meanwhile: its next owner reprocesses from the
        // last commit, which is safe.
        debug!(error = %e, "store offsets");
    }
}

/// Runs the processor until `shutdown` is cancelled or a fatal error.
/// `store` receives the customer states (the HTTP query path reads it).
pub async fn run(config: Config, store: Arc<Store>, shutdown: CancellationToken) -> Result<RunSummary, PipelineError> {
    let partitions = check_inputs(&config)?;
    info!(partitions, clickstream = %config.topics.clickstream, purchases = %config.topics.purchases, "inputs are co-partitioned");
    if config.run.create_topics {
        let created = create_output_topics(&config).await?;
        if !created.is_empty() {
            info!(?created, "created output topics");
        }
    }
    let progress: SharedProgress = Arc::new(Mutex::new(Progress::default()));
    let owned = Arc::new(Mutex::new(BTreeSet::new()));
    let sink = Arc::new(Sink::new(&config, progress.clone())?);
    let inputs = Inputs { clickstream: config.topics.clickstream.clone(), purchases: config.topics.purchases.clone() };
    let context = PipelineContext {
        sink: sink.clone(),
        inputs: inputs.clone(),
        flush_timeout: config.run.shutdown_deadline,
        owned: owned.clone(),
    };
    let consumer: StreamConsumer<PipelineContext> = client_config(
        &config,
        &[
            ("group.id", config.run.group_id.as_str()),
            ("enable.auto.offset.store", "false"),
            ("enable.auto.commit", "true"),
            ("auto.commit.interval.ms", "1000"),
            ("auto.offset.reset", "earliest"),
            ("partition.assignment.strategy", "range"),
        ],
    )
    .create_with_context(context)
    .map_err(|e| KafkaSetupError::client("creating the consumer", e))?;
    consumer
        .subscribe(&[&inputs.clickstream, &inputs.purchases])
        .map_err(|e| KafkaSetupError::client("subscribing to the inputs", e))?;

    let engine = Engine::new(Rules::new(&config));
    let metrics = PipelineMetrics::new();
    let limits = config.input.limits();
    let mut summary = RunSummary::default();
    let mut outputs = Vec::with_capacity(8);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_log = Instant::now();
    let mut paused = false;
    let mut partition_cache: HashMap<i32, Arc<crate::store::Partition>> = HashMap::new();
    let mut clocks: HashMap<i32, StreamClock> = HashMap::new();
    let mut sweep_tick = tokio::time::interval(config.run.sweep_interval);
    sweep_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                if let Some(failure) = lock(&progress).failure() {
                    return Err(PipelineError::Delivery(failure.to_string()));
                }
                store_done(&consumer, &progress, &inputs);
                metrics.in_flight.set(lock(&progress).in_flight() as f64);
                paused = backpressure(&consumer, &progress, config.run.max_in_flight, paused);
                if last_log.elapsed() >= config.run.log_interval {
                    last_log = Instant::now();
                    metrics.customers.set(store.customers() as f64);
                    info!(records = summary.records, applied = summary.applied, dead_letters = summary.dead_letters,
                          outputs = summary.outputs, in_flight = lock(&progress).in_flight(), customers = store.customers(), "progress");
                }
            }
            _ = sweep_tick.tick() => {
                let owned: Vec<i32> = owned.lock().unwrap_or_else(PoisonError::into_inner).iter().copied().collect();
                for p in owned {
                    let Some(clock) = clocks.get(&p) else { continue };
                    let now = clock.stream_time(config.run.idle_grace, paused);
                    let partition = partition_cache.entry(p).or_insert_with(|| store.partition(p));
                    engine.sweep(partition, now, &mut outputs);
                    if !outputs.is_empty() {
                        count_outputs(&metrics, &outputs);
                        summary.outputs += outputs.len() as u64;
                        debug!(partition = p, stream_time = now, outputs = outputs.len(), "sweep");
                        sink.send_outputs(&mut outputs, Work { topic: InputTopic::Clickstream, partition: p, offset: None });
                    }
                }
            }
            message = consumer.recv() => {
                let message = match message {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(error = %e, "consumer error");
                        continue;
                    }
                };
                summary.records += 1;
                let kind = inputs.kind(message.topic());
                metrics.record_in(kind);
                let work = Work { topic: kind, partition: message.partition(), offset: Some(message.offset()) };
                let format = match kind {
                    InputTopic::Clickstream => config.input.clickstream_format,
                    InputTopic::Purchases => config.input.purchases_format,
                };
                let envelope = Envelope {
                    key: message.key(),
                    require_key: true,
                    timestamp_ms: message.timestamp().to_millis(),
                    content_type: content_type(&message),
                };
                let value = message.payload().unwrap_or(&[]);
                match decode(Some(kind), format, &envelope, value, &limits, wall_clock_ms()) {
                    Ok(event) => {
                        let partition = partition_cache
                            .entry(message.partition())
                            .or_insert_with(|| store.partition(message.partition()));
                        let source = Source { topic: kind, offset: message.offset() };
                        clocks.entry(message.partition()).or_default().observe(event.ts_ms);
                        match engine.apply(partition, &event, Some(source), &mut outputs) {
                            Outcome::Applied => summary.applied += 1,
                            Outcome::Duplicate => {
                                summary.duplicates += 1;
                                metrics.duplicate(kind);
                            }
                            Outcome::UnknownType => {
                                summary.unknown_types += 1;
                                metrics.unknown_type(kind);
                            }
                        }
                        count_outputs(&metrics, &outputs);
                        summary.outputs += outputs.len() as u64;
                        sink.send_outputs(&mut outputs, work);
                    }
                    Err(error) => {
                        summary.dead_letters += 1;
                        metrics.dead_letter(error.reason);
                        debug!(topic = message.topic(), partition = message.partition(), offset = message.offset(),
                               reason = %error.reason, "dead letter");
                        sink.send_dead_letter(&message, &error, work);
                    }
                }
                if lock(&progress).in_flight() > config.run.max_in_flight {
                    paused = backpressure(&consumer, &progress, config.run.max_in_flight, paused);
                }
            }
        }
    }

    info!(deadline = ?config.run.shutdown_deadline, "shutting down: finishing in-flight work");
    let flushed = sink.flush(config.run.shutdown_deadline);
    if let Some(failure) = lock(&progress).failure() {
        return Err(PipelineError::Delivery(failure.to_string()));
    }
    store_done(&consumer, &progress, &inputs);
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        debug!(error = %e, "final commit");
    }
    if flushed.is_err() {
        return Err(PipelineError::ShutdownDeadline(config.run.shutdown_deadline));
    }
    info!(?summary, "stopped cleanly");
    Ok(summary)
}

/// A partition's stream time (SPEC §7): the largest event time seen, or the
/// wall clock once the partition has been caught up and idle for
/// `idle_grace`.
#[derive(Debug)]
struct StreamClock {
    max_event_ms: i64,
    last_record: Instant,
}

impl Default for StreamClock {
    fn default() -> Self {
        StreamClock { max_event_ms: i64::MIN, last_record: Instant::now() }
    }
}

impl StreamClock {
    fn observe(&mut self, event_ms: i64) {
        self.max_event_ms = self.max_event_ms.max(event_ms);
        self.last_record = Instant::now();
    }

    /// While paused by backpressure the partition is not idle, only held.
    fn stream_time(&self, idle_grace: Duration, paused: bool) -> i64 {
        if !paused && self.last_record.elapsed() >= idle_grace {
            self.max_event_ms.max(wall_clock_ms())
        } else {
            self.max_event_ms
        }
    }
}

/// Pauses every assigned partition while too many outputs are in flight,
/// and resumes once they drain below half. Returns whether paused.
fn backpressure(consumer: &StreamConsumer<PipelineContext>, progress: &SharedProgress, max: usize, paused: bool) -> bool {
    let in_flight = lock(progress).in_flight();
    let want_paused = if paused { in_flight > max / 2 } else { in_flight > max };
    if want_paused != paused {
        if let Ok(assignment) = consumer.assignment() {
            let result = if want_paused { consumer.pause(&assignment) } else { consumer.resume(&assignment) };
            match result {
                Ok(()) => info!(in_flight, paused = want_paused, "backpressure"),
                Err(e) => warn!(error = %e, "backpressure: pause/resume failed"),
            }
        }
    }
    want_paused
}

fn count_outputs(metrics: &PipelineMetrics, outputs: &[Output]) {
    for o in outputs {
        match o {
            Output::Score(_) => metrics.scores.increment(1),
            Output::Alert(_) => metrics.alerts.increment(1),
        }
    }
}

fn content_type<'a>(message: &'a BorrowedMessage<'_>) -> Option<&'a [u8]> {
    message.headers()?.iter().find(|h| h.key.eq_ignore_ascii_case(CONTENT_TYPE)).and_then(|h| h.value)
}
