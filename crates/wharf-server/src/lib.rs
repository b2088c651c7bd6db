//! `wharf serve`: the gRPC API, the HTTP admin API and metrics over one
//! engine.
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

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wharf::{Config, Wharf};
use wharf_proto::v1::queues_server::QueuesServer;
use wharf_proto::v1::streams_server::StreamsServer;

pub use config::{ConfigError, load as load_config};

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
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder was already installed; /metrics shows only Wharf's own"
                );
            }
            handle
        })
        .clone()
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

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let ready = Arc::new(AtomicBool::new(true));
        let limits = config.limits;
        let max_message = limits.max_batch_bytes + ENVELOPE_BYTES;
        let streams =
            StreamsServer::new(grpc::StreamsService::new(wharf.clone(), shutdown.clone()))
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message.max(MIN_RESPONSE_BYTES));
        // The largest enqueue the limits allow, and the largest dequeue
        // answer: 100 messages at the inline limit.
        let max_enqueue = limits.max_batch_bytes
            + limits
                .max_batch_events
                .saturating_mul(MESSAGE_FRAMING_BYTES)
            + ENVELOPE_BYTES;
        let max_dequeue = (wharf_core::queue::MAX_DEQUEUE_BATCH as usize)
            .saturating_mul(limits.max_event_bytes + DELIVERY_FRAMING_BYTES)
            + ENVELOPE_BYTES;
        let queues = QueuesServer::new(grpc::QueuesService::new(wharf.clone(), shutdown.clone()))
            .max_decoding_message_size(max_enqueue)
            .max_encoding_message_size(max_dequeue.max(MIN_RESPONSE_BYTES));
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
