//! The Kafka sink: publishes score changes, churn alerts and dead letters
//! with an idempotent producer, and tracks which input records are fully
//! delivered so their offsets — and only theirs — may be committed (SPEC §8).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};

use crate::config::Config;
use crate::decode::{DecodeError, Format};
use crate::event::InputTopic;
use crate::kafka::{KafkaSetupError, client_config};
use crate::output::{OUTPUT_SCHEMA_VERSION, Output};

/// A unit of work whose outputs gate commits: one input record, or one
/// churn sweep of a partition (which has no offset of its own but must not
/// be overtaken by the offsets after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Work {
    /// Input topic (sweeps are queued with the clickstream partition).
    pub topic: InputTopic,
    /// Input partition.
    pub partition: i32,
    /// Input offset; `None` for a sweep.
    pub offset: Option<i64>,
}

/// What a delivery report refers to: a registered [`Work`] item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    topic: InputTopic,
    partition: i32,
    id: u64,
}

#[derive(Debug, Default)]
struct PartitionProgress {
    /// Work items in order: (id, offset, deliveries still awaited).
    pending: VecDeque<(u64, Option<i64>, u32)>,
    next_id: u64,
    /// Highest offset whose record and all work before it are done.
    done: Option<i64>,
    /// Whether `done` moved since it was last taken.
    advanced: bool,
}

impl PartitionProgress {
    fn settle(&mut self) {
        while let Some(&(_, offset, 0)) = self.pending.front() {
            self.pending.pop_front();
            if let Some(o) = offset {
                self.done = Some(o);
                self.advanced = true;
            }
        }
    }
}

/// Delivery bookkeeping for every owned input partition. An input offset is
/// *done* when the record and all work before it in its partition have
/// every output acknowledged by the broker; only done offsets are ever
/// stored for commit.
#[derive(Debug, Default)]
pub struct Progress {
    parts: HashMap<(InputTopic, i32), PartitionProgress>,
    in_flight: usize,
    failure: Option<String>,
}

impl Progress {
    /// Records that `work` produced `outputs` messages about to be sent, and
    /// returns the token their delivery reports carry. Work must be
    /// registered in the order it was done.
    pub fn register(&mut self, work: Work, outputs: u32) -> Token {
        let p = self.parts.entry((work.topic, work.partition)).or_default();
        let id = p.next_id;
        p.next_id += 1;
        p.pending.push_back((id, work.offset, outputs));
        self.in_flight += outputs as usize;
        p.settle();
        Token { topic: work.topic, partition: work.partition, id }
    }

    /// Records one delivery report. A failed delivery is fatal: it is kept
    /// and the offsets after it never become done.
    pub fn ack(&mut self, token: Token, result: Result<(), String>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Err(e) = result {
            self.failure.get_or_insert(e);
            return;
        }
        let Some(p) = self.parts.get_mut(&(token.topic, token.partition)) else { return };
        if let Ok(i) = p.pending.binary_search_by_key(&token.id, |(id, ..)| *id) {
            p.pending[i].2 = p.pending[i].2.saturating_sub(1);
        }
        p.settle();
    }

    /// Outputs sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The first delivery failure, if any.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Partitions whose done offset moved since the last call, with the next
    /// offset to consume (done + 1), which is what Kafka commits.
    pub fn take_committable(&mut self) -> Vec<(InputTopic, i32, i64)> {
        let mut out = Vec::new();
        for ((topic, partition), p) in &mut self.parts {
            if p.advanced {
                p.advanced = false;
                if let Some(done) = p.done {
                    out.push((*topic, *partition, done + 1));
                }
            }
        }
        out
    }

    /// Whether any record of this partition still awaits deliveries.
    pub fn is_drained(&self, topic: InputTopic, partition: i32) -> bool {
        self.parts.get(&(topic, partition)).is_none_or(|p| p.pending.is_empty())
    }

    /// Forgets a partition (after it was revoked and committed).
    pub fn forget(&mut self, topic: InputTopic, partition: i32) {
        if let Some(p) = self.parts.remove(&(topic, partition)) {
            let waiting: u32 = p.pending.iter().map(|(.., n)| n).sum();
            self.in_flight = self.in_flight.saturating_sub(waiting as usize);
        }
    }
}

/// Shared handle on [`Progress`].
pub type SharedProgress = Arc<Mutex<Progress>>;

/// Locks progress; its updates are single statements, so a panic elsewhere
/// cannot leave it half-updated and poisoning is ignored.
pub fn lock(p: &SharedProgress) -> std::sync::MutexGuard<'_, Progress> {
    p.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Producer callbacks: delivery reports go straight into [`Progress`].
pub struct SinkContext {
    progress: SharedProgress,
}

