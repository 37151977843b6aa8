//! The engine: applies events to customer states and decides what to publish
//! (docs/model.md "Dimensions and the score"). It knows nothing of Kafka or files: `engage replay` and
//! `engage run` both drive it through [`Engine::apply`] and [`Engine::sweep`].

pub mod churn;
pub mod erasure;
pub mod event;
pub mod lifecycle;
pub mod output;
pub mod propensity;
pub mod scoring;
pub mod state;
pub mod store;

use crate::config::Config;
use crate::engine::churn::{ChurnRules, Health, Reason, Signals};
use crate::engine::event::ms_to_days;
use crate::engine::event::{Event, Source};
use crate::engine::lifecycle::{LifecycleRules, Stage, StageFacts};
use crate::engine::output::{AlertKind, ChurnAlert, Output, PurchaseProbability, ScoreChanged};
use crate::engine::scoring::ScoringRules;
use crate::engine::state::{CustomerState, PurchaseSummary, event_id_hash};
use crate::engine::store::Partition;
use crate::vocab::{DIMENSIONS, Dimension};

/// All rules, compiled from a validated [`Config`].
#[derive(Clone, Debug)]
pub struct Rules {
    /// Dimensions and score.
    pub scoring: ScoringRules,
    /// Stages.
    pub lifecycle: LifecycleRules,
    /// Health.
    pub churn: ChurnRules,
    /// How many days behind the newest day of a customer's active or
    /// purchase days a late day is still counted exactly once:
    /// `state.retention` in whole days, rounded up (see
    /// [`crate::engine::state`]).
    pub horizon_days: i32,
}

impl Rules {
    /// Compiles the engine's sections of `config`.
    pub fn new(config: &Config) -> Rules {
        Rules {
            scoring: ScoringRules::new(&config.scoring),
            lifecycle: LifecycleRules::new(&config.lifecycle),
            churn: ChurnRules::new(&config.churn),
            horizon_days: i32::try_from(config.state.retention.as_secs().div_ceil(86_400)).unwrap_or(i32::MAX).max(1),
        }
    }
}

/// What applying one event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The state changed.
    Applied,
    /// Already reflected in the state (same offset or recent event id):
    /// nothing changed.
    Duplicate,
    /// An unknown clickstream type: counted by the caller, nothing changed.
    UnknownType,
    /// At or before the bootstrap's as-of
    /// ([`Partition::bootstrap_as_of`]): already in the restored state,
    /// nothing changed.
    Bootstrapped,
    /// An event at or before its customer's erasure cut-off: the erased
    /// customer's, ignored ([`erasure`]).
    BeforeErasure,
    /// An erasure request applied: the customer's state is gone.
    Erased,
}

/// Everything derived from a customer's state at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// When.
    pub at: i64,
    /// Dimension scores, 0–100.
    pub dimensions: [f64; DIMENSIONS],
    /// Composite score.
    pub score: f64,
    /// Lifecycle stage.
    pub stage: Stage,
    /// Churn signal values (`peak` as stored).
    pub signals: Signals,
    /// BG/NBD summary, once there is a purchase.
    pub purchases: Option<PurchaseSummary>,
}

/// What a customer is expected to bring in the next 90 days (BG/NBD
/// conditional expectation × Gamma-Gamma expected order value).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Value90 {
    /// Expected purchase days in the next 90 days.
    pub expected_purchases: f64,
    /// Expected spend in the next 90 days, currency units.
    pub expected_value: f64,
}

/// The horizon of [`Value90`], in days.
pub const VALUE_HORIZON_DAYS: f64 = 90.0;

/// One of `of` disjoint slices of the customers (by a stable hash of the
/// id), for spreading a sweep over several ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slice {
    /// Which slice, `0..of`.
    pub index: u64,
    /// How many slices make a full pass.
    pub of: u64,
}

impl Slice {
    /// Everyone.
    pub const ALL: Slice = Slice { index: 0, of: 1 };

    /// Whether a customer belongs to this slice.
    pub fn contains(&self, customer_id: &str) -> bool {
        self.of <= 1 || xxhash_rust::xxh3::xxh3_64(customer_id.as_bytes()) % self.of == self.index
    }
}

