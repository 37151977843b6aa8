//! What waits to be written: customers changed since the last flush, and
//! records encoded but held until the work before them is complete
//! (changelog flushes, erasure records and confirmations), per partition.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use compact_str::CompactString;

use crate::engine::output::Output;
use crate::kafka::sink::{ChangelogRecords, Ticket};
use crate::sync;

/// Customers changed since the last flush, per input partition.
#[derive(Debug, Default)]
pub(super) struct Dirty {
    /// Marked once per applied event: hashed with foldhash, as the store's
    /// maps are, rather than std's SipHash.
    by_partition: foldhash::HashMap<i32, foldhash::HashSet<CompactString>>,
}

impl Dirty {
    /// Marks a customer whose state changed (or was evicted).
    pub(super) fn mark(&mut self, partition: i32, customer_id: &str) {
        let set = self.by_partition.entry(partition).or_default();
        if !set.contains(customer_id) {
            set.insert(CompactString::from(customer_id));
        }
    }

    /// Takes the customers of one partition.
    pub(super) fn take(&mut self, partition: i32) -> foldhash::HashSet<CompactString> {
        self.by_partition.remove(&partition).unwrap_or_default()
    }

    /// Forgets a partition's marks (it was revoked after its last flush).
    pub(super) fn forget(&mut self, partition: i32) {
        self.by_partition.remove(&partition);
    }
}

/// Records held until every work item registered before them is complete.
#[derive(Debug)]
pub(super) enum Staged {
    /// A flush's changelog records.
    Changelog(ChangelogRecords),
    /// Erasures' changelog records.
    Erasure(ChangelogRecords),
    /// Erasures' confirmations, after their records.
    Confirmation(Vec<Output>),
}

impl Staged {
    /// The deliveries its records will make.
    pub(super) fn deliveries(&self) -> u32 {
        match self {
            Staged::Changelog(records) | Staged::Erasure(records) => records.len() as u32,
            Staged::Confirmation(outputs) => outputs.len() as u32,
        }
    }
}

/// The held records of every partition, oldest first, each under the
/// ticket of its gated work item.
#[derive(Debug, Default)]
pub(super) struct StagedQueues(Mutex<HashMap<i32, VecDeque<(Ticket, Staged)>>>);

impl StagedQueues {
    /// Holds `staged` behind the work registered before `ticket`.
    pub(super) fn push(&self, partition: i32, ticket: Ticket, staged: Staged) {
        sync::lock(&self.0).entry(partition).or_default().push_back((ticket, staged));
    }

    /// Holds an erasure's changelog `record`, then its `confirmation`.
    /// A burst of erasures shares one record write and one release: a record
    /// may go early (it only has to be durable before its confirmation),
    /// and the confirmations still wait for all of them. `register` gives
    /// the two gated tickets when a new pair is needed. Returns how many
    /// held items were added.
    pub(super) fn push_erasure(
        &self,
        partition: i32,
        record: ChangelogRecords,
        confirmation: Vec<Output>,
        register: impl FnOnce() -> (Ticket, Ticket),
    ) -> usize {
        let mut queues = sync::lock(&self.0);
        let queue = queues.entry(partition).or_default();
        if let [.., (_, Staged::Erasure(records)), (_, Staged::Confirmation(outputs))] = queue.make_contiguous() {
            records.extend(record);
            outputs.extend(confirmation);
            return 0;
        }
        let (first, then) = register();
        queue.push_back((first, Staged::Erasure(record)));
        queue.push_back((then, Staged::Confirmation(confirmation)));
        2
    }

    /// Hands every held item whose turn has come (`is_next`) to `write`, in
    /// order.
    pub(super) fn release(&self, is_next: impl Fn(Ticket) -> bool, mut write: impl FnMut(Ticket, Staged)) {
        let mut queues = sync::lock(&self.0);
        for queue in queues.values_mut() {
            while let Some(&(ticket, _)) = queue.front() {
                if !is_next(ticket) {
                    break;
                }
                let Some((ticket, staged)) = queue.pop_front() else { break };
                write(ticket, staged);
            }
        }
    }

    /// Drops a partition's held items; returns how many were erasure items.
    pub(super) fn forget(&self, partition: i32) -> usize {
        sync::lock(&self.0)
            .remove(&partition)
            .map_or(0, |dropped| dropped.iter().filter(|(_, s)| !matches!(s, Staged::Changelog(_))).count())
    }
}
