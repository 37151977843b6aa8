//! Every librdkafka client engage creates, and the properties each is
//! created with, in one place. The `[kafka]` section of the config is
//! applied on top of these defaults, so an operator can override any of
//! them (security, SASL and TLS settings pass through the same way).

use std::sync::Mutex;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, ClientContext};

use crate::config::{Config, ProcessingGuarantee, redact};
use crate::telemetry::events::{ClientError, LibrdkafkaLog};

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
    if let Some(id) = member_client_id(config) {
        c.set("client.id", id);
    }
    c
}

/// The input consumer's `client.id` when the API is on: the configured one
/// (`[kafka] client.id`, else `engage`), `@`, and this instance's
/// advertised URL, which the other instances read from the group's
/// description.
pub fn member_client_id(config: &Config) -> Option<String> {
    if !config.api.enabled() || config.api.advertised_url.is_empty() {
        return None;
    }
    let base = config.kafka.properties.get("client.id").map_or("engage", String::as_str);
    Some(format!("{base}@{}", config.api.advertised_url.trim_end_matches('/')))
}

/// The group id of an engage client that assigns its partitions itself
/// and commits nothing (`<run.group_id>.<purpose>`). librdkafka needs one to
/// assign partitions, and looks its coordinator up (DESCRIBE on the group);
/// under `run.group_id`'s prefix, the group ACL engage already has covers it.
pub fn helper_group(config: &Config, purpose: &str) -> String {
    format!("{}.{purpose}", config.run.group_id)
}

/// The consumer that reads one changelog partition on assignment. It
/// assigns the partition itself and commits nothing (the changelog is
/// always read from the beginning); its group is `<run.group_id>.restore`.
pub fn restore_consumer(config: &Config) -> ClientConfig {
    let group = helper_group(config, "restore");
    client_config(
        config,
        &[
            ("group.id", group.as_str()),
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

/// How long a transaction may stay open before the broker aborts it, unless
/// `[kafka] "transaction.timeout.ms"` says otherwise: Kafka Streams' value
/// under exactly-once. A crashed instance's open transaction holds
/// `read_committed` consumers back at most this long when no restart fences
/// it sooner; the cost is that a transaction (one flush) must complete
/// within it, and librdkafka gives each record as long to be acknowledged
/// (`message.timeout.ms` follows it), so a broker unreachable for longer
/// makes engage exit (non-zero, nothing committed past the failure) and a
/// restart resume.
pub const TRANSACTION_TIMEOUT_MS: &str = "10000";

/// The producer of outputs, dead letters and changelog records; with a
/// `transactional_id` (`exactly_once`), transactional.
pub fn output_producer(config: &Config, transactional_id: Option<&str>) -> ClientConfig {
    let mut defaults = [PRODUCER_DEFAULTS.as_slice(), &[("statistics.interval.ms", STATISTICS_INTERVAL_MS)]].concat();
    if let Some(id) = transactional_id {
        defaults.extend([("transactional.id", id), ("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS)]);
    }
    client_config(config, &defaults)
}

/// `engage bootstrap`'s producer of customer states into the changelog:
/// idempotent like the output producer but never transactional (a
/// `transactional.id` would fence a running instance), and batching large:
/// it writes a whole population at once.
pub fn bootstrap_producer(config: &Config) -> ClientConfig {
    let batching = [("linger.ms", "50"), ("batch.size", "1000000"), ("queue.buffering.max.messages", "1000000")];
    client_config(config, &[PRODUCER_DEFAULTS.as_slice(), &batching].concat())
}

/// A consumer that assigns partitions itself and commits nothing, in group
/// `<run.group_id>.<purpose>`: it reads a few records of the inputs for
/// `engage bootstrap`'s partitioner check, or probes that engage may READ a
/// topic.
pub fn sample_consumer(config: &Config, purpose: &str) -> ClientConfig {
    let group = helper_group(config, purpose);
    client_config(config, &[("group.id", group.as_str()), ("enable.auto.commit", "false")])
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

/// Forwards one of librdkafka's log lines, its secrets redacted: warnings
/// and worse as a warning with a metric (the librdkafka_log metric: librdkafka logs
/// passing trouble at error level too, and engage itself says what is an
/// error), the rest at debug level.
pub fn forward_log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    let message = redact(message);
    // "Configuration property X is a consumer property and will be ignored
    // by this producer instance": `[kafka]` reaches every client on purpose.
    if facility == "CONFWARN" {
        tracing::debug!(target: "librdkafka", facility, "{message}");
        return;
    }
    let name = match level {
        RDKafkaLogLevel::Emerg => "emerg",
        RDKafkaLogLevel::Alert => "alert",
        RDKafkaLogLevel::Critical => "critical",
        RDKafkaLogLevel::Error => "error",
        RDKafkaLogLevel::Warning => "warning",
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
            tracing::debug!(target: "librdkafka", facility, "{message}");
            return;
        }
    };
    LibrdkafkaLog { level: name, facility, message: &message }.emit();
}

/// The context of engage's short-lived clients (metadata, administration,
/// restores, sampling): librdkafka's logs forwarded with secrets redacted,
/// and its errors kept, so a caller whose request failed can ask why
/// ([`ClientEvents::errors`]): an authentication failure, say, reaches a
/// client only as an error event, while the request itself just times out.
#[derive(Debug)]
pub struct ClientEvents {
    /// Which client, for the log and the metric.
    name: &'static str,
    errors: Mutex<Vec<(KafkaError, String)>>,
}

impl ClientEvents {
    /// The context of client `name`.
    pub fn new(name: &'static str) -> ClientEvents {
        ClientEvents { name, errors: Mutex::new(Vec::new()) }
    }

    /// The errors reported so far (librdkafka's error and its reason,
    /// redacted), oldest first; taken.
    pub fn errors(&self) -> Vec<(KafkaError, String)> {
        std::mem::take(&mut *crate::sync::lock(&self.errors))
    }

    /// Serves `consumer`'s pending events without waiting, and returns
    /// every error among them and every error reported through the context
    /// since the last call: a consumer learns of an authentication failure,
    /// say, only from its events.
    pub fn drain(consumer: &BaseConsumer<ClientEvents>) -> Vec<(KafkaError, String)> {
        let mut errors = Vec::new();
        while let Some(polled) = consumer.poll(std::time::Duration::ZERO) {
            if let Err(e) = polled {
                errors.push((e, String::new()));
            }
        }
        errors.extend(consumer.context().errors());
        errors
    }
}

impl ClientContext for ClientEvents {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        forward_log(level, facility, message);
        // A client in no group hears of a refused login or handshake only
        // from this log line (measured: its error event never arrives while
        // it waits for metadata): keep it as the error it is.
        if facility == "FAIL" {
            let code = if message.contains("SASL authentication error") {
                Some(rdkafka::types::RDKafkaErrorCode::Authentication)
            } else if message.contains("SSL") {
                Some(rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure)
            } else {
                None
            };
            if let Some(code) = code {
                crate::sync::lock(&self.errors).push((KafkaError::Global(code), redact(message).into_owned()));
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let reason = redact(reason).into_owned();
        // The end of a partition is news, not an error (a probe waits for it).
        if error.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            ClientError { client: self.name, error: &error, reason: &reason }.emit();
        }
        crate::sync::lock(&self.errors).push((error, reason));
    }

    /// Short-lived clients' statistics are not used (`[kafka]
    /// statistics.interval.ms` reaches them too).
    fn stats(&self, _: rdkafka::Statistics) {}
}

impl ConsumerContext for ClientEvents {}

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
