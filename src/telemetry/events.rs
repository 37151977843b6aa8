//! Operational events: one type per thing an operator may need to know
//! about, whose `emit()` writes both the log line and the metric, so logs
//! and metrics never disagree about what happened.

use std::fmt::Display;
use std::time::Duration;

use tracing::{error, info, warn};

use super::{
    ALIGNMENT_TIMEOUTS, API_MEMBERSHIP_ERRORS, API_PARTITIONER_MISMATCHES, API_RELOAD_ERRORS, ASSIGNED_PARTITIONS,
    BACKPRESSURE, CHANGELOG_RETRIES, CHANGELOG_UNREADABLE, CLIENT_ERRORS, DELIVERY_ERRORS, EVICTED, FATAL_ERRORS,
    HTTP_ERRORS, OFFSET_STORE_ERRORS, PAUSE_FAILURES, REBALANCES, RESTORE_DURATION, RESTORE_RECORDS, REVOKE_UNFINISHED,
    RunSummary, UPKEEP_MISSING,
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
            bootstrap_as_of = self.bootstrap_as_of.map(crate::clock::format_time),
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
    /// Its work was flushed and committed first (not after an error).
    pub committed: bool,
}

impl PartitionRevoked<'_> {
    pub(crate) fn emit(&self) {
        if self.committed {
            info!(topic = %self.inputs, partition = self.partition, "partition revoked: flushed, committed, dropped");
        } else {
            info!(topic = %self.inputs, partition = self.partition, "partition revoked: dropped, its last work uncommitted");
        }
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

/// A Kafka client reported an error (a broker connection dropped, a fetch
/// failed, a credential refused). librdkafka retries on its own; the count
/// shows how often, and errors retrying will not clear also stall the
/// pipeline (`Stalled`).
pub(crate) struct ClientError<'a> {
    /// Which client: consumer, producer, admin, restore, …
    pub client: &'static str,
    /// librdkafka's error.
    pub error: &'a rdkafka::error::KafkaError,
    /// librdkafka's reason, redacted (may be empty).
    pub reason: &'a str,
}

impl ClientError<'_> {
    pub(crate) fn emit(&self) {
        let code = self.error.rdkafka_error_code().map_or_else(|| "other".to_string(), |c| format!("{c:?}"));
        metrics::counter!(CLIENT_ERRORS, "client" => self.client, "code" => code).increment(1);
        let error = crate::config::redact(&self.error.to_string()).into_owned();
        warn!(client = self.client, error, reason = self.reason, "Kafka client error");
    }
}

/// Pausing or resuming input partitions failed; the next tick tries again.
pub(crate) struct PauseFailed<'a> {
    /// librdkafka's error.
    pub error: &'a dyn Display,
}

impl PauseFailed<'_> {
    pub(crate) fn emit(&self) {
        metrics::counter!(PAUSE_FAILURES).increment(1);
        warn!(error = %self.error, "pause/resume failed; trying again");
    }
}

/// A revoked partition could not be finished (flushed and committed): its
/// next owner reprocesses what was not committed, which is safe.
pub(crate) struct RevokeUnfinished<'a> {
    /// Why.
    pub error: &'a dyn Display,
}

impl RevokeUnfinished<'_> {
    pub(crate) fn emit(&self) {
        metrics::counter!(REVOKE_UNFINISHED).increment(1);
        warn!(error = %self.error, "revoke: could not finish; uncommitted records will be reprocessed");
    }
}

/// A committable offset could not be stored for commit; it is stored with
/// the next one.
pub(crate) struct OffsetNotStored<'a> {
    /// The input topic.
    pub topic: &'a str,
    /// The input partition.
    pub partition: i32,
    /// librdkafka's error.
    pub error: &'a dyn Display,
}

impl OffsetNotStored<'_> {
    pub(crate) fn emit(&self) {
        metrics::counter!(OFFSET_STORE_ERRORS).increment(1);
        warn!(topic = self.topic, partition = self.partition, error = %self.error, "cannot store offset");
    }
}

/// The pipeline stops on an error: it exits non-zero, and a restart
/// resumes from the last commit and the changelog.
pub(crate) struct Fatal<'a> {
    /// Why.
    pub error: &'a dyn std::error::Error,
}

impl Fatal<'_> {
    pub(crate) fn emit(&self) {
        metrics::counter!(FATAL_ERRORS).increment(1);
        error!(error = %crate::telemetry::chain(self.error), "fatal");
    }
}