/// Applies events and sweeps. Cheap to share: it holds only the rules.
#[derive(Clone, Debug)]
pub struct Engine {
    rules: Rules,
    clock: fn() -> i64,
    memo: std::sync::Arc<ExpectationMemo>,
}

/// Remembers recent BG/NBD expectations. They depend only on (x, t_x, T)
/// in whole days, which for a customer change at most daily, while the
/// hypergeometric series behind them costs up to microseconds; a small
/// direct-mapped table turns most evaluations into a lookup.
#[derive(Debug)]
struct ExpectationMemo {
    slots: std::sync::Mutex<Vec<(u64, f64)>>,
}

impl ExpectationMemo {
    const SLOTS: usize = 1 << 14;

    fn new() -> Self {
        ExpectationMemo { slots: std::sync::Mutex::new(vec![(u64::MAX, 0.0); Self::SLOTS]) }
    }

    /// (x, t_x, T) packed into one key, or `None` if out of range.
    fn key(x: u32, t_x_days: f64, age_days: f64) -> Option<u64> {
        let (t_x, t) = (t_x_days as u64, age_days as u64);
        (x < 1 << 22 && t_x < 1 << 21 && t < 1 << 21 && t_x as f64 == t_x_days && t as f64 == age_days)
            .then_some(u64::from(x) << 42 | t_x << 21 | t)
    }

    fn get_or(&self, key: Option<u64>, compute: impl FnOnce() -> f64) -> f64 {
        let Some(key) = key else { return compute() };
        let slot = (xxhash_rust::xxh3::xxh3_64(&key.to_le_bytes()) as usize) & (Self::SLOTS - 1);
        let mut slots = crate::sync::lock(&self.slots);
        if slots[slot].0 == key {
            return slots[slot].1;
        }
        let value = compute();
        slots[slot] = (key, value);
        value
    }
}

enum Trigger {
    /// An applied event; `returned_after` is how long the customer had been
    /// away if the event is newer than all before it.
    Event {
        new_customer: bool,
        returned_after: Option<i64>,
    },
    Sweep,
}

impl Engine {
    /// An engine with these rules, stamping outputs with the wall clock.
    pub fn new(rules: Rules) -> Engine {
        Engine { rules, clock: crate::clock::wall_clock_ms, memo: std::sync::Arc::new(ExpectationMemo::new()) }
    }

    /// Replaces the `processed_at` clock (tests use a fixed one).
    pub fn with_clock(mut self, clock: fn() -> i64) -> Engine {
        self.clock = clock;
        self
    }

    /// The compiled rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Applies one event to its customer in `partition`, pushing the outputs
    /// it causes to `out`. `source` is the record's Kafka position, if any:
    /// records at or below the customer's applied offset are duplicates.
    /// Events at or before the partition's bootstrap as-of are not applied.
    pub fn apply(
        &self,
        partition: &Partition,
        event: &Event<'_>,
        source: Option<Source>,
        out: &mut Vec<Output>,
    ) -> Outcome {
        if event.ts_ms <= partition.bootstrap_as_of() {
            return Outcome::Bootstrapped;
        }
        if !event.kind.is_known() {
            return Outcome::UnknownType;
        }
        // An erasure's cut-off is always before the first event of any
        // state the customer holds (erasure.rs), so only an event older
        // than that, or of a customer without state, needs the lookup.
        let covered = || partition.erased(&event.customer_id).filter(|e| event.ts_ms <= e.cutoff);
        let id_hash = event_id_hash(&event.event_id);
        let map = partition.map();
        let mut entry = match map.get_mut(&*event.customer_id) {
            Some(e) if event.ts_ms < e.first_seen && covered().is_some() => return Outcome::BeforeErasure,
            Some(e) => e,
            None => {
                let erased = partition.erased(&event.customer_id);
                if erased.is_some_and(|e| event.ts_ms <= e.cutoff) {
                    return Outcome::BeforeErasure;
                }
                let mut entry = map.entry(event.customer_id.as_ref().into()).or_default();
                if let Some(e) = erased {
                    // A customer returning after an erasure continues its seq.
                    entry.seq = e.seq;
                }
                entry
            }
        };
        let (customer_id, state) = entry.pair_mut();
        if state.already_applied(source, id_hash) {
            return Outcome::Duplicate;
        }
        let new_customer = state.is_new();
        let returned_after = (!new_customer && event.ts_ms > state.last_seen).then(|| event.ts_ms - state.last_seen);
        state.mark_applied(source, id_hash);
        let contrib = self.rules.scoring.contributions(&event.kind);
        state.absorb_within(event, &contrib, &self.rules.scoring, self.rules.horizon_days);
        let now = state.last_seen;
        self.evaluate(customer_id, state, now, Trigger::Event { new_customer, returned_after }, out);
        Outcome::Applied
    }

