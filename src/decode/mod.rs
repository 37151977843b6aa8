//! Decoding and validating input records (docs/model.md "Events").
//!
//! Both wire formats are first read into the same `RawFields` (borrowing the
//! record bytes), and one `validate` turns that into an [`Event`] or a
//! [`DecodeError`]. So every rule about what is bad input lives in one place,
//! whatever the format. JSON is read by a one-pass scan (`scan`) when the
//! record has the common shape, and by serde_json otherwise; serde_json is
//! the reference the scan is tested against.
//!
//! A decode error is permanent: the same bytes will fail the same way, so the
//! record goes to the dead-letter topic with [`DecodeError::reason`] as its
//! `engage.error` header, and processing carries on.

use std::borrow::Cow;

use crate::engine::event::{Event, EventKind};

use crate::vocab::{ClickKind, Format, InputKind};

pub mod csv_row;
mod erasure;
mod error;
mod json;
mod protobuf;
mod scan;

pub use erasure::erasure_request;
pub use error::{DecodeError, Reason};
use json::parse_json;
use protobuf::parse_protobuf;

/// Longest accepted `customer_id` / `event_id`, in bytes. Ids are kept in
/// memory per customer; an unbounded id is a memory hazard, not a real id.
pub const MAX_ID_BYTES: usize = 256;

/// Latest accepted event time: 9999-12-31T23:59:59.999Z. Anything beyond is a
/// broken clock or a unit mistake (micro- or nanoseconds).
const MAX_TS_MS: i64 = 253_402_300_799_999;

/// Input limits (config section `[input]`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Records larger than this are dead-lettered unread.
    pub max_record_bytes: usize,
    /// How far ahead of the processor clock an event time may be, in ms.
    pub max_future_skew_ms: i64,
    /// Largest credible purchase or refund amount.
    pub max_amount: f64,
}

/// What the transport knows about a record besides its value.
#[derive(Clone, Copy, Debug, Default)]
pub struct Envelope<'a> {
    /// The record key. Checked against `customer_id` when `require_key`.
    pub key: Option<&'a [u8]>,
    /// Kafka records must carry their customer as key (docs/model.md "Events"); file replay
    /// has no keys.
    pub require_key: bool,
    /// Record timestamp (epoch ms), the fallback event time.
    pub timestamp_ms: Option<i64>,
    /// The `content-type` header, if any.
    pub content_type: Option<&'a [u8]>,
}

/// Decodes and validates one record.
///
/// `topic` selects the event family; `None` (file replay) infers it from the
/// type: `purchase` and `refund` are purchases, everything else clickstream.
/// `now_ms` is the processor clock, for the future-skew check.
pub fn decode<'a>(
    topic: Option<InputKind>,
    format: Format,
    envelope: &Envelope<'a>,
    value: &'a [u8],
    limits: &Limits,
    now_ms: i64,
) -> Result<Event<'a>, DecodeError> {
    check_size(value, limits)?;
    let raw = match resolve_format(format, envelope)? {
        Format::Json => parse_json(value)?,
        Format::Protobuf => parse_protobuf(value, topic.unwrap_or(InputKind::Clickstream))?,
    };
    validate(raw, topic, envelope, limits, now_ms)
}

/// Records over `input.max_record_bytes` are not parsed at all.
fn check_size(value: &[u8], limits: &Limits) -> Result<(), DecodeError> {
    if value.len() > limits.max_record_bytes {
        return Err(DecodeError::new(
            Reason::Oversized,
            format!("record is {} bytes; input.max_record_bytes is {}", value.len(), limits.max_record_bytes),
        ));
    }
    Ok(())
}

/// The record's format: its `content-type` header's, else `format`.
fn resolve_format(format: Format, envelope: &Envelope<'_>) -> Result<Format, DecodeError> {
    match envelope.content_type {
        None => Ok(format),
        Some(ct) => {
            let text = String::from_utf8_lossy(ct);
            Format::from_content_type(&text).ok_or_else(|| {
                DecodeError::new(
                    Reason::UnsupportedContentType,
                    format!("content-type {text:?}; engage reads application/json and application/x-protobuf"),
                )
            })
        }
    }
}

