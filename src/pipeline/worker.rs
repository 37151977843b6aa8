//! The main loop's per-record and per-sweep work: decode, apply, publish
//! or dead-letter; churn sweeps at each partition pair's stream time.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Headers, OwnedMessage};
use tracing::{debug, info};

use super::align::Aligner;
use super::shared::Shared;
use super::{PipelineError, RunSummary};
use crate::clock::wall_clock_ms;
use crate::config::Config;
use crate::decode::{DecodeError, Envelope, Limits, decode, erasure_request};
use crate::engine::event::Event;
use crate::engine::event::Source;
use crate::engine::output::Output;
use crate::engine::store::Partition;
use crate::engine::{Engine, Outcome, Slice};
use crate::kafka::progress::Work;
use crate::kafka::sink::{CONTENT_TYPE, Origin};
use crate::sync;
use crate::telemetry::PipelineMetrics;
use crate::vocab::InputKind;

/// A partition pair's stream time (docs/model.md "Health"): the event time
/// up to which both inputs have been applied, or the wall clock once the
/// pair has been caught up and idle for `idle_grace`.
#[derive(Debug)]
pub(super) struct StreamClock {
    /// The largest event time applied, per input.
    pub(super) max_event_ms: [i64; 2],
    pub(super) last_record: Instant,
}

impl Default for StreamClock {
    fn default() -> Self {
        StreamClock { max_event_ms: [i64::MIN; 2], last_record: Instant::now() }
    }
}

impl StreamClock {
    /// An event of `topic` at `event_ms` was taken up at `at`.
    pub(super) fn observe(&mut self, topic: InputKind, event_ms: i64, at: Instant) {
        let max = &mut self.max_event_ms[topic.index()];
        *max = (*max).max(event_ms);
        self.last_record = at;
    }

    /// The stream time, or `None` before anything was applied. An input
    /// that is not `settled` (it has records held or still on the broker)
    /// holds the time back to what it has applied: a sweep must not judge
    /// its customers idle at the other input's later time. While paused by
    /// backpressure the pair is not idle, only held.
    pub(super) fn stream_time(&self, idle_grace: Duration, paused: bool, settled: [bool; 2]) -> Option<i64> {
        let newest = self.max_event_ms[0].max(self.max_event_ms[1]);
        let idle = settled == [true, true] && !paused && self.last_record.elapsed() >= idle_grace;
        if newest == i64::MIN {
            // Nothing read since the assignment: the restored customers are
            // judged on the wall clock once the pair is caught up and idle.
            return idle.then(wall_clock_ms);
        }
        let behind = InputKind::EVENTS
            .iter()
            .filter(|t| !settled[t.index()] && self.max_event_ms[t.index()] != i64::MIN)
            .map(|t| self.max_event_ms[t.index()])
            .min();
        if let Some(behind) = behind {
            return Some(behind);
        }
        if idle { Some(newest.max(wall_clock_ms())) } else { Some(newest) }
    }
}

/// The clocks read once per batch of records rather than per record (clock
/// reads are a visible cost of the hot path): a batch is handled within a few
/// milliseconds, so its records share the time they were taken up, and
/// their processing latency counts from the batch's start.
#[derive(Clone, Copy)]
pub(super) struct BatchClock {
    /// When the batch was taken up.
    pub(super) consumed: Instant,
    /// Wall-clock time then (epoch ms), for the future-skew check.
    pub(super) wall_ms: i64,
}

impl BatchClock {
    pub(super) fn now() -> BatchClock {
        BatchClock { consumed: Instant::now(), wall_ms: wall_clock_ms() }
    }
}

/// One input record taken from the consumer and decoded: what the worker
/// applies, at once or after the [`super::align::Aligner`] held it.
pub(super) struct Input<'a> {
    pub(super) topic: InputKind,
    pub(super) partition: i32,
    pub(super) offset: i64,
    /// The record timestamp, for the end-to-end latency.
    pub(super) produced_ms: Option<i64>,
    /// When it was taken from the consumer: processing latency counts
    /// from here, time held included.
    pub(super) consumed: Instant,
    /// The event, or why the record cannot be used.
    pub(super) body: Result<Event<'a>, Rejected<'a>>,
}

