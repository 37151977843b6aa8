//! The engagement score (docs/model.md "Dimensions and the score"): five exponentially decayed dimensions, the
//! saturating curves that turn them into 0–100 scores, the weighted composite,
//! and the *drivers* that say which dimensions moved it.
//!
//! Pure functions over plain numbers; the per-customer bookkeeping is in
//! [`crate::engine::state`].

use serde::Serialize;

use crate::config::ScoringConfig;
use crate::engine::event::EventKind;
use crate::vocab::{ClickKind, DIMENSIONS, Dimension, Signal};

/// The scoring rules, compiled from [`ScoringConfig`] into flat arrays so that
/// applying an event is a few multiply-adds.
#[derive(Clone, Debug)]
pub struct ScoringRules {
    /// Decay rate per millisecond, ln 2 / half-life.
    pub decay_per_ms: [f64; DIMENSIONS],
    /// For each dimension, the first dimension with the same rate, so
    /// [`ScoringRules::decay`] computes each distinct exponential once.
    same_rate_as: [usize; DIMENSIONS],
    saturation: [f64; DIMENSIONS],
    /// Composite weights, normalised to sum to 1.
    weight: [f64; DIMENSIONS],
    table: [[f64; DIMENSIONS]; Signal::COUNT],
    /// Publication threshold (docs/model.md "Guarantees").
    pub min_delta: f64,
}

impl ScoringRules {
    /// Compiles a (validated) scoring config.
    pub fn new(config: &ScoringConfig) -> ScoringRules {
        let mut rules = ScoringRules {
            decay_per_ms: [0.0; DIMENSIONS],
            same_rate_as: [0, 1, 2, 3, 4],
            saturation: [0.0; DIMENSIONS],
            weight: [0.0; DIMENSIONS],
            table: [[0.0; DIMENSIONS]; Signal::COUNT],
            min_delta: config.min_delta,
        };
        let total: f64 = config.dimensions().iter().map(|(_, d)| d.weight).sum();
        for (dim, d) in config.dimensions() {
            let i = dim as usize;
            rules.decay_per_ms[i] = std::f64::consts::LN_2 / d.half_life.as_millis() as f64;
            rules.saturation[i] = d.saturation;
            rules.weight[i] = d.weight / total;
            for (name, w) in &d.events {
                // validate() has rejected unknown names.
                if let Some(signal) = Signal::parse(name) {
                    rules.table[signal.index()][i] = *w;
                }
            }
        }
        for i in 0..DIMENSIONS {
            rules.same_rate_as[i] = (0..=i).find(|&j| rules.decay_per_ms[j] == rules.decay_per_ms[i]).unwrap_or(i);
        }
        rules
    }

    /// What one event adds to each dimension's raw value at its event time.
    pub fn contributions(&self, kind: &EventKind) -> [f64; DIMENSIONS] {
        let mut c = [0.0; DIMENSIONS];
        let mut add = |signal: Signal, times: f64| {
            for (ci, w) in c.iter_mut().zip(&self.table[signal.index()]) {
                *ci += w * times;
            }
        };
        match *kind {
            EventKind::Click { kind: ClickKind::Unknown, .. } => {}
            EventKind::Click { kind, rating } => {
                add(Signal::click(kind), 1.0);
                if let Some(r) = rating {
                    add(Signal::FEEDBACK_PER_RATING_POINT, r - 3.0);
                }
            }
            EventKind::Purchase { amount, loyalty_member, coupon_used } => {
                add(Signal::PURCHASE, 1.0);
                add(Signal::PURCHASE_PER_LN_AMOUNT, amount.ln_1p());
                if loyalty_member {
                    add(Signal::PURCHASE_LOYALTY_MEMBER, 1.0);
                }
                if coupon_used {
                    add(Signal::PURCHASE_WITH_COUPON, 1.0);
                }
            }
            EventKind::Refund { .. } => add(Signal::REFUND, 1.0),
        }
        c
    }

    /// `e^(−λ·dt)` for each dimension: what a value is worth `dt_ms` later.
    pub fn decay(&self, dt_ms: i64) -> [f64; DIMENSIONS] {
        let mut d = [1.0; DIMENSIONS];
        if dt_ms <= 0 {
            return d;
        }
        let dt = dt_ms as f64;
        for i in 0..DIMENSIONS {
            let j = self.same_rate_as[i];
            d[i] = if j < i { d[j] } else { (-self.decay_per_ms[i] * dt).exp() };
        }
        d
    }

    /// Raw values → 0–100 dimension scores. Satisfaction is centred (no
    /// signal is 50, poor ratings pull it below); the others saturate from 0.
    pub fn dimension_scores(&self, raw: &[f64; DIMENSIONS]) -> [f64; DIMENSIONS] {
        let mut s = [0.0; DIMENSIONS];
        for i in 0..DIMENSIONS {
            s[i] = if i == Dimension::Satisfaction as usize {
                50.0 + 50.0 * (raw[i] / self.saturation[i]).tanh()
            } else {
                100.0 * (1.0 - (-raw[i].max(0.0) / self.saturation[i]).exp())
            };
        }
        s
    }

    /// Each dimension's share of the composite score, in score points.
    pub fn contributions_to_score(&self, scores: &[f64; DIMENSIONS]) -> [f64; DIMENSIONS] {
        let mut c = [0.0; DIMENSIONS];
        for i in 0..DIMENSIONS {
            c[i] = self.weight[i] * scores[i];
        }
        c
    }