/// An erasure request was applied: the customer's state is gone.
pub(crate) struct ErasureApplied<'a> {
    /// The input partition.
    pub partition: i32,
    /// The request's offset in the erasures topic.
    pub offset: i64,
    /// The privacy team's id for the request.
    pub request_id: &'a str,
}

impl ErasureApplied<'_> {
    pub(crate) fn emit(&self) {
        // Counted with the pipeline's other per-record counts
        // (`engage_erasures_total`).
        info!(partition = self.partition, offset = self.offset, request_id = %self.request_id, "erasure applied");
    }
}

/// Retention evicted customers idle longer than `state.retention`.
pub(crate) struct RetentionEvicted<'a> {
    /// The inputs' names, for the log.
    pub inputs: &'a dyn Display,
    /// The input partition.
    pub partition: i32,
    /// Customers evicted.
    pub evicted: usize,
}

impl RetentionEvicted<'_> {
    pub(crate) fn emit(&self) {
        metrics::counter!(EVICTED).increment(self.evicted as u64);
        info!(topic = %self.inputs, partition = self.partition, evicted = self.evicted, "retention: evicted idle customers");
    }
}

/// A changelog request failed during a restore and is asked again (a broker
/// restarting, say), within `state.restore_timeout`.
pub(crate) struct ChangelogRetry<'a> {
    /// `end` (reading where the partition ends) or `read` (fetching it).
    pub step: &'static str,
    /// The changelog topic.
    pub topic: &'a str,
    /// The partition being restored.
    pub partition: i32,
    /// librdkafka's error.
    pub error: &'a dyn Display,
}

impl ChangelogRetry<'_> {
    pub(crate) fn emit(&self) {
        metrics::counter!(CHANGELOG_RETRIES, "step" => self.step).increment(1);
        warn!(topic = self.topic, partition = self.partition, step = self.step, error = %self.error,
              "changelog request failed; asking again");
    }
}

/// A changelog record could not be read during a restore and was skipped
/// (its customer is missing from the restored state).
pub(crate) struct ChangelogUnreadable<'a> {
    /// What was wrong: `state`, `key` (not UTF-8) or `marker` (a bootstrap
    /// marker).
    pub what: &'static str,
    /// The changelog topic.
    pub topic: &'a str,
    /// Where.
    pub partition: i32,
    /// Where.
    pub offset: i64,
    /// Why.
    pub error: &'a dyn Display,
}

impl ChangelogUnreadable<'_> {
    pub(crate) fn emit(&self) {
        metrics::counter!(CHANGELOG_UNREADABLE, "what" => self.what).increment(1);
        warn!(topic = self.topic, partition = self.partition, offset = self.offset, what = self.what,
              error = %self.error, "unreadable changelog record skipped");
    }
}

/// The HTTP server stopped with an error while engage runs on.
pub(crate) struct HttpStopped<'a> {
    /// Why.
    pub error: &'a dyn Display,
}

impl HttpStopped<'_> {
    pub(crate) fn emit(&self) {
        metrics::counter!(HTTP_ERRORS).increment(1);
        error!(error = %self.error, "HTTP server stopped");
    }
}

/// The pipeline stopped cleanly: everything finished and committed.
pub(crate) struct Stopped<'a> {
    /// What the run did.
    pub summary: &'a RunSummary,
}

impl Stopped<'_> {
    pub(crate) fn emit(&self) {
        info!(summary = ?self.summary, "stopped cleanly");
    }
}

/// The metrics upkeep thread could not start: histogram samples pile up
/// until `/metrics` is scraped.
pub(crate) struct UpkeepNotStarted<'a> {
    /// Why.
    pub error: &'a dyn Display,
}

impl UpkeepNotStarted<'_> {
    pub(crate) fn emit(&self) {
        metrics::gauge!(UPKEEP_MISSING).set(1.0);
        warn!(error = %self.error, "metrics upkeep thread not started: histogram samples are folded only when /metrics is scraped");
    }
}

/// An error retrying will not clear stalls the pipeline: not ready until
/// it clears, stopped after `run.give_up_after`. Logged once per cause.
/// (The `engage_stalled` gauge is set by `pipeline::Status`.)
pub(crate) struct Stalled<'a> {
    /// What is wrong.
    pub blocker: &'a crate::kafka::diagnosis::Blocker,
}

