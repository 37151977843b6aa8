//! `[kafka]`: librdkafka client properties, secrets among them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// `[kafka]`: librdkafka properties for every client engage creates
/// (consumer, producer, admin), e.g. `"bootstrap.servers"`,
/// `"security.protocol"`, `"sasl.mechanism"`, `"sasl.username"`,
/// `"sasl.password"`, `"ssl.ca.location"`.
///
/// - **From a file**, the way a Kubernetes Secret is mounted: `"sasl.password"
///   = { file = "/etc/engage/secrets/sasl-password" }` reads the file at
///   start (one trailing newline stripped). A missing or unreadable file is a
///   start-up error naming the key and the path, never the contents.
/// - **From the environment**: `ENGAGE__KAFKA__SASL_PASSWORD` sets
///   `sasl.password` (underscores in keys become dots; no librdkafka
///   property has an underscore), its value taken verbatim as a string:
///   `0123456789`, `true`, `1e5` or `[x]` stay exactly that.
///
/// Values of keys that look secret (`password`, `secret`, `key`, `token`,
/// `jaas` in the name, except `*.location` paths) and every value read from
/// a file are never printed: not in logs, errors (librdkafka's included),
/// metrics or the HTTP endpoints.
#[derive(Clone, Default)]
pub struct KafkaConfig {
    /// The properties, by librdkafka name, with file values read.
    pub properties: BTreeMap<String, String>,
    /// Properties whose value comes from a file: their paths.
    files: BTreeMap<String, PathBuf>,
}

/// A `[kafka]` value as written: text, a number or a boolean (passed on as
/// text), or a file to read it from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Value {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    File { file: PathBuf },
}

impl<'de> Deserialize<'de> for KafkaConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, Value>::deserialize(d)?;
        let mut config = KafkaConfig::default();
        for (key, value) in raw {
            let key = key.replace('_', ".");
            let text = match value {
                Value::Text(s) => s,
                Value::Int(i) => i.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::File { file } => {
                    config.files.insert(key.clone(), file);
                    String::new()
                }
            };
            config.properties.insert(key, text);
        }
        Ok(config)
    }
}

impl Serialize for KafkaConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let values: BTreeMap<&String, Value> = self
            .properties
            .iter()
            .map(|(k, v)| match self.files.get(k) {
                Some(file) => (k, Value::File { file: file.clone() }),
                None => (k, Value::Text(v.clone())),
            })
            .collect();
        values.serialize(s)
    }
}

impl KafkaConfig {
    /// Checks that span this section's fields; the error names the key
    /// and what would be valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for reserved in [
            "group.id",
            "enable.auto.offset.store",
            "enable.auto.commit",
            "enable.idempotence",
            "partition.assignment.strategy",
            "transactional.id",
        ] {
            if self.properties.contains_key(reserved) {
                return Err(invalid(
                    format!("kafka.{reserved}"),
                    "is set by engage itself (its delivery guarantees depend on it); see engage.example.toml",
                ));
            }
        }
        Ok(())
    }

    /// Reads the values given as `{ file = … }`, and registers every secret
    /// value with [`redact`].
    pub(super) fn read_files(&mut self) -> Result<(), ConfigError> {
        for (key, path) in &self.files {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(format!("kafka.{key}"), format!("cannot read the file {}: {e}", path.display()))
            })?;
            let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
            self.properties.insert(key.clone(), text.to_string());
        }
        let secrets = self.properties.iter().filter(|(k, _)| self.is_secret(k)).map(|(_, v)| v.clone());
        register_secrets(secrets);
        Ok(())
    }

    /// Whether a property's value must never be shown: a secret-looking
    /// key, or a value read from a file.
    pub fn is_secret(&self, key: &str) -> bool {
        self.files.contains_key(key) || is_secret_key(key)
    }

    /// A property value as it may be shown in logs and errors.
    pub fn redacted(&self, key: &str) -> Option<&str> {
        self.properties.get(key).map(|v| if self.is_secret(key) { REDACTED } else { v.as_str() })
    }
}

/// What a secret is shown as.
pub const REDACTED: &str = "[redacted]";

/// Whether a librdkafka property name looks secret (`password`, `secret`,
/// `key`, `token` or `jaas` in it, except `*.location` paths).
pub fn is_secret_key(key: &str) -> bool {
    ["password", "secret", "key", "token", "jaas"].iter().any(|w| key.contains(w)) && !key.ends_with(".location")
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.properties.keys().map(|k| (k, self.redacted(k).unwrap_or("")))).finish()
    }
}

/// Every secret value of every configuration loaded in this process.
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn register_secrets(values: impl Iterator<Item = String>) {
    let mut secrets = crate::sync::lock(&SECRETS);
    for v in values.filter(|v| !v.is_empty()) {
        if !secrets.contains(&v) {
            secrets.push(v);
        }
    }
    // Longest first, so a secret that contains another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// `text` with every secret value of the loaded configuration replaced by
/// `[redacted]`: for text engage does not write itself, such as librdkafka's
/// log lines and errors, which may quote a property's value.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    let secrets = crate::sync::lock(&SECRETS);
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in secrets.iter() {
        out = out.replace(s.as_str(), REDACTED);
    }
    std::borrow::Cow::Owned(out)
}
