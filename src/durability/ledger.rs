//! The ledger: per input partition, the work done in order and the
//! deliveries each piece still awaits, and so which input offsets may be
//! committed: an offset is committable only once every delivery of its
//! record and of all work before it in its partition is acknowledged, and a
//! changelog flush registered after it is acknowledged too
//! ([`super::Durability`]'s invariant). Pure bookkeeping, no I/O.

use std::collections::VecDeque;

use crate::kafka::sink::{DeliveryError, Ticket};
use crate::vocab::InputKind;

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
/// partition number (every input's partition *p* shares one queue, in the
/// order the pipeline did the work).
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

/// How many inputs there can be: the length of per-input arrays.
const INPUTS: usize = InputKind::ALL.len();

#[derive(Debug, Default)]
struct PartitionProgress {
    /// Work items in the order they were done.
    pending: VecDeque<Pending>,
    next_id: u64,
    /// Highest offset per input whose record and all work before it are
    /// delivered, not yet covered by a completed flush.
    delivered: [Option<i64>; INPUTS],
    /// Highest offset per input covered by a completed flush: safe to
    /// commit.
    durable: [Option<i64>; INPUTS],
    /// Whether `durable` moved since it was last taken.
    advanced: bool,
}

impl PartitionProgress {
    /// The pending work numbered `id`, if it is still pending. Work is
    /// numbered consecutively as registered and leaves only from the front,
    /// so its place is its number's distance from the front's: no search
    /// (every delivery report looks one up, under the ledger's lock).
    fn find(&mut self, id: u64) -> Option<&mut Pending> {
        let front = self.pending.front()?.id;
        let w = self.pending.get_mut(usize::try_from(id.checked_sub(front)?).ok()?)?;
        debug_assert_eq!(w.id, id, "pending work is numbered consecutively");
        Some(w)
    }

