//! Erasure, the "right to be forgotten" (docs/model.md "Erasure"): a request
//! drops everything engage holds about a customer, and keeps, for
//! `state.retention`, only what stops the customer's earlier events from
//! bringing it back.
//!
//! An erasure request names a customer and carries an event time `ts`. When
//! it is applied:
//!
//! - the customer's state is dropped, and an [`Erased`] record takes its
//!   place: the *cut-off* (the later of `ts` and the newest event time the
//!   dropped state held), the request's offset and the last `seq` used. A
//!   state whose first event is after `ts` is not the request's to drop
//!   (the customer came back, or was bootstrapped from an export the
//!   erasure was applied to): it stays, and the cut-off is `ts`. So a
//!   state held beside an [`Erased`] record always begins after its
//!   cut-off, which lets [`Engine::apply`] look the record up only for a
//!   customer without state or an event older than the state's first;
//! - an [`ErasureConfirmation`] is published, with a tombstone on the scores
//!   topic, once the [`Erased`] record is durable in the changelog (the
//!   pipeline orders the two), so whatever restarts after a confirmation
//!   restores the erasure, never the customer.
//!
//! Afterwards an event at or before the cut-off, on either input, belongs to
//! the erased customer and is ignored ([`crate::engine::Outcome::BeforeErasure`]),
//! however late it arrives; a later one starts a new customer, whose `seq`
//! continues after the erased one's so downstream readers that drop
//! non-increasing `seq`s still take it. The [`Erased`] record goes to the
//! changelog like a state (a record with no facts), so it survives a restart
//! and a rebalance; it is forgotten once stream time is `state.retention`
//! past the cut-off, like an idle customer.

use std::borrow::Cow;

use crate::engine::output::{ErasureConfirmation, Output};
use crate::engine::store::{Erased, Partition};
use crate::engine::{Engine, Outcome};

/// An erasure request from `topics.erasures`, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct ErasureRequest<'a> {
    /// The customer to erase.
    pub customer_id: Cow<'a, str>,
    /// The privacy team's id for the request, echoed in the confirmation.
    pub request_id: Cow<'a, str>,
    /// When the request was made (epoch ms): events at or before it are the
    /// erased customer's.
    pub ts_ms: i64,
}

impl Engine {
    /// Applies an erasure request to its customer in `partition`. `offset`
    /// is the request's position in `topics.erasures`, if any: a request
    /// at or below the customer's last applied one is a duplicate, which
    /// changes nothing but is confirmed again (a confirmation may have been
    /// lost to a crash after the erasure became durable; confirmations are
    /// at least once, like every output, and carry the request id).
    pub fn erase(
        &self,
        partition: &Partition,
        request: &ErasureRequest<'_>,
        offset: Option<i64>,
        out: &mut Vec<Output>,
    ) -> Outcome {
        let id = &*request.customer_id;
        let before = partition.erased(id);
        if let (Some(b), Some(o)) = (before, offset)
            && o <= b.offset
        {
            out.push(self.confirmation(request, b));
            return Outcome::Duplicate;
        }
        // A state whose every event is after the request is the customer's
        // life since (a customer who came back, or one bootstrapped from an
        // export the erasure was already applied to): the request does not
        // cover it. Otherwise all of it goes.
        let held = partition.map().get(id).map(|s| (s.first_seen, s.seq));
        let dropped = match held {
            Some((first_seen, _)) if first_seen <= request.ts_ms => partition.remove(id),
            _ => None,
        };
        let erased = Erased {
            cutoff: [Some(request.ts_ms), dropped.as_ref().map(|s| s.last_seen), before.map(|b| b.cutoff)]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(request.ts_ms),
            offset: offset.or(before.map(|b| b.offset)).unwrap_or(-1),
            seq: [held.map(|h| h.1), before.map(|b| b.seq)].into_iter().flatten().max().unwrap_or(0),
        };
        partition.set_erased(id, erased);
        out.push(self.confirmation(request, erased));
        Outcome::Erased
    }

