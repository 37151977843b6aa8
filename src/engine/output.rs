//! The messages engage publishes (docs/model.md "Guarantees"), as plain
//! data. Their wire encodings (JSON, protobuf) are the sink's business:
//! [`crate::codec::output`].

use compact_str::CompactString;
use serde::Serialize;
use serde::ser::SerializeMap;

use crate::engine::churn::{Health, Reason};
use crate::engine::lifecycle::Stage;
use crate::engine::scoring::Drivers;
use crate::vocab::{DIMENSIONS, Dimension, Horizon};

/// The dimension scores, 0–100, in [`Dimension`] order. Serialised as an
/// object keyed by dimension name, as the protobuf `Dimensions` message
/// has a field per dimension.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dimensions(pub [f64; DIMENSIONS]);

impl From<[f64; DIMENSIONS]> for Dimensions {
    fn from(d: [f64; DIMENSIONS]) -> Self {
        Dimensions(d)
    }
}

impl Dimensions {
    /// One dimension's score.
    pub fn get(&self, dimension: Dimension) -> f64 {
        self.0[dimension.index()]
    }
}

impl Serialize for Dimensions {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(DIMENSIONS))?;
        for d in Dimension::ALL {
            map.serialize_entry(d.as_str(), &self.get(d))?;
        }
        map.end()
    }
}

/// The learned probability of a purchase within its horizon, or nothing
/// without a `[churn.model]`. Serialised as one field named after the
/// horizon (`"p_purchase_90d": 0.42`), flattened into its message, or no
/// field at all, so outputs without a model are exactly as before.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PurchaseProbability(pub Option<(Horizon, f64)>);

impl Serialize for PurchaseProbability {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(usize::from(self.0.is_some())))?;
        if let Some((horizon, p)) = self.0 {
            map.serialize_entry(horizon.field(), &p)?;
        }
        map.end()
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
    /// The learned, calibrated probability of a purchase within
    /// `churn.horizon`, as `p_purchase_<days>d`; no field without a model.
    #[serde(flatten)]
    pub p_purchase: PurchaseProbability,
    /// Event time (epoch ms) of the event or sweep that caused the message.
    pub event_time: i64,
    /// Wall-clock time (epoch ms) the message was produced.
    pub processed_at: i64,
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
    Erasure(ErasureConfirmation),
}

/// Published to `topics.erasure_confirmations` for each erasure applied
/// (docs/model.md "Erasure"): the privacy team's evidence.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErasureConfirmation {
    /// The erased customer; also the record key.
    pub customer_id: CompactString,
    /// The request's id.
    pub request_id: String,
    /// Wall-clock time (epoch ms) the state was dropped.
    pub erased_at: i64,
    /// Events at or before this event time (epoch ms) are ignored from now
    /// on.
    pub cutoff: i64,
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
}
