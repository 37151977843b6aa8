//! Configuration: built-in defaults (the SPEC's numbers), then a TOML file,
//! then `ENGAGE__SECTION__KEY` environment variables. Unknown keys are errors,
//! so a typo never silently falls back to a default.
//!
//! The field docs here are the user documentation; `engage.example.toml`
//! mirrors them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::engine::scoring::{Dimension, Signal};

const DAY: u64 = 86_400;

/// A configuration that cannot be used. Not retryable: fix the file or the
/// environment.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable could not be read or parsed, or
    /// named a key engage does not know.
    #[error("cannot load configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// A value is out of range, or inconsistent with another.
    #[error("invalid configuration: {key}: {message}")]
    Invalid {
        /// The dotted key at fault, e.g. `churn.p_alive_dormant`.
        key: String,
        /// What is wrong and what would be valid.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

/// The whole configuration. Each section is one table in the TOML file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// librdkafka client properties, passed through as they are.
    pub kafka: KafkaConfig,
    /// Topic names and the partition layout of the topics engage creates.
    pub topics: TopicsConfig,
    /// How `engage run` behaves: consumer group, backpressure, shutdown.
    pub run: RunConfig,
    /// Output formats.
    pub output: OutputConfig,
    /// The HTTP endpoint (Prometheus metrics).
    pub http: HttpConfig,
    /// Durable state: changelog, flushing, retention.
    pub state: StateConfig,
    /// What counts as bad input (SPEC §3), and the input formats.
    pub input: InputConfig,
    /// Dimensions, weights and publication threshold (SPEC §5, §8).
    pub scoring: ScoringConfig,
    /// Lifecycle stage thresholds (SPEC §6).
    pub lifecycle: LifecycleConfig,
    /// Churn signals and health thresholds (SPEC §7).
    pub churn: ChurnConfig,
}

impl Config {
    /// Loads defaults, then `path` (if given), then `ENGAGE__…` environment
    /// variables (`ENGAGE__CHURN__P_ALIVE_AT_RISK=0.4` sets
    /// `churn.p_alive_at_risk`), and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = path {
            if !path.exists() {
                return Err(invalid("--config", format!("file {} does not exist", path.display())));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        Self::from_figment(figment.merge(Env::prefixed("ENGAGE__").split("__")))
    }

