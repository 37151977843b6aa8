//! `engage bootstrap`: customer state from a warehouse's history, written
//! into the state changelog so `engage run` starts from it
//! (docs/model.md "Starting from history").
//!
//! 1. Refuses while members of `run.group_id` are consuming, or while the
//!    changelog holds records, unless forced: a running instance would
//!    not see the new state, and existing state would be mixed with it.
//! 2. Checks `topics.upstream_partitioner` against a sample of the input
//!    topics' records (a warning with counts when they disagree).
//! 3. Runs the engine over the files exactly as `engage replay` does (its
//!    outputs in the output directory), up to the as-of time.
//! 4. Writes every customer's state, a normal `engage.v1.CustomerState`
//!    with no input offsets applied, to the changelog partition the
//!    upstream partitioner puts the customer id in; then, once those are
//!    acknowledged, one bootstrap marker per partition carrying the as-of
//!    time ([`crate::codec::state::BOOTSTRAP_KEY`]). Restoring a
//!    partition reads the marker back, and `engage run` takes input events
//!    at or before the as-of as already applied.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use serde::Serialize;
use tracing::{info, warn};

use crate::clock::format_time;
use crate::codec::state::{BOOTSTRAP_KEY, encode_bootstrap_marker, state_to_proto};
use crate::config::{Config, UpstreamPartitioner};
use crate::engine::store::Partition;
use crate::history::{ReplayError, ReplayOptions, ReplaySummary, replay_keeping_state};
use crate::kafka::changelog::topic_name;
use crate::kafka::client::ClientEvents;
use crate::kafka::{KafkaSetupError, check_changelog, check_inputs, client};

/// What to bootstrap from, and how.
#[derive(Clone, Debug)]
pub struct BootstrapOptions {
    /// Event files, JSONL or CSV.
    pub inputs: Vec<PathBuf>,
    /// The as-of time (epoch ms); default: the last event time.
    pub as_of: Option<i64>,
    /// Where the replay's outputs go (scores, alerts, dead letters, states).
    pub out_dir: PathBuf,
    /// Event-time interval between churn sweeps, ms.
    pub sweep_every_ms: i64,
    /// Write even while the group is consuming or the changelog holds state.
    pub force: bool,
    /// Records read from the end of each input partition for the
    /// partitioner check (0: no check).
    pub sample_per_partition: usize,
}

/// What a bootstrap did (printed as JSON).
#[derive(Clone, Debug, Serialize)]
pub struct BootstrapSummary {
    /// The replay of the history.
    pub replay: ReplaySummary,
    /// The as-of time, epoch ms: live events at or before it are skipped.
    pub as_of: i64,
    /// The as-of time, RFC 3339.
    pub as_of_time: String,
    /// The changelog written.
    pub changelog: String,
    /// Its partition count (the inputs').
    pub partitions: i32,
    /// The partitioner the customers were placed with.
    pub partitioner: UpstreamPartitioner,
    /// Customer states written, in all and per partition.
    pub customers_written: u64,
    /// Customer states written to each partition.
    pub customers_by_partition: Vec<u64>,
    /// Bytes of keys and values written.
    pub bytes_written: u64,
    /// Time from the first state sent to the last acknowledged, seconds.
    pub write_seconds: f64,
    /// Customer states written per second.
    pub customers_per_second: f64,
    /// The partitioner check on the inputs' records.
    pub partitioner_check: PartitionerCheck,
    /// The refusals `--force` overrode.
    pub forced: Vec<String>,
}

/// How many sampled input records sit in the partition the configured
/// partitioner (and the other one) puts their key in.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PartitionerCheck {
    /// Keyed records read.
    pub sampled: u64,
    /// In the partition `topics.upstream_partitioner` gives their key.
    pub agree: u64,
    /// Elsewhere.
    pub disagree: u64,
    /// Of the sampled, how many the other partitioner places right.
    pub other_agrees: u64,
}

