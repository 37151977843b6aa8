//! The wall clock, and times as humans write them. The engine runs on event
//! time; the wall clock only stamps `processed_at`, checks future skew, and
//! moves an idle partition's stream time forward.

/// The wall clock in epoch milliseconds (0 if the system clock is before
/// 1970).
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A time argument that is not RFC 3339. Not retryable: fix the argument.
#[derive(Debug, thiserror::Error)]
#[error("{text:?} is not an RFC 3339 time such as 2026-01-31T00:00:00Z")]
pub struct TimeError {
    /// The text given.
    pub text: String,
    /// The parser's error.
    #[source]
    pub source: time::error::Parse,
}

/// Parses an RFC 3339 time into epoch ms (for `--as-of` and friends).
pub fn parse_time(s: &str) -> Result<i64, TimeError> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|source| TimeError { text: s.to_string(), source })?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Formats epoch ms as RFC 3339 (UTC), for humans; the number itself if it
/// is out of range.
pub fn format_time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}
