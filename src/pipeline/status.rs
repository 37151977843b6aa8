//! The pipeline's liveness and readiness, which it publishes and the ops
//! endpoints (`/healthz`, `/readyz`) and the `engage_ready` gauge read.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

use crate::telemetry::{READY, RESTORING};

/// Liveness and readiness signals of one running pipeline, shared with the
/// HTTP probes.
#[derive(Debug, Default)]
pub struct Status {
    heartbeat_ms: AtomicI64,
    joined: AtomicBool,
    restoring: AtomicUsize,
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
}
