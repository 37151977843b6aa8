//! The state changelog (docs/model.md "Guarantees"): a compacted topic, one record per
//! customer keyed by `customer_id`, in the partition matching the input
//! partition, holding the versioned `engage.v1.CustomerState` — including the
//! per-customer applied offsets that let a restored instance skip records it
//! has already applied. A partition's customers are restored from it when
//! the partition is assigned, before its first record is processed.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use compact_str::CompactString;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tracing::warn;

use crate::config::Config;
use crate::engine::erasure::Erased;
use crate::engine::state::{CustomerState, StateError};
use crate::engine::store::Partition;
use crate::kafka::KafkaSetupError;
use crate::proto;

/// The changelog topic: `state.changelog_topic`, or `<group>.engage-state`.
pub fn topic_name(config: &Config) -> String {
    if config.state.changelog_topic.is_empty() {
        format!("{}.engage-state", config.run.group_id)
    } else {
        config.state.changelog_topic.clone()
    }
}

/// Customers changed since the last flush, per input partition.
#[derive(Debug, Default)]
pub struct Dirty {
    /// Marked once per applied event: hashed with foldhash, as the store's
    /// maps are, rather than std's SipHash.
    by_partition: HashMap<i32, HashSet<CompactString, foldhash::fast::RandomState>>,
}

impl Dirty {
    /// Marks a customer whose state changed (or was evicted).
    pub fn mark(&mut self, partition: i32, customer_id: &str) {
        let set = self.by_partition.entry(partition).or_default();
        if !set.contains(customer_id) {
            set.insert(CompactString::from(customer_id));
        }
    }

    /// Takes the customers of one partition.
    pub fn take(&mut self, partition: i32) -> HashSet<CompactString, foldhash::fast::RandomState> {
        self.by_partition.remove(&partition).unwrap_or_default()
    }

    /// Forgets a partition's marks (it was revoked after its last flush).
    pub fn forget(&mut self, partition: i32) {
        self.by_partition.remove(&partition);
    }
}

/// The changelog record value for a customer: its state and the erasure in
/// force for it, either of them, or `None` (a tombstone) when neither is
/// held.
pub fn encode(partition: &Partition, customer_id: &str) -> Option<Vec<u8>> {
    let erased = partition.erased(customer_id).map(Erased::to_proto);
    // Encoded under the shard's read lock, without copying the state.
    let state = partition.map().get(customer_id).map(|s| s.to_proto(customer_id));
    let record = match (state, erased) {
        (Some(state), erased) => proto::CustomerState { erased, ..state },
        (None, Some(erased)) => proto::CustomerState {
            version: crate::engine::state::STATE_VERSION,
            customer_id: customer_id.to_string(),
            erased: Some(erased),
            ..Default::default()
        },
        (None, None) => return None,
    };
    Some(record.encode_to_vec())
}

/// The key of the bootstrap marker ([`proto::BootstrapMarker`]), one per
/// changelog partition. Not UTF-8, so no customer id (a UTF-8 string) can
/// take it; an engage that predates bootstrap skips it as a record without
/// a UTF-8 key.
pub const BOOTSTRAP_KEY: &[u8] = b"\xffengage.bootstrap";

/// The version written into [`proto::BootstrapMarker`] messages.
pub const BOOTSTRAP_MARKER_VERSION: u32 = 1;

/// How long one request for the changelog's end may take before it is
/// asked again (within `state.restore_timeout`).
const WATERMARK_ATTEMPT: Duration = Duration::from_secs(10);

/// What a restore did.
#[derive(Clone, Copy, Debug, Default)]
pub struct RestoreStats {
    /// Changelog records read.
    pub records: u64,
    /// Customers held afterwards.
    pub customers: usize,
    /// Records that could not be read (logged, skipped).
    pub unreadable: u64,
    /// The bootstrap as-of read from the partition's marker, if any.
    pub bootstrap_as_of: Option<i64>,
    /// Time taken.
    pub elapsed: Duration,
}

/// Reads changelog partition `partition` from the beginning to its current
/// end into `into` (replacing what it held). Blocks; a missing or
/// unreachable changelog is an error, because processing without the state
/// would double-count.
pub fn restore(
    config: &Config,
    topic: &str,
    into: &Partition,
    timeout: Duration,
) -> Result<RestoreStats, RestoreError> {
    let start = Instant::now();
    let consumer: BaseConsumer = crate::kafka::client::restore_consumer(config)
        .create()
        .map_err(|e| KafkaSetupError::client("creating the restore consumer", e))?;
    let p = into.id();
    let deadline = Instant::now() + timeout;
    // One request may be lost to a broker that restarts meanwhile: ask
    // again, in short attempts, until the restore deadline.
    let (low, high) = loop {
        let attempt = WATERMARK_ATTEMPT.min(deadline.saturating_duration_since(Instant::now()));
        match consumer.fetch_watermarks(topic, p, attempt) {
            Ok(w) => break w,
            Err(e) if Instant::now() < deadline => {
                warn!(topic, partition = p, error = %e, "changelog end not read yet; asking again");
                // A request that fails at once (an unknown partition) must
                // not turn this into a busy loop.
                std::thread::sleep(Duration::from_millis(200).min(deadline.saturating_duration_since(Instant::now())));
            }
            Err(e) => {
                return Err(KafkaSetupError::client(
                    format!("reading the end of changelog {topic:?} partition {p}"),
                    e,
                )
                .into());
            }
        }
    };
    let mut stats = RestoreStats::default();
    if high > low {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| KafkaSetupError::client("assigning the changelog", e))?;
        consumer.assign(&tpl).map_err(|e| KafkaSetupError::client("assigning the changelog", e))?;
        'read: loop {
            if Instant::now() > deadline {
                return Err(RestoreError::Timeout { topic: topic.to_string(), partition: p, high, timeout });
            }
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                // Nothing more for now. With exactly_once the changelog ends
                // in a transaction marker, which is never delivered but moves
                // the position past it; a position short of `high` means more
                // is coming, or a transaction is still open (a crashed
                // instance's, until the broker aborts it): keep reading.
                let position = consumer
                    .position()
                    .ok()
                    .and_then(|tpl| tpl.find_partition(topic, p).and_then(|e| e.offset().to_raw()));
                if position.is_some_and(|o| o >= high) {
                    break 'read;
                }
                continue;
            };
            match message {
                Ok(m) => {
                    stats.records += 1;
                    apply_record(&m, into, &mut stats, topic);
                    if m.offset() >= high - 1 {
                        break 'read;
                    }
                }
                // Consumer errors (a broker restarting, say) are transient
                // here: librdkafka reconnects and fetches again; the deadline
                // bounds it.
                Err(e) => warn!(topic, partition = p, error = %e, "reading changelog; retrying"),
            }
        }
    }
    stats.customers = into.len();
    stats.elapsed = start.elapsed();
    Ok(stats)
}

