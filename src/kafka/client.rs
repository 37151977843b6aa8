//! Every librdkafka client engage creates, and the properties each is
//! created with, in one place. The `[kafka]` section of the config is
//! applied on top of these defaults, so an operator can override any of
//! them (security, SASL and TLS settings pass through the same way).

use rdkafka::ClientConfig;

use crate::config::{Config, ProcessingGuarantee};

/// How engage's producer delivers, unless `[kafka]` says otherwise:
/// idempotent, acknowledged by every in-sync replica, lingering 5 ms to
/// batch. (`scripts/bench-e2e`'s pipe baseline publishes with these too.)
pub const PRODUCER_DEFAULTS: [(&str, &str); 3] = [("enable.idempotence", "true"), ("linger.ms", "5"), ("acks", "all")];

/// How often librdkafka reports the statistics behind the lag and producer
/// queue metrics, unless `[kafka] statistics.interval.ms` says otherwise.
pub const STATISTICS_INTERVAL_MS: &str = "5000";

/// librdkafka stops fetching once its queue holds `queued.min.messages`,
/// then waits `fetch.queue.backoff.ms` (1 s by default) before looking
/// again; engage drains the queue far faster than that, so it looks again
/// after 20 ms instead of sitting idle.
const FETCH_QUEUE_BACKOFF_MS: &str = "20";

/// The input consumer's statistics also tell the main loop which input
/// partitions are caught up (event-time alignment of the two inputs), so
/// they come every second: until the first report a partition pair waits
/// for both inputs, and afterwards the ends it knows are at most this old.
/// Parsing a report takes well under a millisecond.
const INPUT_STATISTICS_INTERVAL_MS: &str = "1000";

/// A librdkafka configuration with the `[kafka]` properties applied on top
/// of `defaults`. Secret values are only ever handed to librdkafka.
pub fn client_config(config: &Config, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    for (k, v) in &config.kafka.properties {
        c.set(k, v);
    }
    c
}

/// The pipeline's consumer of both inputs, a member of `run.group_id`.
pub fn input_consumer(config: &Config) -> ClientConfig {
    let exactly_once = config.run.processing_guarantee == ProcessingGuarantee::ExactlyOnce;
    let mut c = client_config(
        config,
        &[
            ("group.id", config.run.group_id.as_str()),
            // Offsets are stored only once everything before them is
            // acknowledged downstream (`kafka::progress`).
            ("enable.auto.offset.store", "false"),
            // exactly_once commits offsets inside its transactions.
            ("enable.auto.commit", if exactly_once { "false" } else { "true" }),
            ("auto.commit.interval.ms", "1000"),
            ("auto.offset.reset", "earliest"),
            // `range` gives partition p of both co-partitioned inputs to the
            // same member; `cooperative-sticky` balances topics separately.
            ("partition.assignment.strategy", "range"),
            ("statistics.interval.ms", INPUT_STATISTICS_INTERVAL_MS),
            // How long the broker may hold a fetch when little data is
            // waiting: it bounds the latency floor, at the cost of at most
            // 100 idle fetches a second.
            ("fetch.wait.max.ms", "10"),
            ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS),
            // A smaller local queue: it is memory, and 20 ms of records is
            // far less than librdkafka's default.
            ("queued.min.messages", "20000"),
            ("queued.max.messages.kbytes", "16384"),
        ],
    );
    // With the customer API on, the member publishes where its API is
    // (crate::api::routing): the other instances read it from the group.
    if let Some(id) = crate::api::member_client_id(config) {
        c.set("client.id", id);
    }
    c
}

/// The consumer that reads one changelog partition on assignment. It
/// commits nothing: the changelog is always read from the beginning.
pub fn restore_consumer(config: &Config) -> ClientConfig {
    client_config(
        config,
        &[
            ("group.id", "engage-restore"),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "false"),
            // A restore waits on an empty fetch when the changelog ends in a
            // transaction marker: answer at once rather than after 500 ms.
            ("fetch.wait.max.ms", "10"),
            // Large fetches: a restore reads a whole partition as fast as it can.
            ("fetch.max.bytes", "52428800"),
            ("max.partition.fetch.bytes", "16777216"),
            ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS),
        ],
    )
}

/// The producer of outputs, dead letters and changelog records; with
/// `exactly_once`, transactional under `run.transactional_id`.
pub fn output_producer(config: &Config) -> ClientConfig {
    let defaults = [PRODUCER_DEFAULTS.as_slice(), &[("statistics.interval.ms", STATISTICS_INTERVAL_MS)]].concat();
    let mut client = client_config(config, &defaults);
    if config.run.processing_guarantee == ProcessingGuarantee::ExactlyOnce {
        client.set("transactional.id", config.run.transactional_id());
    }
    client
}

/// `engage bootstrap`'s producer of customer states into the changelog:
/// idempotent like the output producer but never transactional (a
/// `transactional.id` would fence a running instance), and batching large:
/// it writes a whole population at once.
pub fn bootstrap_producer(config: &Config) -> ClientConfig {
    let batching = [("linger.ms", "50"), ("batch.size", "1000000"), ("queue.buffering.max.messages", "1000000")];
    client_config(config, &[PRODUCER_DEFAULTS.as_slice(), &batching].concat())
}

/// A consumer outside any group (it commits nothing) that reads a few
/// records of the inputs for `engage bootstrap`'s partitioner check.
pub fn sample_consumer(config: &Config) -> ClientConfig {
    client_config(config, &[("group.id", "engage-bootstrap-check"), ("enable.auto.commit", "false")])
}

/// `engage loadgen`'s producer at `rate` events/s: paced traffic is
/// latency-sensitive and sends at once; flat-out traffic (`None`) batches.
pub fn load_producer(config: &Config, rate: Option<f64>) -> ClientConfig {
    let linger = if rate.is_some() { "1" } else { "10" };
    client_config(
        config,
        &[
            ("linger.ms", linger),
            ("queue.buffering.max.messages", "1000000"),
            ("compression.type", "none"),
            // Keys land where `topics.upstream_partitioner` says upstream
            // producers put them, so a bootstrap matches the traffic.
            ("partitioner", config.topics.upstream_partitioner.librdkafka_name()),
        ],
    )
}

/// A short-lived client for metadata and topic administration.
pub fn admin(config: &Config) -> ClientConfig {
    client_config(config, &[])
}

/// The customer API's observer of `run.group_id`: it describes the group
/// (members, their advertised URLs, their assignments) and reads its
/// committed offsets. It never subscribes, so it never joins the group or
/// commits, and needs no ACL beyond the pipeline's (READ on the group
/// implies the DESCRIBE that describing it takes).
pub fn group_observer(config: &Config) -> ClientConfig {
    client_config(
        config,
        &[("group.id", config.run.group_id.as_str()), ("enable.auto.commit", "false"), ("client.id", "engage-api")],
    )
}
