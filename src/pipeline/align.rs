//! Event-time alignment of the co-partitioned event inputs (docs/operations.md
//! "Ordering across the inputs").
//!
//! Partition *p* of every event input (the clickstream, the purchases)
//! feeds the same customers, so engage applies their records as one stream
//! in event-time order (the event's `ts`), as Kafka Streams does for the
//! partitions of one task: an N-way merge in which, of the inputs' next
//! records, the earliest goes first. A record that arrives while another
//! input's next record is not known yet is *held* when that input still has
//! records on the broker (it is not caught up), for at most
//! `run.alignment_wait`; after that the partition goes on without the
//! lagging input until it delivers again, and
//! `engage_alignment_timeouts_total` counts it. When the other inputs are
//! caught up, nothing is held: live traffic is applied as it arrives.
//!
//! Order within one input partition is never changed (offsets are committed
//! in it), so the merge compares only the inputs' heads. Held records are not
//! yet work: their offsets are not committed, and they are dropped on a
//! rebalance or at shutdown and read again by the next owner. An input that
//! holds [`HOLD_LIMIT`] records is paused until half have been applied, so
//! the memory held is bounded however far apart the inputs are.
//!
//! Why event time rather than the record timestamp: the engine's facts
//! (distinct days, stream time, idleness) are defined on event time, and a
//! backlog loaded in bulk carries record timestamps of the load, not of the
//! events, which would order nothing.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use rdkafka::{Offset, TopicPartitionList};

use super::record::Record;
use crate::config::Inputs;
use crate::telemetry::events::AlignmentTimeout;
use crate::vocab::{EVENT_INPUTS, InputKind};

/// Records held per input partition before that partition is paused.
pub(super) const HOLD_LIMIT: usize = 10_000;

/// Where an input partition stands on the broker, from the consumer's
/// statistics: the offset reading starts from when nothing has been received
/// yet, and the end of what can be read (the last stable offset: the inputs
/// are read `read_committed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Ends {
    /// The committed offset, or the log start when there is none.
    pub(super) start: i64,
    /// The last stable offset: everything before it can be read.
    pub(super) end: i64,
}

/// Partition *p* of every event input: what is held, and what is known
/// about each input. Indexed by [`InputKind::event_index`].
#[derive(Default)]
struct Pair {
    held: [VecDeque<(i64, Record<'static>)>; EVENT_INPUTS],
    /// The input has nothing more on the broker, as far as known: set on
    /// every refresh, and on every record received against the last known
    /// end (so a record that was in flight at a refresh does not leave its
    /// input looking behind until the next one).
    caught_up: [bool; EVENT_INPUTS],
    /// The input's last known end offset.
    end: [Option<i64>; EVENT_INPUTS],
    /// `run.alignment_wait` passed waiting for this input: go on without it
    /// until it delivers a record.
    gave_up: [bool; EVENT_INPUTS],
    /// Paused for holding [`HOLD_LIMIT`] records.
    paused: [bool; EVENT_INPUTS],
    /// Since when a held record has been waiting for another input.
    waiting_since: Option<Instant>,
}

impl Pair {
    /// Whether records of the other inputs may go without waiting for `side`.
    fn may_pass(&self, side: usize) -> bool {
        self.caught_up[side] || self.gave_up[side]
    }

    /// The input whose head goes next, if one may go now: the earliest head
    /// (equal times: the lower input first, as a stable rule), provided no
    /// input without a held record could still deliver an earlier one.
    fn next_side(&self) -> Option<usize> {
        let mut next: Option<(i64, usize)> = None;
        for side in 0..EVENT_INPUTS {
            match self.held[side].front() {
                Some((ts, _)) if next.is_none_or(|(best, _)| *ts < best) => next = Some((*ts, side)),
                Some(_) => {}
                None if !self.may_pass(side) => return None,
                None => {}
            }
        }
        next.map(|(_, side)| side)
    }

    /// The inputs the pair waits for: no record held, and not known to be
    /// caught up.
    fn lagging(&self) -> impl Iterator<Item = usize> + '_ {
        (0..EVENT_INPUTS).filter(|&side| self.held[side].is_empty() && !self.may_pass(side))
    }

    fn held(&self) -> usize {
        self.held.iter().map(VecDeque::len).sum()
    }
}

/// The alignment state of every owned partition (a "pair" of the event
/// inputs' partition *p*, however many inputs there are). Lives in the main
/// loop; all of it is dropped when a rebalance starts a new generation.
pub(super) struct Aligner {
    /// `run.alignment_wait`; zero turns alignment off.
    wait: Duration,
    /// Looked up on every record: foldhash, not SipHash.
    pairs: foldhash::HashMap<i32, Pair>,
    generation: u64,
    /// Whether a pair's pause wish changed since [`Aligner::take_pause_change`].
    pause_changed: bool,
    /// Records held over all pairs.
    held: usize,
}

impl Aligner {
    /// Alignment waiting at most `wait` for a lagging input; zero turns it
    /// off (every record is applied as it arrives).
    pub(super) fn new(wait: Duration) -> Aligner {
        Aligner { wait, pairs: Default::default(), generation: 0, pause_changed: false, held: 0 }
    }

