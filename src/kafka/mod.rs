//! Kafka plumbing shared by the pipeline and the `topics` command: client
//! configuration, the co-partitioning check, and topic creation.

pub mod changelog;
pub mod client;
pub mod diagnosis;
pub mod instance;
pub mod partitioner;
pub mod sink;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{Config, Input, TopicsConfig};
use client::ClientEvents;
use diagnosis::{Blocker, Resource};

/// Why engage cannot start or keep running against Kafka. Each variant says
/// whether retrying helps.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// An input topic is missing. Not retryable until it is created.
    #[error("input topic {topic:?} ({key}) does not exist; create it or fix {key}")]
    MissingTopic {
        /// The topic name.
        topic: String,
        /// The config key naming it.
        key: &'static str,
    },
    /// The state changelog is missing. Not retryable until it is created.
    #[error(
        "state changelog {topic:?} (state.changelog_topic) does not exist; run `engage topics create` \
         (or set run.create_topics = true), or fix state.changelog_topic"
    )]
    MissingChangelog {
        /// The topic name.
        topic: String,
    },
    /// The inputs have different partition counts, so one customer's
    /// records could land in different partition numbers. Not retryable.
    #[error(
        "input topics are not co-partitioned: {first:?} ({first_key}) has {first_partitions} partitions and \
         {topic:?} ({key}) has {partitions}; every input must have the same count and be keyed by customer_id \
         (docs/model.md, \"Events\")"
    )]
    NotCoPartitioned {
        /// The input topic that differs.
        topic: String,
        /// The config key naming it.
        key: &'static str,
        /// Its partition count.
        partitions: usize,
        /// The first input topic.
        first: String,
        /// The config key naming it.
        first_key: &'static str,
        /// Its partition count.
        first_partitions: usize,
    },
    /// The changelog's partition count differs from the inputs'. Not
    /// retryable: a customer's state must live in its input partition.
    #[error("changelog {topic:?} has {partitions} partitions but the inputs have {inputs}; they must match")]
    ChangelogPartitions {
        /// The changelog topic.
        topic: String,
        /// Its partition count.
        partitions: usize,
        /// The inputs' partition count.
        inputs: usize,
    },
    /// An error retrying will not clear: authentication, TLS, a missing
    /// ACL. Not retryable until the credentials or the ACLs are fixed.
    #[error(transparent)]
    Blocked(Blocker),
    /// The brokers could not be reached or refused a request. Retryable.
    #[error("Kafka: {context}: {source}")]
    Client {
        /// What engage was doing.
        context: String,
        /// librdkafka's error.
        source: KafkaError,
    },
}

impl KafkaSetupError {
    /// Wraps a client error with what engage was doing. A configuration
    /// error keeps the property's name but never its value, which may be a
    /// secret (librdkafka's message and rust-rdkafka's both quote it).
    pub fn client(context: impl Into<String>, source: KafkaError) -> Self {
        let source = match source {
            KafkaError::ClientConfig(code, description, key, _) => KafkaError::ClientConfig(
                code,
                crate::config::redact(&description).into_owned(),
                key,
                crate::config::REDACTED.to_string(),
            ),
            other => other,
        };
        KafkaSetupError::Client { context: context.into(), source }
    }
}

/// How long metadata and admin requests may take at start-up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// A client for metadata requests at start-up, which knows why a request
/// failed ([`MetadataClient::partition_count`]).
pub struct MetadataClient {
    consumer: BaseConsumer<ClientEvents>,
    config: Config,
}

impl MetadataClient {
    /// A metadata client on `config`'s brokers.
    pub fn new(config: &Config) -> Result<MetadataClient, KafkaSetupError> {
        let consumer = client::admin(config)
            .create_with_context(ClientEvents::new("admin"))
            .map_err(|e| KafkaSetupError::client("creating a metadata client", e))?;
        Ok(MetadataClient { consumer, config: config.clone() })
    }

    /// Partition count of `topic`, or `None` if the broker does not know it.
    /// Fails at once on an error retrying will not clear (authentication,
    /// TLS, the topic not even described), naming it, rather than timing
    /// out after `SETUP_TIMEOUT` with a bare transport failure. `operation`
    /// is what engage needs on the topic (READ, WRITE, DESCRIBE): the
    /// permission a refusal names, since each implies DESCRIBE.
    pub fn partition_count(&self, topic: &str, operation: &'static str) -> Result<Option<usize>, KafkaSetupError> {
        let deadline = std::time::Instant::now() + SETUP_TIMEOUT;
        let md = loop {
            let attempt = METADATA_ATTEMPT.min(deadline.saturating_duration_since(std::time::Instant::now()));
            match self.consumer.fetch_metadata(Some(topic), attempt) {
                Ok(md) => break md,
                Err(e) => {
                    // Serve the client's events: an authentication failure
                    // reaches it as an error event, not as the request's.
                    let reported = ClientEvents::drain(&self.consumer);
                    let blocker = reported
                        .iter()
                        .chain(std::iter::once(&(e.clone(), String::new())))
                        .find_map(|(e, why)| diagnosis::classify(&self.config, e, why, Some(topic), operation));
                    if let Some(b) = blocker {
                        return Err(KafkaSetupError::Blocked(b));
                    }
                    if std::time::Instant::now() >= deadline {
                        let why = reported.last().map(|(_, why)| why.clone()).unwrap_or_default();
                        return Err(KafkaSetupError::client(format!("fetching metadata for {topic:?}: {why}"), e));
                    }
                }
            }
        };
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else { return Ok(None) };
        match t.error().map(RDKafkaErrorCode::from) {
            Some(RDKafkaErrorCode::TopicAuthorizationFailed) => Err(KafkaSetupError::Blocked(Blocker::Authorization {
                operation,
                resource: Resource::Topic,
                name: topic.to_string(),
            })),
            Some(_) => Ok(None),
            None if t.partitions().is_empty() => Ok(None),
            None => Ok(Some(t.partitions().len())),
        }
    }
}

