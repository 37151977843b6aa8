//! `[churn]`: churn signals, health thresholds and the BG/NBD and Gamma-Gamma parameters.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, DAY, PurchaseModelConfig, invalid};
use crate::vocab::Horizon;

/// `[churn]`: the three signals and health thresholds of docs/model.md "Health".
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChurnConfig {
    /// `at_risk` when P(alive) falls below this. docs/model.md "Health": 0.5.
    pub p_alive_at_risk: f64,
    /// `dormant` when P(alive) falls below this. docs/model.md "Health": 0.2.
    pub p_alive_dormant: f64,
    /// `at_risk` when idle time reaches this multiple of the customer's own
    /// cadence (mean gap between active days). docs/model.md "Health": 3.
    pub idle_at_risk: f64,
    /// `dormant` when idle time reaches this multiple of the cadence ...
    /// docs/model.md "Health": 6.
    pub idle_dormant: f64,
    /// ... and at least this long. docs/model.md "Health": 30 days.
    #[serde(with = "humantime_serde")]
    pub dormant_min_idle: Duration,
    /// Cadence assumed until a customer has two active days. docs/model.md "Health": 7 days.
    #[serde(with = "humantime_serde")]
    pub default_cadence: Duration,
    /// `at_risk` when the score is at or below this fraction of its recent
    /// peak. docs/model.md "Health": 0.5.
    pub score_drop_ratio: f64,
    /// How long a peak score counts as recent. docs/model.md "Health": 30 days.
    #[serde(with = "humantime_serde")]
    pub score_drop_window: Duration,
    /// Peaks below this never count as a drop: a customer who was never
    /// engaged cannot disengage. An addition to the published model; 20 points.
    pub score_drop_min_peak: f64,
    /// P(alive) and score-drop only count once the customer is overdue:
    /// idle for at least this multiple of their cadence. Without it, a
    /// customer whose P(alive) is low but who browses daily would flip
    /// between `active` (each event) and `at_risk` (each sweep), one alert
    /// per flip. 0 applies the signals unconditionally. An addition to the published model; 1.
    pub overdue_gate: f64,
    /// The BG/NBD model behind P(alive) and expected purchases.
    pub bgnbd: BgNbdConfig,
    /// The Gamma-Gamma spend model behind expected value.
    pub gamma_gamma: GammaGammaConfig,
    /// How far ahead the learned purchase probability looks: it is
    /// P(purchase within this), published as `p_purchase_<days>d`. One of
    /// 30, 60, 90, 180 or 365 days (each has its output field). A quarter,
    /// as retention teams plan: 90 days.
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    /// What health is derived from: `signals` (P(alive), idle time
    /// against cadence, score drop, as above) or `model` (the learned
    /// purchase probability against `p_purchase_at_risk` and
    /// `p_purchase_dormant`, once the customer is overdue; needs
    /// `[churn.model]`). The published model: signals.
    pub health_from: HealthFrom,
    /// With `health_from = "model"`: `at_risk` when the probability of a
    /// purchase within the horizon falls below this. A starting point; tune
    /// it on your history with `engage evaluate --suggest`: 0.3.
    pub p_purchase_at_risk: f64,
    /// With `health_from = "model"`: `dormant` below this. A starting
    /// point, as above: 0.1.
    pub p_purchase_dormant: f64,
    /// The learned purchase probability, as `engage fit --holdout-end`
    /// writes it. Without it nothing is learned or published: none.
    pub model: Option<PurchaseModelConfig>,
}

/// What churn health is derived from (`churn.health_from`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthFrom {
    /// P(alive), idle time against cadence and score drop.
    #[default]
    Signals,
    /// The learned purchase probability (`[churn.model]`).
    Model,
}

impl Default for ChurnConfig {
    fn default() -> Self {
        ChurnConfig {
            p_alive_at_risk: 0.5,
            p_alive_dormant: 0.2,
            idle_at_risk: 3.0,
            idle_dormant: 6.0,
            dormant_min_idle: Duration::from_secs(30 * DAY),
            default_cadence: Duration::from_secs(7 * DAY),
            score_drop_ratio: 0.5,
            score_drop_window: Duration::from_secs(30 * DAY),
            score_drop_min_peak: 20.0,
            overdue_gate: 1.0,
            bgnbd: BgNbdConfig::default(),
            gamma_gamma: GammaGammaConfig::default(),
            horizon: Duration::from_secs(90 * DAY),
            health_from: HealthFrom::Signals,
            p_purchase_at_risk: 0.3,
            p_purchase_dormant: 0.1,
            model: None,
        }
    }
}

