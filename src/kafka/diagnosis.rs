//! Kafka errors that retrying will not clear, told apart from the
//! transient ones and said in an operator's words: "authentication failed
//! for user `engage` (SCRAM-SHA-512)", "not authorized to READ topic
//! `clickstream`". librdkafka reports an authentication failure, a missing
//! ACL or an unsupported codec once (or, for a codec, on every fetch) and
//! then retries quietly for ever; the pipeline turns a [`Blocker`] into
//! readiness, one log line and a metric, and gives up after
//! `run.give_up_after` (`pipeline::Status`).

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::Config;

/// A Kafka resource an ACL is granted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// A transactional id.
    TransactionalId,
    /// The cluster.
    Cluster,
}

impl Resource {
    /// Kafka's name for the resource type, as in `kafka-acls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Topic => "topic",
            Resource::Group => "group",
            Resource::TransactionalId => "transactional id",
            Resource::Cluster => "cluster",
        }
    }
}

/// Why a Kafka client cannot make progress when retrying will not help:
/// each says what the operator must fix.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum Blocker {
    /// The broker refused the credentials (SASL) or the client could not
    /// present them.
    #[error("authentication failed for {principal}: {detail}")]
    Authentication {
        /// Who engage tried to be: "user `engage` (SCRAM-SHA-512)".
        principal: String,
        /// librdkafka's reason.
        detail: String,
    },
    /// The TLS handshake failed: a certificate the broker refused, or one
    /// engage could not verify.
    #[error("TLS handshake with the broker failed: {detail}")]
    Tls {
        /// librdkafka's (OpenSSL's) reason.
        detail: String,
    },
    /// An ACL is missing.
    #[error("not authorized to {operation} {} `{name}`", resource.as_str())]
    Authorization {
        /// READ, WRITE, DESCRIBE, CREATE.
        operation: &'static str,
        /// What on.
        resource: Resource,
        /// Its name.
        name: String,
    },
    /// A topic engage must read is not there.
    #[error("topic `{topic}` does not exist")]
    UnknownTopic {
        /// The topic.
        topic: String,
    },
    /// Input engage cannot read: a compression codec (or another feature)
    /// this build does not have.
    #[error("input cannot be read: {detail}")]
    Unsupported {
        /// librdkafka's reason.
        detail: String,
    },
}

impl Blocker {
    /// The bounded `reason` label of `engage_stalled`.
    pub fn reason(&self) -> &'static str {
        match self {
            Blocker::Authentication { .. } => "authentication",
            Blocker::Tls { .. } => "tls",
            Blocker::Authorization { .. } => "authorization",
            Blocker::UnknownTopic { .. } => "unknown_topic",
            Blocker::Unsupported { .. } => "unsupported",
        }
    }

    /// Every `reason` label, for the metric's series.
    pub const REASONS: [&'static str; 5] = ["authentication", "tls", "authorization", "unknown_topic", "unsupported"];

    /// The topic the blocker is about, if it is about one topic: a record
    /// read from it again clears it.
    pub fn topic(&self) -> Option<&str> {
        match self {
            Blocker::Authorization { resource: Resource::Topic, name, .. } => Some(name),
            Blocker::UnknownTopic { topic } => Some(topic),
            _ => None,
        }
    }
}

/// Who engage authenticates as, from `[kafka]`: "user `engage`
/// (SCRAM-SHA-512)", "the client certificate `…`", or "OAUTHBEARER client
/// `…`".
pub fn principal(config: &Config) -> String {
    let p = &config.kafka.properties;
    let get = |k: &str| p.get(k).map(String::as_str);
    let mechanism = get("sasl.mechanism").or(get("sasl.mechanisms")).unwrap_or("GSSAPI");
    let protocol = get("security.protocol").unwrap_or("plaintext").to_ascii_lowercase();
    if protocol.starts_with("sasl") {
        match mechanism {
            "OAUTHBEARER" => format!(
                "OAUTHBEARER client `{}`",
                get("sasl.oauthbearer.client.id").or(get("client.id")).unwrap_or("(unnamed)")
            ),
            m => format!("user `{}` ({m})", get("sasl.username").unwrap_or("(unset)")),
        }
    } else if protocol == "ssl" {
        let cert = get("ssl.certificate.location").or(get("ssl.keystore.location")).unwrap_or("(inline PEM)");
        format!("the client certificate {cert}")
    } else {
        "the client".to_string()
    }
}