/// Why a bootstrap did not write. Retryable only where the variant says.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The history could not be read (see [`ReplayError`]).
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// Kafka could not be reached (retryable), or the topics are wrong
    /// (see [`KafkaSetupError`]).
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    /// Members of the group are consuming: they would not see the state.
    /// Retryable once they are stopped.
    #[error(
        "consumer group {group:?} has {members} active member(s): stop every `engage run` of the group first \
         (or pass --force, and restart them afterwards so they restore the bootstrapped state)"
    )]
    GroupActive {
        /// `run.group_id`.
        group: String,
        /// Members seen.
        members: usize,
    },
    /// The changelog already holds records (state, or an earlier bootstrap).
    /// Not retryable as it is: use a fresh group or changelog, or `--force`.
    #[error(
        "changelog {topic:?} already holds {records} record(s): bootstrap starts a group from nothing. Use a new \
         run.group_id (or state.changelog_topic), or pass --force to write over it (customers in the history \
         are replaced, others are kept)"
    )]
    ChangelogHoldsState {
        /// The changelog.
        topic: String,
        /// Records between its low and high watermarks.
        records: i64,
    },
    /// The files hold no usable event. Not retryable with these files.
    #[error("the input files hold no usable event up to the as-of time: nothing to bootstrap")]
    NoEvents,
    /// Some records were not acknowledged. Retryable (with --force: the
    /// changelog now holds part of the states).
    #[error(
        "{failed} changelog record(s) not delivered, e.g. {first}; the changelog may now hold states without \
         their as-of marker: do not start engage run on it (it would apply the live events up to the as-of a \
         second time); run the bootstrap again with --force"
    )]
    Delivery {
        /// How many.
        failed: u64,
        /// The first error.
        first: String,
    },
}

/// How long admin and watermark requests may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs a bootstrap (see the module docs). Blocks.
pub fn bootstrap(config: &Config, opts: &BootstrapOptions) -> Result<BootstrapSummary, BootstrapError> {
    let partitions = check_inputs(config, "READ")? as i32;
    check_changelog(config, partitions as usize)?;
    let topic = topic_name(config);
    let mut forced = refusals(config, &topic, partitions, opts.force)?;
    let check = check_partitioner(config, partitions, opts.sample_per_partition)?;

    let replay_opts = ReplayOptions {
        inputs: opts.inputs.clone(),
        as_of: opts.as_of,
        out_dir: opts.out_dir.clone(),
        sweep_every_ms: opts.sweep_every_ms,
    };
    let replayed = replay_keeping_state(config, &replay_opts)?;
    let as_of = replayed.summary.as_of.ok_or(BootstrapError::NoEvents)?;
    info!(customers = replayed.customers.len(), as_of = %format_time(as_of), "history replayed; writing the changelog");
    // The group may have started while the history was read.
    for f in refusals(config, &topic, partitions, opts.force)? {
        if !forced.contains(&f) {
            forced.push(f);
        }
    }
    let partitioner = config.topics.upstream_partitioner;
    let written = write_states(config, &topic, partitions, partitioner, &replayed.customers, as_of)?;
    let seconds = written.elapsed.as_secs_f64();
    Ok(BootstrapSummary {
        replay: replayed.summary,
        as_of,
        as_of_time: format_time(as_of),
        changelog: topic,
        partitions,
        partitioner,
        customers_written: written.by_partition.iter().sum(),
        customers_per_second: written.by_partition.iter().sum::<u64>() as f64 / seconds.max(1e-9),
        customers_by_partition: written.by_partition,
        bytes_written: written.bytes,
        write_seconds: seconds,
        partitioner_check: check,
        forced,
    })
}

/// The refusals that apply (group consuming, changelog not empty): an
/// error without `force`, else their descriptions.
fn refusals(config: &Config, topic: &str, partitions: i32, force: bool) -> Result<Vec<String>, BootstrapError> {
    let admin: BaseConsumer<ClientEvents> = client::admin(config)
        .create_with_context(ClientEvents::new("admin"))
        .map_err(|e| KafkaSetupError::client("creating an admin client", e))?;
    let group = &config.run.group_id;
    let list = admin
        .fetch_group_list(Some(group), REQUEST_TIMEOUT)
        .map_err(|e| KafkaSetupError::client(format!("describing consumer group {group:?}"), e))?;
    let members: usize = list.groups().iter().filter(|g| g.name() == group).map(|g| g.members().len()).sum();
    let mut records = 0;
    for p in 0..partitions {
        let (low, high) = admin.fetch_watermarks(topic, p, REQUEST_TIMEOUT).map_err(|e| {
            KafkaSetupError::client(format!("reading the ends of changelog {topic:?} partition {p}"), e)
        })?;
        records += (high - low).max(0);
    }
    let mut found = Vec::new();
    if members > 0 {
        let e = BootstrapError::GroupActive { group: group.clone(), members };
        if !force {
            return Err(e);
        }
        found.push(e.to_string());
    }
    if records > 0 {
        let e = BootstrapError::ChangelogHoldsState { topic: topic.to_string(), records };
        if !force {
            return Err(e);
        }
        found.push(e.to_string());
    }
    for f in &found {
        warn!("--force: {f}");
    }
    Ok(found)
}

