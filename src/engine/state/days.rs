//! Sets of distinct UTC days (docs/model.md "Late events"): one mechanism
//! for a customer's active days and purchase days.
//!
//! A set is a count, its newest and oldest day, an inline window of the
//! [`WINDOW_DAYS`] days ending at the newest, and, out of line, the days
//! older than the window ([`Older`], out of line in [`Beyond`]). When the
//! newest day advances, the set days that leave the window spill into
//! [`Older`]; a late day older than the window is looked up there. It is
//! allocated only once a set day actually leaves the window, which most
//! customers never do.
//!
//! Older days are kept exactly back to `horizon` days behind the newest
//! (`state.retention`, 400 days by default), trimmed a whole word at a time
//! as the newest day advances, so one set holds at most
//! ⌈(horizon − 56) / 64⌉ + 1 words (7 words, 56 bytes, at 400 days)
//! whatever the input. Each set remembers `known_from`, the oldest day from
//! which membership is exact; forgetting a day (one that leaves the horizon,
//! or arrives already beyond it) moves `known_from` past it. A late day
//!
//! - within the window, or on or after `known_from`, is counted exactly when
//!   it is not yet in the set;
//! - before the set's oldest day is always new, and counted;
//! - otherwise (from the oldest day up to `known_from`: beyond the horizon,
//!   or older than the 64-day window of a state restored from a version 1
//!   or 2 record) is assumed already counted, so never counted twice.
//!
//! So any arrival order of days that all lie within `horizon` days of the
//! newest one gives the same count, oldest and newest day, as applying them
//! in event-time order (as `engage replay` does).

/// Days in the inline window: bit i is the day `newest − i`.
pub const WINDOW_DAYS: i32 = 56;

const WINDOW_MASK: u64 = (1 << WINDOW_DAYS) - 1;

/// Days a persisted window held before version 3.
const LEGACY_WINDOW_DAYS: i32 = 64;

/// The inline window of a set, in 7 bytes (bit i: day `newest − i`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Window([u8; 7]);

impl Window {
    /// The window as the low [`WINDOW_DAYS`] bits of a word.
    pub(crate) fn bits(self) -> u64 {
        let b = self.0;
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], 0])
    }

    fn set(&mut self, bits: u64) {
        let b = (bits & WINDOW_MASK).to_le_bytes();
        self.0 = [b[0], b[1], b[2], b[3], b[4], b[5], b[6]];
    }
}

/// The days of one set older than its window, in the plain form they are
/// persisted in (`engage.v1.OlderDays`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OlderDays {
    /// Days from this one on are known exactly; earlier days from the set's
    /// first day on are assumed already counted. `None`: all are known.
    pub known_from: Option<i32>,
    /// UTC day number of bit 0 of `words[0]`; a multiple of 64.
    pub base_day: i32,
    /// Bit j of `words[k]`: day `base_day + 64 k + j` is in the set.
    pub words: Vec<u64>,
}

/// The days of one set older than its window. Membership is exact from
/// `known_from` on: a day is in the set when its bit in `words` is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Older {
    /// The oldest day known exactly; `i32::MIN`: from the set's oldest day.
    known_from: i32,
    /// The day of bit 0 of `words[0]`: a multiple of 64 (0 when empty).
    base: i32,
    /// Bit j of `words[k]`: day `base + 64k + j` is in the set.
    words: Box<[u64]>,
}

impl Default for Older {
    fn default() -> Self {
        Older { known_from: i32::MIN, base: 0, words: Box::default() }
    }
}

