//! `[http]`: the ops endpoint.

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// `[http]`: the ops endpoint (`/metrics`, `/healthz`, `/readyz`). It
/// serves nothing with customer data: the customer API has its own
/// listener (`[api]`), so the two can be exposed to different clients.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address. Loopback by default, so nothing is exposed unless
    /// asked; in a container use `0.0.0.0:9898`. Empty disables the server.
    pub listen: String,
    /// `http.customer_api` before the customer API moved to `[api]`: read
    /// only to refuse it with a message naming the new section.
    #[serde(rename = "customer_api", skip_serializing)]
    removed_customer_api: Option<serde::de::IgnoredAny>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: "127.0.0.1:9898".into(), removed_customer_api: None }
    }
}

impl HttpConfig {
    /// Checks that span this section's fields; the error names the key
    /// and what would be valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.removed_customer_api.is_some() {
            return Err(invalid(
                "http.customer_api",
                "removed: the customer API is served on its own listener, configured in the [api] section \
                 (api.listen, api.token_file; see CHANGELOG.md). Delete this key; the ops port serves only \
                 /metrics, /healthz and /readyz",
            ));
        }
        if !self.listen.is_empty() && self.address().is_none() {
            return Err(invalid("http.listen", "must be host:port such as 127.0.0.1:9898 or 0.0.0.0:9898, or empty"));
        }
        Ok(())
    }

    /// The parsed address, or `None` when disabled.
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        self.listen.parse().ok()
    }
}