/// A record that goes to the dead-letter topic, with the reason.
pub(super) struct Rejected<'a> {
    pub(super) error: DecodeError,
    pub(super) record: RecordRef<'a>,
}

/// The consumer's record, or a copy once it must outlive the poll.
pub(super) enum RecordRef<'a> {
    Borrowed(&'a BorrowedMessage<'a>),
    Owned(Box<OwnedMessage>),
}

impl<'a> Input<'a> {
    /// Decodes `message` of the input `topic`.
    pub(super) fn decode(
        message: &'a BorrowedMessage<'a>,
        topic: InputKind,
        config: &Config,
        limits: &Limits,
        clock: BatchClock,
    ) -> Input<'a> {
        let format = config.input.format(topic);
        let produced_ms = message.timestamp().to_millis();
        let value = message.payload().unwrap_or(&[]);
        let body = decode(Some(topic), format, &envelope(message), value, limits, clock.wall_ms)
            .map_err(|error| Rejected { error, record: RecordRef::Borrowed(message) });
        Input {
            topic,
            partition: message.partition(),
            offset: message.offset(),
            produced_ms,
            consumed: clock.consumed,
            body,
        }
    }

    /// The event time the inputs are aligned on; a record that cannot be
    /// decoded changes no state and goes first.
    pub(super) fn event_time(&self) -> i64 {
        self.body.as_ref().map_or(i64::MIN, |e| e.ts_ms)
    }

    /// Detaches the record from the consumer's buffer, to be held.
    pub(super) fn into_owned(self) -> Input<'static> {
        let body = match self.body {
            Ok(event) => Ok(event.into_owned()),
            Err(Rejected { error, record }) => Err(Rejected {
                error,
                record: RecordRef::Owned(match record {
                    RecordRef::Borrowed(m) => Box::new(m.detach()),
                    RecordRef::Owned(m) => m,
                }),
            }),
        };
        Input { body, ..self }
    }
}

/// The main loop's per-record and per-sweep state.
pub(super) struct Worker {
    pub(super) engine: Engine,
    pub(super) metrics: PipelineMetrics,
    pub(super) limits: crate::decode::Limits,
    pub(super) summary: RunSummary,
    pub(super) outputs: Vec<Output>,
    pub(super) cache: PartitionCache,
    pub(super) clocks: HashMap<i32, StreamClock>,
    pub(super) shared: Arc<Shared>,
}

impl Worker {
    /// Counts one input record taken up and returns its work item.
    fn begin(&mut self, topic: InputKind, partition: i32, offset: i64) -> Result<Work, PipelineError> {
        let shared = &*self.shared;
        // A restore that failed inside this very recv() must stop us
        // before the partition's records are applied to empty state.
        if let Some(e) = sync::lock(&shared.fatal).take() {
            return Err(e);
        }
        self.summary.records += 1;
        self.metrics.record_in(topic);
        if shared.sink.is_transactional() {
            sync::lock(&shared.processed).insert((topic, partition), offset + 1);
        }
        Ok(Work::Record { topic, partition, offset })
    }

    /// Sends a record that cannot be used to the dead-letter topic.
    fn dead_letter(&mut self, error: &DecodeError, record: RecordRef<'_>, work: Work) {
        let shared = &*self.shared;
        self.summary.dead_letters += 1;
        self.metrics.dead_letter(error.reason);
        if let Work::Record { topic, partition, offset } = work {
            debug!(topic = shared.inputs.name(topic), partition, offset, reason = %error.reason, "dead letter");
        }
        match record {
            RecordRef::Borrowed(m) => shared.sink.send_dead_letter(m, error, work),
            RecordRef::Owned(m) => shared.sink.send_dead_letter(&*m, error, work),
        }
    }

