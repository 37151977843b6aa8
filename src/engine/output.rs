//! The messages engage publishes (docs/model.md "Guarantees") and their two encodings. JSON and
//! protobuf use the same field names; in JSON, enums are lower-case strings.

use compact_str::CompactString;
use prost::Message;
use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter as _};

use crate::engine::churn::{Health, Reason};
use crate::engine::lifecycle::Stage;
use crate::engine::scoring::Drivers;
use crate::proto;
use crate::vocab::DIMENSIONS;
use crate::vocab::Format;

/// Version of the output schemas (`proto/engage/v1`), sent as the
/// `engage.schema.version` header.
pub const OUTPUT_SCHEMA_VERSION: &str = "1";

/// The five dimension scores, 0–100.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Dimensions {
    /// Visiting, browsing, responding to marketing.
    pub attention: f64,
    /// Purchases and refunds.
    pub transaction: f64,
    /// Advocacy and content creation.
    pub social: f64,
    /// Loyalty-programme participation.
    pub loyalty: f64,
    /// Service interactions and ratings; 50 is neutral.
    pub satisfaction: f64,
}

impl From<[f64; DIMENSIONS]> for Dimensions {
    fn from(d: [f64; DIMENSIONS]) -> Self {
        Dimensions { attention: d[0], transaction: d[1], social: d[2], loyalty: d[3], satisfaction: d[4] }
    }
}

impl Dimensions {
    fn to_proto(self) -> proto::Dimensions {
        proto::Dimensions {
            attention: self.attention,
            transaction: self.transaction,
            social: self.social,
            loyalty: self.loyalty,
            satisfaction: self.satisfaction,
        }
    }
}

/// A material move of a customer's score, stage or health (topic
/// `engagement.scores`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScoreChanged {
    /// The customer; also the record key.
    pub customer_id: CompactString,
    /// Per-customer sequence number shared with alerts: drop any message
    /// whose seq is not above the last one seen for the customer.
    pub seq: u64,
    /// Composite engagement score, 0–100.
    pub score: f64,
    /// The previously published score; absent for a new customer.
    pub previous_score: Option<f64>,
    /// The breakdown.
    pub dimensions: Dimensions,
    /// Lifecycle stage.
    pub stage: Stage,
    /// Churn health.
    pub health: Health,
    /// BG/NBD probability the customer is still alive.
    pub p_alive: f64,
    /// Which dimensions moved the score since the previous message, largest
    /// first, in composite points.
    pub drivers: Drivers,
    /// BG/NBD expected purchase days in the next 90 days; absent before the
    /// first purchase.
    pub expected_purchases_90d: Option<f64>,
    /// That times the Gamma-Gamma expected order value; absent before the
    /// first purchase.
    pub expected_value_90d: Option<f64>,
    /// Event time (epoch ms) of the event or sweep that caused the message.
    pub event_time: i64,
    /// Wall-clock time (epoch ms) the message was produced.
    pub processed_at: i64,
}

