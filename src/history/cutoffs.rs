//! Examples at cut-offs: the engine rolled through a history, and at each
//! cut-off every customer's features (as the live engine computes them)
//! set against whether they bought within the horizon after it. `engage
//! fit` learns the purchase probability from them; `engage evaluate` judges
//! it on them.

use std::collections::HashMap;

use super::{ReplayError, ReplaySummary, drive};
use crate::engine::Engine;
use crate::engine::event::{DAY_MS, Event, EventKind};
use crate::engine::propensity::{Features, features};
use crate::engine::store::Partition;

/// One customer at one cut-off.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    /// The cut-off, epoch ms.
    pub cutoff: i64,
    /// A stable hash of the customer id (for deterministic order and
    /// sampling; the id itself is not needed to learn).
    pub customer: u64,
    /// The features at the cut-off.
    pub features: Features,
    /// The existing signals at the cut-off, to compare against: see
    /// [`Signal`].
    pub signals: [f64; Signal::ALL.len()],
    /// Bought within the horizon after the cut-off.
    pub bought: bool,
}

/// The single signals a learned probability is compared with, each as a
/// ranking of "will buy" (higher: more likely).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// The composite score.
    Score,
    /// BG/NBD P(alive) (1 before a repeat purchase).
    PAlive,
    /// BG/NBD expected purchase days within the horizon (0 before the
    /// first purchase).
    ExpectedPurchases,
    /// Minus the days since the latest activity.
    Recency,
}

impl Signal {
    /// All of them, in report order.
    pub const ALL: [Signal; 4] = [Signal::Score, Signal::PAlive, Signal::ExpectedPurchases, Signal::Recency];

    /// The report's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Score => "score",
            Signal::PAlive => "p_alive",
            Signal::ExpectedPurchases => "expected_purchases",
            Signal::Recency => "recency",
        }
    }
}

/// What to take at each cut-off.
#[derive(Clone, Debug)]
pub struct CutoffOptions {
    /// The cut-offs, ascending, epoch ms.
    pub cutoffs: Vec<i64>,
    /// The horizon, ms: the label is a purchase in (cut-off, cut-off + horizon].
    pub horizon_ms: i64,
    /// Event time between churn sweeps, ms (as `engage replay --sweep-every`).
    pub sweep_every_ms: i64,
    /// Share of customers kept (by a hash of their id, so the same ones at
    /// every cut-off), to bound memory on large histories: 1 keeps all.
    pub keep: f64,
}

/// Rolls `engine` through `events` (sorted by event time; those after the
/// last cut-off's horizon are only read for labels) and returns one example
/// per customer seen by each cut-off, ordered by cut-off then customer.
pub fn examples_at_cutoffs(
    engine: &Engine,
    events: &[Event<'_>],
    opts: &CutoffOptions,
) -> Result<Vec<Example>, ReplayError> {
    let mut purchases: HashMap<&str, Vec<i64>> = HashMap::new();
    for e in events {
        if let EventKind::Purchase { .. } = e.kind {
            purchases.entry(e.customer_id.as_ref()).or_default().push(e.ts_ms);
        }
    }
    // Events arrive sorted, so each list is too.
    let last = opts.cutoffs.last().copied().unwrap_or(i64::MIN);
    let applied = &events[..events.partition_point(|e| e.ts_ms <= last)];
    let threshold = (opts.keep.clamp(0.0, 1.0) * u64::MAX as f64) as u64;
    let rules = &engine.rules().churn;
    let horizon_units = opts.horizon_ms as f64 / DAY_MS as f64 / rules.unit_days;
    let mut examples = Vec::new();
    let mut at_cutoff = |cutoff: i64, partition: &Partition| -> Result<(), ReplayError> {
        let start = examples.len();
        partition.for_each(|id, state| {
            let customer = xxhash_rust::xxh3::xxh3_64(id.as_bytes());
            if customer > threshold && opts.keep < 1.0 {
                return;
            }
            let snap = engine.snapshot(state, cutoff.max(state.last_seen));
            let value = engine.value_90d(state, &snap);
            let expected = match (snap.purchases, value) {
                // The 90-day expectation is the value signals' (memoised).
                (Some(_), Some(v)) if opts.horizon_ms == 90 * DAY_MS => v.expected_purchases,
                (Some(p), _) => rules.model.expected_purchases(
                    horizon_units,
                    f64::from(p.repeat_purchases),
                    p.recency_days / rules.unit_days,
                    p.age_days / rules.unit_days,
                ),
                (None, _) => 0.0,
            };
            let times = purchases.get(id).map_or(&[][..], Vec::as_slice);
            let next = times.partition_point(|t| *t <= cutoff);
            let bought = times.get(next).is_some_and(|t| *t <= cutoff + opts.horizon_ms);
            examples.push(Example {
                cutoff,
                customer,
                features: features(state, &snap, value.map(|v| v.expected_purchases)),
                signals: [snap.score, snap.signals.p_alive, expected, -snap.signals.idle_days],
                bought,
            });
        });
        examples[start..].sort_by_key(|e| e.customer);
        Ok(())
    };
    let mut summary = ReplaySummary::default();
    let mut discard = |out: &mut Vec<crate::engine::output::Output>, _: &mut ReplaySummary| {
        out.clear();
        Ok(())
    };
    drive(engine, applied, opts.sweep_every_ms, &opts.cutoffs, &mut summary, &mut discard, &mut at_cutoff)?;
    Ok(examples)
}