impl Older {
    fn contains(&self, day: i32) -> bool {
        let i = i64::from(day) - i64::from(self.base);
        (0..64 * self.words.len() as i64).contains(&i) && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Adds `day` if it is at or after `limit`; otherwise forgets it: days
    /// up to it are no longer known exactly (they are beyond the horizon).
    fn add_or_forget(&mut self, day: i32, limit: i64) {
        if i64::from(day) < limit {
            self.known_from = self.known_from.max(day.saturating_add(1));
            return;
        }
        let word = day.div_euclid(64);
        if self.words.is_empty() {
            self.base = word * 64;
            self.words = Box::new([0]);
        }
        let first = self.base / 64;
        let last = first + self.words.len() as i32 - 1;
        if word < first || word > last {
            let (lo, hi) = (word.min(first), word.max(last));
            let mut grown = vec![0; (hi - lo + 1) as usize];
            grown[(first - lo) as usize..=(last - lo) as usize].copy_from_slice(&self.words);
            self.words = grown.into_boxed_slice();
            self.base = lo * 64;
        }
        self.words[(word - self.base / 64) as usize] |= 1 << day.rem_euclid(64);
    }

    /// Drops the words wholly before `limit`, forgetting the days they held.
    fn trim(&mut self, limit: i64) {
        let mut drop = ((limit - i64::from(self.base)).div_euclid(64)).clamp(0, self.words.len() as i64) as usize;
        if let Some(k) = (0..drop).rev().find(|&k| self.words[k] != 0) {
            let highest = self.base + 64 * k as i32 + 63 - self.words[k].leading_zeros() as i32;
            self.known_from = self.known_from.max(highest + 1);
        }
        // Empty words left at the front hold nothing: one form for the same days.
        while drop < self.words.len() && self.words[drop] == 0 {
            drop += 1;
        }
        if drop == 0 {
            return;
        }
        self.words = self.words[drop..].into();
        self.base = if self.words.is_empty() { 0 } else { self.base + 64 * drop as i32 };
    }

    /// The persisted form, or `None` when there is nothing to keep.
    fn to_persisted(&self) -> Option<OlderDays> {
        (*self != Older::default()).then(|| OlderDays {
            known_from: (self.known_from != i32::MIN).then_some(self.known_from),
            base_day: self.base,
            words: self.words.to_vec(),
        })
    }

    fn from_persisted(p: &OlderDays) -> Option<Older> {
        if p.base_day % 64 != 0 {
            return None;
        }
        let mut o =
            Older { known_from: p.known_from.unwrap_or(i32::MIN), base: p.base_day, words: p.words.as_slice().into() };
        // Keep one form for the same days: no empty words at either end.
        let lead = o.words.iter().take_while(|w| **w == 0).count();
        let trail = o.words[lead..].iter().rev().take_while(|w| **w == 0).count();
        if lead > 0 || trail > 0 {
            o.base += 64 * lead as i32;
            o.words = o.words[lead..o.words.len() - trail].into();
        }
        if o.words.is_empty() {
            o.base = 0;
        }
        Some(o)
    }
}

/// Which of a customer's two day sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Set {
    /// Active days.
    Active,
    /// Purchase days.
    Purchase,
}

/// A customer's older days, out of line once its active days need them
/// (32 bytes). Purchase days are active days too, so the purchase days
/// need older days only when the active days already do; they hang off
/// this box rather than grow [`super::Purchases`] past a size class.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Beyond {
    active: Older,
    purchase: Option<Box<Older>>,
}

/// One set, borrowed from where it lives.
pub(crate) struct Days<'a> {
    /// The inline window.
    pub window: &'a mut Window,
    /// Distinct days.
    pub count: &'a mut u16,
    /// The newest day.
    pub newest: &'a mut i32,
    /// The oldest day.
    pub oldest: &'a mut i32,
    /// The customer's older days, once there are some.
    pub beyond: &'a mut Option<Box<Beyond>>,
    /// Which set this is.
    pub set: Set,
}