impl ScoreChanged {
    /// Appends the JSON encoding: the bytes `serde_json` writes for the
    /// derived `Serialize`, written directly. Score changes are most of
    /// what engage publishes, and the derived encoding escaped every field
    /// name of every message. Numbers and the
    /// customer id still go through serde_json's own formatting, and a
    /// property test holds the two encodings byte for byte equal.
    fn write_json(&self, buf: &mut Vec<u8>) {
        // Writing into a Vec cannot fail.
        let d = &self.dimensions;
        buf.extend_from_slice(b"{\"customer_id\":");
        json_str(buf, &self.customer_id);
        buf.extend_from_slice(b",\"seq\":");
        let _ = CompactFormatter.write_u64(buf, self.seq);
        buf.extend_from_slice(b",\"score\":");
        json_f64(buf, self.score);
        buf.extend_from_slice(b",\"previous_score\":");
        json_opt_f64(buf, self.previous_score);
        buf.extend_from_slice(b",\"dimensions\":{\"attention\":");
        json_f64(buf, d.attention);
        buf.extend_from_slice(b",\"transaction\":");
        json_f64(buf, d.transaction);
        buf.extend_from_slice(b",\"social\":");
        json_f64(buf, d.social);
        buf.extend_from_slice(b",\"loyalty\":");
        json_f64(buf, d.loyalty);
        buf.extend_from_slice(b",\"satisfaction\":");
        json_f64(buf, d.satisfaction);
        buf.extend_from_slice(b"},\"stage\":\"");
        buf.extend_from_slice(self.stage.as_str().as_bytes());
        buf.extend_from_slice(b"\",\"health\":\"");
        buf.extend_from_slice(self.health.as_str().as_bytes());
        buf.extend_from_slice(b"\",\"p_alive\":");
        json_f64(buf, self.p_alive);
        buf.extend_from_slice(b",\"drivers\":[");
        for (i, driver) in self.drivers.as_slice().iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            buf.extend_from_slice(b"{\"dimension\":\"");
            buf.extend_from_slice(driver.dimension.as_str().as_bytes());
            buf.extend_from_slice(b"\",\"delta\":");
            json_f64(buf, driver.delta);
            buf.push(b'}');
        }
        buf.extend_from_slice(b"],\"expected_purchases_90d\":");
        json_opt_f64(buf, self.expected_purchases_90d);
        buf.extend_from_slice(b",\"expected_value_90d\":");
        json_opt_f64(buf, self.expected_value_90d);
        buf.extend_from_slice(b",\"event_time\":");
        let _ = CompactFormatter.write_i64(buf, self.event_time);
        buf.extend_from_slice(b",\"processed_at\":");
        let _ = CompactFormatter.write_i64(buf, self.processed_at);
        buf.push(b'}');
    }
}

/// A JSON string, escaped as serde_json escapes it.
fn json_str(buf: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *buf, s);
}

/// A number as serde_json writes it; `null` when not finite, as serde_json.
fn json_f64(buf: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        let _ = CompactFormatter.write_f64(buf, v);
    } else {
        buf.extend_from_slice(b"null");
    }
}

fn json_opt_f64(buf: &mut Vec<u8>, v: Option<f64>) {
    match v {
        Some(v) => json_f64(buf, v),
        None => buf.extend_from_slice(b"null"),
    }
}

/// Kinds of churn alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Slipped to at risk.
    AtRisk,
    /// Slipped to dormant.
    Dormant,
    /// Came back from at risk or dormant.
    Reactivated,
}

impl AlertKind {
    /// The message name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::AtRisk => "at_risk",
            AlertKind::Dormant => "dormant",
            AlertKind::Reactivated => "reactivated",
        }
    }
}

/// A health transition (topic `engagement.churn-alerts`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChurnAlert {
    /// `<customer_id>:<seq>`: the same alert re-delivered has the same id.
    pub alert_id: String,
    /// The customer; also the record key.
    pub customer_id: CompactString,
    /// Per-customer sequence number shared with score changes.
    pub seq: u64,
    /// What happened.
    pub kind: AlertKind,
    /// The signals that fired, with values and thresholds (empty for
    /// `reactivated`).
    pub reasons: Vec<Reason>,
    /// BG/NBD probability the customer is still alive.
    pub p_alive: f64,
    /// Composite score at the time.
    pub score: f64,
    /// Days since the previous activity (for `reactivated`: how long the
    /// customer was away).
    pub idle_days: f64,
    /// The customer's mean gap between active days.
    pub cadence_days: f64,
    /// Lifecycle stage.
    pub stage: Stage,
    /// Event time (epoch ms) of the event or sweep that caused the alert.
    pub event_time: i64,
    /// Wall-clock time (epoch ms) the alert was produced.
    pub processed_at: i64,
}

/// Something the engine wants published.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// For `engagement.scores`.
    Score(ScoreChanged),
    /// For `engagement.churn-alerts`.
    Alert(ChurnAlert),
    /// For `topics.erasure_confirmations` (the sink writes the scores
    /// tombstone that goes with it).
    Erasure(crate::engine::erasure::ErasureConfirmation),
}

impl Output {
    /// The record key.
    pub fn customer_id(&self) -> &str {
        match self {
            Output::Score(s) => &s.customer_id,
            Output::Alert(a) => &a.customer_id,
            Output::Erasure(e) => &e.customer_id,
        }
    }

    /// The per-customer sequence number.
    pub fn seq(&self) -> u64 {
        match self {
            Output::Score(s) => s.seq,
            Output::Alert(a) => a.seq,
            // Not part of the score and alert sequence.
            Output::Erasure(_) => 0,
        }
    }

