//! `[lifecycle]`: stage thresholds.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, DAY, invalid};

/// `[lifecycle]`: the four stages of docs/model.md "Lifecycle stages".
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// A customer first seen within this long, with fewer than 2 purchase
    /// days, is in `initiation`. docs/model.md "Lifecycle stages": 14 days.
    #[serde(with = "humantime_serde")]
    pub new_customer: Duration,
    /// Active days that make a relationship `integration` without a
    /// purchase. docs/model.md "Lifecycle stages": 3.
    pub forming_active_days: u32,
    /// Purchase days that make a customer established (`intelligence`).
    /// docs/model.md "Lifecycle stages": 3.
    pub established_purchase_days: u32,
    /// Or this many active days ... docs/model.md "Lifecycle stages": 10.
    pub established_active_days: u32,
    /// ... spread over at least this long. docs/model.md "Lifecycle stages": 90 days.
    #[serde(with = "humantime_serde")]
    pub established_span: Duration,
    /// An established customer with social ≥ this and score ≥
    /// `advocate_score` is in `value_creation`. docs/model.md "Lifecycle stages": 40.
    pub advocate_social: f64,
    /// docs/model.md "Lifecycle stages": 60.
    pub advocate_score: f64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            new_customer: Duration::from_secs(14 * DAY),
            forming_active_days: 3,
            established_purchase_days: 3,
            established_active_days: 10,
            established_span: Duration::from_secs(90 * DAY),
            advocate_social: 40.0,
            advocate_score: 60.0,
        }
    }
}

impl LifecycleConfig {
    /// Checks that span this section's fields; the error names the key
    /// and what would be valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = self;
        if l.established_purchase_days == 0 || l.established_active_days == 0 {
            return Err(invalid(
                "lifecycle",
                "established_purchase_days and established_active_days must be at least 1",
            ));
        }
        Ok(())
    }
}