/// The blocker behind a client error (`reason`: librdkafka's text beside
/// it, when there is one), or `None` for an error retrying may clear.
/// `topic` names the topic when the caller knows which one failed, and
/// `operation` what it was doing to it.
pub fn classify(
    config: &Config,
    error: &KafkaError,
    reason: &str,
    topic: Option<&str>,
    operation: &'static str,
) -> Option<Blocker> {
    let code = error.rdkafka_error_code()?;
    let detail = || crate::config::redact(if reason.is_empty() { "" } else { reason }).into_owned();
    let text = if reason.is_empty() { error.to_string() } else { reason.to_string() };
    match code {
        RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed if !is_transient(&text) => {
            Some(Blocker::Authentication {
                principal: principal(config),
                detail: crate::config::redact(&text).into_owned(),
            })
        }
        RDKafkaErrorCode::TopicAuthorizationFailed => {
            // "Subscribed topic not available: <topic>: Broker: Topic
            // authorization failed": no DESCRIBE on it.
            let described = text
                .strip_prefix("Subscribed topic not available: ")
                .and_then(|t| t.split(": ").next())
                .map(|t| (t.to_string(), "DESCRIBE"));
            let (name, operation) = described.or(topic.map(|t| (t.to_string(), operation)))?;
            Some(Blocker::Authorization { operation, resource: Resource::Topic, name })
        }
        RDKafkaErrorCode::GroupAuthorizationFailed => Some(Blocker::Authorization {
            operation: "READ",
            resource: Resource::Group,
            name: config.run.group_id.clone(),
        }),
        RDKafkaErrorCode::TransactionalIdAuthorizationFailed => Some(Blocker::Authorization {
            operation: "WRITE",
            resource: Resource::TransactionalId,
            name: topic.unwrap_or_default().to_string(),
        }),
        RDKafkaErrorCode::ClusterAuthorizationFailed => {
            Some(Blocker::Authorization { operation, resource: Resource::Cluster, name: "kafka-cluster".into() })
        }
        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
            let name =
                text.strip_prefix("Subscribed topic not available: ").and_then(|t| t.split(": ").next()).or(topic)?;
            Some(Blocker::UnknownTopic { topic: name.to_string() })
        }
        RDKafkaErrorCode::NotImplemented => Some(Blocker::Unsupported { detail: detail() }),
        RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::SSL if is_tls_refusal(&text) => {
            Some(Blocker::Tls { detail: crate::config::redact(&text).into_owned() })
        }
        _ => None,
    }
}

/// Whether an authentication error is a connection lost during the
/// exchange ("SASL authentication error: SaslAuthenticateRequest failed:
/// Local: Broker transport failure"), which the next connection retries,
/// rather than credentials refused.
fn is_transient(text: &str) -> bool {
    ["Broker transport failure", "Timed out", "Connection refused", "Disconnected"].iter().any(|s| text.contains(s))
}

/// Whether a transport failure is a TLS refusal (a certificate), which a
/// reconnect does not fix, rather than a network hiccup.
fn is_tls_refusal(text: &str) -> bool {
    ["SSL handshake failed", "certificate verify failed", "alert bad certificate", "alert unknown ca"]
        .iter()
        .any(|s| text.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        Config::from_toml(toml).unwrap()
    }

    #[test]
    fn authentication_names_the_user_and_mechanism() {
        let c = config(
            "[kafka]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\
             \"sasl.username\" = \"engage\"\n",
        );
        let e = KafkaError::Global(RDKafkaErrorCode::Authentication);
        let reason = "sasl_ssl://127.0.0.1:1/bootstrap: SASL authentication error: Authentication failed";
        let b = classify(&c, &e, reason, None, "READ").unwrap();
        assert_eq!(b.reason(), "authentication");
        assert!(
            b.to_string().starts_with("authentication failed for user `engage` (SCRAM-SHA-512): sasl_ssl://"),
            "{b}"
        );
    }

    #[test]
    fn a_missing_acl_names_the_operation_and_the_resource() {
        let c = Config::default();
        let e = KafkaError::Global(RDKafkaErrorCode::TopicAuthorizationFailed);
        let b = classify(
            &c,
            &e,
            "Subscribed topic not available: clickstream: Broker: Topic authorization failed",
            None,
            "READ",
        );
        assert_eq!(b.unwrap().to_string(), "not authorized to DESCRIBE topic `clickstream`");
        let fetch = KafkaError::MessageConsumption(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert_eq!(
            classify(&c, &fetch, "", Some("purchases"), "READ").unwrap().to_string(),
            "not authorized to READ topic `purchases`"
        );
        assert_eq!(classify(&c, &fetch, "", None, "READ"), None, "which topic is unknown: left to a probe");
        let group = KafkaError::MessageConsumption(RDKafkaErrorCode::GroupAuthorizationFailed);
        assert_eq!(
            classify(&c, &group, "", None, "READ").unwrap().to_string(),
            "not authorized to READ group `engage`"
        );
    }

    #[test]
    fn a_connection_lost_during_authentication_is_not_a_refusal() {
        let e = KafkaError::Global(RDKafkaErrorCode::Authentication);
        let reason = "sasl_ssl://127.0.0.1:1/1: SASL authentication error: SaslAuthenticateRequest failed: \
                      Local: Broker transport failure";
        assert_eq!(classify(&Config::default(), &e, reason, None, "READ"), None);
    }

    #[test]
    fn transient_errors_are_not_blockers() {
        let c = Config::default();
        for code in [
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::NotLeaderForPartition,
        ] {
            assert_eq!(classify(&c, &KafkaError::Global(code), "Connection refused", None, "READ"), None, "{code:?}");
        }
        let tls = KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure);
        let reason =
            "ssl://127.0.0.1:1/bootstrap: Receive failed: error:0A000412:SSL routines::sslv3 alert bad certificate";
        assert_eq!(classify(&c, &tls, reason, None, "READ").map(|b| b.reason()), Some("tls"));
    }
}
