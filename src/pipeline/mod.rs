//! `engage run`: the Kafka pipeline. One consumer-group member reads every
//! input topic, applies each record to the engine and hands what it sends to
//! the [`Durability`] protocol, which decides when input offsets are
//! committed (`crate::durability`: state flushed every
//! `state.flush_interval`, offsets committed only once their outputs and
//! the flush after them are acknowledged).
//!
//! Partition assignment uses librdkafka's `range` assignor: for topics with
//! the same partition count it gives partition *p* of every input to the
//! same member, which co-partitioning needs (a customer's clicks and
//! purchases must meet in one state). `cooperative-sticky` balances the
//! topics independently and could split them, so it is not used. On revoke
//! a partition is finished (flushed, committed) and dropped; on assign its
//! customers are restored from the changelog before its first record is
//! processed. The event inputs' partition *p* are applied in event-time
//! order (`align.rs`); erasure requests as they arrive.

mod align;
mod memory;
mod rebalance;
mod record;
mod shared;
mod status;
mod worker;

pub use memory::set_memory_release;
pub use status::{Held, PartitionPhase, Restoring, Status};

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::clock::wall_clock_ms;
use crate::config::Config;
use crate::durability::{Durability, DurabilityError};
use crate::engine::store::Store;
use crate::engine::{Engine, Rules, Slice};
use crate::kafka::changelog::RestoreError;
use crate::kafka::{KafkaSetupError, check_changelog, check_inputs, create_output_topics};
use crate::sync;
use crate::telemetry::events::{Backpressure, PauseFailed, Stopped};
use crate::telemetry::{LagReporter, PipelineMetrics};
use crate::vocab::{InputKind, Role};
use align::Aligner;
use memory::{IDLE_RELEASE_EVERY, IdleRelease, release_free_memory};
use rebalance::PipelineContext;
use record::{BatchClock, Record};
use shared::Shared;
use worker::{PartitionCache, Worker};

pub use crate::telemetry::RunSummary;

/// Why the pipeline stopped with an error. Exit non-zero: a restart resumes
/// from the last committed offsets and the changelog, so nothing is lost.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Start-up checks or Kafka clients failed.
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    /// Records could not be made durable: a delivery failed, a transaction
    /// could not commit, or shutdown ran out of time.
    #[error(transparent)]
    Durability(#[from] DurabilityError),
    /// An error retrying did not clear within `run.give_up_after`
    /// (authentication, a missing ACL, an unknown topic, input that cannot
    /// be read): engage stops so that the failure is seen (and a restart
    /// retries, once it is fixed).
    #[error("gave up after {after:?}: {blocker}")]
    GaveUp {
        /// What is wrong.
        blocker: crate::kafka::diagnosis::Blocker,
        /// `run.give_up_after`.
        after: Duration,
    },
    /// The consumer lost its group membership (a revoke) and did not join
    /// again within twice `max.poll.interval.ms` (at least
    /// `run.stall_timeout`): librdkafka can stay stuck after a broker
    /// stall, so engage stops and a restart joins afresh. Nothing is
    /// committed past what is done.
    #[error("the consumer did not rejoin its group within {0:?} after its partitions were revoked")]
    NoRejoin(Duration),
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
    let inputs = config.inputs();
    let partitions = check_inputs(&config, "READ")?;
    info!(partitions, inputs = %inputs, "inputs are co-partitioned");
    if config.run.create_topics {
        let created = create_output_topics(&config).await?;
        if !created.is_empty() {
            info!(?created, "created topics");
        }
    }
    check_changelog(&config, partitions)?;
    let changelog = crate::kafka::changelog::topic_name(&config);
    let mut readable: Vec<&str> = inputs.subscribed();
    readable.push(&changelog);
    tokio::task::block_in_place(|| crate::kafka::check_read(&config, &readable))?;
    let shared = Arc::new(Shared {
        durability: Durability::new(&config, store.clone())?,
        config: config.clone(),
        inputs: inputs.clone(),
        store: store.clone(),
        status: status.clone(),
        owned: Mutex::new(BTreeSet::new()),
        generation: AtomicU64::new(0),
        fatal: Mutex::new(None),
        ends: Mutex::new(HashMap::new()),
        probing: AtomicBool::new(false),
        failed: AtomicBool::new(false),
        revoked_at: Mutex::new(None),
    });
    let durability = &shared.durability;
    let transactional = durability.is_transactional();
    let consumer: StreamConsumer<PipelineContext> = crate::kafka::client::input_consumer(&config)
        .create_with_context(PipelineContext { shared: shared.clone(), lag: LagReporter::default() })
        .map_err(|e| KafkaSetupError::client("creating the consumer", e))?;
    consumer.subscribe(&inputs.subscribed()).map_err(|e| KafkaSetupError::client("subscribing to the inputs", e))?;
    let rejoin_after = rejoin_timeout(&config);
    let mut closing = Closing { consumer: Some(consumer), shared: shared.clone(), clean: false };
    let consumer = closing.consumer.as_ref().expect("set above");

    let mut worker = Worker {
        engine: Engine::new(Rules::new(&config)),
        metrics: PipelineMetrics::new(),
        limits: config.input.limits(),
        outputs: Vec::with_capacity(8),
        cache: PartitionCache { generation: u64::MAX, partitions: Default::default() },
        clocks: Default::default(),
        shared: shared.clone(),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut flush_tick = durability.flush_timer();
    let slices = u64::from(config.run.sweep_slices);
    let mut sweep_tick = tokio::time::interval(config.run.sweep_interval / config.run.sweep_slices);
    let mut next_slice = 0u64;
    sweep_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                if let Some(blocker) = status.give_up(config.run.give_up_after) {
                    return Err(PipelineError::GaveUp { blocker, after: config.run.give_up_after });
                }
                if sync::lock(&shared.revoked_at).is_some_and(|at| at.elapsed() > rejoin_after) {
                    return Err(PipelineError::NoRejoin(rejoin_after));
                }
                status.watch(idle.quiet_for(), config.run.stall_timeout);
                durability.tick(consumer)?;
                worker.metrics.publish();
                worker.metrics.in_flight.set(durability.in_flight() as f64);
                idle.observe(worker.metrics.records());
                aligner.sync_generation(shared.generation.load(Ordering::SeqCst));
                if let Some(positions) = aligner.enabled().then(|| consumer.position().ok()).flatten() {
                    let ends = sync::lock(&shared.ends).clone();
                    let now = Instant::now();
                    for p in aligner.refresh(&inputs, &positions, &ends, &shared.owned(), pauses.backpressure) {
                        while let Some(record) = aligner.next_ready(p, now) {
                            worker.handle(record)?;
                        }
                    }
                }
                held_gauge.set(aligner.held() as f64);
                pauses.update(consumer, &shared, config.run.max_in_flight, aligner.take_pause_change());
                if last_log.elapsed() >= config.run.log_interval {
                    last_log = Instant::now();
                    let summary = worker.metrics.summary();
                    info!(records = summary.records, applied = summary.applied, dead_letters = summary.dead_letters,
                          outputs = summary.outputs, in_flight = durability.in_flight(), customers = store.customers(), "progress");
                }
            }
            _ = durability.released(), if !transactional => durability.release(),
            _ = flush_tick.tick() => {
                let owned = shared.owned();
                tokio::task::block_in_place(|| durability.flush(consumer, &owned))?;
            }
            _ = sweep_tick.tick() => {
                let slice = Slice { index: next_slice, of: slices };
                next_slice = (next_slice + 1) % slices;
                worker.sweep(slice, pauses.backpressure, |p| aligner.settled(p));
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
                            aligner.sync_generation(shared.generation.load(Ordering::SeqCst));
                            match inputs.of(m.topic()) {
                                Some(input) if input.kind.role() == Role::Erasures => {
                                    status.progressed(&input.name);
                                    worker.erase(&m, input.format, clock)?;
                                }
                                Some(input) => {
                                    status.progressed(&input.name);
                                    let record = Record::decode(&m, input, &worker.limits, clock);
                                    let (p, ts) = (record.partition, record.event_time());
                                    if let Some(record) = aligner.offer(record, ts) {
                                        worker.handle(record)?;
                                    }
                                    while let Some(record) = aligner.next_ready(p, clock.consumed) {
                                        worker.handle(record)?;
                                    }
                                }
                                // Only the inputs are subscribed.
                                None => {}
                            }
                        }
                        Err(e) => shared.client_error(&e, ""),
                    }
                    batch += 1;
                    let full = aligner.take_pause_change();
                    if full.is_some() || durability.in_flight() > config.run.max_in_flight {
                        pauses.update(consumer, &shared, config.run.max_in_flight, full);
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
    tokio::task::block_in_place(|| durability.finish(consumer, &owned))?;
    closing.clean = true;
    tokio::task::block_in_place(|| drop(closing));
    worker.metrics.publish();
    let summary = worker.metrics.summary();
    Stopped { summary: &summary }.emit();
    Ok(summary)
}

