//! `[http]`: the HTTP endpoint.

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

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
    /// Checks that span this section's fields; the error names the key
    /// and what would be valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
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
