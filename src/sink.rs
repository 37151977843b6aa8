//! The Kafka sink: publishes score changes, churn alerts and dead letters
//! with an idempotent producer, and tracks which input records are fully
//! delivered so their offsets — and only theirs — may be committed (SPEC §8).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};

use compact_str::CompactString;

use crate::config::{Config, ProcessingGuarantee};
use crate::decode::{DecodeError, Format};
use crate::event::InputTopic;
use crate::kafka::{KafkaSetupError, client_config};
use crate::output::{OUTPUT_SCHEMA_VERSION, Output};
use crate::telemetry::{self, LatencyMetrics};

/// A unit of work whose deliveries gate commits, queued per input
/// partition number (both input topics' partition *p* share one queue, in
/// the order the pipeline did the work).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// One input record: its outputs (or dead letter).
    Record {
        /// Input topic.
        topic: InputTopic,
        /// Input partition.
        partition: i32,
        /// Input offset.
        offset: i64,
    },
    /// One churn sweep of a partition: its alerts and score changes.
    Sweep {
        /// Input partition.
        partition: i32,
    },
    /// One changelog flush of a partition: the state records written. Only
    /// when it completes do the offsets of the records before it become
    /// committable, because only then is their effect on state durable.
    Flush {
        /// Input partition.
        partition: i32,
    },
}

impl Work {
    fn partition(&self) -> i32 {
        match *self {
            Work::Record { partition, .. } | Work::Sweep { partition } | Work::Flush { partition } => partition,
        }
    }
}

/// What a delivery report refers to: a registered [`Work`] item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    partition: i32,
    id: u64,
}

#[derive(Debug, Default)]
struct PartitionProgress {
    /// Work items in order: (id, work, deliveries still awaited).
    pending: VecDeque<(u64, Work, u32)>,
    next_id: u64,
    /// Highest offset per input topic whose record and all work before it
    /// are delivered, not yet covered by a completed flush.
    delivered: [Option<i64>; 2],
    /// Highest offset per input topic covered by a completed flush: safe to
    /// commit.
    durable: [Option<i64>; 2],
    /// Whether `durable` moved since it was last taken.
    advanced: bool,
}

impl PartitionProgress {
    fn settle(&mut self, flushes: bool) {
        while let Some(&(_, work, 0)) = self.pending.front() {
            self.pending.pop_front();
            match work {
                Work::Record { topic, offset, .. } => {
                    self.delivered[topic.index()] = Some(offset);
                    if !flushes {
                        self.promote();
                    }
                }
                Work::Flush { .. } => self.promote(),
                Work::Sweep { .. } => {}
            }
        }
    }

    fn promote(&mut self) {
        if self.durable != self.delivered {
            self.durable = self.delivered;
            self.advanced = true;
        }
    }
}

/// Delivery bookkeeping for every owned input partition. An input offset is
/// *committable* when the record and all work before it in its partition
/// have every output acknowledged by the broker, and — when a changelog is
/// kept — a changelog flush after it has been acknowledged too. Only
/// committable offsets are ever stored for commit.
#[derive(Debug)]
pub struct Progress {
    parts: HashMap<i32, PartitionProgress>,
    in_flight: usize,
    failure: Option<String>,
    flushes: bool,
}

impl Progress {
    /// Bookkeeping where offsets wait for changelog flushes (`flushes`) or
    /// only for the record's own outputs.
    pub fn new(flushes: bool) -> Progress {
        Progress { parts: HashMap::new(), in_flight: 0, failure: None, flushes }
    }

    /// Records that `work` produced `deliveries` messages about to be sent,
    /// and returns the token their delivery reports carry. Work must be
    /// registered in the order it was done.
    pub fn register(&mut self, work: Work, deliveries: u32) -> Token {
        let partition = work.partition();
        let p = self.parts.entry(partition).or_default();
        let id = p.next_id;
        p.next_id += 1;
        p.pending.push_back((id, work, deliveries));
        self.in_flight += deliveries as usize;
        p.settle(self.flushes);
        Token { partition, id }
    }

