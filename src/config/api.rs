//! `[api]`: the customer API's listener, its tokens, TLS, and how instances
//! reach each other (docs/operations.md "The customer API").

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// `[api]`: the customer API (`GET /v1/customers/{id}`, `GET
/// /v1/customers?health=…&limit=…`), on a listener of its own so that the
/// ops port (`[http]`) never serves customer data. Off unless `listen` is
/// set. Any instance answers for any customer: it forwards to the instance
/// that owns the customer's input partition, at the URL that instance
/// advertises.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Listen address, e.g. `0.0.0.0:9899` in a container. Empty (the
    /// default) turns the API off; then this instance cannot answer for
    /// its partitions when another instance forwards to it, so set it on
    /// every instance of a group or on none.
    pub listen: String,
    /// The URL the other instances reach this one's API at, e.g.
    /// `http://10.1.2.3:9899` (`https://` with TLS). It is published in
    /// the consumer group (as part of the input consumer's `client.id`), so
    /// it must be an address the other instances can connect to. Empty:
    /// the listen address when it names one, else the address of the
    /// interface this host reaches the first bootstrap server through (a
    /// pod's IP), with the listen port. Kubernetes sets it from the pod's
    /// IP (deploy/kubernetes/deployment.yaml).
    pub advertised_url: String,
    /// A file of bearer tokens, one per line (blank lines and lines
    /// starting with `#` are skipped). A request must carry `Authorization:
    /// Bearer <token>` with one of them. The file is read again when it
    /// changes (checked every 2 s), so a token is rotated by adding the new
    /// one, moving the clients, then removing the old one; no restart.
    /// Required unless `allow_unauthenticated`.
    pub token_file: String,
    /// Serve the API without tokens. For `engage demo` and local set-ups
    /// only: the API shows customer data.
    pub allow_unauthenticated: bool,
    /// TLS certificate chain (PEM, leaf first) for the API listener; with
    /// `tls_key`. Read again when it changes. Empty: plain HTTP.
    pub tls_cert: String,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub tls_key: String,
    /// CA certificates (PEM) an instance checks the other instances'
    /// certificates against when it forwards a request. Required with
    /// TLS: instances trust each other's API only through it.
    pub tls_ca: String,
    /// The name the other instances' certificates must be valid for when
    /// this one forwards to them. Empty: the host of their advertised URL
    /// (an IP address then needs an IP entry in the certificate). Set it
    /// when every instance serves one certificate for a shared DNS name
    /// (the API Service's), and is reached by its pod IP.
    pub tls_server_name: String,
    /// How long one API request may take in all, forwarding included;
    /// past it the answer is 503 with `Retry-After`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long an instance waits for another it forwards to (one owner of
    /// a list's partitions, or a customer's owner). A list marks the
    /// partitions of an owner that did not answer in time as missing.
    #[serde(with = "humantime_serde")]
    pub peer_timeout: Duration,
    /// How often the consumer group's members and assignments are read
    /// to know which instance owns which partition (also at once when a
    /// forward finds the owner gone).
    #[serde(with = "humantime_serde")]
    pub membership_refresh: Duration,
    /// Connections served at once; a connection beyond it gets 503 and is
    /// closed. Bounds the API's memory (each connection buffers at most
    /// 16 KiB of request).
    pub max_connections: usize,
    /// List requests (`GET /v1/customers`) served at once: each holds up
    /// to `limit` customers per owner in memory. Further ones wait, up to
    /// `request_timeout`. As many parts of other instances' lists are
    /// served at once besides.
    pub max_concurrent_lists: usize,
    /// Threads of the API's own runtime. The API never runs on the
    /// pipeline's threads, so a flood of requests slows the API, not the
    /// processing; more threads serve more requests on larger machines.
    pub threads: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: String::new(),
            advertised_url: String::new(),
            token_file: String::new(),
            allow_unauthenticated: false,
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_ca: String::new(),
            tls_server_name: String::new(),
            request_timeout: default_request_timeout(),
            peer_timeout: default_peer_timeout(),
            membership_refresh: default_membership_refresh(),
            max_connections: default_max_connections(),
            max_concurrent_lists: default_max_concurrent_lists(),
            threads: default_threads(),
        }
    }
}

