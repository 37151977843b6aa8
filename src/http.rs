//! The HTTP endpoint ops and services talk to (README "Operating engage"): `/metrics`
//! (Prometheus), `/healthz` (the process is alive and its main loop is
//! making progress), `/readyz` (the consumer has joined its group and every
//! assigned partition is restored), and the customer query API, served from
//! this instance's state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::clock::wall_clock_ms;
use crate::engine::Engine;
use crate::engine::churn::Health;
use crate::engine::lifecycle::Stage;
use crate::engine::output::{Dimensions, PurchaseProbability};
use crate::engine::scoring::Driver;
use crate::engine::store::Store;
use crate::pipeline::Status;

/// How stale the main loop's heartbeat may be before `/healthz` fails: the
/// loop ticks every 100 ms, so this only trips when it is truly stuck.
const HEARTBEAT_LIMIT: Duration = Duration::from_secs(30);

/// What the handlers need.
#[derive(Clone)]
pub struct AppState {
    store: Arc<Store>,
    status: Arc<Status>,
    engine: Engine,
    metrics: Option<PrometheusHandle>,
    customer_api: bool,
}

impl AppState {
    /// State for the server; `metrics` renders `/metrics` when present.
    pub fn new(
        store: Arc<Store>,
        status: Arc<Status>,
        engine: Engine,
        metrics: Option<PrometheusHandle>,
        customer_api: bool,
    ) -> Self {
        AppState { store, status, engine, metrics, customer_api }
    }
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/customers", get(list_customers))
        .route("/v1/customers/{id}", get(get_customer))
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
    store: &Arc<Store>,
    status: &Arc<Status>,
    shutdown: &CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, HttpError> {
    let Some(addr) = config.http.address() else { return Ok(None) };
    let metrics = crate::telemetry::install()?;
    let engine = Engine::new(crate::engine::Rules::new(config));
    let state = AppState::new(store.clone(), status.clone(), engine, Some(metrics), config.http.customer_api);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| HttpError::Bind { addr, source })?;
    tracing::info!(%addr, "HTTP: /metrics /healthz /readyz /v1/customers");
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

/// `GET /v1/customers/{id}`: a customer as of now.
#[derive(Serialize)]
pub struct CustomerView {
    customer_id: String,
    /// Input partition that owns the customer.
    partition: i32,
    /// Composite score now (decayed to the current time).
    score: f64,
    dimensions: Dimensions,
    /// Dimensions that moved the score since the last published one.
    drivers: Vec<Driver>,
    stage: Stage,
    health: Health,
    p_alive: f64,
    cadence_days: f64,
    idle_days: f64,
    /// Event time (epoch ms) of the latest activity.
    last_seen: i64,
    first_seen: i64,
    active_days: u16,
    purchase_days: u16,
    /// BG/NBD expected purchase days in the next 90 days.
    expected_purchases_90d: Option<f64>,
    /// Expected spend in the next 90 days.
    expected_value_90d: Option<f64>,
    /// The learned probability of a purchase within `churn.horizon`, as
    /// `p_purchase_<days>d`; no field without a `[churn.model]`.
    #[serde(flatten)]
    p_purchase: PurchaseProbability,
    seq: u32,
}

fn view(s: &AppState, id: &str, partition: i32, state: &crate::engine::state::CustomerState) -> CustomerView {
    let snap = s.engine.snapshot(state, wall_clock_ms().max(state.last_seen));
    let drivers = s.engine.rules().scoring.drivers(&state.published_dimension_scores(), &snap.dimensions);
    let value = s.engine.value_90d(state, &snap);
    CustomerView {
        customer_id: id.to_string(),
        partition,
        score: snap.score,
        dimensions: snap.dimensions.into(),
        drivers: drivers.as_slice().to_vec(),
        stage: state.stage,
        health: state.health,
        p_alive: snap.signals.p_alive,
        cadence_days: snap.signals.cadence_days,
        idle_days: snap.signals.idle_days,
        last_seen: state.last_seen,
        first_seen: state.first_seen,
        active_days: state.active_days,
        purchase_days: state.purchase_days(),
        expected_purchases_90d: value.map(|v| v.expected_purchases),
        expected_value_90d: value.map(|v| v.expected_value),
        p_purchase: s.engine.purchase_probability(state, &snap, value),
        seq: state.seq,
    }
}

async fn get_customer(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    if !s.customer_api {
        return (StatusCode::NOT_FOUND, "the customer API is disabled (http.customer_api)").into_response();
    }
    match s.store.find(&id) {
        Some((partition, state)) => Json(view(&s, &id, partition, &state)).into_response(),
        None => (StatusCode::NOT_FOUND, format!("customer {id:?} is not held by this instance")).into_response(),
    }
}

/// `GET /v1/customers?health=at_risk&limit=N`.
#[derive(Deserialize)]
pub struct ListQuery {
    health: Option<String>,
    limit: Option<usize>,
}

async fn list_customers(State(s): State<AppState>, Query(q): Query<ListQuery>) -> Response {
    if !s.customer_api {
        return (StatusCode::NOT_FOUND, "the customer API is disabled (http.customer_api)").into_response();
    }
    let wanted = match q.health.as_deref() {
        None | Some("at_risk") => Health::AtRisk,
        Some("dormant") => Health::Dormant,
        Some("active") => Health::Active,
        Some(other) => {
            return (StatusCode::BAD_REQUEST, format!("health={other:?}; use active, at_risk or dormant"))
                .into_response();
        }
    };
    let limit = q.limit.unwrap_or(100).min(10_000);
    let mut found = Vec::new();
    for p in s.store.partitions() {
        p.for_each(|id, state| {
            if state.health == wanted {
                found.push(view(&s, id, p.id(), state));
            }
        });
    }
    // Lowest P(alive) first: the customers most likely lost.
    found.sort_by(|a, b| a.p_alive.total_cmp(&b.p_alive).then_with(|| a.customer_id.cmp(&b.customer_id)));
    found.truncate(limit);
    Json(found).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::Rules;

    fn state() -> AppState {
        AppState::new(
            Arc::new(Store::new()),
            Arc::new(Status::new()),
            Engine::new(Rules::new(&Config::default())),
            None,
            true,
        )
    }

    #[test]
    fn the_customer_view_carries_the_learned_probability_only_with_a_model() {
        let mut config = Config::default();
        let calibration = crate::config::CalibrationConfig::Platt { a: 1.0, b: 0.0 };
        config.churn.model = Some(crate::engine::propensity::test_model(-1.0, 0.5, 0.0, calibration));
        let event = crate::engine::event::Event {
            event_id: "e1".into(),
            customer_id: "c".into(),
            ts_ms: wall_clock_ms() - 86_400_000,
            kind: crate::engine::event::EventKind::Purchase { amount: 20.0, loyalty_member: false, coupon_used: false },
        };
        for (config, field) in [(config, true), (Config::default(), false)] {
            let engine = Engine::new(Rules::new(&config));
            let store = Arc::new(Store::new());
            engine.apply(&store.partition(0), &event, None, &mut Vec::new());
            let s = AppState::new(store.clone(), Arc::new(Status::new()), engine, None, true);
            let state = store.find("c").unwrap().1;
            let v = serde_json::to_value(view(&s, "c", 0, &state)).unwrap();
            let p = v.get("p_purchase_90d").and_then(serde_json::Value::as_f64);
            assert_eq!(p.is_some_and(|p| (0.0..=1.0).contains(&p)), field, "{v}");
        }
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
