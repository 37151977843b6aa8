//! `engage evaluate`: how well the engine's state at one time predicted what
//! customers did next, on a purchase history split into a calibration
//! period (up to T1) and a holdout (T1, T2].
//!
//! The engine runs exactly as `engage replay --as-of T1` (its outputs go to
//! `DIR/calibration/`); each customer's state at T1 is then set against
//! their holdout outcome, read from the same files: the distinct UTC days
//! with a purchase in (T1, T2], the net value of the holdout's purchases
//! and refunds, and whether they had any event at all. The report
//! (`DIR/report.json`, also printed) gives repurchase and activity shares by
//! health and stage, precision and recall of the churn classes as
//! predictions of "no purchase in the holdout", ROC areas of four
//! predictors, BG/NBD's calibration/holdout table and aggregate expected
//! against actual purchases and value; SVG plots go beside it. With
//! `suggest`, the `[churn]` dormant thresholds are searched for the best
//! F1 on the holdout ([`suggest`]).
//!
//! Only customers seen by T1 are judged; customers whose first event is in
//! the holdout are counted (`new_in_holdout`) and left out. Days are UTC
//! days, as the engine counts them, so the ends are best given as the end
//! of a day (e.g. `1997-09-30T23:59:59Z`). The input files are read twice
//! (the replay, then the holdout), and held in memory as replay holds them.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::clock::format_time;
use crate::config::{ChurnConfig, Config};
use crate::engine::churn::{ChurnRules, Health, Signals};
use crate::engine::event::{DAY_MS, EventKind};
use crate::replay::{ReplayError, ReplayOptions, ReplaySummary, read_events, read_jsonl, replay};

/// What to evaluate and where to write the results.
#[derive(Clone, Debug)]
pub struct EvaluateOptions {
    /// JSONL event files (both topics' events may be mixed).
    pub inputs: Vec<PathBuf>,
    /// End of the calibration period (T1), epoch ms.
    pub calibration_end: i64,
    /// End of the holdout (T2), epoch ms; default: the last event time.
    pub holdout_end: Option<i64>,
    /// Output directory (created if missing).
    pub out_dir: PathBuf,
    /// Event-time interval between churn sweeps in the calibration replay, ms.
    pub sweep_every_ms: i64,
    /// Also search the `[churn]` dormant thresholds ([`suggest`]).
    pub suggest: bool,
}

/// Why an evaluation could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    /// The input could not be read or the outputs written.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The holdout is empty: T2 is not after T1.
    #[error("the holdout end {holdout_end} is not after the calibration end {calibration_end}")]
    EmptyHoldout {
        /// T1, RFC 3339.
        calibration_end: String,
        /// T2, RFC 3339.
        holdout_end: String,
    },
    /// No customer was seen by the calibration end.
    #[error("no customer has an event by the calibration end {0}; nothing to evaluate")]
    NoCustomers(String),
    /// `--suggest` was asked for but the holdout cannot judge thresholds.
    #[error("--suggest refused: {0}")]
    SuggestRefused(String),
}

/// The holdout must be at least this many days for `--suggest` (and at
/// least `churn.dormant_min_idle`): a shorter one cannot tell a customer who
/// left from one between purchases.
pub const SUGGEST_MIN_HOLDOUT_DAYS: f64 = 30.0;
/// `--suggest` needs at least this many customers judged ...
pub const SUGGEST_MIN_CUSTOMERS: usize = 200;
/// ... and at least this many of them in each outcome (bought in the
/// holdout, did not).
pub const SUGGEST_MIN_PER_OUTCOME: usize = 20;

/// The `evaluate` report: `DIR/report.json`.
#[derive(Debug, Serialize)]
pub struct EvaluateReport {
    /// T1, RFC 3339.
    pub calibration_end: String,
    /// T2, RFC 3339.
    pub holdout_end: String,
    /// Holdout length in whole UTC days (day of T2 − day of T1).
    pub holdout_days: f64,
    /// What the calibration replay did (as `engage replay` reports it).
    pub calibration: ReplaySummary,
    /// Customers judged: those seen by T1.
    pub customers: usize,
    /// Customers whose first event is in the holdout (not judged).
    pub new_in_holdout: usize,
    /// Judged customers who bought in the holdout.
    pub purchased: usize,
    /// Judged customers with any event in the holdout.
    pub active: usize,
    /// Outcomes by health class at T1: `active`, `at_risk`, `dormant`.
    pub by_health: Vec<Group>,
    /// Outcomes by lifecycle stage at T1.
    pub by_stage: Vec<Group>,
    /// Churn classes as predictions of "no purchase in the holdout".
    pub no_purchase_predictions: Predictions,
    /// Area under the ROC curve of each predictor of a holdout purchase.
    pub roc_auc: RocAreas,
    /// BG/NBD's calibration/holdout table: mean expected and actual
    /// holdout purchase days by calibration repeat purchases (x), 7+ last.
    pub calibration_holdout: Vec<FrequencyRow>,
    /// Sums of expected and actual holdout purchases and value.
    pub totals: Totals,
    /// The plots written, file names in the output directory.
    pub plots: Vec<String>,
    /// The `--suggest` result, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggest: Option<Suggestion>,
}

