//! `--suggest`: the `[churn]` dormant thresholds with the best F1 of
//! "dormant predicts no purchase in the holdout".

use serde::Serialize;

use super::outcomes::Judged;
use super::roc::{Classification, classify};
use crate::config::{ChurnConfig, HealthFrom};
use crate::engine::churn::{ChurnRules, Health, Signals};

/// The holdout must be at least this many days for `--suggest` (and at
/// least `churn.dormant_min_idle`): a shorter one cannot tell a customer who
/// left from one between purchases.
pub const SUGGEST_MIN_HOLDOUT_DAYS: f64 = 30.0;
/// `--suggest` needs at least this many customers judged ...
pub const SUGGEST_MIN_CUSTOMERS: usize = 200;
/// ... and at least this many of them in each outcome (bought in the
/// holdout, did not).
pub const SUGGEST_MIN_PER_OUTCOME: usize = 20;

/// The `--suggest` result: the best dormant thresholds found and the
/// metric before and after.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Suggestion {
    /// The metric searched: F1 of "dormant predicts no purchase".
    pub metric: &'static str,
    /// Its value with the configured thresholds.
    pub before: Classification,
    /// Its value with the suggested thresholds.
    pub after: Classification,
    /// `[churn] p_alive_at_risk` suggested.
    pub p_alive_at_risk: f64,
    /// `[churn] p_alive_dormant` suggested.
    pub p_alive_dormant: f64,
    /// `[churn] idle_at_risk` suggested.
    pub idle_at_risk: f64,
    /// `[churn] idle_dormant` suggested.
    pub idle_dormant: f64,
    /// `[churn] p_purchase_at_risk` suggested, when health comes from the
    /// model (then the other thresholds are left as they are).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_purchase_at_risk: Option<f64>,
    /// `[churn] p_purchase_dormant` suggested, likewise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_purchase_dormant: Option<f64>,
    /// Threshold combinations tried.
    pub candidates: usize,
    /// The `[churn]` table to paste into engage.toml.
    pub config: String,
}

/// Why `--suggest` cannot judge thresholds on this holdout, if it cannot.
pub fn suggest_refusal(judged: &[Judged], holdout_days: f64, churn: &ChurnConfig) -> Option<String> {
    let min_days = SUGGEST_MIN_HOLDOUT_DAYS.max(churn.dormant_min_idle.as_secs_f64() / 86_400.0);
    let bought = judged.iter().filter(|j| j.purchased()).count();
    let not = judged.len() - bought;
    if holdout_days < min_days {
        Some(format!(
            "the holdout is {holdout_days} days; at least {min_days} (and churn.dormant_min_idle) are needed \
             to tell a customer who left from one between purchases"
        ))
    } else if judged.len() < SUGGEST_MIN_CUSTOMERS {
        Some(format!(
            "{} customers were seen by the calibration end; at least {SUGGEST_MIN_CUSTOMERS} are needed",
            judged.len()
        ))
    } else if bought.min(not) < SUGGEST_MIN_PER_OUTCOME {
        Some(format!(
            "{bought} customers bought in the holdout and {not} did not; at least {SUGGEST_MIN_PER_OUTCOME} of \
             each are needed"
        ))
    } else {
        None
    }
}

/// P(alive) dormant thresholds tried by [`suggest`] (0 turns the signal off).
const P_ALIVE_GRID: [f64; 16] = [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9];
/// Learned-probability dormant thresholds tried by [`suggest`] when health
/// comes from the model.
const P_PURCHASE_GRID: [f64; 15] = [0.0, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6];
/// Idle-ratio dormant thresholds tried by [`suggest`].
const IDLE_GRID: [f64; 14] = [1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 15.0, 20.0, 30.0];

/// Whether the customer would be `dormant` at T1 under `rules`. Dormancy
/// depends only on P(alive), idle time and cadence (the score drop can only
/// make a customer `at_risk`), or with health from the model on the learned
/// probability and the same overdue gate, all in the state at T1.
fn dormant_under(rules: &ChurnRules, j: &Judged) -> bool {
    let signals = Signals {
        p_alive: j.p_alive,
        idle_days: j.idle_days,
        cadence_days: j.cadence_days,
        score: j.score,
        peak: 0.0,
        p_purchase: j.p_purchase.unwrap_or(f64::NAN),
    };
    rules.assess(&signals).0 == Health::Dormant
}

