//! The ops endpoint (README "Operating engage"): `/metrics` (Prometheus),
//! `/healthz` (the process is alive and its main loop is making progress),
//! `/readyz` (the consumer has joined its group and every assigned
//! partition is restored). Nothing here shows customer data: the customer
//! API is [`crate::api`], on a listener of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::wall_clock_ms;
use crate::pipeline::Status;

/// How stale the main loop's heartbeat may be before `/healthz` fails: the
/// loop ticks every 100 ms, so this only trips when it is truly stuck.
const HEARTBEAT_LIMIT: Duration = Duration::from_secs(30);

/// What the handlers need.
#[derive(Clone)]
pub struct AppState {
    status: Arc<Status>,
    metrics: Option<PrometheusHandle>,
}

impl AppState {
    /// State for the server; `metrics` renders `/metrics` when present.
    pub fn new(status: Arc<Status>, metrics: Option<PrometheusHandle>) -> Self {
        AppState { status, metrics }
    }
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/{*rest}", get(moved))
        .with_state(state)
}

/// Why the HTTP endpoint could not start. Not retryable without a change:
/// another process holds the port, or a recorder is already installed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The Prometheus recorder could not be installed.
    #[error("installing the metrics recorder")]
    Metrics(#[from] metrics_exporter_prometheus::BuildError),
    /// `http.listen` could not be bound.
    #[error("binding http.listen {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// Starts the endpoint for `engage run` when `http.listen` is set, with the
/// metrics recorder installed. Binding happens before this returns, so a
/// taken port fails start-up with a clear message; the server stops on
/// `shutdown`.
pub async fn start(
    config: &crate::config::Config,
    status: &Arc<Status>,
    shutdown: &CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, HttpError> {
    let Some(addr) = config.http.address() else { return Ok(None) };
    let metrics = crate::telemetry::install()?;
    let state = AppState::new(status.clone(), Some(metrics));
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| HttpError::Bind { addr, source })?;
    // The bound address: with port 0 the system picks the port, and this
    // line is where to find it.
    let addr = listener.local_addr().unwrap_or(addr);
    tracing::info!(%addr, "HTTP: /metrics /healthz /readyz");
    let shutdown = shutdown.clone();
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = serve_on(listener, state, shutdown).await {
            crate::telemetry::events::HttpStopped { error: &e }.emit();
        }
    })))
}

/// Serves the routes on `addr` until `shutdown`.
pub async fn serve(addr: SocketAddr, state: AppState, shutdown: CancellationToken) -> std::io::Result<()> {
    serve_on(tokio::net::TcpListener::bind(addr).await?, state, shutdown).await
}

/// Serves the routes on a bound listener until `shutdown`. Request bodies
/// are refused: no route needs one.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(state).layer(axum::extract::DefaultBodyLimit::max(0));
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

async fn metrics(State(s): State<AppState>) -> Response {
    match &s.metrics {
        Some(h) => ([("content-type", "text/plain; version=0.0.4")], h.render()).into_response(),
        None => (StatusCode::NOT_FOUND, "metrics recorder not installed").into_response(),
    }
}

async fn healthz(State(s): State<AppState>) -> Response {
    let age = wall_clock_ms() - s.status.heartbeat_ms();
    // A restore runs inside the consumer's rebalance callback, so the main
    // loop does not tick meanwhile; it is bounded by state.restore_timeout,
    // after which engage exits on its own. Restarting it would only start
    // the restore again.
    if age <= HEARTBEAT_LIMIT.as_millis() as i64 || s.status.restoring() > 0 {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("main loop silent for {age} ms")).into_response()
    }
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.status.not_ready() {
        None => (StatusCode::OK, "ready").into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

/// Anything under `/v1/`: the customer API moved to its own listener.
async fn moved() -> Response {
    (StatusCode::NOT_FOUND, "the customer API is served on its own listener (api.listen), not on the ops port\n")
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> AppState {
        AppState::new(Arc::new(Status::new()), None)
    }

    #[tokio::test]
    async fn healthz_fails_on_a_silent_main_loop_but_not_during_a_restore() {
        let s = state();
        // The main loop has not beaten for longer than the limit.
        s.status.beat(wall_clock_ms() - HEARTBEAT_LIMIT.as_millis() as i64 - 1000);
        assert_eq!(healthz(State(s.clone())).await.status(), StatusCode::SERVICE_UNAVAILABLE);
        // A restore holds the loop inside the rebalance callback: alive.
        let restoring = s.status.begin_restore();
        assert_eq!(healthz(State(s.clone())).await.status(), StatusCode::OK);
        assert_eq!(readyz(State(s.clone())).await.status(), StatusCode::SERVICE_UNAVAILABLE);
        drop(restoring);
        s.status.beat(wall_clock_ms());
        assert_eq!(healthz(State(s.clone())).await.status(), StatusCode::OK);
    }
}
