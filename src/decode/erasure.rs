//! Erasure requests (`topics.erasures`): JSON `{"customer_id", "request_id",
//! "ts"}` or protobuf `engage.v1.ErasureRequest`, checked like events (key,
//! ids, time) so a bad request is dead-lettered with a reason rather than
//! dropped. They are rare, so serde_json and prost read them, not the event
//! fast paths.

use crate::vocab::Format;
use std::borrow::Cow;

use prost::Message as _;
use serde::Deserialize;

use super::protobuf::strip_confluent_framing;
use super::{
    DecodeError, Envelope, Limits, RawTs, Reason, check_key, check_size, required_id, resolve_format, timestamp,
};
use crate::engine::erasure::ErasureRequest;
use crate::proto;

#[derive(Deserialize)]
struct JsonRequest<'a> {
    #[serde(borrow, default)]
    customer_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    request_id: Option<Cow<'a, str>>,
    #[serde(default)]
    ts: Option<serde_json::Value>,
}

/// Decodes and validates one erasure request.
pub fn erasure_request<'a>(
    format: Format,
    envelope: &Envelope<'a>,
    value: &'a [u8],
    limits: &Limits,
    now_ms: i64,
) -> Result<ErasureRequest<'a>, DecodeError> {
    check_size(value, limits)?;
    let (customer_id, request_id, ts) = match resolve_format(format, envelope)? {
        Format::Json => {
            let r: JsonRequest<'a> = serde_json::from_slice(value)
                .map_err(|e| DecodeError::new(Reason::Malformed, format!("not an erasure request: {e}")))?;
            let ts = match r.ts {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::Number(n)) => {
                    Some(n.as_i64().map_or_else(|| RawTs::Float(n.as_f64().unwrap_or(f64::NAN)), RawTs::Millis))
                }
                Some(serde_json::Value::String(s)) => Some(RawTs::Text(Cow::Owned(s))),
                Some(other) => {
                    return Err(DecodeError::new(Reason::InvalidTimestamp, format!("ts {other} is not a time")));
                }
            };
            (r.customer_id, r.request_id, ts)
        }
        Format::Protobuf => {
            let r = proto::ErasureRequest::decode(strip_confluent_framing(value)?)
                .map_err(|e| DecodeError::new(Reason::Malformed, format!("not an engage.v1.ErasureRequest: {e}")))?;
            let some = |s: String| (!s.is_empty()).then_some(Cow::Owned(s));
            (some(r.customer_id), some(r.request_id), r.ts.map(RawTs::Millis))
        }
    };
    let customer_id = required_id(customer_id, "customer_id", Reason::MissingCustomerId)?;
    let request_id = required_id(request_id, "request_id", Reason::MissingEventId)?;
    check_key(envelope, &customer_id)?;
    let ts_ms = timestamp(ts, envelope.timestamp_ms)?;
    if ts_ms > now_ms.saturating_add(limits.max_future_skew_ms) {
        // A request dated in the future would erase events that have not
        // happened yet.
        return Err(DecodeError::new(
            Reason::FutureTimestamp,
            format!("request time {ts_ms} ms is ahead of the processor clock by more than input.max_future_skew"),
        ));
    }
    Ok(ErasureRequest { customer_id, request_id, ts_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600_000;

    fn limits() -> Limits {
        Limits { max_record_bytes: 1 << 20, max_future_skew_ms: 300_000, max_amount: 1_000_000.0 }
    }

    fn envelope(key: &[u8]) -> Envelope<'_> {
        Envelope { key: Some(key), require_key: true, timestamp_ms: Some(NOW - 1000), content_type: None }
    }

    #[test]
    fn json_and_protobuf_requests() {
        let json = br#"{"customer_id":"c1","request_id":"r-9","ts":"2025-12-31T23:00:00Z"}"#;
        let r = erasure_request(Format::Json, &envelope(b"c1"), json, &limits(), NOW).unwrap();
        assert_eq!((&*r.customer_id, &*r.request_id, r.ts_ms), ("c1", "r-9", NOW - 3_600_000));
        let pb = proto::ErasureRequest { customer_id: "c1".into(), request_id: "r-9".into(), ts: None }.encode_to_vec();
        let r = erasure_request(Format::Protobuf, &envelope(b"c1"), &pb, &limits(), NOW).unwrap();
        assert_eq!(r.ts_ms, NOW - 1000, "no ts: the record timestamp");
    }

    #[test]
    fn bad_requests_have_reasons() {
        let reason = |key: &[u8], body: &str| {
            erasure_request(Format::Json, &envelope(key), body.as_bytes(), &limits(), NOW).unwrap_err().reason
        };
        assert_eq!(reason(b"c1", "not json"), Reason::Malformed);
        assert_eq!(reason(b"c1", r#"{"request_id":"r"}"#), Reason::MissingCustomerId);
        assert_eq!(reason(b"c1", r#"{"customer_id":"c1"}"#), Reason::MissingEventId);
        assert_eq!(reason(b"c2", r#"{"customer_id":"c1","request_id":"r"}"#), Reason::KeyMismatch);
        assert_eq!(reason(b"c1", r#"{"customer_id":"c1","request_id":"r","ts":"soon"}"#), Reason::InvalidTimestamp);
        assert_eq!(
            reason(b"c1", &format!(r#"{{"customer_id":"c1","request_id":"r","ts":{}}}"#, NOW + 3_600_000)),
            Reason::FutureTimestamp
        );
    }
}