/// How long one metadata request may take before the client's events are
/// looked at and it is asked again (within `SETUP_TIMEOUT`).
const METADATA_ATTEMPT: Duration = Duration::from_millis(1000);

/// Checks the changelog exists with the inputs' partition count.
pub fn check_changelog(config: &Config, partitions: usize) -> Result<(), KafkaSetupError> {
    let topic = crate::kafka::changelog::topic_name(config);
    match MetadataClient::new(config)?.partition_count(&topic, "READ")? {
        None => Err(KafkaSetupError::MissingChangelog { topic }),
        Some(n) if n != partitions => {
            Err(KafkaSetupError::ChangelogPartitions { topic, partitions: n, inputs: partitions })
        }
        Some(_) => Ok(()),
    }
}

/// Checks docs/model.md "Events"'s co-partitioning: every input (the
/// erasures topic too, when set) exists with the same partition count.
/// Returns that count. `operation` is what the caller needs on the inputs
/// (READ to consume them, DESCRIBE to look at them, WRITE to produce).
pub fn check_inputs(config: &Config, operation: &'static str) -> Result<usize, KafkaSetupError> {
    let metadata = MetadataClient::new(config)?;
    let mut first: Option<(&Input, usize)> = None;
    let inputs = config.inputs();
    for input in inputs.all() {
        let key = TopicsConfig::input_key(input.kind);
        let partitions = metadata
            .partition_count(&input.name, operation)?
            .ok_or_else(|| KafkaSetupError::MissingTopic { topic: input.name.clone(), key })?;
        match first {
            None => first = Some((input, partitions)),
            Some((f, n)) if n != partitions => {
                return Err(KafkaSetupError::NotCoPartitioned {
                    topic: input.name.clone(),
                    key,
                    partitions,
                    first: f.name.clone(),
                    first_key: TopicsConfig::input_key(f.kind),
                    first_partitions: n,
                });
            }
            Some(_) => {}
        }
    }
    Ok(first.map_or(0, |(_, n)| n))
}

/// Checks that engage may READ each of `topics` (its inputs and the
/// changelog): a fetch from each, by a consumer in no group. Metadata
/// needs only DESCRIBE, so a missing READ would otherwise show only once
/// the group consumes, as a fetch error that names no topic.
pub fn check_read(config: &Config, topics: &[&str]) -> Result<(), KafkaSetupError> {
    for topic in topics {
        if let Some(blocker) = probe_read(config, topic)? {
            return Err(KafkaSetupError::Blocked(blocker));
        }
    }
    Ok(())
}

/// Whether engage may READ partition 0 of `topic`: `Some` blocker when it
/// may not. A fetch at the partition's end either is refused or reports the
/// end (`enable.partition.eof`); at most `READ_PROBE`.
pub fn probe_read(config: &Config, topic: &str) -> Result<Option<Blocker>, KafkaSetupError> {
    let consumer: BaseConsumer<ClientEvents> = client::sample_consumer(config, "probe")
        .set("enable.partition.eof", "true")
        .create_with_context(ClientEvents::new("probe"))
        .map_err(|e| KafkaSetupError::client("creating a probe consumer", e))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::End)
        .and_then(|()| consumer.assign(&tpl))
        .map_err(|e| KafkaSetupError::client(format!("assigning {topic:?} to the probe"), e))?;
    let deadline = std::time::Instant::now() + READ_PROBE;
    while std::time::Instant::now() < deadline {
        if let Some(polled) = consumer.poll(Duration::from_millis(50)) {
            match polled {
                // A fetch answered: READ is granted.
                Err(KafkaError::PartitionEOF(_)) | Ok(_) => return Ok(None),
                Err(e) => {
                    if let Some(b) = diagnosis::classify(config, &e, "", Some(topic), "READ") {
                        return Ok(Some(b));
                    }
                }
            }
        }
        for (e, why) in consumer.context().errors() {
            if e.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
                return Ok(None);
            }
            if let Some(b) = diagnosis::classify(config, &e, &why, Some(topic), "READ") {
                return Ok(Some(b));
            }
        }
    }
    // No answer in time (a slow broker): the group's own fetches will say.
    Ok(None)
}

