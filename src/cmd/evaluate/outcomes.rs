//! Holdout outcomes: what each customer did in (T1, T2], set against the
//! engine's state for them at T1.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::engine::Engine;
use crate::engine::churn::Health;
use crate::engine::event::{DAY_MS, Event, EventKind};
use crate::engine::lifecycle::Stage;
use crate::engine::state::CustomerState;

/// A customer's holdout outcome.
#[derive(Default)]
pub(super) struct Outcome {
    purchase_days: HashSet<i64>,
    value: f64,
    active: bool,
}

/// Each customer's outcome over the events after `t1` (up to the end of
/// `events`): distinct UTC purchase days, net value, and whether they did
/// anything. Unknown event types and repeated event ids are left out, as
/// the engine leaves them out.
pub(super) fn holdout_outcomes(events: &[Event<'_>], t1: i64) -> BTreeMap<String, Outcome> {
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
    outcomes
}

/// One judged customer: the state at T1 and the holdout outcome; one line
/// of `DIR/customers.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Judged {
    /// The customer.
    pub customer_id: String,
    /// Health at T1.
    pub health: Health,
    /// Lifecycle stage at T1.
    pub stage: Stage,
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
    /// The learned purchase probability at T1 (with a `[churn.model]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_purchase: Option<f64>,
}

impl Judged {
    /// Bought in the holdout.
    pub fn purchased(&self) -> bool {
        self.holdout_purchases > 0
    }
}

/// Judges one customer: its state as the calibration replay left it at
/// `t1` (as `engage replay --as-of T1` reports it in `state.jsonl`) against
/// its holdout outcome.
pub(super) fn judge(
    customer_id: &str,
    state: &CustomerState,
    engine: &Engine,
    t1: i64,
    outcome: &Outcome,
    holdout_days: f64,
) -> Judged {
    let snap = engine.snapshot(state, t1.max(state.last_seen));
    let rules = &engine.rules().churn;
    let unit = rules.unit_days;
    let expected_purchases = snap.purchases.map(|p| {
        rules.model.expected_purchases(
            holdout_days / unit,
            f64::from(p.repeat_purchases),
            p.recency_days / unit,
            p.age_days / unit,
        )
    });
    // The 90-day value is expected purchases × the expected order value.
    let value = engine.value_90d(state, &snap);
    let order_value = match value {
        Some(v) if v.expected_purchases > 0.0 => v.expected_value / v.expected_purchases,
        _ => rules.spend.expected_order_value(0.0, 0.0),
    };
    Judged {
        customer_id: customer_id.to_string(),
        health: state.health,
        stage: state.stage,
        score: snap.score,
        p_alive: snap.signals.p_alive,
        cadence_days: snap.signals.cadence_days,
        idle_days: snap.signals.idle_days,
        x: snap.purchases.map(|p| p.repeat_purchases),
        expected_purchases,
        expected_value: expected_purchases.map(|e| e * order_value),
        holdout_purchases: outcome.purchase_days.len() as u32,
        holdout_value: outcome.value,
        holdout_active: outcome.active,
        p_purchase: engine.p_purchase(state, &snap, value),
    }
}