impl Stalled<'_> {
    pub(crate) fn emit(&self) {
        error!(reason = self.blocker.reason(), "{}: not ready until it is fixed", self.blocker);
    }
}

/// Records were read again from a topic a blocker was about: it cleared.
pub(crate) struct StallCleared<'a> {
    /// The topic read.
    pub topic: &'a str,
}

impl StallCleared<'_> {
    pub(crate) fn emit(&self) {
        info!(topic = self.topic, "records read again: stall cleared");
    }
}

/// Records wait on the inputs and none was taken up for
/// `run.stall_timeout`: not ready, whatever the cause.
pub(crate) struct NoProgress {
    /// Records waiting.
    pub lag: i64,
    /// How long nothing was taken up.
    pub idle: Duration,
}

impl NoProgress {
    pub(crate) fn emit(&self) {
        // The engage_stalled{reason="no_progress"} gauge is set by the status.
        warn!(lag = self.lag, idle = ?self.idle, "no progress: records wait on the inputs and none is taken up");
    }
}

/// A librdkafka log line at warning level or above, forwarded with its
/// secrets redacted. librdkafka logs transient trouble (a connection
/// dropped, a broker restarting) at error level too; engage decides what
/// is an error (`Stalled`, `Fatal`), so these go out as warnings.
pub(crate) struct LibrdkafkaLog<'a> {
    /// librdkafka's level name.
    pub level: &'static str,
    /// Its facility (`FAIL`, `REQTMOUT`, …).
    pub facility: &'a str,
    /// The line, redacted.
    pub message: &'a str,
}

impl LibrdkafkaLog<'_> {
    pub(crate) fn emit(&self) {
        metrics::counter!(super::LIBRDKAFKA_LOG, "level" => self.level).increment(1);
        warn!(target: "librdkafka", facility = self.facility, level = self.level, "{}", self.message);
    }
}

/// The API could not read the consumer group's members and assignments.
/// Requests for partitions held elsewhere keep going to the owners last
/// seen; where those moved the answer is 503. Logged when it starts
/// failing; every failure is counted.
pub(crate) struct MembershipUnavailable<'a> {
    /// Why.
    pub error: &'a str,
    /// Whether this is the first failure since it last worked.
    pub first: bool,
}

impl MembershipUnavailable<'_> {
    pub(crate) fn emit(&self) {
        metrics::counter!(API_MEMBERSHIP_ERRORS).increment(1);
        if self.first {
            warn!(
                error = self.error,
                "customer API: cannot read the consumer group's members; requests for other instances' \
                 partitions may get 503 until it can (engage_api_membership_errors_total counts the failures)"
            );
        }
    }
}

/// The group's members are readable again after [`MembershipUnavailable`].
pub(crate) struct MembershipBack;

impl MembershipBack {
    pub(crate) fn emit(&self) {
        info!("customer API: the consumer group's members are readable again");
    }
}

/// A token or TLS file changed and could not be used; the previous tokens
/// or certificate stay in use until it is fixed.
pub(crate) struct ApiReloadFailed<'a> {
    /// `tokens` or `tls`.
    pub file: &'static str,
    /// Why (names the file and line, never a token).
    pub error: &'a dyn Display,
}

impl ApiReloadFailed<'_> {
    pub(crate) fn emit(&self) {
        metrics::counter!(API_RELOAD_ERRORS, "file" => self.file).increment(1);
        warn!(file = self.file, error = %self.error, "customer API: a changed file could not be used; keeping the previous one");
    }
}

/// The API found a customer in another input partition than
/// `topics.upstream_partitioner` puts its id in: the setting does not match
/// the input's producers (or they key by something else than the customer
/// id). This instance answered from the partition it holds, but a lookup
/// through another instance goes to the wrong owner and misses the
/// customer. Logged once per process; every case is counted.
pub(crate) struct PartitionerMismatch {
    /// Where the partitioner says the customer is.
    pub expected: i32,
    /// Where it was found.
    pub found: i32,
}

impl PartitionerMismatch {
    pub(crate) fn emit(&self) {
        static LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        metrics::counter!(API_PARTITIONER_MISMATCHES).increment(1);
        if !LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            warn!(
                expected = self.expected,
                found = self.found,
                "customer API: a customer is held in another partition than topics.upstream_partitioner puts \
                 its id in; set it to the input producers' partitioner, or lookups through other instances \
                 miss customers (engage_api_partitioner_mismatches_total counts them)"
            );
        }
    }
}
