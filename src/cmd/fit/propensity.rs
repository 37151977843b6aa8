//! `engage fit --holdout-end T`: learns the purchase probability
//! (docs/model.md "The learned purchase probability") from the user's own
//! history. Cut-offs are rolled back from `T − horizon` every
//! `--cutoff-every`; at each, every customer seen so far is an example
//! (their features as the engine computes them live, against "bought within
//! the horizon after it"), so no label reaches past `T`. The earlier
//! cut-offs train an L2-regularised logistic regression; the latest ones,
//! which it does not see, choose the penalty and fit the calibration, since
//! they are closest to the future the model will face.

use serde::Serialize;

use super::logistic::{Logistic, LogisticError, fit_isotonic, fit_logistic, fit_platt};
use crate::clock::format_time;
use crate::cmd::evaluate::{brier, expected_calibration_error, reliability, roc_auc};
use crate::config::{CalibrationConfig, Config, PurchaseModelConfig, TrainingSummary};
use crate::engine::event::{DAY_MS, Event};
use crate::engine::propensity::sigmoid;
use crate::engine::{Engine, Rules};
use crate::history::ReplayError;
use crate::history::cutoffs::{CutoffOptions, Example, examples_at_cutoffs};
use crate::vocab::{PURCHASE_FEATURE_COUNT, PURCHASE_FEATURES};

/// Fewest cut-offs a model is learned from: at least two to train on and
/// one to calibrate on.
pub const MIN_CUTOFFS: usize = 3;
/// Fewest examples of each outcome (bought within the horizon, did not) in
/// the training cut-offs and in the calibration cut-offs.
pub const MIN_PER_OUTCOME: usize = 20;
/// Share of the cut-offs (the latest ones, at least one) held out for the
/// penalty and the calibration.
const CALIBRATION_SHARE: f64 = 0.3;
/// L2 penalties tried, strongest first (each fit starts from the previous).
const L2_GRID: [f64; 6] = [10_000.0, 1000.0, 100.0, 10.0, 1.0, 0.1];
/// Points of an isotonic calibration, at most.
const ISOTONIC_POINTS: usize = 50;

/// How the regression's log-odds become a probability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum CalibrationMethod {
    /// Platt scaling: a logistic curve (two parameters; robust with few
    /// calibration examples).
    Platt,
    /// Isotonic regression: any non-decreasing curve (needs many
    /// calibration examples).
    Isotonic,
}

/// What `engage fit --holdout-end` learns from.
#[derive(Clone, Debug)]
pub struct ModelOptions {
    /// No event after this (epoch ms) is used: the last cut-off's horizon
    /// ends here.
    pub holdout_end: i64,
    /// Time between cut-offs, ms.
    pub cutoff_every_ms: i64,
    /// Cut-offs taken at most (the latest ones).
    pub max_cutoffs: usize,
    /// Examples kept at most: customers are sampled (by a hash of their
    /// id) to stay under it.
    pub max_examples: usize,
    /// The calibration.
    pub calibration: CalibrationMethod,
    /// Shuffle the labels with this seed before learning: a check that
    /// `fit` finds no skill where there is none (it must then refuse).
    pub shuffle_labels: Option<u64>,
    /// Event time between churn sweeps while rolling, ms.
    pub sweep_every_ms: i64,
}