/// `[churn.bgnbd]`: BG/NBD parameters (Fader, Hardie & Lee 2005). `engage
/// fit` estimates them from a purchase history.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BgNbdConfig {
    /// Shape of the purchase-rate Gamma distribution.
    pub r: f64,
    /// Scale of the purchase-rate Gamma distribution (in `time_unit`s).
    pub alpha: f64,
    /// Beta-distribution parameter of the drop-out probability.
    pub a: f64,
    /// Beta-distribution parameter of the drop-out probability.
    pub b: f64,
    /// The time unit the parameters were fitted in. CDNOW: weeks.
    #[serde(with = "humantime_serde")]
    pub time_unit: Duration,
}

impl Default for BgNbdConfig {
    /// The published CDNOW fit (docs/model.md "Health").
    fn default() -> Self {
        BgNbdConfig { r: 0.243, alpha: 4.414, a: 0.793, b: 2.426, time_unit: Duration::from_secs(7 * DAY) }
    }
}

/// `[churn.gamma_gamma]`: Gamma-Gamma spend parameters (Fader, Hardie &
/// Lee 2005, "RFM and CLV"); `engage fit` estimates them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GammaGammaConfig {
    /// Shape of the per-transaction spend Gamma.
    pub p: f64,
    /// Shape of the Gamma over customers' spend scale; must exceed 1.
    pub q: f64,
    /// Scale of the Gamma over customers' spend scale (currency units).
    pub gamma: f64,
}

impl Default for GammaGammaConfig {
    /// The CDNOW sample fit (p 6.25, q 3.74, γ 15.44).
    fn default() -> Self {
        GammaGammaConfig { p: 6.25, q: 3.74, gamma: 15.44 }
    }
}

impl ChurnConfig {
    /// `churn.horizon` as one of the supported horizons (None if it is
    /// not one; `validate` refuses that).
    pub fn horizon_kind(&self) -> Option<Horizon> {
        let secs = self.horizon.as_secs();
        (secs.is_multiple_of(DAY) && self.horizon.subsec_nanos() == 0).then(|| Horizon::from_days(secs / DAY)).flatten()
    }

    /// Checks that span this section's fields; the error names the key
    /// and what would be valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let c = self;
        for (key, v) in [("churn.p_alive_at_risk", c.p_alive_at_risk), ("churn.p_alive_dormant", c.p_alive_dormant)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(invalid(key, "must be a probability from 0 to 1"));
            }
        }
        if c.p_alive_dormant > c.p_alive_at_risk {
            return Err(invalid("churn.p_alive_dormant", "must not exceed churn.p_alive_at_risk"));
        }
        if !(c.idle_at_risk > 0.0 && c.idle_dormant >= c.idle_at_risk) {
            return Err(invalid("churn.idle_dormant", "need 0 < churn.idle_at_risk <= churn.idle_dormant"));
        }
        if !(0.0..1.0).contains(&c.score_drop_ratio) {
            return Err(invalid("churn.score_drop_ratio", "must be from 0 to below 1"));
        }
        if !(c.overdue_gate >= 0.0 && c.overdue_gate <= c.idle_at_risk) {
            return Err(invalid("churn.overdue_gate", "must be from 0 to churn.idle_at_risk"));
        }
        if c.default_cadence.is_zero() || c.bgnbd.time_unit.is_zero() || c.score_drop_window.is_zero() {
            return Err(invalid(
                "churn",
                "default_cadence, score_drop_window and bgnbd.time_unit must be longer than zero",
            ));
        }
        let b = &c.bgnbd;
        for (key, v) in [("r", b.r), ("alpha", b.alpha), ("a", b.a), ("b", b.b)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(invalid(format!("churn.bgnbd.{key}"), "must be a positive number"));
            }
        }
        let g = &c.gamma_gamma;
        if !(g.p > 0.0 && g.q > 1.0 && g.gamma > 0.0 && g.p.is_finite() && g.q.is_finite() && g.gamma.is_finite()) {
            return Err(invalid("churn.gamma_gamma", "need p > 0, q > 1 and gamma > 0"));
        }
        if c.horizon_kind().is_none() {
            return Err(invalid("churn.horizon", "must be one of 30, 60, 90, 180 or 365 days"));
        }
        for (key, v) in
            [("churn.p_purchase_at_risk", c.p_purchase_at_risk), ("churn.p_purchase_dormant", c.p_purchase_dormant)]
        {
            if !(0.0..=1.0).contains(&v) {
                return Err(invalid(key, "must be a probability from 0 to 1"));
            }
        }
        if c.p_purchase_dormant > c.p_purchase_at_risk {
            return Err(invalid("churn.p_purchase_dormant", "must not exceed churn.p_purchase_at_risk"));
        }
        match &c.model {
            Some(model) => model.validate(c.horizon)?,
            None if c.health_from == HealthFrom::Model => {
                return Err(invalid(
                    "churn.health_from",
                    "\"model\" needs a [churn.model] table (engage fit --holdout-end writes one); or use \"signals\"",
                ));
            }
            None => {}
        }
        Ok(())
    }
}