    /// Parses a TOML document over the defaults (no environment), for tests
    /// and tools.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Cross-field checks. Every message names the key and what would be
    /// valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.topics;
        let names = [
            ("topics.clickstream", &t.clickstream),
            ("topics.purchases", &t.purchases),
            ("topics.scores", &t.scores),
            ("topics.alerts", &t.alerts),
            ("topics.dlq", &t.dlq),
        ];
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
        let r = &self.run;
        if r.group_id.trim().is_empty() {
            return Err(invalid("run.group_id", "must not be empty"));
        }
        if self.state.flush_interval.is_zero() || self.state.retention.is_zero() {
            return Err(invalid("state", "flush_interval and retention must be longer than zero"));
        }
        if r.sweep_interval.is_zero() {
            return Err(invalid("run.sweep_interval", "must be longer than zero"));
        }
        if r.sweep_slices == 0 {
            return Err(invalid("run.sweep_slices", "must be at least 1"));
        }
        if r.max_in_flight < 1 {
            return Err(invalid("run.max_in_flight", "must be at least 1"));
        }
        for reserved in [
            "group.id",
            "enable.auto.offset.store",
            "enable.auto.commit",
            "enable.idempotence",
            "partition.assignment.strategy",
            "transactional.id",
        ] {
            if self.kafka.properties.contains_key(reserved) {
                return Err(invalid(
                    format!("kafka.{reserved}"),
                    "is set by engage itself (its delivery guarantees depend on it); see engage.example.toml",
                ));
            }
        }
        if !self.http.listen.is_empty() && self.http.address().is_none() {
            return Err(invalid("http.listen", "must be host:port such as 127.0.0.1:9898 or 0.0.0.0:9898, or empty"));
        }
        let i = &self.input;
        if i.max_record_bytes == 0 {
            return Err(invalid("input.max_record_bytes", "must be at least 1"));
        }
        if !(i.max_amount.is_finite() && i.max_amount > 0.0) {
            return Err(invalid("input.max_amount", "must be a positive number"));
        }
        let s = &self.scoring;
        if !(s.min_delta.is_finite() && s.min_delta >= 0.0) {
            return Err(invalid("scoring.min_delta", "must be 0 or more (0 publishes every change)"));
        }
        let mut weight_sum = 0.0;
        for (dim, d) in s.dimensions() {
            let key = |k: &str| format!("scoring.{}.{k}", dim.as_str());
            if d.half_life.is_zero() {
                return Err(invalid(key("half_life"), "must be longer than zero"));
            }
            if !(d.saturation.is_finite() && d.saturation > 0.0) {
                return Err(invalid(key("saturation"), "must be a positive number"));
            }
            if !(d.weight.is_finite() && d.weight >= 0.0) {
                return Err(invalid(key("weight"), "must be 0 or more"));
            }
            weight_sum += d.weight;
            for (name, w) in &d.events {
                if Signal::parse(name).is_none() {
                    let valid: Vec<&str> = Signal::ALL.iter().map(|s| s.as_str()).collect();
                    return Err(invalid(key("events"), format!("unknown event {name:?}; valid: {}", valid.join(", "))));
                }
                if !w.is_finite() {
                    return Err(invalid(key(&format!("events.{name}")), "must be a finite number"));
                }
            }
        }
        if weight_sum <= 0.0 {
            return Err(invalid("scoring.*.weight", "at least one dimension needs a positive weight"));
        }
        let c = &self.churn;
        for (key, v) in [("churn.p_alive_at_risk", c.p_alive_at_risk), ("churn.p_alive_dormant", c.p_alive_dormant)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(invalid(key, "must be a probability from 0 to 1"));
            }
        }
        if c.p_alive_dormant > c.p_alive_at_risk {
            return Err(invalid("churn.p_alive_dormant", "must not exceed churn.p_alive_at_risk"));
        }
        if !(c.idle_at_risk > 0.0 && c.idle_dormant >= c.idle_at_risk) {
            return Err(invalid("churn.idle_dormant", "need 0 < churn.idle_at_risk <= churn.idle_dormant"));
        }
        if !(0.0..1.0).contains(&c.score_drop_ratio) {
            return Err(invalid("churn.score_drop_ratio", "must be from 0 to below 1"));
        }
        if !(c.overdue_gate >= 0.0 && c.overdue_gate <= c.idle_at_risk) {
            return Err(invalid("churn.overdue_gate", "must be from 0 to churn.idle_at_risk"));
        }
        if c.default_cadence.is_zero() || c.bgnbd.time_unit.is_zero() || c.score_drop_window.is_zero() {
            return Err(invalid(
                "churn",
                "default_cadence, score_drop_window and bgnbd.time_unit must be longer than zero",
            ));
        }
        let b = &c.bgnbd;
        for (key, v) in [("r", b.r), ("alpha", b.alpha), ("a", b.a), ("b", b.b)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(invalid(format!("churn.bgnbd.{key}"), "must be a positive number"));
            }
        }
        let g = &c.gamma_gamma;
        if !(g.p > 0.0 && g.q > 1.0 && g.gamma > 0.0 && g.p.is_finite() && g.q.is_finite() && g.gamma.is_finite()) {
            return Err(invalid("churn.gamma_gamma", "need p > 0, q > 1 and gamma > 0"));
        }
        let l = &self.lifecycle;
        if l.established_purchase_days == 0 || l.established_active_days == 0 {
            return Err(invalid(
                "lifecycle",
                "established_purchase_days and established_active_days must be at least 1",
            ));
        }
        Ok(())
    }
}

/// `[kafka]`: librdkafka properties for every client engage creates
/// (consumer, producer, admin), e.g. `"bootstrap.servers"`,
/// `"security.protocol"`, `"sasl.mechanism"`, `"sasl.username"`,
/// `"sasl.password"`, `"ssl.ca.location"`. Underscores in keys become dots,
/// so `ENGAGE__KAFKA__BOOTSTRAP_SERVERS` sets `bootstrap.servers` (no
/// librdkafka property has an underscore). Values of keys that look secret
/// (`password`, `secret`, `key`, `token` in the name) are never printed.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KafkaConfig {
    /// The properties, by librdkafka name.
    #[serde(deserialize_with = "kafka_properties")]
    pub properties: BTreeMap<String, String>,
}

fn kafka_properties<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Text(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }
    let raw = BTreeMap::<String, Value>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Text(s) => s,
                Value::Int(i) => i.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Bool(b) => b.to_string(),
            };
            (k.replace('_', "."), v)
        })
        .collect())
}