    /// Encodes the message in `format`.
    pub fn encode(&self, format: Format) -> Vec<u8> {
        let mut buf = Vec::new();
        self.encode_into(format, &mut buf);
        buf
    }

    /// Encodes the message in `format` into `buf`, replacing what it held:
    /// the sink reuses one buffer for every output instead of allocating
    /// (and growing) one each.
    pub fn encode_into(&self, format: Format, buf: &mut Vec<u8>) {
        buf.clear();
        match format {
            // Serialising plain structs of numbers and strings into a Vec
            // cannot fail.
            Format::Json => match self {
                Output::Score(s) => s.write_json(buf),
                Output::Alert(a) => {
                    let _ = serde_json::to_writer(&mut *buf, a);
                }
                Output::Erasure(e) => {
                    let _ = serde_json::to_writer(&mut *buf, e);
                }
            },
            Format::Protobuf => self.write_protobuf(buf),
        }
    }

    /// The JSON encoding.
    pub fn to_json(&self) -> Vec<u8> {
        self.encode(Format::Json)
    }

    /// The protobuf encoding (`engage.v1.ScoreChanged` / `engage.v1.ChurnAlert`
    /// / `engage.v1.ErasureConfirmation`).
    pub fn to_protobuf(&self) -> Vec<u8> {
        self.encode(Format::Protobuf)
    }

    /// Appends the protobuf encoding to `buf` (a `Vec` grows as needed, so
    /// encoding cannot run out of room).
    fn write_protobuf(&self, buf: &mut Vec<u8>) {
        let _ = match self {
            Output::Score(s) => proto::ScoreChanged {
                customer_id: s.customer_id.to_string(),
                seq: s.seq,
                score: s.score,
                previous_score: s.previous_score,
                dimensions: Some(s.dimensions.to_proto()),
                stage: proto::Stage::from(s.stage) as i32,
                health: proto::Health::from(s.health) as i32,
                p_alive: s.p_alive,
                drivers: s
                    .drivers
                    .as_slice()
                    .iter()
                    .map(|d| proto::Driver { dimension: d.dimension.as_str().to_string(), delta: d.delta })
                    .collect(),
                expected_purchases_90d: s.expected_purchases_90d,
                expected_value_90d: s.expected_value_90d,
                event_time: s.event_time,
                processed_at: s.processed_at,
            }
            .encode(buf),
            Output::Alert(a) => proto::ChurnAlert {
                alert_id: a.alert_id.clone(),
                customer_id: a.customer_id.to_string(),
                seq: a.seq,
                kind: match a.kind {
                    AlertKind::AtRisk => proto::AlertKind::AtRisk,
                    AlertKind::Dormant => proto::AlertKind::Dormant,
                    AlertKind::Reactivated => proto::AlertKind::Reactivated,
                } as i32,
                reasons: a
                    .reasons
                    .iter()
                    .map(|r| proto::Reason { signal: r.signal.to_string(), value: r.value, threshold: r.threshold })
                    .collect(),
                p_alive: a.p_alive,
                score: a.score,
                idle_days: a.idle_days,
                cadence_days: a.cadence_days,
                stage: proto::Stage::from(a.stage) as i32,
                event_time: a.event_time,
                processed_at: a.processed_at,
            }
            .encode(buf),
            Output::Erasure(e) => proto::ErasureConfirmation {
                customer_id: e.customer_id.to_string(),
                request_id: e.request_id.clone(),
                erased_at: e.erased_at,
                cutoff: e.cutoff,
            }
            .encode(buf),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost_types::FileDescriptorSet;
    use std::collections::BTreeSet;

    fn sample_score() -> ScoreChanged {
        ScoreChanged {
            customer_id: "c1".into(),
            seq: 3,
            score: 41.5,
            previous_score: Some(40.0),
            dimensions: [10.0, 20.0, 30.0, 40.0, 50.0].into(),
            stage: Stage::Integration,
            health: Health::AtRisk,
            p_alive: 0.7,
            drivers: Drivers::default(),
            expected_purchases_90d: Some(0.5),
            expected_value_90d: Some(20.0),
            event_time: 1000,
            processed_at: 2000,
        }
    }

    fn sample_alert() -> ChurnAlert {
        ChurnAlert {
            alert_id: "c1:4".into(),
            customer_id: "c1".into(),
            seq: 4,
            kind: AlertKind::AtRisk,
            reasons: vec![Reason { signal: "idle_ratio", value: 3.5, threshold: 3.0 }],
            p_alive: 0.7,
            score: 41.5,
            idle_days: 7.0,
            cadence_days: 2.0,
            stage: Stage::Integration,
            event_time: 1000,
            processed_at: 2000,
        }
    }

    fn proto_fields(message: &str) -> BTreeSet<String> {
        let fds =
            FileDescriptorSet::decode(&include_bytes!(concat!(env!("OUT_DIR"), "/engage_descriptor.bin"))[..]).unwrap();
        let msg = fds.file.iter().flat_map(|f| &f.message_type).find(|m| m.name() == message).unwrap();
        msg.field.iter().map(|f| f.name().to_string()).collect()
    }

    fn json_fields(value: &[u8]) -> BTreeSet<String> {
        let v: serde_json::Value = serde_json::from_slice(value).unwrap();
        v.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn json_and_protobuf_use_the_same_field_names() {
        assert_eq!(json_fields(&Output::Score(sample_score()).to_json()), proto_fields("ScoreChanged"));
        assert_eq!(json_fields(&Output::Alert(sample_alert()).to_json()), proto_fields("ChurnAlert"));
        let dims: serde_json::Value = serde_json::to_value(sample_score().dimensions).unwrap();
        let keys: BTreeSet<String> = dims.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, proto_fields("Dimensions"));
    }

    fn any_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => 0.0..100.0f64,
            1 => any::<f64>(),
            1 => prop::sample::select(vec![0.0, -0.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e-320, 1e300]),
        ]
    }

