//! `engage evaluate`: how well the engine's state at one time predicted what
//! customers did next, on a purchase history split into a calibration
//! period (up to T1) and a holdout (T1, T2].
//!
//! The engine runs exactly as `engage replay --as-of T1` (its outputs go to
//! `DIR/calibration/`); each customer's state at T1, as that replay leaves
//! it, is then set against their holdout outcome (`outcomes.rs`), read from
//! the same files: the distinct UTC days
//! with a purchase in (T1, T2], the net value of the holdout's purchases
//! and refunds, and whether they had any event at all. The report
//! (`DIR/report.json`, also printed) gives repurchase and activity shares by
//! health and stage, precision and recall of the churn classes as
//! predictions of "no purchase in the holdout", ROC areas of four
//! predictors (`roc.rs`), BG/NBD's calibration/holdout table and aggregate
//! expected against actual purchases and value; SVG plots go beside it
//! (`charts.rs`). With `suggest`, the `[churn]` dormant thresholds are
//! searched for the best F1 on the holdout (`suggest.rs`).
//!
//! Only customers seen by T1 are judged; customers whose first event is in
//! the holdout are counted (`new_in_holdout`) and left out. Days are UTC
//! days, as the engine counts them, so the ends are best given as the end
//! of a day (e.g. `1997-09-30T23:59:59Z`). The input files are read twice
//! (the replay, then the holdout), and held in memory as replay holds them.

mod charts;
mod model;
mod outcomes;
mod probability;
mod roc;
mod suggest;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use model::{CutoffMeasures, ModelReport, ProbabilityMeasures, SignalMeasures, evaluation_cutoffs, judge_model};
pub use outcomes::Judged;
pub use probability::{Bin, brier, expected_calibration_error, lift, log_loss, reliability};
pub use roc::{Classification, Predictor, classify, predictor, roc_auc, roc_curve, score_deciles};
pub use suggest::{
    SUGGEST_MIN_CUSTOMERS, SUGGEST_MIN_HOLDOUT_DAYS, SUGGEST_MIN_PER_OUTCOME, Suggestion, suggest, suggest_refusal,
};

use crate::clock::format_time;
use crate::config::Config;
use crate::engine::churn::Health;
use crate::engine::event::DAY_MS;
use crate::engine::lifecycle::Stage;
use crate::history::{ReplayError, ReplayOptions, ReplaySummary, read_events, replay_keeping_state};

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
    /// Also search the `[churn]` dormant thresholds ([`suggest()`]).
    pub suggest: bool,
    /// Judge the learned purchase probability at cut-offs this far apart
    /// from the calibration end (while a whole horizon after them is in the
    /// holdout); `None`: at the calibration end only.
    pub cutoff_every_ms: Option<i64>,
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
    /// The learned purchase probability judged at cut-offs from the
    /// calibration end, beside the single signals, when the config has a
    /// `[churn.model]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purchase_model: Option<ModelReport>,
    /// Why the purchase probability could not be judged on this holdout,
    /// when the config has a model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purchase_model_skipped: Option<String>,
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