/// Long enough for a list fanned out to every owner, short enough that a
/// client behind a load balancer retries elsewhere rather than hangs.
const fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}

/// A lookup answers in milliseconds and a 10 000-customer list in well
/// under a second (docs/performance.md); an owner slower than this is in
/// trouble, and the answer says so rather than waiting.
const fn default_peer_timeout() -> Duration {
    Duration::from_secs(3)
}

/// Describing the group is one small request to the coordinator: every
/// 2 s it costs nothing, and a stale view only ever costs a 503 (an owner
/// answers only for partitions it holds).
const fn default_membership_refresh() -> Duration {
    Duration::from_secs(2)
}

/// Thousands of clients at once, each with at most 16 KiB of request
/// buffered: tens of MiB at worst.
const fn default_max_connections() -> usize {
    2048
}

/// A 10 000-customer list is ~6 MB of JSON per owner; four at once bound
/// the memory while still serving dashboards.
const fn default_max_concurrent_lists() -> usize {
    4
}

/// One thread answers tens of thousands of lookups a second
/// (docs/performance.md), and leaves the other cores to the pipeline.
const fn default_threads() -> usize {
    1
}

impl ApiConfig {
    /// Whether the API is on.
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty()
    }

    /// Whether the API listener serves TLS.
    pub fn tls(&self) -> bool {
        !self.tls_cert.is_empty()
    }

    /// The parsed listen address, or `None` when off.
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        self.listen.parse().ok()
    }

    /// Checks that span this section's fields; the error names the key
    /// and what would be valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        if self.address().is_none() {
            return Err(invalid("api.listen", "must be host:port such as 0.0.0.0:9899, or empty to turn the API off"));
        }
        match (self.token_file.is_empty(), self.allow_unauthenticated) {
            (true, false) => {
                return Err(invalid(
                    "api.token_file",
                    "the API shows customer data: give a file of bearer tokens, or set \
                     api.allow_unauthenticated = true (local and demo set-ups only)",
                ));
            }
            (false, true) => {
                return Err(invalid(
                    "api.allow_unauthenticated",
                    "cannot be true with api.token_file set: choose tokens or none",
                ));
            }
            _ => {}
        }
        if self.tls_cert.is_empty() != self.tls_key.is_empty() {
            return Err(invalid("api.tls_key", "api.tls_cert and api.tls_key go together: set both or neither"));
        }
        if self.tls() && self.tls_ca.is_empty() {
            return Err(invalid(
                "api.tls_ca",
                "required with api.tls_cert: the CA the instances check each other's certificates against",
            ));
        }
        if !self.advertised_url.is_empty() {
            let scheme = if self.tls() { "https" } else { "http" };
            check_url(&self.advertised_url, scheme).map_err(|m| invalid("api.advertised_url", m))?;
        }
        for (key, d) in [
            ("api.request_timeout", self.request_timeout),
            ("api.peer_timeout", self.peer_timeout),
            ("api.membership_refresh", self.membership_refresh),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be above zero"));
            }
        }
        if self.peer_timeout >= self.request_timeout {
            return Err(invalid("api.peer_timeout", "must be shorter than api.request_timeout"));
        }
        if self.max_connections == 0 {
            return Err(invalid("api.max_connections", "must be at least 1"));
        }
        if self.max_concurrent_lists == 0 {
            return Err(invalid("api.max_concurrent_lists", "must be at least 1"));
        }
        if !(1..=64).contains(&self.threads) {
            return Err(invalid("api.threads", "must be from 1 to 64"));
        }
        Ok(())
    }
}

