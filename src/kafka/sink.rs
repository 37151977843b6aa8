//! The Kafka sink: the producer of score changes, churn alerts, erasure
//! confirmations, dead letters and changelog records. Every record carries
//! a [`Ticket`], and its delivery report goes to an [`Acknowledge`]r:
//! which record may be sent when, and what its acknowledgement means for
//! the input offsets, is [`crate::durability`]'s business, not the sink's.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use compact_str::CompactString;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};

use crate::codec::output::{CONTENT_TYPE, OUTPUT_SCHEMA_VERSION, content_type, encode_into, message_type};
use crate::config::Config;
use crate::decode::DecodeError;
use crate::engine::output::Output;
use crate::kafka::KafkaSetupError;
use crate::telemetry::events::DeliveryFailed;
use crate::telemetry::{self, LatencyMetrics};
use crate::vocab::Format;

/// What a delivery report refers to: one piece of work of one input
/// partition, as the acknowledger numbered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The input partition the work belongs to.
    pub partition: i32,
    /// The work's number within its partition.
    pub id: u64,
}

/// Why a record was not delivered. Fatal to the pipeline: the offsets after
/// it never become committable, and a restart reprocesses from the last
/// commit. Retrying helps once the broker or topic is healthy again, or the
/// ACL is granted.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DeliveryError {
    /// engage may not write the topic: its WRITE ACL is missing.
    #[error("not authorized to WRITE topic `{topic}`")]
    NotAuthorized {
        /// The topic written to.
        topic: String,
    },
    /// The broker refused or never acknowledged the message.
    #[error("delivery to {topic} failed")]
    Failed {
        /// The topic written to.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The producer would not take the message (its queue is full for
    /// longer than the enqueue timeout, or the message is invalid).
    #[error("cannot enqueue to {topic}")]
    Enqueue {
        /// The topic written to.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
}

impl DeliveryError {
    /// The failure to deliver to `topic`.
    fn of(topic: &str, source: KafkaError) -> DeliveryError {
        match source.rdkafka_error_code() {
            Some(RDKafkaErrorCode::TopicAuthorizationFailed) => {
                DeliveryError::NotAuthorized { topic: topic.to_string() }
            }
            _ => DeliveryError::Failed { topic: topic.to_string(), source },
        }
    }
}

/// Receives every record's delivery report (on librdkafka's thread).
pub trait Acknowledge: Send + Sync + 'static {
    /// The record sent with `ticket` was acknowledged by the broker, or
    /// failed.
    fn acknowledge(&self, ticket: Ticket, result: Result<(), DeliveryError>);
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
    ticket: Ticket,
    origin: Option<Origin>,
}

/// Producer callbacks: delivery reports go to the acknowledger and the
/// latency histograms.
pub struct SinkContext {
    acks: Arc<dyn Acknowledge>,
    latency: LatencyMetrics,
}

impl ClientContext for SinkContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        crate::kafka::client::forward_log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let reason = crate::config::redact(reason);
        crate::telemetry::events::ClientError { client: "producer", error: &error, reason: &reason }.emit();
    }

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
                Err(DeliveryError::of(m.topic(), e.clone()))
            }
        };
        self.acks.acknowledge(delivery.ticket, result);
    }
}

/// Changelog records: key and value (`None` for a tombstone).
pub type ChangelogRecords = Vec<(CompactString, Option<Vec<u8>>)>;

/// Publishes outputs, dead letters and changelog records.
pub struct Sink {
    producer: ThreadedProducer<SinkContext>,
    acks: Arc<dyn Acknowledge>,
    scores: (String, Format),
    alerts: (String, Format),
    erasures: (String, Format),
    dlq: String,
    changelog: String,
    transactional: bool,
    /// The encoding buffer reused for every output (librdkafka copies the
    /// payload when it is queued).
    scratch: Mutex<Vec<u8>>,
}

