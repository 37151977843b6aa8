//! The state changelog (docs/model.md "Guarantees"): a compacted topic, one record per
//! customer keyed by `customer_id`, in the partition matching the input
//! partition, holding the versioned `engage.v1.CustomerState` — including the
//! per-customer applied offsets that let a restored instance skip records it
//! has already applied. A partition's customers are restored from it when
//! the partition is assigned, before its first record is processed.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::codec::state::{BOOTSTRAP_KEY, read_bootstrap_marker, read_changelog_value};
use crate::config::Config;
use crate::engine::store::Partition;
use crate::kafka::KafkaSetupError;
use crate::kafka::client::ClientEvents;
use crate::kafka::diagnosis;
use crate::telemetry::events::{ChangelogRetry, ChangelogUnreadable};

/// The changelog topic: `state.changelog_topic`, or `<group>.engage-state`.
pub fn topic_name(config: &Config) -> String {
    if config.state.changelog_topic.is_empty() {
        format!("{}.engage-state", config.run.group_id)
    } else {
        config.state.changelog_topic.clone()
    }
}

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
/// high watermark into `into` (replacing what it held), waiting for the
/// transactions open then to end. Blocks; a missing or
/// unreachable changelog is an error, because processing without the state
/// would double-count.
pub fn restore(
    config: &Config,
    topic: &str,
    into: &Partition,
    timeout: Duration,
) -> Result<RestoreStats, RestoreError> {
    let start = Instant::now();
    // read_committed whatever `[kafka]` says: an aborted transaction's
    // records must never be restored.
    let consumer: BaseConsumer<ClientEvents> = crate::kafka::client::restore_consumer(config)
        .set("isolation.level", "read_committed")
        .create_with_context(ClientEvents::new("restore"))
        .map_err(|e| KafkaSetupError::client("creating the restore consumer", e))?;
    // The end to read up to is the high watermark, which only a
    // read_uncommitted client is told (a read_committed one gets the last
    // stable offset). A transaction the previous owner committed just
    // before this assignment may not have its commit marker on this
    // partition yet: the coordinator writes markers after the commit
    // returns, to each partition on its own, while the input offsets
    // committed with it already read as committed. Stopping at the last
    // stable offset would restore the state from before that transaction
    // and resume the input after it, losing the records in between.
    // Reading up to the high watermark waits until every transaction open
    // now has ended: committed records are applied, aborted ones skipped
    // (a killed instance's, once the broker aborts it after
    // `transaction.timeout.ms`, or at once when it restarts).
    let ends: BaseConsumer<ClientEvents> = crate::kafka::client::restore_consumer(config)
        .set("isolation.level", "read_uncommitted")
        .create_with_context(ClientEvents::new("restore"))
        .map_err(|e| KafkaSetupError::client("creating the restore consumer", e))?;
    // An error retrying will not clear (a missing READ on the changelog,
    // say) stops the restore at once rather than at its deadline.
    let blocked = |e: &rdkafka::error::KafkaError| {
        let reported = consumer.context().errors().into_iter().chain(ends.context().errors());
        std::iter::once((e.clone(), String::new()))
            .chain(reported)
            .find_map(|(e, why)| diagnosis::classify(config, &e, &why, Some(topic), "READ"))
    };
    let p = into.id();
    let deadline = Instant::now() + timeout;
    // One request may be lost to a broker that restarts meanwhile: ask
    // again, in short attempts, until the restore deadline.
    let (low, high) = loop {
        let attempt = WATERMARK_ATTEMPT.min(deadline.saturating_duration_since(Instant::now()));
        match ends.fetch_watermarks(topic, p, attempt) {
            Ok(w) => break w,
            Err(e) if let Some(b) = blocked(&e) => return Err(KafkaSetupError::Blocked(b).into()),
            Err(e) if Instant::now() < deadline => {
                ChangelogRetry { step: "end", topic, partition: p, error: &e }.emit();
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
                // is coming, or a transaction is still open (one whose commit
                // marker is on its way, or a crashed instance's, until the
                // broker aborts it): keep reading.
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
                Err(e) => match blocked(&e) {
                    Some(b) => return Err(KafkaSetupError::Blocked(b).into()),
                    None => ChangelogRetry { step: "read", topic, partition: p, error: &e }.emit(),
                },
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
        (Some(id), Some(value)) => match read_changelog_value(value) {
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
                ChangelogUnreadable { what: "state", topic, partition: m.partition(), offset: m.offset(), error: &e }
                    .emit();
            }
        },
        (None, _) => {
            stats.unreadable += 1;
            let error = "the key is not a UTF-8 customer id";
            ChangelogUnreadable { what: "key", topic, partition: m.partition(), offset: m.offset(), error: &error }
                .emit();
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
    match read_bootstrap_marker(value) {
        Ok(as_of) => {
            into.set_bootstrap_as_of(as_of);
            stats.bootstrap_as_of = Some(as_of);
        }
        Err(e) => {
            stats.unreadable += 1;
            ChangelogUnreadable { what: "marker", topic, partition: m.partition(), offset: m.offset(), error: &e }
                .emit();
        }
    }
}