/// `--suggest`: searches `p_alive_dormant` × `idle_dormant` (or, with
/// `churn.health_from = "model"`, `p_purchase_dormant`) on a fixed grid
/// for the best F1 of "dormant predicts no purchase in the holdout", each
/// customer's health at T1 reassessed from their signals at T1. The
/// `at_risk` thresholds do not change that metric; they move only as far
/// as needed to keep the config valid (`p_alive_at_risk ≥ p_alive_dormant`,
/// `overdue_gate ≤ idle_at_risk ≤ idle_dormant`). Ties keep the candidate
/// closest to the current thresholds. The F1 is measured on the holdout
/// used to choose, so it flatters the suggestion: check it on a later one.
pub fn suggest(judged: &[Judged], churn: &ChurnConfig) -> Suggestion {
    let no_purchase: Vec<bool> = judged.iter().map(|j| !j.purchased()).collect();
    let metric = |c: &ChurnConfig| {
        let rules = ChurnRules::new(c);
        classify(&judged.iter().map(|j| dormant_under(&rules, j)).collect::<Vec<_>>(), &no_purchase)
    };
    let from_model = churn.health_from == HealthFrom::Model && churn.model.is_some();
    let mut grid = Vec::new();
    if from_model {
        for p in P_PURCHASE_GRID {
            let mut c = churn.clone();
            c.p_purchase_dormant = p;
            c.p_purchase_at_risk = c.p_purchase_at_risk.max(p);
            grid.push(c);
        }
    } else {
        for p in P_ALIVE_GRID {
            for idle in IDLE_GRID {
                let mut c = churn.clone();
                c.p_alive_dormant = p;
                c.p_alive_at_risk = c.p_alive_at_risk.max(p);
                c.idle_dormant = idle;
                c.idle_at_risk = c.idle_at_risk.min(idle).max(c.overdue_gate);
                grid.push(c);
            }
        }
    }
    let distance = |c: &ChurnConfig| {
        if from_model {
            (c.p_purchase_dormant - churn.p_purchase_dormant).abs()
        } else {
            (c.p_alive_dormant - churn.p_alive_dormant).abs() + (c.idle_dormant / churn.idle_dormant).ln().abs()
        }
    };
    let before = metric(churn);
    let mut best = (churn.clone(), before.clone());
    let mut candidates = 0;
    for c in grid {
        if c.validate().is_err() {
            continue;
        }
        candidates += 1;
        let m = metric(&c);
        let (f, best_f) = (m.f1.unwrap_or(-1.0), best.1.f1.unwrap_or(-1.0));
        if f > best_f + 1e-12 || ((f - best_f).abs() <= 1e-12 && distance(&c) < distance(&best.0)) {
            best = (c, m);
        }
    }
    let (c, after) = best;
    let thresholds = if from_model {
        format!("p_purchase_at_risk = {}\np_purchase_dormant = {}\n", c.p_purchase_at_risk, c.p_purchase_dormant)
    } else {
        format!(
            "p_alive_at_risk = {}\np_alive_dormant = {}\nidle_at_risk = {}\nidle_dormant = {}\n",
            c.p_alive_at_risk, c.p_alive_dormant, c.idle_at_risk, c.idle_dormant
        )
    };
    let config = format!(
        "[churn]\n# F1 of \"dormant predicts no purchase\": {:.4} -> {:.4} on the holdout\n{thresholds}",
        before.f1.unwrap_or(0.0),
        after.f1.unwrap_or(0.0),
    );
    Suggestion {
        metric: "f1 of dormant as a prediction of no purchase in the holdout",
        before,
        after,
        p_alive_at_risk: c.p_alive_at_risk,
        p_alive_dormant: c.p_alive_dormant,
        idle_at_risk: c.idle_at_risk,
        idle_dormant: c.idle_dormant,
        p_purchase_at_risk: from_model.then_some(c.p_purchase_at_risk),
        p_purchase_dormant: from_model.then_some(c.p_purchase_dormant),
        candidates,
        config,
    }
}
