//! `[run]`: how `engage run` behaves.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// `[run]`: the processor's behaviour.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Consumer group: instances with the same group share the partitions.
    pub group_id: String,
    /// Records sent but not yet acknowledged by the broker (outputs, dead
    /// letters and changelog records) before engage stops fetching input
    /// (pauses its partitions) until they drain below half. Bounds memory
    /// however slow the broker is: at most this, plus one record's outputs,
    /// plus one changelog flush (a record per changed customer). Each pause
    /// drops the records already fetched, and librdkafka fetches a resumed
    /// partition only when its broker thread next wakes (up to a second
    /// later), so keep this well above what the broker acknowledges in a
    /// second: at 20 a run crawls at a few dozen records a second.
    pub max_in_flight: usize,
    /// On SIGTERM/SIGINT, how long engage may take to finish in-flight work,
    /// flush and commit before it gives up and exits non-zero (the
    /// uncommitted records are then reprocessed by the next owner). Keep the
    /// container's termination grace period longer.
    #[serde(with = "humantime_serde")]
    pub shutdown_deadline: Duration,
    /// Create missing output topics at start (`engage topics create` does
    /// the same on demand).
    pub create_topics: bool,
    /// How often progress is logged.
    #[serde(with = "humantime_serde")]
    pub log_interval: Duration,
    /// `at_least_once` (default): outputs may repeat after a crash, with
    /// the same `seq`; state is exactly once either way. `exactly_once`:
    /// outputs, changelog records and input offsets of each flush are one
    /// Kafka transaction, so consumers reading with
    /// `isolation.level=read_committed` see each output once. Needs a broker
    /// with transactions (Apache Kafka has them; shown on Kafka 4.4 by
    /// tests/transactions.rs).
    pub processing_guarantee: ProcessingGuarantee,
    /// `transactional.id` for `exactly_once`. Empty (the default) means
    /// `<group_id>-<host>-<slot>`: the host name (a Kubernetes pod's name)
    /// and the lowest slot free on that host, so an instance restarted on
    /// the same host takes its predecessor's id, fences it and aborts the
    /// transaction it left open at once (docs/model.md "Guarantees"). Set it
    /// only to give each instance a fixed id of your own: it must be unique
    /// per live instance and kept across its restarts.
    pub transactional_id: String,
    /// How often (wall clock) each owned partition is swept for customers
    /// who went quiet (docs/model.md "Health": churn is the absence of events): a full pass
    /// takes this long.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// A full sweep pass is spread over this many ticks, each evaluating one
    /// slice of the customers, so no tick stalls the partition for long
    /// (about 0.3 µs per customer evaluated).
    pub sweep_slices: u32,
    /// A partition that has received nothing for this long is caught up and
    /// idle: its stream time then follows the wall clock, so quiet periods
    /// still raise alerts. docs/model.md "Health": 30 s.
    #[serde(with = "humantime_serde")]
    pub idle_grace: Duration,
    /// The event inputs' partition *p* are applied in event-time order
    /// (docs/operations.md "Ordering across the inputs"). When one input's
    /// next record has not arrived but that input is not caught up (it has
    /// more on the broker), the others' records wait for it at most this long
    /// of unpaused input (a backpressure pause starts the wait over);
    /// then they go on without it until it delivers again, and
    /// `engage_alignment_timeouts_total` counts it. Longer waits keep order
    /// through longer broker hiccups; a wait stalls that partition pair.
    /// `0s` turns alignment off: records are applied as they arrive.
    #[serde(with = "humantime_serde")]
    pub alignment_wait: Duration,
    /// How long an error that retrying will not clear (authentication
    /// failed, an ACL missing, an input topic deleted, input this build
    /// cannot decompress) may last before engage exits non-zero, naming it.
    /// Meanwhile the instance is not ready (`/readyz`), and fixing the cause
    /// (granting the ACL, say) lets it go on without a restart.
    #[serde(with = "humantime_serde")]
    pub give_up_after: Duration,
    /// The progress watchdog: records waiting on the inputs (consumer lag
    /// above zero) and none taken up for this long makes the instance not
    /// ready, whatever the cause, until records flow again. Also the least
    /// time the consumer may stay out of its group after a revoke before
    /// engage exits (`pipeline::PipelineError::NoRejoin`).
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            group_id: "engage".into(),
            max_in_flight: default_max_in_flight(),
            shutdown_deadline: Duration::from_secs(30),
            create_topics: false,
            log_interval: Duration::from_secs(10),
            processing_guarantee: ProcessingGuarantee::AtLeastOnce,
            transactional_id: String::new(),
            sweep_interval: Duration::from_secs(30),
            sweep_slices: 10,
            idle_grace: Duration::from_secs(30),
            alignment_wait: Duration::from_secs(5),
            give_up_after: default_give_up_after(),
            stall_timeout: default_stall_timeout(),
        }
    }
}

/// What `engage run` guarantees about its outputs (`run.processing_guarantee`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingGuarantee {
    /// Idempotent producer, offsets committed after delivery and changelog.
    #[default]
    AtLeastOnce,
    /// One Kafka transaction per flush.
    ExactlyOnce,
}

impl RunConfig {
    /// Checks that span this section's fields; the error names the key
    /// and what would be valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let r = self;
        if r.group_id.trim().is_empty() {
            return Err(invalid("run.group_id", "must not be empty"));
        }
        if r.sweep_interval.is_zero() {
            return Err(invalid("run.sweep_interval", "must be longer than zero"));
        }
        if r.log_interval.is_zero() {
            return Err(invalid("run.log_interval", "must be longer than zero"));
        }
        if r.sweep_slices == 0 {
            return Err(invalid("run.sweep_slices", "must be at least 1"));
        }
        if r.give_up_after.is_zero() || r.stall_timeout.is_zero() {
            return Err(invalid("run", "give_up_after and stall_timeout must be longer than zero"));
        }
        if r.max_in_flight < 1 {
            return Err(invalid("run.max_in_flight", "must be at least 1"));
        }
        Ok(())
    }
}

/// Long enough for an operator who is fixing an ACL to do it without a
/// restart, short enough that a deployment with wrong credentials fails
/// visibly (a crash loop) within a minute.
const fn default_give_up_after() -> Duration {
    Duration::from_secs(60)
}

/// Well above any pause of a healthy pipeline (a restore holds the loop in
/// the rebalance callback, not counted; a flush or a full in-flight window
/// pauses input for seconds at most), well below the 10 minutes of the
/// `EngageNotReady` alert.
const fn default_stall_timeout() -> Duration {
    Duration::from_secs(60)
}

/// 50 000 outputs of ~300 bytes plus librdkafka's per-message overhead is
/// ~30 MB: enough that a burst of slow acknowledgements does not pause
/// input (each pause throws away prefetched records, which cost a third of
/// the throughput at 10 000), well below librdkafka's own queue (100 000).
const fn default_max_in_flight() -> usize {
    50_000
}
