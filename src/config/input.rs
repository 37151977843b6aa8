//! `[input]`: input formats and the limits that define bad input.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};
use crate::vocab::{Format, InputKind};

/// `[input]`: input formats, and limits that decide what is bad input
/// (docs/model.md "Events").
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// Format of clickstream records without a `content-type` header:
    /// `json` (default) or `protobuf`.
    pub clickstream_format: Format,
    /// Format of purchases records without a `content-type` header.
    pub purchases_format: Format,
    /// Format of erasure requests (`topics.erasures`) without a
    /// `content-type` header.
    pub erasures_format: Format,
    /// Records larger than this many bytes are dead-lettered (`oversized`)
    /// without being parsed. docs/model.md "Events": 1 MiB.
    pub max_record_bytes: usize,
    /// How far ahead of the processor's clock an event time may be before it
    /// is dead-lettered (`future_timestamp`). docs/model.md "Events": 5 minutes.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// The largest credible purchase or refund amount; above it is
    /// `invalid_amount` (a unit or currency mistake, not a sale).
    pub max_amount: f64,
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig {
            clickstream_format: Format::Json,
            purchases_format: Format::Json,
            erasures_format: Format::Json,
            max_record_bytes: default_max_record_bytes(),
            max_future_skew: Duration::from_secs(300),
            max_amount: default_max_amount(),
        }
    }
}

/// docs/model.md "Events": 1 MiB, Kafka's default `message.max.bytes` ballpark.
const fn default_max_record_bytes() -> usize {
    1 << 20
}

/// An addition to the published model: a million currency units per order is beyond any retail
/// basket, so larger values are treated as errors.
const fn default_max_amount() -> f64 {
    1_000_000.0
}

impl InputConfig {
    /// Checks that span this section's fields; the error names the key
    /// and what would be valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let i = self;
        if i.max_record_bytes == 0 {
            return Err(invalid("input.max_record_bytes", "must be at least 1"));
        }
        if !(i.max_amount.is_finite() && i.max_amount > 0.0) {
            return Err(invalid("input.max_amount", "must be a positive number"));
        }
        Ok(())
    }

    /// The format of records of `topic` that carry no `content-type` header.
    pub fn format(&self, kind: InputKind) -> Format {
        match kind {
            InputKind::Clickstream => self.clickstream_format,
            InputKind::Purchases => self.purchases_format,
            InputKind::Erasures => self.erasures_format,
        }
    }

    /// The limits in the form the decoder uses.
    pub fn limits(&self) -> crate::decode::Limits {
        crate::decode::Limits {
            max_record_bytes: self.max_record_bytes,
            max_future_skew_ms: self.max_future_skew.as_millis() as i64,
            max_amount: self.max_amount,
        }
    }
}
