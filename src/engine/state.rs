//! Per-customer state (docs/model.md "Customer state and retention"): compact, order-insensitive where the model
//! asks for it, and carrying what is needed to apply every input exactly once.
//!
//! The accumulated *facts* — decayed dimension values, distinct days,
//! purchase summary, spend — depend only on the set of events applied, not on
//! their arrival order: a late event is decayed to the state's reference time
//! instead of the state being decayed to it. What was *published* (seq, last
//! published score, health transitions) naturally follows arrival order.
//!
//! Distinct active days and distinct purchase days are sets of UTC days
//! (`days.rs`): a count plus a 56-day bitmap ending at the newest day, held
//! inline, and the older days out of line once a set day leaves the
//! bitmap. A late event counts its day exactly once, however late, while
//! it is within the exactness horizon ([`crate::engine::Rules::horizon_days`],
//! `state.retention`: 400 days) of the set's newest day, so the counts are
//! those of applying the events in event-time order (`engage replay`). The
//! remaining limit: a day more than the horizon older than the newest is
//! counted if it predates the first day, and otherwise assumed already
//! counted; so is a day older than the 64-day bitmap of a state restored
//! from a version 1 or 2 record.

mod days;

pub use self::days::OlderDays;
use self::days::{Beyond, Days, Set, Window};

use crate::engine::event::{Event, EventKind, Source, day_of};
use crate::engine::lifecycle::Stage;
use crate::engine::scoring::ScoringRules;
use crate::vocab::Health;
use crate::vocab::{DIMENSIONS, EVENT_INPUTS};

/// How many recent event ids each customer remembers for duplicate detection
/// (an upstream producer retry re-sends an event right after the original).
/// Replays of already-applied Kafka records are caught by offset instead, at
/// any distance.
pub const DEDUP_WINDOW: usize = 4;

/// The default exactness horizon for late days, in days: the default
/// `state.retention` (see [`crate::engine::Rules::horizon_days`]).
pub const DEFAULT_HORIZON_DAYS: i32 = 400;

pub use self::days::WINDOW_DAYS;

/// Event-id hashes are the top 48 bits of xxh3: with a window of
/// [`DEDUP_WINDOW`], a new event is mistaken for a recent one with
/// probability 4 / 2⁴⁸ ≈ 1.4·10⁻¹⁴ (once in two years at a million events a
/// second), and each remembered id takes 6 bytes instead of 8.
pub(crate) const ID_HASH_SHIFT: u32 = 16;

/// One customer's engagement state: 128 bytes (one allocator size class),
/// plus 40 bytes of [`Purchases`] for a customer who has bought or
/// refunded, plus 32 bytes and 8 per 64 days of older days once its active
/// days span more than 56 days (24 more once its purchase days do too).
/// docs/performance.md has the measured cost per customer, map included.
///
/// The decayed sums are kept in `f32` and computed in `f64`: about seven
/// significant digits, which moves a 0–100 score by well under 0.001
/// points (its slope is at most 100 / saturation per unit of sum).
#[derive(Clone, Debug, PartialEq)]
pub struct CustomerState {
    /// Event time (epoch ms) of the first activity.
    pub first_seen: i64,
    /// Event time of the latest activity: the reference time of `raw` and
    /// `spend_decayed`. `i64::MIN` until the first event.
    pub last_seen: i64,
    /// Highest applied offset per event input, in [`crate::vocab::InputKind::EVENTS`]
    /// order (`-1`: none).
    pub offsets: [i64; EVENT_INPUTS],
    active_window: Window,
    /// Out of line: most customers of an engagement stream never buy.
    purchases: Option<Box<Purchases>>,
    /// Out of line: days older than the bitmaps, once there are some.
    beyond: Option<Box<Beyond>>,
    /// Decayed dimension sums as of `last_seen`, in [`crate::vocab::Dimension`] order.
    pub raw: [f32; DIMENSIONS],
    /// Spend decayed with the transaction half-life, as of `last_seen`.
    pub spend_decayed: f32,
    /// Hashes of the most recent event ids, oldest first (0: none).
    recent_ids: [[u8; 6]; DEDUP_WINDOW],
    /// Highest score within the score-drop window ...
    pub peak_score: f32,
    /// ... and the day it was reached.
    pub peak_day: i32,
    /// The score in the last published score change.
    pub published_score: f32,
    /// Messages published for this customer (the last `seq` used).
    pub seq: u32,
    /// Distinct active days.
    pub active_days: u16,
    /// Dimension scores at the last published score change, in half points.
    pub published_dims: [u8; DIMENSIONS],
    /// Stage at the last evaluation.
    pub stage: Stage,
    /// Health at the last evaluation.
    pub health: Health,
}

// The state is one allocator size class: a dimension, an event input or a
// field more must be paid for elsewhere (out of line, like `Purchases`), or
// the per-customer memory target (docs/performance.md) is knowingly moved.
const _: () = assert!(std::mem::size_of::<CustomerState>() <= 128, "CustomerState outgrew 128 bytes");