/// Holdout outcomes of one group of customers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Group {
    /// The health class or stage.
    pub name: &'static str,
    /// Customers in the group at T1.
    pub customers: usize,
    /// Of them, customers who bought in the holdout.
    pub purchased: usize,
    /// `purchased / customers` (null for an empty group).
    pub purchase_rate: Option<f64>,
    /// Of them, customers with any event in the holdout.
    pub active: usize,
    /// `active / customers` (null for an empty group).
    pub active_rate: Option<f64>,
}

/// A yes/no prediction judged against the actual outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Classification {
    /// Customers predicted positive.
    pub predicted: usize,
    /// Customers actually positive.
    pub actual: usize,
    /// Predicted and actually positive.
    pub true_positives: usize,
    /// `true_positives / predicted` (null when nothing was predicted).
    pub precision: Option<f64>,
    /// `true_positives / actual` (null when nothing was positive).
    pub recall: Option<f64>,
    /// Harmonic mean of precision and recall (null if either is, 0 if both are 0).
    pub f1: Option<f64>,
}

/// The churn classes as predictions of "no purchase in the holdout".
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Predictions {
    /// Health `at_risk` or `dormant` at T1.
    pub at_risk_or_dormant: Classification,
    /// Health `dormant` at T1.
    pub dormant: Classification,
}

/// ROC areas of predictors of "bought in the holdout" (0.5 is chance).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RocAreas {
    /// The composite score at T1.
    pub score: Option<f64>,
    /// BG/NBD P(alive) at T1.
    pub p_alive: Option<f64>,
    /// BG/NBD expected purchase days over the holdout's length (the
    /// `expected_purchases_90d` model at the holdout horizon; 0 for
    /// customers who never bought).
    pub expected_purchases: Option<f64>,
    /// Plain recency: minus the days since the latest activity at T1.
    pub recency: Option<f64>,
}

/// One row of the calibration/holdout table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FrequencyRow {
    /// Calibration repeat purchase days: "0" … "6", "7+".
    pub frequency: String,
    /// Customers with that frequency.
    pub customers: usize,
    /// Mean BG/NBD expected holdout purchase days.
    pub expected: f64,
    /// Mean actual holdout purchase days.
    pub actual: f64,
}

/// Expected against actual sums over customers who bought by T1 (the
/// models start at the first purchase).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Totals {
    /// Customers summed (bought by T1).
    pub customers: usize,
    /// Sum of BG/NBD expected holdout purchase days.
    pub expected_purchases: f64,
    /// Sum of actual holdout purchase days.
    pub actual_purchases: u64,
    /// Sum of expected holdout value (expected purchases × Gamma-Gamma
    /// expected order value).
    pub expected_value: f64,
    /// Sum of actual holdout value (purchases net of refunds).
    pub actual_value: f64,
}

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
    /// Threshold combinations tried.
    pub candidates: usize,
    /// The `[churn]` table to paste into engage.toml.
    pub config: String,
}

/// One line of the calibration replay's `state.jsonl`, the fields used here.
#[derive(Deserialize)]
struct StateLine {
    customer_id: String,
    score: f64,
    stage: String,
    health: String,
    p_alive: f64,
    cadence_days: f64,
    idle_days: f64,
    repeat_purchases: Option<u32>,
    recency_days: Option<f64>,
    age_days: Option<f64>,
    expected_purchases_90d: Option<f64>,
    expected_value_90d: Option<f64>,
}

/// A customer's holdout outcome.
#[derive(Default)]
struct Outcome {
    purchase_days: HashSet<i64>,
    value: f64,
    active: bool,
}

/// One judged customer: the state at T1 and the holdout outcome; one line
/// of `DIR/customers.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Judged {
    /// The customer.
    pub customer_id: String,
    /// Health at T1.
    pub health: Health,
    /// Lifecycle stage at T1 (its message name).
    pub stage: String,
    /// Score at T1.
    pub score: f64,
    /// P(alive) at T1.
    pub p_alive: f64,
    /// Cadence at T1, days.
    pub cadence_days: f64,
    /// Days since the latest activity at T1.
    pub idle_days: f64,
    /// Calibration repeat purchase days (None: never bought).
    pub x: Option<u32>,
    /// BG/NBD expected purchase days over the holdout (None: never bought).
    pub expected_purchases: Option<f64>,
    /// Expected holdout value (None: never bought).
    pub expected_value: Option<f64>,
    /// Distinct purchase days in the holdout.
    pub holdout_purchases: u32,
    /// Holdout purchases net of refunds.
    pub holdout_value: f64,
    /// Any event in the holdout.
    pub holdout_active: bool,
}