/// Why no model could be learned. Not retryable with the same data.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The history could not be read.
    #[error(transparent)]
    Read(#[from] ReplayError),
    /// Not enough time between the first event and `--holdout-end`.
    #[error(
        "too little history: from the first event ({first}) to --holdout-end ({holdout_end}) there is room for \
         {cutoffs} cut-off(s) every {every_days} days with a {horizon_days}-day horizon; at least {MIN_CUTOFFS} are \
         needed, so the history must span at least {needed_days} days (or use a shorter --cutoff-every)"
    )]
    TooLittleHistory {
        /// The first event's time.
        first: String,
        /// `--holdout-end`.
        holdout_end: String,
        /// Cut-offs that fit.
        cutoffs: usize,
        /// `--cutoff-every`, days.
        every_days: f64,
        /// The horizon, days.
        horizon_days: u32,
        /// The span needed, days.
        needed_days: f64,
    },
    /// Every example has the same outcome.
    #[error(
        "one class only: {bought} of {examples} examples (customers at {cutoffs} cut-offs) bought within the \
         {horizon_days}-day horizon; a probability of buying cannot be learned without both outcomes"
    )]
    OneClass {
        /// Examples taken.
        examples: usize,
        /// Cut-offs taken.
        cutoffs: usize,
        /// Examples that bought (0, or all of them).
        bought: usize,
        /// The horizon, days.
        horizon_days: u32,
    },
    /// One part of the cut-offs has too few examples of an outcome.
    #[error(
        "too little history: the {part} cut-offs have {bought} examples that bought within the horizon and \
         {not} that did not; at least {MIN_PER_OUTCOME} of each are needed (a longer history, or more customers)"
    )]
    TooFewOfAnOutcome {
        /// "training" or "calibration".
        part: &'static str,
        /// Examples that bought.
        bought: usize,
        /// Examples that did not.
        not: usize,
    },
    /// A feature is not a finite number for some customer.
    #[error("degenerate feature {feature}: not a finite number for a customer at cut-off {cutoff}")]
    NonFinite {
        /// The feature.
        feature: &'static str,
        /// The cut-off.
        cutoff: String,
    },
    /// No feature varies across the training examples.
    #[error("degenerate features: none of the {PURCHASE_FEATURE_COUNT} features varies over the training examples")]
    NothingVaries,
    /// The regression learned on the earlier cut-offs does not rank the
    /// later ones better than chance (its ROC area is within three
    /// standard errors of 0.5).
    #[error(
        "no skill: the regression learned on the earlier cut-offs ranks the calibration cut-offs no better than \
         chance (ROC area {auc:.3}); this history gives nothing reliable to learn"
    )]
    NoSkill {
        /// Its ROC area on the calibration cut-offs.
        auc: f64,
    },
    /// The regression did not converge.
    #[error(transparent)]
    Fit(#[from] LogisticError),
}

