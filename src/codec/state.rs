//! The persisted form of customer state: the versioned
//! `engage.v1.CustomerState` message (`proto/engage/v1/state.proto`) that
//! the changelog holds per customer, with the erasure in force for it, and
//! the per-partition bootstrap marker.
//!
//! Versions: 4 keeps each customer's applied offsets as a list indexed by
//! event input (`applied_offsets`); 3 kept them in one field per input
//! (`clickstream_offset`, `purchases_offset`) and the days older than the
//! 56-day bitmaps; 2 had 64-day bitmaps and no older days; 1 also kept
//! 64-bit event-id hashes. Every version is still read: a version 1 or 2
//! record's older days are unknown, and its hashes shortened.

use compact_str::CompactString;
use prost::Message as _;

use crate::engine::churn::Health;
use crate::engine::lifecycle::Stage;
use crate::engine::state::{CustomerState, ID_HASH_SHIFT, OlderDays, Persisted};
use crate::engine::store::{Erased, Partition};
use crate::proto;
use crate::vocab::{DIMENSIONS, EVENT_INPUTS};

use super::output::{health_to_proto, stage_to_proto};

/// The `version` written into persisted [`proto::CustomerState`] messages.
pub const STATE_VERSION: u32 = 4;

/// The oldest persisted version this engage reads.
const OLDEST_STATE_VERSION: u32 = 1;

