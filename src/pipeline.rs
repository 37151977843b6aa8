//! `engage run`: the Kafka pipeline. One consumer-group member reads both
//! input topics, applies each record to the engine and hands the outputs to
//! the [`Sink`]. Changed customers are flushed to the state changelog every
//! `state.flush_interval`: encoded at once, written once every output sent
//! before is acknowledged (consumption goes on meanwhile); an input offset
//! is committed only after the flush that follows it is acknowledged too. So after any crash the changelog holds, for every
//! customer, a state whose outputs were all delivered, and the per-customer
//! applied offsets in it make replayed records no-ops (SPEC §8).
//!
//! Partition assignment uses librdkafka's `range` assignor: for topics with
//! the same partition count it gives partition *p* of both inputs to the
//! same member, which co-partitioning needs (a customer's clicks and
//! purchases must meet in one state). `cooperative-sticky` balances the two
//! topics independently and could split them, so it is not used. On revoke
//! a partition is flushed, committed and dropped; on assign its customers
//! are restored from the changelog before its first record is processed.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::changelog::{self, Dirty};
use crate::config::{Config, ProcessingGuarantee};
use crate::decode::{Envelope, decode};
use crate::engine::{Engine, Outcome, Rules, Slice, wall_clock_ms};
use crate::event::{InputTopic, Source};
use crate::kafka::{KafkaSetupError, check_changelog, check_inputs, client_config, create_output_topics};
use crate::output::Output;
use crate::sink::{CONTENT_TYPE, Origin, Progress, STATISTICS_INTERVAL_MS, SharedProgress, Sink, Work, lock};
use crate::store::{Partition, Store};
use crate::telemetry::{LagReporter, PipelineMetrics};

/// Why the pipeline stopped with an error. Exit non-zero: a restart resumes
/// from the last committed offsets and the changelog, so nothing is lost.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Start-up checks or Kafka clients failed.
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    /// An output could not be delivered; restarting may help once the
    /// broker is healthy.
    #[error("output delivery failed, stopping without committing past it: {0}")]
    Delivery(String),
    /// A partition's state could not be restored; processing without it
    /// would double-count, so engage stops. Retryable.
    #[error("state restore failed: {0}")]
    Restore(String),
    /// `exactly_once`: a transaction could not be committed (and was
    /// aborted). Restarting resumes from the last committed transaction.
    #[error("transaction failed and was aborted: {0}")]
    Transaction(String),
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

/// In logs about a partition number: both inputs' partition *p*.
impl std::fmt::Display for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}+{}", self.clickstream, self.purchases)
    }
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

