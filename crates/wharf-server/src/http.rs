//! The HTTP admin API: health, readiness and Prometheus metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use wharf::Wharf;

#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) wharf: Wharf,
    pub(crate) metrics: PrometheusHandle,
    /// False once shutdown begins, so load balancers stop sending work.
    pub(crate) ready: Arc<AtomicBool>,
}

pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Liveness: the process answers.
async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// Readiness: storage is open and the server is not shutting down.
async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    }
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    metrics::gauge!("wharf_log_head_position").set(s.wharf.head().0 as f64);
    s.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}
