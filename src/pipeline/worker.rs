//! The main loop's per-record and per-sweep work: decode, apply, publish
//! or dead-letter; churn sweeps at each partition's stream time.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Headers};
use tracing::{debug, info};

use super::shared::Shared;
use super::{PipelineError, RunSummary};
use crate::clock::wall_clock_ms;
use crate::decode::{Envelope, decode};
use crate::engine::event::{InputTopic, Source};
use crate::engine::output::Output;
use crate::engine::store::Partition;
use crate::engine::{Engine, Outcome, Slice};
use crate::kafka::progress::Work;
use crate::kafka::sink::{CONTENT_TYPE, Origin};
use crate::sync;
use crate::telemetry::PipelineMetrics;

/// A partition's stream time (docs/model.md "Health"): the largest event time seen, or the
/// wall clock once the partition has been caught up and idle for
/// `idle_grace`.
#[derive(Debug)]
pub(super) struct StreamClock {
    pub(super) max_event_ms: i64,
    pub(super) last_record: Instant,
}

impl Default for StreamClock {
    fn default() -> Self {
        StreamClock { max_event_ms: i64::MIN, last_record: Instant::now() }
    }
}

impl StreamClock {
    /// An event at `event_ms` was taken up at `at`.
    pub(super) fn observe(&mut self, event_ms: i64, at: Instant) {
        self.max_event_ms = self.max_event_ms.max(event_ms);
        self.last_record = at;
    }

    /// While paused by backpressure the partition is not idle, only held.
    pub(super) fn stream_time(&self, idle_grace: Duration, paused: bool) -> i64 {
        if !paused && self.last_record.elapsed() >= idle_grace {
            self.max_event_ms.max(wall_clock_ms())
        } else {
            self.max_event_ms
        }
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
    /// Decodes, applies and publishes one input record (or dead-letters it).
    pub(super) fn handle(&mut self, message: &BorrowedMessage<'_>, clock: BatchClock) -> Result<(), PipelineError> {
        let shared = &*self.shared;
        // A restore that failed inside this very recv() must stop us
        // before the partition's records are applied to empty state.
        if let Some(e) = sync::lock(&shared.fatal).take() {
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
            sync::lock(&shared.processed).insert((kind, p), message.offset() + 1);
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
    pub(super) fn sweep(&mut self, slice: Slice, paused: bool) {
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
            let mut dirty = sync::lock(&shared.dirty);
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
        }
    }
}

pub(super) fn content_type<'a>(message: &'a BorrowedMessage<'_>) -> Option<&'a [u8]> {
    message.headers()?.iter().find(|h| h.key.eq_ignore_ascii_case(CONTENT_TYPE)).and_then(|h| h.value)
}
