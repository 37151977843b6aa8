//! Why a record is bad input: the stable reason codes of the dead-letter
//! topic, and the error that carries one.

use std::fmt;

/// Why a record is bad input. The string codes ([`Reason::as_str`]) are stable:
/// they are the `engage.error` header on dead letters and the `reason` label
/// of `engage_dead_letters_total`, so dashboards and consumers may match them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// `oversized`: the record value is larger than `input.max_record_bytes`.
    Oversized,
    /// `malformed`: not valid JSON or protobuf (syntax, truncation, bad UTF-8,
    /// bad Confluent framing).
    Malformed,
    /// `invalid_field`: well-formed, but a field has the wrong type or an
    /// impossible value (e.g. a string where a number belongs, rating 9).
    InvalidField,
    /// `unsupported_content_type`: the record's `content-type` header names a
    /// format engage does not read.
    UnsupportedContentType,
    /// `missing_key`: the record has no key, so it cannot have been
    /// partitioned by customer.
    MissingKey,
    /// `key_mismatch`: the record key differs from the body's `customer_id`
    /// (or is not UTF-8).
    KeyMismatch,
    /// `missing_customer_id`: absent or empty `customer_id`.
    MissingCustomerId,
    /// `missing_event_id`: absent or empty `event_id`.
    MissingEventId,
    /// `missing_type`: absent or empty `type`.
    MissingType,
    /// `unknown_purchase_type`: a purchases record whose type is neither
    /// `purchase` nor `refund`.
    UnknownPurchaseType,
    /// `invalid_amount`: missing, negative, NaN, infinite or above
    /// `input.max_amount`.
    InvalidAmount,
    /// `invalid_timestamp`: `ts` unparseable or out of range, or absent with
    /// no record timestamp to fall back on.
    InvalidTimestamp,
    /// `future_timestamp`: event time more than `input.max_future_skew` ahead
    /// of the processor's clock.
    FutureTimestamp,
}

impl Reason {
    /// Every reason, for documentation and exhaustive tests.
    pub const ALL: [Reason; 13] = [
        Reason::Oversized,
        Reason::Malformed,
        Reason::InvalidField,
        Reason::UnsupportedContentType,
        Reason::MissingKey,
        Reason::KeyMismatch,
        Reason::MissingCustomerId,
        Reason::MissingEventId,
        Reason::MissingType,
        Reason::UnknownPurchaseType,
        Reason::InvalidAmount,
        Reason::InvalidTimestamp,
        Reason::FutureTimestamp,
    ];

    /// The stable reason code.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Oversized => "oversized",
            Reason::Malformed => "malformed",
            Reason::InvalidField => "invalid_field",
            Reason::UnsupportedContentType => "unsupported_content_type",
            Reason::MissingKey => "missing_key",
            Reason::KeyMismatch => "key_mismatch",
            Reason::MissingCustomerId => "missing_customer_id",
            Reason::MissingEventId => "missing_event_id",
            Reason::MissingType => "missing_type",
            Reason::UnknownPurchaseType => "unknown_purchase_type",
            Reason::InvalidAmount => "invalid_amount",
            Reason::InvalidTimestamp => "invalid_timestamp",
            Reason::FutureTimestamp => "future_timestamp",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record engage cannot use. Never retryable: the bytes are the problem.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct DecodeError {
    /// The stable reason code.
    pub reason: Reason,
    /// A human-readable explanation naming the field at fault.
    pub detail: String,
}

impl DecodeError {
    pub(super) fn new(reason: Reason, detail: impl Into<String>) -> Self {
        DecodeError { reason, detail: detail.into() }
    }
}
