//! The learned purchase probability (docs/model.md "The learned purchase
//! probability"): P(purchase within `churn.horizon`), a logistic regression
//! over what the engine already knows of a customer, calibrated, as
//! `engage fit --holdout-end` learned it from the user's own history.
//!
//! Nothing is stored per customer: the features are read from the state
//! and its [`Snapshot`] when a score change is published (or health is
//! assessed from the model), so the 128-byte state is untouched. The
//! features are computed here and only here, for training (`engage fit`),
//! judging (`engage evaluate`) and live use alike, so the model always sees
//! what it was trained on.

use crate::config::{CalibrationConfig, PurchaseModelConfig};
use crate::engine::Snapshot;
use crate::engine::lifecycle::Stage;
use crate::engine::state::CustomerState;
use crate::vocab::{DIMENSIONS, Horizon, PURCHASE_FEATURE_COUNT, PURCHASE_FEATURE_DIMENSIONS};

/// Added to the expected purchases before their logarithm: for rare
/// buyers P(purchase) is about the expectation, so its log-odds are about
/// its logarithm, down to this floor (a customer who never bought is at
/// the floor, and `has_purchased` sets them apart).
const EXPECTED_PURCHASES_FLOOR: f64 = 0.01;

/// One customer's features at one moment, in
/// [`crate::vocab::PURCHASE_FEATURES`] order.
pub type Features = [f64; PURCHASE_FEATURE_COUNT];

/// The features of a customer at `snap.at`, from the state, its snapshot
/// (P(alive) computed) and the expected purchase days in the next 90 days
/// (None before the first purchase). The transforms are those the feature
/// names say: `log1p` of counts and durations, whose effect on the odds is
/// closer to linear in the log; 0–1 for dimensions, score and P(alive).
pub fn features(state: &CustomerState, snap: &Snapshot, expected_purchases_90d: Option<f64>) -> Features {
    let s = &snap.signals;
    let mut f = [0.0; PURCHASE_FEATURE_COUNT];
    f[0] = s.idle_days.ln_1p();
    f[1] = (s.idle_days / s.cadence_days).ln_1p();
    f[2] = s.cadence_days.ln_1p();
    f[3] = f64::from(state.active_days).ln_1p();
    f[4] = (crate::engine::event::ms_to_days(snap.at - state.first_seen).max(0.0)).ln_1p();
    if let Some(p) = snap.purchases {
        f[5] = 1.0;
        f[6] = f64::from(p.repeat_purchases).ln_1p();
        f[7] = (p.age_days - p.recency_days).max(0.0).ln_1p();
        f[8] = p.age_days.ln_1p();
    }
    for d in 0..DIMENSIONS {
        f[PURCHASE_FEATURE_DIMENSIONS + d] = snap.dimensions[d] / 100.0;
    }
    const AFTER_DIMENSIONS: usize = PURCHASE_FEATURE_DIMENSIONS + DIMENSIONS;
    // Score, P(alive), expected purchases and three stages follow.
    const _: () = assert!(PURCHASE_FEATURE_COUNT == AFTER_DIMENSIONS + 6, "features and their names disagree");
    f[AFTER_DIMENSIONS] = snap.score / 100.0;
    f[AFTER_DIMENSIONS + 1] = s.p_alive;
    f[AFTER_DIMENSIONS + 2] = (expected_purchases_90d.unwrap_or(0.0) + EXPECTED_PURCHASES_FLOOR).ln();
    let stage = match snap.stage {
        Stage::Initiation => None,
        Stage::Integration => Some(0),
        Stage::Intelligence => Some(1),
        Stage::ValueCreation => Some(2),
    };
    if let Some(i) = stage {
        f[AFTER_DIMENSIONS + 3 + i] = 1.0;
    }
    f
}

/// A compiled `[churn.model]`: the standardisation folded into the weights,
/// so an evaluation is one dot product and the calibration.
#[derive(Clone, Debug)]
pub struct PurchaseModel {
    horizon: Horizon,
    weights: Features,
    intercept: f64,
    calibration: Calibration,
}

#[derive(Clone, Debug)]
enum Calibration {
    Platt { a: f64, b: f64 },
    Isotonic { logits: Box<[f64]>, probabilities: Box<[f64]> },
}

impl PurchaseModel {
    /// Compiles a validated model for `horizon` (`churn.horizon`).
    pub fn new(c: &PurchaseModelConfig, horizon: Horizon) -> PurchaseModel {
        let mut weights = [0.0; PURCHASE_FEATURE_COUNT];
        let mut intercept = c.intercept;
        for (i, w) in weights.iter_mut().enumerate() {
            // (f − mean) / scale · w = f · (w / scale) − mean · w / scale.
            *w = c.coefficients[i] / c.scale[i];
            intercept -= c.mean[i] * *w;
        }
        let calibration = match &c.calibration {
            CalibrationConfig::Platt { a, b } => Calibration::Platt { a: *a, b: *b },
            CalibrationConfig::Isotonic { logits, probabilities } => Calibration::Isotonic {
                logits: logits.clone().into_boxed_slice(),
                probabilities: probabilities.clone().into_boxed_slice(),
            },
        };
        PurchaseModel { horizon, weights, intercept, calibration }
    }

