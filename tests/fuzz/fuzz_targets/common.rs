// Shared by the decoder targets: run one input through `decode` as the
// pipeline does, and check what a successful decode promises.

use engage::decode::{Envelope, Format, Limits, MAX_ID_BYTES, decode};
use engage::engine::event::InputTopic;

const NOW: i64 = 1_767_225_600_000;

pub fn check(format: Format, data: &[u8]) {
    // First byte: topic and whether the record has a key equal to the
    // body's customer id (the common case) or none.
    let Some((&flags, value)) = data.split_first() else { return };
    let topic = if flags & 1 == 0 { InputTopic::Clickstream } else { InputTopic::Purchases };
    let limits = Limits { max_record_bytes: 1 << 20, max_future_skew_ms: 300_000, max_amount: 1e6 };
    let unkeyed = Envelope { key: None, require_key: false, timestamp_ms: Some(NOW), content_type: None };
    let Ok(event) = decode(Some(topic), format, &unkeyed, value, &limits, NOW) else { return };
    assert!(!event.customer_id.trim().is_empty() && event.customer_id.len() <= MAX_ID_BYTES);
    assert!(!event.event_id.trim().is_empty() && event.event_id.len() <= MAX_ID_BYTES);
    assert!(event.ts_ms <= NOW + limits.max_future_skew_ms);
    if let engage::engine::event::EventKind::Purchase { amount, .. } | engage::engine::event::EventKind::Refund { amount } = event.kind {
        assert!(amount.is_finite() && (0.0..=limits.max_amount).contains(&amount));
    }
    // Keyed by its own customer id, the same record must decode the same.
    let key = event.customer_id.as_bytes().to_vec();
    let keyed = Envelope { key: Some(&key), require_key: true, ..unkeyed };
    let again = decode(Some(topic), format, &keyed, value, &limits, NOW).expect("keyed by its own customer id");
    assert_eq!(again.event_id, event.event_id);
    assert_eq!(again.ts_ms, event.ts_ms);
}