/// What the main loop and the consumer callbacks share.
struct Shared {
    config: Config,
    sink: Arc<Sink>,
    store: Arc<Store>,
    inputs: Inputs,
    changelog: String,
    dirty: Mutex<Dirty>,
    /// Partition numbers currently assigned and restored.
    owned: Mutex<BTreeSet<i32>>,
    /// Bumped on every rebalance, so the main loop drops cached partitions.
    generation: AtomicU64,
    /// A failure inside a callback, for the main loop to act on.
    fatal: Mutex<Option<PipelineError>>,
    /// `exactly_once`: the next offset to read per input topic-partition,
    /// committed inside each transaction.
    processed: Mutex<HashMap<(InputTopic, i32), i64>>,
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here is a single update: a panic elsewhere
    // cannot leave the data half-written.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn owned(&self) -> Vec<i32> {
        guard(&self.owned).iter().copied().collect()
    }

    /// Takes a changelog flush of `partitions`: their changed customers
    /// are encoded now and written once every output sent before is
    /// acknowledged ([`Sink::stage_changelog`]), so a durable state never
    /// runs ahead of its delivered outputs; consumption does not wait. In
    /// `exactly_once` mode the outputs, the changelog records and the input
    /// offsets are instead committed as one transaction, which blocks.
    fn flush<C: ConsumerContext>(&self, consumer: &impl Consumer<C>, partitions: &[i32]) -> Result<(), PipelineError> {
        if partitions.is_empty() {
            return Ok(());
        }
        if let Some(f) = lock(self.sink.progress()).failure() {
            return Err(PipelineError::Delivery(f.to_string()));
        }
        self.write_changelog(partitions);
        if !self.sink.is_transactional() {
            self.sink.release_changelog();
            return Ok(());
        }
        self.sink
            .flush(self.config.run.shutdown_deadline)
            .map_err(|e| PipelineError::Transaction(format!("outputs not acknowledged: {e}")))?;
        self.sink.release_changelog();
        let mut offsets = TopicPartitionList::new();
        for ((kind, p), next) in guard(&self.processed).iter() {
            if partitions.contains(p) {
                let _ = offsets.add_partition_offset(self.inputs.name(*kind), *p, Offset::Offset(*next));
            }
        }
        let group = consumer
            .group_metadata()
            .ok_or_else(|| PipelineError::Transaction("the consumer has no group metadata".into()))?;
        self.sink
            .commit_transaction(&offsets, &group, self.config.run.shutdown_deadline)
            .map_err(|e| PipelineError::Transaction(e.to_string()))
    }

    fn write_changelog(&self, partitions: &[i32]) {
        for &p in partitions {
            let ids = guard(&self.dirty).take(p);
            let partition = self.store.partition(p);
            let records = ids
                .into_iter()
                .map(|id| {
                    let value = changelog::encode(&partition, &id);
                    (id, value)
                })
                .collect();
            self.sink.stage_changelog(p, records);
        }
    }

    /// Stores the offsets that became committable; auto-commit (and the
    /// synchronous commits on revoke and shutdown) write them to Kafka.
    fn store_done<C: ConsumerContext>(&self, consumer: &impl Consumer<C>) {
        let done = lock(self.sink.progress()).take_committable();
        if done.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::with_capacity(done.len());
        for (kind, partition, next) in done {
            if let Err(e) = tpl.add_partition_offset(self.inputs.name(kind), partition, Offset::Offset(next)) {
                warn!(error = %e, "cannot store offset");
            }
        }
        if let Err(e) = consumer.store_offsets(&tpl) {
            // A partition revoked meanwhile: its next owner resumes from the
            // last commit, which is safe.
            debug!(error = %e, "store offsets");
        }
    }

    /// Flush, wait until the flush and everything before it is
    /// acknowledged (at most `run.shutdown_deadline`), store and commit
    /// synchronously.
    fn finish<C: ConsumerContext>(&self, consumer: &impl Consumer<C>, partitions: &[i32]) -> Result<(), PipelineError> {
        self.flush(consumer, partitions)?;
        if self.sink.is_transactional() {
            return Ok(());
        }
        let deadline = Instant::now() + self.config.run.shutdown_deadline;
        loop {
            self.sink.release_changelog();
            let progress = lock(self.sink.progress());
            if let Some(f) = progress.failure() {
                return Err(PipelineError::Delivery(f.to_string()));
            }
            if partitions.iter().all(|p| progress.is_drained(*p)) {
                break;
            }
            drop(progress);
            if Instant::now() >= deadline {
                return Err(PipelineError::ShutdownDeadline(self.config.run.shutdown_deadline));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.store_done(consumer);
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            // NoOffset: nothing new to commit.
            debug!(error = %e, "commit");
        }
        Ok(())
    }

    fn set_fatal(&self, e: PipelineError) {
        error!(error = %e, "fatal");
        guard(&self.fatal).get_or_insert(e);
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<i32> {
    let set: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
    set.into_iter().collect()
}

/// Consumer callbacks: on revoke, finish and commit before letting go; on
/// assign, restore before the first record.
struct PipelineContext {
    shared: Arc<Shared>,
    lag: LagReporter,
}

impl ClientContext for PipelineContext {
    fn stats(&self, stats: rdkafka::Statistics) {
        self.lag.report(&stats);
    }
}

impl ConsumerContext for PipelineContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else { return };
        let s = &self.shared;
        metrics::counter!(crate::telemetry::REBALANCES, "kind" => "revoke").increment(1);
        s.generation.fetch_add(1, Ordering::SeqCst);
        let partitions: Vec<i32> = partitions_of(tpl).into_iter().filter(|p| guard(&s.owned).contains(p)).collect();
        if let Err(e) = s.finish(consumer, &partitions) {
            // The next owner resumes from the last commit and the changelog.
            warn!(error = %e, "revoke: could not finish; uncommitted records will be reprocessed");
        }
        guard(&s.processed).retain(|(_, p), _| !partitions.contains(p));
        for p in partitions {
            s.sink.forget(p);
            guard(&s.dirty).forget(p);
            guard(&s.owned).remove(&p);
            s.store.remove_partition(p);
            info!(topic = %s.inputs, partition = p, "partition revoked: flushed, committed, dropped");
        }
        metrics::gauge!(crate::telemetry::ASSIGNED_PARTITIONS).set(guard(&s.owned).len() as f64);
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else { return };
        let s = &self.shared;
        metrics::counter!(crate::telemetry::REBALANCES, "kind" => "assign").increment(1);
        s.generation.fetch_add(1, Ordering::SeqCst);
        for p in partitions_of(tpl) {
            if guard(&s.owned).contains(&p) {
                continue;
            }
            s.store.remove_partition(p);
            let partition = s.store.partition(p);
            let _restoring = s.store.begin_restore();
            match changelog::restore(&s.config, &s.changelog, &partition, s.config.state.restore_timeout) {
                Ok(stats) => {
                    let rate = stats.records as f64 / stats.elapsed.as_secs_f64().max(1e-9);
                    info!(
                        topic = %s.inputs,
                        partition = p,
                        changelog = %s.changelog,
                        records = stats.records,
                        customers = stats.customers,
                        unreadable = stats.unreadable,
                        seconds = stats.elapsed.as_secs_f64(),
                        records_per_second = rate as u64,
                        "partition assigned: state restored"
                    );
                    guard(&s.owned).insert(p);
                    metrics::counter!(crate::telemetry::RESTORE_RECORDS).increment(stats.records);
                    metrics::histogram!(crate::telemetry::RESTORE_DURATION).record(stats.elapsed.as_secs_f64());
                }
                Err(e) => s.set_fatal(PipelineError::Restore(format!("partition {p}: {e}"))),
            }
        }
        s.store.status().set_joined();
        metrics::gauge!(crate::telemetry::ASSIGNED_PARTITIONS).set(guard(&s.owned).len() as f64);
    }
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
    /// An event at `event_ms` was taken up at `at`.
    fn observe(&mut self, event_ms: i64, at: Instant) {
        self.max_event_ms = self.max_event_ms.max(event_ms);
        self.last_record = at;
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

/// Runs the processor until `shutdown` is cancelled or a fatal error.
/// `store` receives the customer states (the query path reads it).
pub async fn run(config: Config, store: Arc<Store>, shutdown: CancellationToken) -> Result<RunSummary, PipelineError> {
    let partitions = check_inputs(&config)?;
    info!(partitions, clickstream = %config.topics.clickstream, purchases = %config.topics.purchases, "inputs are co-partitioned");
    if config.run.create_topics {
        let created = create_output_topics(&config).await?;
        if !created.is_empty() {
            info!(?created, "created topics");
        }
    }
    check_changelog(&config, partitions)?;
    let progress: SharedProgress = Arc::new(Mutex::new(Progress::new(true)));
    let sink = Arc::new(Sink::new(&config, progress.clone())?);
    let inputs = Inputs { clickstream: config.topics.clickstream.clone(), purchases: config.topics.purchases.clone() };
    let shared = Arc::new(Shared {
        changelog: changelog::topic_name(&config),
        config: config.clone(),
        sink: sink.clone(),
        store: store.clone(),
        inputs: inputs.clone(),
        dirty: Mutex::new(Dirty::default()),
        owned: Mutex::new(BTreeSet::new()),
        generation: AtomicU64::new(0),
        fatal: Mutex::new(None),
        processed: Mutex::new(HashMap::new()),
    });
    let transactional = sink.is_transactional();
    let consumer: StreamConsumer<PipelineContext> = client_config(
        &config,
        &[
            ("group.id", config.run.group_id.as_str()),
            ("enable.auto.offset.store", "false"),
            // exactly_once commits offsets inside its transactions.
            (
                "enable.auto.commit",
                if config.run.processing_guarantee == ProcessingGuarantee::ExactlyOnce { "false" } else { "true" },
            ),
            ("auto.commit.interval.ms", "1000"),
            ("auto.offset.reset", "earliest"),
            ("partition.assignment.strategy", "range"),
            ("statistics.interval.ms", STATISTICS_INTERVAL_MS),
            // The broker may hold a fetch this long when little data is
            // waiting (tansu holds it the whole time): it bounds the
            // latency floor. 10 ms costs at most 100 idle fetches/s.
            ("fetch.wait.max.ms", "10"),
            // librdkafka stops fetching once the consumer queue (all
            // partitions together) holds `queued.min.messages`, then waits
            // `fetch.queue.backoff.ms` (1 s by default) before looking
            // again. The main loop drains 100 000 records well inside a
            // second and then sat idle: this alone held throughput near
            // 100 000 events/s. Look again after 20 ms, and keep a smaller
            // queue (it is memory, and 20 ms of records is far less).
            ("fetch.queue.backoff.ms", "20"),
            ("queued.min.messages", "20000"),
            ("queued.max.messages.kbytes", "16384"),
        ],
    )
    .create_with_context(PipelineContext { shared: shared.clone(), lag: LagReporter::default() })
    .map_err(|e| KafkaSetupError::client("creating the consumer", e))?;
    consumer
        .subscribe(&[&inputs.clickstream, &inputs.purchases])
        .map_err(|e| KafkaSetupError::client("subscribing to the inputs", e))?;

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
    let mut paused = false;
    // Population gauges, refreshed every log interval until this returns.
    let census = CancellationToken::new();
    tokio::spawn(crate::telemetry::census_loop(store.clone(), config.run.log_interval, census.clone()));
    let _stop_census = census.drop_guard();

    loop {
        if let Some(e) = guard(&shared.fatal).take() {
            return Err(e);
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                store.status().beat(wall_clock_ms());
                if let Some(failure) = lock(&progress).failure() {
                    return Err(PipelineError::Delivery(failure.to_string()));
                }
                if !transactional {
                    sink.release_changelog();
                    shared.store_done(&consumer);
                }
                worker.metrics.in_flight.set(lock(&progress).in_flight() as f64);
                idle.observe(worker.summary.records);
                paused = backpressure(&consumer, &progress, config.run.max_in_flight, paused);
                if last_log.elapsed() >= config.run.log_interval {
                    last_log = Instant::now();
                    let summary = &worker.summary;
                    info!(records = summary.records, applied = summary.applied, dead_letters = summary.dead_letters,
                          outputs = summary.outputs, in_flight = lock(&progress).in_flight(), customers = store.customers(), "progress");
                }
            }
            _ = flush_tick.tick() => {
                let owned = shared.owned();
                tokio::task::block_in_place(|| shared.flush(&consumer, &owned))?;
            }
            _ = sweep_tick.tick() => {
                let slice = Slice { index: next_slice, of: slices };
                next_slice = (next_slice + 1) % slices;
                worker.sweep(slice, paused);
            }
            message = consumer.recv() => {
                // Then whatever else is already fetched, without going back
                // through the select (its timers cost more than a record).
                let mut next = Some(message);
                let mut batch = 0;
                let clock = BatchClock::now();
                while let Some(message) = next {
                    match message {
                        Ok(m) => worker.handle(&m, clock)?,
                        Err(e) => warn!(error = %e, "consumer error"),
                    }
                    batch += 1;
                    if lock(&progress).in_flight() > config.run.max_in_flight {
                        paused = backpressure(&consumer, &progress, config.run.max_in_flight, paused);
                        break;
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

/// The clocks read once per batch of records rather than per record (the
/// clock reads were 8 % of the main loop): a batch is handled within a few
/// milliseconds, so its records share the time they were taken up, and
/// their processing latency counts from the batch's start.
#[derive(Clone, Copy)]
struct BatchClock {
    /// When the batch was taken up.
    consumed: Instant,
    /// Wall-clock time then (epoch ms), for the future-skew check.
    wall_ms: i64,
}

impl BatchClock {
    fn now() -> BatchClock {
        BatchClock { consumed: Instant::now(), wall_ms: wall_clock_ms() }
    }
}

/// The future's output if it is ready right now, without waiting.
fn ready_now<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// Gives memory the allocator holds free back to the OS while the input is
/// quiet: once no record has arrived for [`IDLE_RELEASE_EVERY`], and again
/// every such interval while it stays quiet (a restore's clients free
/// their buffers after it ends). mimalloc returns a freed span only when
/// some thread next allocates, so after a burst (a backlog, a restore) an
/// idle process kept tens of MiB it no longer used. While records flow,
/// freed memory is reused instead, and the hot path is left alone
/// (README "Performance").
struct IdleRelease {
    every: Duration,
    release: fn(),
    records: u64,
    last_record: Instant,
    last_release: Instant,
}

/// How long the input must be quiet before freed memory is returned, and
/// how often it is returned while the input stays quiet.
const IDLE_RELEASE_EVERY: Duration = Duration::from_secs(1);

impl IdleRelease {
    fn new(every: Duration, release: fn()) -> IdleRelease {
        IdleRelease { every, release, records: 0, last_record: Instant::now(), last_release: Instant::now() }
    }

    /// Called on the main loop's tick with the records handled so far.
    fn observe(&mut self, records: u64) {
        if records != self.records {
            (self.records, self.last_record) = (records, Instant::now());
        } else if self.last_record.elapsed() >= self.every && self.last_release.elapsed() >= self.every {
            (self.release)();
            self.last_release = Instant::now();
        }
    }
}

/// How to return the allocator's free memory to the OS, if the program
/// registered a way ([`set_memory_release`]).
static MEMORY_RELEASE: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Registers how the main loop returns the allocator's free memory to the
/// OS when the input goes quiet. The allocator is the program's choice:
/// the `engage` binary registers a forced mimalloc collection. Without
/// one, nothing is done. Only the first registration counts.
pub fn set_memory_release(release: fn()) {
    let _ = MEMORY_RELEASE.set(release);
}

fn release_free_memory() {
    if let Some(release) = MEMORY_RELEASE.get() {
        release();
    }
}

/// The main loop's per-record and per-sweep state.
struct Worker {
    engine: Engine,
    metrics: PipelineMetrics,
    limits: crate::decode::Limits,
    summary: RunSummary,
    outputs: Vec<Output>,
    cache: PartitionCache,
    clocks: HashMap<i32, StreamClock>,
    shared: Arc<Shared>,
}

impl Worker {
    /// Decodes, applies and publishes one input record (or dead-letters it).
    fn handle(&mut self, message: &BorrowedMessage<'_>, clock: BatchClock) -> Result<(), PipelineError> {
        let shared = &*self.shared;
        // A restore that failed inside this very recv() must stop us
        // before the partition's records are applied to empty state.
        if let Some(e) = guard(&shared.fatal).take() {
            return Err(e);
        }
        let config = &shared.config;
        let sink = &shared.sink;
        self.summary.records += 1;
        let kind = shared.inputs.kind(message.topic());
        self.metrics.record_in(kind);
        let p = message.partition();
        let work = Work::Record { topic: kind, partition: p, offset: message.offset() };
        if sink.is_transactional() {
            guard(&shared.processed).insert((kind, p), message.offset() + 1);
        }
        let format = match kind {
            InputTopic::Clickstream => config.input.clickstream_format,
            InputTopic::Purchases => config.input.purchases_format,
        };
        let envelope = Envelope {
            key: message.key(),
            require_key: true,
            timestamp_ms: message.timestamp().to_millis(),
            content_type: content_type(message),
        };
        let value = message.payload().unwrap_or(&[]);
        match decode(Some(kind), format, &envelope, value, &self.limits, clock.wall_ms) {
            Ok(event) => {
                self.metrics.event(&event.kind);
                let partition = self.cache.get(shared, p);
                let source = Source { topic: kind, offset: message.offset() };
                self.clocks.entry(p).or_default().observe(event.ts_ms, clock.consumed);
                match self.engine.apply(&partition, &event, Some(source), &mut self.outputs) {
                    Outcome::Applied => {
                        self.summary.applied += 1;
                        guard(&shared.dirty).mark(p, &event.customer_id);
                    }
                    Outcome::Duplicate => {
                        self.summary.duplicates += 1;
                        self.metrics.duplicate(kind);
                    }
                    Outcome::UnknownType => {
                        self.summary.unknown_types += 1;
                        self.metrics.unknown_type(kind);
                    }
                }
                count_outputs(&self.metrics, &self.outputs);
                self.summary.outputs += self.outputs.len() as u64;
                let origin = Origin { consumed: clock.consumed, produced_ms: message.timestamp().to_millis() };
                sink.send_outputs(&mut self.outputs, work, Some(origin));
            }
            Err(error) => {
                self.summary.dead_letters += 1;
                self.metrics.dead_letter(error.reason);
                debug!(topic = message.topic(), partition = p, offset = message.offset(),
                       reason = %error.reason, "dead letter");
                sink.send_dead_letter(message, &error, work);
            }
        }
        Ok(())
    }

    /// One sweep tick: `slice` of every owned partition, at each partition's
    /// stream time; then retention.
    fn sweep(&mut self, slice: Slice, paused: bool) {
        let started = Instant::now();
        let shared = &*self.shared;
        let config = &shared.config;
        let retention_ms = config.state.retention.as_millis() as i64;
        for p in shared.owned() {
            let Some(clock) = self.clocks.get(&p) else { continue };
            let now = clock.stream_time(config.run.idle_grace, paused);
            let partition = self.cache.get(shared, p);
            self.engine.sweep_slice(&partition, now, slice, &mut self.outputs);
            let evicted = partition.evict_idle(now.saturating_sub(retention_ms));
            let mut dirty = guard(&shared.dirty);
            for id in self.outputs.iter().map(Output::customer_id).chain(evicted.iter().map(|id| id.as_str())) {
                dirty.mark(p, id);
            }
            drop(dirty);
            if !evicted.is_empty() {
                info!(topic = %shared.inputs, partition = p, evicted = evicted.len(), "retention: evicted idle customers");
            }
            if !self.outputs.is_empty() {
                count_outputs(&self.metrics, &self.outputs);
                self.summary.outputs += self.outputs.len() as u64;
                debug!(topic = %shared.inputs, partition = p, stream_time = now, outputs = self.outputs.len(), "sweep");
                shared.sink.send_outputs(&mut self.outputs, Work::Sweep { partition: p }, None);
            }
        }
        self.metrics.sweep_duration.record(started.elapsed().as_secs_f64());
    }
}

/// The main loop's handles on store partitions. A rebalance (which runs
/// inside `recv`, between any two records) replaces partitions in the
/// store, so every lookup first checks the rebalance generation: applying a
/// record to a dropped partition object would silently lose it.
struct PartitionCache {
    generation: u64,
    partitions: HashMap<i32, Arc<Partition>>,
}

impl PartitionCache {
    fn get(&mut self, shared: &Shared, p: i32) -> Arc<Partition> {
        let generation = shared.generation.load(Ordering::SeqCst);
        if generation != self.generation {
            self.generation = generation;
            self.partitions.clear();
        }
        self.partitions.entry(p).or_insert_with(|| shared.store.partition(p)).clone()
    }
}

/// Pauses every assigned partition while too many outputs are in flight,
/// and resumes once they drain below half. Returns whether paused.
fn backpressure(
    consumer: &StreamConsumer<PipelineContext>,
    progress: &SharedProgress,
    max: usize,
    paused: bool,
) -> bool {
    let in_flight = lock(progress).in_flight();
    let want_paused = if paused { in_flight > max / 2 } else { in_flight > max };
    if want_paused != paused
        && let Ok(assignment) = consumer.assignment()
    {
        let result = if want_paused { consumer.pause(&assignment) } else { consumer.resume(&assignment) };
        match result {
            Ok(()) => info!(in_flight, paused = want_paused, "backpressure"),
            Err(e) => warn!(error = %e, "backpressure: pause/resume failed"),
        }
    }
    want_paused
}

fn count_outputs(metrics: &PipelineMetrics, outputs: &[Output]) {
    for o in outputs {
        match o {
            Output::Score(_) => metrics.scores.increment(1),
            Output::Alert(a) => {
                metrics.alerts.increment(1);
                metrics.alert(a.kind);
            }
        }
    }
}

fn content_type<'a>(message: &'a BorrowedMessage<'_>) -> Option<&'a [u8]> {
    message.headers()?.iter().find(|h| h.key.eq_ignore_ascii_case(CONTENT_TYPE)).and_then(|h| h.value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    static RELEASES: AtomicUsize = AtomicUsize::new(0);

    fn count_release() {
        RELEASES.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn memory_is_released_only_while_the_input_is_quiet() {
        let every = Duration::from_millis(40);
        let mut idle = IdleRelease::new(every, count_release);
        let released = || RELEASES.load(Ordering::SeqCst);
        // Records keep arriving, on every tick for longer than `every`:
        // the hot path is left alone.
        for records in 1..=8 {
            idle.observe(records);
            std::thread::sleep(every / 4);
        }
        assert_eq!(released(), 0);
        // Quiet: released once `every` has passed, and again each `every`
        // while it stays quiet, not on every tick.
        idle.observe(9);
        idle.observe(9);
        assert_eq!(released(), 0, "not before the input has been quiet for `every`");
        std::thread::sleep(every);
        idle.observe(9);
        assert_eq!(released(), 1);
        idle.observe(9);
        assert_eq!(released(), 1, "at most once per `every`");
        std::thread::sleep(every);
        idle.observe(9);
        assert_eq!(released(), 2);
        // A record ends the quiet spell.
        idle.observe(10);
        std::thread::sleep(every);
        idle.observe(11);
        assert_eq!(released(), 2);
    }
}