impl Judged {
    /// Bought in the holdout.
    pub fn purchased(&self) -> bool {
        self.holdout_purchases > 0
    }
}

/// Runs an evaluation: the calibration replay, the holdout outcomes, the
/// report and the plots (see the module documentation).
pub fn evaluate(config: &Config, opts: &EvaluateOptions) -> Result<EvaluateReport, EvaluateError> {
    let t1 = opts.calibration_end;
    let calibration_dir = opts.out_dir.join("calibration");
    let calibration = replay(
        config,
        &ReplayOptions {
            inputs: opts.inputs.clone(),
            as_of: Some(t1),
            out_dir: calibration_dir.clone(),
            sweep_every_ms: opts.sweep_every_ms,
        },
    )?;

    let mut counts = ReplaySummary::default();
    let events = read_events(
        &opts.inputs,
        opts.holdout_end,
        &config.input.limits(),
        crate::clock::wall_clock_ms(),
        &mut counts,
        |_| Ok(()),
    )?;
    let t2 = opts.holdout_end.or(events.last().map(|e| e.ts_ms)).unwrap_or(t1);
    if t2 <= t1 {
        return Err(EvaluateError::EmptyHoldout { calibration_end: format_time(t1), holdout_end: format_time(t2) });
    }
    let holdout_days = (t2.div_euclid(DAY_MS) - t1.div_euclid(DAY_MS)) as f64;
    let mut outcomes: BTreeMap<String, Outcome> = BTreeMap::new();
    let mut seen = HashSet::new();
    for e in events.iter().filter(|e| e.ts_ms > t1 && e.kind.is_known()) {
        if !seen.insert(e.event_id.as_ref()) {
            continue;
        }
        let o = outcomes.entry(e.customer_id.to_string()).or_default();
        o.active = true;
        match e.kind {
            EventKind::Purchase { amount, .. } => {
                o.purchase_days.insert(e.ts_ms.div_euclid(DAY_MS));
                o.value += amount;
            }
            EventKind::Refund { amount } => o.value -= amount,
            EventKind::Click { .. } => {}
        }
    }

    let rules = ChurnRules::new(&config.churn);
    let states = read_jsonl(&calibration_dir.join("state.jsonl"))?;
    let mut judged = Vec::with_capacity(states.len());
    for value in states {
        let s: StateLine = serde_json::from_value(value)
            .map_err(|source| ReplayError::Json { path: calibration_dir.join("state.jsonl"), source })?;
        let outcome = outcomes.remove(&s.customer_id).unwrap_or_default();
        judged.push(judge(&s, &outcome, &rules, holdout_days));
    }
    if judged.is_empty() {
        return Err(EvaluateError::NoCustomers(format_time(t1)));
    }

    let mut report = report(&judged);
    report.calibration_end = format_time(t1);
    report.holdout_end = format_time(t2);
    report.holdout_days = holdout_days;
    report.calibration = calibration;
    report.new_in_holdout = outcomes.len();

    let refusal = opts.suggest.then(|| suggest_refusal(&judged, holdout_days, &config.churn)).flatten();
    if opts.suggest && refusal.is_none() {
        report.suggest = Some(suggest(&judged, &config.churn));
    }

    report.plots = write_plots(&opts.out_dir, &judged, &report)?;
    write_customers(&opts.out_dir.join("customers.jsonl"), &judged)?;
    let path = opts.out_dir.join("report.json");
    let json = serde_json::to_vec_pretty(&report).map_err(|source| ReplayError::Json { path: path.clone(), source })?;
    std::fs::write(&path, json).map_err(|source| ReplayError::Io { action: "writing", path: path.clone(), source })?;
    match refusal {
        Some(why) => Err(EvaluateError::SuggestRefused(why)),
        None => Ok(report),
    }
}

