//! The client an instance forwards requests to the other instances with:
//! HTTP/1.1 over pooled keep-alive connections (a forwarded lookup costs
//! no new connection, and with TLS no new handshake), each request bounded
//! by `api.peer_timeout`, each answer by [`MAX_PEER_BODY`].

use std::sync::{Arc, RwLock};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::tls::{Tls, plain_peer_config};
use crate::sync;

/// The header that marks a request as forwarded by another instance: it is
/// answered from local state or refused, never forwarded again, so no
/// request travels more than one hop, whatever the instances believe
/// about ownership.
pub const FORWARDED: &str = "engage-forwarded";

/// The largest answer taken from another instance: a list of 10 000
/// customers is about 6 MB.
pub const MAX_PEER_BODY: usize = 32 << 20;

/// How long an idle connection to another instance is kept: shorter than
/// the time an instance keeps an idle connection open
/// ([`super::IDLE_TIMEOUT`]), so a pooled connection is never one the
/// other side is closing.
const POOL_IDLE: Duration = Duration::from_secs(5);

type PeerClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// What another instance answered.
pub struct PeerAnswer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

/// Why another instance gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No connection, or it broke.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No full answer within `api.peer_timeout`.
    #[error("no answer within api.peer_timeout")]
    Timeout,
}

impl PeerError {
    /// The `outcome` label of `engage_api_forwards_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            PeerError::Unreachable(_) => "unreachable",
            PeerError::Timeout => "timeout",
        }
    }
}

/// Connections to the other instances' APIs.
pub struct Peers {
    client: RwLock<PeerClient>,
    tls: Option<Arc<Tls>>,
    timeout: Duration,
}

impl Peers {
    /// A client trusting what `tls` says (plain HTTP without it), waiting
    /// `timeout` for each answer.
    pub fn new(tls: Option<Arc<Tls>>, timeout: Duration) -> Peers {
        let client = build(tls.as_deref(), timeout);
        Peers { client: RwLock::new(client), tls, timeout }
    }

    /// Takes up the current CA after a TLS reload (new connections only).
    pub fn reload(&self) {
        *sync::write(&self.client) = build(self.tls.as_deref(), self.timeout);
    }

    /// `GET base + path_and_query` with the caller's `Authorization` and
    /// the [`FORWARDED`] mark.
    pub async fn get(
        &self,
        base: &str,
        path_and_query: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<PeerAnswer, PeerError> {
        let client = sync::read(&self.client).clone();
        let mut request = Request::get(format!("{base}{path_and_query}")).header(FORWARDED, "1");
        if let Some(a) = authorization {
            request = request.header(AUTHORIZATION, a.clone());
        }
        let request = request.body(Empty::new()).map_err(|e| PeerError::Unreachable(e.to_string()))?;
        let exchange = async {
            let response = client.request(request).await.map_err(|e| PeerError::Unreachable(chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_PEER_BODY)
                .collect()
                .await
                .map_err(|e| PeerError::Unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok(PeerAnswer { status: parts.status, headers: parts.headers, body })
        };
        tokio::time::timeout(self.timeout, exchange).await.map_err(|_| PeerError::Timeout)?
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    crate::telemetry::chain(e)
}

fn build(tls: Option<&Tls>, timeout: Duration) -> PeerClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeout));
    let config = tls.map_or_else(plain_peer_config, Tls::peer_config);
    let builder = HttpsConnectorBuilder::new().with_tls_config((*config).clone()).https_or_http();
    let builder = match tls.and_then(Tls::peer_server_name) {
        Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
        None => builder,
    };
    let connector = builder.enable_http1().wrap_connector(http);
    Client::builder(TokioExecutor::new()).pool_idle_timeout(POOL_IDLE).pool_max_idle_per_host(64).build(connector)
}