/// Reads up to `per_partition` keyed records from the end of every input
/// partition and counts those in the partition the configured upstream
/// partitioner gives their key; warns when any is not.
pub fn check_partitioner(
    config: &Config,
    partitions: i32,
    per_partition: usize,
) -> Result<PartitionerCheck, BootstrapError> {
    let mut check = PartitionerCheck::default();
    if per_partition == 0 {
        return Ok(check);
    }
    let consumer: BaseConsumer<ClientEvents> = client::sample_consumer(config, "bootstrap-check")
        .create_with_context(ClientEvents::new("sample"))
        .map_err(|e| KafkaSetupError::client("creating the partitioner-check consumer", e))?;
    let configured = config.topics.upstream_partitioner;
    let other = match configured {
        UpstreamPartitioner::Murmur2 => UpstreamPartitioner::ConsistentRandom,
        UpstreamPartitioner::ConsistentRandom => UpstreamPartitioner::Murmur2,
    };
    // Each partition is read from `per_partition` records before its end
    // up to the end (as it was when asked).
    let mut tpl = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::<(String, i32), i64>::new();
    for topic in [&config.topics.clickstream, &config.topics.purchases] {
        for p in 0..partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, REQUEST_TIMEOUT)
                .map_err(|e| KafkaSetupError::client(format!("reading the ends of {topic:?} partition {p}"), e))?;
            if high > low {
                let from = (high - per_partition as i64).max(low);
                tpl.add_partition_offset(topic, p, Offset::Offset(from))
                    .map_err(|e| KafkaSetupError::client("assigning the inputs", e))?;
                ends.insert((topic.to_string(), p), high);
            }
        }
    }
    if ends.is_empty() {
        info!("the input topics are empty: no record to check topics.upstream_partitioner against");
        return Ok(check);
    }
    consumer.assign(&tpl).map_err(|e| KafkaSetupError::client("assigning the inputs", e))?;
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    while !ends.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let at = (m.topic().to_string(), m.partition());
                let Some(&end) = ends.get(&at) else { continue };
                if m.offset() >= end - 1 {
                    ends.remove(&at);
                }
                if m.offset() >= end {
                    continue;
                }
                let Some(key) = m.key().filter(|k| !k.is_empty()) else { continue };
                check.sampled += 1;
                if configured.partition(key, partitions) == m.partition() {
                    check.agree += 1;
                } else {
                    check.disagree += 1;
                }
                if other.partition(key, partitions) == m.partition() {
                    check.other_agrees += 1;
                }
            }
            Some(Err(e)) => warn!(error = %e, "reading the inputs for the partitioner check"),
            None => {}
        }
    }
    if check.disagree > 0 {
        warn!(
            sampled = check.sampled,
            disagree = check.disagree,
            configured = ?configured,
            other = ?other,
            other_agrees = check.other_agrees,
            "input records are not in the partition topics.upstream_partitioner puts their key in: customers \
             would be restored where their events are not read. Set topics.upstream_partitioner to the \
             upstream producers' partitioner (the other one places {} of {} right)",
            check.other_agrees,
            check.sampled
        );
    } else {
        info!(sampled = check.sampled, partitioner = ?configured, "input records agree with topics.upstream_partitioner");
    }
    Ok(check)
}

/// What [`write_states`] wrote.
pub struct Written {
    /// Customer states per partition.
    pub by_partition: Vec<u64>,
    /// Bytes of keys and values.
    pub bytes: u64,
    /// From the first state sent to the last acknowledged.
    pub elapsed: Duration,
}

/// Counts delivery failures.
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    first: std::sync::Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            crate::sync::lock(&self.first).get_or_insert_with(|| e.to_string());
        }
    }
}

