//! What the API answers from this instance's own state: one customer as of
//! now, and the lowest-P(alive) customers of a health in the partitions it
//! serves. Readers never hold a map lock across anything but a copy and a
//! snapshot, so the pipeline's writes wait at most that long.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use compact_str::CompactString;
use serde::Serialize;

use crate::engine::Engine;
use crate::engine::churn::Health;
use crate::engine::lifecycle::Stage;
use crate::engine::output::{Dimensions, PurchaseProbability};
use crate::engine::scoring::Driver;
use crate::engine::state::CustomerState;
use crate::engine::store::Store;
use crate::pipeline::{PartitionPhase, Status};

/// `GET /v1/customers/{id}`: a customer as of now.
#[derive(Serialize)]
pub struct CustomerView {
    customer_id: String,
    /// Input partition that owns the customer.
    partition: i32,
    /// Composite score now (decayed to the current time).
    score: f64,
    dimensions: Dimensions,
    /// Dimensions that moved the score since the last published one.
    drivers: Vec<Driver>,
    stage: Stage,
    health: Health,
    /// BG/NBD probability that the customer is still active.
    pub p_alive: f64,
    cadence_days: f64,
    idle_days: f64,
    /// Event time (epoch ms) of the latest activity.
    last_seen: i64,
    first_seen: i64,
    active_days: u16,
    purchase_days: u16,
    /// BG/NBD expected purchase days in the next 90 days.
    expected_purchases_90d: Option<f64>,
    /// Expected spend in the next 90 days.
    expected_value_90d: Option<f64>,
    /// The learned probability of a purchase within `churn.horizon`, as
    /// `p_purchase_<days>d`; no field without a `[churn.model]`.
    #[serde(flatten)]
    p_purchase: PurchaseProbability,
    seq: u32,
}

/// The local answer for one customer of a partition.
pub enum Lookup {
    /// Held here.
    Found(Box<CustomerView>),
    /// Not in the partition, which this instance served all along the
    /// read, as assignment `assigned` of it (see [`crate::pipeline::Held`]).
    Absent {
        /// Which assignment of the partition was read.
        assigned: u64,
    },
    /// The partition is not served here (any more, or yet).
    NotServed,
}

/// Reads customers from the store of this instance.
#[derive(Clone)]
pub struct Local {
    pub(super) store: Arc<Store>,
    pub(super) status: Arc<Status>,
    pub(super) engine: Engine,
}

/// One list entry: ordered by P(alive), then id.
pub struct Ranked {
    /// BG/NBD probability that the customer is still active.
    pub p_alive: f64,
    /// The customer's id.
    pub customer_id: CompactString,
    state: Box<CustomerState>,
    partition: i32,
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.p_alive.total_cmp(&other.p_alive).then_with(|| self.customer_id.cmp(&other.customer_id))
    }
}

impl Local {
    /// Customer `id` in partition `p`, as of `now_ms`.
    pub fn lookup(&self, p: i32, id: &str, now_ms: i64) -> Lookup {
        let before = self.status.partitions_generation();
        let Some(held) = self.status.partition(p).filter(|h| h.phase == PartitionPhase::Serving) else {
            return Lookup::NotServed;
        };
        let found = self.store.held(p).and_then(|part| part.get(id));
        match found {
            Some(state) => Lookup::Found(Box::new(self.view(id, p, &state, now_ms))),
            // The partition changed hands during the read: it may have been
            // dropped under it.
            None if self.status.partitions_generation() != before => Lookup::NotServed,
            None => Lookup::Absent { assigned: held.assigned },
        }
    }

