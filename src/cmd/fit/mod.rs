//! `engage fit`: maximum-likelihood estimates of the BG/NBD purchase model
//! (Fader, Hardie & Lee 2005, "Counting Your Customers the Easy Way") and the
//! Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and CLV") from a
//! purchase history, by Nelder–Mead in log-parameter space (so parameters
//! stay positive) from several starting points; with `--holdout-end`, also
//! the learned purchase probability (`propensity.rs`, by the regression and
//! calibrations of `logistic.rs`).

pub mod logistic;
pub mod propensity;

use std::path::PathBuf;

use serde::Serialize;

use anyhow::Context;

use crate::config::Config;
use crate::history::{ReplayError, ReplaySummary, read_events};

/// One customer's purchase summary, in the model's time unit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Repeat purchase days (x).
    pub x: f64,
    /// Time of the last purchase day since the first (t_x).
    pub t_x: f64,
    /// Observation time since the first purchase day (T).
    pub t: f64,
    /// Mean spend per repeat purchase day (0 without repeats).
    pub monetary: f64,
}

/// Why a fit could not be made. Not retryable with the same data.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FitError {
    /// Too few customers to estimate four parameters.
    #[error("{0} customers with purchases; a BG/NBD fit needs at least 10")]
    TooFewCustomers(usize),
    /// Nobody bought twice: the purchase rate and drop-out cannot be told apart.
    #[error("no customer made a repeat purchase; the data cannot support a {0} fit")]
    NoRepeatBuyers(&'static str),
    /// A summary value is negative, not finite, or t_x > T.
    #[error("invalid summary for customer #{0}: need 0 <= t_x <= T, x >= 0, all finite")]
    InvalidSummary(usize),
    /// The optimiser ended on a non-finite likelihood.
    #[error("the {0} fit did not converge to a finite likelihood")]
    DidNotConverge(&'static str),
}

/// Fitted BG/NBD parameters.
#[derive(Clone, Debug, Serialize)]
pub struct BgNbdFit {
    /// Shape of the purchase-rate Gamma.
    pub r: f64,
    /// Scale of the purchase-rate Gamma.
    pub alpha: f64,
    /// Drop-out Beta parameter.
    pub a: f64,
    /// Drop-out Beta parameter.
    pub b: f64,
    /// Log-likelihood at the estimate.
    pub log_likelihood: f64,
    /// Customers fitted.
    pub customers: usize,
}

/// Fitted Gamma-Gamma parameters.
#[derive(Clone, Debug, Serialize)]
pub struct GammaGammaFit {
    /// Shape of the per-transaction spend Gamma.
    pub p: f64,
    /// Shape of the Gamma over customers' spend scale.
    pub q: f64,
    /// Scale (γ) of the Gamma over customers' spend scale.
    pub gamma: f64,
    /// Log-likelihood at the estimate.
    pub log_likelihood: f64,
    /// Repeat customers fitted.
    pub customers: usize,
}

/// The time unit of fitted parameters: weeks, as in the paper, or days.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TimeUnit {
    /// Seven days (the paper's unit and the default parameters').
    Weeks,
    /// One day.
    Days,
}

impl TimeUnit {
    /// The unit's length in days.
    pub fn days(self) -> f64 {
        match self {
            TimeUnit::Weeks => 7.0,
            TimeUnit::Days => 1.0,
        }
    }

    /// The unit as `churn.bgnbd.time_unit` spells it.
    pub fn config_value(self) -> &'static str {
        match self {
            TimeUnit::Weeks => "7days",
            TimeUnit::Days => "1day",
        }
    }
}

