//! The four lifecycle stages of docs/model.md "Lifecycle stages", derived afresh from the state each
//! time, so a customer falls back from `value_creation` to `intelligence` as
//! soon as their advocacy decays.

use serde::Serialize;

use crate::config::LifecycleConfig;

/// Where a customer relationship stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Stage {
    /// A new relationship: first seen recently, fewer than 2 purchase days.
    #[default]
    Initiation = 1,
    /// Forming: a purchase or a few active days, not yet established.
    Integration = 2,
    /// Established: we know their rhythm.
    Intelligence = 3,
    /// An advocate: established, socially engaged and highly scored.
    ValueCreation = 4,
}

impl Stage {
    /// The message name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Initiation => "initiation",
            Stage::Integration => "integration",
            Stage::Intelligence => "intelligence",
            Stage::ValueCreation => "value_creation",
        }
    }

    /// From the persisted numeric form; unknown values read as initiation.
    pub fn from_u8(v: u8) -> Stage {
        match v {
            2 => Stage::Integration,
            3 => Stage::Intelligence,
            4 => Stage::ValueCreation,
            _ => Stage::Initiation,
        }
    }
}

/// What the stage depends on.
#[derive(Clone, Copy, Debug)]
pub struct StageFacts {
    /// Time since first seen, ms.
    pub age_ms: i64,
    /// Distinct active days.
    pub active_days: u32,
    /// Distinct purchase days.
    pub purchase_days: u32,
    /// Time between the first and latest activity, ms.
    pub active_span_ms: i64,
    /// Social dimension score, 0–100.
    pub social: f64,
    /// Composite score, 0–100.
    pub score: f64,
}

/// Compiled stage thresholds.
#[derive(Clone, Debug)]
pub struct LifecycleRules {
    new_customer_ms: i64,
    forming_active_days: u32,
    established_purchase_days: u32,
    established_active_days: u32,
    established_span_ms: i64,
    advocate_social: f64,
    advocate_score: f64,
}

impl LifecycleRules {
    /// Compiles a (validated) lifecycle config.
    pub fn new(c: &LifecycleConfig) -> LifecycleRules {
        LifecycleRules {
            new_customer_ms: c.new_customer.as_millis() as i64,
            forming_active_days: c.forming_active_days,
            established_purchase_days: c.established_purchase_days,
            established_active_days: c.established_active_days,
            established_span_ms: c.established_span.as_millis() as i64,
            advocate_social: c.advocate_social,
            advocate_score: c.advocate_score,
        }
    }

    /// The stage for these facts. Established customers are `intelligence`
    /// or `value_creation`; the rest are `integration` once the relationship
    /// is forming (a purchase or `forming_active_days`) and no longer new,
    /// else `initiation` — which also covers a customer seen once long ago
    /// who never came back: no relationship ever formed.
    pub fn stage(&self, f: &StageFacts) -> Stage {
        let established = f.purchase_days >= self.established_purchase_days
            || (f.active_days >= self.established_active_days && f.active_span_ms >= self.established_span_ms);
        if established {
            if f.social >= self.advocate_social && f.score >= self.advocate_score {
                Stage::ValueCreation
            } else {
                Stage::Intelligence
            }
        } else if f.age_ms < self.new_customer_ms && f.purchase_days < 2 {
            Stage::Initiation
        } else if f.purchase_days >= 1 || f.active_days >= self.forming_active_days {
            Stage::Integration
        } else {
            Stage::Initiation
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::event::DAY_MS;

    fn rules() -> LifecycleRules {
        LifecycleRules::new(&LifecycleConfig::default())
    }

    const fn days(n: i64) -> i64 {
        n * DAY_MS
    }

    fn facts(age_days: i64, active_days: u32, purchase_days: u32, span_days: i64) -> StageFacts {
        StageFacts {
            age_ms: days(age_days),
            active_days,
            purchase_days,
            active_span_ms: days(span_days),
            social: 0.0,
            score: 30.0,
        }
    }

    #[test]
    fn new_customers_are_in_initiation_even_after_one_purchase() {
        assert_eq!(rules().stage(&facts(2, 1, 0, 0)), Stage::Initiation);
        assert_eq!(rules().stage(&facts(13, 5, 1, 12)), Stage::Initiation);
    }

    #[test]
    fn a_second_purchase_day_or_age_moves_a_forming_customer_to_integration() {
        assert_eq!(rules().stage(&facts(5, 2, 2, 4)), Stage::Integration);
        assert_eq!(rules().stage(&facts(20, 1, 1, 0)), Stage::Integration);
        assert_eq!(rules().stage(&facts(20, 3, 0, 10)), Stage::Integration);
        // Seen on two days a month ago, never bought: nothing formed.
        assert_eq!(rules().stage(&facts(30, 2, 0, 1)), Stage::Initiation);
    }

    #[test]
    fn established_by_three_purchase_days_or_ten_active_days_over_ninety() {
        assert_eq!(rules().stage(&facts(40, 3, 3, 30)), Stage::Intelligence);
        assert_eq!(rules().stage(&facts(100, 10, 0, 90)), Stage::Intelligence);
        assert_eq!(rules().stage(&facts(100, 10, 0, 89)), Stage::Integration);
    }

    #[test]
    fn advocates_need_social_forty_and_score_sixty_and_fall_back_when_it_decays() {
        let mut f = facts(100, 20, 5, 99);
        f.social = 40.0;
        f.score = 60.0;
        assert_eq!(rules().stage(&f), Stage::ValueCreation);
        f.social = 39.9;
        assert_eq!(rules().stage(&f), Stage::Intelligence);
    }
}
