//! Customer states in sharded concurrent maps, grouped by input partition so
//! that one partition's customers can be restored, snapshotted or dropped as
//! a unit when Kafka assigns or revokes it. Readers (the query path) see
//! each customer's state between events, never half-applied.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use compact_str::CompactString;
use dashmap::DashMap;

use crate::engine::state::CustomerState;

/// The map type: ids inline up to 24 bytes, states boxed so a table slot is
/// 32 bytes and growth moves pointers, not states.
pub type CustomerMap = DashMap<CompactString, Box<CustomerState>, foldhash::fast::RandomState>;

/// The customers of one input partition.
#[derive(Debug)]
pub struct Partition {
    id: i32,
    customers: CustomerMap,
    /// What keeps each erasure in force, by customer (docs/model.md
    /// "Erasure"); apart from the customers, so the query path never sees
    /// them and a returning customer can hold both.
    erased: DashMap<CompactString, Erased, foldhash::fast::RandomState>,
    /// `erased.len()`, read on every event: most partitions hold none.
    erased_count: std::sync::atomic::AtomicUsize,
    /// See [`Partition::bootstrap_as_of`].
    bootstrap_as_of: std::sync::atomic::AtomicI64,
}

impl Partition {
    fn new(id: i32) -> Partition {
        Partition {
            id,
            customers: CustomerMap::default(),
            erased: DashMap::default(),
            erased_count: std::sync::atomic::AtomicUsize::new(0),
            bootstrap_as_of: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
    }

    /// The as-of time (epoch ms) of the `engage bootstrap` this partition's
    /// state was built from, restored from the changelog; `i64::MIN` when
    /// there was none. Events at or before it are already in the state
    /// (docs/model.md "Starting from history").
    pub fn bootstrap_as_of(&self) -> i64 {
        self.bootstrap_as_of.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets [`Partition::bootstrap_as_of`] (restore; `i64::MIN` clears it).
    pub fn set_bootstrap_as_of(&self, as_of_ms: i64) {
        self.bootstrap_as_of.store(as_of_ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// The input partition number (the same in both co-partitioned topics).
    pub fn id(&self) -> i32 {
        self.id
    }

    /// Number of customers held.
    pub fn len(&self) -> usize {
        self.customers.len()
    }

    /// True when no customer is held.
    pub fn is_empty(&self) -> bool {
        self.customers.is_empty()
    }

    /// A copy of one customer's state.
    pub fn get(&self, customer_id: &str) -> Option<CustomerState> {
        self.customers.get(customer_id).map(|s| (**s).clone())
    }

    /// Inserts or replaces a customer's state (restore from the changelog).
    pub fn insert(&self, customer_id: CompactString, state: CustomerState) {
        self.customers.insert(customer_id, Box::new(state));
    }

    /// Removes a customer (retention), returning its state.
    pub fn remove(&self, customer_id: &str) -> Option<CustomerState> {
        self.customers.remove(customer_id).map(|(_, s)| *s)
    }

    /// Removes every customer whose latest activity is before `cutoff_ms`
    /// (retention), returning their ids.
    pub fn evict_idle(&self, cutoff_ms: i64) -> Vec<CompactString> {
        let mut gone = Vec::new();
        self.customers.retain(|id, s| {
            let keep = s.last_seen >= cutoff_ms;
            if !keep {
                gone.push(id.clone());
            }
            keep
        });
        gone
    }

    /// Removes everything held for a customer: its state and its erasure
    /// (a changelog tombstone).
    pub fn forget(&self, customer_id: &str) {
        self.remove(customer_id);
        self.clear_erased(customer_id);
    }

    /// The erasure in force for a customer, if any.
    pub fn erased(&self, customer_id: &str) -> Option<Erased> {
        if self.erased_count.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            return None;
        }
        self.erased.get(customer_id).map(|e| *e)
    }

    /// Records (or replaces) the erasure in force for a customer.
    pub fn set_erased(&self, customer_id: &str, erased: Erased) {
        if self.erased.insert(customer_id.into(), erased).is_none() {
            self.erased_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Forgets a customer's erasure.
    pub fn clear_erased(&self, customer_id: &str) {
        if self.erased.remove(customer_id).is_some() {
            self.erased_count.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Erasures held (customers erased within the retention).
    pub fn erasures(&self) -> usize {
        self.erased_count.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forgets every erasure whose cut-off is before `cutoff_ms`
    /// (retention), returning their customer ids.
    pub fn expire_erasures(&self, cutoff_ms: i64) -> Vec<CompactString> {
        let mut gone = Vec::new();
        if self.erasures() == 0 {
            return gone;
        }
        self.erased.retain(|id, e| {
            let keep = e.cutoff >= cutoff_ms;
            if !keep {
                gone.push(id.clone());
            }
            keep
        });
        self.erased_count.fetch_sub(gone.len(), std::sync::atomic::Ordering::Relaxed);
        gone
    }

    /// The underlying map, for the engine.
    pub(crate) fn map(&self) -> &CustomerMap {
        &self.customers
    }

    /// Visits every customer. Holds one shard lock at a time, so writers to
    /// other shards are not blocked; do not call back into this partition
    /// from `f`.
    pub fn for_each(&self, mut f: impl FnMut(&str, &CustomerState)) {
        for entry in self.customers.iter() {
            f(entry.key(), entry.value());
        }
    }
}

/// What remains of an erased customer while the erasure is in force
/// ([`crate::engine::erasure`]). Holds no fact about the customer's events
/// beyond the cut-off time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Erased {
    /// Events at or before this event time (epoch ms) are the erased
    /// customer's and are ignored.
    pub cutoff: i64,
    /// Offset in `topics.erasures` of the newest request applied (`-1`:
    /// none from Kafka): a request at or below it was already applied.
    pub offset: i64,
    /// The last `seq` published for the customer.
    pub seq: u32,
}

/// All partitions this instance owns.
#[derive(Debug, Default)]
pub struct Store {
    partitions: RwLock<BTreeMap<i32, Arc<Partition>>>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    /// The partition `id`, created empty if not held yet.
    pub fn partition(&self, id: i32) -> Arc<Partition> {
        if let Some(p) = crate::sync::read(&self.partitions).get(&id) {
            return p.clone();
        }
        // The maps are only ever left consistent, so a poisoned lock (a panic
        // elsewhere while holding it) does not make the data unusable.
        let mut w = crate::sync::write(&self.partitions);
        w.entry(id).or_insert_with(|| Arc::new(Partition::new(id))).clone()
    }

    /// The partition `id` if it is held; never creates one (the query path).
    pub fn held(&self, id: i32) -> Option<Arc<Partition>> {
        crate::sync::read(&self.partitions).get(&id).cloned()
    }

    /// Drops partition `id` and all its customers (revocation).
    pub fn remove_partition(&self, id: i32) -> Option<Arc<Partition>> {
        crate::sync::write(&self.partitions).remove(&id)
    }

    /// The partitions held, in id order.
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        crate::sync::read(&self.partitions).values().cloned().collect()
    }

    /// Finds a customer in whichever partition holds it.
    pub fn find(&self, customer_id: &str) -> Option<(i32, CustomerState)> {
        self.partitions().iter().find_map(|p| p.get(customer_id).map(|s| (p.id(), s)))
    }

    /// Customers held across all partitions.
    pub fn customers(&self) -> usize {
        self.partitions().iter().map(|p| p.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_independent_units() {
        let store = Store::new();
        store.partition(0).insert("a".into(), CustomerState::default());
        store.partition(1).insert("b".into(), CustomerState::default());
        assert_eq!(store.customers(), 2);
        assert_eq!(store.find("b").map(|(p, _)| p), Some(1));
        store.remove_partition(1);
        assert!(store.find("b").is_none());
        assert_eq!(store.customers(), 1);
    }

    #[test]
    fn retention_evicts_only_customers_idle_past_the_cutoff() {
        let store = Store::new();
        let p = store.partition(0);
        let at = |last_seen| {
            let mut s = CustomerState::default();
            s.last_seen = last_seen;
            s
        };
        p.insert("old".into(), at(100));
        p.insert("new".into(), at(500));
        assert_eq!(p.evict_idle(200), vec![CompactString::from("old")]);
        assert!(p.get("old").is_none() && p.get("new").is_some());
    }
}