    /// The `limit` customers in `health` with the lowest P(alive) among
    /// partitions `partitions`, lowest first; and the partitions that were
    /// not served here for the whole read (their customers are left out).
    /// Memory is bounded by `limit`, whatever the population.
    pub fn list(&self, partitions: &[i32], health: Health, limit: usize, now_ms: i64) -> (Vec<Ranked>, Vec<i32>) {
        let mut best: BinaryHeap<Ranked> = BinaryHeap::with_capacity(limit.min(1024) + 1);
        let mut missing = Vec::new();
        for &p in partitions {
            let before = self.status.partitions_generation();
            let served = self.status.partition(p).map(|h| h.phase) == Some(PartitionPhase::Serving);
            let Some(part) = self.store.held(p).filter(|_| served) else {
                missing.push(p);
                continue;
            };
            part.for_each(|id, state| {
                if state.health != health || limit == 0 {
                    return;
                }
                let p_alive = self.engine.snapshot(state, now_ms.max(state.last_seen)).signals.p_alive;
                let worst = best.peek().map(|w| (w.p_alive, w.customer_id.as_str()));
                let better = match worst {
                    _ if best.len() < limit => true,
                    Some((wp, wid)) => p_alive.total_cmp(&wp).then_with(|| id.cmp(wid)) == Ordering::Less,
                    None => true,
                };
                if better {
                    best.push(Ranked { p_alive, customer_id: id.into(), state: Box::new(state.clone()), partition: p });
                    if best.len() > limit {
                        best.pop();
                    }
                }
            });
            if self.status.partitions_generation() != before {
                // Dropped or reassigned during the read: leave it out.
                best.retain(|r| r.partition != p);
                missing.push(p);
            }
        }
        (best.into_sorted_vec(), missing)
    }

    /// Customer `id` in a partition served here other than `expected`: a
    /// customer the upstream producers put somewhere
    /// `topics.upstream_partitioner` does not say.
    pub fn find_elsewhere(&self, expected: i32, id: &str, now_ms: i64) -> Option<(i32, Box<CustomerView>)> {
        let (_, held) = self.status.partitions_held();
        held.iter().filter(|(p, h)| *p != expected && h.phase == PartitionPhase::Serving).find_map(|(p, _)| {
            let state = self.store.held(*p)?.get(id)?;
            Some((*p, Box::new(self.view(id, *p, &state, now_ms))))
        })
    }

    /// The full view of a ranked entry, at the time it was ranked.
    pub fn view_of(&self, r: &Ranked, now_ms: i64) -> CustomerView {
        self.view(&r.customer_id, r.partition, &r.state, now_ms)
    }

    fn view(&self, id: &str, partition: i32, state: &CustomerState, now_ms: i64) -> CustomerView {
        let snap = self.engine.snapshot(state, now_ms.max(state.last_seen));
        let drivers = self.engine.rules().scoring.drivers(&state.published_dimension_scores(), &snap.dimensions);
        let value = self.engine.value_90d(state, &snap);
        CustomerView {
            customer_id: id.to_string(),
            partition,
            score: snap.score,
            dimensions: snap.dimensions.into(),
            drivers: drivers.as_slice().to_vec(),
            stage: state.stage,
            health: state.health,
            p_alive: snap.signals.p_alive,
            cadence_days: snap.signals.cadence_days,
            idle_days: snap.signals.idle_days,
            last_seen: state.last_seen,
            first_seen: state.first_seen,
            active_days: state.active_days,
            purchase_days: state.purchase_days(),
            expected_purchases_90d: value.map(|v| v.expected_purchases),
            expected_value_90d: value.map(|v| v.expected_value),
            p_purchase: self.engine.purchase_probability(state, &snap, value),
            seq: state.seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::wall_clock_ms;
    use crate::config::Config;
    use crate::engine::Rules;

    #[test]
    fn the_customer_view_carries_the_learned_probability_only_with_a_model() {
        let mut config = Config::default();
        let calibration = crate::config::CalibrationConfig::Platt { a: 1.0, b: 0.0 };
        config.churn.model = Some(crate::engine::propensity::test_model(-1.0, 0.5, 0.0, calibration));
        let now = wall_clock_ms();
        let event = crate::engine::event::Event {
            event_id: "e1".into(),
            customer_id: "c".into(),
            ts_ms: now - 86_400_000,
            kind: crate::engine::event::EventKind::Purchase { amount: 20.0, loyalty_member: false, coupon_used: false },
        };
        for (config, field) in [(config, true), (Config::default(), false)] {
            let engine = Engine::new(Rules::new(&config));
            let store = Arc::new(Store::new());
            engine.apply(&store.partition(0), &event, None, &mut Vec::new());
            let local = Local { store: store.clone(), status: Arc::new(Status::new()), engine };
            let state = store.find("c").unwrap().1;
            let v = serde_json::to_value(local.view("c", 0, &state, now)).unwrap();
            let p = v.get("p_purchase_90d").and_then(serde_json::Value::as_f64);
            assert_eq!(p.is_some_and(|p| (0.0..=1.0).contains(&p)), field, "{v}");
        }
    }
}