    /// The composite score: the weighted mean of the dimension scores.
    pub fn composite(&self, scores: &[f64; DIMENSIONS]) -> f64 {
        self.contributions_to_score(scores).iter().sum::<f64>().clamp(0.0, 100.0)
    }

    /// Why the score moved from `before` to `after` (dimension scores): the
    /// dimensions whose contribution changed by at least 0.05 points, largest
    /// change first.
    pub fn drivers(&self, before: &[f64; DIMENSIONS], after: &[f64; DIMENSIONS]) -> Drivers {
        let (b, a) = (self.contributions_to_score(before), self.contributions_to_score(after));
        let mut d = Drivers::default();
        for dim in Dimension::ALL {
            let delta = a[dim as usize] - b[dim as usize];
            if delta.abs() >= 0.05 {
                d.items[d.len as usize] = Driver { dimension: dim, delta };
                d.len += 1;
            }
        }
        d.items[..d.len as usize].sort_by(|x, y| y.delta.abs().total_cmp(&x.delta.abs()));
        d
    }
}

/// One dimension's change in composite points.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Driver {
    /// The dimension that moved.
    pub dimension: Dimension,
    /// Its change in composite score points (positive: pushed the score up).
    pub delta: f64,
}

/// The drivers of a score change, largest first; a fixed array so building a
/// score change does not allocate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Drivers {
    items: [Driver; DIMENSIONS],
    len: u8,
}

impl Default for Drivers {
    fn default() -> Self {
        Drivers { items: [Driver { dimension: Dimension::Attention, delta: 0.0 }; DIMENSIONS], len: 0 }
    }
}

impl Drivers {
    /// The drivers as a slice, largest change first.
    pub fn as_slice(&self) -> &[Driver] {
        &self.items[..self.len as usize]
    }
}

impl Serialize for Drivers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> ScoringRules {
        ScoringRules::new(&ScoringConfig::default())
    }

    fn click(kind: ClickKind) -> EventKind {
        EventKind::Click { kind, rating: None }
    }

    #[test]
    fn click_weights_follow_the_spec_table() {
        let r = rules();
        assert_eq!(r.contributions(&click(ClickKind::AddToCart)), [4.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(r.contributions(&click(ClickKind::Referral)), [0.0, 0.0, 12.0, 0.0, 0.0]);
        assert_eq!(r.contributions(&click(ClickKind::LoyaltySignup)), [0.0, 0.0, 0.0, 10.0, 0.0]);
        assert_eq!(r.contributions(&click(ClickKind::SupportContact)), [0.0, 0.0, 0.0, 0.0, 2.0]);
        assert_eq!(r.contributions(&click(ClickKind::Unknown)), [0.0; 5]);
    }

    #[test]
    fn purchase_is_ten_plus_two_ln_one_plus_amount_with_loyalty_extras() {
        // amount e−1 → ln(1+amount) = 1 → transaction 10 + 2·1 = 12;
        // loyalty member +3 and coupon +2 → loyalty 5.
        let p = EventKind::Purchase { amount: std::f64::consts::E - 1.0, loyalty_member: true, coupon_used: true };
        let c = rules().contributions(&p);
        assert!((c[1] - 12.0).abs() < 1e-12, "{c:?}");
        assert_eq!(c[3], 5.0);
        assert_eq!(rules().contributions(&EventKind::Refund { amount: 3.0 })[1], -5.0);
    }

    #[test]
    fn feedback_moves_satisfaction_by_four_per_rating_point_around_three() {
        let r = rules();
        let one_star = r.contributions(&EventKind::Click { kind: ClickKind::Feedback, rating: Some(1.0) });
        assert_eq!(one_star[4], -8.0); // (1−3)·4
        let five = r.contributions(&EventKind::Click { kind: ClickKind::Feedback, rating: Some(5.0) });
        assert_eq!(five[4], 8.0);
    }

    #[test]
    fn decay_halves_at_the_half_life() {
        let d = rules().decay(7 * 86_400_000);
        assert!((d[0] - 0.5).abs() < 1e-12); // attention: 7 d
        assert!((d[3] - 0.5f64.powf(7.0 / 60.0)).abs() < 1e-12); // loyalty: 60 d
    }

    #[test]
    fn saturating_and_centred_curves() {
        let r = rules();
        // attention v = 20 = s → 100·(1−e^−1) = 63.21; negative v floors at 0.
        // satisfaction v = 0 → 50; v = −10 = −s → 50 + 50·tanh(−1) = 11.92.
        let s = r.dimension_scores(&[20.0, -3.0, 0.0, 0.0, -10.0]);
        assert!((s[0] - 63.212).abs() < 1e-3);
        assert_eq!(s[1], 0.0);
        assert!((s[4] - 11.920).abs() < 1e-3);
        // Composite: 0.25·63.212 + 0.15·11.920 = 17.591.
        assert!((r.composite(&s) - 17.591).abs() < 1e-3);
    }

    #[test]
    fn drivers_name_the_dimensions_that_moved_largest_first() {
        let r = rules();
        let before = [10.0, 0.0, 0.0, 0.0, 50.0];
        let after = [20.0, 40.0, 0.0, 0.0, 50.0];
        // attention +10·0.25 = +2.5; transaction +40·0.30 = +12.
        let d = r.drivers(&before, &after);
        let got: Vec<(Dimension, f64)> = d.as_slice().iter().map(|d| (d.dimension, d.delta)).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, Dimension::Transaction);
        assert!((got[0].1 - 12.0).abs() < 1e-9 && (got[1].1 - 2.5).abs() < 1e-9);
    }
}
