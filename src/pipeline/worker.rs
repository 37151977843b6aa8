//! The main loop's per-record and per-sweep work: decode, apply, publish
//! or dead-letter; churn sweeps at each partition's stream time.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use tracing::debug;

use super::PipelineError;
use super::record::{BatchClock, Record, RecordRef, Rejected, envelope};
use super::shared::Shared;
use crate::clock::wall_clock_ms;
use crate::decode::{DecodeError, erasure_request};
use crate::durability::Work;
use crate::engine::event::Source;
use crate::engine::output::Output;
use crate::engine::store::Partition;
use crate::engine::{Engine, Outcome, Slice};
use crate::kafka::sink::Origin;
use crate::sync;
use crate::telemetry::PipelineMetrics;
use crate::telemetry::events::{ErasureApplied, RetentionEvicted};
use crate::vocab::{EVENT_INPUTS, InputKind};

/// A partition's stream time (docs/model.md "Health"): the event time up
/// to which every event input has been applied, or the wall clock once the
/// partition has been caught up and idle for `idle_grace`.
#[derive(Debug)]
pub(super) struct StreamClock {
    /// The largest event time applied, per event input.
    pub(super) max_event_ms: [i64; EVENT_INPUTS],
    pub(super) last_record: Instant,
}

impl Default for StreamClock {
    fn default() -> Self {
        StreamClock { max_event_ms: [i64::MIN; EVENT_INPUTS], last_record: Instant::now() }
    }
}

impl StreamClock {
    /// An event of `topic` at `event_ms` was taken up at `at`.
    pub(super) fn observe(&mut self, topic: InputKind, event_ms: i64, at: Instant) {
        if let Some(side) = topic.event_index() {
            let max = &mut self.max_event_ms[side];
            *max = (*max).max(event_ms);
        }
        self.last_record = at;
    }

    /// The stream time, or `None` before anything was applied. An input
    /// that is not `settled` (it has records held or still on the broker)
    /// holds the time back to what it has applied: a sweep must not judge
    /// its customers idle at another input's later time. While paused by
    /// backpressure the partition is not idle, only held.
    pub(super) fn stream_time(&self, idle_grace: Duration, paused: bool, settled: [bool; EVENT_INPUTS]) -> Option<i64> {
        let newest = self.max_event_ms.iter().copied().max().unwrap_or(i64::MIN);
        let idle = settled.iter().all(|s| *s) && !paused && self.last_record.elapsed() >= idle_grace;
        if newest == i64::MIN {
            // Nothing read since the assignment: the restored customers are
            // judged on the wall clock once the partition is caught up and
            // idle.
            return idle.then(wall_clock_ms);
        }
        let behind = (0..EVENT_INPUTS)
            .filter(|&side| !settled[side] && self.max_event_ms[side] != i64::MIN)
            .map(|side| self.max_event_ms[side])
            .min();
        if let Some(behind) = behind {
            return Some(behind);
        }
        if idle { Some(newest.max(wall_clock_ms())) } else { Some(newest) }
    }
}

/// The main loop's per-record and per-sweep state.
pub(super) struct Worker {
    pub(super) engine: Engine,
    pub(super) metrics: PipelineMetrics,
    pub(super) limits: crate::decode::Limits,
    pub(super) outputs: Vec<Output>,
    pub(super) cache: PartitionCache,
    /// Per owned partition; looked up on every record (foldhash, as every
    /// per-record map of the main loop).
    pub(super) clocks: foldhash::HashMap<i32, StreamClock>,
    pub(super) shared: Arc<Shared>,
}

impl Worker {
    /// Counts one input record taken up and returns its work item.
    fn begin(&mut self, topic: InputKind, partition: i32, offset: i64) -> Result<Work, PipelineError> {
        // A restore that failed inside this very recv() must stop us
        // before the partition's records are applied to empty state.
        if let Some(e) = sync::lock(&self.shared.fatal).take() {
            return Err(e);
        }
        self.metrics.record_in(topic);
        Ok(self.shared.durability.begin(topic, partition, offset))
    }