fn judge(s: &StateLine, o: &Outcome, rules: &ChurnRules, holdout_days: f64) -> Judged {
    let unit = rules.unit_days;
    let summary = s.repeat_purchases.zip(s.recency_days).zip(s.age_days);
    let expected_purchases = summary
        .map(|((x, t_x), t)| rules.model.expected_purchases(holdout_days / unit, f64::from(x), t_x / unit, t / unit));
    // expected_value_90d = expected_purchases_90d × expected order value.
    let order_value = match (s.expected_value_90d, s.expected_purchases_90d) {
        (Some(v), Some(p)) if p > 0.0 => v / p,
        _ => rules.spend.expected_order_value(0.0, 0.0),
    };
    Judged {
        customer_id: s.customer_id.clone(),
        health: match s.health.as_str() {
            "at_risk" => Health::AtRisk,
            "dormant" => Health::Dormant,
            _ => Health::Active,
        },
        stage: s.stage.clone(),
        score: s.score,
        p_alive: s.p_alive,
        cadence_days: s.cadence_days,
        idle_days: s.idle_days,
        x: s.repeat_purchases,
        expected_purchases,
        expected_value: expected_purchases.map(|e| e * order_value),
        holdout_purchases: o.purchase_days.len() as u32,
        holdout_value: o.value,
        holdout_active: o.active,
    }
}

/// The report's metrics over judged customers (times and the replay
/// summary left at their defaults, plots and suggestion empty).
pub fn report(judged: &[Judged]) -> EvaluateReport {
    let group = |name: &'static str, keep: &dyn Fn(&Judged) -> bool| {
        let members: Vec<&Judged> = judged.iter().filter(|j| keep(j)).collect();
        let purchased = members.iter().filter(|j| j.purchased()).count();
        let active = members.iter().filter(|j| j.holdout_active).count();
        let rate = |k: usize| (!members.is_empty()).then(|| k as f64 / members.len() as f64);
        Group {
            name,
            customers: members.len(),
            purchased,
            purchase_rate: rate(purchased),
            active,
            active_rate: rate(active),
        }
    };
    let by_health = [Health::Active, Health::AtRisk, Health::Dormant]
        .into_iter()
        .map(|h| group(h.as_str(), &move |j: &Judged| j.health == h))
        .collect();
    let by_stage = ["initiation", "integration", "intelligence", "value_creation"]
        .into_iter()
        .map(|s| group(s, &move |j: &Judged| j.stage == s))
        .collect();
    let no_purchase: Vec<bool> = judged.iter().map(|j| !j.purchased()).collect();
    let predicted = |f: &dyn Fn(&Judged) -> bool| judged.iter().map(f).collect::<Vec<bool>>();
    let no_purchase_predictions = Predictions {
        at_risk_or_dormant: classify(&predicted(&|j| j.health != Health::Active), &no_purchase),
        dormant: classify(&predicted(&|j| j.health == Health::Dormant), &no_purchase),
    };
    let bought: Vec<bool> = judged.iter().map(Judged::purchased).collect();
    let roc_auc = RocAreas {
        score: roc_auc(&predictor(judged, Predictor::Score), &bought),
        p_alive: roc_auc(&predictor(judged, Predictor::PAlive), &bought),
        expected_purchases: roc_auc(&predictor(judged, Predictor::ExpectedPurchases), &bought),
        recency: roc_auc(&predictor(judged, Predictor::Recency), &bought),
    };
    let buyers: Vec<&Judged> = judged.iter().filter(|j| j.x.is_some()).collect();
    let mut calibration_holdout = Vec::new();
    for f in 0..=7u32 {
        let rows: Vec<&&Judged> =
            buyers.iter().filter(|j| j.x.is_some_and(|x| if f == 7 { x >= 7 } else { x == f })).collect();
        if rows.is_empty() {
            continue;
        }
        let n = rows.len() as f64;
        calibration_holdout.push(FrequencyRow {
            frequency: if f == 7 { "7+".to_string() } else { f.to_string() },
            customers: rows.len(),
            expected: rows.iter().filter_map(|j| j.expected_purchases).sum::<f64>() / n,
            actual: rows.iter().map(|j| f64::from(j.holdout_purchases)).sum::<f64>() / n,
        });
    }
    let totals = Totals {
        customers: buyers.len(),
        expected_purchases: buyers.iter().filter_map(|j| j.expected_purchases).sum(),
        actual_purchases: buyers.iter().map(|j| u64::from(j.holdout_purchases)).sum(),
        expected_value: buyers.iter().filter_map(|j| j.expected_value).sum(),
        actual_value: buyers.iter().map(|j| j.holdout_value).sum(),
    };
    EvaluateReport {
        calibration_end: String::new(),
        holdout_end: String::new(),
        holdout_days: 0.0,
        calibration: ReplaySummary::default(),
        customers: judged.len(),
        new_in_holdout: 0,
        purchased: bought.iter().filter(|b| **b).count(),
        active: judged.iter().filter(|j| j.holdout_active).count(),
        by_health,
        by_stage,
        no_purchase_predictions,
        roc_auc,
        calibration_holdout,
        totals,
        plots: Vec::new(),
        suggest: None,
    }
}