/// A Kafka record must be keyed by its customer (docs/model.md "Events").
fn check_key(envelope: &Envelope<'_>, customer_id: &str) -> Result<(), DecodeError> {
    if !envelope.require_key {
        return Ok(());
    }
    let key = envelope
        .key
        .ok_or_else(|| DecodeError::new(Reason::MissingKey, "record has no key; it must be keyed by customer_id"))?;
    if key != customer_id.as_bytes() {
        return Err(DecodeError::new(
            Reason::KeyMismatch,
            format!("record key {:?} differs from customer_id {customer_id:?}", String::from_utf8_lossy(key)),
        ));
    }
    Ok(())
}

/// An event's fields as read from the wire, before any rule is applied.
#[derive(Debug, Default, PartialEq)]
struct RawFields<'a> {
    event_id: Option<Cow<'a, str>>,
    customer_id: Option<Cow<'a, str>>,
    kind: Option<Cow<'a, str>>,
    ts: Option<RawTs<'a>>,
    amount: Option<RawNum<'a>>,
    loyalty_member: bool,
    coupon: Option<Cow<'a, str>>,
    rating: Option<RawNum<'a>>,
}

#[derive(Debug, PartialEq)]
enum RawTs<'a> {
    Millis(i64),
    Float(f64),
    Text(Cow<'a, str>),
}

#[derive(Debug, PartialEq)]
enum RawNum<'a> {
    Num(f64),
    Text(Cow<'a, str>),
}

impl RawNum<'_> {
    fn value(&self) -> Option<f64> {
        match self {
            RawNum::Num(v) => Some(*v),
            RawNum::Text(s) => s.trim().parse::<f64>().ok(),
        }
    }
}

fn validate<'a>(
    raw: RawFields<'a>,
    topic: Option<InputKind>,
    envelope: &Envelope<'a>,
    limits: &Limits,
    now_ms: i64,
) -> Result<Event<'a>, DecodeError> {
    let customer_id = required_id(raw.customer_id, "customer_id", Reason::MissingCustomerId)?;
    let event_id = required_id(raw.event_id, "event_id", Reason::MissingEventId)?;
    check_key(envelope, &customer_id)?;
    let type_name = raw
        .kind
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| DecodeError::new(Reason::MissingType, "type is missing or empty"))?;
    let is_purchase_type = matches!(&*type_name, "purchase" | "refund");
    let topic = topic.unwrap_or(if is_purchase_type { InputKind::Purchases } else { InputKind::Clickstream });
    let kind = match topic {
        InputKind::Purchases => {
            let amount = amount(raw.amount.as_ref(), limits)?;
            match &*type_name {
                "purchase" => EventKind::Purchase {
                    amount,
                    loyalty_member: raw.loyalty_member,
                    coupon_used: raw.coupon.is_some_and(|c| !c.trim().is_empty()),
                },
                "refund" => EventKind::Refund { amount },
                other => {
                    return Err(DecodeError::new(
                        Reason::UnknownPurchaseType,
                        format!("type {other:?}; purchases records are \"purchase\" or \"refund\""),
                    ));
                }
            }
        }
        InputKind::Clickstream => {
            let kind = ClickKind::parse(&type_name);
            let rating = match (kind, &raw.rating) {
                (ClickKind::Feedback, Some(r)) => {
                    Some(r.value().filter(|v| (1.0..=5.0).contains(v)).ok_or_else(|| {
                        DecodeError::new(Reason::InvalidField, "properties.rating must be a number from 1 to 5")
                    })?)
                }
                _ => None,
            };
            EventKind::Click { kind, rating }
        }
        InputKind::Erasures => {
            return Err(DecodeError::new(Reason::Malformed, "an erasure request is not an event (erasure_request)"));
        }
    };
    let ts_ms = timestamp(raw.ts, envelope.timestamp_ms)?;
    if ts_ms > now_ms.saturating_add(limits.max_future_skew_ms) {
        return Err(DecodeError::new(
            Reason::FutureTimestamp,
            format!(
                "event time {ts_ms} ms is {} s ahead of the processor clock; input.max_future_skew allows {} s",
                (ts_ms - now_ms) / 1000,
                limits.max_future_skew_ms / 1000
            ),
        ));
    }
    Ok(Event { event_id, customer_id, ts_ms, kind })
}

fn required_id<'a>(value: Option<Cow<'a, str>>, field: &str, reason: Reason) -> Result<Cow<'a, str>, DecodeError> {
    match value {
        Some(v) if v.len() > MAX_ID_BYTES => Err(DecodeError::new(
            Reason::InvalidField,
            format!("{field} is {} bytes; at most {MAX_ID_BYTES} are accepted", v.len()),
        )),
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(DecodeError::new(reason, format!("{field} is missing or empty"))),
    }
}