/// How long a READ probe waits for its fetch to be answered.
const READ_PROBE: Duration = Duration::from_secs(10);

/// Creates the output topics and the compacted state changelog where they
/// do not exist yet (`engage topics create`, or `run.create_topics`). The
/// changelog gets the inputs' partition count when the inputs exist (it
/// must match them), else `topics.partitions`. Returns the names created.
pub async fn create_output_topics(config: &Config) -> Result<Vec<String>, KafkaSetupError> {
    let admin: AdminClient<ClientEvents> = client::admin(config)
        .create_with_context(ClientEvents::new("admin"))
        .map_err(|e| KafkaSetupError::client("creating an admin client", e))?;
    let t = &config.topics;
    let changelog = crate::kafka::changelog::topic_name(config);
    let changelog_partitions = match check_inputs(config, "DESCRIBE") {
        Ok(n) => n as i32,
        Err(_) => t.partitions,
    };
    let mut names = vec![&t.scores, &t.alerts, &t.dlq];
    if t.erasures_enabled() {
        names.push(&t.erasure_confirmations);
    }
    let mut topics: Vec<NewTopic<'_>> =
        names.iter().map(|n| NewTopic::new(n, t.partitions, TopicReplication::Fixed(t.replication_factor))).collect();
    topics.push(
        NewTopic::new(&changelog, changelog_partitions, TopicReplication::Fixed(t.replication_factor))
            .set("cleanup.policy", "compact"),
    );
    create_missing(config, &admin, &topics, "creating output topics").await
}

/// Creates the input topics (both event inputs, and the erasures topic when
/// set) with `partitions` partitions each (so they are co-partitioned) where
/// they do not exist yet: for local set-ups and load generation (`engage
/// loadgen --create-topics`). Returns the names created.
pub async fn create_input_topics(config: &Config, partitions: i32) -> Result<Vec<String>, KafkaSetupError> {
    let admin: AdminClient<ClientEvents> = client::admin(config)
        .create_with_context(ClientEvents::new("admin"))
        .map_err(|e| KafkaSetupError::client("creating an admin client", e))?;
    let t = &config.topics;
    let topics: Vec<NewTopic<'_>> = t
        .inputs()
        .into_iter()
        .map(|i| NewTopic::new(t.input(i), partitions, TopicReplication::Fixed(t.replication_factor)))
        .collect();
    create_missing(config, &admin, &topics, "creating input topics").await
}

/// Whether `name` exists, as a consumer's metadata shows it (a consumer
/// never makes the broker create a topic it asks about; a producer or admin
/// client can, where `auto.create.topics.enable` is on). An error reads as
/// "not known to exist": creating it then says more.
fn exists(metadata: &MetadataClient, name: &str) -> bool {
    matches!(metadata.partition_count(name, "CREATE"), Ok(Some(_)))
}

/// Creates `topics`, ignoring those that already exist.
async fn create_missing(
    config: &Config,
    admin: &AdminClient<ClientEvents>,
    topics: &[NewTopic<'_>],
    what: &str,
) -> Result<Vec<String>, KafkaSetupError> {
    // Only what the metadata does not show yet goes to the controller: a
    // start with every topic in place needs no controller round trip (one
    // may be electing a new leader, after a node died, say).
    let metadata = MetadataClient::new(config)?;
    let topics: Vec<&NewTopic<'_>> = topics.iter().filter(|t| !exists(&metadata, t.name)).collect();
    if topics.is_empty() {
        return Ok(Vec::new());
    }
    let opts = AdminOptions::new().operation_timeout(Some(SETUP_TIMEOUT));
    let results = admin.create_topics(topics, &opts).await.map_err(|e| KafkaSetupError::client(what, e))?;
    let mut created = Vec::new();
    for r in results {
        match r {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaSetupError::client(format!("creating topic {name:?}"), KafkaError::AdminOp(code)));
            }
        }
    }
    // The controller answers before every broker's metadata knows the new
    // topics; wait for them, so the checks and clients that follow see them.
    let deadline = std::time::Instant::now() + SETUP_TIMEOUT;
    for name in &created {
        while std::time::Instant::now() < deadline {
            // Without DESCRIBE on it (CREATE does not imply it), a topic
            // that exists is refused rather than unknown: visible enough.
            let visible = admin.inner().fetch_metadata(Some(name), SETUP_TIMEOUT).is_ok_and(|md| {
                md.topics().iter().any(|t| {
                    t.name() == name
                        && match t.error().map(RDKafkaErrorCode::from) {
                            None => !t.partitions().is_empty(),
                            Some(code) => code == RDKafkaErrorCode::TopicAuthorizationFailed,
                        }
                })
            });
            if visible {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(created)
}

/// Enqueues a record on a traffic producer (`engage loadgen`, the demo),
/// waiting while librdkafka's queue is full; any other error is returned
/// rather than retried forever.
pub async fn enqueue<K: ToBytes + ?Sized, P: ToBytes + ?Sized>(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut record: BaseRecord<'_, K, P>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}