    /// Re-evaluates every customer of `partition` at stream time `now`:
    /// churn is the absence of events, so health can only worsen here (and
    /// stages move with age and decay). Returns the customers visited.
    pub fn sweep(&self, partition: &Partition, now: i64, out: &mut Vec<Output>) -> usize {
        self.sweep_slice(partition, now, Slice::ALL, out)
    }

    /// [`Engine::sweep`] restricted to one slice of the customers, so a
    /// caller can spread a full pass over several ticks and bound the work
    /// done in any one of them.
    pub fn sweep_slice(&self, partition: &Partition, now: i64, slice: Slice, out: &mut Vec<Output>) -> usize {
        let mut visited = 0;
        for mut entry in partition.map().iter_mut() {
            let (customer_id, state) = entry.pair_mut();
            if !state.is_new() && slice.contains(customer_id) {
                self.evaluate(customer_id, state, now.max(state.last_seen), Trigger::Sweep, out);
                visited += 1;
            }
        }
        visited
    }

    /// The derived view of a state at `now` (read-only: no peak update).
    pub fn snapshot(&self, state: &CustomerState, now: i64) -> Snapshot {
        let mut snap = self.snapshot_without_p_alive(state, now);
        snap.signals.p_alive = self.p_alive(&snap);
        snap
    }

    /// Expected purchases and value over the next 90 days, from the state's
    /// purchase summary; `None` before the first purchase (the models start
    /// at a customer's first purchase).
    pub fn value_90d(&self, state: &CustomerState, snap: &Snapshot) -> Option<Value90> {
        let p = snap.purchases?;
        let c = &self.rules.churn;
        let x = f64::from(p.repeat_purchases);
        let key = ExpectationMemo::key(p.repeat_purchases, p.recency_days, p.age_days);
        let expected_purchases = self.memo.get_or(key, || {
            c.model.expected_purchases(
                VALUE_HORIZON_DAYS / c.unit_days,
                x,
                p.recency_days / c.unit_days,
                p.age_days / c.unit_days,
            )
        });
        let mean = state.mean_repeat_spend(x);
        Some(Value90 { expected_purchases, expected_value: expected_purchases * c.spend.expected_order_value(x, mean) })
    }

    /// The learned probability of a purchase within `churn.horizon`
    /// (docs/model.md "The learned purchase probability"), from the state,
    /// its snapshot (with P(alive), as [`Engine::snapshot`] gives it) and
    /// its 90-day expectation; `None` without a `[churn.model]`. Stores
    /// nothing: it is recomputed from what the state holds whenever it is
    /// needed.
    pub fn p_purchase(&self, state: &CustomerState, snap: &Snapshot, value: Option<Value90>) -> Option<f64> {
        let model = self.rules.churn.purchase_model.as_ref()?;
        debug_assert!(!snap.signals.p_alive.is_nan(), "P(alive) is a feature: compute it first");
        let f = propensity::features(state, snap, value.map(|v| v.expected_purchases));
        Some(model.probability(&f))
    }

    /// [`Engine::p_purchase`] with its horizon, as outputs carry it.
    pub fn purchase_probability(
        &self,
        state: &CustomerState,
        snap: &Snapshot,
        value: Option<Value90>,
    ) -> PurchaseProbability {
        let horizon = self.rules.churn.purchase_model.as_ref().map(|m| m.horizon());
        PurchaseProbability(horizon.zip(self.p_purchase(state, snap, value)))
    }