/// The predictors whose ROC areas are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Predictor {
    /// The composite score.
    Score,
    /// P(alive).
    PAlive,
    /// Expected holdout purchase days (0 for customers who never bought).
    ExpectedPurchases,
    /// Minus the idle days (more recent ranks higher).
    Recency,
}

impl Predictor {
    /// All four, in report order.
    pub const ALL: [Predictor; 4] =
        [Predictor::Score, Predictor::PAlive, Predictor::ExpectedPurchases, Predictor::Recency];

    /// The report's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Predictor::Score => "score",
            Predictor::PAlive => "p_alive",
            Predictor::ExpectedPurchases => "expected_purchases",
            Predictor::Recency => "recency",
        }
    }
}

/// Each judged customer's value of a predictor (higher: more likely to buy).
pub fn predictor(judged: &[Judged], p: Predictor) -> Vec<f64> {
    judged
        .iter()
        .map(|j| match p {
            Predictor::Score => j.score,
            Predictor::PAlive => j.p_alive,
            Predictor::ExpectedPurchases => j.expected_purchases.unwrap_or(0.0),
            Predictor::Recency => -j.idle_days,
        })
        .collect()
}

/// Precision, recall and F1 of `predicted` against `actual` (same length).
pub fn classify(predicted: &[bool], actual: &[bool]) -> Classification {
    let count = |f: &dyn Fn(usize) -> bool| (0..predicted.len()).filter(|i| f(*i)).count();
    let true_positives = count(&|i| predicted[i] && actual[i]);
    let (n_predicted, n_actual) = (count(&|i| predicted[i]), count(&|i| actual[i]));
    let ratio = |n: usize| (n > 0).then(|| true_positives as f64 / n as f64);
    let (precision, recall) = (ratio(n_predicted), ratio(n_actual));
    let f1 = precision.zip(recall).map(|(p, r)| if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 });
    Classification { predicted: n_predicted, actual: n_actual, true_positives, precision, recall, f1 }
}

