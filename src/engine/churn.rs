//! Churn health (docs/model.md "Health"): the BG/NBD probability that a customer is still
//! alive, inactivity against the customer's own cadence, and score drop, and
//! the health they add up to.

use serde::Serialize;

use crate::config::{ChurnConfig, HealthFrom};
use crate::engine::propensity::PurchaseModel;
use crate::vocab::Horizon;

pub use crate::vocab::Health;

/// BG/NBD parameters in the model's own time unit.
#[derive(Clone, Copy, Debug)]
pub struct BgNbd {
    /// Shape of the purchase-rate Gamma.
    pub r: f64,
    /// Scale of the purchase-rate Gamma.
    pub alpha: f64,
    /// Drop-out Beta parameter.
    pub a: f64,
    /// Drop-out Beta parameter.
    pub b: f64,
}

impl BgNbd {
    /// P(alive | x, t_x, T) (Fader, Hardie & Lee 2005, eq. 11): `x` repeat
    /// purchases, the last at `t_x`, observed for `T` since the first, all in
    /// the parameters' time unit. 1 for `x = 0` (the model cannot have seen a
    /// drop-out before the first repeat purchase).
    ///
    /// Computed in logs, `1 / (1 + e^L)` with
    /// `L = ln a − ln(b+x−1) + (r+x)·(ln(α+T) − ln(α+t_x))`, which stays finite
    /// for any x and T where the direct form overflows.
    pub fn p_alive(&self, x: f64, t_x: f64, big_t: f64) -> f64 {
        if x <= 0.0 {
            return 1.0;
        }
        let l = self.a.ln() - (self.b + x - 1.0).ln()
            + (self.r + x) * ((self.alpha + big_t).ln() - (self.alpha + t_x).ln());
        // Logistic of −L without overflow in either direction.
        if l > 0.0 {
            let e = (-l).exp();
            e / (1.0 + e)
        } else {
            1.0 / (1.0 + l.exp())
        }
    }
}

impl BgNbd {
    /// Expected purchases in the next `t` (model time units) for a customer
    /// with summary (x, t_x, T): the paper's eq. 10, with the Gauss
    /// hypergeometric function summed in logs so long histories stay finite.
    pub fn expected_purchases(&self, t: f64, x: f64, t_x: f64, big_t: f64) -> f64 {
        let (r, alpha, a, b) = (self.r, self.alpha, self.a, self.b);
        let z = t / (alpha + big_t + t);
        let ln_hyp = ln_hyp2f1(r + x, b + x, a + b + x - 1.0, z);
        let first = (a + b + x - 1.0) / (a - 1.0);
        let second = 1.0 - (ln_hyp + (r + x) * ((alpha + big_t) / (alpha + big_t + t)).ln()).exp();
        let denominator =
            if x > 0.0 { 1.0 + (a / (b + x - 1.0)) * ((alpha + big_t) / (alpha + t_x)).powf(r + x) } else { 1.0 };
        (first * second / denominator).max(0.0)
    }
}

/// ln ₂F₁(a, b; c; z) for positive a, b, c and 0 ≤ z < 1, by its power
/// series with the running sum rescaled so it cannot overflow.
fn ln_hyp2f1(a: f64, b: f64, c: f64, z: f64) -> f64 {
    let (mut term, mut sum, mut ln_scale) = (1.0f64, 1.0f64, 0.0f64);
    for k in 0..1_000_000 {
        let k = f64::from(k);
        term *= (a + k) * (b + k) / ((c + k) * (k + 1.0)) * z;
        sum += term;
        if sum > 1e200 {
            sum *= 1e-200;
            term *= 1e-200;
            ln_scale += 200.0 * std::f64::consts::LN_10;
        }
        if term <= 1e-17 * sum {
            break;
        }
    }
    sum.ln() + ln_scale
}

/// Gamma-Gamma spend model parameters (Fader, Hardie & Lee 2005, "RFM and
/// CLV").
#[derive(Clone, Copy, Debug)]
pub struct GammaGamma {
    /// Shape of the per-transaction spend Gamma.
    pub p: f64,
    /// Shape of the Gamma over customers' spend scale.
    pub q: f64,
    /// Scale of the Gamma over customers' spend scale.
    pub gamma: f64,
}