/// Why `engage fit` could not produce parameters.
#[derive(Debug, thiserror::Error)]
pub enum FitHistoryError {
    /// The history could not be read.
    #[error(transparent)]
    Read(#[from] ReplayError),
    /// The BG/NBD model could not be fitted to it.
    #[error(transparent)]
    Fit(#[from] FitError),
    /// The purchase probability could not be learned from it.
    #[error("learning the purchase probability (--holdout-end)")]
    Model(#[from] propensity::ModelError),
}

/// What `engage fit` reports: both fits, what was read, and a
/// `[churn.bgnbd]` table to paste into the config.
#[derive(Debug, Serialize)]
pub struct FitReport {
    /// The BG/NBD parameters.
    pub bgnbd: BgNbdFit,
    /// The Gamma-Gamma parameters, when the data supports a fit.
    pub gamma_gamma: Option<GammaGammaFit>,
    /// Why there is no Gamma-Gamma fit (it needs repeat buyers).
    pub gamma_gamma_error: Option<String>,
    /// Lines read, bad lines, and lines after `as_of`.
    pub input: FitInput,
    /// The learned purchase probability, with `--holdout-end`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purchase_model: Option<propensity::ModelFit>,
    /// The `[churn.bgnbd]` table (and with `--holdout-end`, `[churn.model]`)
    /// to paste into engage.toml.
    pub config: String,
}

/// What `engage fit` read.
#[derive(Debug, Serialize)]
pub struct FitInput {
    /// Event lines read.
    pub lines: u64,
    /// Lines that were bad input (left out).
    pub bad_lines: u64,
    /// Lines after the calibration end (and `--holdout-end`) (left out).
    pub after_as_of: u64,
}

/// `engage fit`: reads history from event files, keeps events up to
/// `as_of` (epoch ms), and fits both models in `unit`s; with `model`, also
/// learns the purchase probability from events up to its `holdout_end`,
/// with `config`'s scoring and the BG/NBD and Gamma-Gamma parameters just
/// fitted (the table printed carries both, to be used together).
pub fn fit_history(
    config: &Config,
    inputs: &[PathBuf],
    as_of: i64,
    unit: TimeUnit,
    model: Option<&propensity::ModelOptions>,
) -> Result<FitReport, FitHistoryError> {
    let mut counts = ReplaySummary::default();
    let now = crate::clock::wall_clock_ms();
    let end = model.map_or(as_of, |m| m.holdout_end.max(as_of));
    let events = read_events(inputs, Some(end), &config.input.limits(), now, &mut counts, |_| Ok(()))?;
    let calibration = &events[..events.partition_point(|e| e.ts_ms <= as_of)];
    let data = summaries(calibration, as_of, unit.days());
    let bgnbd = fit_bgnbd(&data)?;
    let gamma_gamma = fit_gamma_gamma(&data);
    let mut table = format!(
        "[churn.bgnbd]\nr = {:.6}\nalpha = {:.6}\na = {:.6}\nb = {:.6}\ntime_unit = \"{}\"\n",
        bgnbd.r,
        bgnbd.alpha,
        bgnbd.a,
        bgnbd.b,
        unit.config_value()
    );
    let purchase_model = match model {
        Some(opts) => {
            // The features use BG/NBD: learn with the parameters printed.
            let mut learning = config.clone();
            let b = &mut learning.churn.bgnbd;
            (b.r, b.alpha, b.a, b.b) = (bgnbd.r, bgnbd.alpha, bgnbd.a, bgnbd.b);
            b.time_unit = std::time::Duration::from_secs((unit.days() * 86_400.0) as u64);
            if let Ok(g) = &gamma_gamma {
                let c = &mut learning.churn.gamma_gamma;
                (c.p, c.q, c.gamma) = (g.p, g.q, g.gamma);
            }
            let fit = propensity::fit_model(&learning, &events, opts)?;
            table.push('\n');
            table.push_str(&propensity::model_toml(&fit.model));
            Some(fit)
        }
        None => None,
    };
    Ok(FitReport {
        bgnbd,
        gamma_gamma_error: gamma_gamma.as_ref().err().map(ToString::to_string),
        gamma_gamma: gamma_gamma.ok(),
        input: FitInput { lines: counts.lines, bad_lines: counts.dead_letters, after_as_of: counts.after_as_of },
        purchase_model,
        config: table,
    })
}

/// Builds each customer's purchase summary as of `as_of` (epoch ms) from
/// events, with days as engage counts them (UTC purchase days, same-day
/// purchases once), converted to `unit_days`-long time units. Customers
/// without a purchase are left out, as in the paper.
pub fn summaries(events: &[crate::engine::event::Event<'_>], as_of: i64, unit_days: f64) -> Vec<Summary> {
    use crate::engine::state::CustomerState;
    let rules = crate::engine::scoring::ScoringRules::new(&crate::config::ScoringConfig::default());
    let mut states: std::collections::BTreeMap<&str, CustomerState> = std::collections::BTreeMap::new();
    for e in events {
        if matches!(
            e.kind,
            crate::engine::event::EventKind::Purchase { .. } | crate::engine::event::EventKind::Refund { .. }
        ) {
            states.entry(e.customer_id.as_ref()).or_default().absorb(e, &[0.0; 5], &rules);
        }
    }
    states
        .values()
        .filter_map(|s| {
            let p = s.purchase_summary(as_of)?;
            let x = f64::from(p.repeat_purchases);
            // Refunds can exceed repeat purchases: no positive spend to model.
            let monetary = s.mean_repeat_spend(x).max(0.0);
            Some(Summary { x, t_x: p.recency_days / unit_days, t: p.age_days / unit_days, monetary })
        })
        .collect()
}

fn ln_gamma(x: f64) -> f64 {
    libm::lgamma(x)
}

/// log(e^a + e^b) without overflow.
fn log_add_exp(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    if m == f64::NEG_INFINITY { m } else { m + ((a - m).exp() + (b - m).exp()).ln() }
}

/// BG/NBD log-likelihood of one customer (paper eq. 6, in logs).
pub fn bgnbd_log_likelihood(r: f64, alpha: f64, a: f64, b: f64, s: &Summary) -> f64 {
    let x = s.x;
    let a1 = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln();
    let a2 = ln_gamma(a + b) + ln_gamma(b + x) - ln_gamma(b) - ln_gamma(a + b + x);
    let a3 = -(r + x) * (alpha + s.t).ln();
    if x > 0.0 {
        let a4 = a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + s.t_x).ln();
        a1 + a2 + log_add_exp(a3, a4)
    } else {
        a1 + a2 + a3
    }
}

/// Gamma-Gamma log-likelihood of one repeat customer.
pub fn gamma_gamma_log_likelihood(p: f64, q: f64, gamma: f64, s: &Summary) -> f64 {
    let (x, m) = (s.x, s.monetary);
    ln_gamma(p * x + q) - ln_gamma(p * x) - ln_gamma(q) + q * gamma.ln() + (p * x - 1.0) * m.ln() + p * x * x.ln()
        - (p * x + q) * (x * m + gamma).ln()
}

fn check(data: &[Summary]) -> Result<(), FitError> {
    for (i, s) in data.iter().enumerate() {
        let ok = [s.x, s.t_x, s.t, s.monetary].iter().all(|v| v.is_finite() && *v >= 0.0) && s.t_x <= s.t;
        if !ok {
            return Err(FitError::InvalidSummary(i));
        }
    }
    Ok(())
}

/// Fits BG/NBD to `data` (times in the desired unit).
pub fn fit_bgnbd(data: &[Summary]) -> Result<BgNbdFit, FitError> {
    check(data)?;
    if data.len() < 10 {
        return Err(FitError::TooFewCustomers(data.len()));
    }
    if data.iter().all(|s| s.x == 0.0) {
        return Err(FitError::NoRepeatBuyers("BG/NBD"));
    }
    let nll = |theta: &[f64; 4]| {
        let [r, alpha, a, b] = theta.map(f64::exp);
        -data.iter().map(|s| bgnbd_log_likelihood(r, alpha, a, b, s)).sum::<f64>()
    };
    let mean_t = data.iter().map(|s| s.t).sum::<f64>() / data.len() as f64;
    let starts = [[0.0, mean_t.max(1e-3).ln(), 0.0, 0.0], [-1.0, 1.0, -0.5, 0.5], [0.5, 2.0, 0.5, 1.5]];
    let (best, value) = minimise(nll, &starts, "BG/NBD")?;
    let [r, alpha, a, b] = best.map(f64::exp);
    Ok(BgNbdFit { r, alpha, a, b, log_likelihood: -value, customers: data.len() })
}

/// Fits Gamma-Gamma to the repeat customers of `data`.
pub fn fit_gamma_gamma(data: &[Summary]) -> Result<GammaGammaFit, FitError> {
    check(data)?;
    let repeat: Vec<Summary> = data.iter().copied().filter(|s| s.x > 0.0 && s.monetary > 0.0).collect();
    if repeat.is_empty() {
        return Err(FitError::NoRepeatBuyers("Gamma-Gamma"));
    }
    if repeat.len() < 10 {
        return Err(FitError::TooFewCustomers(repeat.len()));
    }
    let nll = |theta: &[f64; 3]| {
        let [p, q, g] = theta.map(f64::exp);
        -repeat.iter().map(|s| gamma_gamma_log_likelihood(p, q, g, s)).sum::<f64>()
    };
    let mean_m = repeat.iter().map(|s| s.monetary).sum::<f64>() / repeat.len() as f64;
    let starts = [[0.0, 0.0, mean_m.ln()], [1.0, 1.0, mean_m.ln()], [2.0, 1.5, 2.5]];
    let (best, value) = minimise(nll, &starts, "Gamma-Gamma")?;
    let [p, q, gamma] = best.map(f64::exp);
    Ok(GammaGammaFit { p, q, gamma, log_likelihood: -value, customers: repeat.len() })
}

/// The best of Nelder–Mead runs from each start; an error unless it is
/// finite.
fn minimise<const N: usize>(
    f: impl Fn(&[f64; N]) -> f64 + Copy,
    starts: &[[f64; N]],
    model: &'static str,
) -> Result<([f64; N], f64), FitError> {
    starts
        .iter()
        .map(|s| nelder_mead(f, *s))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .filter(|(_, v)| v.is_finite())
        .ok_or(FitError::DidNotConverge(model))
}

/// Nelder–Mead minimisation (standard coefficients), restarted from its
/// best point until a restart no longer improves, to avoid the method's
/// premature collapse on curved valleys.
fn nelder_mead<const N: usize>(f: impl Fn(&[f64; N]) -> f64, start: [f64; N]) -> ([f64; N], f64) {
    let eval = |p: &[f64; N]| {
        let v = f(p);
        if v.is_nan() { f64::INFINITY } else { v }
    };
    let mut best = (start, eval(&start));
    for _restart in 0..20 {
        let mut simplex: Vec<([f64; N], f64)> = vec![best];
        for i in 0..N {
            let mut p = best.0;
            p[i] += 0.5;
            simplex.push((p, eval(&p)));
        }
        for _ in 0..4000 {
            simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
            let spread = (simplex[N].1 - simplex[0].1).abs();
            if spread <= 1e-12 * (1.0 + simplex[0].1.abs()) {
                break;
            }
            let mut centroid = [0.0; N];
            for (p, _) in &simplex[..N] {
                for i in 0..N {
                    centroid[i] += p[i] / N as f64;
                }
            }
            let towards = |t: f64| {
                let mut p = [0.0; N];
                for i in 0..N {
                    p[i] = centroid[i] + t * (simplex[N].0[i] - centroid[i]);
                }
                p
            };
            let reflected = towards(-1.0);
            let fr = eval(&reflected);
            if fr < simplex[0].1 {
                let expanded = towards(-2.0);
                let fe = eval(&expanded);
                simplex[N] = if fe < fr { (expanded, fe) } else { (reflected, fr) };
            } else if fr < simplex[N - 1].1 {
                simplex[N] = (reflected, fr);
            } else {
                let contracted = if fr < simplex[N].1 { towards(-0.5) } else { towards(0.5) };
                let fc = eval(&contracted);
                if fc < simplex[N].1.min(fr) {
                    simplex[N] = (contracted, fc);
                } else {
                    let best_point = simplex[0].0;
                    for (p, v) in simplex.iter_mut().skip(1) {
                        for i in 0..N {
                            p[i] = best_point[i] + 0.5 * (p[i] - best_point[i]);
                        }
                        *v = eval(p);
                    }
                }
            }
        }
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        let improved = simplex[0].1 < best.1 - 1e-10 * (1.0 + best.1.abs());
        best = simplex[0];
        if !improved {
            break;
        }
    }
    best
}

/// `engage fit`'s command line.
#[derive(clap::Args)]
pub struct Args {
    /// Event files, JSONL or CSV (`*.csv`, with a header row); purchase
    /// and refund events are used for BG/NBD, every event for the purchase
    /// probability. Repeat for several.
    #[arg(long = "input", required = true)]
    inputs: Vec<PathBuf>,
    /// End of the calibration period of BG/NBD and Gamma-Gamma (RFC 3339);
    /// later events are ignored by them. Default: --holdout-end.
    #[arg(long, required_unless_present = "holdout_end")]
    as_of: Option<String>,
    /// Time unit of the parameters: weeks (as in the paper) or days.
    #[arg(long, value_enum, default_value = "weeks")]
    time_unit: TimeUnit,
    /// Also learn the purchase probability (P(purchase within
    /// churn.horizon)) from cut-offs rolled through the history, using no
    /// event after this time (RFC 3339): judge it with `engage evaluate`
    /// on a later period.
    #[arg(long)]
    holdout_end: Option<String>,
    /// The configuration the model will run with (scoring and churn.horizon
    /// make its features and label).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Time between cut-offs (e.g. 7d).
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    cutoff_every: std::time::Duration,
    /// Cut-offs taken at most, the latest ones.
    #[arg(long, default_value_t = 52)]
    max_cutoffs: usize,
    /// (customer, cut-off) examples kept at most; customers are sampled to
    /// stay under it (memory: about 400 bytes each while learning).
    #[arg(long, default_value_t = 400_000)]
    max_examples: usize,
    /// How the regression's output becomes a probability.
    #[arg(long, value_enum, default_value = "platt")]
    calibration: propensity::CalibrationMethod,
    /// Learn from labels shuffled with this seed: a check that fit finds
    /// no skill where there is none. It must refuse ("no skill").
    #[arg(long)]
    shuffle_labels: Option<u64>,
    /// Event time between churn sweeps while rolling (e.g. 1h, 1d).
    #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
    sweep_every: std::time::Duration,
}

/// Runs `engage fit`: prints the report as JSON, and the `[churn.bgnbd]`
/// table (and `[churn.model]`) on stderr.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let holdout_end = args.holdout_end.as_deref().map(crate::clock::parse_time).transpose().context("--holdout-end")?;
    let as_of = match (&args.as_of, holdout_end) {
        (Some(t), _) => crate::clock::parse_time(t).context("--as-of")?,
        (None, Some(t)) => t,
        (None, None) => anyhow::bail!("--as-of or --holdout-end is needed"),
    };
    if args.cutoff_every.is_zero() {
        anyhow::bail!("--cutoff-every must be longer than zero");
    }
    let model = holdout_end.map(|holdout_end| propensity::ModelOptions {
        holdout_end,
        cutoff_every_ms: args.cutoff_every.as_millis() as i64,
        max_cutoffs: args.max_cutoffs,
        max_examples: args.max_examples,
        calibration: args.calibration,
        shuffle_labels: args.shuffle_labels,
        sweep_every_ms: args.sweep_every.as_millis() as i64,
    });
    let report = fit_history(&config, &args.inputs, as_of, args.time_unit, model.as_ref())?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprint!("{}", report.config);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nelder_mead_finds_the_minimum_of_a_curved_valley() {
        // Rosenbrock: minimum 0 at (1, 1).
        let (p, v) =
            nelder_mead(|p: &[f64; 2]| (1.0 - p[0]).powi(2) + 100.0 * (p[1] - p[0] * p[0]).powi(2), [-1.2, 1.0]);
        assert!(v < 1e-10 && (p[0] - 1.0).abs() < 1e-4 && (p[1] - 1.0).abs() < 1e-4, "{p:?} {v}");
    }

    #[test]
    fn tiny_data_and_one_time_buyers_are_refused_with_a_reason() {
        let one = Summary { x: 0.0, t_x: 0.0, t: 10.0, monetary: 0.0 };
        assert_eq!(fit_bgnbd(&[one; 3]).unwrap_err(), FitError::TooFewCustomers(3));
        assert_eq!(fit_bgnbd(&[one; 50]).unwrap_err(), FitError::NoRepeatBuyers("BG/NBD"));
        assert_eq!(fit_gamma_gamma(&[one; 50]).unwrap_err(), FitError::NoRepeatBuyers("Gamma-Gamma"));
        let bad = Summary { x: 1.0, t_x: 20.0, t: 10.0, monetary: 5.0 };
        assert_eq!(fit_bgnbd(&[bad; 20]).unwrap_err(), FitError::InvalidSummary(0));
    }

    #[test]
    fn extreme_values_stay_finite() {
        let mut data: Vec<Summary> = (0..40)
            .map(|i| Summary { x: f64::from(i % 5), t_x: f64::from(i % 5) * 2.0, t: 80.0, monetary: 10.0 })
            .collect();
        data.push(Summary { x: 5000.0, t_x: 999.0, t: 1000.0, monetary: 1e6 });
        let fit = fit_bgnbd(&data).unwrap();
        assert!(fit.log_likelihood.is_finite() && fit.r > 0.0 && fit.alpha > 0.0);
        let gg = fit_gamma_gamma(&data).unwrap();
        assert!(gg.log_likelihood.is_finite());
    }
}
