//! `[topics]`: topic names and the layout of created topics.

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};
use crate::vocab::{Format, InputKind, Role};

/// `[topics]`: the topics engage reads and writes (docs/model.md "Guarantees").
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Input: clickstream events, keyed by customer_id.
    pub clickstream: String,
    /// Input: purchases and refunds, keyed by customer_id; must have the
    /// same partition count as `clickstream` (co-partitioned).
    pub purchases: String,
    /// Input, optional: erasure requests ("right to be forgotten"), keyed
    /// by customer_id and co-partitioned with the other inputs. Empty (the
    /// default): engage reads no erasures. docs/model.md "Erasure".
    pub erasures: String,
    /// Output: one confirmation per erasure applied, for the privacy team's
    /// audit trail (used only with `erasures`).
    pub erasure_confirmations: String,
    /// Output: score changes.
    pub scores: String,
    /// Output: churn alerts.
    pub alerts: String,
    /// Output: dead letters (original record plus error headers).
    pub dlq: String,
    /// Partitions for the output topics `engage topics create` makes. The
    /// outputs are keyed by customer_id, so any count works; matching the
    /// input keeps per-customer order simple to reason about.
    pub partitions: i32,
    /// Replication factor for created topics; -1 uses the broker default.
    pub replication_factor: i32,
    /// How the upstream producers assign the input topics' partitions to
    /// keys: `engage bootstrap` writes each customer's state into the
    /// partition this puts the customer id in, and `engage loadgen`
    /// produces with it.
    pub upstream_partitioner: UpstreamPartitioner,
}

/// The partitioner of the producers writing the input topics
/// ([`crate::kafka::partitioner`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamPartitioner {
    /// `toPositive(murmur2(key)) % partitions`: the Java client's default
    /// (also Kafka Streams and Connect), and librdkafka's `murmur2` /
    /// `murmur2_random`.
    #[default]
    Murmur2,
    /// `crc32(key) % partitions`: librdkafka's default
    /// (`consistent_random`), so that of confluent-kafka-python, -go,
    /// -dotnet, rust-rdkafka and node-rdkafka unless they set `partitioner`.
    ConsistentRandom,
}

impl UpstreamPartitioner {
    /// The configuration value naming it.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamPartitioner::Murmur2 => "murmur2",
            UpstreamPartitioner::ConsistentRandom => "consistent_random",
        }
    }
}

impl Default for TopicsConfig {
    /// docs/model.md "Guarantees" names.
    fn default() -> Self {
        TopicsConfig {
            clickstream: "clickstream".into(),
            purchases: "purchases".into(),
            erasures: String::new(),
            erasure_confirmations: "engagement.erasures-confirmed".into(),
            scores: "engagement.scores".into(),
            alerts: "engagement.churn-alerts".into(),
            dlq: "engagement.dlq".into(),
            partitions: 6,
            replication_factor: -1,
            upstream_partitioner: UpstreamPartitioner::Murmur2,
        }
    }
}

impl TopicsConfig {
    /// Whether engage reads erasure requests (`topics.erasures` is set).
    pub fn erasures_enabled(&self) -> bool {
        !self.erasures.is_empty()
    }

    /// The topic name of input `kind` (empty for the erasures when
    /// `topics.erasures` is not set).
    pub fn input(&self, kind: InputKind) -> &str {
        match kind {
            InputKind::Clickstream => &self.clickstream,
            InputKind::Purchases => &self.purchases,
            InputKind::Erasures => &self.erasures,
        }
    }

    /// The config key naming input `kind`'s topic.
    pub fn input_key(kind: InputKind) -> &'static str {
        match kind {
            InputKind::Clickstream => "topics.clickstream",
            InputKind::Purchases => "topics.purchases",
            InputKind::Erasures => "topics.erasures",
        }
    }

    /// The inputs engage reads: every event input, and the erasures when
    /// enabled.
    pub fn inputs(&self) -> Vec<InputKind> {
        InputKind::ALL.into_iter().filter(|k| k.role() == Role::Events || !self.input(*k).is_empty()).collect()
    }

    /// Checks that span this section's fields; the error names the key
    /// and what would be valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = self;
        let mut names: Vec<(&str, &str)> = t.inputs().into_iter().map(|k| (Self::input_key(k), t.input(k))).collect();
        names.extend([("topics.scores", t.scores.as_str()), ("topics.alerts", &t.alerts), ("topics.dlq", &t.dlq)]);
        if t.erasures_enabled() {
            names.push(("topics.erasure_confirmations", &t.erasure_confirmations));
        }
        for (i, (key, name)) in names.iter().enumerate() {
            if name.is_empty()
                || name.len() > 249
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(invalid(*key, "must be a Kafka topic name: 1-249 of a-z A-Z 0-9 . _ -"));
            }
            if let Some((other, _)) = names[..i].iter().find(|(_, n)| n == name) {
                return Err(invalid(*key, format!("must differ from {other} (both are {name:?})")));
            }
        }
        if t.partitions < 1 {
            return Err(invalid("topics.partitions", "must be at least 1"));
        }
        if t.replication_factor < 1 && t.replication_factor != -1 {
            return Err(invalid("topics.replication_factor", "must be at least 1, or -1 for the broker default"));
        }
        Ok(())
    }
}

/// One input topic engage reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// What it carries.
    pub kind: InputKind,
    /// The topic name.
    pub name: String,
    /// The format of its records that carry no `content-type` header.
    pub format: Format,
}

/// The input topics engage reads, event inputs first ([`crate::vocab::InputKind`]):
/// the pipeline handles every input through this list, each by its
/// [`Role`], rather than by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inputs {
    topics: Vec<Input>,
}

impl Inputs {
    /// The inputs `config` names (the erasures only when set).
    pub fn new(config: &super::Config) -> Inputs {
        let topics = config
            .topics
            .inputs()
            .into_iter()
            .map(|kind| Input { kind, name: config.topics.input(kind).to_string(), format: config.input.format(kind) })
            .collect();
        Inputs { topics }
    }

    /// Every input, event inputs first.
    pub fn all(&self) -> &[Input] {
        &self.topics
    }

    /// The event inputs.
    pub fn events(&self) -> impl Iterator<Item = &Input> {
        self.topics.iter().filter(|i| i.kind.role() == Role::Events)
    }

    /// The input a topic is, or `None` for another topic.
    pub fn of(&self, topic: &str) -> Option<&Input> {
        self.topics.iter().find(|i| i.name == topic)
    }

    /// The topic name of input `kind` (empty when it is not read).
    pub fn name(&self, kind: InputKind) -> &str {
        self.topics.iter().find(|i| i.kind == kind).map_or("", |i| i.name.as_str())
    }

    /// The topics to subscribe to.
    pub fn subscribed(&self) -> Vec<&str> {
        self.topics.iter().map(|i| i.name.as_str()).collect()
    }
}

/// In logs about a partition number: the event inputs' partition *p*, as
/// `clickstream+purchases`.
impl std::fmt::Display for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, input) in self.events().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            f.write_str(&input.name)?;
        }
        Ok(())
    }
}