    /// Records one delivery report. A failed delivery is fatal: it is kept
    /// and the offsets after it never become committable.
    pub fn ack(&mut self, token: Token, result: Result<(), String>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Err(e) = result {
            self.failure.get_or_insert(e);
            return;
        }
        let Some(p) = self.parts.get_mut(&token.partition) else { return };
        if let Ok(i) = p.pending.binary_search_by_key(&token.id, |(id, ..)| *id) {
            p.pending[i].2 = p.pending[i].2.saturating_sub(1);
        }
        p.settle(self.flushes);
    }

    /// Outputs sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The first delivery failure, if any.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Input partitions whose committable offsets moved since the last call,
    /// with the next offset to consume (last + 1), which is what Kafka
    /// commits.
    pub fn take_committable(&mut self) -> Vec<(InputTopic, i32, i64)> {
        let mut out = Vec::new();
        for (partition, p) in &mut self.parts {
            if p.advanced {
                p.advanced = false;
                for t in InputTopic::ALL {
                    if let Some(o) = p.durable[t.index()] {
                        out.push((t, *partition, o + 1));
                    }
                }
            }
        }
        out.sort_by_key(|(t, p, _)| (*p, t.index()));
        out
    }

    /// Registers a changelog flush whose records are not written yet. It
    /// holds a *gate* in place of deliveries (not counted as in flight), so
    /// neither it nor anything after it completes until [`Progress::open`]
    /// replaces the gate with the flush's real deliveries.
    pub fn register_gated_flush(&mut self, partition: i32) -> Token {
        let token = self.register(Work::Flush { partition }, 1);
        self.in_flight -= 1;
        token
    }

    /// Whether every piece of work registered before `token` is complete,
    /// so a gated flush may now write its records.
    pub fn is_next(&self, token: Token) -> bool {
        self.parts.get(&token.partition).and_then(|p| p.pending.front()).is_some_and(|(id, ..)| *id == token.id)
    }

    /// Replaces a gated flush's gate with the `deliveries` its records are
    /// about to make.
    pub fn open(&mut self, token: Token, deliveries: u32) {
        let Some(p) = self.parts.get_mut(&token.partition) else { return };
        if let Ok(i) = p.pending.binary_search_by_key(&token.id, |(id, ..)| *id) {
            p.pending[i].2 = deliveries;
            self.in_flight += deliveries as usize;
        }
        p.settle(self.flushes);
    }

    /// Whether any work of this partition still awaits deliveries.
    pub fn is_drained(&self, partition: i32) -> bool {
        self.parts.get(&partition).is_none_or(|p| p.pending.is_empty())
    }

    /// Forgets a partition (after it was revoked and committed).
    pub fn forget(&mut self, partition: i32) {
        if let Some(p) = self.parts.remove(&partition) {
            let waiting: u32 = p.pending.iter().map(|(.., n)| n).sum();
            self.in_flight = self.in_flight.saturating_sub(waiting as usize);
        }
    }
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Shared handle on [`Progress`].
pub type SharedProgress = Arc<Mutex<Progress>>;

/// Locks progress; its updates are single statements, so a panic elsewhere
/// cannot leave it half-updated and poisoning is ignored.
pub fn lock(p: &SharedProgress) -> std::sync::MutexGuard<'_, Progress> {
    guard(p)
}

/// Where an output came from, for the latency histograms.
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    /// When the input record was consumed.
    pub consumed: Instant,
    /// The input record's Kafka timestamp (epoch ms), when it has one.
    pub produced_ms: Option<i64>,
}

/// What each sent record carries to its delivery report.
#[derive(Debug)]
pub struct Delivery {
    token: Token,
    origin: Option<Origin>,
}

