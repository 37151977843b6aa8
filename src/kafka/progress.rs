//! Offset progress: which input records are fully delivered, and so which
//! offsets may be committed. This bookkeeping is the heart of the
//! at-least-once guarantee: an offset is committed only after every output
//! of the record, and of all work before it in its partition, is
//! acknowledged, and (with a changelog) after the state flush that follows
//! it is acknowledged too.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::error::KafkaError;

use crate::vocab::InputKind;

/// Why an output was not delivered. Fatal to the pipeline: the offsets after
/// it never become committable, and a restart reprocesses from the last
/// commit. Retrying helps once the broker or topic is healthy again.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DeliveryError {
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

/// When a record's offset becomes committable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitGate {
    /// Once the record's own outputs (and all work before it) are
    /// acknowledged: for a pipeline that keeps no state changelog.
    Delivered,
    /// Once, in addition, a changelog flush after the record is
    /// acknowledged, so the record's effect on state is durable.
    Flushed,
}

/// An input offset that became committable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committable {
    /// The input topic.
    pub topic: InputKind,
    /// The input partition.
    pub partition: i32,
    /// The next offset to consume (last delivered + 1), which is what
    /// Kafka commits.
    pub next_offset: i64,
}

/// One registered piece of work and the deliveries it still awaits.
#[derive(Debug)]
struct Pending {
    id: u64,
    work: Work,
    awaiting: u32,
}

/// A unit of work whose deliveries gate commits, queued per input
/// partition number (both input topics' partition *p* share one queue, in
/// the order the pipeline did the work).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// One input record: its outputs (or dead letter).
    Record {
        /// Input topic.
        topic: InputKind,
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
    /// Records held until all work before them is complete: an erasure's
    /// changelog record, then its confirmation, sent once that record is
    /// acknowledged.
    Release {
        /// Input partition.
        partition: i32,
    },
}

impl Work {
    fn partition(&self) -> i32 {
        match *self {
            Work::Record { partition, .. }
            | Work::Sweep { partition }
            | Work::Flush { partition }
            | Work::Release { partition } => partition,
        }
    }
}

/// What a delivery report refers to: a registered [`Work`] item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub(crate) partition: i32,
    id: u64,
}

#[derive(Debug, Default)]
struct PartitionProgress {
    /// Work items in the order they were done.
    pending: VecDeque<Pending>,
    next_id: u64,
    /// Highest offset per input topic whose record and all work before it
    /// are delivered, not yet covered by a completed flush.
    delivered: [Option<i64>; 3],
    /// Highest offset per input topic covered by a completed flush: safe to
    /// commit.
    durable: [Option<i64>; 3],
    /// Whether `durable` moved since it was last taken.
    advanced: bool,
}

