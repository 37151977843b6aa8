//! `[scoring]`: the five dimensions and when a score change is published.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, DAY, invalid};
use crate::vocab::{DIMENSIONS, Dimension, Signal};

/// `[scoring]`: the five dimensions of docs/model.md "Dimensions and the score" and when a score change is
/// published (docs/model.md "Guarantees").
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringConfig {
    /// Publish a score change when the score moved at least this much since
    /// the last published one (stage or health changes always publish).
    /// docs/model.md "Guarantees": 1.0.
    pub min_delta: f64,
    /// Visiting, browsing and responding to marketing.
    pub attention: DimensionConfig,
    /// Purchases and refunds.
    pub transaction: DimensionConfig,
    /// Advocacy and content creation.
    pub social: DimensionConfig,
    /// Loyalty-programme participation.
    pub loyalty: DimensionConfig,
    /// Service interactions and ratings; centred on 50.
    pub satisfaction: DimensionConfig,
}

impl ScoringConfig {
    /// Checks that span this section's fields; the error names the key
    /// and what would be valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = self;
        if !(s.min_delta.is_finite() && s.min_delta >= 0.0) {
            return Err(invalid("scoring.min_delta", "must be 0 or more (0 publishes every change)"));
        }
        let mut weight_sum = 0.0;
        for (dim, d) in s.dimensions() {
            let key = |k: &str| format!("scoring.{}.{k}", dim.as_str());
            if d.half_life.is_zero() {
                return Err(invalid(key("half_life"), "must be longer than zero"));
            }
            if !(d.saturation.is_finite() && d.saturation > 0.0) {
                return Err(invalid(key("saturation"), "must be a positive number"));
            }
            if !(d.weight.is_finite() && d.weight >= 0.0) {
                return Err(invalid(key("weight"), "must be 0 or more"));
            }
            weight_sum += d.weight;
            for (name, w) in &d.events {
                if Signal::parse(name).is_none() {
                    let valid: Vec<&str> = Signal::ALL.iter().map(|s| s.as_str()).collect();
                    return Err(invalid(key("events"), format!("unknown event {name:?}; valid: {}", valid.join(", "))));
                }
                if !w.is_finite() {
                    return Err(invalid(key(&format!("events.{name}")), "must be a finite number"));
                }
            }
        }
        if weight_sum <= 0.0 {
            return Err(invalid("scoring.*.weight", "at least one dimension needs a positive weight"));
        }
        Ok(())
    }

    /// The dimension tables in [`Dimension`] order.
    pub fn dimensions(&self) -> [(Dimension, &DimensionConfig); DIMENSIONS] {
        [
            (Dimension::Attention, &self.attention),
            (Dimension::Transaction, &self.transaction),
            (Dimension::Social, &self.social),
            (Dimension::Loyalty, &self.loyalty),
            (Dimension::Satisfaction, &self.satisfaction),
        ]
    }
}

/// One dimension: `v` is the exponentially decayed sum of event weights;
/// its score is `100·(1−e^(−max(v,0)/saturation))` (satisfaction:
/// `50 + 50·tanh(v/saturation)`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DimensionConfig {
    /// Time for an event's contribution to halve.
    #[serde(with = "humantime_serde")]
    pub half_life: Duration,
    /// The `v` at which the dimension reaches 63 points: larger is harder to
    /// saturate.
    pub saturation: f64,
    /// This dimension's weight in the composite score (weights are
    /// normalised to sum to 1).
    pub weight: f64,
    /// Event weights. Keys are clickstream types (`page_view`, ...) and the
    /// purchase signals `purchase` (per order), `purchase_per_ln_amount`
    /// (times ln(1+amount)), `refund`, `purchase_loyalty_member`,
    /// `purchase_with_coupon`, and `feedback_per_rating_point` (times
    /// rating−3). An event may feed several dimensions. Entries merge with
    /// the defaults: set one to 0 to switch it off.
    pub events: BTreeMap<String, f64>,
}

fn dimension(half_life_days: u64, saturation: f64, weight: f64, events: &[(&str, f64)]) -> DimensionConfig {
    DimensionConfig {
        half_life: Duration::from_secs(half_life_days * DAY),
        saturation,
        weight,
        events: events.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    }
}

impl Default for ScoringConfig {
    /// The table of docs/model.md "Dimensions and the score".
    fn default() -> Self {
        ScoringConfig {
            min_delta: 1.0,
            attention: dimension(
                7,
                20.0,
                0.25,
                &[
                    ("page_view", 1.0),
                    ("app_open", 1.0),
                    ("product_view", 2.0),
                    ("search", 2.0),
                    ("email_click", 2.0),
                    ("ad_click", 1.5),
                    ("wishlist_add", 3.0),
                    ("add_to_cart", 4.0),
                ],
            ),
            transaction: dimension(
                30,
                30.0,
                0.30,
                &[("purchase", 10.0), ("purchase_per_ln_amount", 2.0), ("refund", -5.0)],
            ),
            social: dimension(
                30,
                20.0,
                0.15,
                &[("social_follow", 4.0), ("share", 6.0), ("review", 8.0), ("referral", 12.0)],
            ),
            loyalty: dimension(
                60,
                15.0,
                0.15,
                &[
                    ("coupon_claim", 3.0),
                    ("loyalty_signup", 10.0),
                    ("purchase_loyalty_member", 3.0),
                    ("purchase_with_coupon", 2.0),
                ],
            ),
            satisfaction: dimension(30, 10.0, 0.15, &[("support_contact", 2.0), ("feedback_per_rating_point", 4.0)]),
        }
    }
}
