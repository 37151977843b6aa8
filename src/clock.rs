//! The wall clock. The engine runs on event time; the wall clock only stamps
//! `processed_at`, checks future skew, and moves an idle partition's stream
//! time forward.

/// The wall clock in epoch milliseconds (0 if the system clock is before
/// 1970).
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