impl KafkaConfig {
    /// Whether a property's value must never be shown.
    pub fn is_secret(key: &str) -> bool {
        ["password", "secret", "key", "token", "jaas"].iter().any(|w| key.contains(w)) && !key.ends_with(".location")
    }

    /// A property value as it may be shown in logs and errors.
    pub fn redacted(&self, key: &str) -> Option<&str> {
        self.properties.get(key).map(|v| if Self::is_secret(key) { "[redacted]" } else { v.as_str() })
    }
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.properties.keys().map(|k| (k, self.redacted(k).unwrap_or("")))).finish()
    }
}

/// `[topics]`: the topics engage reads and writes (SPEC §8).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Input: clickstream events, keyed by customer_id.
    pub clickstream: String,
    /// Input: purchases and refunds, keyed by customer_id; must have the
    /// same partition count as `clickstream` (co-partitioned).
    pub purchases: String,
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
}

impl Default for TopicsConfig {
    /// SPEC §8 names.
    fn default() -> Self {
        TopicsConfig {
            clickstream: "clickstream".into(),
            purchases: "purchases".into(),
            scores: "engagement.scores".into(),
            alerts: "engagement.churn-alerts".into(),
            dlq: "engagement.dlq".into(),
            partitions: 6,
            replication_factor: -1,
        }
    }
}

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
    /// plus one changelog flush (a record per changed customer).
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
    /// with transactions (tansu 0.6 has none).
    pub processing_guarantee: ProcessingGuarantee,
    /// `transactional.id` for `exactly_once`; empty means
    /// `<group_id>-<host name or process id>`. Must be unique per instance.
    pub transactional_id: String,
    /// How often (wall clock) each owned partition is swept for customers
    /// who went quiet (SPEC §7: churn is the absence of events): a full pass
    /// takes this long.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// A full sweep pass is spread over this many ticks, each evaluating one
    /// slice of the customers, so no tick stalls the partition for long
    /// (about 0.3 µs per customer evaluated).
    pub sweep_slices: u32,
    /// A partition that has received nothing for this long is caught up and
    /// idle: its stream time then follows the wall clock, so quiet periods
    /// still raise alerts. SPEC §7: 30 s.
    #[serde(with = "humantime_serde")]
    pub idle_grace: Duration,
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
    /// The transactional id this instance uses in `exactly_once` mode.
    pub fn transactional_id(&self) -> String {
        if !self.transactional_id.is_empty() {
            return self.transactional_id.clone();
        }
        let instance = std::env::var("HOSTNAME").unwrap_or_else(|_| std::process::id().to_string());
        format!("{}-{instance}", self.group_id)
    }
}

/// 50 000 outputs of ~300 bytes plus librdkafka's per-message overhead is
/// ~30 MB: enough that a burst of slow acknowledgements does not pause
/// input (each pause throws away prefetched records, which cost a third of
/// the throughput at 10 000), well below librdkafka's own queue (100 000).
const fn default_max_in_flight() -> usize {
    50_000
}

/// `[state]`: the durable per-customer state (SPEC §4, §8, §9).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Compacted changelog topic; empty means `<run.group_id>.engage-state`.
    /// Must have the inputs' partition count (`engage topics create` makes
    /// it so).
    pub changelog_topic: String,
    /// How often changed customers are written to the changelog. Offsets
    /// are committed only after the flush that follows them, so this is
    /// also the commit latency; each flush first waits for outstanding
    /// outputs to be acknowledged.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Customers idle for longer are evicted from memory and tombstoned in
    /// the changelog. SPEC §4: 400 days.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Longest a partition's restore may take before engage gives up
    /// (exits non-zero rather than process without the state).
    #[serde(with = "humantime_serde")]
    pub restore_timeout: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            changelog_topic: String::new(),
            flush_interval: Duration::from_millis(500),
            retention: Duration::from_secs(400 * DAY),
            restore_timeout: Duration::from_secs(600),
        }
    }
}

/// `[http]`: the HTTP endpoint (`/metrics`, `/healthz`, `/readyz`,
/// `/v1/customers`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address. Loopback by default, so nothing is exposed unless
    /// asked; in a container use `0.0.0.0:9898`. Empty disables the server.
    pub listen: String,
    /// Serve `GET /v1/customers/{id}` and `GET /v1/customers?health=...`.
    /// Turn off where customer data must not be readable over HTTP.
    pub customer_api: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: "127.0.0.1:9898".into(), customer_api: true }
    }
}