    fn p_alive(&self, snap: &Snapshot) -> f64 {
        snap.purchases
            .map(|p| self.rules.churn.p_alive_days(p.repeat_purchases, p.recency_days, p.age_days))
            .unwrap_or(1.0)
    }

    /// [`Engine::snapshot`] with P(alive) left as NaN: it costs three
    /// logarithms and an exponential, and most evaluations do not need it.
    fn snapshot_without_p_alive(&self, state: &CustomerState, now: i64) -> Snapshot {
        let r = &self.rules;
        let dimensions = r.scoring.dimension_scores(&state.raw_at(now, &r.scoring));
        let score = r.scoring.composite(&dimensions);
        let stage = r.lifecycle.stage(&StageFacts {
            age_ms: now - state.first_seen,
            active_days: u32::from(state.active_days),
            purchase_days: u32::from(state.purchase_days()),
            active_span_ms: state.last_seen - state.first_seen,
            social: dimensions[Dimension::Social as usize],
            score,
        });
        let purchases = state.purchase_summary(now);
        let signals = Signals {
            p_alive: f64::NAN,
            idle_days: ms_to_days(now - state.last_seen).max(0.0),
            cadence_days: state.cadence_days(r.churn.default_cadence_days),
            score,
            peak: f64::from(state.peak_score),
            p_purchase: f64::NAN,
        };
        Snapshot { at: now, dimensions, score, stage, signals, purchases }
    }

    fn evaluate(
        &self,
        customer_id: &str,
        state: &mut CustomerState,
        now: i64,
        trigger: Trigger,
        out: &mut Vec<Output>,
    ) {
        let r = &self.rules;
        let mut snap = self.snapshot_without_p_alive(state, now);
        state.update_peak(snap.score, now, r.churn.peak_window_ms);
        snap.signals.peak = f64::from(state.peak_score);
        let mut value = None;
        if r.churn.is_overdue(&snap.signals) {
            snap.signals.p_alive = self.p_alive(&snap);
            if r.churn.health_from_model() {
                value = Some(self.value_90d(state, &snap));
                snap.signals.p_purchase = self.p_purchase(state, &snap, value.flatten()).unwrap_or(f64::NAN);
            }
        }
        let (assessed, reasons) = r.churn.assess(&snap.signals);
        let before = state.health;
        let (health, alert) = match trigger {
            // A genuinely new activity brings a slipping customer back.
            Trigger::Event { returned_after: Some(away), .. } if before != Health::Active => {
                (Health::Active, Some((AlertKind::Reactivated, Vec::new(), ms_to_days(away))))
            }
            // Otherwise health only worsens, one alert per transition.
            _ => {
                let h = before.max(assessed);
                let kind = match h {
                    Health::AtRisk => AlertKind::AtRisk,
                    _ => AlertKind::Dormant,
                };
                (h, (h != before).then_some((kind, reasons, snap.signals.idle_days)))
            }
        };
        let new_customer = matches!(trigger, Trigger::Event { new_customer: true, .. });
        let moved = matches!(trigger, Trigger::Event { .. })
            && (snap.score - f64::from(state.published_score)).abs() >= r.scoring.min_delta;
        let publish = new_customer || moved || health != before || snap.stage != state.stage;
        state.health = health;
        state.stage = snap.stage;
        if !publish && alert.is_none() {
            return;
        }
        if snap.signals.p_alive.is_nan() {
            snap.signals.p_alive = self.p_alive(&snap);
        }
        let processed_at = (self.clock)();
        if publish {
            let value = value.unwrap_or_else(|| self.value_90d(state, &snap));
            let p_purchase = match &r.churn.purchase_model {
                Some(model) if !snap.signals.p_purchase.is_nan() => {
                    PurchaseProbability(Some((model.horizon(), snap.signals.p_purchase)))
                }
                _ => self.purchase_probability(state, &snap, value),
            };
            let before_dims = if new_customer { [0.0; DIMENSIONS] } else { state.published_dimension_scores() };
            state.seq += 1;
            out.push(Output::Score(ScoreChanged {
                customer_id: customer_id.into(),
                seq: u64::from(state.seq),
                score: snap.score,
                previous_score: (!new_customer).then_some(f64::from(state.published_score)),
                dimensions: snap.dimensions.into(),
                stage: snap.stage,
                health,
                p_alive: snap.signals.p_alive,
                drivers: r.scoring.drivers(&before_dims, &snap.dimensions),
                expected_purchases_90d: value.map(|v| v.expected_purchases),
                expected_value_90d: value.map(|v| v.expected_value),
                p_purchase,
                event_time: now,
                processed_at,
            }));
            state.record_published(snap.score, &snap.dimensions);
        }
        if let Some((kind, reasons, idle_days)) = alert {
            state.seq += 1;
            out.push(Output::Alert(alert_message(
                customer_id,
                state.seq,
                kind,
                reasons,
                idle_days,
                &snap,
                processed_at,
            )));
        }
    }
}