/// Producer callbacks: delivery reports go straight into [`Progress`] and
/// the latency histograms.
pub struct SinkContext {
    progress: SharedProgress,
    latency: LatencyMetrics,
}

impl ClientContext for SinkContext {
    fn stats(&self, stats: rdkafka::Statistics) {
        metrics::gauge!(telemetry::PRODUCER_QUEUE).set(stats.msg_cnt as f64);
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, delivery: Self::DeliveryOpaque) {
        let result = match result {
            Ok(_) => {
                if let Some(origin) = delivery.origin {
                    self.latency.processing.record(origin.consumed.elapsed().as_secs_f64());
                    if let Some(ms) = origin.produced_ms {
                        let ms = crate::engine::wall_clock_ms().saturating_sub(ms).max(0);
                        self.latency.end_to_end.record(ms as f64 / 1000.0);
                    }
                }
                Ok(())
            }
            Err((e, m)) => {
                metrics::counter!(telemetry::DELIVERY_ERRORS, "topic" => m.topic().to_string()).increment(1);
                Err(format!("delivery to {} failed: {e}", m.topic()))
            }
        };
        lock(&self.progress).ack(delivery.token, result);
    }
}

/// Publishes outputs and dead letters.
pub struct Sink {
    producer: ThreadedProducer<SinkContext>,
    progress: SharedProgress,
    scores: (String, Format),
    alerts: (String, Format),
    dlq: String,
    changelog: String,
    /// Changelog flushes encoded but waiting for the work before them, per
    /// partition, oldest first.
    staged: Mutex<HashMap<i32, VecDeque<(Token, ChangelogRecords)>>>,
    transactional: bool,
    /// The encoding buffer reused for every output (librdkafka copies the
    /// payload when it is queued).
    scratch: Mutex<Vec<u8>>,
}

/// One partition's changed customers, encoded: key and value (`None` for a
/// tombstone).
pub type ChangelogRecords = Vec<(CompactString, Option<Vec<u8>>)>;

/// How engage's producer delivers, unless `[kafka]` says otherwise:
/// idempotent, acknowledged by every in-sync replica, lingering 5 ms to
/// batch. (`scripts/bench-e2e`'s pipe baseline publishes with these too.)
pub const PRODUCER_DEFAULTS: [(&str, &str); 3] = [("enable.idempotence", "true"), ("linger.ms", "5"), ("acks", "all")];

/// How often librdkafka reports the statistics behind the lag and producer
/// queue metrics, unless `[kafka] statistics_interval_ms` says otherwise.
pub const STATISTICS_INTERVAL_MS: &str = "5000";

/// The header that names a record's encoding.
pub const CONTENT_TYPE: &str = "content-type";

fn content_type(format: Format) -> &'static str {
    match format {
        Format::Json => "application/json",
        Format::Protobuf => "application/x-protobuf",
    }
}

impl Sink {
    /// An idempotent producer on the configured brokers.
    pub fn new(config: &Config, progress: SharedProgress) -> Result<Sink, KafkaSetupError> {
        let defaults = [PRODUCER_DEFAULTS.as_slice(), &[("statistics.interval.ms", STATISTICS_INTERVAL_MS)]].concat();
        let mut client = client_config(config, &defaults);
        let transactional = config.run.processing_guarantee == ProcessingGuarantee::ExactlyOnce;
        if transactional {
            client.set("transactional.id", config.run.transactional_id());
        }
        let producer: ThreadedProducer<SinkContext> = client
            .create_with_context(SinkContext { progress: progress.clone(), latency: LatencyMetrics::new() })
            .map_err(|e| KafkaSetupError::client("creating the producer", e))?;
        if transactional {
            producer
                .init_transactions(Duration::from_secs(30))
                .and_then(|()| producer.begin_transaction())
                .map_err(|e| KafkaSetupError::client("initialising transactions (does the broker support them?)", e))?;
        }
        let t = &config.topics;
        let changelog = crate::changelog::topic_name(config);
        // Registered at 0, so dashboards and alert rules see the series
        // before the first failure.
        for topic in [&t.scores, &t.alerts, &t.dlq, &changelog] {
            metrics::counter!(telemetry::DELIVERY_ERRORS, "topic" => topic.clone()).absolute(0);
        }
        Ok(Sink {
            producer,
            progress,
            scores: (t.scores.clone(), config.output.scores_format),
            alerts: (t.alerts.clone(), config.output.alerts_format),
            dlq: t.dlq.clone(),
            changelog,
            staged: Mutex::new(HashMap::new()),
            transactional,
            scratch: Mutex::new(Vec::with_capacity(1024)),
        })
    }