impl HttpConfig {
    /// The parsed address, or `None` when disabled.
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        self.listen.parse().ok()
    }
}

/// `[output]`: wire formats of the output topics (SPEC §8).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// `json` (default) or `protobuf` (`engage.v1.ScoreChanged`).
    pub scores_format: crate::decode::Format,
    /// `json` (default) or `protobuf` (`engage.v1.ChurnAlert`).
    pub alerts_format: crate::decode::Format,
}

/// `[input]`: input formats, and limits that decide what is bad input
/// (SPEC §3).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// Format of clickstream records without a `content-type` header:
    /// `json` (default) or `protobuf`.
    pub clickstream_format: crate::decode::Format,
    /// Format of purchases records without a `content-type` header.
    pub purchases_format: crate::decode::Format,
    /// Records larger than this many bytes are dead-lettered (`oversized`)
    /// without being parsed. SPEC §3: 1 MiB.
    pub max_record_bytes: usize,
    /// How far ahead of the processor's clock an event time may be before it
    /// is dead-lettered (`future_timestamp`). SPEC §3: 5 minutes.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// The largest credible purchase or refund amount; above it is
    /// `invalid_amount` (a unit or currency mistake, not a sale).
    pub max_amount: f64,
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig {
            clickstream_format: crate::decode::Format::Json,
            purchases_format: crate::decode::Format::Json,
            max_record_bytes: default_max_record_bytes(),
            max_future_skew: Duration::from_secs(300),
            max_amount: default_max_amount(),
        }
    }
}

/// SPEC §3: 1 MiB, Kafka's default `message.max.bytes` ballpark.
const fn default_max_record_bytes() -> usize {
    1 << 20
}

/// Not in the SPEC: a million currency units per order is beyond any retail
/// basket, so larger values are treated as errors.
const fn default_max_amount() -> f64 {
    1_000_000.0
}

impl InputConfig {
    /// The limits in the form the decoder uses.
    pub fn limits(&self) -> crate::decode::Limits {
        crate::decode::Limits {
            max_record_bytes: self.max_record_bytes,
            max_future_skew_ms: self.max_future_skew.as_millis() as i64,
            max_amount: self.max_amount,
        }
    }
}

/// `[scoring]`: the five dimensions of SPEC §5 and when a score change is
/// published (SPEC §8).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringConfig {
    /// Publish a score change when the score moved at least this much since
    /// the last published one (stage or health changes always publish).
    /// SPEC §8: 1.0.
    pub min_delta: f64,
    /// Visiting, browsing and responding to marketing.
    pub attention: DimensionConfig,
    /// Purchases and refunds.
    pub transaction: DimensionConfig,
    /// Advocacy and content creation.
    pub social: DimensionConfig,
    /// Loyalty-programme participation.
    pub loyalty: DimensionConfig,
    /// Service interactions and ratings; centred on 50.
    pub satisfaction: DimensionConfig,
}

impl ScoringConfig {
    /// The dimension tables in [`Dimension`] order.
    pub fn dimensions(&self) -> [(Dimension, &DimensionConfig); 5] {
        [
            (Dimension::Attention, &self.attention),
            (Dimension::Transaction, &self.transaction),
            (Dimension::Social, &self.social),
            (Dimension::Loyalty, &self.loyalty),
            (Dimension::Satisfaction, &self.satisfaction),
        ]
    }
}

/// One dimension: `v` is the exponentially decayed sum of event weights;
/// its score is `100·(1−e^(−max(v,0)/saturation))` (satisfaction:
/// `50 + 50·tanh(v/saturation)`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DimensionConfig {
    /// Time for an event's contribution to halve.
    #[serde(with = "humantime_serde")]
    pub half_life: Duration,
    /// The `v` at which the dimension reaches 63 points: larger is harder to
    /// saturate.
    pub saturation: f64,
    /// This dimension's weight in the composite score (weights are
    /// normalised to sum to 1).
    pub weight: f64,
    /// Event weights. Keys are clickstream types (`page_view`, ...) and the
    /// purchase signals `purchase` (per order), `purchase_per_ln_amount`
    /// (times ln(1+amount)), `refund`, `purchase_loyalty_member`,
    /// `purchase_with_coupon`, and `feedback_per_rating_point` (times
    /// rating−3). An event may feed several dimensions. Entries merge with
    /// the defaults: set one to 0 to switch it off.
    pub events: BTreeMap<String, f64>,
}

