//! `engage run`: the Kafka pipeline. One consumer-group member reads both
//! input topics, applies each record to the engine and hands the outputs to
//! the [`Sink`]. Changed customers are flushed to the state changelog every
//! `state.flush_interval`: encoded at once, written once every output sent
//! before is acknowledged (consumption goes on meanwhile); an input offset
//! is committed only after the flush that follows it is acknowledged too.
//! So after any crash the changelog holds, for every customer, a state
//! whose outputs were all delivered, and the per-customer applied offsets
//! in it make replayed records no-ops (docs/model.md "Guarantees").
//!
//! Partition assignment uses librdkafka's `range` assignor: for topics with
//! the same partition count it gives partition *p* of both inputs to the
//! same member, which co-partitioning needs (a customer's clicks and
//! purchases must meet in one state). `cooperative-sticky` balances the two
//! topics independently and could split them, so it is not used. On revoke
//! a partition is flushed, committed and dropped; on assign its customers
//! are restored from the changelog before its first record is processed.
//! The two inputs' partition *p* are applied in event-time order
//! (`align.rs`).

mod align;
mod memory;
mod rebalance;
mod shared;
mod status;
mod worker;

pub use memory::set_memory_release;
pub use status::{Restoring, Status};

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, TopicPartitionList};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::wall_clock_ms;
use crate::config::Config;
use crate::engine::store::Store;
use crate::engine::{Engine, Rules, Slice};
use crate::kafka::changelog::RestoreError;
use crate::kafka::changelog::{self, Dirty};
use crate::kafka::progress::{CommitGate, DeliveryError, Progress, SharedProgress, lock};
use crate::kafka::sink::Sink;
use crate::kafka::{KafkaSetupError, check_changelog, check_inputs, create_output_topics};
use crate::sync;
use crate::telemetry::{LagReporter, PipelineMetrics};
use crate::vocab::InputKind;
use align::Aligner;
use memory::{IDLE_RELEASE_EVERY, IdleRelease, release_free_memory};
use rdkafka::error::KafkaError;
use rebalance::PipelineContext;
use shared::{Inputs, Shared};
use worker::{BatchClock, Input, PartitionCache, Worker};

