//! Input events as the engine sees them: compact, borrowed from the record
//! bytes where possible, already validated by [`crate::decode`].

use std::borrow::Cow;

use crate::vocab::{ClickKind, InputKind};

/// Milliseconds in one UTC day.
pub const DAY_MS: i64 = 86_400_000;

/// Converts a span in ms to days.
pub fn ms_to_days(ms: i64) -> f64 {
    ms as f64 / DAY_MS as f64
}

/// The UTC day number (days since 1970-01-01) of an epoch-millisecond time.
/// Day boundaries are what "distinct active days" and BG/NBD purchase days
/// count, so every part of engage uses this one definition.
pub fn day_of(ts_ms: i64) -> i32 {
    // Cannot overflow: i64 ms / 86.4e6 fits in i32 for ±5.8 million years,
    // and decode rejects timestamps outside ±10 000 years.
    ts_ms.div_euclid(DAY_MS) as i32
}

/// What happened, with the payload each kind needs for scoring.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EventKind {
    /// A clickstream interaction. `rating` is `properties.rating` (1–5) for
    /// feedback, when present.
    Click {
        /// The event type.
        kind: ClickKind,
        /// The rating, for feedback.
        rating: Option<f64>,
    },
    /// A purchase of `amount` currency units.
    Purchase {
        /// Amount in currency units.
        amount: f64,
        /// Whether the buyer is a loyalty member (a loyalty bonus).
        loyalty_member: bool,
        /// Whether a coupon was used (a loyalty bonus).
        coupon_used: bool,
    },
    /// A refund of `amount` currency units.
    Refund {
        /// Amount in currency units.
        amount: f64,
    },
}

impl EventKind {
    /// False only for unknown clickstream types, which change no state.
    pub fn is_known(&self) -> bool {
        !matches!(self, EventKind::Click { kind: ClickKind::Unknown, .. })
    }

    /// The wire type name, for logs and the replay dead-letter file.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::Click { kind, .. } => kind.as_str(),
            EventKind::Purchase { .. } => "purchase",
            EventKind::Refund { .. } => "refund",
        }
    }
}

/// A decoded, validated input event. Strings borrow from the record bytes
/// unless the JSON had escapes in them.
#[derive(Clone, Debug, PartialEq)]
pub struct Event<'a> {
    /// Unique per event: duplicates with the same id are applied once.
    pub event_id: Cow<'a, str>,
    /// The customer the event belongs to; also the record key.
    pub customer_id: Cow<'a, str>,
    /// Event time, epoch milliseconds (UTC).
    pub ts_ms: i64,
    /// The type and its scoring payload.
    pub kind: EventKind,
}

impl Event<'_> {
    /// Detaches the event from the record buffer (replay sorts events before
    /// applying them, so they must outlive the line they came from).
    pub fn into_owned(self) -> Event<'static> {
        Event {
            event_id: Cow::Owned(self.event_id.into_owned()),
            customer_id: Cow::Owned(self.customer_id.into_owned()),
            ts_ms: self.ts_ms,
            kind: self.kind,
        }
    }
}

/// Where an input record sits in Kafka: the per-topic offset lets the engine
/// skip records already reflected in a restored state (docs/model.md "Guarantees").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    /// The topic the record came from.
    pub topic: InputKind,
    /// The record's offset in its partition.
    pub offset: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_of_uses_utc_day_boundaries_and_floors_before_1970() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(DAY_MS - 1), 0);
        assert_eq!(day_of(DAY_MS), 1);
        assert_eq!(day_of(-1), -1);
    }
}