fn amount(raw: Option<&RawNum<'_>>, limits: &Limits) -> Result<f64, DecodeError> {
    let raw = raw.ok_or_else(|| DecodeError::new(Reason::InvalidAmount, "amount is required"))?;
    let value = raw
        .value()
        .ok_or_else(|| DecodeError::new(Reason::InvalidAmount, format!("amount {raw:?} is not a number")))?;
    if !value.is_finite() || value < 0.0 || value > limits.max_amount {
        return Err(DecodeError::new(
            Reason::InvalidAmount,
            format!("amount {value} must be a finite number from 0 to input.max_amount ({})", limits.max_amount),
        ));
    }
    Ok(value)
}

fn timestamp(raw: Option<RawTs<'_>>, record_ts: Option<i64>) -> Result<i64, DecodeError> {
    let bad = |detail: String| DecodeError::new(Reason::InvalidTimestamp, detail);
    let ms = match raw {
        Some(RawTs::Millis(ms)) => ms,
        Some(RawTs::Float(f)) if f.is_finite() && f.fract() == 0.0 && f.abs() <= MAX_TS_MS as f64 => f as i64,
        Some(RawTs::Float(f)) => return Err(bad(format!("ts {f} is not whole epoch milliseconds"))),
        Some(RawTs::Text(s)) => {
            let parsed = time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
                .map_err(|e| bad(format!("ts {s:?} is not RFC 3339 ({e})")))?;
            (parsed.unix_timestamp_nanos() / 1_000_000) as i64
        }
        None => record_ts
            .filter(|t| *t >= 0)
            .ok_or_else(|| bad("ts is absent and the record has no timestamp".to_string()))?,
    };
    if !(-MAX_TS_MS..=MAX_TS_MS).contains(&ms) {
        return Err(bad(format!("ts {ms} ms is outside years 1 to 9999")));
    }
    Ok(ms)
}