/// Checks an advertised URL: `scheme://host[:port]` with nothing after
/// but an optional `/`, since peers append the API's paths to it.
pub(crate) fn check_url(url: &str, scheme: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some(scheme) {
        return Err(format!("{url:?} must start with {scheme}:// (https exactly when api.tls_cert is set)"));
    }
    let Some(authority) = uri.authority() else { return Err(format!("{url:?} names no host")) };
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(format!("{url:?} must be {scheme}://host:port, without user information"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!("{url:?} must have no path or query: the API's paths are appended to it"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    const ON: &str = "[api]\nlisten = \"0.0.0.0:9899\"\n";

    /// Each refused snippet names the key at fault.
    #[test]
    fn invalid_api_settings_name_the_key() {
        for (snippet, wanted) in [
            ("[api]\nlisten = \"nowhere\"\n", "api.listen"),
            (ON, "api.token_file"),
            (
                "[api]\nlisten = \"0.0.0.0:9899\"\ntoken_file = \"t\"\nallow_unauthenticated = true\n",
                "api.allow_unauthenticated",
            ),
            ("[api]\nlisten = \"0.0.0.0:9899\"\nallow_unauthenticated = true\ntls_cert = \"c\"\n", "api.tls_key"),
            (
                "[api]\nlisten = \"0.0.0.0:9899\"\nallow_unauthenticated = true\ntls_cert = \"c\"\ntls_key = \"k\"\n",
                "api.tls_ca",
            ),
            (
                "[api]\nlisten = \"0.0.0.0:9899\"\nallow_unauthenticated = true\nadvertised_url = \"10.0.0.1:9899\"\n",
                "api.advertised_url",
            ),
            (
                "[api]\nlisten = \"0.0.0.0:9899\"\nallow_unauthenticated = true\nadvertised_url = \"https://h:1\"\n",
                "api.advertised_url",
            ),
            (
                "[api]\nlisten = \"0.0.0.0:9899\"\nallow_unauthenticated = true\nadvertised_url = \"http://h:1/api\"\n",
                "api.advertised_url",
            ),
            (
                "[api]\nlisten = \"0.0.0.0:9899\"\nallow_unauthenticated = true\nadvertised_url = \"http://u@h:1\"\n",
                "api.advertised_url",
            ),
            (
                "[api]\nlisten = \"0.0.0.0:9899\"\nallow_unauthenticated = true\npeer_timeout = \"10s\"\n",
                "api.peer_timeout",
            ),
            (
                "[api]\nlisten = \"0.0.0.0:9899\"\nallow_unauthenticated = true\nmax_connections = 0\n",
                "api.max_connections",
            ),
            ("[api]\nlisten = \"0.0.0.0:9899\"\nallow_unauthenticated = true\nthreads = 0\n", "api.threads"),
            (
                "[http]\nlisten = \"0.0.0.0:9899\"\n[api]\nlisten = \"0.0.0.0:9899\"\nallow_unauthenticated = true\n",
                "api.listen",
            ),
        ] {
            match Config::from_toml(snippet) {
                Err(e @ ConfigError::Invalid { .. }) => assert!(e.to_string().contains(wanted), "{snippet}→ {e}"),
                other => panic!("{snippet}→ {other:?}"),
            }
        }
    }

    /// Port 0 on both listeners is two ports the system picks.
    #[test]
    fn both_listeners_may_take_a_port_the_system_picks() {
        let snippet =
            "[http]\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\nallow_unauthenticated = true\n";
        assert!(Config::from_toml(snippet).is_ok());
    }

    #[test]
    fn the_api_is_off_by_default_and_on_with_tokens_or_explicitly_without() {
        let c = Config::from_toml("").unwrap();
        assert!(!c.api.enabled());
        let c = Config::from_toml(&format!("{ON}token_file = \"/etc/engage-api/tokens\"\n")).unwrap();
        assert!(c.api.enabled() && !c.api.tls());
        Config::from_toml(&format!("{ON}allow_unauthenticated = true\nadvertised_url = \"http://10.1.2.3:9899/\"\n"))
            .unwrap();
        let tls = "tls_cert = \"c\"\ntls_key = \"k\"\ntls_ca = \"a\"\nadvertised_url = \"https://[::1]:9899\"\n";
        assert!(Config::from_toml(&format!("{ON}token_file = \"t\"\n{tls}")).unwrap().api.tls());
    }

    /// The key the customer API had before its own section is refused with
    /// a message that says where it went.
    #[test]
    fn the_old_http_customer_api_key_names_the_new_section() {
        for value in ["true", "false"] {
            let err = Config::from_toml(&format!("[http]\ncustomer_api = {value}\n")).unwrap_err().to_string();
            assert!(err.contains("http.customer_api") && err.contains("[api]"), "{err}");
        }
    }
}