/// Area under the ROC curve of `scores` as predictors of `labels`: the
/// probability that a random positive scores above a random negative, ties
/// counting one half (the Mann–Whitney statistic, with mid-ranks). None
/// unless there are both positives and negatives.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let (mut rank_sum, mut i) = (0.0, 0);
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their mean.
        let mid = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += mid * order[i..=j].iter().filter(|k| labels[**k]).count() as f64;
        i = j + 1;
    }
    let positives = labels.iter().filter(|l| **l).count() as f64;
    let negatives = labels.len() as f64 - positives;
    (positives > 0.0 && negatives > 0.0)
        .then(|| (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// The ROC curve of `scores` for `labels`: (false positive rate, true
/// positive rate) from (0, 0) to (1, 1), one point per distinct score from
/// the highest down, so tied scores make one diagonal step. Empty unless
/// there are both positives and negatives.
pub fn roc_curve(scores: &[f64], labels: &[bool]) -> Vec<(f64, f64)> {
    let positives = labels.iter().filter(|l| **l).count() as f64;
    let negatives = labels.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut curve = vec![(0.0, 0.0)];
    for (n, k) in order.iter().enumerate() {
        if labels[*k] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        if order.get(n + 1).is_none_or(|next| scores[*next] != scores[*k]) {
            curve.push((fp / negatives, tp / positives));
        }
    }
    curve
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
/// Idle-ratio dormant thresholds tried by [`suggest`].
const IDLE_GRID: [f64; 14] = [1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 15.0, 20.0, 30.0];

/// Whether the customer would be `dormant` at T1 under `rules`. Dormancy
/// depends only on P(alive), idle time and cadence (the score drop can only
/// make a customer `at_risk`), all in the state at T1.
fn dormant_under(rules: &ChurnRules, j: &Judged) -> bool {
    let signals =
        Signals { p_alive: j.p_alive, idle_days: j.idle_days, cadence_days: j.cadence_days, score: j.score, peak: 0.0 };
    rules.assess(&signals).0 == Health::Dormant
}

/// `--suggest`: searches `p_alive_dormant` × `idle_dormant` on a fixed grid
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
    let before = metric(churn);
    let mut best = (churn.clone(), before.clone());
    let mut candidates = 0;
    for p in P_ALIVE_GRID {
        for idle in IDLE_GRID {
            let mut c = churn.clone();
            c.p_alive_dormant = p;
            c.p_alive_at_risk = c.p_alive_at_risk.max(p);
            c.idle_dormant = idle;
            c.idle_at_risk = c.idle_at_risk.min(idle).max(c.overdue_gate);
            if c.validate().is_err() {
                continue;
            }
            candidates += 1;
            let m = metric(&c);
            let distance = |c: &ChurnConfig| {
                (c.p_alive_dormant - churn.p_alive_dormant).abs() + (c.idle_dormant / churn.idle_dormant).ln().abs()
            };
            let (f, best_f) = (m.f1.unwrap_or(-1.0), best.1.f1.unwrap_or(-1.0));
            if f > best_f + 1e-12 || ((f - best_f).abs() <= 1e-12 && distance(&c) < distance(&best.0)) {
                best = (c, m);
            }
        }
    }
    let (c, after) = best;
    let config = format!(
        "[churn]\n# F1 of \"dormant predicts no purchase\": {:.4} -> {:.4} on the holdout\np_alive_at_risk = {}\n\
         p_alive_dormant = {}\nidle_at_risk = {}\nidle_dormant = {}\n",
        before.f1.unwrap_or(0.0),
        after.f1.unwrap_or(0.0),
        c.p_alive_at_risk,
        c.p_alive_dormant,
        c.idle_at_risk,
        c.idle_dormant
    );
    Suggestion {
        metric: "f1 of dormant as a prediction of no purchase in the holdout",
        before,
        after,
        p_alive_at_risk: c.p_alive_at_risk,
        p_alive_dormant: c.p_alive_dormant,
        idle_at_risk: c.idle_at_risk,
        idle_dormant: c.idle_dormant,
        candidates,
        config,
    }
}

/// Writes every judged customer as a line of `customers.jsonl`.
fn write_customers(path: &Path, judged: &[Judged]) -> Result<(), ReplayError> {
    let mut out = Vec::new();
    for j in judged {
        serde_json::to_writer(&mut out, j).map_err(|source| ReplayError::Json { path: path.to_path_buf(), source })?;
        out.push(b'\n');
    }
    std::fs::write(path, out).map_err(|source| ReplayError::Io { action: "writing", path: path.to_path_buf(), source })
}

/// Writes the three plots; returns their file names.
fn write_plots(dir: &Path, judged: &[Judged], report: &EvaluateReport) -> Result<Vec<String>, ReplayError> {
    let rows = &report.calibration_holdout;
    let by_frequency = chart(
        "BG/NBD: mean holdout purchase days by calibration repeat purchases",
        "calibration repeat purchase days (x)",
        &rows.iter().map(|r| r.frequency.clone()).collect::<Vec<_>>(),
        &[
            ("expected", "#1f77b4", rows.iter().enumerate().map(|(i, r)| (i as f64, r.expected)).collect()),
            ("actual", "#d62728", rows.iter().enumerate().map(|(i, r)| (i as f64, r.actual)).collect()),
        ],
        None,
    );
    let deciles = score_deciles(judged);
    let by_decile = chart(
        "share of customers who bought in the holdout, by score decile at the calibration end",
        "score decile (1 lowest)",
        &(1..=deciles.len()).map(|d| d.to_string()).collect::<Vec<_>>(),
        &[("repurchase rate", "#2ca02c", deciles.iter().enumerate().map(|(i, r)| (i as f64, *r)).collect())],
        Some(1.0),
    );
    let bought: Vec<bool> = judged.iter().map(Judged::purchased).collect();
    let colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"];
    let mut curves: Vec<Series> = Predictor::ALL
        .iter()
        .zip(colours)
        .map(|(p, colour)| (p.name(), colour, roc_curve(&predictor(judged, *p), &bought)))
        .collect();
    curves.push(("chance", "#999999", vec![(0.0, 0.0), (1.0, 1.0)]));
    let roc = chart(
        "ROC curves: predictors of a purchase in the holdout",
        "false positive rate",
        &["0".to_string(), "1".to_string()],
        &curves,
        Some(1.0),
    );
    let mut names = Vec::new();
    for (name, svg) in [("calibration_holdout.svg", by_frequency), ("score_deciles.svg", by_decile), ("roc.svg", roc)] {
        let path = dir.join(name);
        std::fs::write(&path, svg).map_err(|source| ReplayError::Io { action: "writing", path, source })?;
        names.push(name.to_string());
    }
    Ok(names)
}

/// Share of customers who bought in the holdout in each score decile
/// (customers sorted by score at T1, split into ten equal-count groups,
/// lowest first; fewer groups with fewer than ten customers).
pub fn score_deciles(judged: &[Judged]) -> Vec<f64> {
    let mut order: Vec<&Judged> = judged.iter().collect();
    order.sort_by(|a, b| a.score.total_cmp(&b.score));
    let groups = order.len().min(10);
    (0..groups)
        .map(|g| {
            let part = &order[g * order.len() / groups..(g + 1) * order.len() / groups];
            part.iter().filter(|j| j.purchased()).count() as f64 / part.len() as f64
        })
        .collect()
}

/// One line of a chart: name, colour, (x, y) points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// A plain SVG line chart (as benches/broker/e2e.rs draws its plots): the
/// x axis runs from 0 to the largest x, labelled with `x_labels` spread
/// evenly; the y axis from 0 to `y_max` (default: 1.1 × the largest y).
fn chart(title: &str, x_title: &str, x_labels: &[String], series: &[Series<'_>], y_max: Option<f64>) -> String {
    let (left, top, width, height) = (70.0, 50.0, 700.0, 400.0);
    let mut out = String::from(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="800" height="520" font-family="sans-serif" font-size="12">"#,
    );
    out.push_str(r#"<rect width="800" height="520" fill="white"/>"#);
    let points = series.iter().flat_map(|s| s.2.iter()).filter(|p| p.0.is_finite() && p.1.is_finite());
    let x_max = points.clone().map(|p| p.0).fold(0.0, f64::max).max(1e-9);
    let y_max = y_max.unwrap_or_else(|| points.map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.1);
    let y0 = top + height;
    let _ = write!(out, r#"<text x="{left}" y="30" font-size="14">{}</text>"#, escape(title));
    let _ = write!(out, r#"<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" stroke="black"/>"#);
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let y = y0 - height * f64::from(i) / 4.0;
        let _ = write!(
            out,
            r##"<text x="{}" y="{y}" text-anchor="end">{v:.2}</text><line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="#eee"/>"##,
            left - 5.0,
            left + width
        );
    }
    let spread = x_labels.len().saturating_sub(1).max(1) as f64;
    for (i, label) in x_labels.iter().enumerate() {
        let x = left + width * i as f64 / spread;
        let _ = write!(out, r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#, y0 + 16.0, escape(label));
    }
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        left + width / 2.0,
        y0 + 36.0,
        escape(x_title)
    );
    for (i, (name, colour, data)) in series.iter().enumerate() {
        let path: Vec<String> = data
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|(x, y)| format!("{:.1},{:.1}", left + width * x / x_max, y0 - height * y / y_max))
            .collect();
        let _ =
            write!(out, r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#, path.join(" "));
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" fill="{colour}">{}</text>"#,
            left + 10.0 + 140.0 * i as f64,
            top + 18.0,
            escape(name)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Escapes text for SVG.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roc_area_of_hand_worked_cases() {
        // Perfect, reversed, and no better than chance.
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]), Some(0.0));
        // Positives at 0.8 and 0.3, negatives at 0.5 and 0.1: of the four
        // (positive, negative) pairs, 3 rank the positive higher → 0.75.
        assert_eq!(roc_auc(&[0.8, 0.5, 0.3, 0.1], &[true, false, true, false]), Some(0.75));
        // Ties count one half: positive 0.5 vs negatives 0.5 (½) and 0.2 (1),
        // positive 0.7 beats both (2) → 3.5 / 4.
        assert_eq!(roc_auc(&[0.5, 0.5, 0.2, 0.7], &[true, false, false, true]), Some(0.875));
        // All tied: chance.
        assert_eq!(roc_auc(&[1.0; 4], &[true, false, true, false]), Some(0.5));
        // One class only: undefined.
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
    }

    #[test]
    fn roc_curve_steps_through_distinct_scores() {
        let curve = roc_curve(&[0.5, 0.5, 0.2, 0.7], &[true, false, false, true]);
        assert_eq!(curve, vec![(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]);
        // The trapezoid area under it is the ROC area.
        let area: f64 = curve.windows(2).map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0).sum();
        assert_eq!(area, 0.875);
        assert!(roc_curve(&[0.1], &[true]).is_empty());
    }

    #[test]
    fn precision_and_recall_of_a_hand_worked_case() {
        // Predicted: 1, 2, 3; actual: 2, 3, 4, 5. TP 2: precision 2/3,
        // recall 2/4, F1 = 2·(2/3)(1/2)/(2/3 + 1/2) = 4/7.
        let p = [true, true, true, false, false, false];
        let a = [false, true, true, true, true, false];
        let c = classify(&p, &a);
        assert_eq!((c.predicted, c.actual, c.true_positives), (3, 4, 2));
        assert_eq!(c.precision, Some(2.0 / 3.0));
        assert_eq!(c.recall, Some(0.5));
        assert!((c.f1.unwrap() - 4.0 / 7.0).abs() < 1e-15);
        // Nothing predicted: precision undefined; nothing right: F1 0.
        let none = classify(&[false; 3], &[true, false, true]);
        assert_eq!((none.precision, none.recall, none.f1), (None, Some(0.0), None));
        let wrong = classify(&[true, false], &[false, true]);
        assert_eq!((wrong.precision, wrong.recall, wrong.f1), (Some(0.0), Some(0.0), Some(0.0)));
    }

    fn customer(health: Health, score: f64, p_alive: f64, idle_days: f64, holdout_purchases: u32) -> Judged {
        Judged {
            customer_id: format!("c{score}-{idle_days}"),
            health,
            stage: "integration".into(),
            score,
            p_alive,
            cadence_days: 10.0,
            idle_days,
            x: Some(1),
            expected_purchases: Some(p_alive),
            expected_value: Some(10.0 * p_alive),
            holdout_purchases,
            holdout_value: 20.0 * f64::from(holdout_purchases),
            holdout_active: holdout_purchases > 0,
        }
    }

    #[test]
    fn report_groups_predictions_and_totals_on_a_hand_worked_population() {
        let judged = [
            customer(Health::Active, 80.0, 0.9, 5.0, 2),
            customer(Health::Active, 60.0, 0.8, 8.0, 0),
            customer(Health::AtRisk, 40.0, 0.4, 40.0, 1),
            customer(Health::Dormant, 10.0, 0.1, 90.0, 0),
        ];
        let r = report(&judged);
        let health: Vec<_> = r.by_health.iter().map(|g| (g.name, g.customers, g.purchased)).collect();
        assert_eq!(health, vec![("active", 2, 1), ("at_risk", 1, 1), ("dormant", 1, 0)]);
        assert_eq!(r.by_health[0].purchase_rate, Some(0.5));
        assert_eq!(r.by_stage[0].purchase_rate, None, "no customer in initiation");
        // No purchase: customers 2 and 4. at_risk|dormant = 3, 4 → TP 1.
        let p = &r.no_purchase_predictions;
        assert_eq!((p.at_risk_or_dormant.precision, p.at_risk_or_dormant.recall), (Some(0.5), Some(0.5)));
        assert_eq!((p.dormant.precision, p.dormant.recall), (Some(1.0), Some(0.5)));
        // Buyers score 80, 40; non-buyers 60, 10: 3 of 4 pairs right.
        assert_eq!(r.roc_auc.score, Some(0.75));
        assert_eq!(r.roc_auc.p_alive, Some(0.75));
        assert_eq!(r.roc_auc.recency, Some(0.75));
        assert_eq!(r.calibration_holdout.len(), 1);
        assert_eq!(r.calibration_holdout[0].actual, 0.75);
        assert!((r.totals.expected_purchases - 2.2).abs() < 1e-12);
        assert_eq!((r.totals.actual_purchases, r.totals.actual_value), (3, 60.0));
        assert_eq!(score_deciles(&judged), vec![0.0, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn suggest_finds_thresholds_that_separate_a_clean_holdout() {
        // Customers idle ≥ 4 cadences never come back; the rest all do.
        let judged: Vec<Judged> = (0..300)
            .map(|i| {
                let idle = f64::from(i % 60);
                customer(Health::Active, 50.0, 0.9, idle, u32::from(idle < 40.0))
            })
            .collect();
        let churn = ChurnConfig::default();
        assert!(suggest_refusal(&judged, 90.0, &churn).is_none());
        let s = suggest(&judged, &churn);
        assert_eq!(s.after.f1, Some(1.0), "{s:?}");
        assert_eq!(s.idle_dormant, 4.0);
        // The defaults call nobody dormant here (idle < 6 cadences): no F1.
        assert_eq!((s.before.predicted, s.before.f1), (0, None));
        assert!(s.config.starts_with("[churn]\n") && s.config.contains("idle_dormant = 4\n"));
        // The suggestion is a valid config.
        let mut c = churn.clone();
        (c.p_alive_at_risk, c.p_alive_dormant, c.idle_at_risk, c.idle_dormant) =
            (s.p_alive_at_risk, s.p_alive_dormant, s.idle_at_risk, s.idle_dormant);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn suggest_refuses_short_or_small_holdouts() {
        let churn = ChurnConfig::default();
        let many: Vec<Judged> =
            (0..300).map(|i| customer(Health::Active, 50.0, 0.9, 1.0, u32::from(i % 2 == 0))).collect();
        assert!(suggest_refusal(&many, 14.0, &churn).unwrap().contains("the holdout is 14 days"));
        assert!(suggest_refusal(&many[..50], 90.0, &churn).unwrap().contains("50 customers"));
        let all_bought: Vec<Judged> = (0..300).map(|_| customer(Health::Active, 50.0, 0.9, 1.0, 1)).collect();
        assert!(suggest_refusal(&all_bought, 90.0, &churn).unwrap().contains("300 customers bought"));
    }

    #[test]
    fn charts_are_well_formed_svg() {
        let svg = chart("a < b", "x", &["0".into(), "1".into()], &[("s", "#000", vec![(0.0, 0.0), (1.0, 2.0)])], None);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n") && svg.contains("a &lt; b"));
        assert!(svg.contains("points=\"70.0,450.0 770.0,86.4\""), "{svg}");
    }
}
