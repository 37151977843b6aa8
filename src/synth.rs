//! Deterministic synthetic input records, for benchmarks, memory measurement
//! and tests: a skewed customer population, the SPEC §3 event mix at
//! plausible rarity, in either wire format. Same seed, same records.

use prost::Message;

use crate::decode::Format;
use crate::event::InputTopic;
use crate::proto;

/// A small, fast, well-distributed PRNG (SplitMix64). Its output is fixed by
/// its definition, so seeded data is reproducible across versions.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One input record as it would sit in Kafka.
#[derive(Clone, Debug)]
pub struct Record {
    /// Which topic.
    pub topic: InputTopic,
    /// The record key (customer id).
    pub key: Vec<u8>,
    /// The encoded event.
    pub value: Vec<u8>,
    /// Event time, epoch ms.
    pub ts_ms: i64,
}

/// Event types with their share of traffic (per mille), most common first.
const MIX: [(&str, u32); 18] = [
    ("page_view", 350),
    ("product_view", 200),
    ("search", 100),
    ("app_open", 80),
    ("add_to_cart", 60),
    ("purchase", 40),
    ("wishlist_add", 30),
    ("ad_click", 30),
    ("email_click", 30),
    ("share", 15),
    ("social_follow", 10),
    ("review", 10),
    ("coupon_claim", 10),
    ("support_contact", 10),
    ("feedback", 10),
    ("referral", 5),
    ("loyalty_signup", 5),
    ("refund", 5),
];

/// Generates `n` records over `customers` customers (skewed: a few are far
/// more active than most), `step_ms` of event time apart from `start_ms`.
pub fn records(seed: u64, n: usize, customers: u64, start_ms: i64, step_ms: i64, format: Format) -> Vec<Record> {
    let mut rng = SplitMix64::new(seed);
    let total: u32 = MIX.iter().map(|(_, w)| w).sum();
    (0..n)
        .map(|i| {
            // u² skews activity towards low customer numbers.
            let u = rng.next_f64();
            let customer = format!("cust-{:07}", ((u * u) * customers as f64) as u64);
            let mut pick = (rng.next_u64() % u64::from(total)) as u32;
            let kind = MIX
                .iter()
                .find(|(_, w)| {
                    let hit = pick < *w;
                    pick = pick.saturating_sub(*w);
                    hit
                })
                .map_or("page_view", |(k, _)| k);
            let ts = start_ms + i as i64 * step_ms;
            let event_id = format!("ev-{seed:x}-{i}");
            let amount = (rng.next_f64() * 200.0 * 100.0).round() / 100.0;
            let rating = 1 + rng.next_u64() % 5;
            let loyal = rng.next_u64().is_multiple_of(4);
            let is_purchase = matches!(kind, "purchase" | "refund");
            let value = match (format, is_purchase) {
                (Format::Json, true) => format!(
                    r#"{{"event_id":"{event_id}","customer_id":"{customer}","type":"{kind}","ts":{ts},"order_id":"o-{i}","amount":{amount},"currency":"EUR","items":2,"loyalty_member":{loyal}}}"#
                )
                .into_bytes(),
                (Format::Json, false) => format!(
                    r#"{{"event_id":"{event_id}","customer_id":"{customer}","type":"{kind}","ts":{ts},"session_id":"s-{}","channel":"web","properties":{{"rating":{rating},"page":"/p/{}"}}}}"#,
                    i / 8,
                    i % 1000
                )
                .into_bytes(),
                (Format::Protobuf, true) => proto::PurchaseEvent {
                    event_id,
                    customer_id: customer.clone(),
                    r#type: kind.to_string(),
                    ts: Some(ts),
                    order_id: format!("o-{i}"),
                    amount,
                    currency: "EUR".into(),
                    items: 2,
                    loyalty_member: loyal,
                    coupon: String::new(),
                }
                .encode_to_vec(),
                (Format::Protobuf, false) => proto::ClickEvent {
                    event_id,
                    customer_id: customer.clone(),
                    r#type: kind.to_string(),
                    ts: Some(ts),
                    session_id: format!("s-{}", i / 8),
                    channel: "web".into(),
                    properties: [
                        ("rating".to_string(), rating.to_string()),
                        ("page".to_string(), format!("/p/{}", i % 1000)),
                    ]
                    .into(),
                }
                .encode_to_vec(),
            };
            Record {
                topic: if is_purchase { InputTopic::Purchases } else { InputTopic::Clickstream },
                key: customer.into_bytes(),
                value,
                ts_ms: ts,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Envelope, Limits, decode};

    #[test]
    fn records_are_deterministic_and_decode_cleanly_in_both_formats() {
        let limits = Limits { max_record_bytes: 1 << 20, max_future_skew_ms: 300_000, max_amount: 1e6 };
        for format in [Format::Json, Format::Protobuf] {
            let a = records(7, 500, 100, 1_700_000_000_000, 1000, format);
            let b = records(7, 500, 100, 1_700_000_000_000, 1000, format);
            assert_eq!(a.iter().map(|r| &r.value).collect::<Vec<_>>(), b.iter().map(|r| &r.value).collect::<Vec<_>>());
            for r in &a {
                let env = Envelope { key: Some(&r.key), require_key: true, timestamp_ms: None, content_type: None };
                decode(Some(r.topic), format, &env, &r.value, &limits, i64::MAX / 2).expect("decodes");
            }
            assert!(a.iter().any(|r| r.topic == InputTopic::Purchases));
        }
    }
}
