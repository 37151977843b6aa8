//! What the main loop and the consumer callbacks share, and the commit
//! path: changelog flushes, storing committable offsets, and finishing a
//! partition (flush, wait for acknowledgements, commit) on revoke and on
//! shutdown.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, error, warn};

use super::align::Ends;
use super::{PipelineError, TransactionError};
use crate::config::Config;
use crate::engine::store::Store;
use crate::kafka::changelog::Dirty;
use crate::kafka::progress::{Committable, lock};
use crate::kafka::sink::Sink;
use crate::sync;
use crate::vocab::InputKind;

/// Names of the input topics, to map a record back to its kind.
#[derive(Clone)]
pub(super) struct Inputs {
    /// In [`InputKind::index`] order; the erasures' is empty when
    /// `topics.erasures` is not set.
    names: [String; 3],
}

/// In logs about a partition number: the event inputs' partition *p*.
impl std::fmt::Display for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}+{}", self.names[0], self.names[1])
    }
}

impl Inputs {
    pub(super) fn new(topics: &crate::config::TopicsConfig) -> Inputs {
        Inputs { names: InputKind::ALL.map(|t| topics.input(t).to_string()) }
    }

    /// Which input `topic` is, or `None` for another topic.
    pub(super) fn of(&self, topic: &str) -> Option<InputKind> {
        InputKind::ALL.into_iter().find(|t| {
            let name = &self.names[t.index()];
            !name.is_empty() && name == topic
        })
    }

    pub(super) fn kind(&self, topic: &str) -> InputKind {
        self.of(topic).unwrap_or(InputKind::Clickstream)
    }

    pub(super) fn name(&self, kind: InputKind) -> &str {
        &self.names[kind.index()]
    }

    /// The topics to subscribe to.
    pub(super) fn subscribed(&self) -> Vec<&str> {
        self.names.iter().filter(|n| !n.is_empty()).map(String::as_str).collect()
    }
}

/// What the main loop and the consumer callbacks share.
pub(super) struct Shared {
    pub(super) config: Config,
    pub(super) sink: Arc<Sink>,
    pub(super) store: Arc<Store>,
    pub(super) status: Arc<super::Status>,
    pub(super) inputs: Inputs,
    pub(super) changelog: String,
    pub(super) dirty: Mutex<Dirty>,
    /// Partition numbers currently assigned and restored.
    pub(super) owned: Mutex<BTreeSet<i32>>,
    /// Bumped on every rebalance, so the main loop drops cached partitions.
    pub(super) generation: AtomicU64,
    /// A failure inside a callback, for the main loop to act on.
    pub(super) fatal: Mutex<Option<PipelineError>>,
    /// `exactly_once`: the next offset to read per input topic-partition,
    /// committed inside each transaction.
    pub(super) processed: Mutex<HashMap<(InputKind, i32), i64>>,
    /// Where each input partition stands on the broker, from the consumer's
    /// statistics (for event-time alignment).
    pub(super) ends: Mutex<HashMap<(InputKind, i32), Ends>>,
}

impl Shared {
    pub(super) fn owned(&self) -> Vec<i32> {
        sync::lock(&self.owned).iter().copied().collect()
    }

    /// Takes a changelog flush of `partitions`: their changed customers
    /// are encoded now and written once every output sent before is
    /// acknowledged ([`Sink::stage_changelog`]), so a durable state never
    /// runs ahead of its delivered outputs; consumption does not wait. In
    /// `exactly_once` mode the outputs, the changelog records and the input
    /// offsets are instead committed as one transaction, which blocks.
    pub(super) fn flush<C: ConsumerContext>(
        &self,
        consumer: &impl Consumer<C>,
        partitions: &[i32],
    ) -> Result<(), PipelineError> {
        if partitions.is_empty() {
            return Ok(());
        }
        if let Some(f) = lock(self.sink.progress()).failure() {
            return Err(PipelineError::Delivery(f.clone()));
        }
        self.write_changelog(partitions);
        if !self.sink.is_transactional() {
            self.sink.release_changelog();
            return Ok(());
        }
        self.sink
            .flush(self.config.run.shutdown_deadline)
            .map_err(|e| PipelineError::Transaction(TransactionError::Flush(e)))?;
        self.sink.release_changelog();
        let mut offsets = TopicPartitionList::new();
        for ((kind, p), next) in sync::lock(&self.processed).iter() {
            if partitions.contains(p) {
                let _ = offsets.add_partition_offset(self.inputs.name(*kind), *p, Offset::Offset(*next));
            }
        }
        let group = consumer.group_metadata().ok_or(PipelineError::Transaction(TransactionError::NoGroupMetadata))?;
        self.sink
            .commit_transaction(&offsets, &group, self.config.run.shutdown_deadline)
            .map_err(|e| PipelineError::Transaction(TransactionError::Commit(e)))
    }

    pub(super) fn write_changelog(&self, partitions: &[i32]) {
        for &p in partitions {
            let ids = sync::lock(&self.dirty).take(p);
            let partition = self.store.partition(p);
            let records = ids
                .into_iter()
                .map(|id| {
                    let value = crate::codec::state::changelog_value(&partition, &id);
                    (id, value)
                })
                .collect();
            self.sink.stage_changelog(p, records);
        }
    }

    /// Stores the offsets that became committable; auto-commit (and the
    /// synchronous commits on revoke and shutdown) write them to Kafka.
    pub(super) fn store_done<C: ConsumerContext>(&self, consumer: &impl Consumer<C>) {
        let done = lock(self.sink.progress()).take_committable();
        if done.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::with_capacity(done.len());
        for Committable { topic: kind, partition, next_offset: next } in done {
            if let Err(e) = tpl.add_partition_offset(self.inputs.name(kind), partition, Offset::Offset(next)) {
                warn!(error = %e, "cannot store offset");
            }
        }
        if let Err(e) = consumer.store_offsets(&tpl) {
            // A partition revoked meanwhile: its next owner resumes from the
            // last commit, which is safe.
            debug!(error = %e, "store offsets");
        }
    }

    /// Flush, wait until the flush and everything before it is
    /// acknowledged (at most `run.shutdown_deadline`), store and commit
    /// synchronously.
    pub(super) fn finish<C: ConsumerContext>(
        &self,
        consumer: &impl Consumer<C>,
        partitions: &[i32],
    ) -> Result<(), PipelineError> {
        self.flush(consumer, partitions)?;
        if self.sink.is_transactional() {
            return Ok(());
        }
        let deadline = Instant::now() + self.config.run.shutdown_deadline;
        loop {
            self.sink.release_changelog();
            let progress = lock(self.sink.progress());
            if let Some(f) = progress.failure() {
                return Err(PipelineError::Delivery(f.clone()));
            }
            if partitions.iter().all(|p| progress.is_drained(*p)) {
                break;
            }
            drop(progress);
            if Instant::now() >= deadline {
                return Err(PipelineError::ShutdownDeadline(self.config.run.shutdown_deadline));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.store_done(consumer);
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            // NoOffset: nothing new to commit.
            debug!(error = %e, "commit");
        }
        Ok(())
    }

    pub(super) fn set_fatal(&self, e: PipelineError) {
        error!(error = %e, "fatal");
        sync::lock(&self.fatal).get_or_insert(e);
    }
}
