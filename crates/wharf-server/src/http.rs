//! The HTTP admin API: health, readiness, queues, the payload store and
//! Prometheus metrics.
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz`, `GET /readyz` | `ok` / `ready` (503 while shutting down) |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /admin/queues`, `GET /admin/queues/{name}` | queues with settings and stats |
//! | `GET /admin/payload-store/stats` | `{objects, bytes, storage_type}` |
//! | `POST /admin/payload-store/cleanup?age=7d[&dry_run=true]` | `{scanned, deleted, bytes_freed, kept_referenced, dry_run}` |
//!
//! Errors are JSON, `{"error": {"reason", "message", "metadata"}}`, with the
//! same `reason` and `metadata` as the gRPC status detail (they are made by
//! the one mapping in `wharf_proto::status`) and the HTTP status matching the
//! gRPC code.

mod payload_store;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::formatting::{
    sanitize_label_value, write_help_line, write_metric_line, write_type_line,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};
use tonic_types::StatusExt;
use wharf::{QueueInfo, QueueName, QueueSettings, QueueStats, Wharf};
use wharf_proto::status::to_status;

#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) wharf: Wharf,
    pub(crate) metrics: PrometheusHandle,
    /// False once shutdown begins, so load balancers stop sending work.
    pub(crate) ready: Arc<AtomicBool>,
    /// Fires at shutdown; long admin work (a cleanup) stops then.
    pub(crate) shutdown: CancellationToken,
}

pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/queues", get(list_queues))
        .route("/admin/queues/{name}", get(get_queue))
        .route("/admin/payload-store/stats", get(payload_store::stats))
        .route("/admin/payload-store/cleanup", post(payload_store::cleanup))
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
    let mut body = s.metrics.render();
    // Queue series are rendered from the queues as they are at this scrape
    // rather than kept in the recorder: the recorder cannot forget a
    // series, so a deleted queue would be reported forever.
    match s.wharf.list_queues().await {
        Ok(queues) => render_queue_series(&queues, &mut body),
        Err(e) => tracing::warn!(error = %e, "cannot list queues for /metrics"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// A per-queue series of `/metrics`.
struct QueueSeries {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&QueueStats) -> f64,
}

const QUEUE_SERIES: &[QueueSeries] = &[
    QueueSeries {
        name: "wharf_queue_depth",
        kind: "gauge",
        help: "Messages in the queue: visible, in flight and delayed.",
        value: |s| s.depth() as f64,
    },
    QueueSeries {
        name: "wharf_queue_visible",
        kind: "gauge",
        help: "Messages a dequeue would return now.",
        value: |s| s.visible as f64,
    },
    QueueSeries {
        name: "wharf_queue_in_flight",
        kind: "gauge",
        help: "Delivered messages whose visibility timeout has not ended.",
        value: |s| s.in_flight as f64,
    },
    QueueSeries {
        name: "wharf_queue_delayed",
        kind: "gauge",
        help: "Messages waiting out an enqueue delay or a nack's redeliver_after.",
        value: |s| s.delayed as f64,
    },
    QueueSeries {
        name: "wharf_queue_dead_letters",
        kind: "gauge",
        help: "Messages of this queue now in its dead-letter queue.",
        value: |s| s.dead_letters as f64,
    },
    QueueSeries {
        name: "wharf_queue_oldest_age_seconds",
        kind: "gauge",
        help: "Age of the oldest message; 0 when the queue is empty.",
        value: |s| s.oldest_age().map_or(0.0, |age| age.as_secs_f64()),
    },
    QueueSeries {
        name: "wharf_queue_deliveries_total",
        kind: "counter",
        help: "Deliveries made.",
        value: |s| s.deliveries as f64,
    },
    QueueSeries {
        name: "wharf_queue_acks_total",
        kind: "counter",
        help: "Messages acknowledged.",
        value: |s| s.acks as f64,
    },
    QueueSeries {
        name: "wharf_queue_nacks_total",
        kind: "counter",
        help: "Deliveries nacked.",
        value: |s| s.nacks as f64,
    },
    QueueSeries {
        name: "wharf_queue_dead_lettered_total",
        kind: "counter",
        help: "Messages moved to the dead-letter queue.",
        value: |s| s.dead_lettered as f64,
    },
];

/// Appends the per-queue series, labelled `queue`, in the exporter's format.
fn render_queue_series(queues: &[QueueInfo], out: &mut String) {
    if queues.is_empty() {
        return;
    }
    let labels: Vec<[String; 1]> = queues
        .iter()
        .map(|q| {
            [format!(
                "queue=\"{}\"",
                sanitize_label_value(q.name.as_str())
            )]
        })
        .collect();
    for series in QUEUE_SERIES {
        write_help_line(out, series.name, series.help);
        write_type_line(out, series.name, series.kind);
        for (q, labels) in queues.iter().zip(&labels) {
            write_metric_line::<&str, f64>(
                out,
                series.name,
                None,
                labels,
                None,
                (series.value)(&q.stats),
                None,
            );
        }
        out.push('\n');
    }
}

/// A queue as `/admin/queues` shows it.
#[derive(Serialize)]
struct QueueJson {
    name: QueueName,
    /// Durations in humantime (`30s`), as the config file writes them.
    settings: QueueSettings,
    stats: StatsJson,
}

#[derive(Serialize)]
struct StatsJson {
    visible: u64,
    in_flight: u64,
    delayed: u64,
    depth: u64,
    oldest_age_seconds: Option<f64>,
    dead_letters: u64,
    deliveries: u64,
    acks: u64,
    nacks: u64,
    dead_lettered: u64,
}

impl From<QueueInfo> for QueueJson {
    fn from(q: QueueInfo) -> Self {
        let s = q.stats;
        Self {
            name: q.name,
            settings: q.settings,
            stats: StatsJson {
                visible: s.visible,
                in_flight: s.in_flight,
                delayed: s.delayed,
                depth: s.depth(),
                oldest_age_seconds: s.oldest_age().map(|age| age.as_secs_f64()),
                dead_letters: s.dead_letters,
                deliveries: s.deliveries,
                acks: s.acks,
                nacks: s.nacks,
                dead_lettered: s.dead_lettered,
            },
        }
    }
}

/// `GET /admin/queues`: every queue, by name.
async fn list_queues(State(s): State<AdminState>) -> Result<Json<Vec<QueueJson>>, ApiError> {
    let queues = s.wharf.list_queues().await?;
    Ok(Json(queues.into_iter().map(Into::into).collect()))
}

/// `GET /admin/queues/{name}`: one queue.
async fn get_queue(
    State(s): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<QueueJson>, ApiError> {
    let name = QueueName::new(name).map_err(wharf::Error::invalid_queue_name)?;
    let queue = s
        .wharf
        .list_queues()
        .await?
        .into_iter()
        .find(|q| q.name == name)
        .ok_or(wharf::Error::QueueNotFound(name))?;
    Ok(Json(queue.into()))
}

/// An error as an HTTP JSON error: a domain error, or a status made for a
/// request the engine never saw, mapped as gRPC sends it.
#[derive(Debug)]
struct ApiError(Status);

impl From<wharf::Error> for ApiError {
    fn from(e: wharf::Error) -> Self {
        Self(to_status(&e))
    }
}

impl From<Status> for ApiError {
    fn from(status: Status) -> Self {
        Self(status)
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: ErrorJson,
}

#[derive(Serialize)]
struct ErrorJson {
    reason: String,
    message: String,
    metadata: HashMap<String, String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.0;
        let info = status.get_error_details().error_info().cloned();
        let code = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let (reason, metadata) = info.map_or_else(
            || (format!("{:?}", status.code()), HashMap::new()),
            |i| (i.reason, i.metadata),
        );
        let body = ErrorBody {
            error: ErrorJson {
                reason,
                message: status.message().to_owned(),
                metadata,
            },
        };
        (code, Json(body)).into_response()
    }
}