    /// Whether alignment is on (`run.alignment_wait` above zero).
    pub(super) fn enabled(&self) -> bool {
        !self.wait.is_zero()
    }

    /// Forgets everything held when a rebalance started a new generation:
    /// those records were not applied, so their offsets were not committed,
    /// and the partitions' next owner (perhaps this instance) reads them
    /// again.
    pub(super) fn sync_generation(&mut self, generation: u64) {
        if generation != self.generation {
            self.generation = generation;
            self.pairs.clear();
            self.held = 0;
            self.pause_changed = true;
        }
    }

    /// Takes `record` (event time `ts`) from the consumer: returns it if it
    /// may be applied now, or holds it and returns `None`. Call
    /// [`Aligner::next_ready`] after either, until it returns `None`.
    pub(super) fn offer<'a>(&mut self, record: Record<'a>, ts: i64) -> Option<Record<'a>> {
        if self.wait.is_zero() {
            return Some(record);
        }
        let Some(me) = record.topic.event_index() else { return Some(record) };
        let pair = self.pairs.entry(record.partition).or_default();
        // It delivered: whatever waited for it waits afresh, if at all.
        pair.gave_up[me] = false;
        pair.waiting_since = None;
        // Only ever towards caught up: a record short of the end may be
        // followed by a transaction marker rather than more records, which
        // the next refresh (on the consumer's position) sees past.
        if pair.end[me].is_some_and(|end| record.offset + 1 >= end) {
            pair.caught_up[me] = true;
        }
        // It goes now if nothing of its input is held before it, it is
        // earlier than every other input's head, and every input without a
        // head may be passed.
        let now = pair.held[me].is_empty()
            && (0..EVENT_INPUTS).filter(|&o| o != me).all(|o| match pair.held[o].front() {
                Some((head, _)) => (ts, me) < (*head, o),
                None => pair.may_pass(o),
            });
        if now {
            return Some(record);
        }
        pair.held[me].push_back((ts, record.into_owned()));
        self.held += 1;
        if pair.held[me].len() >= HOLD_LIMIT && !pair.paused[me] {
            pair.paused[me] = true;
            self.pause_changed = true;
        }
        None
    }

    /// The next held record of partition pair `p` that may be applied now.
    /// `now` is the caller's clock (a batch's, read once for its records):
    /// when none is ready, the pair's wait for a lagging input starts then.
    pub(super) fn next_ready(&mut self, p: i32, now: Instant) -> Option<Record<'static>> {
        let pair = self.pairs.get_mut(&p)?;
        let Some(side) = pair.next_side() else {
            if pair.held() == 0 {
                pair.waiting_since = None;
            } else {
                pair.waiting_since.get_or_insert(now);
            }
            return None;
        };
        let (_, record) = pair.held[side].pop_front()?;
        self.held -= 1;
        pair.waiting_since = None;
        if pair.paused[side] && pair.held[side].len() < HOLD_LIMIT / 2 {
            pair.paused[side] = false;
            self.pause_changed = true;
        }
        Some(record)
    }

    /// Refreshes which inputs are caught up (`positions`: the consumer's
    /// next offsets; `ends`: from its statistics) and gives up waiting
    /// where `run.alignment_wait` has passed, unless input is paused for
    /// backpressure (then nothing can arrive, and waiting restarts).
    /// Returns the pairs that may have records ready.
    pub(super) fn refresh(
        &mut self,
        inputs: &Inputs,
        positions: &TopicPartitionList,
        ends: &HashMap<(InputKind, i32), Ends>,
        owned: &[i32],
        backpressure: bool,
    ) -> Vec<i32> {
        if self.wait.is_zero() {
            return Vec::new();
        }
        for &p in owned {
            let pair = self.pairs.entry(p).or_default();
            for (side, topic) in InputKind::EVENTS.into_iter().enumerate() {
                let position = positions.find_partition(inputs.name(topic), p).and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
                let ends = ends.get(&(topic, p));
                pair.end[side] = ends.map(|e| e.end);
                pair.caught_up[side] = ends.is_some_and(|e| position.unwrap_or(e.start) >= e.end);
            }
            let Some(since) = pair.waiting_since else { continue };
            if backpressure {
                pair.waiting_since = Some(Instant::now());
            } else if since.elapsed() >= self.wait && pair.next_side().is_none() {
                let lagging: Vec<usize> = pair.lagging().collect();
                let held = pair.held();
                for side in lagging {
                    pair.gave_up[side] = true;
                    AlignmentTimeout { inputs, partition: p, lagging: InputKind::EVENTS[side], held, wait: self.wait }
                        .emit();
                }
            }
        }
        let before = self.pairs.len();
        self.pairs.retain(|p, _| owned.contains(p));
        if self.pairs.len() != before {
            self.held = self.pairs.values().map(Pair::held).sum();
        }
        owned.to_vec()
    }

    /// Per event input of partition `p`, whether it has nothing held and
    /// nothing more on the broker: its records cannot hold back the
    /// partition's stream time.
    pub(super) fn settled(&self, p: i32) -> [bool; EVENT_INPUTS] {
        if self.wait.is_zero() {
            return [true; EVENT_INPUTS];
        }
        self.pairs.get(&p).map_or([false; EVENT_INPUTS], |pair| {
            std::array::from_fn(|side| pair.caught_up[side] && pair.held[side].is_empty())
        })
    }

    /// Records held over all pairs.
    pub(super) fn held(&self) -> usize {
        self.held
    }

    /// The input partitions that hold too many records, if that changed
    /// since the last call.
    pub(super) fn take_pause_change(&mut self) -> Option<HashSet<(InputKind, i32)>> {
        if !std::mem::take(&mut self.pause_changed) {
            return None;
        }
        let mut full = HashSet::new();
        for (&p, pair) in &self.pairs {
            for (side, topic) in InputKind::EVENTS.into_iter().enumerate() {
                if pair.paused[side] {
                    full.insert((topic, p));
                }
            }
        }
        Some(full)
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::config::Config;
    use crate::engine::event::{Event, EventKind};
    use crate::vocab::ClickKind;

    const CLICKS: InputKind = InputKind::Clickstream;
    const PURCHASES: InputKind = InputKind::Purchases;

    fn input(topic: InputKind, offset: i64, ts: i64) -> Record<'static> {
        Record {
            topic,
            partition: 0,
            offset,
            produced_ms: None,
            consumed: Instant::now(),
            body: Ok(Event {
                event_id: Cow::Owned(format!("{}-{offset}", topic.as_str())),
                customer_id: Cow::Borrowed("c"),
                ts_ms: ts,
                kind: EventKind::Click { kind: ClickKind::PageView, rating: None },
            }),
        }
    }

    fn inputs() -> Inputs {
        let mut config = Config::default();
        config.topics.clickstream = "clicks".into();
        config.inputs()
    }

    /// Offers `(topic, offset, ts)` in arrival order and returns the
    /// `(topic, offset)` applied, in order.
    fn run(aligner: &mut Aligner, arrivals: &[(InputKind, i64, i64)]) -> Vec<(InputKind, i64)> {
        let mut applied = Vec::new();
        for &(topic, offset, ts) in arrivals {
            if let Some(i) = aligner.offer(input(topic, offset, ts), ts) {
                applied.push((i.topic, i.offset));
            }
            while let Some(i) = aligner.next_ready(0, Instant::now()) {
                applied.push((i.topic, i.offset));
            }
        }
        applied
    }

    /// Tells the aligner where both inputs of partition 0 stand: `next` is
    /// the consumer's next offset per input, `end` the broker's end.
    fn refresh(aligner: &mut Aligner, next: [i64; 2], end: [i64; 2]) -> Vec<(InputKind, i64)> {
        let inputs = inputs();
        let mut positions = TopicPartitionList::new();
        let mut ends = HashMap::new();
        for (side, t) in InputKind::EVENTS.into_iter().enumerate() {
            positions.add_partition_offset(inputs.name(t), 0, Offset::Offset(next[side])).unwrap();
            ends.insert((t, 0), Ends { start: 0, end: end[side] });
        }
        let mut applied = Vec::new();
        for p in aligner.refresh(&inputs, &positions, &ends, &[0], false) {
            while let Some(i) = aligner.next_ready(p, Instant::now()) {
                applied.push((i.topic, i.offset));
            }
        }
        applied
    }

    #[test]
    fn applies_the_two_inputs_in_event_time_order_while_neither_is_caught_up() {
        let mut a = Aligner::new(Duration::from_secs(5));
        // Purchases read far ahead of the clicks: days 1, 50, 90 arrive first.
        let applied = run(
            &mut a,
            &[
                (PURCHASES, 0, 1),
                (PURCHASES, 1, 50),
                (PURCHASES, 2, 90),
                (CLICKS, 0, 2),
                (CLICKS, 1, 60),
                (CLICKS, 2, 70),
            ],
        );
        assert_eq!(applied, [(PURCHASES, 0), (CLICKS, 0), (PURCHASES, 1), (CLICKS, 1), (CLICKS, 2)]);
        assert_eq!(a.held(), 1, "day 90 waits for clicks that may be earlier");
        // The clicks are read to their end: the rest goes.
        assert_eq!(refresh(&mut a, [3, 3], [3, 3]), [(PURCHASES, 2)]);
        assert_eq!(a.held(), 0);
        assert_eq!(a.settled(0), [true, true]);
    }

    #[test]
    fn a_caught_up_input_holds_nothing_back() {
        let mut a = Aligner::new(Duration::from_secs(5));
        refresh(&mut a, [0, 5], [0, 5]);
        // Live: each record goes as it arrives, whatever its time.
        let applied = run(&mut a, &[(CLICKS, 0, 10), (PURCHASES, 5, 3), (CLICKS, 1, 11)]);
        assert_eq!(applied, [(CLICKS, 0), (PURCHASES, 5), (CLICKS, 1)]);
        assert_eq!(a.held(), 0);
    }

    #[test]
    fn order_within_one_input_is_kept() {
        let mut a = Aligner::new(Duration::from_secs(5));
        // Clicks are not monotonic in time; purchases lag.
        let applied = run(&mut a, &[(CLICKS, 0, 10), (CLICKS, 1, 5), (PURCHASES, 0, 7), (PURCHASES, 1, 20)]);
        assert_eq!(applied, [(PURCHASES, 0), (CLICKS, 0), (CLICKS, 1)]);
        assert_eq!(refresh(&mut a, [2, 2], [2, 2]), [(PURCHASES, 1)]);
    }

    #[test]
    fn a_lagging_input_is_waited_for_at_most_the_bound() {
        let mut a = Aligner::new(Duration::from_millis(20));
        let applied = run(&mut a, &[(CLICKS, 0, 10), (CLICKS, 1, 11)]);
        assert!(applied.is_empty());
        // Purchases have records on the broker that do not arrive.
        assert!(refresh(&mut a, [2, 0], [2, 100]).is_empty(), "within the bound it waits");
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(refresh(&mut a, [2, 0], [2, 100]), [(CLICKS, 0), (CLICKS, 1)]);
        // Until purchases deliver, clicks are no longer held ...
        assert_eq!(run(&mut a, &[(CLICKS, 2, 12)]), [(CLICKS, 2)]);
        // ... and once they do, the pair waits for them again.
        assert_eq!(run(&mut a, &[(PURCHASES, 0, 5), (CLICKS, 3, 13)]), [(PURCHASES, 0)]);
        assert_eq!(a.held(), 1);
        assert_eq!(a.settled(0), [false, false]);
    }

    #[test]
    fn a_record_that_reaches_the_known_end_catches_its_input_up() {
        let mut a = Aligner::new(Duration::from_secs(5));
        // At the refresh a purchase was still in flight (next 4, end 5).
        refresh(&mut a, [2, 4], [2, 5]);
        assert!(run(&mut a, &[(CLICKS, 2, 10)]).is_empty(), "purchases are behind: the click waits");
        // It arrives: purchases are caught up, and the click goes at once.
        assert_eq!(run(&mut a, &[(PURCHASES, 4, 9)]), [(PURCHASES, 4), (CLICKS, 2)]);
        assert_eq!(run(&mut a, &[(CLICKS, 3, 11)]), [(CLICKS, 3)]);
    }

    #[test]
    fn unknown_ends_are_waited_for_like_a_lag() {
        let mut a = Aligner::new(Duration::from_secs(5));
        assert!(run(&mut a, &[(CLICKS, 0, 10)]).is_empty(), "no statistics yet: purchases may have earlier events");
        assert_eq!(refresh(&mut a, [1, 0], [1, 0]), [(CLICKS, 0)], "an empty purchases partition is caught up");
    }

    #[test]
    fn an_input_holding_too_much_is_paused_until_half_is_applied() {
        let mut a = Aligner::new(Duration::from_secs(5));
        let many: Vec<_> = (0..HOLD_LIMIT as i64).map(|i| (PURCHASES, i, 100 + i)).collect();
        run(&mut a, &many);
        assert_eq!(a.take_pause_change(), Some(HashSet::from([(PURCHASES, 0)])));
        assert_eq!(a.take_pause_change(), None, "reported once");
        // A click passes half of what is held: the purchases before it
        // (times 100 ..= 100 + half) and the click go.
        let applied = run(&mut a, &[(CLICKS, 0, 100 + HOLD_LIMIT as i64 / 2 + 1)]);
        assert_eq!(applied.len(), HOLD_LIMIT / 2 + 2);
        assert_eq!(a.take_pause_change(), Some(HashSet::new()));
    }

    #[test]
    fn a_rebalance_drops_what_is_held() {
        let mut a = Aligner::new(Duration::from_secs(5));
        a.sync_generation(1);
        run(&mut a, &[(CLICKS, 0, 10)]);
        assert_eq!(a.held(), 1);
        a.sync_generation(2);
        assert_eq!(a.held(), 0);
        assert!(a.next_ready(0, Instant::now()).is_none());
    }

    #[test]
    fn zero_wait_turns_alignment_off() {
        let mut a = Aligner::new(Duration::ZERO);
        let applied = run(&mut a, &[(PURCHASES, 0, 90), (CLICKS, 0, 1)]);
        assert_eq!(applied, [(PURCHASES, 0), (CLICKS, 0)]);
        assert_eq!(a.settled(0), [true, true]);
    }
}
