//! The customer API (`[api]`): `GET /v1/customers/{id}` and `GET
//! /v1/customers?health=…&limit=…`, on a listener of its own, separate
//! from the ops endpoint ([`crate::http`]), so the two can be exposed to
//! different clients.
//!
//! - **Who may ask** (`auth.rs`): bearer tokens from `api.token_file`,
//!   read again when it changes; 401 with `WWW-Authenticate` otherwise.
//!   Optional TLS with rustls (`tls.rs`), certificates read again when
//!   they change.
//! - **Any instance answers for any customer** (`routing.rs`,
//!   `peers.rs`): the customer's input partition is where the upstream
//!   producers put its key; this instance answers from its own state when
//!   it serves that partition, and otherwise forwards the request, in one
//!   hop, to the instance the consumer group assigned it to, with the
//!   caller's token. A partition being restored or moved gets 503 with
//!   `Retry-After`; 404 comes only from the partition's owner, once it has
//!   caught up. A list fans out to every owner and merges.
//! - **Bounded** (this file, `handler.rs`): at most `api.max_connections`
//!   connections, 16 KiB of request headers each, a request target of
//!   2 KiB; a client that sends its headers or reads its answer too slowly
//!   is dropped after 10 s; a request takes at most `api.request_timeout`;
//!   `api.max_concurrent_lists` lists at once.
//! - **Never in the pipeline's way**: the API runs on its own runtime
//!   (`api.threads` threads), so a flood of requests competes for the CPU
//!   as any other process would, and never queues ahead of the consumer
//!   loop's task; reads copy a customer's state out of the map and never
//!   hold a lock across anything else.

mod auth;
mod handler;
mod peers;
mod routing;
mod stall;
mod tls;
mod view;
mod watch;

pub use auth::TokenError;
pub use tls::TlsError;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;
use crate::engine::store::Store;
use crate::engine::{Engine, Rules};
use crate::kafka::KafkaSetupError;
use crate::pipeline::Status;
use crate::telemetry::API_REFUSED_CONNECTIONS;
use crate::telemetry::events::{ApiReloadFailed, HttpStopped};
use auth::Auth;
use handler::Service;
use peers::Peers;
use routing::{Observer, Routing};
use stall::Stall;
use tls::Tls;
use view::Local;

/// How long a connection may take to send a request's headers, and stay
/// idle between requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to read an answer before it is dropped.
pub const WRITE_STALL: Duration = Duration::from_secs(10);

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Request bytes buffered per connection: headers beyond it get 431.
const MAX_REQUEST_BUFFER: usize = 16 * 1024;

/// Headers per request beyond which it gets 431.
const MAX_HEADERS: usize = 64;

/// How long requests in progress may finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why the API could not start. Not retryable without a change: fix the
/// file or setting named.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `api.listen` could not be bound.
    #[error("binding api.listen {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The token file cannot be used.
    #[error(transparent)]
    Tokens(#[from] TokenError),
    /// The TLS files cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The client that reads the consumer group could not be created.
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    /// No address to advertise was found.
    #[error(
        "api.advertised_url is empty, api.listen binds every interface, and no interface reaches \
         bootstrap.servers: set api.advertised_url to the URL the other instances reach this one at"
    )]
    NoAddress,
    /// The API's threads could not start.
    #[error("starting the API's runtime")]
    Runtime(#[source] std::io::Error),
}

/// The API, running on its own threads until the shutdown token passed to
/// [`start`] is cancelled.
pub struct Api {
    advertised_url: String,
    listen: SocketAddr,
    done: tokio::sync::oneshot::Receiver<()>,
}

impl Api {
    /// The URL the other instances reach this one at: `api.advertised_url`,
    /// or the one derived from the listener (see [`crate::config::ApiConfig`]).
    pub fn advertised_url(&self) -> &str {
        &self.advertised_url
    }

    /// The bound listen address.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Waits until the API has stopped (requests in progress finished, or
    /// given up after a short grace).
    pub async fn stopped(self) {
        let _ = self.done.await;
    }
}

/// Starts the API when `api.listen` is set: tokens and TLS read, listener
/// bound (so a bad file or a taken port fails start-up with a clear
/// message), on threads of its own. It stops on `shutdown`.
pub fn start(
    config: &Config,
    store: Arc<Store>,
    status: Arc<Status>,
    shutdown: CancellationToken,
) -> Result<Option<Api>, ApiError> {
    let Some(addr) = config.api.address() else { return Ok(None) };
    let api = &config.api;
    let auth = if api.allow_unauthenticated { Auth::open() } else { Auth::from_file(Path::new(&api.token_file))? };
    let tls = Tls::load(api)?;
    let acceptor = tls.as_ref().map(|t| t.server_config().map(TlsAcceptor::from)).transpose()?;
    let listener = std::net::TcpListener::bind(addr).map_err(|source| ApiError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| ApiError::Bind { addr, source })?;
    listener.set_nonblocking(true).map_err(|source| ApiError::Bind { addr, source })?;
    let url = advertised_url(config, bound)?;
    let observer = Observer::new(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(api.threads)
        .thread_name("engage-api")
        .enable_all()
        .build()
        .map_err(ApiError::Runtime)?;
    let svc = Arc::new(Service {
        auth,
        local: Local { store, status: status.clone(), engine: Engine::new(Rules::new(config)) },
        routing: Arc::new(Routing::new(&url, config.topics.upstream_partitioner, status)),
        peers: Peers::new(tls.clone(), api.peer_timeout),
        lists: Semaphore::new(api.max_concurrent_lists),
        forwarded_lists: Semaphore::new(api.max_concurrent_lists),
        request_timeout: api.request_timeout,
    });
    info!(
        listen = %bound,
        advertised_url = %url,
        tls = tls.is_some(),
        tokens = svc.auth.required(),
        "customer API: GET /v1/customers/{{id}}, /v1/customers?health=…&limit=…"
    );
    let (every, max_connections) = (api.membership_refresh, api.max_connections);
    let (tx, done) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("engage-api".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return HttpStopped { error: &e }.emit(),
                };
                tokio::spawn(routing::refresh(svc.routing.clone(), Arc::new(observer), every, shutdown.clone()));
                tokio::spawn(reload(svc.clone(), tls, shutdown.clone()));
                serve(listener, svc, acceptor, max_connections, shutdown).await;
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
            let _ = tx.send(());
        })
        .map_err(ApiError::Runtime)?;
    Ok(Some(Api { advertised_url: url, listen: bound, done }))
}