impl GammaGamma {
    /// Expected spend per transaction for a customer with `x` repeat
    /// transactions of mean value `mean`: a weighted mix of the population
    /// mean and the customer's own (the population mean when x = 0).
    pub fn expected_order_value(&self, x: f64, mean: f64) -> f64 {
        let population = self.gamma * self.p / (self.q - 1.0);
        let weight = self.p * x / (self.p * x + self.q - 1.0);
        (1.0 - weight) * population + weight * mean
    }
}

/// The signal values a health assessment is made from.
#[derive(Clone, Copy, Debug)]
pub struct Signals {
    /// BG/NBD P(alive), 0–1.
    pub p_alive: f64,
    /// Time since the latest activity, days.
    pub idle_days: f64,
    /// The customer's mean gap between active days (or the prior), days.
    pub cadence_days: f64,
    /// Current composite score.
    pub score: f64,
    /// Highest score within the score-drop window.
    pub peak: f64,
    /// The learned probability of a purchase within the horizon (NaN when
    /// there is no model, or it was not needed).
    pub p_purchase: f64,
}

impl Signals {
    /// Idle time in multiples of the cadence.
    pub fn idle_ratio(&self) -> f64 {
        self.idle_days / self.cadence_days
    }
}

/// One fired churn signal, reported in an alert.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Reason {
    /// `p_alive`, `idle_ratio`, `score_drop` (score ÷ peak), or the learned
    /// probability by its field name (`p_purchase_90d`).
    pub signal: &'static str,
    /// The signal's value.
    pub value: f64,
    /// The threshold it crossed.
    pub threshold: f64,
}

/// Compiled churn thresholds.
#[derive(Clone, Debug)]
pub struct ChurnRules {
    /// The BG/NBD model.
    pub model: BgNbd,
    /// The Gamma-Gamma spend model.
    pub spend: GammaGamma,
    /// The model's time unit, in days.
    pub unit_days: f64,
    /// Cadence prior for customers with fewer than two active days, days.
    pub default_cadence_days: f64,
    /// Score-drop window, ms.
    pub peak_window_ms: i64,
    /// The learned purchase probability, when configured.
    pub purchase_model: Option<PurchaseModel>,
    /// Whether health comes from the model instead of the three signals.
    pub health_from: HealthFrom,
    p_purchase_at_risk: f64,
    p_purchase_dormant: f64,
    p_alive_at_risk: f64,
    p_alive_dormant: f64,
    idle_at_risk: f64,
    idle_dormant: f64,
    dormant_min_idle_days: f64,
    score_drop_ratio: f64,
    score_drop_min_peak: f64,
    overdue_gate: f64,
}

impl ChurnRules {
    /// Compiles a (validated) churn config.
    pub fn new(c: &ChurnConfig) -> ChurnRules {
        let days = |d: std::time::Duration| d.as_secs_f64() / 86_400.0;
        ChurnRules {
            model: BgNbd { r: c.bgnbd.r, alpha: c.bgnbd.alpha, a: c.bgnbd.a, b: c.bgnbd.b },
            spend: GammaGamma { p: c.gamma_gamma.p, q: c.gamma_gamma.q, gamma: c.gamma_gamma.gamma },
            unit_days: days(c.bgnbd.time_unit),
            default_cadence_days: days(c.default_cadence),
            peak_window_ms: c.score_drop_window.as_millis() as i64,
            // A validated config has a supported horizon.
            purchase_model: c
                .model
                .as_ref()
                .map(|m| PurchaseModel::new(m, c.horizon_kind().unwrap_or(Horizon::Days90))),
            health_from: if c.model.is_some() { c.health_from } else { HealthFrom::Signals },
            p_purchase_at_risk: c.p_purchase_at_risk,
            p_purchase_dormant: c.p_purchase_dormant,
            p_alive_at_risk: c.p_alive_at_risk,
            p_alive_dormant: c.p_alive_dormant,
            idle_at_risk: c.idle_at_risk,
            idle_dormant: c.idle_dormant,
            dormant_min_idle_days: days(c.dormant_min_idle),
            score_drop_ratio: c.score_drop_ratio,
            score_drop_min_peak: c.score_drop_min_peak,
            overdue_gate: c.overdue_gate,
        }
    }

    /// P(alive) from a purchase summary in days (x repeat purchase days,
    /// t_x and T in days), converted to the model's time unit.
    pub fn p_alive_days(&self, x: u32, t_x_days: f64, age_days: f64) -> f64 {
        self.model.p_alive(f64::from(x), t_x_days / self.unit_days, age_days / self.unit_days)
    }

