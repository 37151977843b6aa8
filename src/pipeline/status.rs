//! The pipeline's liveness and readiness, which it publishes and the ops
//! endpoints (`/healthz`, `/readyz`) and the `engage_ready` gauge read; and
//! which input partitions it holds, in which phase, for the customer API.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};

use crate::telemetry::{READY, RESTORING};

/// Liveness and readiness signals of one running pipeline, shared with the
/// HTTP probes.
#[derive(Debug, Default)]
pub struct Status {
    heartbeat_ms: AtomicI64,
    joined: AtomicBool,
    restoring: AtomicUsize,
    /// See [`Status::partition_phase`].
    partitions: RwLock<BTreeMap<i32, Held>>,
    /// Bumped after every change of `partitions`.
    partitions_generation: AtomicU64,
}

/// An input partition held by this instance: its phase, and which
/// assignment of it this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// Restoring or serving.
    pub phase: PartitionPhase,
    /// A number this assignment of the partition keeps from its restore
    /// until it is revoked, and a later assignment of the same partition
    /// does not share: what the API learned about one holding (how far it
    /// has caught up) is not carried over to the next.
    pub assigned: u64,
}

/// What this instance does with an input partition the group gave it, as
/// the customer API needs to know: a partition being restored must not be
/// answered from (its customers are still arriving from the changelog), a
/// served one may.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionPhase {
    /// Assigned; its customers are being restored from the changelog.
    Restoring,
    /// Assigned and restored: its records are being processed.
    Serving,
}

impl Status {
    /// A pipeline that has not started.
    pub fn new() -> Status {
        Status::default()
    }

    /// The main loop is alive at `now_ms`.
    pub fn beat(&self, now_ms: i64) {
        self.heartbeat_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Wall-clock time (epoch ms) of the main loop's latest heartbeat.
    pub fn heartbeat_ms(&self) -> i64 {
        self.heartbeat_ms.load(Ordering::Relaxed)
    }

    /// The consumer has received its (possibly empty) assignment.
    pub fn set_joined(&self) {
        self.joined.store(true, Ordering::SeqCst);
        self.publish();
    }

    /// Whether the consumer has joined its group.
    pub fn joined(&self) -> bool {
        self.joined.load(Ordering::SeqCst)
    }

    /// Partitions being restored from the changelog right now. While above
    /// zero the instance is not ready: queries would see partial state.
    pub fn restoring(&self) -> usize {
        self.restoring.load(Ordering::SeqCst)
    }

    /// Counts a restore in progress until the guard is dropped.
    pub fn begin_restore(&self) -> Restoring<'_> {
        self.restoring.fetch_add(1, Ordering::SeqCst);
        self.publish();
        Restoring(self)
    }

    /// Whether `/readyz` answers 200: joined, and nothing restoring.
    pub fn ready(&self) -> bool {
        self.joined() && self.restoring() == 0
    }

    /// Input partition `p` as held by this instance; `None` when it is not
    /// assigned here (or is being revoked).
    pub fn partition(&self, p: i32) -> Option<Held> {
        crate::sync::read(&self.partitions).get(&p).copied()
    }

    /// Every partition held, and the generation of that view (see
    /// [`Status::partitions_generation`]).
    pub fn partitions_held(&self) -> (u64, Vec<(i32, Held)>) {
        let held = crate::sync::read(&self.partitions);
        (self.partitions_generation(), held.iter().map(|(p, h)| (*p, *h)).collect())
    }

    /// A number that changes after every change of a partition's phase. A
    /// reader that sees the same number before and after reading a
    /// partition's customers read them while the phase it saw held: a
    /// customer missing then is missing from the whole partition, not from
    /// one being dropped or restored.
    pub fn partitions_generation(&self) -> u64 {
        self.partitions_generation.load(Ordering::SeqCst)
    }

    /// Sets the phase of partition `p` (`None`: no longer held here). The
    /// pipeline calls this before it starts dropping or restoring the
    /// partition's customers, and once they are restored. A partition
    /// going from restoring to serving stays the same assignment.
    pub(crate) fn set_partition_phase(&self, p: i32, phase: Option<PartitionPhase>) {
        let mut held = crate::sync::write(&self.partitions);
        let generation = self.partitions_generation.load(Ordering::SeqCst) + 1;
        match phase {
            Some(phase) => {
                let assigned = match held.get(&p) {
                    Some(h) if phase == PartitionPhase::Serving => h.assigned,
                    _ => generation,
                };
                held.insert(p, Held { phase, assigned });
            }
            None => {
                held.remove(&p);
            }
        }
        self.partitions_generation.store(generation, Ordering::SeqCst);
    }

    fn publish(&self) {
        metrics::gauge!(READY).set(if self.ready() { 1.0 } else { 0.0 });
        metrics::gauge!(RESTORING).set(self.restoring() as f64);
    }
}

/// Marks a partition as restoring for as long as it lives (see
/// [`Status::restoring`]).
pub struct Restoring<'a>(&'a Status);

impl Drop for Restoring<'_> {
    fn drop(&mut self) {
        self.0.restoring.fetch_sub(1, Ordering::SeqCst);
        self.0.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_joined_and_while_nothing_restores() {
        let status = Status::new();
        assert!(!status.ready(), "not joined yet");
        status.set_joined();
        assert!(status.ready());
        let guard = status.begin_restore();
        assert_eq!((status.restoring(), status.ready()), (1, false));
        drop(guard);
        assert_eq!((status.restoring(), status.ready()), (0, true));
    }

    #[test]
    fn every_phase_change_moves_the_generation_and_a_new_assignment_is_told_apart() {
        let status = Status::new();
        let g0 = status.partitions_generation();
        status.set_partition_phase(3, Some(PartitionPhase::Restoring));
        let restoring = status.partition(3).unwrap();
        assert_eq!(restoring.phase, PartitionPhase::Restoring);
        status.set_partition_phase(3, Some(PartitionPhase::Serving));
        let (g2, held) = status.partitions_held();
        assert_eq!(held, [(3, Held { phase: PartitionPhase::Serving, assigned: restoring.assigned })]);
        assert!(g2 > g0);
        status.set_partition_phase(3, None);
        assert_eq!(status.partition(3), None);
        assert_ne!(status.partitions_generation(), g2);
        status.set_partition_phase(3, Some(PartitionPhase::Restoring));
        assert_ne!(status.partition(3).unwrap().assigned, restoring.assigned, "a new assignment");
    }
}