/// Why the pipeline stopped with an error. Exit non-zero: a restart resumes
/// from the last committed offsets and the changelog, so nothing is lost.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Start-up checks or Kafka clients failed.
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    /// An output could not be delivered; restarting may help once the
    /// broker is healthy.
    #[error("output delivery failed, stopping without committing past it")]
    Delivery(#[source] DeliveryError),
    /// A partition's state could not be restored; processing without it
    /// would double-count, so engage stops. Retryable.
    #[error("state restore of partition {partition} failed")]
    Restore {
        /// The input partition number.
        partition: i32,
        /// Why.
        #[source]
        source: RestoreError,
    },
    /// `exactly_once`: a transaction could not be committed (and was
    /// aborted). Restarting resumes from the last committed transaction.
    #[error("transaction failed and was aborted")]
    Transaction(#[source] TransactionError),
    /// Shutdown could not flush and commit within `run.shutdown_deadline`;
    /// the uncommitted records will be processed again by the next owner.
    #[error("shutdown deadline of {0:?} passed before all outputs were acknowledged")]
    ShutdownDeadline(Duration),
}

/// Why an `exactly_once` transaction failed.
#[derive(Debug, thiserror::Error)]
pub enum TransactionError {
    /// The transaction's outputs were not acknowledged in time.
    #[error("outputs not acknowledged")]
    Flush(#[source] KafkaError),
    /// The consumer has not joined its group, so its offsets cannot be
    /// committed inside the transaction.
    #[error("the consumer has no group metadata")]
    NoGroupMetadata,
    /// Sending the offsets or committing the transaction failed.
    #[error("commit failed")]
    Commit(#[source] KafkaError),
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
    /// Erasure requests applied.
    pub erasures: u64,
    /// Events ignored because their customer was erased after them.
    pub before_erasure: u64,
    /// Score changes and alerts sent.
    pub outputs: u64,
    /// Events at or before the bootstrap's as-of, already in the state.
    pub bootstrapped: u64,
}

/// Runs the processor until `shutdown` is cancelled or a fatal error.
/// `store` receives the customer states (the query path reads it);
/// `status` its liveness and readiness (the probes read it).
pub async fn run(
    config: Config,
    store: Arc<Store>,
    status: Arc<Status>,
    shutdown: CancellationToken,
) -> Result<RunSummary, PipelineError> {
    let partitions = check_inputs(&config)?;
    info!(partitions, clickstream = %config.topics.clickstream, purchases = %config.topics.purchases, "inputs are co-partitioned");
    if config.run.create_topics {
        let created = create_output_topics(&config).await?;
        if !created.is_empty() {
            info!(?created, "created topics");
        }
    }
    check_changelog(&config, partitions)?;
    let progress: SharedProgress = Arc::new(Mutex::new(Progress::new(CommitGate::Flushed)));
    let sink = Arc::new(Sink::new(&config, progress.clone())?);
    let inputs = Inputs::new(&config.topics);
    let shared = Arc::new(Shared {
        changelog: changelog::topic_name(&config),
        config: config.clone(),
        sink: sink.clone(),
        store: store.clone(),
        status: status.clone(),
        inputs: inputs.clone(),
        dirty: Mutex::new(Dirty::default()),
        owned: Mutex::new(BTreeSet::new()),
        generation: AtomicU64::new(0),
        fatal: Mutex::new(None),
        processed: Mutex::new(HashMap::new()),
        ends: Mutex::new(HashMap::new()),
    });
    let transactional = sink.is_transactional();
    let consumer: StreamConsumer<PipelineContext> = crate::kafka::client::input_consumer(&config)
        .create_with_context(PipelineContext { shared: shared.clone(), lag: LagReporter::default() })
        .map_err(|e| KafkaSetupError::client("creating the consumer", e))?;
    consumer.subscribe(&inputs.subscribed()).map_err(|e| KafkaSetupError::client("subscribing to the inputs", e))?;

    let mut worker = Worker {
        engine: Engine::new(Rules::new(&config)),
        metrics: PipelineMetrics::new(),
        limits: config.input.limits(),
        summary: RunSummary::default(),
        outputs: Vec::with_capacity(8),
        cache: PartitionCache { generation: u64::MAX, partitions: HashMap::new() },
        clocks: HashMap::new(),
        shared: shared.clone(),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut flush_tick = tokio::time::interval(config.state.flush_interval);
    let slices = u64::from(config.run.sweep_slices);
    let mut sweep_tick = tokio::time::interval(config.run.sweep_interval / config.run.sweep_slices);
    let mut next_slice = 0u64;
    sweep_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_log = Instant::now();
    let mut idle = IdleRelease::new(IDLE_RELEASE_EVERY, release_free_memory);
    let mut pauses = Pauses::new();
    let mut aligner = Aligner::new(config.run.alignment_wait);
    let held_gauge = metrics::gauge!(crate::telemetry::ALIGNMENT_HELD);
    // Population gauges, refreshed every log interval until this returns.
    let census = CancellationToken::new();
    tokio::spawn(crate::telemetry::census_loop(store.clone(), config.run.log_interval, census.clone()));
    let _stop_census = census.drop_guard();

    loop {
        if let Some(e) = sync::lock(&shared.fatal).take() {
            return Err(e);
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                status.beat(wall_clock_ms());
                if let Some(failure) = lock(&progress).failure() {
                    return Err(PipelineError::Delivery(failure.clone()));
                }
                if !transactional {
                    sink.release_changelog();
                    shared.store_done(&consumer);
                }
                worker.metrics.in_flight.set(lock(&progress).in_flight() as f64);
                idle.observe(worker.summary.records);
                aligner.sync_generation(shared.generation.load(std::sync::atomic::Ordering::SeqCst));
                if let Some(positions) = aligner.enabled().then(|| consumer.position().ok()).flatten() {
                    let ends = sync::lock(&shared.ends).clone();
                    for p in aligner.refresh(&inputs, &positions, &ends, &shared.owned(), pauses.backpressure) {
                        while let Some(input) = aligner.next_ready(p) {
                            worker.handle(input)?;
                        }
                    }
                }
                held_gauge.set(aligner.held() as f64);
                pauses.update(&consumer, &shared, config.run.max_in_flight, aligner.take_pause_change());
                if last_log.elapsed() >= config.run.log_interval {
                    last_log = Instant::now();
                    let summary = &worker.summary;
                    info!(records = summary.records, applied = summary.applied, dead_letters = summary.dead_letters,
                          outputs = summary.outputs, in_flight = lock(&progress).in_flight(), customers = store.customers(), "progress");
                }
            }
            _ = sink.released(), if !transactional => sink.release_changelog(),
            _ = flush_tick.tick() => {
                let owned = shared.owned();
                tokio::task::block_in_place(|| shared.flush(&consumer, &owned))?;
            }
            _ = sweep_tick.tick() => {
                let slice = Slice { index: next_slice, of: slices };
                next_slice = (next_slice + 1) % slices;
                worker.sweep(slice, pauses.backpressure, &aligner);
            }
            message = consumer.recv() => {
                // Then whatever else is already fetched, without going back
                // through the select (its timers cost more than a record).
                let mut next = Some(message);
                let mut batch = 0;
                let clock = BatchClock::now();
                while let Some(message) = next {
                    match message {
                        Ok(m) => {
                            // A rebalance inside recv() dropped what was held.
                            aligner.sync_generation(shared.generation.load(std::sync::atomic::Ordering::SeqCst));
                            let kind = inputs.kind(m.topic());
                            if kind == InputKind::Erasures {
                                worker.erase(&m, clock)?;
                            } else {
                                let input = Input::decode(&m, kind, &config, &worker.limits, clock);
                                let (p, ts) = (input.partition, input.event_time());
                                if let Some(input) = aligner.offer(input, ts) {
                                    worker.handle(input)?;
                                }
                                while let Some(input) = aligner.next_ready(p) {
                                    worker.handle(input)?;
                                }
                            }
                        }
                        Err(e) => warn!(error = %e, "consumer error"),
                    }
                    batch += 1;
                    let full = aligner.take_pause_change();
                    if full.is_some() || lock(&progress).in_flight() > config.run.max_in_flight {
                        pauses.update(&consumer, &shared, config.run.max_in_flight, full);
                        if pauses.backpressure {
                            break;
                        }
                    }
                    next = if batch < RECV_BATCH { ready_now(consumer.recv()) } else { None };
                }

            }
        }
    }

    info!(deadline = ?config.run.shutdown_deadline, "shutting down: finishing in-flight work");
    let owned = shared.owned();
    tokio::task::block_in_place(|| shared.finish(&consumer, &owned))?;
    info!(summary = ?worker.summary, "stopped cleanly");
    Ok(worker.summary)
}

/// Records handled per wake-up of the main loop before the timers get a
/// look in again.
const RECV_BATCH: usize = 512;

/// The future's output if it is ready right now, without waiting.
fn ready_now<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// Which input partitions are paused, and why: every one while too many
/// outputs are in flight (backpressure), and those holding
/// [`align::HOLD_LIMIT`] records waiting for the other input.
///
/// librdkafka keeps a partition's application pause through a revoke and a
/// reassignment, and a partition new to this instance arrives unpaused, so
/// the wanted state is applied again to the whole assignment after every
/// rebalance, and otherwise only where it changed.
struct Pauses {
    /// Whether backpressure pauses every partition.
    backpressure: bool,
    /// Partitions holding too many records for alignment.
    full: HashSet<(InputKind, i32)>,
    /// What was last applied, per partition.
    applied: HashMap<(InputKind, i32), bool>,
    /// `Shared::generation` that `applied` refers to.
    generation: u64,
}

impl Pauses {
    fn new() -> Pauses {
        Pauses { backpressure: false, full: HashSet::new(), applied: HashMap::new(), generation: u64::MAX }
    }

    /// Pauses every assigned partition while more than `max` outputs are in
    /// flight, and resumes once they drain below half; pauses the
    /// partitions in `full` (when given: the aligner's latest wish).
    fn update(
        &mut self,
        consumer: &StreamConsumer<PipelineContext>,
        shared: &Shared,
        max: usize,
        full: Option<HashSet<(InputKind, i32)>>,
    ) {
        if let Some(full) = full {
            self.full = full;
        }
        let in_flight = lock(shared.sink.progress()).in_flight();
        let backpressure = if self.backpressure { in_flight > max / 2 } else { in_flight > max };
        let generation = shared.generation.load(std::sync::atomic::Ordering::SeqCst);
        if generation != self.generation {
            self.applied.clear();
        }
        // Between a revoke and the next assignment there is nothing to
        // apply the state to: try again on the next call.
        let Ok(assignment) = consumer.assignment() else { return };
        if assignment.count() == 0 {
            return;
        }
        let (mut pause, mut resume) = (TopicPartitionList::new(), TopicPartitionList::new());
        let mut wanted = Vec::new();
        for e in assignment.elements() {
            let key = (shared.inputs.kind(e.topic()), e.partition());
            let paused = backpressure || self.full.contains(&key);
            if self.applied.get(&key) != Some(&paused) {
                let list = if paused { &mut pause } else { &mut resume };
                list.add_partition(e.topic(), e.partition());
                wanted.push((key, paused));
            }
        }
        let paused = if pause.count() > 0 { consumer.pause(&pause) } else { Ok(()) };
        let resumed = if resume.count() > 0 { consumer.resume(&resume) } else { Ok(()) };
        if let Err(e) = paused.and(resumed) {
            warn!(error = %e, "pause/resume failed; trying again");
            return;
        }
        self.applied.extend(wanted);
        self.generation = generation;
        if backpressure != self.backpressure {
            crate::telemetry::events::Backpressure { paused: backpressure, in_flight }.emit();
            self.backpressure = backpressure;
        }
    }
}