    /// Whether the customer has been idle long enough for P(alive) and score
    /// drop to count (`churn.overdue_gate`). Until then P(alive) need not be
    /// computed.
    pub fn is_overdue(&self, s: &Signals) -> bool {
        s.idle_ratio() >= self.overdue_gate
    }

    /// Whether health is assessed from the learned probability, so an
    /// overdue customer's `p_purchase` must be computed first.
    pub fn health_from_model(&self) -> bool {
        self.health_from == HealthFrom::Model
    }

    /// The health the signals call for, with the signals that fired (worst
    /// first). P(alive) and score drop only count once the customer is
    /// overdue ([`ChurnRules::is_overdue`]); so does the learned
    /// probability, when health comes from it (`churn.health_from`), for
    /// the same reason: a frequent visitor would otherwise flip between
    /// `active` at each visit and `at_risk` at each sweep.
    pub fn assess(&self, s: &Signals) -> (Health, Vec<Reason>) {
        let overdue = self.is_overdue(s);
        if let (HealthFrom::Model, Some(model)) = (self.health_from, &self.purchase_model) {
            let signal = model.horizon().field();
            let reason = |threshold| vec![Reason { signal, value: s.p_purchase, threshold }];
            return if overdue && s.p_purchase < self.p_purchase_dormant {
                (Health::Dormant, reason(self.p_purchase_dormant))
            } else if overdue && s.p_purchase < self.p_purchase_at_risk {
                (Health::AtRisk, reason(self.p_purchase_at_risk))
            } else {
                (Health::Active, Vec::new())
            };
        }
        let ratio = s.idle_ratio();
        let mut dormant = Vec::new();
        let mut at_risk = Vec::new();
        if overdue && s.p_alive < self.p_alive_dormant {
            dormant.push(Reason { signal: "p_alive", value: s.p_alive, threshold: self.p_alive_dormant });
        } else if overdue && s.p_alive < self.p_alive_at_risk {
            at_risk.push(Reason { signal: "p_alive", value: s.p_alive, threshold: self.p_alive_at_risk });
        }
        if ratio >= self.idle_dormant && s.idle_days >= self.dormant_min_idle_days {
            dormant.push(Reason { signal: "idle_ratio", value: ratio, threshold: self.idle_dormant });
        } else if ratio >= self.idle_at_risk {
            at_risk.push(Reason { signal: "idle_ratio", value: ratio, threshold: self.idle_at_risk });
        }
        if overdue && s.peak >= self.score_drop_min_peak && s.score <= self.score_drop_ratio * s.peak {
            at_risk.push(Reason { signal: "score_drop", value: s.score / s.peak, threshold: self.score_drop_ratio });
        }
        if !dormant.is_empty() {
            dormant.extend(at_risk);
            (Health::Dormant, dormant)
        } else if !at_risk.is_empty() {
            (Health::AtRisk, at_risk)
        } else {
            (Health::Active, Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parameters `lifetimes` 0.11.3 fits to CDNOW, with its outputs.
    const LIFETIMES: BgNbd = BgNbd { r: 0.242593, alpha: 4.413532, a: 0.792886, b: 2.425752 };

    #[test]
    fn p_alive_matches_lifetimes_reference_values() {
        // lifetimes.BetaGeoFitter.conditional_probability_alive, to 4 dp.
        // x=2, t_x=30.43, T=38.86: L = ln(0.792886/3.425752)
        //   + 2.242593·ln(43.273532/34.843532) = −1.46337 + 0.48592 = −0.97745,
        //   1/(1+e^L) = 0.7266.
        for (x, t_x, t, want) in [(2.0, 30.43, 38.86, 0.7266), (1.0, 1.71, 38.86, 0.2122), (26.0, 30.86, 31.0, 0.9689)]
        {
            let got = LIFETIMES.p_alive(x, t_x, t);
            assert!((got - want).abs() < 5e-5, "x={x}: {got} vs {want}");
        }
        assert_eq!(LIFETIMES.p_alive(0.0, 0.0, 38.86), 1.0);
    }

    #[test]
    fn expected_purchases_match_lifetimes() {
        // lifetimes 0.11.3 conditional_expected_number_of_purchases_up_to_time
        // with the fitted CDNOW parameters (values printed by lifetimes):
        for (t, x, t_x, big_t, want) in [
            (39.0, 2.0, 30.43, 38.86, 1.2259103856938929),
            (39.0, 0.0, 0.0, 38.86, 0.19478091229356514),
            (90.0 / 7.0, 26.0, 30.86, 31.0, 8.196313950449401),
        ] {
            let e = LIFETIMES.expected_purchases(t, x, t_x, big_t);
            assert!((e - want).abs() < 1e-9 * want, "x={x}: {e} vs {want}");
        }
        // Long histories stay finite.
        assert!(LIFETIMES.expected_purchases(13.0, 500.0, 999.0, 1000.0).is_finite());
    }

    #[test]
    fn expected_order_value_matches_lifetimes() {
        // lifetimes GammaGammaFitter.conditional_expected_average_profit with
        // p 6.25, q 3.74, v 15.44: x=2, mean 22.345 → 24.659613; x=0 → 35.218978.
        let gg = GammaGamma { p: 6.25, q: 3.74, gamma: 15.44 };
        assert!((gg.expected_order_value(2.0, 22.345) - 24.659613).abs() < 1e-6);
        assert!((gg.expected_order_value(0.0, 0.0) - 35.218978).abs() < 1e-6);
    }

    #[test]
    fn p_alive_stays_finite_for_huge_histories() {
        // (r+x)·ln(...) ≈ 1e6·ln(2): e^L overflows f64 if computed directly.
        let p = LIFETIMES.p_alive(1e6, 1.0, 10_000.0);
        assert!(p.is_finite() && (0.0..1e-300).contains(&p));
        let p = LIFETIMES.p_alive(1e6, 10_000.0, 10_000.0);
        assert!(p > 0.99999, "{p}");
    }

    fn signals(p_alive: f64, idle_days: f64, score: f64, peak: f64) -> Signals {
        Signals { p_alive, idle_days, cadence_days: 2.0, score, peak, p_purchase: f64::NAN }
    }

    #[test]
    fn health_thresholds_follow_the_spec_defaults() {
        let r = ChurnRules::new(&ChurnConfig::default());
        // Cadence 2 d: idle 6 d = 3× → at_risk; idle 12 d = 6× but < 30 d → still at_risk.
        assert_eq!(r.assess(&signals(0.9, 5.9, 50.0, 50.0)).0, Health::Active);
        assert_eq!(r.assess(&signals(0.9, 6.0, 50.0, 50.0)).0, Health::AtRisk);
        assert_eq!(r.assess(&signals(0.9, 29.0, 50.0, 50.0)).0, Health::AtRisk);
        assert_eq!(r.assess(&signals(0.9, 30.0, 50.0, 50.0)).0, Health::Dormant);
        // Overdue (idle ≥ 1× cadence): P(alive) 0.45 → at_risk, 0.15 → dormant.
        let (h, reasons) = r.assess(&signals(0.45, 2.0, 50.0, 50.0));
        assert_eq!((h, reasons[0].signal), (Health::AtRisk, "p_alive"));
        assert_eq!(r.assess(&signals(0.15, 2.0, 50.0, 50.0)).0, Health::Dormant);
        // Score 25 ≤ half of peak 50 → at_risk, reported as ratio 0.5.
        let (h, reasons) = r.assess(&signals(0.9, 2.0, 25.0, 50.0));
        assert_eq!((h, reasons[0].signal, reasons[0].value), (Health::AtRisk, "score_drop", 0.5));
    }

    #[test]
    fn model_signals_wait_until_the_customer_is_overdue() {
        let r = ChurnRules::new(&ChurnConfig::default());
        // Active yesterday, cadence 2 d: not overdue, so low P(alive) and a
        // dropped score do not fire yet.
        assert_eq!(r.assess(&signals(0.1, 1.0, 10.0, 50.0)).0, Health::Active);
        let ungated = ChurnRules::new(&ChurnConfig { overdue_gate: 0.0, ..ChurnConfig::default() });
        assert_eq!(ungated.assess(&signals(0.1, 1.0, 10.0, 50.0)).0, Health::Dormant);
    }

    #[test]
    fn small_peaks_never_count_as_a_drop() {
        let r = ChurnRules::new(&ChurnConfig::default());
        assert_eq!(r.assess(&signals(0.9, 2.0, 5.0, 15.0)).0, Health::Active);
    }
}
