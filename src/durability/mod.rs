//! The durability protocol (docs/model.md "Guarantees"): when an input
//! offset may be committed, in one place.
//!
//! For each input partition *p* (every input's partition *p* feeds the same
//! customers, so they share one queue of work, in the order it was done):
//!
//! 1. **Work.** Every input record taken up (applied, a duplicate, or
//!    dead-lettered) and every sweep registers a work item in *p*'s
//!    [`Ledger`] with the records it sent: outputs, a dead letter.
//! 2. **Stage.** Customers whose state changed are marked. Every
//!    `state.flush_interval` a flush takes them: their changelog records
//!    are encoded at once (consumption goes on), and held until every work
//!    item registered before the flush is acknowledged. Only then are they
//!    written, so the changelog never holds a state whose outputs could
//!    still be lost.
//! 3. **Erasures** order their records the same way: the scores tombstone
//!    goes at once, in order with the partition's other outputs; the
//!    customer's changelog record once the work before it is complete; its
//!    confirmation only once that record is acknowledged, so a confirmed
//!    erasure is always restored after a crash.
//! 4. **Commit.** An offset becomes committable once a flush registered
//!    after it is acknowledged; committable offsets are stored for the
//!    consumer's auto-commit, and committed synchronously when a partition
//!    is revoked and at shutdown ([`Durability::finish`]).
//!
//! With `exactly_once`, steps 2 to 4 are one Kafka transaction per flush:
//! the outputs sent since the last one, the changelog records of the flush
//! and the input offsets processed so far commit together or not at all.

mod ledger;
mod staged;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;
use tracing::debug;

pub use ledger::{Committable, Ledger, Work};

use crate::codec::state::changelog_value;
use crate::config::{Config, Inputs, ProcessingGuarantee};
use crate::decode::DecodeError;
use crate::engine::output::Output;
use crate::engine::store::Store;
use crate::kafka::KafkaSetupError;
use crate::kafka::sink::{Acknowledge, DeliveryError, Origin, Sink, Ticket};
use crate::sync;
use crate::telemetry::events::OffsetNotStored;
use crate::vocab::InputKind;
use staged::{Dirty, Staged, StagedQueues};