/// A customer's purchase facts, held once they buy or refund.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Purchases {
    /// Purchases minus refunds, currency units.
    pub spend_lifetime: f64,
    /// Purchases on the first purchase day (BG/NBD and Gamma-Gamma leave the
    /// first day out of repeat behaviour).
    pub spend_first_day: f64,
    window: Window,
    /// UTC day number of the first purchase (valid when `days > 0`).
    pub first_day: i32,
    /// UTC day number of the latest purchase.
    pub last_day: i32,
    /// Distinct purchase days.
    pub days: u16,
}

impl Purchases {
    /// The purchase days, their older days in `beyond`.
    fn days<'a>(&'a mut self, beyond: &'a mut Option<Box<Beyond>>) -> Days<'a> {
        Days {
            window: &mut self.window,
            count: &mut self.days,
            newest: &mut self.last_day,
            oldest: &mut self.first_day,
            beyond,
            set: Set::Purchase,
        }
    }
}

impl Default for CustomerState {
    fn default() -> Self {
        CustomerState {
            first_seen: i64::MIN,
            last_seen: i64::MIN,
            offsets: [-1; EVENT_INPUTS],
            active_window: Window::default(),
            purchases: None,
            beyond: None,
            raw: [0.0; DIMENSIONS],
            spend_decayed: 0.0,
            recent_ids: [[0; 6]; DEDUP_WINDOW],
            peak_score: 0.0,
            peak_day: 0,
            published_score: 0.0,
            seq: 0,
            active_days: 0,
            published_dims: [0; DIMENSIONS],
            stage: Stage::Initiation,
            health: Health::Active,
        }
    }
}

/// The stable hash under which an event id is remembered: the top 48 bits
/// of its xxh3, which is specified, so hashes persisted in the changelog
/// stay valid across engage versions.
pub fn event_id_hash(event_id: &str) -> u64 {
    // 0 marks an empty slot; remap the ids that hash to it.
    (xxhash_rust::xxh3::xxh3_64(event_id.as_bytes()) >> ID_HASH_SHIFT).max(1)
}

fn pack_id(h: u64) -> [u8; 6] {
    let b = h.to_le_bytes();
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

fn unpack_id(b: [u8; 6]) -> u64 {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], 0, 0])
}

/// BG/NBD's purchase summary at daily granularity, as `lifetimes`
/// (`summary_data_from_transaction_data`, freq "D") builds it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PurchaseSummary {
    /// Repeat purchase days (`x`): distinct purchase days minus the first.
    pub repeat_purchases: u32,
    /// Latest minus first purchase day (`t_x`), days.
    pub recency_days: f64,
    /// As-of day minus first purchase day (`T`), days.
    pub age_days: f64,
}

impl CustomerState {
    /// True until the first event is applied.
    pub fn is_new(&self) -> bool {
        self.last_seen == i64::MIN
    }

    /// Whether this input is already reflected in the state: its offset is at
    /// or below the highest applied for its topic, or its id is among the
    /// most recent ones.
    pub fn already_applied(&self, source: Option<Source>, id_hash: u64) -> bool {
        source.is_some_and(|s| s.topic.event_index().is_some_and(|i| s.offset <= self.offsets[i]))
            || self.recent_ids.contains(&pack_id(id_hash))
    }

    /// Records that this input has been applied.
    pub fn mark_applied(&mut self, source: Option<Source>, id_hash: u64) {
        if let Some((i, offset)) = source.and_then(|s| Some((s.topic.event_index()?, s.offset))) {
            self.offsets[i] = self.offsets[i].max(offset);
        }
        self.recent_ids.copy_within(1.., 0);
        self.recent_ids[DEDUP_WINDOW - 1] = pack_id(id_hash);
    }

    /// [`CustomerState::absorb_within`] the default horizon,
    /// [`DEFAULT_HORIZON_DAYS`].
    pub fn absorb(&mut self, event: &Event<'_>, contrib: &[f64; DIMENSIONS], rules: &ScoringRules) {
        self.absorb_within(event, contrib, rules, DEFAULT_HORIZON_DAYS);
    }