impl ClientContext for SinkContext {}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<Token>;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Self::DeliveryOpaque) {
        let result = match result {
            Ok(_) => Ok(()),
            Err((e, m)) => Err(format!("delivery to {} failed: {e}", m.topic())),
        };
        lock(&self.progress).ack(*token, result);
    }
}

/// Publishes outputs and dead letters.
pub struct Sink {
    producer: ThreadedProducer<SinkContext>,
    progress: SharedProgress,
    scores: (String, Format),
    alerts: (String, Format),
    dlq: String,
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
        let defaults = [("enable.idempotence", "true"), ("linger.ms", "5"), ("acks", "all")];
        let producer = client_config(config, &defaults)
            .create_with_context(SinkContext { progress: progress.clone() })
            .map_err(|e| KafkaSetupError::client("creating the producer", e))?;
        let t = &config.topics;
        Ok(Sink {
            producer,
            progress,
            scores: (t.scores.clone(), config.output.scores_format),
            alerts: (t.alerts.clone(), config.output.alerts_format),
            dlq: t.dlq.clone(),
        })
    }

    /// The delivery bookkeeping.
    pub fn progress(&self) -> &SharedProgress {
        &self.progress
    }

    /// Sends the outputs one piece of work caused (possibly none).
    pub fn send_outputs(&self, outputs: &mut Vec<Output>, work: Work) {
        let token = lock(&self.progress).register(work, outputs.len() as u32);
        for output in outputs.drain(..) {
            let ((topic, format), kind) = match &output {
                Output::Score(_) => (&self.scores, "engage.v1.ScoreChanged"),
                Output::Alert(_) => (&self.alerts, "engage.v1.ChurnAlert"),
            };
            let payload = output.encode(*format);
            let headers = OwnedHeaders::new_with_capacity(3)
                .insert(Header { key: CONTENT_TYPE, value: Some(content_type(*format)) })
                .insert(Header { key: "engage.schema.version", value: Some(OUTPUT_SCHEMA_VERSION) })
                .insert(Header { key: "engage.message.type", value: Some(kind) });
            let record = BaseRecord::with_opaque_to(topic, Box::new(token))
                .key(output.customer_id())
                .payload(&payload)
                .headers(headers);
            self.send(record);
        }
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
        let mut record: BaseRecord<'_, [u8], [u8], Box<Token>> =
            BaseRecord::with_opaque_to(&self.dlq, Box::new(token)).headers(headers);
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
        mut record: BaseRecord<'_, K, P, Box<Token>>,
    ) {
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, r)) => {
                    let token = *r.delivery_opaque;
                    lock(&self.progress).ack(token, Err(format!("cannot enqueue to {}: {e}", r.topic)));
                    return;
                }
            }
        }
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
        Work { topic: InputTopic::Clickstream, partition: 0, offset: Some(offset) }
    }

    #[test]
    fn an_offset_is_done_only_when_it_and_everything_before_it_is_delivered() {
        let mut p = Progress::default();
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
    fn records_without_outputs_are_done_at_once_when_nothing_is_pending() {
        let mut p = Progress::default();
        p.register(w(0), 0);
        assert_eq!(p.take_committable(), vec![(InputTopic::Clickstream, 0, 1)]);
    }

    #[test]
    fn a_sweep_holds_back_the_offsets_after_it_until_its_outputs_are_delivered() {
        let mut p = Progress::default();
        p.register(w(1), 0);
        let sweep = p.register(Work { topic: InputTopic::Clickstream, partition: 0, offset: None }, 2);
        p.register(w(2), 0);
        assert_eq!(p.take_committable(), vec![(InputTopic::Clickstream, 0, 2)]);
        p.ack(sweep, Ok(()));
        p.ack(sweep, Ok(()));
        assert_eq!(p.take_committable(), vec![(InputTopic::Clickstream, 0, 3)]);
    }

    #[test]
    fn a_failed_delivery_is_kept_and_blocks_the_offset() {
        let mut p = Progress::default();
        let a = p.register(w(5), 1);
        p.register(w(6), 0);
        p.ack(a, Err("boom".into()));
        assert_eq!(p.failure(), Some("boom"));
        assert!(p.take_committable().is_empty());
        assert!(!p.is_drained(InputTopic::Clickstream, 0));
    }

    #[test]
    fn partitions_and_topics_are_tracked_separately() {
        let mut p = Progress::default();
        p.register(w(1), 1);
        let other = p.register(Work { topic: InputTopic::Purchases, partition: 0, offset: Some(7) }, 1);
        p.ack(other, Ok(()));
        assert_eq!(p.take_committable(), vec![(InputTopic::Purchases, 0, 8)]);
        p.forget(InputTopic::Clickstream, 0);
        assert_eq!(p.in_flight(), 0);
    }
}