    /// The delivery bookkeeping.
    pub fn progress(&self) -> &SharedProgress {
        &self.progress
    }

    /// Sends the outputs one piece of work caused (possibly none); `origin`
    /// is the input record behind them (none for a sweep).
    pub fn send_outputs(&self, outputs: &mut Vec<Output>, work: Work, origin: Option<Origin>) {
        let token = lock(&self.progress).register(work, outputs.len() as u32);
        let mut payload = guard(&self.scratch);
        for output in outputs.drain(..) {
            let ((topic, format), kind) = match &output {
                Output::Score(_) => (&self.scores, "engage.v1.ScoreChanged"),
                Output::Alert(_) => (&self.alerts, "engage.v1.ChurnAlert"),
            };
            output.encode_into(*format, &mut payload);
            let headers = OwnedHeaders::new_with_capacity(3)
                .insert(Header { key: CONTENT_TYPE, value: Some(content_type(*format)) })
                .insert(Header { key: "engage.schema.version", value: Some(OUTPUT_SCHEMA_VERSION) })
                .insert(Header { key: "engage.message.type", value: Some(kind) });
            let record = BaseRecord::with_opaque_to(topic, Box::new(Delivery { token, origin }))
                .key(output.customer_id())
                .payload(payload.as_slice())
                .headers(headers);
            self.send(record);
        }
    }

    /// Queues one partition's changed customers (value `None`: a tombstone
    /// for an evicted customer) as one [`Work::Flush`], without waiting:
    /// the records were encoded when the flush was taken, and they are
    /// written by [`Sink::release_changelog`] once every output of the work
    /// before the flush is acknowledged — so the changelog never holds a
    /// state whose outputs could still be lost, while consumption goes on
    /// meanwhile. An empty flush still completes, releasing the offsets
    /// before it.
    pub fn stage_changelog(&self, partition: i32, records: ChangelogRecords) {
        let token = lock(&self.progress).register_gated_flush(partition);
        guard(&self.staged).entry(partition).or_default().push_back((token, records));
    }

    /// Writes every staged flush whose preceding work is complete. Cheap
    /// when none is ready; the pipeline calls it on its tick.
    pub fn release_changelog(&self) {
        let mut staged = guard(&self.staged);
        for queue in staged.values_mut() {
            while let Some(&(token, _)) = queue.front() {
                if !lock(&self.progress).is_next(token) {
                    break;
                }
                let Some((token, records)) = queue.pop_front() else { break };
                lock(&self.progress).open(token, records.len() as u32);
                metrics::counter!(telemetry::CHANGELOG_WRITES).increment(records.len() as u64);
                for (id, value) in &records {
                    let mut record: BaseRecord<'_, str, [u8], Box<Delivery>> =
                        BaseRecord::with_opaque_to(&self.changelog, Box::new(Delivery { token, origin: None }))
                            .key(id.as_str())
                            .partition(token.partition);
                    if let Some(v) = value {
                        record = record.payload(v);
                    }
                    self.send(record);
                }
            }
        }
    }