/// A persisted state that cannot be read back. Not retryable: the bytes
/// are wrong or from a newer engage.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The message is not a valid `CustomerState`.
    #[error("state record is not a valid engage.v1.CustomerState: {0}")]
    Decode(#[from] prost::DecodeError),
    /// Written by an engage that knows a newer schema.
    #[error("state record has version {0}; this engage reads versions {OLDEST_STATE_VERSION} to {STATE_VERSION}")]
    Version(u32),
    /// A field is out of range.
    #[error("state record field {0} is invalid")]
    Field(&'static str),
}

/// The persisted form of a customer's state.
pub fn state_to_proto(state: &CustomerState, customer_id: &str) -> proto::CustomerState {
    let p = state.to_persisted();
    proto::CustomerState {
        version: STATE_VERSION,
        customer_id: customer_id.to_string(),
        first_seen: p.first_seen,
        last_seen: p.last_seen,
        active_days: p.active_days,
        active_day_bits: p.active_day_bits,
        purchase_days: p.purchase_days,
        purchase_day_bits: p.purchase_day_bits,
        first_purchase_day: p.first_purchase_day,
        last_purchase_day: p.last_purchase_day,
        dimensions: p.dimensions.to_vec(),
        spend_lifetime: p.spend_lifetime,
        spend_decayed: p.spend_decayed,
        spend_first_day: p.spend_first_day,
        peak_score: p.peak_score,
        peak_day: p.peak_day,
        published_score: p.published_score,
        published_dimensions: p.published_dimensions.to_vec(),
        seq: p.seq,
        stage: stage_to_proto(p.stage) as i32,
        health: health_to_proto(p.health) as i32,
        clickstream_offset: 0,
        purchases_offset: 0,
        applied_offsets: p.applied_offsets.to_vec(),
        recent_event_ids: p.recent_event_ids,
        older_active_days: p.older_active_days.map(older_to_proto),
        older_purchase_days: p.older_purchase_days.map(older_to_proto),
        erased: None,
    }
}

/// Reads a persisted state back, with its customer id.
pub fn state_from_proto(p: &proto::CustomerState) -> Result<(CompactString, CustomerState), StateError> {
    if !(OLDEST_STATE_VERSION..=STATE_VERSION).contains(&p.version) {
        return Err(StateError::Version(p.version));
    }
    let dimensions: [f64; DIMENSIONS] =
        p.dimensions.as_slice().try_into().map_err(|_| StateError::Field("dimensions"))?;
    let published_dimensions: [u8; DIMENSIONS] =
        p.published_dimensions.as_slice().try_into().map_err(|_| StateError::Field("published_dimensions"))?;
    let applied_offsets: [i64; EVENT_INPUTS] = if p.version >= 4 {
        p.applied_offsets.as_slice().try_into().map_err(|_| StateError::Field("applied_offsets"))?
    } else {
        // Versions 1 to 3: one field per input of the two there were.
        [p.clickstream_offset, p.purchases_offset]
    };
    let persisted = Persisted {
        first_seen: p.first_seen,
        last_seen: p.last_seen,
        active_days: p.active_days,
        active_day_bits: p.active_day_bits,
        purchase_days: p.purchase_days,
        purchase_day_bits: p.purchase_day_bits,
        first_purchase_day: p.first_purchase_day,
        last_purchase_day: p.last_purchase_day,
        dimensions,
        spend_lifetime: p.spend_lifetime,
        spend_decayed: p.spend_decayed,
        spend_first_day: p.spend_first_day,
        peak_score: p.peak_score,
        peak_day: p.peak_day,
        published_score: p.published_score,
        published_dimensions,
        seq: p.seq,
        stage: Stage::from_u8(p.stage as u8),
        health: Health::from_u8(p.health as u8),
        applied_offsets,
        // Version 1 kept the whole 64-bit hash.
        recent_event_ids: if p.version == 1 {
            p.recent_event_ids.iter().map(|h| (h >> ID_HASH_SHIFT).max(1)).collect()
        } else {
            p.recent_event_ids.clone()
        },
        older_active_days: p.older_active_days.as_ref().map(older_from_proto),
        older_purchase_days: p.older_purchase_days.as_ref().map(older_from_proto),
        legacy_window: p.version < 3,
    };
    let state = CustomerState::from_persisted(&persisted).map_err(StateError::Field)?;
    Ok((CompactString::from(p.customer_id.as_str()), state))
}

fn older_to_proto(o: OlderDays) -> proto::OlderDays {
    proto::OlderDays { known_from: o.known_from, base_day: o.base_day, words: o.words }
}

fn older_from_proto(p: &proto::OlderDays) -> OlderDays {
    OlderDays { known_from: p.known_from, base_day: p.base_day, words: p.words.clone() }
}

/// The persisted form of an erasure in force.
pub fn erased_to_proto(e: Erased) -> proto::Erasure {
    proto::Erasure { cutoff: e.cutoff, offset: e.offset, seq: e.seq }
}

/// An erasure in force, from its persisted form.
pub fn erased_from_proto(p: &proto::Erasure) -> Erased {
    Erased { cutoff: p.cutoff, offset: p.offset, seq: p.seq }
}

/// The changelog record value for a customer: its state and the erasure in
/// force for it, either of them, or `None` (a tombstone) when neither is
/// held.
pub fn changelog_value(partition: &Partition, customer_id: &str) -> Option<Vec<u8>> {
    let erased = partition.erased(customer_id).map(erased_to_proto);
    // Encoded under the shard's read lock, without copying the state.
    let state = partition.map().get(customer_id).map(|s| state_to_proto(&s, customer_id));
    let record = match (state, erased) {
        (Some(state), erased) => proto::CustomerState { erased, ..state },
        (None, Some(erased)) => proto::CustomerState {
            version: STATE_VERSION,
            customer_id: customer_id.to_string(),
            erased: Some(erased),
            ..Default::default()
        },
        (None, None) => return None,
    };
    Some(record.encode_to_vec())
}

/// What a changelog record holds for a customer: its state (absent from a
/// record that only keeps an erasure in force) and the erasure in force.
pub type ChangelogRecord = (Option<(CompactString, CustomerState)>, Option<Erased>);

/// Reads a changelog record value ([`changelog_value`]).
pub fn read_changelog_value(value: &[u8]) -> Result<ChangelogRecord, StateError> {
    let record = proto::CustomerState::decode(value)?;
    let erased = record.erased.as_ref().map(erased_from_proto);
    let state = match erased {
        Some(_) if record.dimensions.is_empty() => None,
        _ => Some(state_from_proto(&record)?),
    };
    Ok((state, erased))
}

/// The key of the bootstrap marker ([`proto::BootstrapMarker`]), one per
/// changelog partition. Not UTF-8, so no customer id (a UTF-8 string) can
/// take it; an engage that predates bootstrap skips it as a record without
/// a UTF-8 key.
pub const BOOTSTRAP_KEY: &[u8] = b"\xffengage.bootstrap";

/// The version written into [`proto::BootstrapMarker`] messages.
pub const BOOTSTRAP_MARKER_VERSION: u32 = 1;

/// The bootstrap marker's record value for a partition whose `customers`
/// states were written by a bootstrap as of `as_of_ms`.
pub fn encode_bootstrap_marker(as_of_ms: i64, customers: u64, partitioner: &str) -> Vec<u8> {
    proto::BootstrapMarker {
        version: BOOTSTRAP_MARKER_VERSION,
        as_of: as_of_ms,
        customers,
        partitioner: partitioner.to_string(),
        written_at: crate::clock::wall_clock_ms(),
    }
    .encode_to_vec()
}

/// Why a bootstrap marker cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    /// Not a valid `BootstrapMarker`.
    #[error("not a valid engage.v1.BootstrapMarker: {0}")]
    Decode(#[from] prost::DecodeError),
    /// Written by an engage that knows a newer marker.
    #[error("bootstrap marker has version {0}; this engage reads version {BOOTSTRAP_MARKER_VERSION}")]
    Version(u32),
}

/// The as-of time (epoch ms) a bootstrap marker value holds.
pub fn read_bootstrap_marker(value: &[u8]) -> Result<i64, MarkerError> {
    let marker = proto::BootstrapMarker::decode(value)?;
    if marker.version != BOOTSTRAP_MARKER_VERSION {
        return Err(MarkerError::Version(marker.version));
    }
    Ok(marker.as_of)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::store::Store;

    #[test]
    fn an_erasure_is_persisted_with_or_without_a_state() {
        let store = Store::new();
        let p = store.partition(0);
        let erased = Erased { cutoff: 1_000, offset: 7, seq: 3 };
        p.set_erased("gone", erased);
        let (state, marker) = read_changelog_value(&changelog_value(&p, "gone").unwrap()).unwrap();
        assert_eq!((state, marker), (None, Some(erased)), "only the erasure: no facts");

        // A customer who came back after the erasure keeps both.
        p.set_erased("back", erased);
        let mut state = CustomerState::default();
        (state.seq, state.last_seen) = (4, 2_000);
        p.insert("back".into(), state);
        let (state, marker) = read_changelog_value(&changelog_value(&p, "back").unwrap()).unwrap();
        assert_eq!(state.map(|(id, s)| (id, s.seq, s.last_seen)), Some(("back".into(), 4, 2_000)));
        assert_eq!(marker, Some(erased));

        // Neither: a tombstone.
        p.forget("back");
        assert_eq!(changelog_value(&p, "back"), None);
        assert_eq!(p.erasures(), 1);
    }

    #[test]
    fn applied_offsets_are_an_indexed_list_and_version_3_records_are_still_read() {
        let mut s = CustomerState::default();
        s.offsets = [41, 7];
        s.last_seen = 1_000;
        let p = state_to_proto(&s, "c");
        assert_eq!((p.version, p.applied_offsets.as_slice()), (4, &[41, 7][..]));
        assert_eq!(state_from_proto(&p).unwrap().1.offsets, [41, 7]);
        // The same state as version 3 wrote it.
        let v3 = proto::CustomerState {
            version: 3,
            applied_offsets: Vec::new(),
            clickstream_offset: 41,
            purchases_offset: 7,
            ..p.clone()
        };
        assert_eq!(state_from_proto(&v3).unwrap().1, s);
        // A version 4 record must list every event input.
        let short = proto::CustomerState { applied_offsets: vec![41], ..p };
        assert!(matches!(state_from_proto(&short), Err(StateError::Field("applied_offsets"))));
    }

    #[test]
    fn a_marker_round_trips_and_a_newer_one_is_refused() {
        assert_eq!(read_bootstrap_marker(&encode_bootstrap_marker(123, 4, "murmur2")).unwrap(), 123);
        let newer = proto::BootstrapMarker { version: 2, ..Default::default() }.encode_to_vec();
        assert!(matches!(read_bootstrap_marker(&newer), Err(MarkerError::Version(2))));
    }
}
