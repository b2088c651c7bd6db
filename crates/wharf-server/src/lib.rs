//! `wharf serve`: the gRPC API (streams, queues, the payload store), the
//! HTTP admin API and metrics over one engine.
//!
//! gRPC messages may be as large as the limits allow (see
//! [`MessageLimits`]): with payload offloading on, that is a payload of
//! `limits.max_payload_bytes` (128 MiB by default) plus room for its
//! envelope. `/metrics` includes the payload store's `payload_store_*`
//! series, registered at 0 when the server starts.
//!
//! [`Server::start`] binds both listeners and returns a [`Server`] handle;
//! [`Server::shutdown`] stops accepting, lets in-flight requests finish
//! (their commits included), ends live subscriptions and long-polling
//! dequeues, and closes storage.
#![warn(missing_docs)]

pub mod config;
pub mod grpc;
mod http;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wharf::{Config, PayloadFailure, Wharf};
use wharf_payload::metrics as payload_metrics;
use wharf_proto::v1::payloads_server::PayloadsServer;
use wharf_proto::v1::queues_server::QueuesServer;
use wharf_proto::v1::streams_server::StreamsServer;

pub use config::{ConfigError, load as load_config};
pub use wharf::check_storage;

/// Slack above the largest append batch for the request envelope.
const ENVELOPE_BYTES: usize = 1024 * 1024;
/// Wire bytes one enqueued message may take beyond what the size limits
/// count (its data, content type and metadata): field framing, the delay,
/// and a `dedup_id` of up to 128 bytes.
const MESSAGE_FRAMING_BYTES: usize = 256;
/// Wire bytes one delivery takes beyond its data, content type and
/// metadata: framing, id, receipt, attempt and timestamp.
const DELIVERY_FRAMING_BYTES: usize = 256;
/// The smallest response limit, for pages of events and lists of queues.
const MIN_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Bucket bounds, in seconds, of the payload store's latency histograms:
/// from a small local file to a large object over a slow link.
const PAYLOAD_LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The largest gRPC message each service accepts and sends, in bytes.
///
/// They follow from the limits, so raising `limits.max_payload_bytes` (or
/// the batch limits) raises them too: a request is at most a full inline
/// batch plus one payload of the largest size, and a response one page of
/// events (one event when it is large) or 100 deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    /// Append requests.
    pub streams_request: usize,
    /// Pages of read and subscription answers.
    pub streams_response: usize,
    /// Enqueue requests.
    pub queues_request: usize,
    /// Dequeue answers.
    pub queues_response: usize,
    /// Put requests and get answers of the payload store.
    pub payloads: usize,
}

impl MessageLimits {
    /// The limits the server runs with under `config`.
    pub fn of(config: &Config) -> Self {
        let limits = config.limits;
        // Data over the inline limit travels only when it is offloaded.
        let offloaded = if config.payload_offload.enabled {
            limits.max_payload_bytes
        } else {
            0
        };
        let largest_data = limits.max_event_bytes.max(offloaded);
        // The largest enqueue the limits allow, and the largest dequeue
        // answer: 100 messages of the largest data.
        let max_enqueue = limits.max_batch_bytes
            + limits
                .max_batch_events
                .saturating_mul(MESSAGE_FRAMING_BYTES)
            + ENVELOPE_BYTES;
        let max_dequeue = (wharf_core::queue::MAX_DEQUEUE_BATCH as usize)
            .saturating_mul(largest_data + DELIVERY_FRAMING_BYTES)
            .saturating_add(ENVELOPE_BYTES);
        Self {
            streams_request: limits.max_batch_bytes + offloaded + ENVELOPE_BYTES,
            streams_response: (largest_data + ENVELOPE_BYTES).max(MIN_RESPONSE_BYTES),
            queues_request: max_enqueue + offloaded,
            queues_response: max_dequeue.max(MIN_RESPONSE_BYTES),
            payloads: largest_data + ENVELOPE_BYTES,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Storage could not be opened.
    #[error(transparent)]
    Storage(#[from] wharf::Error),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind {
        /// `gRPC` or `HTTP admin`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running server.
pub struct Server {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    wharf: Wharf,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    ready: Arc<AtomicBool>,
}

/// The process-wide Prometheus recorder; installed once even when a process
/// starts several servers (as tests do).
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // The payload store's latencies as histograms (not the
            // exporter's default summaries), so they aggregate across nodes.
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Prefix("payload_store_".into()),
                    PAYLOAD_LATENCY_BUCKETS,
                )
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "payload latency buckets refused; using summaries");
                    PrometheusBuilder::new()
                });
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder was already installed; /metrics shows only Wharf's own"
                );
            }
            payload_metrics::describe();
            handle
        })
        .clone()
}