/// The URL to advertise: `api.advertised_url`, else the bound address, or
/// with every interface bound, the one that reaches the first bootstrap
/// server (in a pod: the pod's IP).
fn advertised_url(config: &Config, bound: SocketAddr) -> Result<String, ApiError> {
    if !config.api.advertised_url.is_empty() {
        return Ok(config.api.advertised_url.trim_end_matches('/').to_string());
    }
    let scheme = if config.api.tls() { "https" } else { "http" };
    let ip = if bound.ip().is_unspecified() { outward_ip(config).ok_or(ApiError::NoAddress)? } else { bound.ip() };
    Ok(format!("{scheme}://{}", SocketAddr::new(ip, bound.port())))
}

/// The local address of the interface that reaches a bootstrap server (a
/// UDP "connection" only picks the route; nothing is sent).
fn outward_ip(config: &Config) -> Option<IpAddr> {
    let servers = config.kafka.properties.get("bootstrap.servers")?;
    for server in servers.split(',').map(str::trim) {
        let server = server.rsplit_once("://").map_or(server, |(_, s)| s);
        let Ok(addrs) = server.to_socket_addrs() else { continue };
        for addr in addrs {
            let any: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
            let Ok(socket) = UdpSocket::bind(any) else { continue };
            if socket.connect(addr).is_ok()
                && let Ok(local) = socket.local_addr()
                && !local.ip().is_unspecified()
            {
                return Some(local.ip());
            }
        }
    }
    None
}

/// Accepts connections until `shutdown`, then lets those in progress
/// finish for [`SHUTDOWN_GRACE`].
async fn serve(
    listener: tokio::net::TcpListener,
    svc: Arc<Service>,
    acceptor: Option<TlsAcceptor>,
    max_connections: usize,
    shutdown: CancellationToken,
) {
    let connections = Arc::new(Semaphore::new(max_connections));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // Out of file descriptors, or a connection reset before it was
            // taken: breathe, then go on.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            refuse(&stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (svc, acceptor, shutdown) = (svc.clone(), acceptor.clone(), shutdown.clone());
        tokio::spawn(async move {
            let stream = Stall::new(stream, WRITE_STALL);
            match acceptor {
                None => connection(TokioIo::new(stream), svc, shutdown).await,
                Some(acceptor) => {
                    if let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        connection(TokioIo::new(tls), svc, shutdown).await;
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connections.acquire_many(all)).await;
}

/// A connection over the limit: 503 (written only if the socket takes it
/// at once) and closed. A TLS client sees a failed handshake instead.
fn refuse(stream: &tokio::net::TcpStream) {
    metrics::counter!(API_REFUSED_CONNECTIONS).increment(1);
    const BODY: &str = r#"{"error":"too many connections (api.max_connections)"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(answer.as_bytes());
    // Whatever of the request has arrived is read, so that closing sends
    // FIN rather than a reset that could discard the answer at the client.
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        if !matches!(stream.try_read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
}

/// Serves HTTP/1.1 requests on one connection until it closes, idles out,
/// or `shutdown`.
async fn connection<I>(io: I, svc: Arc<Service>, shutdown: CancellationToken)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let svc = svc.clone();
        async move { Ok::<_, Infallible>(handler::handle(svc, request).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(IDLE_TIMEOUT)
        .max_buf_size(MAX_REQUEST_BUFFER)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
}

/// Reads the token and TLS files again when they change.
async fn reload(svc: Arc<Service>, tls: Option<Arc<Tls>>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(watch::RELOAD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match svc.auth.reload() {
            Ok(Some(tokens)) => info!(tokens, "customer API: token file changed; its tokens are in use"),
            Ok(None) => {}
            Err(e) => ApiReloadFailed { file: "tokens", error: &e }.emit(),
        }
        if let Some(tls) = &tls {
            match tls.reload() {
                Ok(true) => {
                    svc.peers.reload();
                    info!("customer API: TLS files changed; the new certificate is in use");
                }
                Ok(false) => {}
                Err(e) => ApiReloadFailed { file: "tls", error: &e }.emit(),
            }
        }
    }
}
