//! Invariants of the engine that must hold for any input (proptest).

use std::borrow::Cow;

use engage::config::Config;
use engage::engine::event::{DAY_MS, Event, EventKind, Source};
use engage::engine::output::Output;
use engage::engine::state::{CustomerState, DEDUP_WINDOW};
use engage::engine::store::Store;
use engage::engine::{Engine, Outcome, Rules};
use engage::vocab::{ClickKind, InputKind};
use proptest::prelude::*;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![
        (0..ClickKind::KNOWN.len()).prop_map(|i| EventKind::Click { kind: ClickKind::KNOWN[i], rating: None }),
        (1u8..=5).prop_map(|r| EventKind::Click { kind: ClickKind::Feedback, rating: Some(f64::from(r)) }),
        (0.0..1e6f64, any::<bool>(), any::<bool>()).prop_map(|(amount, loyalty_member, coupon_used)| {
            EventKind::Purchase { amount, loyalty_member, coupon_used }
        }),
        (0.0..500.0f64).prop_map(|amount| EventKind::Refund { amount }),
    ]
}

/// One customer's events, spread over 300 days: within `state.retention`
/// (400 days), the span within which late events are placed on their day
/// exactly, however late (see `engage::engine::state`).
fn history(max_len: usize) -> impl Strategy<Value = Vec<Event<'static>>> {
    prop::collection::vec((0..300 * DAY_MS, kind()), 1..max_len).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (offset, kind))| Event {
                event_id: Cow::Owned(format!("e{i}")),
                customer_id: Cow::Borrowed("c"),
                ts_ms: T0 + offset,
                kind,
            })
            .collect()
    })
}

fn engine() -> Engine {
    Engine::new(Rules::new(&Config::default()))
}

fn source(e: &Event<'_>, i: usize) -> Option<Source> {
    let topic = match e.kind {
        EventKind::Click { .. } => InputKind::Clickstream,
        _ => InputKind::Purchases,
    };
    Some(Source { topic, offset: i as i64 })
}

