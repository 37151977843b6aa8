//! `[kafka]`: librdkafka client properties.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

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
