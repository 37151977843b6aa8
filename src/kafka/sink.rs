//! The Kafka sink: publishes score changes, churn alerts and dead letters
//! with an idempotent producer, and tracks which input records are fully
//! delivered so their offsets — and only theirs — may be committed (docs/model.md "Guarantees").

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};

use compact_str::CompactString;

use crate::codec::output::{OUTPUT_SCHEMA_VERSION, encode_into};
use crate::config::{Config, ProcessingGuarantee};
use crate::decode::DecodeError;
use crate::engine::output::Output;
use crate::kafka::KafkaSetupError;
use crate::kafka::progress::{DeliveryError, SharedProgress, Token, Work, lock};
use crate::telemetry::events::DeliveryFailed;
use crate::telemetry::{self, LatencyMetrics};
use crate::vocab::Format;

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

/// Producer callbacks: delivery reports go straight into [`Progress`](crate::kafka::progress::Progress) and
/// the latency histograms.
pub struct SinkContext {
    progress: SharedProgress,
    latency: LatencyMetrics,
    held: Arc<Held>,
}

/// Erasure records held in the sink, and the main loop's wake-up when an
/// acknowledgement may have made one of them next: each erasure waits for
/// its own changelog record, so a burst of them would move at a tick's pace
/// (and hold back its partition's commits) without it.
#[derive(Debug, Default)]
struct Held {
    erasures: std::sync::atomic::AtomicUsize,
    wake: tokio::sync::Notify,
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
                        let ms = crate::clock::wall_clock_ms().saturating_sub(ms).max(0);
                        self.latency.end_to_end.record(ms as f64 / 1000.0);
                    }
                }
                Ok(())
            }
            Err((e, m)) => {
                DeliveryFailed { topic: m.topic(), error: e }.emit();
                Err(DeliveryError::Failed { topic: m.topic().to_string(), source: e.clone() })
            }
        };
        lock(&self.progress).ack(delivery.token, result);
        if self.held.erasures.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            self.held.wake.notify_one();
        }
    }
}

/// Publishes outputs and dead letters.
pub struct Sink {
    producer: ThreadedProducer<SinkContext>,
    progress: SharedProgress,
    scores: (String, Format),
    alerts: (String, Format),
    erasures: (String, Format),
    dlq: String,
    changelog: String,
    /// Changelog flushes encoded (and erasure confirmations) waiting for
    /// the work before them, per partition, oldest first.
    staged: Mutex<HashMap<i32, VecDeque<(Token, Staged)>>>,
    transactional: bool,
    /// The encoding buffer reused for every output (librdkafka copies the
    /// payload when it is queued).
    scratch: Mutex<Vec<u8>>,
    held: Arc<Held>,
}

/// One partition's changed customers, encoded: key and value (`None` for a
/// tombstone).
pub type ChangelogRecords = Vec<(CompactString, Option<Vec<u8>>)>;

/// What waits to be written until the work before it is complete.
#[derive(Debug)]
enum Staged {
    /// A flush's changelog records, to the input partition's changelog
    /// partition.
    Changelog(ChangelogRecords),
    /// An erasure's changelog record.
    Erasure(ChangelogRecords),
    /// An erasure's confirmation.
    Confirmation(Vec<Output>),
}

