//! Deterministic synthetic input records, for benchmarks, memory measurement
//! and tests: a skewed customer population, the docs/model.md "Events" event mix at
//! plausible rarity, in either wire format. Same seed, same records.

use prost::Message;

use crate::proto;
use crate::vocab::Format;
use crate::vocab::InputKind;

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
    pub topic: InputKind,
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

/// One synthetic event before encoding.
struct Draft<'a> {
    kind: &'a str,
    event_id: String,
    customer: &'a str,
    ts: i64,
    amount: f64,
    rating: u64,
    loyal: bool,
    seq: usize,
}

/// Encodes an event as its topic's record, in either format.
fn encode(d: &Draft<'_>, format: Format) -> Record {
    let Draft { kind, ref event_id, customer, ts, amount, rating, loyal, seq } = *d;
    let is_purchase = matches!(kind, "purchase" | "refund");
    let value = match (format, is_purchase) {
        (Format::Json, true) => format!(
            r#"{{"event_id":"{event_id}","customer_id":"{customer}","type":"{kind}","ts":{ts},"order_id":"o-{seq}","amount":{amount},"currency":"EUR","items":2,"loyalty_member":{loyal}}}"#
        )
        .into_bytes(),
        (Format::Json, false) => format!(
            r#"{{"event_id":"{event_id}","customer_id":"{customer}","type":"{kind}","ts":{ts},"session_id":"s-{}","channel":"web","properties":{{"rating":{rating},"page":"/p/{}"}}}}"#,
            seq / 8,
            seq % 1000
        )
        .into_bytes(),
        (Format::Protobuf, true) => proto::PurchaseEvent {
            event_id: event_id.clone(),
            customer_id: customer.to_string(),
            r#type: kind.to_string(),
            ts: Some(ts),
            order_id: format!("o-{seq}"),
            amount,
            currency: "EUR".into(),
            items: 2,
            loyalty_member: loyal,
            coupon: String::new(),
        }
        .encode_to_vec(),
        (Format::Protobuf, false) => proto::ClickEvent {
            event_id: event_id.clone(),
            customer_id: customer.to_string(),
            r#type: kind.to_string(),
            ts: Some(ts),
            session_id: format!("s-{}", seq / 8),
            channel: "web".into(),
            properties: [("rating".to_string(), rating.to_string()), ("page".to_string(), format!("/p/{}", seq % 1000))]
                .into(),
        }
        .encode_to_vec(),
    };
    Record {
        topic: if is_purchase { InputKind::Purchases } else { InputKind::Clickstream },
        key: customer.as_bytes().to_vec(),
        value,
        ts_ms: ts,
    }
}