fn alert_message(
    customer_id: &str,
    seq: u32,
    kind: AlertKind,
    reasons: Vec<Reason>,
    idle_days: f64,
    snap: &Snapshot,
    processed_at: i64,
) -> ChurnAlert {
    ChurnAlert {
        alert_id: format!("{customer_id}:{seq}"),
        customer_id: customer_id.into(),
        seq: u64::from(seq),
        kind,
        reasons,
        p_alive: snap.signals.p_alive,
        score: snap.score,
        idle_days,
        cadence_days: snap.signals.cadence_days,
        stage: snap.stage,
        event_time: snap.at,
        processed_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::event::{DAY_MS, EventKind};
    use crate::engine::store::Store;
    use crate::vocab::{ClickKind, InputKind};
    use std::borrow::Cow;

    const T0: i64 = 1_750_000_000_000 - 1_750_000_000_000 % DAY_MS; // a midnight

    fn engine() -> Engine {
        Engine::new(Rules::new(&Config::default())).with_clock(|| 42)
    }

    fn click(id: &str, customer: &str, at: i64, kind: ClickKind) -> Event<'static> {
        Event {
            event_id: Cow::Owned(id.into()),
            customer_id: Cow::Owned(customer.into()),
            ts_ms: at,
            kind: EventKind::Click { kind, rating: None },
        }
    }

    fn purchase(id: &str, customer: &str, at: i64, amount: f64) -> Event<'static> {
        Event {
            event_id: Cow::Owned(id.into()),
            customer_id: Cow::Owned(customer.into()),
            ts_ms: at,
            kind: EventKind::Purchase { amount, loyalty_member: false, coupon_used: false },
        }
    }

    fn scores(out: &[Output]) -> Vec<&ScoreChanged> {
        out.iter()
            .filter_map(|o| match o {
                Output::Score(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    fn alerts(out: &[Output]) -> Vec<&ChurnAlert> {
        out.iter()
            .filter_map(|o| match o {
                Output::Alert(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_new_customer_always_publishes_with_seq_one() {
        let (e, store, mut out) = (engine(), Store::new(), Vec::new());
        let p = store.partition(0);
        assert_eq!(e.apply(&p, &click("e1", "c", T0, ClickKind::PageView), None, &mut out), Outcome::Applied);
        let s = scores(&out);
        assert_eq!(s.len(), 1);
        // attention v = 1 → 100·(1−e^(−1/20)) = 4.877; satisfaction 50.
        // score = 0.25·4.877 + 0.15·50 = 8.719.
        assert!((s[0].score - 8.719).abs() < 1e-3, "{}", s[0].score);
        assert_eq!(
            (s[0].seq, s[0].previous_score, s[0].stage, s[0].health),
            (1, None, Stage::Initiation, Health::Active)
        );
        assert_eq!(s[0].processed_at, 42);
        assert_eq!(s[0].drivers.as_slice()[0].dimension, Dimension::Satisfaction);
    }

    #[test]
    fn small_moves_are_suppressed_until_they_add_up_to_min_delta() {
        let mut config = Config::default();
        config.scoring.min_delta = 3.0;
        let e = Engine::new(Rules::new(&config));
        let (store, mut out) = (Store::new(), Vec::new());
        let p = store.partition(0);
        e.apply(&p, &click("e1", "c", T0, ClickKind::PageView), None, &mut out);
        out.clear();
        // Attention after 1..4 page views (seconds apart, decay negligible):
        // 100·(1−e^(−v/20)) = 4.877, 9.516, 13.929, 18.127, so the score
        // (0.25·attention + 7.5) is 8.719, 9.879, 10.982, 12.032: only the
        // fourth view has moved it ≥ 3 since the published 8.719.
        e.apply(&p, &click("e2", "c", T0 + 1000, ClickKind::PageView), None, &mut out);
        e.apply(&p, &click("e3", "c", T0 + 2000, ClickKind::PageView), None, &mut out);
        assert!(out.is_empty(), "{out:?}");
        e.apply(&p, &click("e4", "c", T0 + 3000, ClickKind::PageView), None, &mut out);
        let s = scores(&out);
        assert_eq!(s.len(), 1);
        assert!((s[0].score - 12.032).abs() < 1e-3 && (s[0].previous_score.unwrap() - 8.719).abs() < 1e-3);
        assert_eq!(s[0].seq, 2);
        assert_eq!(s[0].drivers.as_slice()[0].dimension, Dimension::Attention);
    }

    #[test]
    fn duplicates_by_event_id_or_offset_change_nothing() {
        let (e, store, mut out) = (engine(), Store::new(), Vec::new());
        let p = store.partition(0);
        let src = |offset| Some(Source { topic: InputKind::Clickstream, offset });
        e.apply(&p, &click("e1", "c", T0, ClickKind::Share), src(10), &mut out);
        let before = p.get("c").unwrap();
        assert_eq!(e.apply(&p, &click("e1", "c", T0, ClickKind::Share), src(11), &mut out), Outcome::Duplicate);
        assert_eq!(e.apply(&p, &click("e0", "c", T0, ClickKind::Share), src(9), &mut out), Outcome::Duplicate);
        assert_eq!(p.get("c").unwrap(), before);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn events_at_or_before_the_bootstrap_as_of_change_nothing() {
        let (e, store, mut out) = (engine(), Store::new(), Vec::new());
        let p = store.partition(0);
        p.set_bootstrap_as_of(T0);
        assert_eq!(e.apply(&p, &click("e1", "c", T0, ClickKind::Share), None, &mut out), Outcome::Bootstrapped);
        assert!(p.is_empty() && out.is_empty());
        assert_eq!(e.apply(&p, &click("e2", "c", T0 + 1, ClickKind::Share), None, &mut out), Outcome::Applied);
        assert_eq!(p.get("c").unwrap().first_seen, T0 + 1);
    }

    #[test]
    fn unknown_types_create_no_customer() {
        let (e, store, mut out) = (engine(), Store::new(), Vec::new());
        let p = store.partition(0);
        assert_eq!(e.apply(&p, &click("e1", "c", T0, ClickKind::Unknown), None, &mut out), Outcome::UnknownType);
        assert!(p.is_empty() && out.is_empty());
    }

    #[test]
    fn silence_raises_at_risk_then_dormant_once_each_and_a_return_reactivates() {
        let (e, store, mut out) = (engine(), Store::new(), Vec::new());
        let p = store.partition(0);
        // Active on days 0, 1, 2, 3: cadence (3−0)/(4−1) = 1 day.
        for d in 0..4 {
            e.apply(&p, &click(&format!("v{d}"), "c", T0 + d * DAY_MS, ClickKind::ProductView), None, &mut out);
        }
        out.clear();
        // Day 5: idle 2 d = 2× cadence, not yet 3×.
        e.sweep(&p, T0 + 5 * DAY_MS, &mut out);
        assert!(alerts(&out).is_empty());
        // Day 6: idle 3 d = 3× → at_risk, with a score change carrying the new health.
        e.sweep(&p, T0 + 6 * DAY_MS, &mut out);
        let a = alerts(&out);
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].kind, a[0].idle_days, a[0].cadence_days), (AlertKind::AtRisk, 3.0, 1.0));
        assert_eq!(a[0].reasons[0].signal, "idle_ratio");
        assert_eq!(scores(&out)[0].health, Health::AtRisk);
        assert_eq!(a[0].seq, scores(&out)[0].seq + 1, "one seq per message");
        out.clear();
        // No repeat while the state holds.
        e.sweep(&p, T0 + 10 * DAY_MS, &mut out);
        assert!(alerts(&out).is_empty());
        // Idle 30 d ≥ 6× cadence and ≥ 30 d → dormant.
        e.sweep(&p, T0 + 33 * DAY_MS, &mut out);
        assert_eq!(alerts(&out).iter().map(|a| a.kind).collect::<Vec<_>>(), vec![AlertKind::Dormant]);
        out.clear();
        // A late event (older than the latest activity) is no return.
        e.apply(&p, &click("late", "c", T0 + DAY_MS / 2, ClickKind::PageView), None, &mut out);
        assert!(alerts(&out).is_empty());
        // A new one is: reactivated, away 37 days.
        e.apply(&p, &click("back", "c", T0 + 40 * DAY_MS, ClickKind::PageView), None, &mut out);
        let a = alerts(&out);
        assert_eq!((a.len(), a[0].kind, a[0].idle_days), (1, AlertKind::Reactivated, 37.0));
        assert_eq!(p.get("c").unwrap().health, Health::Active);
    }

    #[test]
    fn slices_partition_the_customers_and_together_sweep_everyone() {
        let (e, store, mut out) = (engine(), Store::new(), Vec::new());
        let p = store.partition(0);
        for i in 0..100 {
            e.apply(&p, &click(&format!("e{i}"), &format!("c{i}"), T0, ClickKind::PageView), None, &mut out);
        }
        let total: usize = (0..4).map(|index| e.sweep_slice(&p, T0 + DAY_MS, Slice { index, of: 4 }, &mut out)).sum();
        assert_eq!(total, 100);
        assert!((0..4).all(|index| e.sweep_slice(&p, T0 + DAY_MS, Slice { index, of: 4 }, &mut out) < 50));
    }

    #[test]
    fn p_alive_uses_purchase_days_in_weeks() {
        let (e, store, mut out) = (engine(), Store::new(), Vec::new());
        let p = store.partition(0);
        // Purchase days 0, 7, 14 → x = 2, t_x = 2 weeks; at day 28, T = 4 weeks.
        for d in [0, 7, 14] {
            e.apply(&p, &purchase(&format!("p{d}"), "c", T0 + d * DAY_MS, 20.0), None, &mut out);
        }
        let snap = e.snapshot(&p.get("c").unwrap(), T0 + 28 * DAY_MS);
        let want = crate::engine::churn::BgNbd { r: 0.243, alpha: 4.414, a: 0.793, b: 2.426 }.p_alive(2.0, 2.0, 4.0);
        assert!((snap.signals.p_alive - want).abs() < 1e-12);
        assert_eq!(snap.purchases.unwrap().repeat_purchases, 2);
    }

    fn engine_with_model(health_from: crate::config::HealthFrom) -> Engine {
        let mut config = Config::default();
        // P(purchase) falls with idle time: −3 per standard deviation of
        // ln(1 + idle days).
        let calibration = crate::config::CalibrationConfig::Platt { a: 1.0, b: 0.0 };
        config.churn.model = Some(propensity::test_model(-3.0, 0.0, 0.0, calibration));
        config.churn.health_from = health_from;
        config.validate().unwrap();
        Engine::new(Rules::new(&config)).with_clock(|| 42)
    }

    #[test]
    fn a_model_publishes_its_probability_named_after_its_horizon() {
        let (e, store, mut out) = (engine_with_model(crate::config::HealthFrom::Signals), Store::new(), Vec::new());
        let p = store.partition(0);
        e.apply(&p, &purchase("p1", "c", T0, 20.0), None, &mut out);
        e.apply(&p, &purchase("p2", "c", T0 + 9 * DAY_MS, 20.0), None, &mut out);
        let s = scores(&out);
        let (horizon, probability) = s[1].p_purchase.0.expect("a probability with a model");
        assert_eq!(horizon, crate::vocab::Horizon::Days90);
        // What the model gives for the state at the event, computed apart.
        let state = p.get("c").unwrap();
        let snap = e.snapshot(&state, T0 + 9 * DAY_MS);
        let value = e.value_90d(&state, &snap);
        let model = e.rules().churn.purchase_model.as_ref().unwrap();
        let f = propensity::features(&state, &snap, value.map(|v| v.expected_purchases));
        assert_eq!(probability, model.probability(&f));
        assert!((0.0..=1.0).contains(&probability));
        let json = String::from_utf8(crate::codec::output::encode(&out[1], crate::vocab::Format::Json)).unwrap();
        assert!(json.contains(&format!("\"p_purchase_90d\":{probability}")), "{json}");
        // Without a model: no probability, no field.
        let (plain, store, mut out) = (engine(), Store::new(), Vec::new());
        plain.apply(&store.partition(0), &purchase("p1", "c", T0, 20.0), None, &mut out);
        assert_eq!(scores(&out)[0].p_purchase.0, None);
        let json = String::from_utf8(crate::codec::output::encode(&out[0], crate::vocab::Format::Json)).unwrap();
        assert!(!json.contains("p_purchase"), "{json}");
    }

    #[test]
    fn health_from_the_model_follows_the_probability_once_overdue() {
        let (e, store, mut out) = (engine_with_model(crate::config::HealthFrom::Model), Store::new(), Vec::new());
        let p = store.partition(0);
        // Active on days 0..=3: cadence 1 day.
        for d in 0..4 {
            e.apply(&p, &click(&format!("v{d}"), "c", T0 + d * DAY_MS, ClickKind::ProductView), None, &mut out);
        }
        out.clear();
        let probability = |at: i64| {
            let state = p.get("c").unwrap();
            let snap = e.snapshot(&state, at);
            e.p_purchase(&state, &snap, e.value_90d(&state, &snap)).unwrap()
        };
        // Idle 1 day: z = −3·(ln 2 − 1)/2 > 0, p > ½ ≥ 0.3: active.
        e.sweep(&p, T0 + 4 * DAY_MS, &mut out);
        assert!(alerts(&out).is_empty() && probability(T0 + 4 * DAY_MS) > 0.5);
        // Idle 5 days: p = σ(−3·(ln 6 − 1)/2) = 0.23: at_risk, by the model alone.
        e.sweep(&p, T0 + 8 * DAY_MS, &mut out);
        let a = alerts(&out);
        assert_eq!(a.len(), 1, "{out:?}");
        assert_eq!((a[0].kind, a[0].reasons.len(), a[0].reasons[0].signal), (AlertKind::AtRisk, 1, "p_purchase_90d"));
        assert_eq!((a[0].reasons[0].value, a[0].reasons[0].threshold), (probability(T0 + 8 * DAY_MS), 0.3));
        // The score change that carries the new health carries the same probability.
        assert_eq!(scores(&out)[0].p_purchase.0.map(|p| p.1), Some(a[0].reasons[0].value));
        out.clear();
        // Idle 15 days: p = σ(−3·(ln 16 − 1)/2) = 0.065 < 0.1: dormant.
        e.sweep(&p, T0 + 18 * DAY_MS, &mut out);
        assert_eq!(alerts(&out).iter().map(|a| a.kind).collect::<Vec<_>>(), vec![AlertKind::Dormant]);
    }

    #[test]
    fn stage_moves_with_purchases_and_publishes() {
        let (e, store, mut out) = (engine(), Store::new(), Vec::new());
        let p = store.partition(0);
        for d in [0, 3, 6] {
            e.apply(&p, &purchase(&format!("p{d}"), "c", T0 + d * DAY_MS, 50.0), None, &mut out);
        }
        let stages: Vec<Stage> = scores(&out).iter().map(|s| s.stage).collect();
        // 1 purchase day: initiation; 2: integration; 3: intelligence.
        assert_eq!(stages, vec![Stage::Initiation, Stage::Integration, Stage::Intelligence]);
    }
}