    /// Folds one event into the accumulated facts. `contrib` is
    /// [`ScoringRules::contributions`] of the event. A late day is counted
    /// exactly once if it is within `horizon_days` of the newest day of its
    /// set (see the module docs).
    pub fn absorb_within(
        &mut self,
        event: &Event<'_>,
        contrib: &[f64; DIMENSIONS],
        rules: &ScoringRules,
        horizon_days: i32,
    ) {
        let ts = event.ts_ms;
        let spend = match event.kind {
            EventKind::Purchase { amount, .. } => amount,
            EventKind::Refund { amount } => -amount,
            EventKind::Click { .. } => 0.0,
        };
        let day = day_of(ts);
        let new = self.is_new();
        // The active days' newest and oldest are those of last and first seen.
        let (mut newest, mut oldest) = if new { (day, day) } else { (day_of(self.last_seen), day_of(self.first_seen)) };
        let active = Days {
            window: &mut self.active_window,
            count: &mut self.active_days,
            newest: &mut newest,
            oldest: &mut oldest,
            beyond: &mut self.beyond,
            set: Set::Active,
        };
        if new {
            active.start(day);
        } else {
            active.add(day, horizon_days);
        }
        // Computed in f64, kept in f32 (see the type's docs).
        if new {
            self.first_seen = ts;
            self.last_seen = ts;
            self.raw = contrib.map(|c| c as f32);
            self.spend_decayed = spend as f32;
        } else {
            if ts >= self.last_seen {
                let decay = rules.decay(ts - self.last_seen);
                for i in 0..DIMENSIONS {
                    self.raw[i] = (f64::from(self.raw[i]) * decay[i] + contrib[i]) as f32;
                }
                self.spend_decayed = (f64::from(self.spend_decayed) * decay[1] + spend) as f32;
                self.last_seen = ts;
            } else {
                let decay = rules.decay(self.last_seen - ts);
                for i in 0..DIMENSIONS {
                    self.raw[i] = (f64::from(self.raw[i]) + contrib[i] * decay[i]) as f32;
                }
                self.spend_decayed = (f64::from(self.spend_decayed) + spend * decay[1]) as f32;
                self.first_seen = self.first_seen.min(ts);
            }
        }
        if spend == 0.0 && !matches!(event.kind, EventKind::Purchase { .. }) {
            return;
        }
        let p = self.purchases.get_or_insert_with(Box::default);
        p.spend_lifetime += spend;
        if let EventKind::Purchase { amount, .. } = event.kind {
            if p.days == 0 {
                p.spend_first_day = amount;
                p.days(&mut self.beyond).start(day);
            } else {
                if day < p.first_day {
                    p.spend_first_day = amount;
                } else if day == p.first_day {
                    p.spend_first_day += amount;
                }
                p.days(&mut self.beyond).add(day, horizon_days);
            }
        }
    }

    /// The purchase facts, or `None` before the first purchase or refund.
    pub fn purchases(&self) -> Option<&Purchases> {
        self.purchases.as_deref()
    }

    /// Purchases minus refunds, currency units.
    pub fn spend_lifetime(&self) -> f64 {
        self.purchases().map_or(0.0, |p| p.spend_lifetime)
    }

    /// Purchases on the first purchase day.
    pub fn spend_first_day(&self) -> f64 {
        self.purchases().map_or(0.0, |p| p.spend_first_day)
    }

    /// Distinct purchase days.
    pub fn purchase_days(&self) -> u16 {
        self.purchases().map_or(0, |p| p.days)
    }

    /// Mean spend per repeat purchase day (Gamma-Gamma's monetary value):
    /// spend after the first purchase day over `repeat_days`; 0 without
    /// repeats.
    pub fn mean_repeat_spend(&self, repeat_days: f64) -> f64 {
        if repeat_days > 0.0 { (self.spend_lifetime() - self.spend_first_day()) / repeat_days } else { 0.0 }
    }

    /// The raw dimension values decayed to `now` (not before `last_seen`).
    pub fn raw_at(&self, now: i64, rules: &ScoringRules) -> [f64; DIMENSIONS] {
        let decay = rules.decay(now.saturating_sub(self.last_seen));
        let mut v = self.raw.map(f64::from);
        for i in 0..DIMENSIONS {
            v[i] *= decay[i];
        }
        v
    }

    /// Mean gap between active days, in days; `prior` until there are two.
    pub fn cadence_days(&self, prior: f64) -> f64 {
        if self.active_days < 2 {
            return prior;
        }
        let span = day_of(self.last_seen) - day_of(self.first_seen);
        f64::from(span.max(1)) / f64::from(self.active_days - 1)
    }

    /// The BG/NBD summary as of `as_of` (epoch ms), or `None` before the
    /// first purchase.
    pub fn purchase_summary(&self, as_of: i64) -> Option<PurchaseSummary> {
        let p = self.purchases().filter(|p| p.days > 0)?;
        Some(PurchaseSummary {
            repeat_purchases: u32::from(p.days) - 1,
            recency_days: f64::from(p.last_day - p.first_day),
            age_days: f64::from((day_of(as_of) - p.first_day).max(0)),
        })
    }

    /// Tracks the highest score of the last `window_ms`: a new high replaces
    /// the peak, and a peak older than the window is replaced by the current
    /// score.
    pub fn update_peak(&mut self, score: f64, now: i64, window_ms: i64) {
        let day = day_of(now);
        let window_days = (window_ms / crate::engine::event::DAY_MS) as i32;
        if score >= f64::from(self.peak_score) || day - self.peak_day > window_days {
            self.peak_score = score as f32;
            self.peak_day = day;
        }
    }

    /// Dimension scores as last published, in points.
    pub fn published_dimension_scores(&self) -> [f64; DIMENSIONS] {
        self.published_dims.map(|h| f64::from(h) / 2.0)
    }