    /// Applies and publishes one erasure request (or dead-letters it). Not
    /// aligned with the events: it takes effect as it arrives, and the
    /// events it covers are recognised by their event time whenever they
    /// come (docs/model.md "Erasure").
    pub(super) fn erase(&mut self, message: &BorrowedMessage<'_>, clock: BatchClock) -> Result<(), PipelineError> {
        let (p, offset) = (message.partition(), message.offset());
        let work = self.begin(InputKind::Erasures, p, offset)?;
        let shared = self.shared.clone();
        let format = shared.config.input.erasures_format;
        let value = message.payload().unwrap_or(&[]);
        let request = match erasure_request(format, &envelope(message), value, &self.limits, clock.wall_ms) {
            Ok(request) => request,
            Err(error) => {
                self.dead_letter(&error, RecordRef::Borrowed(message), work);
                return Ok(());
            }
        };
        let partition = self.cache.get(&shared, p);
        let id = &*request.customer_id;
        match self.engine.erase(&partition, &request, Some(offset), &mut self.outputs) {
            Outcome::Erased => {
                self.summary.erasures += 1;
                self.metrics.erasures.increment(1);
                info!(partition = p, offset, request_id = %request.request_id, "erasure applied");
            }
            _ => {
                self.summary.duplicates += 1;
                self.metrics.duplicate(InputKind::Erasures);
            }
        }
        self.summary.outputs += self.outputs.len() as u64;
        // The customer's record now, ahead of the next flush: the
        // confirmation waits for it.
        let marker = vec![(id.into(), crate::codec::state::changelog_value(&partition, id))];
        let confirmation = self.outputs.drain(..).collect();
        shared.sink.send_erasure(p, work, id, marker, confirmation);
        Ok(())
    }

    /// Applies and publishes one input record (or dead-letters it).
    pub(super) fn handle(&mut self, input: Input<'_>) -> Result<(), PipelineError> {
        let kind = input.topic;
        let p = input.partition;
        let work = self.begin(kind, p, input.offset)?;
        let shared = &*self.shared;
        let sink = &shared.sink;
        match input.body {
            Ok(event) => {
                self.metrics.event(&event.kind);
                let partition = self.cache.get(shared, p);
                let source = Source { topic: kind, offset: input.offset };
                self.clocks.entry(p).or_default().observe(kind, event.ts_ms, input.consumed);
                match self.engine.apply(&partition, &event, Some(source), &mut self.outputs) {
                    Outcome::Applied => {
                        self.summary.applied += 1;
                        sync::lock(&shared.dirty).mark(p, &event.customer_id);
                    }
                    Outcome::Duplicate => {
                        self.summary.duplicates += 1;
                        self.metrics.duplicate(kind);
                    }
                    Outcome::UnknownType => {
                        self.summary.unknown_types += 1;
                        self.metrics.unknown_type(kind);
                    }
                    // Not bad input: counted, and committed like any record.
                    Outcome::Bootstrapped => {
                        self.summary.bootstrapped += 1;
                        self.metrics.bootstrapped(kind);
                    }
                    Outcome::BeforeErasure | Outcome::Erased => {
                        self.summary.before_erasure += 1;
                        self.metrics.before_erasure.increment(1);
                    }
                }
                count_outputs(&self.metrics, &self.outputs);
                self.summary.outputs += self.outputs.len() as u64;
                let origin = Origin { consumed: input.consumed, produced_ms: input.produced_ms };
                sink.send_outputs(&mut self.outputs, work, Some(origin));
            }
            Err(Rejected { error, record }) => self.dead_letter(&error, record, work),
        }
        Ok(())
    }