    /// The horizon it predicts a purchase within.
    pub fn horizon(&self) -> Horizon {
        self.horizon
    }

    /// The regression's log-odds, before calibration.
    pub fn logit(&self, f: &Features) -> f64 {
        self.intercept + self.weights.iter().zip(f).map(|(w, x)| w * x).sum::<f64>()
    }

    /// The calibrated probability of a purchase within the horizon.
    pub fn probability(&self, f: &Features) -> f64 {
        self.calibrate(self.logit(f))
    }

    /// The calibration: log-odds to probability.
    pub fn calibrate(&self, z: f64) -> f64 {
        match &self.calibration {
            Calibration::Platt { a, b } => sigmoid(a * z + b),
            Calibration::Isotonic { logits, probabilities } => interpolate(logits, probabilities, z),
        }
    }
}

/// 1 / (1 + e^−z), without overflow either way.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// The piecewise-linear curve through (`xs`, `ys`) at `x`, flat beyond the
/// ends (`xs` increasing, non-empty).
pub fn interpolate(xs: &[f64], ys: &[f64], x: f64) -> f64 {
    let i = xs.partition_point(|v| *v <= x);
    if i == 0 {
        return ys[0];
    }
    if i == xs.len() {
        return ys[xs.len() - 1];
    }
    let (x0, x1, y0, y1) = (xs[i - 1], xs[i], ys[i - 1], ys[i]);
    y0 + (y1 - y0) * (x - x0) / (x1 - x0)
}

/// A model for tests: features standardised with mean 1 and scale 2, the
/// given weights on `log1p_idle_days` and `p_alive`, 90 days.
#[cfg(test)]
pub(crate) fn test_model(
    idle: f64,
    p_alive: f64,
    intercept: f64,
    calibration: CalibrationConfig,
) -> PurchaseModelConfig {
    let n = PURCHASE_FEATURE_COUNT;
    let mut coefficients = vec![0.0; n];
    coefficients[0] = idle;
    coefficients[15] = p_alive;
    PurchaseModelConfig {
        horizon: std::time::Duration::from_secs(90 * 86_400),
        features: crate::vocab::PURCHASE_FEATURES.iter().map(|s| s.to_string()).collect(),
        mean: vec![1.0; n],
        scale: vec![2.0; n],
        coefficients,
        intercept,
        calibration,
        training: crate::config::TrainingSummary::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(calibration: CalibrationConfig) -> PurchaseModelConfig {
        test_model(-2.0, 0.5, -1.0, calibration)
    }

    #[test]
    fn folded_weights_give_the_standardised_log_odds() {
        let m = PurchaseModel::new(&config(CalibrationConfig::Platt { a: 1.0, b: 0.0 }), Horizon::Days90);
        let mut f = [1.0; PURCHASE_FEATURE_COUNT];
        // Every feature at its mean: the intercept.
        assert!((m.logit(&f) + 1.0).abs() < 1e-12);
        f[0] = 3.0; // (3 − 1) / 2 = 1 standard deviation: −2.
        f[15] = 5.0; // 2 standard deviations: +1.
        assert!((m.logit(&f) - (-1.0 - 2.0 + 1.0)).abs() < 1e-12);
        assert!((m.probability(&f) - sigmoid(-2.0)).abs() < 1e-12);
    }

    #[test]
    fn calibrations_map_log_odds_to_probabilities() {
        let platt = PurchaseModel::new(&config(CalibrationConfig::Platt { a: 2.0, b: 1.0 }), Horizon::Days90);
        assert!((platt.calibrate(0.0) - sigmoid(1.0)).abs() < 1e-15);
        assert_eq!(sigmoid(-800.0), 0.0);
        assert_eq!(sigmoid(800.0), 1.0);
        let iso = PurchaseModel::new(
            &config(CalibrationConfig::Isotonic { logits: vec![-1.0, 0.0, 2.0], probabilities: vec![0.1, 0.2, 0.6] }),
            Horizon::Days90,
        );
        assert_eq!(iso.calibrate(-5.0), 0.1);
        assert_eq!(iso.calibrate(0.0), 0.2);
        assert!((iso.calibrate(1.0) - 0.4).abs() < 1e-15);
        assert_eq!(iso.calibrate(9.0), 0.6);
    }
}