    prop_compose! {
        fn any_score()(
            customer_id in prop_oneof![3 => "[a-z0-9-]{1,12}", 1 => any::<String>()],
            seq in any::<u64>(),
            (score, previous_score, p_alive) in (any_f64(), prop::option::of(any_f64()), any_f64()),
            (before, after) in (prop::array::uniform5(0.0..100.0f64), prop::array::uniform5(0.0..100.0f64)),
            stage in prop::sample::select(vec![Stage::Initiation, Stage::Integration, Stage::Intelligence, Stage::ValueCreation]),
            health in prop::sample::select(vec![Health::Active, Health::AtRisk, Health::Dormant]),
            (expected_purchases_90d, expected_value_90d) in (prop::option::of(any_f64()), prop::option::of(any_f64())),
            (event_time, processed_at) in (any::<i64>(), any::<i64>()),
        ) -> ScoreChanged {
            let rules = crate::engine::scoring::ScoringRules::new(&crate::config::ScoringConfig::default());
            ScoreChanged {
                customer_id: customer_id.into(),
                seq,
                score,
                previous_score,
                dimensions: after.into(),
                stage,
                health,
                p_alive,
                drivers: rules.drivers(&before, &after),
                expected_purchases_90d,
                expected_value_90d,
                event_time,
                processed_at,
            }
        }
    }

    proptest! {
        #[test]
        fn hand_written_score_json_is_what_serde_json_writes(score in any_score()) {
            let serde = serde_json::to_vec(&score).unwrap();
            let mut written = b"left over".to_vec();
            Output::Score(score).encode_into(Format::Json, &mut written);
            prop_assert_eq!(String::from_utf8_lossy(&written), String::from_utf8_lossy(&serde));
        }
    }

    #[test]
    fn json_enums_are_lower_case_names() {
        let v: serde_json::Value = serde_json::from_slice(&Output::Alert(sample_alert()).to_json()).unwrap();
        assert_eq!(v["kind"], "at_risk");
        assert_eq!(v["stage"], "integration");
        assert_eq!(v["reasons"][0]["signal"], "idle_ratio");
    }

    #[test]
    fn protobuf_encoding_decodes_with_the_generated_types() {
        let bytes = Output::Score(sample_score()).to_protobuf();
        let m = proto::ScoreChanged::decode(&bytes[..]).unwrap();
        assert_eq!((m.seq, m.score, m.previous_score), (3, 41.5, Some(40.0)));
        assert_eq!(m.health(), proto::Health::AtRisk);
        let bytes = Output::Alert(sample_alert()).to_protobuf();
        let a = proto::ChurnAlert::decode(&bytes[..]).unwrap();
        assert_eq!((a.alert_id.as_str(), a.kind()), ("c1:4", proto::AlertKind::AtRisk));
    }
}