impl Staged {
    fn deliveries(&self) -> u32 {
        match self {
            Staged::Changelog(records) | Staged::Erasure(records) => records.len() as u32,
            Staged::Confirmation(outputs) => outputs.len() as u32,
        }
    }
}

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
        let transactional = config.run.processing_guarantee == ProcessingGuarantee::ExactlyOnce;
        let held = Arc::new(Held::default());
        let producer: ThreadedProducer<SinkContext> = crate::kafka::client::output_producer(config)
            .create_with_context(SinkContext {
                progress: progress.clone(),
                latency: LatencyMetrics::new(),
                held: held.clone(),
            })
            .map_err(|e| KafkaSetupError::client("creating the producer", e))?;
        if transactional {
            producer
                .init_transactions(Duration::from_secs(30))
                .and_then(|()| producer.begin_transaction())
                .map_err(|e| KafkaSetupError::client("initialising transactions (does the broker support them?)", e))?;
        }
        let t = &config.topics;
        let changelog = crate::kafka::changelog::topic_name(config);
        // Registered at 0, so dashboards and alert rules see the series
        // before the first failure.
        let mut outputs = vec![&t.scores, &t.alerts, &t.dlq, &changelog];
        if t.erasures_enabled() {
            outputs.push(&t.erasure_confirmations);
        }
        for topic in outputs {
            metrics::counter!(telemetry::DELIVERY_ERRORS, "topic" => topic.clone()).absolute(0);
        }
        Ok(Sink {
            producer,
            progress,
            scores: (t.scores.clone(), config.output.scores_format),
            alerts: (t.alerts.clone(), config.output.alerts_format),
            erasures: (t.erasure_confirmations.clone(), config.output.erasure_confirmations_format),
            dlq: t.dlq.clone(),
            changelog,
            staged: Mutex::new(HashMap::new()),
            transactional,
            scratch: Mutex::new(Vec::with_capacity(1024)),
            held,
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
        self.write_outputs(outputs.drain(..), token, origin);
    }

    /// Publishes an erasure's effects (docs/model.md "Erasure"), as the
    /// erasure record's `work`: the tombstone for `customer_id` on the
    /// scores topic at once, in order with the partition's other outputs
    /// (a score of the customer's new life lands after it); `marker`, the
    /// customer's changelog record, once the work before it is complete;
    /// and `confirmation` only once the marker is acknowledged, so a
    /// confirmed erasure is always restored after a crash. With
    /// `exactly_once` all of it goes into the open transaction at once.
    pub fn send_erasure(
        &self,
        partition: i32,
        work: Work,
        customer_id: &str,
        marker: ChangelogRecords,
        confirmation: Vec<Output>,
    ) {
        let token = lock(&self.progress).register(work, 1);
        self.send(
            BaseRecord::<'_, str, [u8], Box<Delivery>>::with_opaque_to(
                &self.scores.0,
                Box::new(Delivery { token, origin: None }),
            )
            .key(customer_id),
        );
        let release = Work::Release { partition };
        if self.transactional {
            let token = lock(&self.progress).register(release, marker.len() as u32);
            self.write_changelog(token, &marker);
            let token = lock(&self.progress).register(release, confirmation.len() as u32);
            self.write_outputs(confirmation.into_iter(), token, None);
            return;
        }
        let mut staged = crate::sync::lock(&self.staged);
        let queue = staged.entry(partition).or_default();
        // A burst of requests shares one record write and one release: a
        // record may go early (it only has to be durable before its
        // confirmation), and the confirmations still wait for all of them.
        if let [.., (_, Staged::Erasure(records)), (_, Staged::Confirmation(outputs))] = queue.make_contiguous() {
            records.extend(marker);
            outputs.extend(confirmation);
            return;
        }
        let mut progress = lock(&self.progress);
        let first = progress.register_gated(release);
        let then = progress.register_gated(release);
        drop(progress);
        queue.push_back((first, Staged::Erasure(marker)));
        queue.push_back((then, Staged::Confirmation(confirmation)));
        self.held.erasures.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
    }

    /// Resolves when an acknowledgement may have let a held erasure record
    /// go: the main loop then calls [`Sink::release_changelog`].
    pub fn released(&self) -> tokio::sync::futures::Notified<'_> {
        self.held.wake.notified()
    }

    fn write_outputs(&self, outputs: impl Iterator<Item = Output>, token: Token, origin: Option<Origin>) {
        let mut payload = crate::sync::lock(&self.scratch);
        for output in outputs {
            let ((topic, format), kind) = match &output {
                Output::Score(_) => (&self.scores, "engage.v1.ScoreChanged"),
                Output::Alert(_) => (&self.alerts, "engage.v1.ChurnAlert"),
                Output::Erasure(_) => (&self.erasures, "engage.v1.ErasureConfirmation"),
            };
            encode_into(&output, *format, &mut payload);
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
        crate::sync::lock(&self.staged).entry(partition).or_default().push_back((token, Staged::Changelog(records)));
    }

    /// Writes every staged flush whose preceding work is complete. Cheap
    /// when none is ready; the pipeline calls it on its tick.
    pub fn release_changelog(&self) {
        let mut staged = crate::sync::lock(&self.staged);
        for queue in staged.values_mut() {
            while let Some(&(token, _)) = queue.front() {
                if !lock(&self.progress).is_next(token) {
                    break;
                }
                let Some((token, staged)) = queue.pop_front() else { break };
                lock(&self.progress).open(token, staged.deliveries());
                if !matches!(staged, Staged::Changelog(_)) {
                    self.held.erasures.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                }
                match staged {
                    Staged::Changelog(records) | Staged::Erasure(records) => self.write_changelog(token, &records),
                    Staged::Confirmation(outputs) => self.write_outputs(outputs.into_iter(), token, None),
                }
            }
        }
    }

    fn write_changelog(&self, token: Token, records: &ChangelogRecords) {
        metrics::counter!(telemetry::CHANGELOG_WRITES).increment(records.len() as u64);
        for (id, value) in records {
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

    /// Forgets a partition's bookkeeping and staged flushes (after it was
    /// revoked and committed).
    pub fn forget(&self, partition: i32) {
        if let Some(dropped) = crate::sync::lock(&self.staged).remove(&partition) {
            let erasures = dropped.iter().filter(|(_, s)| !matches!(s, Staged::Changelog(_))).count();
            self.held.erasures.fetch_sub(erasures, std::sync::atomic::Ordering::Relaxed);
        }
        lock(&self.progress).forget(partition);
    }

    /// Sends a record engage cannot use to the dead-letter topic: original
    /// key, value and headers, plus the docs/model.md "Events" error headers.
    pub fn send_dead_letter<M: Message>(&self, message: &M, error: &DecodeError, work: Work) {
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
                    DeliveryFailed { topic: r.topic, error: &e }.emit();
                    lock(&self.progress)
                        .ack(token, Err(DeliveryError::Enqueue { topic: r.topic.to_string(), source: e.clone() }));
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
