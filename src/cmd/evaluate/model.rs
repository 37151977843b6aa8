//! The learned purchase probability judged on a later period: at cut-offs
//! from the calibration end (every `--cutoff-every`, while a whole horizon
//! after them is observed), each customer's `p_purchase` against whether
//! they bought within the horizon, beside the single signals it is built
//! from, on the same customers and the same outcome.

use serde::Serialize;

use super::probability::{Bin, brier, expected_calibration_error, lift, log_loss, reliability};
use super::roc::roc_auc;
use crate::clock::format_time;
use crate::engine::Engine;
use crate::engine::event::{DAY_MS, Event};
use crate::history::ReplayError;
use crate::history::cutoffs::{CutoffOptions, Signal, examples_at_cutoffs};

/// How the learned probability did (`purchase_model` in the report).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelReport {
    /// The output field judged, e.g. `p_purchase_90d`.
    pub field: &'static str,
    /// Its horizon, days: the outcome is a purchase within it after each
    /// cut-off.
    pub horizon_days: u32,
    /// The cut-offs judged (RFC 3339).
    pub cutoffs: Vec<String>,
    /// The model's `training.holdout_end`: no later event was used to fit it.
    pub trained_until: String,
    /// Whether a judged cut-off is before `trained_until`, so that part of
    /// its outcome was seen in training: the measures then flatter the
    /// model. Judge on cut-offs at or after it.
    pub overlaps_training: bool,
    /// (customer, cut-off) pairs judged.
    pub examples: usize,
    /// Of them, those that bought within the horizon.
    pub purchased: usize,
    /// The learned probability's measures.
    pub p_purchase: ProbabilityMeasures,
    /// Brier score of always predicting the observed purchase rate: what
    /// the probability must beat to be informative.
    pub base_rate_brier: f64,
    /// Log loss of always predicting the observed purchase rate.
    pub base_rate_log_loss: f64,
    /// The single signals, ranking the same customers for the same outcome.
    pub signals: Vec<SignalMeasures>,
    /// Predicted deciles against the observed rate (`reliability.svg`).
    pub reliability: Vec<Bin>,
    /// The measures at each cut-off alone.
    pub by_cutoff: Vec<CutoffMeasures>,
}

/// Measures of a probability.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProbabilityMeasures {
    /// Area under the ROC curve (0.5 is chance).
    pub roc_auc: Option<f64>,
    /// Mean squared error (lower is better).
    pub brier: Option<f64>,
    /// Mean negative log-likelihood, nats (lower is better).
    pub log_loss: Option<f64>,
    /// Expected calibration error over deciles.
    pub expected_calibration_error: Option<f64>,
    /// Purchase rate of the top 10 % over the overall rate.
    pub lift_10: Option<f64>,
    /// Purchase rate of the top 20 % over the overall rate.
    pub lift_20: Option<f64>,
}

/// Ranking measures of a single signal.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SignalMeasures {
    /// `score`, `p_alive`, `expected_purchases` (within the horizon) or
    /// `recency` (minus idle days).
    pub name: &'static str,
    /// Area under the ROC curve.
    pub roc_auc: Option<f64>,
    /// Lift at 10 %.
    pub lift_10: Option<f64>,
    /// Lift at 20 %.
    pub lift_20: Option<f64>,
}

/// One cut-off's measures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CutoffMeasures {
    /// The cut-off (RFC 3339).
    pub cutoff: String,
    /// Customers judged.
    pub examples: usize,
    /// Of them, those that bought within the horizon.
    pub purchased: usize,
    /// The probability's ROC area.
    pub roc_auc: Option<f64>,
    /// Its expected calibration error over deciles.
    pub expected_calibration_error: Option<f64>,
}

/// The cut-offs judged: from `t1` every `every` ms (just `t1` without),
/// while the horizon after them ends by `t2`.
pub fn evaluation_cutoffs(t1: i64, t2: i64, horizon_ms: i64, every: Option<i64>) -> Vec<i64> {
    let step = every.unwrap_or(i64::MAX).max(1);
    std::iter::successors(Some(t1), |c| c.checked_add(step))
        .take_while(|c| c.checked_add(horizon_ms).is_some_and(|end| end <= t2))
        .collect()
}