/// How long the consumer may stay without a group after a revoke before
/// engage gives up on it: twice `max.poll.interval.ms` (librdkafka's
/// bound on a rebalance; 300 s unless `[kafka]` sets it), and at least
/// `run.stall_timeout`. A healthy group assigns (if only nothing) well
/// within one.
fn rejoin_timeout(config: &Config) -> Duration {
    let poll_ms: u64 =
        config.kafka.properties.get("max.poll.interval.ms").and_then(|v| v.parse().ok()).unwrap_or(300_000);
    (2 * Duration::from_millis(poll_ms)).max(config.run.stall_timeout)
}

/// The input consumer, closed when the pipeline returns. Closing leaves
/// the group, and the revoke that comes with it finishes the partitions
/// (commits what is done). After an error that stops the pipeline (a
/// failed delivery, say) nothing more may be committed, and with the
/// broker gone the close would wait for it: the partitions are then
/// dropped without a commit, and the close is given [`CLOSE_WAIT`] before
/// the process goes on without it (the group drops the member after its
/// session timeout).
struct Closing {
    consumer: Option<StreamConsumer<PipelineContext>>,
    shared: Arc<Shared>,
    /// The pipeline finished its partitions and stops cleanly.
    clean: bool,
}

/// How long a close after an error may take.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

impl Drop for Closing {
    fn drop(&mut self) {
        let Some(consumer) = self.consumer.take() else { return };
        if self.clean {
            return drop(consumer);
        }
        self.shared.failed.store(true, Ordering::SeqCst);
        let (done, closed) = std::sync::mpsc::channel();
        let closer = std::thread::Builder::new().name("engage-close".into()).spawn(move || {
            drop(consumer);
            let _ = done.send(());
        });
        if closer.is_ok() {
            let _ = closed.recv_timeout(CLOSE_WAIT);
        }
    }
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
        let in_flight = shared.durability.in_flight();
        let backpressure = if self.backpressure { in_flight > max / 2 } else { in_flight > max };
        let generation = shared.generation.load(Ordering::SeqCst);
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
            let Some(input) = shared.inputs.of(e.topic()) else { continue };
            let key = (input.kind, e.partition());
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
            PauseFailed { error: &e }.emit();
            return;
        }
        self.applied.extend(wanted);
        self.generation = generation;
        if backpressure != self.backpressure {
            Backpressure { paused: backpressure, in_flight }.emit();
            self.backpressure = backpressure;
        }
    }
}
