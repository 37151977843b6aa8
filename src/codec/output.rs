//! The wire encodings of what engage publishes: JSON and protobuf
//! (`proto/engage/v1/outputs.proto`) of [`Output`], and the headers that
//! name them. Both use the same field names; in JSON, enums are lower-case
//! strings and times epoch milliseconds.

use prost::Message;
use serde_json::ser::{CompactFormatter, Formatter as _};

use crate::engine::churn::Health;
use crate::engine::lifecycle::Stage;
use crate::engine::output::{AlertKind, Dimensions, Output, ScoreChanged};
use crate::proto;
use crate::vocab::{Dimension, Format, Horizon};

/// Version of the output schemas (`proto/engage/v1`), sent as the
/// `engage.schema.version` header.
pub const OUTPUT_SCHEMA_VERSION: &str = "1";

/// The header that names a record's encoding.
pub const CONTENT_TYPE: &str = "content-type";

/// The `content-type` header value of `format`.
pub fn content_type(format: Format) -> &'static str {
    match format {
        Format::Json => "application/json",
        Format::Protobuf => "application/x-protobuf",
    }
}

/// The protobuf message type of an output, sent as the
/// `engage.message.type` header.
pub fn message_type(output: &Output) -> &'static str {
    match output {
        Output::Score(_) => "engage.v1.ScoreChanged",
        Output::Alert(_) => "engage.v1.ChurnAlert",
        Output::Erasure(_) => "engage.v1.ErasureConfirmation",
    }
}

/// Encodes `output` in `format`.
pub fn encode(output: &Output, format: Format) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_into(output, format, &mut buf);
    buf
}

/// Encodes `output` in `format` into `buf`, replacing what it held: the
/// sink reuses one buffer for every output instead of allocating (and
/// growing) one each.
pub fn encode_into(output: &Output, format: Format, buf: &mut Vec<u8>) {
    buf.clear();
    match format {
        // Serialising plain structs of numbers and strings into a Vec
        // cannot fail.
        Format::Json => match output {
            Output::Score(s) => write_score_json(s, buf),
            Output::Alert(a) => {
                let _ = serde_json::to_writer(&mut *buf, a);
            }
            Output::Erasure(e) => {
                let _ = serde_json::to_writer(&mut *buf, e);
            }
        },
        Format::Protobuf => write_protobuf(output, buf),
    }
}

