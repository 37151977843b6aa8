//! Configuration: built-in defaults (the numbers of docs/model.md), then a TOML file,
//! then `ENGAGE__SECTION__KEY` environment variables. Unknown keys are errors,
//! so a typo never silently falls back to a default.
//!
//! The field docs here are the user documentation; `engage.example.toml`
//! mirrors them.

mod api;
mod churn;
mod churn_model;
mod http;
mod input;
mod kafka;
mod lifecycle;
mod output;
mod run;
mod scoring;
mod state;
mod topics;
#[cfg(test)]
mod validation_tests;

pub use api::ApiConfig;
pub use churn::{BgNbdConfig, ChurnConfig, GammaGammaConfig, HealthFrom};
pub use churn_model::{CalibrationConfig, PurchaseModelConfig, TrainingSummary};
pub use http::HttpConfig;
pub use input::InputConfig;
pub use kafka::{KafkaConfig, REDACTED, is_secret_key, redact};
pub use lifecycle::LifecycleConfig;
pub use output::OutputConfig;
pub use run::{ProcessingGuarantee, RunConfig};
pub use scoring::{DimensionConfig, ScoringConfig};
pub use state::StateConfig;
pub use topics::{Input, Inputs, TopicsConfig, UpstreamPartitioner};

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use serde::{Deserialize, Serialize};

const DAY: u64 = 86_400;

/// Environment variables that set `[kafka]` properties, verbatim.
const KAFKA_ENV_PREFIX: &str = "ENGAGE__KAFKA__";

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
    /// The ops endpoint (Prometheus metrics, probes).
    pub http: HttpConfig,
    /// The customer API: its listener, tokens, TLS and routing.
    pub api: ApiConfig,
    /// Durable state: changelog, flushing, retention.
    pub state: StateConfig,
    /// What counts as bad input (docs/model.md "Events"), and the input formats.
    pub input: InputConfig,
    /// Dimensions, weights and publication threshold (docs/model.md "Dimensions and the score").
    pub scoring: ScoringConfig,
    /// Lifecycle stage thresholds (docs/model.md "Lifecycle stages").
    pub lifecycle: LifecycleConfig,
    /// Churn signals and health thresholds (docs/model.md "Health").
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
        // `[kafka]` values are librdkafka's strings, taken verbatim: figment
        // would read `0123456789` as a number and `true` as a boolean.
        let kafka_env: std::collections::BTreeMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| {
                let key = k.to_str()?.strip_prefix(KAFKA_ENV_PREFIX)?.to_ascii_lowercase();
                Some((key, v.into_string().ok()?))
            })
            .collect();
        let env = Env::prefixed("ENGAGE__").split("__").filter(|k| !k.as_str().starts_with("kafka"));
        Self::from_figment(figment.merge(env).merge(Serialized::default("kafka", kafka_env)))
    }

    /// Parses a TOML document over the defaults (no environment), for tests
    /// and tools.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let mut config: Config = figment.extract().map_err(Box::new)?;
        config.kafka.read_files()?;
        config.validate()?;
        Ok(config)
    }

    /// The input topics engage reads, with their formats.
    pub fn inputs(&self) -> Inputs {
        Inputs::new(self)
    }

    /// Cross-field checks. Every message names the key and what would be
    /// valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.kafka.validate()?;
        self.topics.validate()?;
        self.run.validate()?;
        self.state.validate()?;
        self.http.validate()?;
        self.api.validate()?;
        // Port 0 on both is two ports the system picks, not one.
        let api = self.api.address().filter(|a| a.port() != 0);
        if self.api.enabled() && api.is_some() && api == self.http.address() {
            return Err(invalid(
                "api.listen",
                "must differ from http.listen: customer data and ops get separate ports",
            ));
        }
        self.input.validate()?;
        self.scoring.validate()?;
        self.churn.validate()?;
        self.lifecycle.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
    // figment::Jail's closure returns figment's own (large) error type.
    #[allow(clippy::result_large_err)]
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
mod secret_tests {
    use super::*;

    /// Awkward passwords as a Kubernetes Secret would hand them over.
    const AWKWARD: [&str; 8] = ["0123456789", "true", "1e5", "[x]", "\"quoted\"", "two words", "a#b", "{x = 1}"];

    #[test]
    // figment::Jail's closure returns figment's own (large) error type.
    #[allow(clippy::result_large_err)]
    fn kafka_values_from_the_environment_are_taken_verbatim() {
        for secret in AWKWARD {
            figment::Jail::expect_with(|jail| {
                jail.set_env("ENGAGE__KAFKA__SASL_PASSWORD", secret);
                jail.set_env("ENGAGE__KAFKA__SESSION_TIMEOUT_MS", "045000");
                jail.set_env("ENGAGE__RUN__MAX_IN_FLIGHT", "1000");
                let c = Config::load(None).expect("loads");
                assert_eq!(c.kafka.properties["sasl.password"], secret);
                assert_eq!(c.kafka.properties["session.timeout.ms"], "045000");
                assert_eq!(c.run.max_in_flight, 1000, "other sections still parse numbers");
                assert!(!format!("{c:?}").contains(secret) || secret == "true", "{c:?}");
                Ok(())
            });
        }
    }

    #[test]
    fn a_value_can_be_read_from_a_file_and_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret-from-a-file\n").unwrap();
        let text = format!("[kafka]\n\"sasl.password\" = {{ file = {:?} }}\n", path.display().to_string());
        let c = Config::from_toml(&text).unwrap();
        assert_eq!(c.kafka.properties["sasl.password"], "s3cret-from-a-file", "one trailing newline stripped");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(redact("auth failed for s3cret-from-a-file!"), "auth failed for [redacted]!");
        // Any value from a file is secret, whatever its key.
        std::fs::write(&path, "plain\n\n").unwrap();
        let text = format!("[kafka]\n\"ssl.certificate.pem\" = {{ file = {:?} }}\n", path.display().to_string());
        let c = Config::from_toml(&text).unwrap();
        assert_eq!(c.kafka.properties["ssl.certificate.pem"], "plain\n", "only one newline is stripped");
        assert_eq!(c.kafka.redacted("ssl.certificate.pem"), Some(REDACTED));
    }

    #[test]
    fn a_missing_file_names_the_key_and_the_path() {
        let err = Config::from_toml("[kafka]\n\"sasl.password\" = { file = \"/nonexistent/engage-pw\" }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("kafka.sasl.password") && err.contains("/nonexistent/engage-pw"), "{err}");
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
    // figment::Jail's closure returns figment's own (large) error type.
    #[allow(clippy::result_large_err)]
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