fn dimension(half_life_days: u64, saturation: f64, weight: f64, events: &[(&str, f64)]) -> DimensionConfig {
    DimensionConfig {
        half_life: Duration::from_secs(half_life_days * DAY),
        saturation,
        weight,
        events: events.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    }
}

impl Default for ScoringConfig {
    /// The table of SPEC §5.
    fn default() -> Self {
        ScoringConfig {
            min_delta: 1.0,
            attention: dimension(
                7,
                20.0,
                0.25,
                &[
                    ("page_view", 1.0),
                    ("app_open", 1.0),
                    ("product_view", 2.0),
                    ("search", 2.0),
                    ("email_click", 2.0),
                    ("ad_click", 1.5),
                    ("wishlist_add", 3.0),
                    ("add_to_cart", 4.0),
                ],
            ),
            transaction: dimension(
                30,
                30.0,
                0.30,
                &[("purchase", 10.0), ("purchase_per_ln_amount", 2.0), ("refund", -5.0)],
            ),
            social: dimension(
                30,
                20.0,
                0.15,
                &[("social_follow", 4.0), ("share", 6.0), ("review", 8.0), ("referral", 12.0)],
            ),
            loyalty: dimension(
                60,
                15.0,
                0.15,
                &[
                    ("coupon_claim", 3.0),
                    ("loyalty_signup", 10.0),
                    ("purchase_loyalty_member", 3.0),
                    ("purchase_with_coupon", 2.0),
                ],
            ),
            satisfaction: dimension(30, 10.0, 0.15, &[("support_contact", 2.0), ("feedback_per_rating_point", 4.0)]),
        }
    }
}

/// `[lifecycle]`: the four stages of SPEC §6.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// A customer first seen within this long, with fewer than 2 purchase
    /// days, is in `initiation`. SPEC §6: 14 days.
    #[serde(with = "humantime_serde")]
    pub new_customer: Duration,
    /// Active days that make a relationship `integration` without a
    /// purchase. SPEC §6: 3.
    pub forming_active_days: u32,
    /// Purchase days that make a customer established (`intelligence`).
    /// SPEC §6: 3.
    pub established_purchase_days: u32,
    /// Or this many active days ... SPEC §6: 10.
    pub established_active_days: u32,
    /// ... spread over at least this long. SPEC §6: 90 days.
    #[serde(with = "humantime_serde")]
    pub established_span: Duration,
    /// An established customer with social ≥ this and score ≥
    /// `advocate_score` is in `value_creation`. SPEC §6: 40.
    pub advocate_social: f64,
    /// SPEC §6: 60.
    pub advocate_score: f64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            new_customer: Duration::from_secs(14 * DAY),
            forming_active_days: 3,
            established_purchase_days: 3,
            established_active_days: 10,
            established_span: Duration::from_secs(90 * DAY),
            advocate_social: 40.0,
            advocate_score: 60.0,
        }
    }
}

/// `[churn]`: the three signals and health thresholds of SPEC §7.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChurnConfig {
    /// `at_risk` when P(alive) falls below this. SPEC §7: 0.5.
    pub p_alive_at_risk: f64,
    /// `dormant` when P(alive) falls below this. SPEC §7: 0.2.
    pub p_alive_dormant: f64,
    /// `at_risk` when idle time reaches this multiple of the customer's own
    /// cadence (mean gap between active days). SPEC §7: 3.
    pub idle_at_risk: f64,
    /// `dormant` when idle time reaches this multiple of the cadence ...
    /// SPEC §7: 6.
    pub idle_dormant: f64,
    /// ... and at least this long. SPEC §7: 30 days.
    #[serde(with = "humantime_serde")]
    pub dormant_min_idle: Duration,
    /// Cadence assumed until a customer has two active days. SPEC §7: 7 days.
    #[serde(with = "humantime_serde")]
    pub default_cadence: Duration,
    /// `at_risk` when the score is at or below this fraction of its recent
    /// peak. SPEC §7: 0.5.
    pub score_drop_ratio: f64,
    /// How long a peak score counts as recent. SPEC §7: 30 days.
    #[serde(with = "humantime_serde")]
    pub score_drop_window: Duration,
    /// Peaks below this never count as a drop: a customer who was never
    /// engaged cannot disengage. Not in the SPEC; 20 points.
    pub score_drop_min_peak: f64,
    /// P(alive) and score-drop only count once the customer is overdue:
    /// idle for at least this multiple of their cadence. Without it, a
    /// customer whose P(alive) is low but who browses daily would flip
    /// between `active` (each event) and `at_risk` (each sweep), one alert
    /// per flip. 0 applies the signals unconditionally. Not in the SPEC; 1.
    pub overdue_gate: f64,
    /// The BG/NBD model behind P(alive) and expected purchases.
    pub bgnbd: BgNbdConfig,
    /// The Gamma-Gamma spend model behind expected value.
    pub gamma_gamma: GammaGammaConfig,
}