    /// Sends a record that cannot be used to the dead-letter topic.
    fn dead_letter(&mut self, error: &DecodeError, record: RecordRef<'_>, work: Work) {
        let shared = &*self.shared;
        self.metrics.dead_letter(error.reason);
        if let Work::Record { topic, partition, offset } = work {
            debug!(topic = shared.inputs.name(topic), partition, offset, reason = %error.reason, "dead letter");
        }
        match record {
            RecordRef::Borrowed(m) => shared.durability.dead_letter(work, m, error),
            RecordRef::Owned(m) => shared.durability.dead_letter(work, &*m, error),
        }
    }

    /// Applies and publishes one erasure request (or dead-letters it). Not
    /// aligned with the events: it takes effect as it arrives, and the
    /// events it covers are recognised by their event time whenever they
    /// come (docs/model.md "Erasure").
    pub(super) fn erase(
        &mut self,
        message: &BorrowedMessage<'_>,
        format: crate::vocab::Format,
        clock: BatchClock,
    ) -> Result<(), PipelineError> {
        let (p, offset) = (message.partition(), message.offset());
        let work = self.begin(InputKind::Erasures, p, offset)?;
        let shared = self.shared.clone();
        let value = message.payload().unwrap_or(&[]);
        let request = match erasure_request(format, &envelope(message), value, &self.limits, clock.wall_ms) {
            Ok(request) => request,
            Err(error) => {
                self.dead_letter(&error, RecordRef::Borrowed(message), work);
                return Ok(());
            }
        };
        let partition = self.cache.get(&shared, p);
        match self.engine.erase(&partition, &request, Some(offset), &mut self.outputs) {
            Outcome::Erased => {
                ErasureApplied { partition: p, offset, request_id: &request.request_id }.emit();
                self.metrics.erasure();
            }
            _ => self.metrics.duplicate(InputKind::Erasures),
        }
        self.metrics.outputs(&self.outputs);
        shared.durability.erase(p, work, &request.customer_id, &mut self.outputs);
        Ok(())
    }

    /// Applies and publishes one event-input record (or dead-letters it).
    pub(super) fn handle(&mut self, record: Record<'_>) -> Result<(), PipelineError> {
        let kind = record.topic;
        let p = record.partition;
        let work = self.begin(kind, p, record.offset)?;
        let shared = &*self.shared;
        match record.body {
            Ok(event) => {
                self.metrics.event(&event.kind);
                let partition = self.cache.get(shared, p);
                let source = Source { topic: kind, offset: record.offset };
                self.clocks.entry(p).or_default().observe(kind, event.ts_ms, record.consumed);
                let outcome = self.engine.apply(&partition, &event, Some(source), &mut self.outputs);
                if outcome == Outcome::Applied {
                    shared.durability.changed(p, &event.customer_id);
                }
                self.metrics.outcome(kind, outcome);
                self.metrics.outputs(&self.outputs);
                let origin = Origin { consumed: record.consumed, produced_ms: record.produced_ms };
                shared.durability.publish(work, &mut self.outputs, Some(origin));
            }
            Err(Rejected { error, record }) => self.dead_letter(&error, record, work),
        }
        Ok(())
    }

    /// One sweep tick: `slice` of every owned partition, at each
    /// partition's stream time (`settled`: which of its event inputs are
    /// caught up, from the aligner); then retention.
    pub(super) fn sweep(&mut self, slice: Slice, paused: bool, settled: impl Fn(i32) -> [bool; EVENT_INPUTS]) {
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
            let Some(now) = clock.stream_time(config.run.idle_grace, paused, settled(p)) else { continue };
            let partition = self.cache.get(shared, p);
            self.engine.sweep_slice(&partition, now, slice, &mut self.outputs);
            let evicted = partition.evict_idle(now.saturating_sub(retention_ms));
            let expired = partition.expire_erasures(now.saturating_sub(retention_ms));
            let gone = evicted.iter().chain(&expired).map(|id| id.as_str());
            shared.durability.changed_all(p, self.outputs.iter().map(Output::customer_id).chain(gone));
            if !evicted.is_empty() {
                RetentionEvicted { inputs: &shared.inputs, partition: p, evicted: evicted.len() }.emit();
            }
            if !self.outputs.is_empty() {
                self.metrics.outputs(&self.outputs);
                debug!(topic = %shared.inputs, partition = p, stream_time = now, outputs = self.outputs.len(), "sweep");
                shared.durability.publish(Work::Sweep { partition: p }, &mut self.outputs, None);
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
    pub(super) partitions: foldhash::HashMap<i32, Arc<Partition>>,
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