    fn confirmation(&self, request: &ErasureRequest<'_>, erased: Erased) -> Output {
        Output::Erasure(ErasureConfirmation {
            customer_id: (&*request.customer_id).into(),
            request_id: request.request_id.to_string(),
            erased_at: (self.clock)(),
            cutoff: erased.cutoff,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::Rules;
    use crate::engine::event::{Event, EventKind, Source};
    use crate::engine::store::Store;
    use crate::vocab::{ClickKind, InputKind};
    use compact_str::CompactString;

    fn engine() -> Engine {
        Engine::new(Rules::new(&Config::default())).with_clock(|| 42)
    }

    fn click(customer: &str, id: &str, ts_ms: i64) -> Event<'static> {
        Event {
            event_id: Cow::Owned(id.into()),
            customer_id: Cow::Owned(customer.into()),
            ts_ms,
            kind: EventKind::Click { kind: ClickKind::PageView, rating: None },
        }
    }

    fn request(customer: &str, ts_ms: i64) -> ErasureRequest<'static> {
        ErasureRequest { customer_id: Cow::Owned(customer.into()), request_id: Cow::Borrowed("r1"), ts_ms }
    }

    const DAY: i64 = 86_400_000;

    #[test]
    fn erasure_drops_state_and_ignores_earlier_events_however_late() {
        let (engine, store, mut out) = (engine(), Store::new(), Vec::new());
        let p = store.partition(0);
        let at = |o| Some(Source { topic: InputKind::Clickstream, offset: o });
        for (i, ts) in [10 * DAY, 11 * DAY, 12 * DAY].into_iter().enumerate() {
            engine.apply(&p, &click("c", &format!("e{i}"), ts), at(i as i64), &mut out);
        }
        let seq = p.get("c").unwrap().seq;
        out.clear();
        assert_eq!(engine.erase(&p, &request("c", 11 * DAY), Some(7), &mut out), Outcome::Erased);
        assert!(p.get("c").is_none(), "the state is dropped");
        let Some(Output::Erasure(confirmation)) = out.pop() else { panic!("no confirmation") };
        assert_eq!(confirmation.cutoff, 12 * DAY, "the cut-off covers every event the state held");
        // A late event from before the cut-off, on either input, stays out.
        out.clear();
        assert_eq!(engine.apply(&p, &click("c", "late", 2 * DAY), at(9), &mut out), Outcome::BeforeErasure);
        assert_eq!(engine.apply(&p, &click("c", "edge", 12 * DAY), at(10), &mut out), Outcome::BeforeErasure);
        assert!(p.get("c").is_none() && out.is_empty());
        // A later event starts a new customer, seq continuing.
        assert_eq!(engine.apply(&p, &click("c", "new", 13 * DAY), at(11), &mut out), Outcome::Applied);
        let fresh = p.get("c").unwrap();
        assert_eq!((fresh.first_seen, fresh.active_days), (13 * DAY, 1));
        assert!(out.iter().all(|o| o.seq() > u64::from(seq)), "seq continues after the erased customer's");
        // The same request again (a replayed record) changes nothing, and
        // is confirmed again.
        out.clear();
        assert_eq!(engine.erase(&p, &request("c", 11 * DAY), Some(7), &mut out), Outcome::Duplicate);
        assert!(matches!(&out[..], [Output::Erasure(c)] if c.cutoff == 12 * DAY) && p.get("c").is_some());
    }

    #[test]
    fn a_request_older_than_everything_held_keeps_the_state() {
        let (engine, store, mut out) = (engine(), Store::new(), Vec::new());
        let p = store.partition(0);
        engine.apply(&p, &click("c", "new-life", 20 * DAY), None, &mut out);
        // A request made before all of it (read late, or replayed after a
        // bootstrap from an export it was already applied to).
        assert_eq!(engine.erase(&p, &request("c", 15 * DAY), None, &mut out), Outcome::Erased);
        let state = p.get("c").expect("the state after the request stays");
        assert_eq!(state.first_seen, 20 * DAY);
        assert_eq!(engine.apply(&p, &click("c", "old", 14 * DAY), None, &mut out), Outcome::BeforeErasure);
        assert_eq!(engine.apply(&p, &click("c", "since", 16 * DAY), None, &mut out), Outcome::Applied);
        assert_eq!(p.get("c").unwrap().active_days, 2);
    }

    #[test]
    fn erasing_an_unknown_customer_still_keeps_its_history_out() {
        let (engine, store, mut out) = (engine(), Store::new(), Vec::new());
        let p = store.partition(0);
        assert_eq!(engine.erase(&p, &request("x", 5 * DAY), None, &mut out), Outcome::Erased);
        assert!(matches!(out.pop(), Some(Output::Erasure(_))), "confirmed");
        assert_eq!(engine.apply(&p, &click("x", "old", 4 * DAY), None, &mut out), Outcome::BeforeErasure);
        assert_eq!(p.erasures(), 1);
        assert_eq!(p.expire_erasures(5 * DAY + 1), vec![CompactString::from("x")]);
        assert_eq!(p.erasures(), 0);
    }
}