/// Runs an evaluation: the calibration replay, the holdout outcomes, the
/// report and the plots (see the module documentation).
pub fn evaluate(config: &Config, opts: &EvaluateOptions) -> Result<EvaluateReport, EvaluateError> {
    let t1 = opts.calibration_end;
    let calibration = replay_keeping_state(
        config,
        &ReplayOptions {
            inputs: opts.inputs.clone(),
            as_of: Some(t1),
            out_dir: opts.out_dir.join("calibration"),
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
    let mut outcomes = outcomes::holdout_outcomes(&events, t1);

    let mut ids = Vec::with_capacity(calibration.customers.len());
    calibration.customers.for_each(|id, _| ids.push(id.to_string()));
    ids.sort();
    let mut judged = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(state) = calibration.customers.get(&id) else { continue };
        let outcome = outcomes.remove(&id).unwrap_or_default();
        judged.push(outcomes::judge(&id, &state, &calibration.engine, t1, &outcome, holdout_days));
    }
    if judged.is_empty() {
        return Err(EvaluateError::NoCustomers(format_time(t1)));
    }

    let mut report = report(&judged);
    report.calibration_end = format_time(t1);
    report.holdout_end = format_time(t2);
    report.holdout_days = holdout_days;
    report.calibration = calibration.summary;
    report.new_in_holdout = outcomes.len();

    if let Some(model) = &config.churn.model {
        let horizon_ms = i64::from(config.churn.horizon_kind().map_or(90, |h| h.days())) * DAY_MS;
        let cutoffs = evaluation_cutoffs(t1, t2, horizon_ms, opts.cutoff_every_ms);
        let judged_model =
            judge_model(&calibration.engine, &events, &cutoffs, &model.training.holdout_end, opts.sweep_every_ms)?;
        (report.purchase_model, report.purchase_model_skipped) = match judged_model {
            Ok(m) => (Some(m), None),
            Err(why) => (None, Some(why)),
        };
    }

    let refusal = opts.suggest.then(|| suggest_refusal(&judged, holdout_days, &config.churn)).flatten();
    if opts.suggest && refusal.is_none() {
        report.suggest = Some(suggest(&judged, &config.churn));
    }

    report.plots = charts::write_plots(&opts.out_dir, &judged, &report)?;
    write_customers(&opts.out_dir.join("customers.jsonl"), &judged)?;
    let path = opts.out_dir.join("report.json");
    let json = serde_json::to_vec_pretty(&report).map_err(|source| ReplayError::Json { path: path.clone(), source })?;
    std::fs::write(&path, json).map_err(|source| ReplayError::Io { action: "writing", path: path.clone(), source })?;
    match refusal {
        Some(why) => Err(EvaluateError::SuggestRefused(why)),
        None => Ok(report),
    }
}

/// `engage evaluate`'s command line.
#[derive(clap::Args)]
pub struct Args {
    /// A file of events from either topic: JSONL, or CSV (`*.csv`) with a
    /// header row naming the event fields. Repeat for several.
    #[arg(long = "input", required = true)]
    inputs: Vec<PathBuf>,
    /// End of the calibration period (RFC 3339), best the end of a UTC day.
    #[arg(long)]
    calibration_end: String,
    /// End of the holdout (RFC 3339); default: the last event time.
    #[arg(long)]
    holdout_end: Option<String>,
    /// Output directory.
    #[arg(long, default_value = "evaluate-out")]
    out: PathBuf,
    /// Scoring configuration (the same file `engage run` uses).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Event time between churn sweeps (e.g. 1h, 1d).
    #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
    sweep_every: std::time::Duration,
    /// Also search [churn]'s dormant thresholds for the best F1 of
    /// "dormant predicts no purchase" on the holdout, and print a [churn]
    /// table to paste (on stderr; also in the report). With
    /// churn.health_from = "model", the p_purchase thresholds instead.
    #[arg(long)]
    suggest: bool,
    /// Judge the learned purchase probability ([churn.model]) at cut-offs
    /// this far apart from the calibration end (e.g. 7d), while a whole
    /// horizon after them is in the holdout; default: at the calibration
    /// end only.
    #[arg(long, value_parser = humantime::parse_duration)]
    cutoff_every: Option<std::time::Duration>,
}

/// Runs `engage evaluate`: prints the report as JSON (the suggested
/// `[churn]` table on stderr).
pub fn run(args: Args) -> anyhow::Result<()> {
    use crate::clock::parse_time;
    use anyhow::Context;
    let config = Config::load(args.config.as_deref())?;
    let opts = EvaluateOptions {
        inputs: args.inputs,
        calibration_end: parse_time(&args.calibration_end).context("--calibration-end")?,
        holdout_end: args.holdout_end.as_deref().map(parse_time).transpose().context("--holdout-end")?,
        out_dir: args.out,
        sweep_every_ms: args.sweep_every.as_millis() as i64,
        suggest: args.suggest,
        cutoff_every_ms: args.cutoff_every.map(|d| d.as_millis() as i64),
    };
    let report = evaluate(&config, &opts)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(s) = &report.suggest {
        eprint!("{}", s.config);
    }
    Ok(())
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
    let by_stage = [Stage::Initiation, Stage::Integration, Stage::Intelligence, Stage::ValueCreation]
        .into_iter()
        .map(|s| group(s.as_str(), &move |j: &Judged| j.stage == s))
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
        purchase_model: None,
        purchase_model_skipped: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ChurnConfig;

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
            stage: Stage::Integration,
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
            p_purchase: None,
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
    fn with_health_from_the_model_suggest_tunes_the_probability_thresholds() {
        // Customers below 0.15 never come back; the rest all do. All are
        // overdue (idle 20 days, cadence 10).
        let judged: Vec<Judged> = (0..300)
            .map(|i| {
                let p = f64::from(i % 50) / 100.0;
                Judged { p_purchase: Some(p), ..customer(Health::Active, 50.0, 0.9, 20.0, u32::from(p >= 0.15)) }
            })
            .collect();
        let mut churn = ChurnConfig::default();
        let calibration = crate::config::CalibrationConfig::Platt { a: 1.0, b: 0.0 };
        churn.model = Some(crate::engine::propensity::test_model(-1.0, 0.0, 0.0, calibration));
        churn.health_from = crate::config::HealthFrom::Model;
        let s = suggest(&judged, &churn);
        assert_eq!((s.p_purchase_dormant, s.after.f1), (Some(0.15), Some(1.0)), "{s:?}");
        // The defaults (dormant below 0.1) miss a third of the lost.
        assert_eq!(s.before.recall, Some(10.0 / 15.0));
        assert!(s.config.contains("p_purchase_dormant = 0.15\n") && !s.config.contains("p_alive"), "{}", s.config);
        // The P(alive) and idle thresholds are left alone.
        assert_eq!((s.p_alive_dormant, s.idle_dormant), (churn.p_alive_dormant, churn.idle_dormant));
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
}