    /// Remembers what a published score change said.
    pub fn record_published(&mut self, score: f64, dims: &[f64; DIMENSIONS]) {
        self.published_score = score as f32;
        // Scores are 0–100, so half points fit a byte.
        self.published_dims = dims.map(|d| (d * 2.0).round().clamp(0.0, 200.0) as u8);
    }

    /// The state's facts in the plain form they are persisted in
    /// ([`crate::codec::state`] writes it to the changelog).
    pub fn to_persisted(&self) -> Persisted {
        let p = self.purchases().cloned().unwrap_or_default();
        Persisted {
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            active_days: u32::from(self.active_days),
            active_day_bits: self.active_window.bits(),
            purchase_days: u32::from(p.days),
            purchase_day_bits: p.window.bits(),
            first_purchase_day: p.first_day,
            last_purchase_day: p.last_day,
            dimensions: self.raw.map(f64::from),
            spend_lifetime: p.spend_lifetime,
            spend_decayed: f64::from(self.spend_decayed),
            spend_first_day: p.spend_first_day,
            peak_score: self.peak_score,
            peak_day: self.peak_day,
            published_score: self.published_score,
            published_dimensions: self.published_dims,
            seq: self.seq,
            stage: self.stage,
            health: self.health,
            applied_offsets: self.offsets,
            // Oldest first, so a reader refills its ring in order.
            recent_event_ids: self.recent_ids.iter().map(|b| unpack_id(*b)).filter(|h| *h != 0).collect(),
            older_active_days: days::older_days(&self.beyond, Set::Active),
            older_purchase_days: days::older_days(&self.beyond, Set::Purchase),
            legacy_window: false,
        }
    }

    /// A state from its persisted facts; the error names the field that is
    /// out of range.
    pub fn from_persisted(p: &Persisted) -> Result<CustomerState, &'static str> {
        let mut purchases = Purchases {
            spend_lifetime: p.spend_lifetime,
            spend_first_day: p.spend_first_day,
            window: Window::default(),
            first_day: p.first_purchase_day,
            last_day: p.last_purchase_day,
            days: u16::try_from(p.purchase_days).map_err(|_| "purchase_days")?,
        };
        let active_days = u16::try_from(p.active_days).map_err(|_| "active_days")?;
        let (mut active_window, mut beyond) = (Window::default(), None);
        if active_days > 0 && p.last_seen != i64::MIN {
            let (mut newest, mut oldest) = (day_of(p.last_seen), day_of(p.first_seen));
            let set = Days {
                window: &mut active_window,
                count: &mut 0,
                newest: &mut newest,
                oldest: &mut oldest,
                beyond: &mut beyond,
                set: Set::Active,
            };
            set.restore(p.active_day_bits, p.older_active_days.as_ref(), p.legacy_window)
                .map_err(|_| "older_active_days")?;
        }
        if purchases.days > 0 {
            purchases
                .days(&mut beyond)
                .restore(p.purchase_day_bits, p.older_purchase_days.as_ref(), p.legacy_window)
                .map_err(|_| "older_purchase_days")?;
        }
        let mut s = CustomerState {
            first_seen: p.first_seen,
            last_seen: p.last_seen,
            offsets: p.applied_offsets,
            active_window,
            // Absent and all-zero are the same facts; keep the one form.
            purchases: (purchases != Purchases::default()).then(|| Box::new(purchases)),
            beyond,
            raw: p.dimensions.map(|v| v as f32),
            spend_decayed: p.spend_decayed as f32,
            recent_ids: [[0; 6]; DEDUP_WINDOW],
            peak_score: p.peak_score,
            peak_day: p.peak_day,
            published_score: p.published_score,
            seq: p.seq,
            active_days,
            published_dims: p.published_dimensions,
            stage: p.stage,
            health: p.health,
        };
        for h in p.recent_event_ids.iter().rev().take(DEDUP_WINDOW).rev() {
            s.mark_applied(None, *h);
        }
        Ok(s)
    }
}