/// Why the durability protocol cannot go on. The pipeline stops without
/// committing past the failure: a restart resumes from the last committed
/// offsets and the changelog, so nothing is lost.
#[derive(Debug, thiserror::Error)]
pub enum DurabilityError {
    /// A record could not be delivered; restarting may help once the
    /// broker is healthy.
    #[error("output delivery failed, stopping without committing past it")]
    Delivery(#[source] DeliveryError),
    /// `exactly_once`: a transaction could not be committed (and was
    /// aborted). Restarting resumes from the last committed transaction.
    #[error("transaction failed and was aborted")]
    Transaction(#[source] TransactionError),
    /// Shutdown or a revoke could not flush and commit within
    /// `run.shutdown_deadline`; the uncommitted records will be processed
    /// again by the next owner.
    #[error("shutdown deadline of {0:?} passed before all outputs were acknowledged")]
    ShutdownDeadline(Duration),
}

/// Why an `exactly_once` transaction failed.
#[derive(Debug, thiserror::Error)]
pub enum TransactionError {
    /// The transaction's records were not acknowledged in time.
    #[error("outputs not acknowledged")]
    Flush(#[source] KafkaError),
    /// The consumer has not joined its group, so its offsets cannot be
    /// committed inside the transaction.
    #[error("the consumer has no group metadata")]
    NoGroupMetadata,
    /// Sending the offsets or committing the transaction failed.
    #[error("commit failed")]
    Commit(#[source] KafkaError),
}

/// The durability protocol of one pipeline: it registers work, stages
/// changelog flushes, sends through the [`Sink`], and decides which input
/// offsets are committed.
///
/// **Invariant** (`at_least_once`): an input offset is committed only when
/// every record sent for it and for all work before it in its partition
/// (outputs, dead letters, erasure records) is acknowledged by the broker,
/// and so is a changelog flush taken after it, so the customer states it
/// changed are durable together with the per-customer applied offsets that
/// make a replay of it a no-op. After any crash the changelog holds, for
/// every customer, a state whose outputs were all delivered.
///
/// **Invariant** (`exactly_once`): an input offset is committed only inside
/// the Kafka transaction that holds the records sent for it and for all
/// work before it, and a changelog flush taken after it; the transaction
/// commits all of them or none.
pub struct Durability {
    sink: Sink,
    acks: Arc<Acks>,
    /// `exactly_once` without a configured `run.transactional_id`: the
    /// instance identity behind the default one, held while running.
    _instance: Option<crate::kafka::instance::Instance>,
    staged: StagedQueues,
    dirty: Mutex<Dirty>,
    /// `exactly_once`: the next offset to read per input partition,
    /// committed inside each transaction.
    processed: Mutex<HashMap<(InputKind, i32), i64>>,
    store: Arc<Store>,
    inputs: Inputs,
    flush_interval: Duration,
    deadline: Duration,
}

/// The ledger as delivery reports update it, with the main loop's wake-up
/// when an acknowledgement may have made a held erasure record next: each
/// erasure waits for its own changelog record, so a burst of them would
/// move at a tick's pace (and hold back its partition's commits) without it.
#[derive(Debug, Default)]
struct Acks {
    ledger: Mutex<Ledger>,
    held_erasures: AtomicUsize,
    wake: Notify,
}

impl Acknowledge for Acks {
    fn acknowledge(&self, ticket: Ticket, result: Result<(), DeliveryError>) {
        sync::lock(&self.ledger).ack(ticket, result);
        if self.held_erasures.load(Ordering::Relaxed) > 0 {
            self.wake.notify_one();
        }
    }
}

impl Durability {
    /// The protocol for `config`, with its producer; changed customers are
    /// read from `store` when a flush is taken.
    pub fn new(config: &Config, store: Arc<Store>) -> Result<Durability, KafkaSetupError> {
        let acks = Arc::new(Acks::default());
        let exactly_once = config.run.processing_guarantee == ProcessingGuarantee::ExactlyOnce;
        let instance = (exactly_once && config.run.transactional_id.is_empty())
            .then(|| crate::kafka::instance::claim(&config.run.group_id));
        let transactional_id = match &instance {
            Some(i) => Some(i.id.as_str()),
            None => exactly_once.then_some(config.run.transactional_id.as_str()),
        };
        if let Some(id) = transactional_id {
            tracing::info!(transactional_id = id, "exactly_once: transactional producer");
        }
        let sink = Sink::new(config, acks.clone(), transactional_id)?;
        Ok(Durability {
            sink,
            acks,
            _instance: instance,
            staged: StagedQueues::default(),
            dirty: Mutex::new(Dirty::default()),
            processed: Mutex::new(HashMap::new()),
            store,
            inputs: config.inputs(),
            flush_interval: config.state.flush_interval,
            deadline: config.run.shutdown_deadline,
        })
    }

    /// The timer of changelog flushes: one every `state.flush_interval`.
    pub fn flush_timer(&self) -> tokio::time::Interval {
        let mut timer = tokio::time::interval(self.flush_interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer
    }

    /// Whether records go out in transactions (`exactly_once`).
    pub fn is_transactional(&self) -> bool {
        self.sink.is_transactional()
    }

    /// Takes up input record `offset` of `topic`'s partition `partition`:
    /// its work item, for what it sends.
    pub fn begin(&self, topic: InputKind, partition: i32, offset: i64) -> Work {
        if self.is_transactional() {
            sync::lock(&self.processed).insert((topic, partition), offset + 1);
        }
        Work::Record { topic, partition, offset }
    }

    /// Sends the outputs `work` caused (possibly none: the work still
    /// takes its place in the queue); `origin` is the input record behind
    /// them, for the latency histograms.
    pub fn publish(&self, work: Work, outputs: &mut Vec<Output>, origin: Option<Origin>) {
        let ticket = sync::lock(&self.acks.ledger).register(work, outputs.len() as u32);
        if !outputs.is_empty() {
            self.sink.send_outputs(outputs.drain(..), ticket, origin);
        }
    }

    /// Sends an input record engage cannot use to the dead-letter topic, as
    /// `work`.
    pub fn dead_letter<M: Message>(&self, work: Work, message: &M, error: &DecodeError) {
        let ticket = sync::lock(&self.acks.ledger).register(work, 1);
        self.sink.send_dead_letter(message, error, ticket);
    }

    /// Marks a customer of `partition` whose state changed (or who was
    /// evicted): the next flush writes its changelog record.
    pub fn changed(&self, partition: i32, customer_id: &str) {
        sync::lock(&self.dirty).mark(partition, customer_id);
    }

    /// Marks several changed customers of `partition` at once.
    pub fn changed_all<'a>(&self, partition: i32, customer_ids: impl Iterator<Item = &'a str>) {
        let mut dirty = sync::lock(&self.dirty);
        for id in customer_ids {
            dirty.mark(partition, id);
        }
    }

    /// Publishes an erasure request's effects (docs/model.md "Erasure"), as
    /// the request's `work`: the tombstone for `customer_id` on the scores
    /// topic at once, in order with the partition's other outputs (a score
    /// of the customer's new life lands after it); the customer's changelog
    /// record now, ahead of the next flush, once the work before it is
    /// complete; and `confirmation` only once that record is acknowledged.
    /// With `exactly_once` all of it goes into the open transaction at once.
    pub fn erase(&self, partition: i32, work: Work, customer_id: &str, confirmation: &mut Vec<Output>) {
        let ticket = sync::lock(&self.acks.ledger).register(work, 1);
        self.sink.send_scores_tombstone(customer_id, ticket);
        let record = vec![(customer_id.into(), changelog_value(&self.store.partition(partition), customer_id))];
        let confirmation = std::mem::take(confirmation);
        let release = Work::Release { partition };
        if self.is_transactional() {
            let ticket = sync::lock(&self.acks.ledger).register(release, record.len() as u32);
            self.sink.send_changelog(ticket, &record);
            let ticket = sync::lock(&self.acks.ledger).register(release, confirmation.len() as u32);
            self.sink.send_outputs(confirmation.into_iter(), ticket, None);
            return;
        }
        let added = self.staged.push_erasure(partition, record, confirmation, || {
            let mut ledger = sync::lock(&self.acks.ledger);
            (ledger.register_gated(release), ledger.register_gated(release))
        });
        self.acks.held_erasures.fetch_add(added, Ordering::Relaxed);
    }

    /// Resolves when an acknowledgement may have let a held erasure record
    /// go: the main loop then calls [`Durability::release`].
    pub fn released(&self) -> tokio::sync::futures::Notified<'_> {
        self.acks.wake.notified()
    }

    /// Writes every staged record whose preceding work is complete. Cheap
    /// when none is ready.
    pub fn release(&self) {
        let mut released_erasures = 0;
        self.staged.release(
            |ticket| sync::lock(&self.acks.ledger).is_next(ticket),
            |ticket, staged| {
                sync::lock(&self.acks.ledger).open(ticket, staged.deliveries());
                match staged {
                    Staged::Changelog(records) => self.sink.send_changelog(ticket, &records),
                    Staged::Erasure(records) => {
                        released_erasures += 1;
                        self.sink.send_changelog(ticket, &records);
                    }
                    Staged::Confirmation(outputs) => {
                        released_erasures += 1;
                        self.sink.send_outputs(outputs.into_iter(), ticket, None);
                    }
                }
            },
        );
        self.acks.held_erasures.fetch_sub(released_erasures, Ordering::Relaxed);
    }

    /// The main loop's tick: fails on a delivery failure; otherwise
    /// (`at_least_once`) writes the staged records that became ready and
    /// stores the offsets that became committable, for the consumer's
    /// auto-commit.
    pub fn tick<C: ConsumerContext>(&self, consumer: &impl Consumer<C>) -> Result<(), DurabilityError> {
        self.check()?;
        if !self.is_transactional() {
            self.release();
            self.store_committable(consumer);
        }
        Ok(())
    }

    /// Records sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        sync::lock(&self.acks.ledger).in_flight()
    }

    fn check(&self) -> Result<(), DurabilityError> {
        match sync::lock(&self.acks.ledger).failure() {
            Some(f) => Err(DurabilityError::Delivery(f.clone())),
            None => Ok(()),
        }
    }

    /// Takes a changelog flush of `partitions` (step 2). With
    /// `exactly_once` it commits the open transaction instead, which
    /// blocks until its records are acknowledged.
    pub fn flush<C: ConsumerContext>(
        &self,
        consumer: &impl Consumer<C>,
        partitions: &[i32],
    ) -> Result<(), DurabilityError> {
        if partitions.is_empty() {
            return Ok(());
        }
        self.check()?;
        self.stage_changelog(partitions);
        if !self.is_transactional() {
            self.release();
            return Ok(());
        }
        self.sink.flush(self.deadline).map_err(|e| DurabilityError::Transaction(TransactionError::Flush(e)))?;
        self.release();
        let mut offsets = TopicPartitionList::new();
        for ((kind, p), next) in sync::lock(&self.processed).iter() {
            if partitions.contains(p) {
                let _ = offsets.add_partition_offset(self.inputs.name(*kind), *p, Offset::Offset(*next));
            }
        }
        let group = consumer.group_metadata().ok_or(DurabilityError::Transaction(TransactionError::NoGroupMetadata))?;
        self.sink
            .commit_transaction(&offsets, &group, self.deadline)
            .map_err(|e| DurabilityError::Transaction(TransactionError::Commit(e)))
    }

    /// Encodes the changed customers of `partitions` and stages them
    /// behind the work registered so far.
    fn stage_changelog(&self, partitions: &[i32]) {
        for &p in partitions {
            let ids = sync::lock(&self.dirty).take(p);
            let partition = self.store.partition(p);
            let records = ids
                .into_iter()
                .map(|id| {
                    let value = changelog_value(&partition, &id);
                    (id, value)
                })
                .collect();
            let ticket = sync::lock(&self.acks.ledger).register_gated_flush(p);
            self.staged.push(p, ticket, Staged::Changelog(records));
        }
    }

    /// Stores the offsets that became committable; auto-commit (and the
    /// synchronous commits on revoke and shutdown) write them to Kafka.
    fn store_committable<C: ConsumerContext>(&self, consumer: &impl Consumer<C>) {
        let done = sync::lock(&self.acks.ledger).take_committable();
        if done.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::with_capacity(done.len());
        for Committable { topic, partition, next_offset } in done {
            if let Err(e) = tpl.add_partition_offset(self.inputs.name(topic), partition, Offset::Offset(next_offset)) {
                OffsetNotStored { topic: self.inputs.name(topic), partition, error: &e }.emit();
            }
        }
        if let Err(e) = consumer.store_offsets(&tpl) {
            // A partition revoked meanwhile: its next owner resumes from the
            // last commit, which is safe.
            debug!(error = %e, "store offsets");
        }
    }

    /// Flushes `partitions`, waits until the flush and everything before it
    /// is acknowledged (at most `run.shutdown_deadline`), and commits their
    /// offsets synchronously: on revoke and at shutdown.
    pub fn finish<C: ConsumerContext>(
        &self,
        consumer: &impl Consumer<C>,
        partitions: &[i32],
    ) -> Result<(), DurabilityError> {
        self.flush(consumer, partitions)?;
        if self.is_transactional() {
            return Ok(());
        }
        let deadline = Instant::now() + self.deadline;
        loop {
            self.release();
            self.check()?;
            if partitions.iter().all(|p| sync::lock(&self.acks.ledger).is_drained(*p)) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(DurabilityError::ShutdownDeadline(self.deadline));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // A failure reported since the last look: nothing is committed.
        self.check()?;
        self.store_committable(consumer);
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            // NoOffset: nothing new to commit.
            debug!(error = %e, "commit");
        }
        Ok(())
    }

    /// Forgets a partition (after it was revoked and finished): its
    /// ledger, staged records, changed customers and processed offsets.
    pub fn forget(&self, partition: i32) {
        let erasures = self.staged.forget(partition);
        self.acks.held_erasures.fetch_sub(erasures, Ordering::Relaxed);
        sync::lock(&self.acks.ledger).forget(partition);
        sync::lock(&self.dirty).forget(partition);
        sync::lock(&self.processed).retain(|(_, p), _| *p != partition);
    }
}