// ---------------------------------------------------------------- JSON

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;
    use prost::Message;

    const NOW: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn limits() -> Limits {
        Limits { max_record_bytes: 1 << 20, max_future_skew_ms: 300_000, max_amount: 1_000_000.0 }
    }

    fn keyed(key: &[u8]) -> Envelope<'_> {
        Envelope { key: Some(key), require_key: true, timestamp_ms: Some(NOW - 1000), content_type: None }
    }

    fn json(topic: InputKind, key: &[u8], body: &str) -> Result<Event<'static>, DecodeError> {
        decode(Some(topic), Format::Json, &keyed(key), body.as_bytes(), &limits(), NOW).map(Event::into_owned)
    }

    fn reason(r: Result<Event<'static>, DecodeError>) -> Reason {
        r.expect_err("expected a decode error").reason
    }

    #[test]
    fn json_click_with_rfc3339_time_and_rating() {
        let e = json(
            InputKind::Clickstream,
            b"c1",
            r#"{"event_id":"e1","customer_id":"c1","type":"feedback","ts":"2025-12-31T23:00:00Z",
                "session_id":"s","channel":"web","properties":{"rating":2,"comment":{"deep":[1,2]}}}"#,
        )
        .unwrap();
        assert_eq!(e.ts_ms, NOW - 3_600_000);
        assert_eq!(e.kind, EventKind::Click { kind: ClickKind::Feedback, rating: Some(2.0) });
    }

    #[test]
    fn json_strings_borrow_from_the_record_unless_escaped() {
        let body = br#"{"event_id":"e\u0031","customer_id":"c1","type":"page_view","ts":1}"#;
        let e = decode(Some(InputKind::Clickstream), Format::Json, &keyed(b"c1"), body, &limits(), NOW).unwrap();
        assert!(matches!(e.customer_id, Cow::Borrowed("c1")));
        assert!(matches!(e.event_id, Cow::Owned(ref s) if s == "e1"));
    }

    #[test]
    fn json_purchase_amount_as_number_or_decimal_string() {
        let e = json(
            InputKind::Purchases,
            b"c1",
            r#"{"event_id":"p1","customer_id":"c1","type":"purchase","ts":1000,"order_id":"o","amount":"19.90",
                "loyalty_member":true,"coupon":"SPRING"}"#,
        )
        .unwrap();
        assert_eq!(e.kind, EventKind::Purchase { amount: 19.9, loyalty_member: true, coupon_used: true });
        let r = json(InputKind::Purchases, b"c1", r#"{"event_id":"p2","customer_id":"c1","type":"refund","amount":5}"#)
            .unwrap();
        assert_eq!(r.kind, EventKind::Refund { amount: 5.0 });
        assert_eq!(r.ts_ms, NOW - 1000, "absent ts falls back to the record timestamp");
    }

    #[test]
    fn unknown_click_type_is_accepted_not_an_error() {
        let e =
            json(InputKind::Clickstream, b"c1", r#"{"event_id":"e","customer_id":"c1","type":"video_watch"}"#).unwrap();
        assert!(!e.kind.is_known());
    }

    // One test per bad-input case of docs/model.md "Events", each showing its reason code.

    #[test]
    fn bad_input_not_valid_json_is_malformed() {
        assert_eq!(reason(json(InputKind::Clickstream, b"c1", r#"{"event_id":"e","#)), Reason::Malformed);
        assert_eq!(reason(json(InputKind::Clickstream, b"c1", "nope")), Reason::Malformed);
        let bad_utf8: &[u8] = b"{\"event_id\":\"\xff\",\"customer_id\":\"c1\",\"type\":\"search\"}";
        let r = decode(Some(InputKind::Clickstream), Format::Json, &keyed(b"c1"), bad_utf8, &limits(), NOW);
        assert_eq!(r.unwrap_err().reason, Reason::Malformed);
    }

    #[test]
    fn deep_nesting_neither_crashes_nor_is_mistaken_for_data() {
        let deep = |inner: &str| format!(r#"{{"event_id":"e","customer_id":"c1","type":"feedback",{inner}}}"#);
        let nest = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        // In a field engage ignores, it is skipped without recursion.
        assert!(json(InputKind::Clickstream, b"c1", &deep(&format!(r#""extra":{nest}"#))).is_ok());
        // Where engage reads a value, it is the wrong type.
        let r = json(InputKind::Clickstream, b"c1", &deep(&format!(r#""properties":{{"rating":{nest}}}"#)));
        assert_eq!(reason(r), Reason::InvalidField);
    }

    #[test]
    fn bad_input_wrong_field_type_names_the_field() {
        let err =
            json(InputKind::Clickstream, b"c1", r#"{"event_id":"e","customer_id":7,"type":"search"}"#).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidField);
        assert!(err.detail.contains("customer_id"), "{}", err.detail);
        let err = json(InputKind::Clickstream, b"c1", r#"[1,2]"#).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidField);
    }

    #[test]
    fn bad_input_missing_or_empty_ids() {
        let r = json(InputKind::Clickstream, b"c1", r#"{"event_id":"e","type":"search"}"#);
        assert_eq!(reason(r), Reason::MissingCustomerId);
        let r = json(InputKind::Clickstream, b"", r#"{"event_id":"e","customer_id":"","type":"search"}"#);
        assert_eq!(reason(r), Reason::MissingCustomerId);
        let r = json(InputKind::Clickstream, b"c1", r#"{"customer_id":"c1","type":"search"}"#);
        assert_eq!(reason(r), Reason::MissingEventId);
        let r = json(InputKind::Clickstream, b"c1", r#"{"event_id":"  ","customer_id":"c1","type":"search"}"#);
        assert_eq!(reason(r), Reason::MissingEventId);
        let r = json(InputKind::Clickstream, b"c1", r#"{"event_id":"e","customer_id":"c1"}"#);
        assert_eq!(reason(r), Reason::MissingType);
        let long = "x".repeat(MAX_ID_BYTES + 1);
        let r = json(
            InputKind::Clickstream,
            b"c1",
            &format!(r#"{{"event_id":"{long}","customer_id":"c1","type":"search"}}"#),
        );
        assert_eq!(reason(r), Reason::InvalidField);
    }

    #[test]
    fn bad_input_record_without_key() {
        let env = Envelope { key: None, require_key: true, timestamp_ms: Some(NOW), content_type: None };
        let body = br#"{"event_id":"e","customer_id":"c1","type":"search"}"#;
        let err = decode(Some(InputKind::Clickstream), Format::Json, &env, body, &limits(), NOW).unwrap_err();
        assert_eq!(err.reason, Reason::MissingKey);
    }

    #[test]
    fn bad_input_key_and_body_disagree() {
        let r = json(InputKind::Clickstream, b"c2", r#"{"event_id":"e","customer_id":"c1","type":"search"}"#);
        assert_eq!(reason(r), Reason::KeyMismatch);
        let r = json(InputKind::Clickstream, b"\xffc1", r#"{"event_id":"e","customer_id":"c1","type":"search"}"#);
        assert_eq!(reason(r), Reason::KeyMismatch);
    }

    #[test]
    fn bad_input_unknown_purchase_type() {
        let r =
            json(InputKind::Purchases, b"c1", r#"{"event_id":"e","customer_id":"c1","type":"chargeback","amount":1}"#);
        assert_eq!(reason(r), Reason::UnknownPurchaseType);
    }

    #[test]
    fn bad_input_negative_nan_absurd_or_missing_amount() {
        for amount in [r#"-1"#, r#""NaN""#, r#""inf""#, r#"1e12"#, r#""ten""#] {
            let body = format!(r#"{{"event_id":"e","customer_id":"c1","type":"purchase","amount":{amount}}}"#);
            assert_eq!(reason(json(InputKind::Purchases, b"c1", &body)), Reason::InvalidAmount, "{amount}");
        }
        let r = json(InputKind::Purchases, b"c1", r#"{"event_id":"e","customer_id":"c1","type":"purchase"}"#);
        assert_eq!(reason(r), Reason::InvalidAmount);
    }

    #[test]
    fn bad_input_future_and_unparseable_timestamps() {
        // 5 min skew allowed: 4 min ahead passes, 6 min ahead fails.
        let ok = format!(r#"{{"event_id":"e","customer_id":"c1","type":"search","ts":{}}}"#, NOW + 240_000);
        assert!(json(InputKind::Clickstream, b"c1", &ok).is_ok());
        let ahead = format!(r#"{{"event_id":"e","customer_id":"c1","type":"search","ts":{}}}"#, NOW + 360_000);
        assert_eq!(reason(json(InputKind::Clickstream, b"c1", &ahead)), Reason::FutureTimestamp);
        for ts in [r#""yesterday""#, r#""2026-13-01T00:00:00Z""#, r#"1.5"#, r#"9999999999999999"#] {
            let body = format!(r#"{{"event_id":"e","customer_id":"c1","type":"search","ts":{ts}}}"#);
            assert_eq!(reason(json(InputKind::Clickstream, b"c1", &body)), Reason::InvalidTimestamp, "{ts}");
        }
        let env = Envelope { key: None, require_key: false, timestamp_ms: None, content_type: None };
        let body = br#"{"event_id":"e","customer_id":"c1","type":"search"}"#;
        let err = decode(None, Format::Json, &env, body, &limits(), NOW).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidTimestamp, "no ts and no record timestamp");
    }

    #[test]
    fn bad_input_oversized_record() {
        let small = Limits { max_record_bytes: 64, ..limits() };
        let body = format!(r#"{{"event_id":"e","customer_id":"c1","type":"search","pad":"{}"}}"#, "x".repeat(64));
        let err = decode(Some(InputKind::Clickstream), Format::Json, &keyed(b"c1"), body.as_bytes(), &small, NOW)
            .unwrap_err();
        assert_eq!(err.reason, Reason::Oversized);
    }

    #[test]
    fn bad_feedback_rating_is_invalid_field() {
        let r = json(
            InputKind::Clickstream,
            b"c1",
            r#"{"event_id":"e","customer_id":"c1","type":"feedback","properties":{"rating":9}}"#,
        );
        assert_eq!(reason(r), Reason::InvalidField);
    }

    #[test]
    fn content_type_header_overrides_the_topic_format() {
        let msg = proto::ClickEvent {
            event_id: "e1".into(),
            customer_id: "c1".into(),
            r#type: "search".into(),
            ts: Some(NOW),
            ..Default::default()
        }
        .encode_to_vec();
        let env = Envelope { content_type: Some(b"application/x-protobuf"), ..keyed(b"c1") };
        let e = decode(Some(InputKind::Clickstream), Format::Json, &env, &msg, &limits(), NOW).unwrap();
        assert_eq!(e.kind, EventKind::Click { kind: ClickKind::Search, rating: None });
        let env = Envelope { content_type: Some(b"application/avro"), ..keyed(b"c1") };
        let err = decode(Some(InputKind::Clickstream), Format::Json, &env, &msg, &limits(), NOW).unwrap_err();
        assert_eq!(err.reason, Reason::UnsupportedContentType);
    }

    #[test]
    fn protobuf_purchase_plain_and_confluent_framed() {
        let msg = proto::PurchaseEvent {
            event_id: "p1".into(),
            customer_id: "c1".into(),
            r#type: "purchase".into(),
            ts: Some(NOW - 5),
            order_id: "o1".into(),
            amount: 42.5,
            currency: "EUR".into(),
            items: 3,
            loyalty_member: true,
            coupon: String::new(),
        }
        .encode_to_vec();
        let want = EventKind::Purchase { amount: 42.5, loyalty_member: true, coupon_used: false };
        let e = decode(Some(InputKind::Purchases), Format::Protobuf, &keyed(b"c1"), &msg, &limits(), NOW).unwrap();
        assert_eq!((e.kind, e.ts_ms, &*e.event_id), (want, NOW - 5, "p1"));
        // Magic byte 0, schema id 7, message indexes [0] as the single 0 byte.
        let mut framed = vec![0, 0, 0, 0, 7, 0];
        framed.extend_from_slice(&msg);
        let e = decode(Some(InputKind::Purchases), Format::Protobuf, &keyed(b"c1"), &framed, &limits(), NOW).unwrap();
        assert_eq!(e.kind, want);
        // Explicit index list [1] (count 1 zig-zag = 2, index 1 zig-zag = 2).
        let mut framed = vec![0, 0, 0, 0, 7, 2, 2];
        framed.extend_from_slice(&msg);
        assert!(decode(Some(InputKind::Purchases), Format::Protobuf, &keyed(b"c1"), &framed, &limits(), NOW).is_ok());
    }

    #[test]
    fn protobuf_click_reads_rating_from_properties() {
        let msg = proto::ClickEvent {
            event_id: "e1".into(),
            customer_id: "c1".into(),
            r#type: "feedback".into(),
            ts: Some(NOW),
            session_id: "s".into(),
            channel: "app".into(),
            properties: [("rating".to_string(), "4".to_string()), ("x".into(), "y".into())].into(),
        }
        .encode_to_vec();
        let e = decode(Some(InputKind::Clickstream), Format::Protobuf, &keyed(b"c1"), &msg, &limits(), NOW).unwrap();
        assert_eq!(e.kind, EventKind::Click { kind: ClickKind::Feedback, rating: Some(4.0) });
    }

    #[test]
    fn bad_protobuf_truncated_garbage_and_wrong_types() {
        let msg = proto::ClickEvent {
            event_id: "e1".into(),
            customer_id: "c1".into(),
            r#type: "search".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let pb = |bytes: &[u8]| {
            decode(Some(InputKind::Clickstream), Format::Protobuf, &keyed(b"c1"), bytes, &limits(), NOW)
                .map(Event::into_owned)
        };
        assert_eq!(reason(pb(&msg[..msg.len() - 2])), Reason::Malformed, "truncated");
        assert_eq!(reason(pb(&[0xff; 16])), Reason::Malformed, "garbage");
        assert_eq!(reason(pb(&[0, 0, 0])), Reason::Malformed, "short Confluent frame");
        assert_eq!(reason(pb(&[0x0f, 1, 2])), Reason::Malformed, "unsupported wire type");
        // customer_id (field 2) sent as a varint.
        assert_eq!(reason(pb(&[0x0a, 1, b'e', 0x10, 5])), Reason::InvalidField);
        // Non-UTF-8 string.
        assert_eq!(reason(pb(&[0x0a, 1, 0xff, 0x12, 2, b'c', b'1', 0x1a, 1, b's'])), Reason::Malformed);
        // An empty message decodes to no fields at all.
        assert_eq!(reason(pb(&[])), Reason::MissingCustomerId);
    }

    #[test]
    fn replay_infers_topic_from_type() {
        let env = Envelope { key: None, require_key: false, timestamp_ms: None, content_type: None };
        let body = br#"{"event_id":"e","customer_id":"c1","type":"refund","amount":3,"ts":5}"#;
        let e = decode(None, Format::Json, &env, body, &limits(), NOW).unwrap();
        assert_eq!(e.kind, EventKind::Refund { amount: 3.0 });
    }
}