/// Writes every customer of `customers` to changelog `topic`, in the
/// partition `partitioner` gives its id among `partitions`, then (once
/// those are acknowledged) each partition's bootstrap marker with `as_of`.
pub fn write_states(
    config: &Config,
    topic: &str,
    partitions: i32,
    partitioner: UpstreamPartitioner,
    customers: &Partition,
    as_of: i64,
) -> Result<Written, BootstrapError> {
    let producer: ThreadedProducer<Deliveries> = client::bootstrap_producer(config)
        .create_with_context(Deliveries::default())
        .map_err(|e| KafkaSetupError::client("creating the changelog producer", e))?;
    let mut by_partition = vec![0u64; partitions.max(1) as usize];
    let mut bytes = 0u64;
    let start = Instant::now();
    let mut value = Vec::new();
    // The first error a send returned; the rest are not sent.
    let mut refused: Option<KafkaError> = None;
    customers.for_each(|id, state| {
        if refused.is_some() {
            return;
        }
        let p = partitioner.partition(id.as_bytes(), partitions);
        value.clear();
        // Encoding into a Vec cannot fail.
        let _ = state_to_proto(state, id).encode(&mut value);
        by_partition[p as usize] += 1;
        bytes += (id.len() + value.len()) as u64;
        let mut record = BaseRecord::to(topic).key(id).payload(&value[..]).partition(p);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                // The producer's queue is full: wait for deliveries to drain it.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    refused = Some(e);
                    break;
                }
            }
        }
    });
    if let Some(e) = refused {
        return Err(KafkaSetupError::client("writing customer states to the changelog", e).into());
    }
    flush(&producer)?;
    let elapsed = start.elapsed();
    for p in 0..partitions {
        let marker = encode_bootstrap_marker(as_of, by_partition[p as usize], partitioner.as_str());
        let record = BaseRecord::to(topic).key(BOOTSTRAP_KEY).payload(&marker[..]).partition(p);
        producer.send(record).map_err(|(e, _)| KafkaSetupError::client("writing a bootstrap marker", e))?;
    }
    flush(&producer)?;
    Ok(Written { by_partition, bytes, elapsed })
}

/// The config name of a partitioner.
/// Waits for every record to be acknowledged; fails on any delivery error.
fn flush(producer: &ThreadedProducer<Deliveries>) -> Result<(), BootstrapError> {
    producer
        .flush(Duration::from_secs(300))
        .map_err(|e| KafkaSetupError::client("waiting for the changelog records' acknowledgement", e))?;
    let ctx = producer.context();
    match ctx.failed.load(Ordering::Relaxed) {
        0 => Ok(()),
        failed => {
            Err(BootstrapError::Delivery { failed, first: crate::sync::lock(&ctx.first).clone().unwrap_or_default() })
        }
    }
}

/// `engage bootstrap`'s command line.
#[derive(clap::Args)]
pub struct Args {
    /// Configuration file (brokers, topics, group, upstream partitioner).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A file of events from either topic: JSONL, or CSV (`*.csv`) with a
    /// header row naming the event fields. Repeat for several.
    #[arg(long = "input", required = true)]
    inputs: Vec<PathBuf>,
    /// Apply events up to this RFC 3339 time (default: the last event
    /// time). The history must be complete up to it.
    #[arg(long)]
    as_of: Option<String>,
    /// Directory for the replay's outputs (scores, alerts, dead letters,
    /// states).
    #[arg(long, default_value = "bootstrap-out")]
    out: PathBuf,
    /// Event time between churn sweeps (e.g. 1h, 1d).
    #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
    sweep_every: Duration,
    /// Write even while the group is consuming or the changelog holds state.
    #[arg(long)]
    force: bool,
    /// Records read from the end of each input partition to check
    /// topics.upstream_partitioner (0: no check).
    #[arg(long, default_value_t = 200)]
    check_records: usize,
}

/// Runs `engage bootstrap`: prints a JSON summary, and one line on stderr.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let opts = BootstrapOptions {
        inputs: args.inputs,
        as_of: args.as_of.as_deref().map(crate::clock::parse_time).transpose().context("--as-of")?,
        out_dir: args.out,
        sweep_every_ms: args.sweep_every.as_millis() as i64,
        force: args.force,
        sample_per_partition: args.check_records,
    };
    if config.run.create_topics {
        crate::kafka::create_output_topics(&config).await?;
    }
    let summary = tokio::task::block_in_place(|| bootstrap(&config, &opts))?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    eprintln!(
        "bootstrap: {} customers as of {} written to {} ({} partitions, {:?} partitioner) at {:.0} customers/s",
        summary.customers_written,
        summary.as_of_time,
        summary.changelog,
        summary.partitions,
        summary.partitioner,
        summary.customers_per_second
    );
    Ok(())
}