impl Days<'_> {
    fn older(&self) -> Option<&Older> {
        let b = self.beyond.as_deref()?;
        match self.set {
            Set::Active => Some(&b.active),
            Set::Purchase => b.purchase.as_deref(),
        }
    }

    fn older_mut(&mut self) -> &mut Older {
        let b = self.beyond.get_or_insert_with(Box::default);
        match self.set {
            Set::Active => &mut b.active,
            Set::Purchase => b.purchase.get_or_insert_with(Box::default),
        }
    }

    /// Frees what holds nothing, so there is one form for the same days.
    fn tidy(&mut self) {
        if let Some(b) = self.beyond {
            if b.purchase.as_deref().is_some_and(|o| *o == Older::default()) {
                b.purchase = None;
            }
            if b.active == Older::default() && b.purchase.is_none() {
                *self.beyond = None;
            }
        }
    }

    /// Starts the set with its first day.
    pub(crate) fn start(self, day: i32) {
        self.window.set(1);
        (*self.count, *self.newest, *self.oldest) = (1, day, day);
    }

    /// Adds `day` to a set that has at least one day (see the module docs).
    pub(crate) fn add(mut self, day: i32, horizon: i32) {
        let newest = *self.newest;
        let mut bits = self.window.bits();
        if day > newest {
            let shift = i64::from(day) - i64::from(newest);
            let limit = i64::from(day) - i64::from(horizon);
            // The set days that leave the window: bit j is day newest − first − j.
            let first = (i64::from(WINDOW_DAYS) - shift).max(0);
            let mut leaving = bits >> first;
            if leaving != 0 {
                let older = self.older_mut();
                while leaving != 0 {
                    let j = i64::from(leaving.trailing_zeros());
                    older.add_or_forget((i64::from(newest) - first - j) as i32, limit);
                    leaving &= leaving - 1;
                }
            }
            if self.older().is_some() {
                self.older_mut().trim(limit);
                self.tidy();
            }
            bits = if shift >= i64::from(WINDOW_DAYS) { 0 } else { bits << shift } | 1;
            self.window.set(bits);
            *self.newest = day;
            *self.count = self.count.saturating_add(1);
        } else {
            let back = i64::from(newest) - i64::from(day);
            if back < i64::from(WINDOW_DAYS) {
                if bits & (1 << back) == 0 {
                    self.window.set(bits | 1 << back);
                    *self.count = self.count.saturating_add(1);
                }
            } else {
                let older = self.older();
                let known_from = older.map_or(i32::MIN, |o| o.known_from);
                let new = if day < known_from { day < *self.oldest } else { !older.is_some_and(|o| o.contains(day)) };
                if new {
                    *self.count = self.count.saturating_add(1);
                    if day >= known_from {
                        let limit = i64::from(newest) - i64::from(horizon);
                        self.older_mut().add_or_forget(day, limit);
                    }
                }
            }
        }
        *self.oldest = (*self.oldest).min(day);
    }

    /// Restores the set's days from a persisted window `bits` and older
    /// days. Before version 3 (`legacy`) the window held 64 days and older
    /// days were not kept: days older than that window are unknown.
    pub(crate) fn restore(mut self, bits: u64, older: Option<&OlderDays>, legacy: bool) -> Result<(), &'static str> {
        let mut o = match older {
            Some(p) => Older::from_persisted(p).ok_or("base_day")?,
            None => Older::default(),
        };
        let newest = *self.newest;
        if legacy && i64::from(newest) - i64::from(*self.oldest) >= i64::from(LEGACY_WINDOW_DAYS) {
            o.known_from = o.known_from.max(newest - (LEGACY_WINDOW_DAYS - 1));
        }
        // Days beyond the inline window (a 64-day window of versions 1 and 2).
        let mut high = bits >> WINDOW_DAYS;
        while high != 0 {
            let i = WINDOW_DAYS + high.trailing_zeros() as i32;
            o.add_or_forget(newest - i, i64::MIN);
            high &= high - 1;
        }
        self.window.set(bits);
        if o != Older::default() {
            *self.older_mut() = o;
        }
        Ok(())
    }
}

/// The persisted older days of one set, if there are any to keep.
pub(crate) fn older_days(beyond: &Option<Box<Beyond>>, set: Set) -> Option<OlderDays> {
    let b = beyond.as_deref()?;
    match set {
        Set::Active => b.active.to_persisted(),
        Set::Purchase => b.purchase.as_deref().and_then(Older::to_persisted),
    }
}
