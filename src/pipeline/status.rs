//! The pipeline's liveness and readiness, which it publishes and the ops
//! endpoints (`/healthz`, `/readyz`) and the `engage_ready` gauge read; and
//! which input partitions it holds, in which phase, for the customer API.
//!
//! Ready means joined, nothing restoring, **and making progress**: an error
//! that retrying will not clear (a [`Blocker`]: authentication, a missing
//! ACL, an unknown topic, an input that cannot be decompressed) or input
//! waiting with nothing taken up for `run.stall_timeout` makes the instance
//! not ready, with the reason in `/readyz`, one ERROR line and
//! `engage_stalled{reason}`. A blocker still there after
//! `run.give_up_after` stops the pipeline ([`Status::give_up`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::kafka::diagnosis::Blocker;
use crate::sync;
use crate::telemetry::events::{NoProgress, StallCleared, Stalled};
use crate::telemetry::{READY, RESTORING};

/// Liveness and readiness signals of one running pipeline, shared with the
/// HTTP probes.
#[derive(Debug, Default)]
pub struct Status {
    heartbeat_ms: AtomicI64,
    joined: AtomicBool,
    restoring: AtomicUsize,
    /// Blockers in force, and since when.
    blockers: Mutex<BTreeMap<Blocker, Instant>>,
    /// `blockers.len()`, read for every record: most of the time there are
    /// none.
    blocked: AtomicUsize,
    /// Blockers already logged: each is logged once, however often it
    /// comes back.
    logged: Mutex<BTreeSet<Blocker>>,
    /// Input waiting and nothing taken up: how many records, since when.
    no_progress: Mutex<Option<(i64, Instant)>>,
    /// Records waiting on the input partitions (consumer lag), from the
    /// consumer's statistics; -1 until known.
    lag: AtomicI64,
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
        let status = Status { lag: AtomicI64::new(-1), ..Status::default() };
        status.publish();
        status
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

    /// Whether `/readyz` answers 200: joined, nothing restoring, nothing
    /// stalled.
    pub fn ready(&self) -> bool {
        self.not_ready().is_none()
    }

    /// Why `/readyz` answers 503, or `None` when ready.
    pub fn not_ready(&self) -> Option<String> {
        if let Some((blocker, since)) = sync::lock(&self.blockers).iter().min_by_key(|(_, t)| **t) {
            return Some(format!("{blocker} (for {} s)", since.elapsed().as_secs()));
        }
        if let Some((lag, since)) = *sync::lock(&self.no_progress) {
            return Some(format!(
                "no progress: {lag} records wait on the inputs and none was taken up for {} s",
                since.elapsed().as_secs()
            ));
        }
        match self.restoring() {
            0 if self.joined() => None,
            0 => Some("not yet assigned partitions by the consumer group".to_string()),
            n => Some(format!("restoring {n} partition(s)")),
        }
    }

    /// Records an error retrying will not clear: not ready from now on,
    /// logged once.
    pub fn block(&self, blocker: Blocker) {
        let mut blockers = sync::lock(&self.blockers);
        if blockers.contains_key(&blocker) {
            // Keep the first time it was seen.
            return;
        }
        blockers.insert(blocker.clone(), Instant::now());
        self.blocked.store(blockers.len(), Ordering::Relaxed);
        drop(blockers);
        if sync::lock(&self.logged).insert(blocker.clone()) {
            Stalled { blocker: &blocker }.emit();
        }
        self.publish();
    }

    /// A record of `topic` was read: the blockers that reading it proves
    /// gone are cleared (authentication, TLS, the group, and this topic's).
    pub fn progressed(&self, topic: &str) {
        if self.blocked.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut blockers = sync::lock(&self.blockers);
        let before = blockers.len();
        blockers.retain(|b, _| b.topic().is_some_and(|t| t != topic));
        self.blocked.store(blockers.len(), Ordering::Relaxed);
        if blockers.len() != before {
            drop(blockers);
            StallCleared { topic }.emit();
            self.publish();
        }
    }

    /// The blocker in force for longer than `after`, if any: the pipeline
    /// stops on it.
    pub fn give_up(&self, after: Duration) -> Option<Blocker> {
        sync::lock(&self.blockers).iter().find(|(_, since)| since.elapsed() >= after).map(|(b, _)| b.clone())
    }

    /// Records waiting on the input partitions, from the consumer's
    /// statistics (-1 until known).
    pub fn set_lag(&self, lag: i64) {
        self.lag.store(lag, Ordering::Relaxed);
    }

    /// The watchdog: `idle` is how long nothing has been taken up from the
    /// inputs; with records waiting and `idle` at least `timeout`, the
    /// pipeline is stalled, whatever the cause.
    pub fn watch(&self, idle: Duration, timeout: Duration) {
        let lag = self.lag.load(Ordering::Relaxed);
        let stalled = lag > 0 && idle >= timeout;
        let mut no_progress = sync::lock(&self.no_progress);
        match (stalled, no_progress.is_some()) {
            (true, false) => {
                *no_progress = Some((lag, Instant::now() - idle));
                drop(no_progress);
                NoProgress { lag, idle }.emit();
                self.publish();
            }
            (true, true) => {
                if let Some((waiting, _)) = no_progress.as_mut() {
                    *waiting = lag;
                }
            }
            (false, true) => {
                *no_progress = None;
                drop(no_progress);
                self.publish();
            }
            (false, false) => {}
        }
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
        let blockers = sync::lock(&self.blockers);
        for reason in Blocker::REASONS {
            let on = blockers.keys().any(|b| b.reason() == reason);
            metrics::gauge!(crate::telemetry::STALLED, "reason" => reason).set(if on { 1.0 } else { 0.0 });
        }
        let idle = sync::lock(&self.no_progress).is_some();
        metrics::gauge!(crate::telemetry::STALLED, "reason" => "no_progress").set(if idle { 1.0 } else { 0.0 });
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
    use crate::kafka::diagnosis::Resource;

    fn read(topic: &str) -> Blocker {
        Blocker::Authorization { operation: "READ", resource: Resource::Topic, name: topic.into() }
    }

    #[test]
    fn a_blocker_makes_it_not_ready_until_its_topic_delivers_and_gives_up_after_the_bound() {
        let status = Status::new();
        status.set_joined();
        status.block(read("clickstream"));
        status.block(read("clickstream"));
        let why = status.not_ready().unwrap();
        assert!(why.starts_with("not authorized to READ topic `clickstream` (for 0 s)"), "{why}");
        assert_eq!(status.give_up(Duration::from_secs(60)), None);
        assert_eq!(status.give_up(Duration::ZERO), Some(read("clickstream")));
        status.progressed("purchases");
        assert!(!status.ready(), "another topic's record does not clear it");
        status.progressed("clickstream");
        assert!(status.ready());
    }

    #[test]
    fn input_waiting_with_nothing_taken_up_is_a_stall_whatever_the_cause() {
        let status = Status::new();
        status.set_joined();
        let timeout = Duration::from_secs(60);
        status.watch(Duration::from_secs(120), timeout);
        assert!(status.ready(), "lag unknown: no judgement");
        status.set_lag(0);
        status.watch(Duration::from_secs(120), timeout);
        assert!(status.ready(), "nothing waiting: idle is fine");
        status.set_lag(42);
        status.watch(Duration::from_secs(59), timeout);
        assert!(status.ready());
        status.watch(Duration::from_secs(61), timeout);
        assert!(status.not_ready().unwrap().starts_with("no progress: 42 records wait"), "{:?}", status.not_ready());
        status.watch(Duration::ZERO, timeout);
        assert!(status.ready(), "records taken up again");
    }

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