    /// Forgets a partition's bookkeeping and staged flushes (after it was
    /// revoked and committed).
    pub fn forget(&self, partition: i32) {
        guard(&self.staged).remove(&partition);
        lock(&self.progress).forget(partition);
    }

    /// Sends a record engage cannot use to the dead-letter topic: original
    /// key, value and headers, plus the SPEC §3 error headers.
    pub fn send_dead_letter(&self, message: &BorrowedMessage<'_>, error: &DecodeError, work: Work) {
        let token = lock(&self.progress).register(work, 1);
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for h in original.iter() {
                headers = headers.insert(Header { key: h.key, value: h.value });
            }
        }
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let headers = headers
            .insert(Header { key: "engage.error", value: Some(error.reason.as_str()) })
            .insert(Header { key: "engage.error.detail", value: Some(error.detail.as_str()) })
            .insert(Header { key: "engage.source.topic", value: Some(message.topic()) })
            .insert(Header { key: "engage.source.partition", value: Some(partition.as_str()) })
            .insert(Header { key: "engage.source.offset", value: Some(offset.as_str()) });
        let mut record: BaseRecord<'_, [u8], [u8], Box<Delivery>> =
            BaseRecord::with_opaque_to(&self.dlq, Box::new(Delivery { token, origin: None })).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(value) = message.payload() {
            record = record.payload(value);
        }
        self.send(record);
    }

    /// Enqueues a record, waiting while librdkafka's queue is full (the
    /// in-flight bound normally keeps it from filling). Any other enqueue
    /// error is reported as a delivery failure, which stops the pipeline.
    fn send<K: rdkafka::message::ToBytes + ?Sized, P: rdkafka::message::ToBytes + ?Sized>(
        &self,
        mut record: BaseRecord<'_, K, P, Box<Delivery>>,
    ) {
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, r)) => {
                    let token = r.delivery_opaque.token;
                    metrics::counter!(telemetry::DELIVERY_ERRORS, "topic" => r.topic.to_string()).increment(1);
                    lock(&self.progress).ack(token, Err(format!("cannot enqueue to {}: {e}", r.topic)));
                    return;
                }
            }
        }
    }

    /// Whether outputs go out in transactions (`exactly_once`).
    pub fn is_transactional(&self) -> bool {
        self.transactional
    }

    /// `exactly_once`: commits the open transaction together with the
    /// consumer offsets `offsets` (next offsets to read), and opens the next.
    /// Any error is fatal: the transaction is aborted, and a restart resumes
    /// from the last committed one.
    pub fn commit_transaction(
        &self,
        offsets: &rdkafka::TopicPartitionList,
        group: &rdkafka::consumer::ConsumerGroupMetadata,
        timeout: Duration,
    ) -> Result<(), KafkaError> {
        let result = self
            .producer
            .send_offsets_to_transaction(offsets, group, timeout)
            .and_then(|()| self.producer.commit_transaction(timeout))
            .and_then(|()| self.producer.begin_transaction());
        if result.is_err() {
            let _ = self.producer.abort_transaction(timeout);
        }
        result
    }

    /// Waits up to `timeout` for every sent record to be acknowledged.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(offset: i64) -> Work {
        Work::Record { topic: InputTopic::Clickstream, partition: 0, offset }
    }

    const FLUSH: Work = Work::Flush { partition: 0 };

    #[test]
    fn an_offset_is_committable_only_when_it_and_everything_before_it_is_delivered() {
        let mut p = Progress::new(false);
        let a = p.register(w(10), 2);
        p.register(w(11), 0);
        let c = p.register(w(12), 1);
        assert_eq!(p.in_flight(), 3);
        // Offset 12's output arrives first: nothing is done yet.
        p.ack(c, Ok(()));
        assert!(p.take_committable().is_empty());
        p.ack(a, Ok(()));
        assert!(p.take_committable().is_empty(), "10 still awaits one delivery");
        p.ack(a, Ok(()));
        // 10, 11 (no outputs) and 12 are all done: commit 13.
        assert_eq!(p.take_committable(), vec![(InputTopic::Clickstream, 0, 13)]);
        assert!(p.take_committable().is_empty(), "reported once");
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn with_a_changelog_offsets_wait_for_the_flush_after_them() {
        let mut p = Progress::new(true);
        p.register(w(1), 0);
        p.register(w(2), 0);
        assert!(p.take_committable().is_empty(), "state not durable yet");
        let flush = p.register(FLUSH, 2);
        p.register(w(3), 0);
        p.ack(flush, Ok(()));
        assert!(p.take_committable().is_empty());
        p.ack(flush, Ok(()));
        // The flush covers 1 and 2, not 3.
        assert_eq!(p.take_committable(), vec![(InputTopic::Clickstream, 0, 3)]);
        p.register(FLUSH, 0);
        assert_eq!(p.take_committable(), vec![(InputTopic::Clickstream, 0, 4)]);
    }

    #[test]
    fn a_gated_flush_opens_only_after_the_work_before_it_and_holds_back_what_follows() {
        let mut p = Progress::new(true);
        let a = p.register(w(1), 1);
        let flush = p.register_gated_flush(0);
        p.register(w(2), 0);
        assert_eq!(p.in_flight(), 1, "the gate is not an output in flight");
        assert!(!p.is_next(flush), "offset 1's output is not delivered yet");
        p.ack(a, Ok(()));
        assert!(p.is_next(flush));
        assert!(p.take_committable().is_empty(), "the flush's records are not even written");
        p.open(flush, 2);
        assert_eq!(p.in_flight(), 2);
        p.ack(flush, Ok(()));
        assert!(p.take_committable().is_empty());
        p.ack(flush, Ok(()));
        // The flush covers 1 only: 2 came after it.
        assert_eq!(p.take_committable(), vec![(InputTopic::Clickstream, 0, 2)]);
        let empty = p.register_gated_flush(0);
        p.open(empty, 0);
        assert_eq!(p.take_committable(), vec![(InputTopic::Clickstream, 0, 3)]);
    }

    #[test]
    fn both_topics_of_a_partition_share_one_queue() {
        let mut p = Progress::new(true);
        p.register(w(5), 0);
        let buy = p.register(Work::Record { topic: InputTopic::Purchases, partition: 0, offset: 9 }, 1);
        p.register(FLUSH, 0);
        assert!(p.take_committable().is_empty(), "the purchase's output is not delivered yet");
        p.ack(buy, Ok(()));
        assert_eq!(p.take_committable(), vec![(InputTopic::Clickstream, 0, 6), (InputTopic::Purchases, 0, 10)]);
    }

    #[test]
    fn a_sweep_holds_back_the_offsets_after_it_until_its_outputs_are_delivered() {
        let mut p = Progress::new(false);
        p.register(w(1), 0);
        let sweep = p.register(Work::Sweep { partition: 0 }, 2);
        p.register(w(2), 0);
        assert_eq!(p.take_committable(), vec![(InputTopic::Clickstream, 0, 2)]);
        p.ack(sweep, Ok(()));
        p.ack(sweep, Ok(()));
        assert_eq!(p.take_committable(), vec![(InputTopic::Clickstream, 0, 3)]);
    }

    #[test]
    fn a_failed_delivery_is_kept_and_blocks_the_offset() {
        let mut p = Progress::new(false);
        let a = p.register(w(5), 1);
        p.register(w(6), 0);
        p.ack(a, Err("boom".into()));
        assert_eq!(p.failure(), Some("boom"));
        assert!(p.take_committable().is_empty());
        assert!(!p.is_drained(0));
    }

    #[test]
    fn forgetting_a_partition_releases_its_in_flight_count() {
        let mut p = Progress::new(false);
        p.register(w(1), 3);
        p.forget(0);
        assert_eq!(p.in_flight(), 0);
    }
}