    /// One sweep tick: `slice` of every owned partition, at each partition
    /// pair's stream time; then retention.
    pub(super) fn sweep(&mut self, slice: Slice, paused: bool, aligner: &Aligner) {
        let started = Instant::now();
        let shared = &*self.shared;
        let config = &shared.config;
        let retention_ms = config.state.retention.as_millis() as i64;
        let owned = shared.owned();
        // A partition gets its clock when assigned, so one with nothing left
        // to read is still swept once idle; a revoked one loses it.
        self.clocks.retain(|p, _| owned.contains(p));
        for p in owned {
            let clock = self.clocks.entry(p).or_default();
            let Some(now) = clock.stream_time(config.run.idle_grace, paused, aligner.settled(p)) else { continue };
            let partition = self.cache.get(shared, p);
            self.engine.sweep_slice(&partition, now, slice, &mut self.outputs);
            let evicted = partition.evict_idle(now.saturating_sub(retention_ms));
            let expired = partition.expire_erasures(now.saturating_sub(retention_ms));
            let mut dirty = sync::lock(&shared.dirty);
            let gone = evicted.iter().chain(&expired).map(|id| id.as_str());
            for id in self.outputs.iter().map(Output::customer_id).chain(gone) {
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
pub(super) struct PartitionCache {
    pub(super) generation: u64,
    pub(super) partitions: HashMap<i32, Arc<Partition>>,
}

impl PartitionCache {
    pub(super) fn get(&mut self, shared: &Shared, p: i32) -> Arc<Partition> {
        let generation = shared.generation.load(Ordering::SeqCst);
        if generation != self.generation {
            self.generation = generation;
            self.partitions.clear();
        }
        self.partitions.entry(p).or_insert_with(|| shared.store.partition(p)).clone()
    }
}

pub(super) fn count_outputs(metrics: &PipelineMetrics, outputs: &[Output]) {
    for o in outputs {
        match o {
            Output::Score(_) => metrics.scores.increment(1),
            Output::Alert(a) => {
                metrics.alerts.increment(1);
                metrics.alert(a.kind);
            }
            Output::Erasure(_) => {}
        }
    }
}

/// What the decoders check a Kafka record's value against.
fn envelope<'a>(message: &'a BorrowedMessage<'_>) -> Envelope<'a> {
    Envelope {
        key: message.key(),
        require_key: true,
        timestamp_ms: message.timestamp().to_millis(),
        content_type: content_type(message),
    }
}

fn content_type<'a>(message: &'a BorrowedMessage<'_>) -> Option<&'a [u8]> {
    message.headers()?.iter().find(|h| h.key.eq_ignore_ascii_case(CONTENT_TYPE)).and_then(|h| h.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(3600);

    #[test]
    fn stream_time_waits_for_the_input_that_is_behind() {
        let mut clock = StreamClock::default();
        assert_eq!(clock.stream_time(LONG, false, [true, true]), None, "nothing applied yet");
        clock.observe(InputKind::Purchases, 90, Instant::now());
        clock.observe(InputKind::Clickstream, 20, Instant::now());
        // Clicks still on the broker: the pair is at day 20, not 90.
        assert_eq!(clock.stream_time(LONG, false, [false, true]), Some(20));
        assert_eq!(clock.stream_time(LONG, false, [false, false]), Some(20));
        // Purchases behind, clicks caught up.
        assert_eq!(clock.stream_time(LONG, false, [true, false]), Some(90));
        assert_eq!(clock.stream_time(LONG, false, [true, true]), Some(90));
    }

    #[test]
    fn a_pair_with_nothing_read_is_swept_on_the_wall_clock_once_idle() {
        let clock = StreamClock::default();
        assert!(clock.stream_time(Duration::ZERO, false, [true, true]).unwrap() >= wall_clock_ms() - 1000);
        assert_eq!(clock.stream_time(LONG, false, [true, true]), None, "not idle yet");
        assert_eq!(clock.stream_time(Duration::ZERO, false, [true, false]), None, "an input still has records");
    }

    #[test]
    fn an_idle_caught_up_pair_follows_the_wall_clock() {
        let mut clock = StreamClock::default();
        clock.observe(InputKind::Clickstream, 5, Instant::now());
        let idle = Duration::ZERO;
        assert!(clock.stream_time(idle, false, [true, true]).unwrap() >= wall_clock_ms() - 1000);
        assert_eq!(clock.stream_time(idle, true, [true, true]), Some(5), "paused by backpressure is not idle");
        assert_eq!(clock.stream_time(idle, false, [false, true]), Some(5), "an input behind is not idle");
    }
}
