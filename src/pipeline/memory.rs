//! Returning the allocator's free memory to the OS while the input is
//! quiet. The allocator is the program's choice, so the library only calls
//! what the binary registered.

use std::time::{Duration, Instant};

/// Gives memory the allocator holds free back to the OS while the input is
/// quiet: once no record has arrived for [`IDLE_RELEASE_EVERY`], and again
/// every such interval while it stays quiet (a restore's clients free
/// their buffers after it ends). mimalloc returns a freed span only when
/// some thread next allocates, so after a burst (a backlog, a restore) an
/// idle process would keep memory it no longer uses. While records flow,
/// freed memory is reused instead, and the hot path is left alone.
pub(super) struct IdleRelease {
    pub(super) every: Duration,
    pub(super) release: fn(),
    pub(super) records: u64,
    pub(super) last_record: Instant,
    pub(super) last_release: Instant,
}

/// How long the input must be quiet before freed memory is returned, and
/// how often it is returned while the input stays quiet.
pub(super) const IDLE_RELEASE_EVERY: Duration = Duration::from_secs(1);

impl IdleRelease {
    pub(super) fn new(every: Duration, release: fn()) -> IdleRelease {
        IdleRelease { every, release, records: 0, last_record: Instant::now(), last_release: Instant::now() }
    }

    /// How long no record has arrived.
    pub(super) fn quiet_for(&self) -> Duration {
        self.last_record.elapsed()
    }

    /// Called on the main loop's tick with the records handled so far.
    pub(super) fn observe(&mut self, records: u64) {
        if records != self.records {
            (self.records, self.last_record) = (records, Instant::now());
        } else if self.last_record.elapsed() >= self.every && self.last_release.elapsed() >= self.every {
            (self.release)();
            self.last_release = Instant::now();
        }
    }
}

/// How to return the allocator's free memory to the OS, if the program
/// registered a way ([`set_memory_release`]).
static MEMORY_RELEASE: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Registers how the main loop returns the allocator's free memory to the
/// OS when the input goes quiet. The allocator is the program's choice:
/// the `engage` binary registers a forced mimalloc collection. Without
/// one, nothing is done. Only the first registration counts.
pub fn set_memory_release(release: fn()) {
    let _ = MEMORY_RELEASE.set(release);
}

pub(super) fn release_free_memory() {
    if let Some(release) = MEMORY_RELEASE.get() {
        release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static RELEASES: AtomicUsize = AtomicUsize::new(0);

    fn count_release() {
        RELEASES.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn memory_is_released_only_while_the_input_is_quiet() {
        let every = Duration::from_millis(40);
        let mut idle = IdleRelease::new(every, count_release);
        let released = || RELEASES.load(Ordering::SeqCst);
        // Records keep arriving, on every tick for longer than `every`:
        // the hot path is left alone.
        for records in 1..=8 {
            idle.observe(records);
            std::thread::sleep(every / 4);
        }
        assert_eq!(released(), 0);
        // Quiet: released once `every` has passed, and again each `every`
        // while it stays quiet, not on every tick.
        idle.observe(9);
        idle.observe(9);
        assert_eq!(released(), 0, "not before the input has been quiet for `every`");
        std::thread::sleep(every);
        idle.observe(9);
        assert_eq!(released(), 1);
        idle.observe(9);
        assert_eq!(released(), 1, "at most once per `every`");
        std::thread::sleep(every);
        idle.observe(9);
        assert_eq!(released(), 2);
        // A record ends the quiet spell.
        idle.observe(10);
        std::thread::sleep(every);
        idle.observe(11);
        assert_eq!(released(), 2);
    }
}