fn pick_kind(rng: &mut SplitMix64, mix: &[(&'static str, u32)]) -> &'static str {
    let total: u32 = mix.iter().map(|(_, w)| w).sum();
    let mut pick = (rng.next_u64() % u64::from(total)) as u32;
    for (k, w) in mix {
        if pick < *w {
            return k;
        }
        pick -= w;
    }
    "page_view"
}

/// Generates `n` records over `customers` customers (skewed: a few are far
/// more active than most), `step_ms` of event time apart from `start_ms`.
pub fn records(seed: u64, n: usize, customers: u64, start_ms: i64, step_ms: i64, format: Format) -> Vec<Record> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|i| {
            // u² skews activity towards low customer numbers.
            let u = rng.next_f64();
            let customer = format!("cust-{:07}", ((u * u) * customers as f64) as u64);
            let kind = pick_kind(&mut rng, &MIX);
            let draft = Draft {
                kind,
                event_id: format!("ev-{seed:x}-{i}"),
                customer: &customer,
                ts: start_ms + i as i64 * step_ms,
                amount: (rng.next_f64() * 200.0 * 100.0).round() / 100.0,
                rating: 1 + rng.next_u64() % 5,
                loyal: rng.next_u64().is_multiple_of(4),
                seq: i,
            };
            encode(&draft, format)
        })
        .collect()
}

/// Clickstream types within a session (no purchases: those are drawn apart).
const SESSION_MIX: [(&str, u32); 16] = [
    ("page_view", 350),
    ("product_view", 220),
    ("search", 110),
    ("app_open", 60),
    ("add_to_cart", 60),
    ("wishlist_add", 30),
    ("ad_click", 25),
    ("email_click", 25),
    ("share", 12),
    ("social_follow", 8),
    ("review", 8),
    ("coupon_claim", 10),
    ("support_contact", 8),
    ("feedback", 8),
    ("referral", 3),
    ("loyalty_signup", 3),
];

const DAY: f64 = 86_400_000.0;

#[derive(Clone, Debug)]
struct SimCustomer {
    id: String,
    cadence_days: f64,
    next_visit: i64,
    /// Stops visiting from here ...
    churn_at: Option<i64>,
    /// ... and comes back from here.
    return_at: Option<i64>,
    loyal: bool,
}

/// A simulated customer population for the demo and load generation: each
/// customer visits on their own rhythm (cadences from half a day to two
/// weeks, skewed towards the frequent), browses in sessions, buys
/// sometimes; about 30 % drift away for good at some point and a third of
/// those come back later. Deterministic for a seed; customer and event ids
/// carry the seed, so populations of different seeds never share a customer
/// or an event id.
#[derive(Clone, Debug)]
pub struct Population {
    rng: SplitMix64,
    seed: u64,
    customers: Vec<SimCustomer>,
    seq: usize,
}

impl Population {
    /// `n` customers whose simulated history starts at `start_ms`.
    pub fn new(seed: u64, n: usize, start_ms: i64) -> Population {
        let mut rng = SplitMix64::new(seed);
        let customers = (0..n)
            .map(|i| {
                let cadence_days = 0.5 * 28f64.powf(rng.next_f64());
                let next_visit = start_ms + (rng.next_f64() * cadence_days * DAY) as i64;
                let churn_at = (rng.next_f64() < 0.3).then(|| start_ms + ((10.0 + 40.0 * rng.next_f64()) * DAY) as i64);
                let return_at = churn_at
                    .filter(|_| rng.next_f64() < 0.33)
                    .map(|c| c + ((20.0 + 20.0 * rng.next_f64()) * DAY) as i64);
                SimCustomer {
                    id: format!("s{seed}-c{i:06}"),
                    cadence_days,
                    next_visit,
                    churn_at,
                    return_at,
                    loyal: rng.next_f64() < 0.2,
                }
            })
            .collect();
        Population { rng, seed, customers, seq: 0 }
    }

    /// Appends the events of every visit due before `until` (epoch ms).
    pub fn advance(&mut self, until: i64, format: Format, out: &mut Vec<Record>) {
        for c in &mut self.customers {
            while c.next_visit < until {
                let at = c.next_visit;
                let away = c.churn_at.is_some_and(|t| at >= t) && c.return_at.is_none_or(|t| at < t);
                if !away {
                    let mut ts = at;
                    let clicks = 1 + self.rng.next_u64() % 6;
                    for _ in 0..clicks {
                        ts += 20_000 + (self.rng.next_u64() % 100_000) as i64;
                        self.seq += 1;
                        let kind = pick_kind(&mut self.rng, &SESSION_MIX);
                        let draft = Draft {
                            kind,
                            event_id: format!("s{}-e{}", self.seed, self.seq),
                            customer: &c.id,
                            ts,
                            amount: 0.0,
                            rating: 1 + self.rng.next_u64() % 5,
                            loyal: c.loyal,
                            seq: self.seq,
                        };
                        out.push(encode(&draft, format));
                    }
                    if self.rng.next_f64() < 0.2 {
                        self.seq += 1;
                        // Log-uniform basket between 5 and 300.
                        let amount = (5.0 * 60f64.powf(self.rng.next_f64()) * 100.0).round() / 100.0;
                        let draft = Draft {
                            kind: if self.rng.next_f64() < 0.03 { "refund" } else { "purchase" },
                            event_id: format!("s{}-e{}", self.seed, self.seq),
                            customer: &c.id,
                            ts: ts + 30_000,
                            amount,
                            rating: 3,
                            loyal: c.loyal,
                            seq: self.seq,
                        };
                        out.push(encode(&draft, format));
                    }
                }
                let gap = c.cadence_days * (0.5 + self.rng.next_f64());
                c.next_visit = at + (gap * DAY) as i64;
            }
        }
    }
}

/// Mean lifetime of a customer of [`lifecycles`], days.
const LIFETIME_DAYS: f64 = 240.0;
/// How long before leaving a customer of [`lifecycles`] disengages, days.
const DISENGAGING_DAYS: f64 = 30.0;

/// A population observed over a long history, for learning and judging the
/// purchase probability (`engage fit --holdout-end`, `engage evaluate`):
/// customers keep arriving (uniformly over `days` from `start_ms`) and each
/// leaves after a lifetime of their own, so one stretch of the history
/// looks like another, as a going business does, rather than one cohort
/// ageing. Each customer has
///
/// - a rhythm: a visit every 1 to 20 days (log-uniform; each gap 0.5–1.5×);
/// - a taste for buying: a purchase after 2 % to 42 % of visits, most near
///   the low end, which shows in their browsing (more carts and wishlists);
/// - a lifetime: exponential, mean 240 days, twice that for the fifth who
///   join the loyalty programme (on their first visit);
/// - a decline before leaving: in their last 30 days they visit half as
///   often, contact support and rate the service 1 or 2.
///
/// Sessions are as [`Population`]'s. Returns every record, in event-time
/// order. Deterministic for a seed; ids carry the seed.
pub fn lifecycles(seed: u64, customers: usize, start_ms: i64, days: u32, format: Format) -> Vec<Record> {
    let mut rng = SplitMix64::new(seed);
    let end = start_ms + (f64::from(days) * DAY) as i64;
    let mut out = Vec::new();
    let mut seq = 0usize;
    for i in 0..customers {
        let id = format!("l{seed}-c{i:06}");
        let arrival = start_ms + (rng.next_f64() * f64::from(days) * DAY) as i64;
        let cadence = 20f64.powf(rng.next_f64());
        let taste = rng.next_f64();
        let propensity = 0.02 + 0.4 * taste * taste;
        let loyal = rng.next_f64() < 0.2;
        let lifetime = -(1.0 - rng.next_f64()).ln() * LIFETIME_DAYS * if loyal { 2.0 } else { 1.0 };
        let leaves = arrival + (lifetime * DAY) as i64;
        let declines = leaves - (DISENGAGING_DAYS * DAY) as i64;
        // Browsing shows the taste for buying.
        let mut normal = SESSION_MIX;
        let mut declining = SESSION_MIX;
        for mix in [&mut normal, &mut declining] {
            for (kind, weight) in mix.iter_mut() {
                match *kind {
                    "add_to_cart" => *weight = (f64::from(*weight) * (0.3 + 6.0 * propensity)) as u32,
                    "wishlist_add" => *weight = (f64::from(*weight) * (0.3 + 4.0 * propensity)) as u32,
                    "loyalty_signup" => *weight = 0,
                    _ => {}
                }
            }
        }
        for (kind, weight) in declining.iter_mut() {
            match *kind {
                "support_contact" => *weight *= 6,
                "feedback" => *weight *= 4,
                _ => {}
            }
        }
        let mut at = arrival;
        let mut first = true;
        while at < leaves.min(end) {
            let is_declining = at >= declines;
            let mut ts = at;
            let event = |kind: &str, ts: i64, amount: f64, rating: u64, out: &mut Vec<Record>, seq: &mut usize| {
                *seq += 1;
                let draft = Draft {
                    kind,
                    event_id: format!("l{seed}-e{seq}"),
                    customer: &id,
                    ts,
                    amount,
                    rating,
                    loyal,
                    seq: *seq,
                };
                out.push(encode(&draft, format));
            };
            if first && loyal {
                event("loyalty_signup", ts, 0.0, 3, &mut out, &mut seq);
            }
            first = false;
            let clicks = 1 + rng.next_u64() % 6;
            for _ in 0..clicks {
                ts += 20_000 + (rng.next_u64() % 100_000) as i64;
                let kind = pick_kind(&mut rng, if is_declining { &declining } else { &normal });
                let rating = if is_declining { 1 + rng.next_u64() % 2 } else { 3 + rng.next_u64() % 3 };
                event(kind, ts, 0.0, rating, &mut out, &mut seq);
            }
            if rng.next_f64() < propensity {
                // Log-uniform basket between 5 and 300.
                let amount = (5.0 * 60f64.powf(rng.next_f64()) * 100.0).round() / 100.0;
                let kind = if rng.next_f64() < 0.03 { "refund" } else { "purchase" };
                event(kind, ts + 30_000, amount, 3, &mut out, &mut seq);
            }
            let gap = cadence * (0.5 + rng.next_f64()) * if is_declining { 2.0 } else { 1.0 };
            at += (gap * DAY) as i64;
        }
    }
    out.sort_by_key(|r| r.ts_ms);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Envelope, Limits, decode};

    #[test]
    fn a_population_visits_on_rhythm_and_some_drift_away() {
        let start = 1_700_000_000_000;
        let mut p = Population::new(3, 200, start);
        let mut first = Vec::new();
        p.advance(start + 20 * DAY as i64, Format::Json, &mut first);
        let mut later = Vec::new();
        p.advance(start + 120 * DAY as i64, Format::Json, &mut later);
        assert!(!first.is_empty() && !later.is_empty());
        let active = |rs: &[Record], from: i64| {
            rs.iter()
                .filter(|r| r.ts_ms >= from)
                .map(|r| r.key.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        };
        // Fewer customers are active in the last 20 days than in the first 20.
        assert!(active(&later, start + 100 * DAY as i64) < active(&first, start), "some drift away");
        assert!(later.iter().any(|r| r.topic == InputKind::Purchases));
    }

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
            assert!(a.iter().any(|r| r.topic == InputKind::Purchases));
        }
    }
}
