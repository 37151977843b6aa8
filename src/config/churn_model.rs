//! `[churn.model]`: a learned probability of a purchase within
//! `churn.horizon`, as `engage fit --holdout-end` writes it
//! (docs/model.md "The learned purchase probability"). Nobody writes
//! one by hand: the table is checked against this version's features, so
//! a model trained by another version is refused at start rather than
//! silently misread.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};
use crate::vocab::PURCHASE_FEATURES;

/// `[churn.model]`: a regularised logistic regression over
/// [`PURCHASE_FEATURES`] and the calibration that turns its output into a
/// probability.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseModelConfig {
    /// The horizon the model was trained for; must equal `churn.horizon`,
    /// since a 30-day probability published as a 90-day one would mislead.
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    /// The feature names, in coefficient order: exactly this version's
    /// list, or the model is refused (refit it with `engage fit`).
    pub features: Vec<String>,
    /// Each feature's training mean, subtracted before weighing.
    pub mean: Vec<f64>,
    /// Each feature's training standard deviation (1 for a feature that
    /// did not vary), divided by before weighing.
    pub scale: Vec<f64>,
    /// The weight of each standardised feature in the log-odds.
    pub coefficients: Vec<f64>,
    /// The log-odds with every feature at its mean.
    pub intercept: f64,
    /// How the log-odds become a calibrated probability.
    pub calibration: CalibrationConfig,
    /// What the model was trained on and how it did on its held-out
    /// cut-offs: information for people, not used by the engine.
    #[serde(default)]
    pub training: TrainingSummary,
}

/// `[churn.model.calibration]`: the map from the regression's log-odds to
/// a probability, fitted on cut-offs the regression did not see.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum CalibrationConfig {
    /// Platt scaling: `p = 1 / (1 + e^−(a·z + b))` for log-odds `z`.
    Platt {
        /// Slope; positive, or the calibration would reverse the ranking.
        a: f64,
        /// Offset.
        b: f64,
    },
    /// Isotonic regression: a non-decreasing curve through these points,
    /// linear between them and flat beyond the ends.
    Isotonic {
        /// Log-odds, strictly increasing.
        logits: Vec<f64>,
        /// The probability at each, non-decreasing, 0–1.
        probabilities: Vec<f64>,
    },
}

/// `[churn.model.training]`: what `engage fit` trained on, and the
/// model's measures on its calibration cut-offs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingSummary {
    /// `--holdout-end`: no event after it was used (RFC 3339).
    pub holdout_end: String,
    /// The first and last cut-off (RFC 3339).
    pub first_cutoff: String,
    /// The last cut-off: its horizon ends at `holdout_end`.
    pub last_cutoff: String,
    /// Cut-offs rolled through the history.
    pub cutoffs: u32,
    /// Time between cut-offs.
    #[serde(with = "humantime_serde")]
    pub cutoff_every: Duration,
    /// Of them, the latest ones held out to fit the calibration.
    pub calibration_cutoffs: u32,
    /// (customer, cut-off) examples the regression was fitted on.
    pub examples: u64,
    /// Examples the calibration was fitted on.
    pub calibration_examples: u64,
    /// Share of all examples that bought within the horizon.
    pub purchase_rate: f64,
    /// The L2 penalty chosen (on standardised features).
    pub l2: f64,
    /// ROC area on the calibration cut-offs.
    pub calibration_roc_auc: f64,
    /// Brier score on the calibration cut-offs, after calibration.
    pub calibration_brier: f64,
    /// Expected calibration error over deciles, on the calibration
    /// cut-offs (in-sample for the calibration itself: see `engage evaluate`
    /// for a later period).
    pub calibration_ece: f64,
    /// Features that never varied in training: weight 0.
    pub constant_features: Vec<String>,
}