impl PartitionProgress {
    fn settle(&mut self, gate: CommitGate) {
        while let Some(&Pending { work, awaiting: 0, .. }) = self.pending.front() {
            self.pending.pop_front();
            match work {
                Work::Record { topic, offset, .. } => {
                    self.delivered[topic.index()] = Some(offset);
                    if gate == CommitGate::Delivered {
                        self.promote();
                    }
                }
                Work::Flush { .. } => self.promote(),
                Work::Sweep { .. } | Work::Release { .. } => {}
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
    failure: Option<DeliveryError>,
    gate: CommitGate,
}

impl Progress {
    /// Bookkeeping whose offsets become committable at `gate`.
    pub fn new(gate: CommitGate) -> Progress {
        Progress { parts: HashMap::new(), in_flight: 0, failure: None, gate }
    }

    /// Records that `work` produced `deliveries` messages about to be sent,
    /// and returns the token their delivery reports carry. Work must be
    /// registered in the order it was done.
    pub fn register(&mut self, work: Work, deliveries: u32) -> Token {
        let partition = work.partition();
        let p = self.parts.entry(partition).or_default();
        let id = p.next_id;
        p.next_id += 1;
        p.pending.push_back(Pending { id, work, awaiting: deliveries });
        self.in_flight += deliveries as usize;
        p.settle(self.gate);
        Token { partition, id }
    }

    /// Records one delivery report. A failed delivery is fatal: it is kept
    /// and the offsets after it never become committable.
    pub fn ack(&mut self, token: Token, result: Result<(), DeliveryError>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Err(e) = result {
            self.failure.get_or_insert(e);
            return;
        }
        let Some(p) = self.parts.get_mut(&token.partition) else { return };
        if let Ok(i) = p.pending.binary_search_by_key(&token.id, |w| w.id) {
            p.pending[i].awaiting = p.pending[i].awaiting.saturating_sub(1);
        }
        p.settle(self.gate);
    }

    /// Outputs sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The first delivery failure, if any.
    pub fn failure(&self) -> Option<&DeliveryError> {
        self.failure.as_ref()
    }

    /// Input partitions whose committable offsets moved since the last call.
    pub fn take_committable(&mut self) -> Vec<Committable> {
        let mut out = Vec::new();
        for (partition, p) in &mut self.parts {
            if p.advanced {
                p.advanced = false;
                for t in InputKind::ALL {
                    if let Some(o) = p.durable[t.index()] {
                        out.push(Committable { topic: t, partition: *partition, next_offset: o + 1 });
                    }
                }
            }
        }
        out.sort_by_key(|c| (c.partition, c.topic.index()));
        out
    }

    /// Registers a changelog flush whose records are not written yet. It
    /// holds a *gate* in place of deliveries (not counted as in flight), so
    /// neither it nor anything after it completes until [`Progress::open`]
    /// replaces the gate with the flush's real deliveries.
    pub fn register_gated_flush(&mut self, partition: i32) -> Token {
        self.register_gated(Work::Flush { partition })
    }

    /// Registers `work` whose deliveries are not sent yet, held like a
    /// gated flush until [`Progress::open`].
    pub fn register_gated(&mut self, work: Work) -> Token {
        let token = self.register(work, 1);
        self.in_flight -= 1;
        token
    }

    /// Whether every piece of work registered before `token` is complete,
    /// so a gated flush may now write its records.
    pub fn is_next(&self, token: Token) -> bool {
        self.parts.get(&token.partition).and_then(|p| p.pending.front()).is_some_and(|w| w.id == token.id)
    }

    /// Replaces a gated flush's gate with the `deliveries` its records are
    /// about to make.
    pub fn open(&mut self, token: Token, deliveries: u32) {
        let Some(p) = self.parts.get_mut(&token.partition) else { return };
        if let Ok(i) = p.pending.binary_search_by_key(&token.id, |w| w.id) {
            p.pending[i].awaiting = deliveries;
            self.in_flight += deliveries as usize;
        }
        p.settle(self.gate);
    }

    /// Whether any work of this partition still awaits deliveries.
    pub fn is_drained(&self, partition: i32) -> bool {
        self.parts.get(&partition).is_none_or(|p| p.pending.is_empty())
    }

    /// Forgets a partition (after it was revoked and committed).
    pub fn forget(&mut self, partition: i32) {
        if let Some(p) = self.parts.remove(&partition) {
            let waiting: u32 = p.pending.iter().map(|w| w.awaiting).sum();
            self.in_flight = self.in_flight.saturating_sub(waiting as usize);
        }
    }
}

/// Shared handle on [`Progress`].
pub type SharedProgress = Arc<Mutex<Progress>>;

/// Locks progress; its updates are single statements, so a panic elsewhere
/// cannot leave it half-updated and poisoning is ignored.
pub fn lock(p: &SharedProgress) -> MutexGuard<'_, Progress> {
    crate::sync::lock(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode;

    fn committable(topic: InputKind, partition: i32, next_offset: i64) -> Committable {
        Committable { topic, partition, next_offset }
    }

    fn w(offset: i64) -> Work {
        Work::Record { topic: InputKind::Clickstream, partition: 0, offset }
    }

    const FLUSH: Work = Work::Flush { partition: 0 };

    #[test]
    fn an_offset_is_committable_only_when_it_and_everything_before_it_is_delivered() {
        let mut p = Progress::new(CommitGate::Delivered);
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
        assert_eq!(p.take_committable(), vec![committable(InputKind::Clickstream, 0, 13)]);
        assert!(p.take_committable().is_empty(), "reported once");
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn with_a_changelog_offsets_wait_for_the_flush_after_them() {
        let mut p = Progress::new(CommitGate::Flushed);
        p.register(w(1), 0);
        p.register(w(2), 0);
        assert!(p.take_committable().is_empty(), "state not durable yet");
        let flush = p.register(FLUSH, 2);
        p.register(w(3), 0);
        p.ack(flush, Ok(()));
        assert!(p.take_committable().is_empty());
        p.ack(flush, Ok(()));
        // The flush covers 1 and 2, not 3.
        assert_eq!(p.take_committable(), vec![committable(InputKind::Clickstream, 0, 3)]);
        p.register(FLUSH, 0);
        assert_eq!(p.take_committable(), vec![committable(InputKind::Clickstream, 0, 4)]);
    }

    #[test]
    fn a_gated_flush_opens_only_after_the_work_before_it_and_holds_back_what_follows() {
        let mut p = Progress::new(CommitGate::Flushed);
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
        assert_eq!(p.take_committable(), vec![committable(InputKind::Clickstream, 0, 2)]);
        let empty = p.register_gated_flush(0);
        p.open(empty, 0);
        assert_eq!(p.take_committable(), vec![committable(InputKind::Clickstream, 0, 3)]);
    }

    #[test]
    fn both_topics_of_a_partition_share_one_queue() {
        let mut p = Progress::new(CommitGate::Flushed);
        p.register(w(5), 0);
        let buy = p.register(Work::Record { topic: InputKind::Purchases, partition: 0, offset: 9 }, 1);
        p.register(FLUSH, 0);
        assert!(p.take_committable().is_empty(), "the purchase's output is not delivered yet");
        p.ack(buy, Ok(()));
        assert_eq!(
            p.take_committable(),
            vec![committable(InputKind::Clickstream, 0, 6), committable(InputKind::Purchases, 0, 10)]
        );
    }

    #[test]
    fn a_sweep_holds_back_the_offsets_after_it_until_its_outputs_are_delivered() {
        let mut p = Progress::new(CommitGate::Delivered);
        p.register(w(1), 0);
        let sweep = p.register(Work::Sweep { partition: 0 }, 2);
        p.register(w(2), 0);
        assert_eq!(p.take_committable(), vec![committable(InputKind::Clickstream, 0, 2)]);
        p.ack(sweep, Ok(()));
        p.ack(sweep, Ok(()));
        assert_eq!(p.take_committable(), vec![committable(InputKind::Clickstream, 0, 3)]);
    }

    #[test]
    fn a_failed_delivery_is_kept_and_blocks_the_offset() {
        let mut p = Progress::new(CommitGate::Delivered);
        let a = p.register(w(5), 1);
        p.register(w(6), 0);
        let timed_out = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        p.ack(a, Err(DeliveryError::Failed { topic: "scores".into(), source: timed_out }));
        assert!(matches!(p.failure(), Some(DeliveryError::Failed { topic, .. }) if topic == "scores"));
        assert!(p.take_committable().is_empty());
        assert!(!p.is_drained(0));
    }

    #[test]
    fn forgetting_a_partition_releases_its_in_flight_count() {
        let mut p = Progress::new(CommitGate::Delivered);
        p.register(w(1), 3);
        p.forget(0);
        assert_eq!(p.in_flight(), 0);
    }
}
