//! Operational events: one type per thing an operator may need to know
//! about, whose `emit()` writes both the log line and the metric, so logs
//! and metrics never disagree about what happened.

use std::fmt::Display;
use std::time::Duration;

use tracing::{info, warn};

use super::{
    ALIGNMENT_TIMEOUTS, ASSIGNED_PARTITIONS, BACKPRESSURE, DELIVERY_ERRORS, REBALANCES, RESTORE_DURATION,
    RESTORE_RECORDS,
};

/// The consumer group gave this instance partitions, or took them away.
pub(crate) struct Rebalance {
    /// `assign` or `revoke`.
    pub kind: &'static str,
    /// Input partitions owned after the rebalance.
    pub owned: usize,
}

impl Rebalance {
    pub(crate) fn emit(&self) {
        metrics::counter!(REBALANCES, "kind" => self.kind).increment(1);
        metrics::gauge!(ASSIGNED_PARTITIONS).set(self.owned as f64);
        info!(kind = self.kind, owned = self.owned, "rebalance");
    }
}

/// A newly assigned partition's customers were restored from the changelog.
pub(crate) struct PartitionRestored<'a> {
    /// Both inputs' names, for the log.
    pub inputs: &'a dyn Display,
    /// The input partition number.
    pub partition: i32,
    /// The changelog topic read.
    pub changelog: &'a str,
    /// Changelog records read.
    pub records: u64,
    /// Customers restored.
    pub customers: usize,
    /// Records that could not be read (logged where found).
    pub unreadable: u64,
    /// The bootstrap as-of of the partition, if it was bootstrapped.
    pub bootstrap_as_of: Option<i64>,
    /// How long the restore took.
    pub elapsed: Duration,
}

impl PartitionRestored<'_> {
    pub(crate) fn emit(&self) {
        let seconds = self.elapsed.as_secs_f64();
        metrics::counter!(RESTORE_RECORDS).increment(self.records);
        metrics::histogram!(RESTORE_DURATION).record(seconds);
        info!(
            topic = %self.inputs,
            partition = self.partition,
            changelog = self.changelog,
            records = self.records,
            customers = self.customers,
            unreadable = self.unreadable,
            bootstrap_as_of = self.bootstrap_as_of.map(crate::replay::format_time),
            seconds,
            records_per_second = (self.records as f64 / seconds.max(1e-9)) as u64,
            "partition assigned: state restored"
        );
    }
}

/// A revoked partition was flushed, committed and dropped.
pub(crate) struct PartitionRevoked<'a> {
    /// Both inputs' names, for the log.
    pub inputs: &'a dyn Display,
    /// The input partition number.
    pub partition: i32,
}

impl PartitionRevoked<'_> {
    pub(crate) fn emit(&self) {
        info!(topic = %self.inputs, partition = self.partition, "partition revoked: flushed, committed, dropped");
    }
}

/// The broker refused a record, or the producer would not take it. Fatal:
/// nothing after it is committed.
pub(crate) struct DeliveryFailed<'a> {
    /// The topic written to.
    pub topic: &'a str,
    /// librdkafka's error.
    pub error: &'a dyn Display,
}

impl DeliveryFailed<'_> {
    pub(crate) fn emit(&self) {
        metrics::counter!(DELIVERY_ERRORS, "topic" => self.topic.to_string()).increment(1);
        warn!(topic = self.topic, error = %self.error, "delivery failed");
    }
}

/// Consumption paused because too many outputs await acknowledgement, or
/// resumed once they drained.
pub(crate) struct Backpressure {
    /// Whether consumption is now paused.
    pub paused: bool,
    /// Outputs in flight at the switch.
    pub in_flight: usize,
}

impl Backpressure {
    pub(crate) fn emit(&self) {
        let state = if self.paused { "paused" } else { "resumed" };
        metrics::counter!(BACKPRESSURE, "state" => state).increment(1);
        info!(in_flight = self.in_flight, paused = self.paused, "backpressure");
    }
}

/// A partition pair waited `run.alignment_wait` for a lagging input and
/// goes on without it: until that input delivers again, the other's
/// records are applied as they arrive, possibly before earlier events of
/// the lagging one.
pub(crate) struct AlignmentTimeout<'a> {
    /// Both inputs' names, for the log.
    pub inputs: &'a dyn Display,
    /// The input partition number.
    pub partition: i32,
    /// The input waited for.
    pub lagging: crate::vocab::InputKind,
    /// Records of the other input that were waiting.
    pub held: usize,
    /// `run.alignment_wait`.
    pub wait: Duration,
}

impl AlignmentTimeout<'_> {
    pub(crate) fn emit(&self) {
        metrics::counter!(ALIGNMENT_TIMEOUTS).increment(1);
        warn!(topic = %self.inputs, partition = self.partition, lagging = self.lagging.as_str(), held = self.held,
              wait = ?self.wait, "alignment: the lagging input sent nothing in time; going on without it");
    }
}