    fn settle(&mut self) {
        while let Some(&Pending { work, awaiting: 0, .. }) = self.pending.front() {
            self.pending.pop_front();
            match work {
                Work::Record { topic, offset, .. } => self.delivered[topic.index()] = Some(offset),
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
/// have every delivery acknowledged by the broker, and a changelog flush
/// registered after it has been acknowledged too. Only committable offsets
/// are ever stored for commit.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Looked up on every registration and delivery report: foldhash, as
    /// the store's maps, rather than std's SipHash.
    parts: foldhash::HashMap<i32, PartitionProgress>,
    in_flight: usize,
    failure: Option<DeliveryError>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Records that `work` produced `deliveries` messages about to be sent,
    /// and returns the ticket their delivery reports carry. Work must be
    /// registered in the order it was done.
    pub fn register(&mut self, work: Work, deliveries: u32) -> Ticket {
        let partition = work.partition();
        let p = self.parts.entry(partition).or_default();
        // Most records send nothing. One that follows another of its input
        // that sent nothing and still waits (for the work before both)
        // completes at the same moment: it takes that one's place, so the
        // queue holds one item per run of them, not one per record.
        if let (0, Work::Record { topic, offset, .. }) = (deliveries, work)
            && let Some(last) = p.pending.back_mut()
            && let Work::Record { topic: t, offset: o, .. } = &mut last.work
            && last.awaiting == 0
            && *t == topic
        {
            *o = offset;
            return Ticket { partition, id: last.id };
        }
        let id = p.next_id;
        p.next_id += 1;
        p.pending.push_back(Pending { id, work, awaiting: deliveries });
        self.in_flight += deliveries as usize;
        p.settle();
        Ticket { partition, id }
    }

    /// Records one delivery report. A failed delivery is fatal: it is kept
    /// and the offsets after it never become committable.
    pub fn ack(&mut self, ticket: Ticket, result: Result<(), DeliveryError>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Err(e) = result {
            self.failure.get_or_insert(e);
            return;
        }
        let Some(p) = self.parts.get_mut(&ticket.partition) else { return };
        if let Some(w) = p.find(ticket.id) {
            w.awaiting = w.awaiting.saturating_sub(1);
        }
        p.settle();
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
    /// neither it nor anything after it completes until [`Ledger::open`]
    /// replaces the gate with the flush's real deliveries.
    pub fn register_gated_flush(&mut self, partition: i32) -> Ticket {
        self.register_gated(Work::Flush { partition })
    }

    /// Registers `work` whose deliveries are not sent yet, held like a
    /// gated flush until [`Ledger::open`].
    pub fn register_gated(&mut self, work: Work) -> Ticket {
        let ticket = self.register(work, 1);
        self.in_flight -= 1;
        ticket
    }

    /// Whether every piece of work registered before `ticket` is complete,
    /// so a gated flush may now write its records.
    pub fn is_next(&self, ticket: Ticket) -> bool {
        self.parts.get(&ticket.partition).and_then(|p| p.pending.front()).is_some_and(|w| w.id == ticket.id)
    }

    /// Replaces a gated flush's gate with the `deliveries` its records are
    /// about to make.
    pub fn open(&mut self, ticket: Ticket, deliveries: u32) {
        let Some(p) = self.parts.get_mut(&ticket.partition) else { return };
        if let Some(w) = p.find(ticket.id) {
            w.awaiting = deliveries;
            self.in_flight += deliveries as usize;
        }
        p.settle();
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

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::KafkaError;
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
        let mut p = Ledger::new();
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
        assert!(p.take_committable().is_empty(), "delivered, but no flush after them yet");
        // 10, 11 (no outputs) and 12 are all done, and so is the flush
        // after them: commit 13.
        p.register(FLUSH, 0);
        assert_eq!(p.take_committable(), vec![committable(InputKind::Clickstream, 0, 13)]);
        assert!(p.take_committable().is_empty(), "reported once");
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn with_a_changelog_offsets_wait_for_the_flush_after_them() {
        let mut p = Ledger::new();
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
        let mut p = Ledger::new();
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
    fn acknowledgements_find_their_work_after_the_front_has_moved_on() {
        let mut p = Ledger::new();
        let a = p.register(w(1), 1);
        let b = p.register(w(2), 2);
        let c = p.register(w(3), 1);
        p.register(FLUSH, 0);
        p.ack(a, Ok(()));
        // 1 is settled and gone from the queue: 2 and 3 are now its first
        // two places, and each acknowledgement must still reach its own.
        p.ack(c, Ok(()));
        p.ack(b, Ok(()));
        assert!(p.take_committable().is_empty(), "2 awaits one more, and the flush waits behind it");
        assert_eq!(p.in_flight(), 1);
        p.ack(b, Ok(()));
        assert_eq!(p.take_committable(), vec![committable(InputKind::Clickstream, 0, 4)]);
        assert_eq!(p.in_flight(), 0);
        assert!(p.is_drained(0));
    }

    #[test]
    fn a_run_of_records_that_send_nothing_takes_one_place_and_commits_to_its_last() {
        let mut p = Ledger::new();
        let purchase = |offset| Work::Record { topic: InputKind::Purchases, partition: 0, offset };
        let a = p.register(w(1), 1);
        for offset in 2..=100 {
            p.register(w(offset), 0);
        }
        p.register(purchase(7), 0);
        p.register(purchase(8), 0);
        p.register(w(101), 0);
        let flush = p.register(FLUSH, 1);
        assert_eq!(p.parts[&0].pending.len(), 5, "1, 2..=100, purchases 7..=8, 101, the flush");
        p.ack(flush, Ok(()));
        assert!(p.take_committable().is_empty(), "all of it waits for 1");
        p.ack(a, Ok(()));
        assert_eq!(
            p.take_committable(),
            vec![committable(InputKind::Clickstream, 0, 102), committable(InputKind::Purchases, 0, 9)]
        );
        assert!(p.is_drained(0));
    }

    #[test]
    fn every_input_of_a_partition_shares_one_queue() {
        let mut p = Ledger::new();
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
        let mut p = Ledger::new();
        p.register(w(1), 0);
        p.register(FLUSH, 0);
        assert_eq!(p.take_committable(), vec![committable(InputKind::Clickstream, 0, 2)]);
        let sweep = p.register(Work::Sweep { partition: 0 }, 2);
        p.register(w(2), 0);
        p.register(FLUSH, 0);
        assert!(p.take_committable().is_empty(), "the sweep's alerts are not delivered yet");
        p.ack(sweep, Ok(()));
        p.ack(sweep, Ok(()));
        assert_eq!(p.take_committable(), vec![committable(InputKind::Clickstream, 0, 3)]);
    }

    #[test]
    fn a_failed_delivery_is_kept_and_blocks_the_offset() {
        let mut p = Ledger::new();
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
        let mut p = Ledger::new();
        p.register(w(1), 3);
        p.forget(0);
        assert_eq!(p.in_flight(), 0);
    }
}