/// A customer state's facts in the plain form they are persisted in: what
/// [`crate::codec::state`] maps to and from the versioned
/// `engage.v1.CustomerState` message.
#[derive(Clone, Debug, PartialEq)]
pub struct Persisted {
    /// [`CustomerState::first_seen`].
    pub first_seen: i64,
    /// [`CustomerState::last_seen`].
    pub last_seen: i64,
    /// Distinct active days.
    pub active_days: u32,
    /// Bit i: active on day `day(last_seen) − i`, for i < [`WINDOW_DAYS`]
    /// (64 in a `legacy_window` record).
    pub active_day_bits: u64,
    /// Distinct purchase days.
    pub purchase_days: u32,
    /// Bit i: purchased on day `last_purchase_day − i`, as for
    /// `active_day_bits`.
    pub purchase_day_bits: u64,
    /// UTC day number of the first purchase (when `purchase_days > 0`).
    pub first_purchase_day: i32,
    /// UTC day number of the latest purchase.
    pub last_purchase_day: i32,
    /// Decayed dimension sums as of `last_seen`, in dimension order.
    pub dimensions: [f64; DIMENSIONS],
    /// Purchases minus refunds.
    pub spend_lifetime: f64,
    /// Spend decayed with the transaction half-life, as of `last_seen`.
    pub spend_decayed: f64,
    /// Purchases on the first purchase day.
    pub spend_first_day: f64,
    /// [`CustomerState::peak_score`].
    pub peak_score: f32,
    /// [`CustomerState::peak_day`].
    pub peak_day: i32,
    /// [`CustomerState::published_score`].
    pub published_score: f32,
    /// [`CustomerState::published_dims`].
    pub published_dimensions: [u8; DIMENSIONS],
    /// [`CustomerState::seq`].
    pub seq: u32,
    /// [`CustomerState::stage`].
    pub stage: Stage,
    /// [`CustomerState::health`].
    pub health: Health,
    /// [`CustomerState::offsets`]: the highest offset applied per event
    /// input.
    pub applied_offsets: [i64; EVENT_INPUTS],
    /// The most recent event-id hashes (48 bits), oldest first.
    pub recent_event_ids: Vec<u64>,
    /// Active days older than the window, if any are kept.
    pub older_active_days: Option<OlderDays>,
    /// Purchase days older than the window, if any are kept.
    pub older_purchase_days: Option<OlderDays>,
    /// The record's windows held 64 days and no older days were kept
    /// (versions 1 and 2): days older than the window are unknown.
    pub legacy_window: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::state::{STATE_VERSION, StateError, state_from_proto, state_to_proto};
    use crate::config::ScoringConfig;
    use crate::engine::event::DAY_MS;
    use crate::vocab::{ClickKind, InputKind};
    use std::borrow::Cow;

    fn rules() -> ScoringRules {
        ScoringRules::new(&ScoringConfig::default())
    }