/// Appends the JSON encoding of a score change: the bytes `serde_json`
/// writes for the derived `Serialize`, written directly. Score changes are
/// most of what engage publishes, and the derived encoding escaped every
/// field name of every message. Numbers and the customer id still go
/// through serde_json's own formatting, and a property test holds the two
/// encodings byte for byte equal.
fn write_score_json(s: &ScoreChanged, buf: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    buf.extend_from_slice(b"{\"customer_id\":");
    json_str(buf, &s.customer_id);
    buf.extend_from_slice(b",\"seq\":");
    let _ = CompactFormatter.write_u64(buf, s.seq);
    buf.extend_from_slice(b",\"score\":");
    json_f64(buf, s.score);
    buf.extend_from_slice(b",\"previous_score\":");
    json_opt_f64(buf, s.previous_score);
    buf.extend_from_slice(b",\"dimensions\":{");
    for (i, d) in Dimension::ALL.into_iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.push(b'"');
        buf.extend_from_slice(d.as_str().as_bytes());
        buf.extend_from_slice(b"\":");
        json_f64(buf, s.dimensions.get(d));
    }
    buf.extend_from_slice(b"},\"stage\":\"");
    buf.extend_from_slice(s.stage.as_str().as_bytes());
    buf.extend_from_slice(b"\",\"health\":\"");
    buf.extend_from_slice(s.health.as_str().as_bytes());
    buf.extend_from_slice(b"\",\"p_alive\":");
    json_f64(buf, s.p_alive);
    buf.extend_from_slice(b",\"drivers\":[");
    for (i, driver) in s.drivers.as_slice().iter().enumerate() {
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
    json_opt_f64(buf, s.expected_purchases_90d);
    buf.extend_from_slice(b",\"expected_value_90d\":");
    json_opt_f64(buf, s.expected_value_90d);
    if let Some((horizon, p)) = s.p_purchase.0 {
        buf.extend_from_slice(b",\"");
        buf.extend_from_slice(horizon.field().as_bytes());
        buf.extend_from_slice(b"\":");
        json_f64(buf, p);
    }
    buf.extend_from_slice(b",\"event_time\":");
    let _ = CompactFormatter.write_i64(buf, s.event_time);
    buf.extend_from_slice(b",\"processed_at\":");
    let _ = CompactFormatter.write_i64(buf, s.processed_at);
    buf.push(b'}');
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

/// The protobuf `Dimensions`: one field per dimension, so each dimension
/// is mapped to its field here (a new dimension does not compile until it
/// is).
fn dimensions_to_proto(d: &Dimensions) -> proto::Dimensions {
    let mut p = proto::Dimensions::default();
    for dimension in Dimension::ALL {
        let field = match dimension {
            Dimension::Attention => &mut p.attention,
            Dimension::Transaction => &mut p.transaction,
            Dimension::Social => &mut p.social,
            Dimension::Loyalty => &mut p.loyalty,
            Dimension::Satisfaction => &mut p.satisfaction,
        };
        *field = d.get(dimension);
    }
    p
}

/// The protobuf enum value of a stage.
pub fn stage_to_proto(stage: Stage) -> proto::Stage {
    match stage {
        Stage::Initiation => proto::Stage::Initiation,
        Stage::Integration => proto::Stage::Integration,
        Stage::Intelligence => proto::Stage::Intelligence,
        Stage::ValueCreation => proto::Stage::ValueCreation,
    }
}

/// The protobuf enum value of a health.
pub fn health_to_proto(health: Health) -> proto::Health {
    match health {
        Health::Active => proto::Health::Active,
        Health::AtRisk => proto::Health::AtRisk,
        Health::Dormant => proto::Health::Dormant,
    }
}

/// Appends the protobuf encoding to `buf` (a `Vec` grows as needed, so
/// encoding cannot run out of room).
fn write_protobuf(output: &Output, buf: &mut Vec<u8>) {
    let _ = match output {
        Output::Score(s) => {
            let mut m = proto::ScoreChanged {
                customer_id: s.customer_id.to_string(),
                seq: s.seq,
                score: s.score,
                previous_score: s.previous_score,
                dimensions: Some(dimensions_to_proto(&s.dimensions)),
                stage: stage_to_proto(s.stage) as i32,
                health: health_to_proto(s.health) as i32,
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
                ..Default::default()
            };
            if let Some((horizon, p)) = s.p_purchase.0 {
                *match horizon {
                    Horizon::Days30 => &mut m.p_purchase_30d,
                    Horizon::Days60 => &mut m.p_purchase_60d,
                    Horizon::Days90 => &mut m.p_purchase_90d,
                    Horizon::Days180 => &mut m.p_purchase_180d,
                    Horizon::Days365 => &mut m.p_purchase_365d,
                } = Some(p);
            }
            m.encode(buf)
        }
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
            stage: stage_to_proto(a.stage) as i32,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::churn::Reason;
    use crate::engine::output::{ChurnAlert, PurchaseProbability};
    use crate::engine::scoring::Drivers;
    use crate::vocab::DIMENSIONS;
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
            p_purchase: PurchaseProbability(Some((Horizon::Days90, 0.42))),
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
    fn each_dimension_has_its_own_protobuf_field() {
        let fds =
            FileDescriptorSet::decode(&include_bytes!(concat!(env!("OUT_DIR"), "/engage_descriptor.bin"))[..]).unwrap();
        let message = fds.file.iter().flat_map(|f| &f.message_type).find(|m| m.name() == "Dimensions").unwrap();
        for d in Dimension::ALL {
            let mut only = [0.0; DIMENSIONS];
            only[d.index()] = 1.0;
            let bytes = dimensions_to_proto(&Dimensions(only)).encode_to_vec();
            // One non-default double: its tag is (field number << 3) | 1.
            let field =
                message.field.iter().find(|f| f.name() == d.as_str()).expect("a field named after the dimension");
            assert_eq!(bytes[0] >> 3, field.number() as u8, "{d:?}");
        }
    }

    #[test]
    fn json_and_protobuf_use_the_same_field_names() {
        // The learned probability has one field per horizon, of which a
        // message carries the one of its model (none without a model):
        // every JSON field is a protobuf field, and over all horizons the
        // two sets are equal.
        let scores = proto_fields("ScoreChanged");
        let mut seen = BTreeSet::new();
        for p in Horizon::ALL.into_iter().map(|h| Some((h, 0.5))).chain([None]) {
            let score = ScoreChanged { p_purchase: PurchaseProbability(p), ..sample_score() };
            let json = json_fields(&encode(&Output::Score(score.clone()), Format::Json));
            assert!(json.is_subset(&scores), "{json:?} vs {scores:?}");
            let named = json.iter().filter(|f| f.starts_with("p_purchase_")).cloned().collect::<Vec<_>>();
            assert_eq!(named, p.map(|(h, _)| h.field().to_string()).into_iter().collect::<Vec<_>>());
            // The protobuf field of the same name carries the value.
            let m = proto::ScoreChanged::decode(&encode(&Output::Score(score), Format::Protobuf)[..]).unwrap();
            let set = [m.p_purchase_30d, m.p_purchase_60d, m.p_purchase_90d, m.p_purchase_180d, m.p_purchase_365d];
            let set: Vec<_> = Horizon::ALL.into_iter().zip(set).filter_map(|(h, v)| v.map(|v| (h, v))).collect();
            assert_eq!(set, p.into_iter().collect::<Vec<_>>());
            seen.extend(json);
        }
        assert_eq!(seen, scores);
        assert_eq!(json_fields(&encode(&Output::Alert(sample_alert()), Format::Json)), proto_fields("ChurnAlert"));
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
            p_purchase in prop::option::of((prop::sample::select(Horizon::ALL.to_vec()), any_f64())),
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
                p_purchase: PurchaseProbability(p_purchase),
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
            encode_into(&Output::Score(score), Format::Json, &mut written);
            prop_assert_eq!(String::from_utf8_lossy(&written), String::from_utf8_lossy(&serde));
        }
    }

    #[test]
    fn json_enums_are_lower_case_names() {
        let v: serde_json::Value =
            serde_json::from_slice(&encode(&Output::Alert(sample_alert()), Format::Json)).unwrap();
        assert_eq!(v["kind"], "at_risk");
        assert_eq!(v["stage"], "integration");
        assert_eq!(v["reasons"][0]["signal"], "idle_ratio");
    }

    #[test]
    fn protobuf_encoding_decodes_with_the_generated_types() {
        let bytes = encode(&Output::Score(sample_score()), Format::Protobuf);
        let m = proto::ScoreChanged::decode(&bytes[..]).unwrap();
        assert_eq!((m.seq, m.score, m.previous_score), (3, 41.5, Some(40.0)));
        assert_eq!(m.health(), proto::Health::AtRisk);
        let bytes = encode(&Output::Alert(sample_alert()), Format::Protobuf);
        let a = proto::ChurnAlert::decode(&bytes[..]).unwrap();
        assert_eq!((a.alert_id.as_str(), a.kind()), ("c1:4", proto::AlertKind::AtRisk));
    }
}