/// Why a partition's state could not be restored. engage stops rather than
/// process the partition on incomplete state, which would double-count.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The changelog could not be read. Retryable once the brokers answer.
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    /// The changelog was not read to its end within `state.restore_timeout`.
    /// Retryable; raise the timeout if the changelog is large.
    #[error("changelog {topic:?} partition {partition} not read up to offset {high} within {timeout:?}")]
    Timeout {
        /// The changelog topic.
        topic: String,
        /// The partition being restored.
        partition: i32,
        /// The end offset it had to reach.
        high: i64,
        /// `state.restore_timeout`.
        timeout: Duration,
    },
}

/// Applies one changelog record: it replaces everything held for the
/// customer (a state, an erasure in force, or both); a tombstone removes
/// it; a bootstrap marker sets the partition's bootstrap as-of; an
/// unreadable record is counted and logged.
fn apply_record(m: &rdkafka::message::BorrowedMessage<'_>, into: &Partition, stats: &mut RestoreStats, topic: &str) {
    if m.key() == Some(BOOTSTRAP_KEY) {
        apply_bootstrap_marker(m, into, stats, topic);
        return;
    }
    match (m.key().and_then(|k| std::str::from_utf8(k).ok()), m.payload()) {
        (Some(id), None) => into.forget(id),
        (Some(id), Some(value)) => match read_record(value) {
            Ok((state, erased)) => {
                into.forget(id);
                if let Some((id, state)) = state {
                    into.insert(id, state);
                }
                if let Some(erased) = erased {
                    into.set_erased(id, erased);
                }
            }
            Err(e) => {
                stats.unreadable += 1;
                warn!(topic, partition = m.partition(), offset = m.offset(), error = %e, "unreadable changelog record skipped");
            }
        },
        (None, _) => {
            stats.unreadable += 1;
            warn!(
                topic,
                partition = m.partition(),
                offset = m.offset(),
                "changelog record without a UTF-8 key skipped"
            );
        }
    }
}

/// Applies a bootstrap marker: the partition's bootstrap as-of (a
/// tombstone clears it). An unreadable marker is counted and logged, and
/// leaves the as-of as it was.
fn apply_bootstrap_marker(
    m: &rdkafka::message::BorrowedMessage<'_>,
    into: &Partition,
    stats: &mut RestoreStats,
    topic: &str,
) {
    let Some(value) = m.payload() else {
        into.set_bootstrap_as_of(i64::MIN);
        return;
    };
    match proto::BootstrapMarker::decode(value) {
        Ok(b) if b.version == BOOTSTRAP_MARKER_VERSION => {
            into.set_bootstrap_as_of(b.as_of);
            stats.bootstrap_as_of = Some(b.as_of);
        }
        Ok(b) => {
            stats.unreadable += 1;
            warn!(
                topic,
                partition = m.partition(),
                offset = m.offset(),
                version = b.version,
                "bootstrap marker of an unknown version skipped"
            );
        }
        Err(e) => {
            stats.unreadable += 1;
            warn!(topic, partition = m.partition(), offset = m.offset(), error = %e, "unreadable bootstrap marker skipped");
        }
    }
}

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

/// A changelog record's state (absent from a record that only keeps an
/// erasure in force) and erasure.
type Record = (Option<(CompactString, CustomerState)>, Option<Erased>);

fn read_record(value: &[u8]) -> Result<Record, StateError> {
    let record = proto::CustomerState::decode(value)?;
    let erased = record.erased.as_ref().map(Erased::from_proto);
    let state = match erased {
        Some(_) if record.dimensions.is_empty() => None,
        _ => Some(CustomerState::from_proto(&record)?),
    };
    Ok((state, erased))
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
        let (state, marker) = read_record(&encode(&p, "gone").unwrap()).unwrap();
        assert_eq!((state, marker), (None, Some(erased)), "only the erasure: no facts");

        // A customer who came back after the erasure keeps both.
        p.set_erased("back", erased);
        let mut state = CustomerState::default();
        (state.seq, state.last_seen) = (4, 2_000);
        p.insert("back".into(), state);
        let (state, marker) = read_record(&encode(&p, "back").unwrap()).unwrap();
        assert_eq!(state.map(|(id, s)| (id, s.seq, s.last_seen)), Some(("back".into(), 4, 2_000)));
        assert_eq!(marker, Some(erased));

        // Neither: a tombstone.
        p.forget("back");
        assert_eq!(encode(&p, "back"), None);
        assert_eq!(p.erasures(), 1);
    }
}