    fn ev(id: &str, day: f64, kind: EventKind) -> Event<'static> {
        Event {
            event_id: Cow::Owned(id.into()),
            customer_id: Cow::Borrowed("c"),
            ts_ms: (day * DAY_MS as f64) as i64,
            kind,
        }
    }

    fn absorb(s: &mut CustomerState, e: &Event<'_>) {
        let r = rules();
        s.absorb(e, &r.contributions(&e.kind), &r);
    }

    fn view() -> EventKind {
        EventKind::Click { kind: ClickKind::PageView, rating: None }
    }

    fn buy(amount: f64) -> EventKind {
        EventKind::Purchase { amount, loyalty_member: false, coupon_used: false }
    }

    #[test]
    fn stays_compact() {
        // The 256-byte budget per customer (docs/model.md "Customer state and retention") includes the map entry
        // and allocator overhead; the state itself must leave room for them.
        // 128 bytes is one of mimalloc's size classes (184 took a 192 one).
        assert!(std::mem::size_of::<CustomerState>() <= 128, "{}", std::mem::size_of::<CustomerState>());
        assert!(std::mem::size_of::<Purchases>() <= 48, "{}", std::mem::size_of::<Purchases>());
        // Older days: 32 bytes (24 more for purchase days), plus their words.
        assert!(std::mem::size_of::<Beyond>() <= 32, "{}", std::mem::size_of::<Beyond>());
    }

    #[test]
    fn default_horizon_is_the_default_retention() {
        let retention = crate::config::StateConfig::default().retention.as_secs();
        assert_eq!(u64::try_from(DEFAULT_HORIZON_DAYS).unwrap() * 86_400, retention);
        assert_eq!(crate::engine::Rules::new(&crate::config::Config::default()).horizon_days, DEFAULT_HORIZON_DAYS);
    }

    /// Applies page views (or purchases) on these days, in this order.
    fn days_state(days: &[i32], kind: fn() -> EventKind, horizon: i32) -> CustomerState {
        let mut s = CustomerState::default();
        for (i, d) in days.iter().enumerate() {
            let r = rules();
            let e = ev(&format!("e{i}"), f64::from(*d) + 0.5, kind());
            s.absorb_within(&e, &r.contributions(&e.kind), &r, horizon);
        }
        s
    }

    fn older_words(s: &CustomerState) -> usize {
        state_to_proto(s, "c").older_active_days.map_or(0, |o| o.words.len())
    }

    #[test]
    fn a_day_more_than_the_bitmap_late_is_counted_once() {
        // The case: one input months ahead of the other.
        let s = days_state(&[0, 10, 200, 30, 100, 100, 30, 10, 0, 199], view, DEFAULT_HORIZON_DAYS);
        assert_eq!(s.active_days, 6, "days 0, 10, 30, 100, 199, 200");
        assert_eq!((day_of(s.first_seen), day_of(s.last_seen)), (0, 200));
        assert_eq!(s.cadence_days(7.0), 40.0);
        // The same for purchase days.
        let p = days_state(&[0, 10, 200, 30, 100, 100, 30, 10, 0, 199], || buy(1.0), DEFAULT_HORIZON_DAYS);
        assert_eq!(p.purchase_summary(200 * DAY_MS).unwrap().repeat_purchases, 5);
        // A customer within one bitmap allocates nothing out of line.
        assert!(days_state(&[0, 55, 3, 55, 0], view, DEFAULT_HORIZON_DAYS).beyond.is_none());
    }

    #[test]
    fn a_day_before_the_first_day_is_new_at_any_distance() {
        let s = days_state(&[1000, 1001, 900, 100, 100, 900], view, DEFAULT_HORIZON_DAYS);
        // Day 100 is 901 days late: beyond the horizon, but before the first day.
        assert_eq!(s.active_days, 4);
        assert_eq!(day_of(s.first_seen), 100);
        // Beyond the horizon a day is never counted twice; one between the
        // first day and a day already forgotten (100, here, kept only as
        // the first day) is assumed counted: the remaining limit.
        let t = days_state(&[1000, 100, 500, 500, 300], view, DEFAULT_HORIZON_DAYS);
        assert_eq!(t.active_days, 3, "300 is missed");
        // Within it, it is placed exactly.
        let u = days_state(&[1000, 100, 700, 650, 700], view, DEFAULT_HORIZON_DAYS);
        assert_eq!(u.active_days, 4);
    }

    #[test]
    fn older_days_are_trimmed_to_the_horizon() {
        // Active every 3rd day for 20 years, then a day from 1970: at most
        // ⌈(horizon − window) / 64⌉ + 1 words are held.
        let mut days: Vec<i32> = (0..7300).step_by(3).map(|d| 20_000 + d).collect();
        days.push(0);
        let bound = ((DEFAULT_HORIZON_DAYS - WINDOW_DAYS) as usize).div_ceil(64) + 1;
        let s = days_state(&days, view, DEFAULT_HORIZON_DAYS);
        assert!(older_words(&s) <= bound, "{} words", older_words(&s));
        assert_eq!(usize::from(s.active_days), days.len());
        // A late day within the horizon is still placed exactly ...
        let newest = *days.iter().max().unwrap();
        let mut t = s.clone();
        absorb(&mut t, &ev("late", f64::from(newest - 301), view()));
        assert_eq!(t.active_days, s.active_days + 1);
        absorb(&mut t, &ev("late-again", f64::from(newest - 301), view()));
        absorb(&mut t, &ev("known", f64::from(newest - 300), view()));
        assert_eq!(t.active_days, s.active_days + 1);
        // ... and one beyond it is assumed counted.
        absorb(&mut t, &ev("beyond", f64::from(newest - 1000), view()));
        assert_eq!(t.active_days, s.active_days + 1);
        // A small horizon keeps at least the bitmap, and no words.
        let small = days_state(&[0, 100, 200, 300, 150], view, 30);
        assert_eq!((small.active_days, older_words(&small)), (4, 0));
    }

    #[test]
    fn older_days_survive_a_round_trip() {
        let mut s = days_state(&[0, 70, 140, 5, 200, 3], || buy(2.0), DEFAULT_HORIZON_DAYS);
        absorb(&mut s, &ev("v", 201.0, view()));
        let proto = state_to_proto(&s, "c");
        assert_eq!(proto.version, STATE_VERSION);
        assert!(proto.older_active_days.is_some() && proto.older_purchase_days.is_some());
        let (_, mut back) = state_from_proto(&proto).unwrap();
        assert_eq!(back, s);
        // Restored, late days are still placed exactly.
        absorb(&mut back, &ev("again", 70.0, view()));
        absorb(&mut back, &ev("new", 71.0, buy(1.0)));
        assert_eq!((back.active_days, back.purchase_days()), (s.active_days + 1, s.purchase_days() + 1));
        // A base day that is not a multiple of 64 is refused.
        let mut bad = proto.clone();
        bad.older_active_days.as_mut().unwrap().base_day += 1;
        assert!(matches!(state_from_proto(&bad), Err(StateError::Field("older_active_days"))));
    }

    #[test]
    fn a_version_2_state_keeps_its_64_day_bitmap_and_never_double_counts() {
        // Version 2: days 0, 37, 40, 70 and 100: bits 63, 60, 30 and 0 of
        // day 100's 64-day bitmap (day 0 was older than it).
        let mut v2 = state_to_proto(&days_state(&[100], view, DEFAULT_HORIZON_DAYS), "c");
        v2.version = 2;
        v2.first_seen = 0;
        v2.active_days = 5;
        v2.active_day_bits = 1 << 63 | 1 << 60 | 1 << 30 | 1;
        v2.older_active_days = None;
        let (_, mut s) = state_from_proto(&v2).unwrap();
        assert_eq!(s.active_days, 5);
        // Days 37 and 40 were in the bitmap: known.
        absorb(&mut s, &ev("a", 37.0, view()));
        absorb(&mut s, &ev("b", 40.0, view()));
        assert_eq!(s.active_days, 5);
        // Day 38 was in the bitmap and not set: new.
        absorb(&mut s, &ev("c", 38.0, view()));
        assert_eq!(s.active_days, 6);
        // Day 20 was older than the bitmap: unknown, assumed counted.
        absorb(&mut s, &ev("d", 20.0, view()));
        assert_eq!(s.active_days, 6);
        // Before the first day: new.
        absorb(&mut s, &ev("e", -1.0, view()));
        assert_eq!(s.active_days, 7);
        // Written back in the current version and read again: the same facts.
        let (_, back) = state_from_proto(&state_to_proto(&s, "c")).unwrap();
        assert_eq!(back, s);
        // A version 2 state within its bitmap is exact from its first day.
        v2.first_seen = 50 * DAY_MS;
        v2.active_days = 2;
        v2.active_day_bits = 1 | 1 << 50;
        let (_, mut t) = state_from_proto(&v2).unwrap();
        absorb(&mut t, &ev("f", 51.0, view()));
        assert_eq!(t.active_days, 3);
        assert!(t.beyond.is_none(), "nothing beyond the 56-day bitmap");
    }

    #[test]
    fn decays_to_the_latest_event_and_adds() {
        // Two page views 7 days apart (attention half-life 7 d):
        // v = 1·½ + 1 = 1.5 at day 7.
        let mut s = CustomerState::default();
        absorb(&mut s, &ev("a", 0.0, view()));
        absorb(&mut s, &ev("b", 7.0, view()));
        assert!((s.raw[0] - 1.5).abs() < 1e-6);
        // The same pair in the other order gives the same value.
        let mut t = CustomerState::default();
        absorb(&mut t, &ev("b", 7.0, view()));
        absorb(&mut t, &ev("a", 0.0, view()));
        assert!((t.raw[0] - 1.5).abs() < 1e-6);
        assert_eq!((t.first_seen, t.last_seen), (s.first_seen, s.last_seen));
    }

    #[test]
    fn counts_distinct_days_including_late_ones() {
        let mut s = CustomerState::default();
        for (i, d) in [10.2, 10.7, 12.0, 11.5, 3.0, 12.9].iter().enumerate() {
            absorb(&mut s, &ev(&i.to_string(), *d, view()));
        }
        // Days 10, 12, 11, 3 (10 and 12 twice).
        assert_eq!(s.active_days, 4);
        // Mean gap: (12 − 3) / (4 − 1) = 3 days.
        assert_eq!(s.cadence_days(7.0), 3.0);
        assert_eq!(CustomerState::default().cadence_days(7.0), 7.0);
    }

    #[test]
    fn purchase_summary_counts_days_not_orders() {
        // Purchases on days 0, 0, 5, 9: x = 2 repeat days, t_x = 9, T at day 20 = 20.
        let mut s = CustomerState::default();
        for (i, d) in [0.1, 0.5, 5.0, 9.0].iter().enumerate() {
            absorb(&mut s, &ev(&i.to_string(), *d, buy(10.0)));
        }
        let summary = s.purchase_summary(20 * DAY_MS).unwrap();
        assert_eq!(summary, PurchaseSummary { repeat_purchases: 2, recency_days: 9.0, age_days: 20.0 });
        assert_eq!(s.spend_lifetime(), 40.0);
        assert_eq!(s.spend_first_day(), 20.0);
        // A late purchase before the first day takes over as the first day.
        absorb(&mut s, &ev("late", -2.0, buy(7.0)));
        assert_eq!(s.spend_first_day(), 7.0);
        assert_eq!(s.purchase_summary(20 * DAY_MS).unwrap().repeat_purchases, 3);
    }

    #[test]
    fn dedup_by_offset_and_recent_ids() {
        let mut s = CustomerState::default();
        let src = |offset| Some(Source { topic: InputKind::Purchases, offset });
        s.mark_applied(src(41), event_id_hash("e41"));
        assert!(s.already_applied(src(41), event_id_hash("other")));
        assert!(s.already_applied(src(3), event_id_hash("other")));
        assert!(!s.already_applied(src(42), event_id_hash("other")));
        assert!(!s.already_applied(Some(Source { topic: InputKind::Clickstream, offset: 3 }), 7));
        assert!(s.already_applied(None, event_id_hash("e41")));
        for i in 0..DEDUP_WINDOW {
            s.mark_applied(None, event_id_hash(&i.to_string()));
        }
        assert!(!s.already_applied(None, event_id_hash("e41")), "window is bounded");
    }

    #[test]
    fn purchase_facts_are_held_only_once_there_are_some() {
        let mut s = CustomerState::default();
        absorb(&mut s, &ev("a", 1.0, view()));
        assert!(s.purchases().is_none());
        absorb(&mut s, &ev("b", 2.0, EventKind::Refund { amount: 4.0 }));
        assert_eq!((s.spend_lifetime(), s.purchase_days()), (-4.0, 0));
        assert!(s.purchase_summary(3 * DAY_MS).is_none(), "a refund is not a purchase day");
        let (_, back) = state_from_proto(&state_to_proto(&s, "c")).unwrap();
        assert_eq!(back, s);
        let (_, clicker) = state_from_proto(&state_to_proto(&CustomerState::default(), "c")).unwrap();
        assert!(clicker.purchases().is_none());
    }

    #[test]
    fn version_1_hashes_are_shortened_on_restore() {
        // Version 1 persisted the whole 64-bit xxh3 of each recent event id.
        let mut v1 = state_to_proto(&CustomerState::default(), "c");
        v1.version = 1;
        v1.recent_event_ids = vec![xxhash_rust::xxh3::xxh3_64(b"e-old").max(1)];
        let (_, s) = state_from_proto(&v1).unwrap();
        assert!(s.already_applied(None, event_id_hash("e-old")));
        assert!(!s.already_applied(None, event_id_hash("e-new")));
    }

    #[test]
    fn recent_ids_keep_their_order_through_the_persisted_form() {
        let mut s = CustomerState::default();
        for i in 0..6 {
            s.mark_applied(None, event_id_hash(&i.to_string()));
        }
        let ids: Vec<u64> = (2..6).map(|i| event_id_hash(&i.to_string())).collect();
        assert_eq!(state_to_proto(&s, "c").recent_event_ids, ids, "the last four, oldest first");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]

        /// Any arrival order of days within the horizon counts each once,
        /// as a set would; restoring midway changes nothing.
        #[test]
        fn days_within_the_horizon_count_as_a_set(
            horizon in 1i32..500,
            events in proptest::collection::vec((0i32..1000, proptest::bool::ANY), 1..120),
            restore_at in 0usize..120,
        ) {
            let mut s = CustomerState::default();
            let (mut active, mut bought) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
            let newest = events.iter().map(|e| e.0).max().unwrap();
            let r = rules();
            for (i, (day, purchase)) in events.iter().enumerate() {
                // Fold days into the horizon of the final newest day.
                let day = newest - (newest - day) % horizon.max(WINDOW_DAYS);
                let e = ev(&format!("e{i}"), f64::from(day) + 0.25, if *purchase { buy(1.0) } else { view() });
                s.absorb_within(&e, &r.contributions(&e.kind), &r, horizon);
                active.insert(day);
                if *purchase {
                    bought.insert(day);
                }
                if i == restore_at {
                    s = state_from_proto(&state_to_proto(&s, "c")).unwrap().1;
                }
                proptest::prop_assert_eq!(usize::from(s.active_days), active.len());
                proptest::prop_assert_eq!(usize::from(s.purchase_days()), bought.len());
                let bound = ((horizon - WINDOW_DAYS).max(0) as usize).div_ceil(64) + 1;
                proptest::prop_assert!(older_words(&s) <= bound);
            }
            proptest::prop_assert_eq!(day_of(s.first_seen), *active.first().unwrap());
            proptest::prop_assert_eq!(day_of(s.last_seen), *active.last().unwrap());
            if let Some(p) = s.purchases().filter(|p| p.days > 0) {
                proptest::prop_assert_eq!((p.first_day, p.last_day), (*bought.first().unwrap(), *bought.last().unwrap()));
            }
        }

        /// At any lateness: no day is counted twice, and every day within
        /// the horizon of the newest day is counted.
        #[test]
        fn days_beyond_the_horizon_are_never_double_counted(
            horizon in 1i32..300,
            days in proptest::collection::vec(0i32..2000, 1..150),
        ) {
            let s = days_state(&days, view, horizon);
            let all: std::collections::BTreeSet<i32> = days.iter().copied().collect();
            let newest = *all.last().unwrap();
            let recent = all.range(newest - horizon.max(WINDOW_DAYS - 1)..).count();
            let count = usize::from(s.active_days);
            proptest::prop_assert!(recent <= count && count <= all.len(), "{recent} <= {count} <= {}", all.len());
        }
    }

    #[test]
    fn persisted_form_round_trips() {
        let mut s = CustomerState::default();
        absorb(&mut s, &ev("a", 100.0, buy(12.0)));
        absorb(&mut s, &ev("b", 101.0, view()));
        s.mark_applied(Some(Source { topic: InputKind::Clickstream, offset: 9 }), event_id_hash("a"));
        s.mark_applied(None, event_id_hash("b"));
        s.seq = 4;
        s.health = Health::AtRisk;
        s.stage = Stage::Integration;
        s.record_published(33.3, &[1.0, 2.0, 3.0, 4.5, 50.0]);
        let (id, back) = state_from_proto(&state_to_proto(&s, "c-1")).unwrap();
        assert_eq!(id, "c-1");
        assert_eq!(state_to_proto(&back, "c-1"), state_to_proto(&s, "c-1"));
        assert!(back.already_applied(None, event_id_hash("a")));
        let mut future = state_to_proto(&s, "c-1");
        future.version = STATE_VERSION + 1;
        assert!(matches!(state_from_proto(&future), Err(StateError::Version(v)) if v == STATE_VERSION + 1));
        assert_eq!(back, s);
    }
}