/// Judges `engine`'s purchase model on `events` (sorted) at `cutoffs`.
/// `Ok(Err(why))` when it cannot be judged here (no model; no cut-off with
/// a whole horizon; one outcome only).
pub fn judge_model(
    engine: &Engine,
    events: &[Event<'_>],
    cutoffs: &[i64],
    trained_until: &str,
    sweep_every_ms: i64,
) -> Result<Result<ModelReport, String>, ReplayError> {
    let Some(model) = &engine.rules().churn.purchase_model else {
        return Ok(Err("no [churn.model] in the configuration".into()));
    };
    let horizon = model.horizon();
    let horizon_ms = i64::from(horizon.days()) * DAY_MS;
    if cutoffs.is_empty() {
        return Ok(Err(format!(
            "the holdout is shorter than the model's {}-day horizon: no cut-off from the calibration end has its \
             whole horizon observed",
            horizon.days()
        )));
    }
    let opts = CutoffOptions { cutoffs: cutoffs.to_vec(), horizon_ms, sweep_every_ms, keep: 1.0 };
    let examples = examples_at_cutoffs(engine, events, &opts)?;
    let bought: Vec<bool> = examples.iter().map(|e| e.bought).collect();
    let purchased = bought.iter().filter(|b| **b).count();
    if purchased == 0 || purchased == examples.len() {
        return Ok(Err(format!(
            "{purchased} of {} customers bought within the horizon: both outcomes are needed to judge a probability",
            examples.len()
        )));
    }
    let p: Vec<f64> = examples.iter().map(|e| model.probability(&e.features)).collect();
    let measures = |p: &[f64], y: &[bool]| ProbabilityMeasures {
        roc_auc: roc_auc(p, y),
        brier: brier(p, y),
        log_loss: log_loss(p, y),
        expected_calibration_error: expected_calibration_error(&reliability(p, y, 10)),
        lift_10: lift(p, y, 0.1),
        lift_20: lift(p, y, 0.2),
    };
    let signals = Signal::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let v: Vec<f64> = examples.iter().map(|e| e.signals[i]).collect();
            SignalMeasures {
                name: s.name(),
                roc_auc: roc_auc(&v, &bought),
                lift_10: lift(&v, &bought, 0.1),
                lift_20: lift(&v, &bought, 0.2),
            }
        })
        .collect();
    let by_cutoff = cutoffs
        .iter()
        .map(|c| {
            let idx: Vec<usize> = (0..examples.len()).filter(|i| examples[*i].cutoff == *c).collect();
            let (p, y): (Vec<f64>, Vec<bool>) = idx.iter().map(|i| (p[*i], bought[*i])).unzip();
            CutoffMeasures {
                cutoff: format_time(*c),
                examples: y.len(),
                purchased: y.iter().filter(|b| **b).count(),
                roc_auc: roc_auc(&p, &y),
                expected_calibration_error: expected_calibration_error(&reliability(&p, &y, 10)),
            }
        })
        .collect();
    let rate = purchased as f64 / examples.len() as f64;
    let trained_until_ms = crate::clock::parse_time(trained_until).ok();
    Ok(Ok(ModelReport {
        field: horizon.field(),
        horizon_days: horizon.days(),
        cutoffs: cutoffs.iter().map(|c| format_time(*c)).collect(),
        trained_until: trained_until.to_string(),
        overlaps_training: trained_until_ms.is_none_or(|t| cutoffs.iter().any(|c| *c < t)),
        examples: examples.len(),
        purchased,
        p_purchase: measures(&p, &bought),
        base_rate_brier: rate * (1.0 - rate),
        base_rate_log_loss: -(rate * rate.ln() + (1.0 - rate) * (1.0 - rate).ln()),
        signals,
        reliability: reliability(&p, &bought, 10),
        by_cutoff,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoffs_run_from_the_calibration_end_while_a_horizon_fits() {
        let d = DAY_MS;
        assert_eq!(evaluation_cutoffs(0, 100 * d, 90 * d, None), vec![0]);
        assert_eq!(evaluation_cutoffs(0, 110 * d, 90 * d, Some(7 * d)), vec![0, 7 * d, 14 * d]);
        assert!(evaluation_cutoffs(0, 89 * d, 90 * d, Some(7 * d)).is_empty());
    }
}