/// The learned model and how it was chosen.
#[derive(Clone, Debug, Serialize)]
pub struct ModelFit {
    /// The `[churn.model]` table's content.
    #[serde(skip)]
    pub model: PurchaseModelConfig,
    /// Each penalty tried and its calibrated log loss on the calibration
    /// cut-offs (the lowest is chosen).
    pub l2_tried: Vec<(f64, f64)>,
    /// What the model was trained on and how it did on its calibration
    /// cut-offs (also in the table).
    pub training: TrainingSummary,
    /// Each feature's weight per standard deviation, largest first: what
    /// the model leans on (correlations in this history, not causes).
    pub weights: Vec<(&'static str, f64)>,
}

/// The cut-offs for a history whose first event is at `first` and whose
/// labels must end by `holdout_end`: every `every` ms back from
/// `holdout_end − horizon`, at most `max`, none earlier than one `every`
/// after `first`; ascending.
pub fn cutoff_schedule(first: i64, holdout_end: i64, horizon_ms: i64, every: i64, max: usize) -> Vec<i64> {
    let mut cutoffs: Vec<i64> = (0..max as i64)
        .map(|k| holdout_end - horizon_ms - k * every.max(1))
        .take_while(|c| *c >= first + every)
        .collect();
    cutoffs.reverse();
    cutoffs
}

/// Learns the purchase probability for `config`'s `churn.horizon` from
/// `events` (sorted; those after `holdout_end` are ignored), with the
/// engine `config` describes: its scoring and its BG/NBD parameters make
/// the features, so the model must be used with the same.
pub fn fit_model(config: &Config, events: &[Event<'_>], opts: &ModelOptions) -> Result<ModelFit, ModelError> {
    let horizon = config.churn.horizon_kind().unwrap_or(crate::vocab::Horizon::Days90);
    let horizon_ms = i64::from(horizon.days()) * DAY_MS;
    let events = &events[..events.partition_point(|e| e.ts_ms <= opts.holdout_end)];
    let first = events.first().map_or(opts.holdout_end, |e| e.ts_ms);
    let cutoffs = cutoff_schedule(first, opts.holdout_end, horizon_ms, opts.cutoff_every_ms, opts.max_cutoffs);
    if cutoffs.len() < MIN_CUTOFFS {
        let every_days = opts.cutoff_every_ms as f64 / DAY_MS as f64;
        return Err(ModelError::TooLittleHistory {
            first: format_time(first),
            holdout_end: format_time(opts.holdout_end),
            cutoffs: cutoffs.len(),
            every_days,
            horizon_days: horizon.days(),
            // The earliest of MIN_CUTOFFS cut-offs is one step after the first event.
            needed_days: f64::from(horizon.days()) + every_days * MIN_CUTOFFS as f64,
        });
    }
    let last = cutoffs[cutoffs.len() - 1];
    let customers = {
        let mut ids: Vec<&str> = events.iter().filter(|e| e.ts_ms <= last).map(|e| e.customer_id.as_ref()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    };
    let keep = (opts.max_examples as f64 / (customers.max(1) * cutoffs.len()) as f64).min(1.0);
    let engine = Engine::new(Rules::new(config));
    let cutoff_opts = CutoffOptions { cutoffs: cutoffs.clone(), horizon_ms, sweep_every_ms: opts.sweep_every_ms, keep };
    let mut examples = examples_at_cutoffs(&engine, events, &cutoff_opts)?;
    if let Some(seed) = opts.shuffle_labels {
        shuffle_labels(&mut examples, seed);
    }
    check_finite(&examples)?;
    let bought = examples.iter().filter(|e| e.bought).count();
    if bought == 0 || bought == examples.len() {
        return Err(ModelError::OneClass {
            examples: examples.len(),
            cutoffs: cutoffs.len(),
            bought,
            horizon_days: horizon.days(),
        });
    }
    let calibration_cutoffs = ((cutoffs.len() as f64 * CALIBRATION_SHARE).round() as usize).clamp(1, cutoffs.len() - 2);
    let split = cutoffs[cutoffs.len() - calibration_cutoffs];
    let (train, held): (Vec<&Example>, Vec<&Example>) = examples.iter().partition(|e| e.cutoff < split);
    for (part, set) in [("training", &train), ("calibration", &held)] {
        let bought = set.iter().filter(|e| e.bought).count();
        if bought.min(set.len() - bought) < MIN_PER_OUTCOME {
            return Err(ModelError::TooFewOfAnOutcome { part, bought, not: set.len() - bought });
        }
    }

    let Standardisation { mean, scale, constant } = standardise(&train)?;
    let rows = |set: &[&Example]| -> Vec<Vec<f64>> {
        set.iter().map(|e| e.features.iter().zip(&mean).zip(&scale).map(|((x, m), s)| (x - m) / s).collect()).collect()
    };
    let (train_rows, held_rows) = (rows(&train), rows(&held));
    let train_y: Vec<bool> = train.iter().map(|e| e.bought).collect();
    let held_y: Vec<bool> = held.iter().map(|e| e.bought).collect();

    // The penalty with the lowest calibrated log loss on the held-out cut-offs.
    let mut start: Option<Logistic> = None;
    let mut best: Option<(f64, Logistic, (f64, f64), f64)> = None;
    let mut l2_tried = Vec::new();
    for l2 in L2_GRID {
        let model = fit_logistic(&train_rows, &train_y, l2, start.as_ref())?;
        let z: Vec<f64> = held_rows.iter().map(|r| model.logit(r)).collect();
        let (a, b) = fit_platt(&z, &held_y)?;
        let p: Vec<f64> = z.iter().map(|z| sigmoid(a * z + b)).collect();
        let loss = crate::cmd::evaluate::log_loss(&p, &held_y).unwrap_or(f64::INFINITY);
        l2_tried.push((l2, loss));
        if best.as_ref().is_none_or(|b| loss < b.3) {
            best = Some((l2, model.clone(), (a, b), loss));
        }
        start = Some(model);
    }
    let Some((l2, model, (a, b), _)) = best else { return Err(LogisticError::DidNotConverge.into()) };
    let z: Vec<f64> = held_rows.iter().map(|r| model.logit(r)).collect();
    let auc = roc_auc(&z, &held_y).unwrap_or(0.5);
    if a <= 0.0 || auc - 0.5 <= 3.0 * chance_auc_sd(&held_y) {
        return Err(ModelError::NoSkill { auc });
    }
    let calibration = match opts.calibration {
        CalibrationMethod::Platt => CalibrationConfig::Platt { a, b },
        CalibrationMethod::Isotonic => {
            let (logits, probabilities) = fit_isotonic(&z, &held_y, ISOTONIC_POINTS);
            CalibrationConfig::Isotonic { logits, probabilities }
        }
    };
    let mut config = PurchaseModelConfig {
        horizon: config.churn.horizon,
        features: PURCHASE_FEATURES.iter().map(|s| s.to_string()).collect(),
        mean: mean.to_vec(),
        scale: scale.to_vec(),
        coefficients: model.weights.clone(),
        intercept: model.intercept,
        calibration,
        training: TrainingSummary::default(),
    };
    let compiled = crate::engine::propensity::PurchaseModel::new(&config, horizon);
    let p: Vec<f64> = held.iter().map(|e| compiled.probability(&e.features)).collect();
    config.training = TrainingSummary {
        holdout_end: format_time(opts.holdout_end),
        first_cutoff: format_time(cutoffs[0]),
        last_cutoff: format_time(last),
        cutoffs: cutoffs.len() as u32,
        cutoff_every: std::time::Duration::from_millis(opts.cutoff_every_ms.max(0) as u64),
        calibration_cutoffs: calibration_cutoffs as u32,
        examples: train.len() as u64,
        calibration_examples: held.len() as u64,
        purchase_rate: bought as f64 / examples.len() as f64,
        l2,
        calibration_roc_auc: roc_auc(&p, &held_y).unwrap_or(0.5),
        calibration_brier: brier(&p, &held_y).unwrap_or(0.0),
        calibration_ece: expected_calibration_error(&reliability(&p, &held_y, 10)).unwrap_or(0.0),
        constant_features: PURCHASE_FEATURES
            .iter()
            .zip(&constant)
            .filter(|(_, c)| **c)
            .map(|(f, _)| f.to_string())
            .collect(),
    };
    let mut weights: Vec<(&'static str, f64)> = PURCHASE_FEATURES.iter().copied().zip(model.weights).collect();
    weights.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    Ok(ModelFit { training: config.training.clone(), model: config, l2_tried, weights })
}

/// The standard deviation of the ROC area of a ranking with no skill on
/// `labels` (Hanley & McNeil 1982 at an area of ½):
/// √((n₁ + n₀ + 1) / (12·n₁·n₀)).
fn chance_auc_sd(labels: &[bool]) -> f64 {
    let n1 = labels.iter().filter(|y| **y).count() as f64;
    let n0 = labels.len() as f64 - n1;
    ((n1 + n0 + 1.0) / (12.0 * n1 * n0)).sqrt()
}

/// Refuses examples with a feature that is not a finite number, naming
/// it: the regression would be meaningless (and it would mean a bug in the
/// features, since the engine keeps its state finite).
fn check_finite(examples: &[Example]) -> Result<(), ModelError> {
    for e in examples {
        if let Some(i) = e.features.iter().position(|v| !v.is_finite()) {
            return Err(ModelError::NonFinite { feature: PURCHASE_FEATURES[i], cutoff: format_time(e.cutoff) });
        }
    }
    Ok(())
}

/// How each feature is standardised for the regression.
#[derive(Debug)]
struct Standardisation {
    /// Training means.
    mean: [f64; PURCHASE_FEATURE_COUNT],
    /// Training standard deviations (1 for a constant feature).
    scale: [f64; PURCHASE_FEATURE_COUNT],
    /// Whether the feature never varied in training.
    constant: [bool; PURCHASE_FEATURE_COUNT],
}

/// Each feature's mean and standard deviation over `examples`, and whether
/// it is constant (then its scale is 1 and its mean its value, so its
/// standardised value is exactly 0 and it gets no weight: a history
/// without clickstream, say, has no attention to learn from). Refused
/// when no feature varies at all.
fn standardise(examples: &[&Example]) -> Result<Standardisation, ModelError> {
    let n = examples.len().max(1) as f64;
    let mut mean = [0.0; PURCHASE_FEATURE_COUNT];
    let mut scale = [1.0; PURCHASE_FEATURE_COUNT];
    let mut constant = [false; PURCHASE_FEATURE_COUNT];
    for i in 0..PURCHASE_FEATURE_COUNT {
        let first = examples.first().map_or(0.0, |e| e.features[i]);
        if examples.iter().all(|e| e.features[i] == first) {
            (mean[i], constant[i]) = (first, true);
            continue;
        }
        mean[i] = examples.iter().map(|e| e.features[i]).sum::<f64>() / n;
        let var = examples.iter().map(|e| (e.features[i] - mean[i]).powi(2)).sum::<f64>() / n;
        scale[i] = var.sqrt().max(1e-12);
    }
    if constant.iter().all(|c| *c) {
        return Err(ModelError::NothingVaries);
    }
    Ok(Standardisation { mean, scale, constant })
}

/// Permutes the labels among the examples (Fisher–Yates, seeded).
fn shuffle_labels(examples: &mut [Example], seed: u64) {
    let mut rng = crate::cmd::loadgen::synth::SplitMix64::new(seed);
    let mut labels: Vec<bool> = examples.iter().map(|e| e.bought).collect();
    for i in (1..labels.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        labels.swap(i, j);
    }
    for (e, y) in examples.iter_mut().zip(labels) {
        e.bought = y;
    }
}

/// The `[churn.model]` tables to paste into engage.toml.
pub fn model_toml(m: &PurchaseModelConfig) -> String {
    use std::fmt::Write;
    let list = |v: &[f64]| v.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(", ");
    let names = |v: &[String]| v.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(", ");
    let days = |d: std::time::Duration| format!("\"{}days\"", d.as_secs() / 86_400);
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(s, "[churn.model]");
    let _ = writeln!(s, "horizon = {}", days(m.horizon));
    let _ = writeln!(s, "features = [{}]", names(&m.features));
    let _ = writeln!(s, "mean = [{}]", list(&m.mean));
    let _ = writeln!(s, "scale = [{}]", list(&m.scale));
    let _ = writeln!(s, "coefficients = [{}]", list(&m.coefficients));
    let _ = writeln!(s, "intercept = {:?}", m.intercept);
    let _ = writeln!(s, "\n[churn.model.calibration]");
    match &m.calibration {
        CalibrationConfig::Platt { a, b } => {
            let _ = writeln!(s, "method = \"platt\"\na = {a:?}\nb = {b:?}");
        }
        CalibrationConfig::Isotonic { logits, probabilities } => {
            let _ = writeln!(s, "method = \"isotonic\"\nlogits = [{}]", list(logits));
            let _ = writeln!(s, "probabilities = [{}]", list(probabilities));
        }
    }
    let t = &m.training;
    let _ = writeln!(s, "\n[churn.model.training]");
    let _ = writeln!(s, "holdout_end = {:?}", t.holdout_end);
    let _ = writeln!(s, "first_cutoff = {:?}\nlast_cutoff = {:?}", t.first_cutoff, t.last_cutoff);
    let _ = writeln!(s, "cutoffs = {}\ncutoff_every = {}", t.cutoffs, days(t.cutoff_every));
    let _ = writeln!(s, "calibration_cutoffs = {}", t.calibration_cutoffs);
    let _ = writeln!(s, "examples = {}\ncalibration_examples = {}", t.examples, t.calibration_examples);
    let _ = writeln!(s, "purchase_rate = {:?}\nl2 = {:?}", t.purchase_rate, t.l2);
    let _ = writeln!(s, "calibration_roc_auc = {:?}", t.calibration_roc_auc);
    let _ = writeln!(s, "calibration_brier = {:?}", t.calibration_brier);
    let _ = writeln!(s, "calibration_ece = {:?}", t.calibration_ece);
    let _ = writeln!(s, "constant_features = [{}]", names(&t.constant_features));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::propensity::Features;

    fn example(features: Features, bought: bool) -> Example {
        Example { cutoff: 0, customer: 1, features, signals: [0.0; 4], bought }
    }

    #[test]
    fn degenerate_features_are_refused_naming_the_cause() {
        let mut f = [1.0; PURCHASE_FEATURE_COUNT];
        f[3] = f64::NAN;
        let err = check_finite(&[example([1.0; PURCHASE_FEATURE_COUNT], true), example(f, false)]).unwrap_err();
        assert!(err.to_string().contains("degenerate feature log1p_active_days"), "{err}");
        // Nothing varies: refused; one feature varies: the rest get no weight.
        let same = [example([2.0; PURCHASE_FEATURE_COUNT], true), example([2.0; PURCHASE_FEATURE_COUNT], false)];
        let err = standardise(&same.iter().collect::<Vec<_>>()).unwrap_err();
        assert!(err.to_string().contains("none of the 20 features varies"), "{err}");
        let mut g = [2.0; PURCHASE_FEATURE_COUNT];
        g[0] = 4.0;
        let one = [example([2.0; PURCHASE_FEATURE_COUNT], true), example(g, false)];
        let s = standardise(&one.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!((s.mean[0], s.scale[0], s.constant[0]), (3.0, 1.0, false));
        assert_eq!((s.mean[1], s.scale[1], s.constant[1]), (2.0, 1.0, true));
    }

    #[test]
    fn a_ranking_without_skill_is_within_three_standard_errors_of_a_half() {
        // 100 of each outcome: √(201 / 120 000) = 0.041.
        let labels: Vec<bool> = (0..200).map(|i| i % 2 == 0).collect();
        assert!((chance_auc_sd(&labels) - (201.0f64 / 120_000.0).sqrt()).abs() < 1e-15);
    }

    #[test]
    fn cutoffs_step_back_from_the_last_full_horizon() {
        let day = DAY_MS;
        // History from day 0; labels must end by day 200; 90-day horizon,
        // weekly: the last cut-off is day 110, the first no earlier than day 7.
        let c = cutoff_schedule(0, 200 * day, 90 * day, 7 * day, 100);
        assert_eq!(c.last(), Some(&(110 * day)));
        assert_eq!(c.first(), Some(&(12 * day)));
        assert_eq!(c.len(), 15);
        assert!(c.windows(2).all(|w| w[1] - w[0] == 7 * day));
        // At most `max`, the latest ones.
        assert_eq!(cutoff_schedule(0, 200 * day, 90 * day, 7 * day, 3), vec![96 * day, 103 * day, 110 * day]);
        // Not even one horizon of history: none.
        assert!(cutoff_schedule(0, 80 * day, 90 * day, 7 * day, 100).is_empty());
    }
}