fn run(events: &[Event<'static>]) -> (CustomerState, Vec<Output>) {
    let (e, store, mut out) = (engine(), Store::new(), Vec::new());
    let p = store.partition(0);
    for (i, ev) in events.iter().enumerate() {
        e.apply(&p, ev, source(ev, i), &mut out);
    }
    (p.get("c").expect("customer exists"), out)
}

fn close(a: f64, b: f64) -> bool {
    // Relative 1e-9, with an absolute floor for values that cancel to ~0.
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// For the decayed sums, which the state keeps in f32 (each event rounds
/// to about seven significant digits), and what is derived from them.
fn close_f32(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1.0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn arrival_order_does_not_change_the_accumulated_state(
        (events, shuffled) in history(40).prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
    ) {
        let (a, _) = run(&events);
        let (b, _) = run(&shuffled);
        // The decayed sums are signed (satisfaction goes down with support
        // contacts and low ratings, spend with refunds): where terms cancel,
        // the f32 rounding is that of the terms, not of the small result.
        let rules = engine().rules().scoring.clone();
        let mut scale = [0.0f64; 6];
        for e in &events {
            let decay = rules.decay(a.last_seen - e.ts_ms);
            for (i, c) in rules.contributions(&e.kind).iter().enumerate() {
                scale[i] += (c * decay[i]).abs();
            }
            if let EventKind::Purchase { amount, .. } | EventKind::Refund { amount } = e.kind {
                scale[5] += amount * decay[1];
            }
        }
        let near = |x: f32, y: f32, scale: f64| (f64::from(x) - f64::from(y)).abs() <= 1e-5 * scale.max(1.0);
        for (i, (x, y)) in a.raw.iter().zip(&b.raw).enumerate() {
            prop_assert!(near(*x, *y, scale[i]), "dimension {i}: {x} vs {y} (terms {})", scale[i]);
        }
        prop_assert!(close(a.spend_lifetime(), b.spend_lifetime()));
        let (x, y) = (a.spend_decayed, b.spend_decayed);
        prop_assert!(near(x, y, scale[5]), "decayed spend {x} vs {y} (terms {})", scale[5]);
        prop_assert!(close(a.spend_first_day(), b.spend_first_day()));
        prop_assert_eq!((a.first_seen, a.last_seen), (b.first_seen, b.last_seen));
        prop_assert_eq!((a.active_days, a.purchase_days()), (b.active_days, b.purchase_days()));
        let days = |s: &engage::engine::state::CustomerState| s.purchases().map(|p| (p.first_day, p.last_day));
        prop_assert_eq!(days(&a), days(&b));
        // Everything derived from the facts agrees too.
        let e = engine();
        let at = a.last_seen + 5 * DAY_MS;
        let (sa, sb) = (e.snapshot(&a, at), e.snapshot(&b, at));
        prop_assert!(close_f32(sa.score, sb.score));
        prop_assert_eq!(sa.stage, sb.stage);
        prop_assert!(close(sa.signals.p_alive, sb.signals.p_alive));
        prop_assert!(close(sa.signals.cadence_days, sb.signals.cadence_days));
    }

    #[test]
    fn reapplying_an_applied_event_changes_nothing(events in history(30), pick in any::<prop::sample::Index>()) {
        let (e, store, mut out) = (engine(), Store::new(), Vec::new());
        let p = store.partition(0);
        for (i, ev) in events.iter().enumerate() {
            e.apply(&p, ev, source(ev, i), &mut out);
        }
        let before = p.get("c").unwrap();
        out.clear();
        // Any record replayed from Kafka: caught by its offset.
        let i = pick.index(events.len());
        prop_assert_eq!(e.apply(&p, &events[i], source(&events[i], i), &mut out), Outcome::Duplicate);
        // A recent event re-sent upstream under a new offset: caught by its id.
        let recent = events.len() - 1 - pick.index(events.len().min(DEDUP_WINDOW));
        let resent = Some(Source { topic: InputKind::Clickstream, offset: 1_000_000 });
        prop_assert_eq!(e.apply(&p, &events[recent], resent, &mut out), Outcome::Duplicate);
        prop_assert_eq!(p.get("c").unwrap(), before);
        prop_assert!(out.is_empty());
    }

    #[test]
    fn scores_stay_within_0_and_100(events in history(60), sweeps in prop::collection::vec(0..400i64, 0..5)) {
        let (e, store, mut out) = (engine(), Store::new(), Vec::new());
        let p = store.partition(0);
        for (i, ev) in events.iter().enumerate() {
            e.apply(&p, ev, source(ev, i), &mut out);
        }
        for d in sweeps {
            e.sweep(&p, T0 + d * DAY_MS, &mut out);
        }
        for o in &out {
            let (score, dims) = match o {
                Output::Score(s) => (s.score, s.dimensions.0),
                Output::Alert(a) => (a.score, [50.0; 5]),
                Output::Erasure(_) => unreachable!("no erasure was applied"),
            };
            prop_assert!((0.0..=100.0).contains(&score), "score {score}");
            for d in dims {
                prop_assert!((0.0..=100.0).contains(&d), "dimension {d}");
            }
        }
    }

    #[test]
    fn without_events_every_dimension_only_decays(events in history(30), gaps in prop::collection::vec(1..100 * DAY_MS, 1..6)) {
        let (state, _) = run(&events);
        let e = engine();
        let mut t = state.last_seen;
        let mut prev = state.raw_at(t, &e.rules().scoring);
        let mut prev_scores = e.snapshot(&state, t).dimensions;
        for gap in gaps {
            t += gap;
            let raw = state.raw_at(t, &e.rules().scoring);
            let scores = e.snapshot(&state, t).dimensions;
            for i in 0..5 {
                prop_assert!(raw[i].abs() <= prev[i].abs(), "raw {i} grew: {} → {}", prev[i], raw[i]);
                // Satisfaction decays towards its neutral 50, the others towards 0.
                let neutral = if i == 4 { 50.0 } else { 0.0 };
                prop_assert!((scores[i] - neutral).abs() <= (prev_scores[i] - neutral).abs() + 1e-12);
            }
            prev = raw;
            prev_scores = scores;
        }
    }
}