impl Default for ChurnConfig {
    fn default() -> Self {
        ChurnConfig {
            p_alive_at_risk: 0.5,
            p_alive_dormant: 0.2,
            idle_at_risk: 3.0,
            idle_dormant: 6.0,
            dormant_min_idle: Duration::from_secs(30 * DAY),
            default_cadence: Duration::from_secs(7 * DAY),
            score_drop_ratio: 0.5,
            score_drop_window: Duration::from_secs(30 * DAY),
            score_drop_min_peak: 20.0,
            overdue_gate: 1.0,
            bgnbd: BgNbdConfig::default(),
            gamma_gamma: GammaGammaConfig::default(),
        }
    }
}

/// `[churn.bgnbd]`: BG/NBD parameters (Fader, Hardie & Lee 2005). `engage
/// fit` estimates them from a purchase history.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BgNbdConfig {
    /// Shape of the purchase-rate Gamma distribution.
    pub r: f64,
    /// Scale of the purchase-rate Gamma distribution (in `time_unit`s).
    pub alpha: f64,
    /// Beta-distribution parameter of the drop-out probability.
    pub a: f64,
    /// Beta-distribution parameter of the drop-out probability.
    pub b: f64,
    /// The time unit the parameters were fitted in. CDNOW: weeks.
    #[serde(with = "humantime_serde")]
    pub time_unit: Duration,
}

impl Default for BgNbdConfig {
    /// The published CDNOW fit (SPEC §7).
    fn default() -> Self {
        BgNbdConfig { r: 0.243, alpha: 4.414, a: 0.793, b: 2.426, time_unit: Duration::from_secs(7 * DAY) }
    }
}

/// `[churn.gamma_gamma]`: Gamma-Gamma spend parameters (Fader, Hardie &
/// Lee 2005, "RFM and CLV"); `engage fit` estimates them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GammaGammaConfig {
    /// Shape of the per-transaction spend Gamma.
    pub p: f64,
    /// Shape of the Gamma over customers' spend scale; must exceed 1.
    pub q: f64,
    /// Scale of the Gamma over customers' spend scale (currency units).
    pub gamma: f64,
}

impl Default for GammaGammaConfig {
    /// The CDNOW sample fit (p 6.25, q 3.74, γ 15.44).
    fn default() -> Self {
        GammaGammaConfig { p: 6.25, q: 3.74, gamma: 15.44 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_spec() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.scoring.attention.events["add_to_cart"], 4.0);
        assert_eq!(c.scoring.transaction.half_life, Duration::from_secs(30 * DAY));
        assert_eq!(c.churn.bgnbd.r, 0.243);
        assert_eq!(c.input.max_future_skew, Duration::from_secs(300));
    }

    #[test]
    fn file_values_merge_over_defaults() {
        let c = Config::from_toml(
            "[scoring]\nmin_delta = 2.5\n[scoring.attention]\nhalf_life = \"3d\"\n[scoring.attention.events]\npage_view = 0.5\n",
        )
        .unwrap();
        assert_eq!(c.scoring.min_delta, 2.5);
        assert_eq!(c.scoring.attention.half_life, Duration::from_secs(3 * DAY));
        assert_eq!(c.scoring.attention.events["page_view"], 0.5);
        assert_eq!(c.scoring.attention.events["search"], 2.0, "untouched defaults stay");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = Config::from_toml("[churn]\np_alive_at_rsk = 0.4\n").unwrap_err().to_string();
        assert!(err.contains("p_alive_at_rsk"), "{err}");
        let err = Config::from_toml("[scoring.social.events]\nlike = 1\n").unwrap_err().to_string();
        assert!(err.contains("scoring.social.events") && err.contains("\"like\""), "{err}");
    }

