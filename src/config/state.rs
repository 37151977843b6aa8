//! `[state]`: the durable per-customer state.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, DAY, invalid};

/// `[state]`: the durable per-customer state (docs/model.md "Customer state and retention").
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Compacted changelog topic; empty means `<run.group_id>.engage-state`.
    /// Must have the inputs' partition count (`engage topics create` makes
    /// it so).
    pub changelog_topic: String,
    /// How often changed customers are written to the changelog. Offsets
    /// are committed only after the flush that follows them, so this is
    /// also the commit latency; each flush first waits for outstanding
    /// outputs to be acknowledged.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Customers idle for longer are evicted from memory and tombstoned in
    /// the changelog. docs/model.md "Customer state and retention": 400 days.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Longest a partition's restore may take before engage gives up
    /// (exits non-zero rather than process without the state).
    #[serde(with = "humantime_serde")]
    pub restore_timeout: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            changelog_topic: String::new(),
            flush_interval: Duration::from_millis(500),
            retention: Duration::from_secs(400 * DAY),
            restore_timeout: Duration::from_secs(600),
        }
    }
}

impl StateConfig {
    /// Checks that span this section's fields; the error names the key
    /// and what would be valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.flush_interval.is_zero() || self.retention.is_zero() || self.restore_timeout.is_zero() {
            return Err(invalid("state", "flush_interval, retention and restore_timeout must be longer than zero"));
        }
        Ok(())
    }
}