/// Registers the payload store's counters at 0, so they are on `/metrics`
/// from the start (and `rate()` over them works) rather than from their
/// first event.
fn register_payload_series(wharf: &Wharf) {
    let Some(store) = wharf.payload_store() else {
        return;
    };
    let label = store.storage_type().as_str();
    for name in [
        payload_metrics::PUT_TOTAL,
        payload_metrics::PUT_BYTES_TOTAL,
        payload_metrics::GET_TOTAL,
        payload_metrics::CLEANUP_DELETED_TOTAL,
    ] {
        metrics::counter!(name, payload_metrics::LABEL_STORE => label).increment(0);
    }
    for failure in [
        PayloadFailure::NotFound,
        PayloadFailure::IntegrityFailed,
        PayloadFailure::AccessDenied,
        PayloadFailure::Timeout,
        PayloadFailure::Unavailable,
    ] {
        metrics::counter!(
            payload_metrics::GET_ERRORS_TOTAL,
            payload_metrics::LABEL_STORE => label,
            payload_metrics::LABEL_FAILURE => failure.as_str()
        )
        .increment(0);
    }
}

/// Binds `addr`, returning the listener and the address it got (the port
/// when `addr` asks for port 0).
async fn listen(
    what: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), StartError> {
    let bound = async {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        Ok((listener, local))
    };
    bound
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

impl Server {
    /// Opens storage and starts serving on the configured addresses (port 0
    /// picks a free port; see [`Server::grpc_addr`]).
    ///
    /// # Errors
    /// [`StartError`] naming the storage path or the address.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        // Listeners first: a busy port then fails before storage is opened,
        // so there is nothing to close on that path.
        let (grpc, grpc_addr) = listen("gRPC", config.server.grpc_listen).await?;
        let (http, http_addr) = listen("HTTP admin", config.server.http_listen).await?;
        let metrics = prometheus();
        let wharf = Wharf::open(config).await?;
        register_payload_series(&wharf);

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let ready = Arc::new(AtomicBool::new(true));
        let sizes = MessageLimits::of(config);
        let streams =
            StreamsServer::new(grpc::StreamsService::new(wharf.clone(), shutdown.clone()))
                .max_decoding_message_size(sizes.streams_request)
                .max_encoding_message_size(sizes.streams_response);
        let queues = QueuesServer::new(grpc::QueuesService::new(wharf.clone(), shutdown.clone()))
            .max_decoding_message_size(sizes.queues_request)
            .max_encoding_message_size(sizes.queues_response);
        let payloads =
            PayloadsServer::new(grpc::PayloadsService::new(wharf.clone(), shutdown.clone()))
                .max_decoding_message_size(sizes.payloads)
                .max_encoding_message_size(sizes.payloads);
        let stop = shutdown.clone();
        tasks.spawn(async move {
            // `Server::tcp_nodelay` applies only to listeners tonic binds
            // itself; without it here, Nagle's algorithm and delayed ACKs
            // stall every request that spans several TCP segments.
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc).map(|conn| {
                conn.inspect(|s| {
                    if let Err(e) = s.set_nodelay(true) {
                        tracing::warn!(error = %e, "cannot set TCP_NODELAY");
                    }
                })
            });
            let served = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(streams)
                .add_service(queues)
                .add_service(payloads)
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "gRPC server failed");
            }
        });
        let admin = http::router(http::AdminState {
            wharf: wharf.clone(),
            metrics,
            ready: ready.clone(),
            shutdown: shutdown.clone(),
        });
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let served = axum::serve(http, admin)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP admin server failed");
            }
        });
        tasks.close();
        tracing::info!(%grpc_addr, %http_addr, "wharf is serving");
        Ok(Self {
            grpc_addr,
            http_addr,
            wharf,
            shutdown,
            tasks,
            ready,
        })
    }

    /// Where the gRPC API listens.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Where the HTTP admin API listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The engine this server serves.
    pub fn wharf(&self) -> &Wharf {
        &self.wharf
    }

    /// Stops accepting, waits for in-flight requests (and so their commits),
    /// ends subscriptions and long polls, then closes storage.
    pub async fn shutdown(self) {
        self.ready.store(false, Ordering::SeqCst);
        self.shutdown.cancel();
        self.tasks.wait().await;
        self.wharf.close().await;
        tracing::info!("wharf stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_limits_make_room_for_an_offloaded_payload_only_when_offloading_is_on() {
        let mut config = Config::default();
        let off = MessageLimits::of(&config);
        assert_eq!(off.streams_request, (16 << 20) + ENVELOPE_BYTES);
        assert_eq!(off.payloads, (1 << 20) + ENVELOPE_BYTES);
        config.payload_offload.enabled = true;
        let on = MessageLimits::of(&config);
        let payload = config.limits.max_payload_bytes;
        assert_eq!(on.streams_request, (16 << 20) + payload + ENVELOPE_BYTES);
        assert_eq!(on.queues_request, off.queues_request + payload);
        assert!(on.streams_response >= payload + ENVELOPE_BYTES);
        assert!(on.queues_response >= 100 * payload);
        assert_eq!(on.payloads, payload + ENVELOPE_BYTES);
        config.limits.max_payload_bytes = 300 << 20;
        assert!(MessageLimits::of(&config).payloads > 300 << 20);
    }
}