impl PurchaseModelConfig {
    /// Checks the model against this version's features and itself; every
    /// error names the key.
    pub fn validate(&self, horizon: Duration) -> Result<(), ConfigError> {
        if self.features.iter().map(String::as_str).ne(PURCHASE_FEATURES.iter().copied()) {
            return Err(invalid(
                "churn.model.features",
                format!(
                    "this version of engage computes the features [{}]; the model was trained on [{}]: refit \
                     it with `engage fit --holdout-end`",
                    PURCHASE_FEATURES.join(", "),
                    self.features.join(", ")
                ),
            ));
        }
        if self.horizon != horizon {
            return Err(invalid(
                "churn.model.horizon",
                format!(
                    "the model was trained for {}, but churn.horizon is {}: they must be equal",
                    humantime::format_duration(self.horizon),
                    humantime::format_duration(horizon)
                ),
            ));
        }
        let n = PURCHASE_FEATURES.len();
        for (key, values) in [("mean", &self.mean), ("scale", &self.scale), ("coefficients", &self.coefficients)] {
            if values.len() != n {
                return Err(invalid(
                    format!("churn.model.{key}"),
                    format!("needs one number per feature ({n}), has {}", values.len()),
                ));
            }
            if !values.iter().all(|v| v.is_finite()) {
                return Err(invalid(format!("churn.model.{key}"), "must be finite numbers"));
            }
        }
        if !self.scale.iter().all(|s| *s > 0.0) {
            return Err(invalid("churn.model.scale", "must be positive"));
        }
        if !self.intercept.is_finite() {
            return Err(invalid("churn.model.intercept", "must be a finite number"));
        }
        match &self.calibration {
            CalibrationConfig::Platt { a, b } => {
                if !(a.is_finite() && *a > 0.0 && b.is_finite()) {
                    return Err(invalid(
                        "churn.model.calibration",
                        "platt needs a finite a > 0 (a negative slope reverses the ranking) and a finite b",
                    ));
                }
            }
            CalibrationConfig::Isotonic { logits, probabilities } => {
                let ok = !logits.is_empty()
                    && logits.len() == probabilities.len()
                    && logits.iter().all(|x| x.is_finite())
                    && logits.windows(2).all(|w| w[0] < w[1])
                    && probabilities.iter().all(|p| (0.0..=1.0).contains(p))
                    && probabilities.windows(2).all(|w| w[0] <= w[1]);
                if !ok {
                    return Err(invalid(
                        "churn.model.calibration",
                        "isotonic needs as many probabilities as logits, logits strictly increasing, \
                         probabilities non-decreasing from 0 to 1",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::cmd::fit::propensity::model_toml;
    use crate::config::{CalibrationConfig, Config};
    use crate::engine::propensity::test_model;

    fn model_text() -> String {
        model_toml(&test_model(-2.0, 0.5, -1.0, CalibrationConfig::Platt { a: 1.2, b: -0.3 }))
    }

    /// The error loading `text`, which must name every one of `keys`.
    fn refused(text: &str, keys: &[&str]) {
        let err = Config::from_toml(text).expect_err(text).to_string();
        for key in keys {
            assert!(err.contains(key), "{key:?} not in {err}");
        }
    }

    #[test]
    fn the_table_fit_prints_loads_back_as_the_same_model() {
        let model = test_model(-2.0, 0.5, -1.0, CalibrationConfig::Platt { a: 1.2, b: -0.3 });
        let c = Config::from_toml(&model_toml(&model)).unwrap();
        assert_eq!(c.churn.model, Some(model));
        let iso = CalibrationConfig::Isotonic { logits: vec![-1.0, 0.5], probabilities: vec![0.05, 0.4] };
        let model = test_model(1.0, 0.0, 0.0, iso);
        assert_eq!(Config::from_toml(&model_toml(&model)).unwrap().churn.model, Some(model));
    }

    #[test]
    fn a_model_that_does_not_match_this_version_is_refused_naming_the_key() {
        let text = model_text();
        // Trained on other signals (a renamed, a missing feature): refit.
        refused(&text.replace("\"log1p_idle_days\"", "\"idle_days\""), &["churn.model.features", "refit"]);
        refused(&text.replace("\"stage_value_creation\"]", "]"), &["churn.model.features"]);
        // For another horizon than churn.horizon.
        refused(&text.replace("horizon = \"90days\"", "horizon = \"30days\""), &["churn.model.horizon", "30days"]);
        // Inconsistent in itself.
        refused(&text.replace("coefficients = [", "coefficients = [1.0, "), &["churn.model.coefficients", "20"]);
        refused(&text.replace("scale = [2.0", "scale = [0.0"), &["churn.model.scale", "positive"]);
        refused(&text.replace("a = 1.2", "a = -1.2"), &["churn.model.calibration", "a > 0"]);
        let iso = model_toml(&test_model(
            1.0,
            0.0,
            0.0,
            CalibrationConfig::Isotonic { logits: vec![0.0, 1.0], probabilities: vec![0.5, 0.2] },
        ));
        refused(&iso, &["churn.model.calibration", "non-decreasing"]);
        refused(&format!("{text}\n[churn.model.extra]\nx = 1\n"), &["extra"]);
        // The probability's own keys.
        refused("[churn]\nhealth_from = \"model\"\n", &["churn.health_from", "[churn.model]"]);
        refused("[churn]\nhorizon = \"45days\"\n", &["churn.horizon", "90"]);
        refused("[churn]\np_purchase_dormant = 0.5\n", &["churn.p_purchase_dormant", "churn.p_purchase_at_risk"]);
        refused("[churn]\np_purchase_at_risk = 1.5\n", &["churn.p_purchase_at_risk", "probability"]);
        // A 30-day model with a 30-day horizon is fine.
        let thirty = text.replace("horizon = \"90days\"", "horizon = \"30days\"");
        assert!(
            Config::from_toml(&format!("[churn]\nhorizon = \"30days\"\nhealth_from = \"model\"\n{thirty}")).is_ok()
        );
    }
}