    #[test]
    fn cross_field_checks_name_the_key_and_what_is_valid() {
        let err = Config::from_toml("[churn]\np_alive_dormant = 0.7\n").unwrap_err().to_string();
        assert!(err.contains("churn.p_alive_dormant") && err.contains("must not exceed"), "{err}");
        let err = Config::from_toml("[churn.bgnbd]\nalpha = -1\n").unwrap_err().to_string();
        assert!(err.contains("churn.bgnbd.alpha"), "{err}");
        let err = Config::from_toml("[scoring.loyalty]\nhalf_life = \"0s\"\n").unwrap_err().to_string();
        assert!(err.contains("scoring.loyalty.half_life"), "{err}");
    }

    #[test]
    fn kafka_properties_pass_through_and_secrets_never_print() {
        let c = Config::from_toml(
            "[kafka]\n\"bootstrap.servers\" = \"b:9092\"\nsasl_password = \"hunter2\"\n\"session.timeout.ms\" = 6000\n",
        )
        .unwrap();
        assert_eq!(c.kafka.properties["bootstrap.servers"], "b:9092");
        assert_eq!(c.kafka.properties["sasl.password"], "hunter2");
        assert_eq!(c.kafka.properties["session.timeout.ms"], "6000");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2") && shown.contains("[redacted]"), "{shown}");
        let err = Config::from_toml("[kafka]\n\"enable.idempotence\" = false\n").unwrap_err().to_string();
        assert!(err.contains("kafka.enable.idempotence"), "{err}");
    }

    #[test]
    fn topic_names_are_checked() {
        let err = Config::from_toml("[topics]\nscores = \"clickstream\"\n").unwrap_err().to_string();
        assert!(err.contains("topics.scores") && err.contains("topics.clickstream"), "{err}");
        let err = Config::from_toml("[topics]\ndlq = \"bad name\"\n").unwrap_err().to_string();
        assert!(err.contains("topics.dlq"), "{err}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engage.toml");
        std::fs::write(&path, "[churn]\nidle_at_risk = 4.0\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("ENGAGE__CHURN__IDLE_AT_RISK", "5");
            jail.set_env("ENGAGE__KAFKA__BOOTSTRAP_SERVERS", "10.0.0.1:9092");
            let c = Config::load(Some(&path)).expect("loads");
            assert_eq!(c.churn.idle_at_risk, 5.0);
            assert_eq!(c.kafka.properties["bootstrap.servers"], "10.0.0.1:9092");
            Ok(())
        });
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// The shipped reference must load and spell out the defaults exactly,
    /// so it cannot drift from the code.
    #[test]
    fn the_example_config_loads_and_matches_the_defaults() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/engage.example.toml")).unwrap();
        let example = Config::from_toml(&text).unwrap();
        let mut defaults = Config::default();
        defaults.kafka.properties.insert("bootstrap.servers".into(), "localhost:9092".into());
        let a = serde_json::to_value(&example).unwrap();
        let b = serde_json::to_value(&defaults).unwrap();
        assert_eq!(a, b);
    }

    /// The Kubernetes ConfigMap's engage.toml, with the Secret's credentials
    /// in the environment as the Deployment passes them, loads; and the
    /// password never shows in a config dump.
    #[test]
    fn the_kubernetes_config_map_loads_with_the_secret_from_the_environment() {
        let yaml =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes/configmap.yaml")).unwrap();
        let toml: String = yaml
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("engage.toml: |"))
            .skip(1)
            .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engage.toml");
        std::fs::write(&path, toml).unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("ENGAGE__KAFKA__SASL_USERNAME", "engage");
            jail.set_env("ENGAGE__KAFKA__SASL_PASSWORD", "s3cr3t-from-the-secret");
            let c = Config::load(Some(&path)).expect("the ConfigMap's config loads");
            assert_eq!(c.kafka.properties["sasl.username"], "engage");
            assert_eq!(c.kafka.properties["sasl.password"], "s3cr3t-from-the-secret");
            assert_eq!(c.kafka.properties["security.protocol"], "SASL_SSL");
            assert_eq!(c.http.listen, "0.0.0.0:9898");
            let dump = format!("{c:?}");
            assert!(!dump.contains("s3cr3t"), "{dump}");
            Ok(())
        });
    }
}
