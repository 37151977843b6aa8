// Shared by the fuzz targets and by tests/fuzz_regressions.rs, which
// replays saved crash inputs in scripts/test: run one input through
// `decode` as the pipeline does, and check what a successful decode
// promises; or through the config loader.
#![allow(dead_code)]

use engage::decode::{Envelope, Limits, MAX_ID_BYTES, decode};

use engage::vocab::Format;
use engage::vocab::InputKind;

const NOW: i64 = 1_767_225_600_000;

pub fn check(format: Format, data: &[u8]) {
    // First byte: topic and whether the record has a key equal to the
    // body's customer id (the common case) or none.
    let Some((&flags, value)) = data.split_first() else { return };
    let topic = if flags & 1 == 0 { InputKind::Clickstream } else { InputKind::Purchases };
    let limits = Limits { max_record_bytes: 1 << 20, max_future_skew_ms: 300_000, max_amount: 1e6 };
    let unkeyed = Envelope { key: None, require_key: false, timestamp_ms: Some(NOW), content_type: None };
    let Ok(event) = decode(Some(topic), format, &unkeyed, value, &limits, NOW) else { return };
    assert!(!event.customer_id.trim().is_empty() && event.customer_id.len() <= MAX_ID_BYTES);
    assert!(!event.event_id.trim().is_empty() && event.event_id.len() <= MAX_ID_BYTES);
    assert!(event.ts_ms <= NOW + limits.max_future_skew_ms);
    if let engage::engine::event::EventKind::Purchase { amount, .. }
    | engage::engine::event::EventKind::Refund { amount } = event.kind
    {
        assert!(amount.is_finite() && (0.0..=limits.max_amount).contains(&amount));
    }
    // Keyed by its own customer id, the same record must decode the same.
    let key = event.customer_id.as_bytes().to_vec();
    let keyed = Envelope { key: Some(&key), require_key: true, ..unkeyed };
    let again = decode(Some(topic), format, &keyed, value, &limits, NOW).expect("keyed by its own customer id");
    assert_eq!(again.event_id, event.event_id);
    assert_eq!(again.ts_ms, event.ts_ms);
}

/// Any text through the config loader: never a panic, and every secret
/// `[kafka]` property of a loaded config shows as "[redacted]" in its debug
/// dump (what engage logs).
pub fn check_config(data: &[u8]) {
    use engage::config::Config;
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::from_toml(text) {
        Ok(config) => {
            let dump = format!("{config:?}");
            for key in config.kafka.properties.keys().filter(|k| config.kafka.is_secret(k)) {
                assert!(dump.contains(&format!("{key:?}: \"[redacted]\"")), "secret {key:?} not redacted in {dump}");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