impl Sink {
    /// The producer on the configured brokers: idempotent, and with a
    /// `transactional_id` transactional, with its first transaction begun.
    /// Delivery reports go to `acks`.
    pub fn new(
        config: &Config,
        acks: Arc<dyn Acknowledge>,
        transactional_id: Option<&str>,
    ) -> Result<Sink, KafkaSetupError> {
        let transactional = transactional_id.is_some();
        let producer: ThreadedProducer<SinkContext> = crate::kafka::client::output_producer(config, transactional_id)
            .create_with_context(SinkContext { acks: acks.clone(), latency: LatencyMetrics::new() })
            .map_err(|e| KafkaSetupError::client("creating the producer", e))?;
        if let Some(id) = transactional_id {
            producer.init_transactions(Duration::from_secs(30)).and_then(|()| producer.begin_transaction()).map_err(
                |e| match crate::kafka::diagnosis::classify(config, &e, "", Some(id), "WRITE") {
                    Some(blocker) => KafkaSetupError::Blocked(blocker),
                    None => KafkaSetupError::client("initialising transactions (does the broker support them?)", e),
                },
            )?;
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
            acks,
            scores: (t.scores.clone(), config.output.scores_format),
            alerts: (t.alerts.clone(), config.output.alerts_format),
            erasures: (t.erasure_confirmations.clone(), config.output.erasure_confirmations_format),
            dlq: t.dlq.clone(),
            changelog,
            transactional,
            scratch: Mutex::new(Vec::with_capacity(1024)),
        })
    }

    /// Sends `outputs`, each acknowledged under `ticket`; `origin` is the
    /// input record behind them (none for a sweep).
    pub fn send_outputs(&self, outputs: impl Iterator<Item = Output>, ticket: Ticket, origin: Option<Origin>) {
        let mut payload = crate::sync::lock(&self.scratch);
        for output in outputs {
            let (topic, format) = match &output {
                Output::Score(_) => &self.scores,
                Output::Alert(_) => &self.alerts,
                Output::Erasure(_) => &self.erasures,
            };
            encode_into(&output, *format, &mut payload);
            let headers = OwnedHeaders::new_with_capacity(3)
                .insert(Header { key: CONTENT_TYPE, value: Some(content_type(*format)) })
                .insert(Header { key: "engage.schema.version", value: Some(OUTPUT_SCHEMA_VERSION) })
                .insert(Header { key: "engage.message.type", value: Some(message_type(&output)) });
            let record = BaseRecord::with_opaque_to(topic, Box::new(Delivery { ticket, origin }))
                .key(output.customer_id())
                .payload(payload.as_slice())
                .headers(headers);
            self.send(record);
        }
    }

    /// Sends a tombstone for `customer_id` to the scores topic (an erased
    /// customer leaves compacted views of it).
    pub fn send_scores_tombstone(&self, customer_id: &str, ticket: Ticket) {
        self.send(
            BaseRecord::<'_, str, [u8], Box<Delivery>>::with_opaque_to(
                &self.scores.0,
                Box::new(Delivery { ticket, origin: None }),
            )
            .key(customer_id),
        );
    }

    /// Writes changelog records to the changelog partition of the ticket's
    /// input partition.
    pub fn send_changelog(&self, ticket: Ticket, records: &ChangelogRecords) {
        metrics::counter!(telemetry::CHANGELOG_WRITES).increment(records.len() as u64);
        for (id, value) in records {
            let mut record: BaseRecord<'_, str, [u8], Box<Delivery>> =
                BaseRecord::with_opaque_to(&self.changelog, Box::new(Delivery { ticket, origin: None }))
                    .key(id.as_str())
                    .partition(ticket.partition);
            if let Some(v) = value {
                record = record.payload(v);
            }
            self.send(record);
        }
    }

    /// Sends a record engage cannot use to the dead-letter topic: original
    /// key, value and headers, plus the docs/model.md "Events" error headers.
    pub fn send_dead_letter<M: Message>(&self, message: &M, error: &DecodeError, ticket: Ticket) {
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
            BaseRecord::with_opaque_to(&self.dlq, Box::new(Delivery { ticket, origin: None })).headers(headers);
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
                    let ticket = r.delivery_opaque.ticket;
                    DeliveryFailed { topic: r.topic, error: &e }.emit();
                    let error = match DeliveryError::of(r.topic, e) {
                        DeliveryError::Failed { topic, source } => DeliveryError::Enqueue { topic, source },
                        other => other,
                    };
                    self.acks.acknowledge(ticket, Err(error));
                    return;
                }
            }
        }
    }

    /// Whether records go out in transactions (`exactly_once`).
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
