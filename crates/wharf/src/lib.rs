//! Wharf embedded in your program: open a data directory and use event
//! streams in-process, with the same semantics the server offers over gRPC.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> wharf::Result<()> {
//! use wharf::{Config, ExpectedVersion, NewEvent, ReadDirection, StreamStart, Wharf};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let wharf = Wharf::open(&Config::embedded(dir.path())).await?;
//! let stream = "order-42".parse().unwrap();
//! wharf
//!     .append(&stream, ExpectedVersion::NoStream, vec![NewEvent::new("OrderPlaced", r#"{"total":12}"#)])
//!     .await?;
//! let events = wharf
//!     .read_stream(&stream, StreamStart::Edge, ReadDirection::Forwards, 100)
//!     .await?;
//! assert_eq!(events[0].event_type, "OrderPlaced");
//! wharf.close().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod queues;
mod validate;

use std::sync::Arc;
use std::time::Instant;

pub use wharf_core::{
    AppendOutcome, AppendResult, Clock, Config, Delivery, DequeueOptions, Durability, Enqueued,
    Error, ExpectedVersion, Limits, LogFilter, NewEvent, NewMessage, Position, QueueCreated,
    QueueInfo, QueueName, QueueSettings, QueueStats, ReadDirection, Receipt, RecordedEvent, Result,
    StorageConfig, StreamName, StreamStart, SystemClock, Timestamp,
};
use wharf_embedded::EmbeddedStore;
pub use wharf_storage::{
    AppendRequest, EventLog, QueueStore, ReadAllPage, Subscription, SubscriptionItem,
};

/// An open Wharf: the engine every interface (embedded, gRPC, CLI) calls.
///
/// Cloning is cheap and shares the same storage.
#[derive(Clone)]
pub struct Wharf {
    log: Arc<dyn EventLog>,
    queues: Arc<dyn QueueStore>,
    queue_defaults: Arc<QueueSettings>,
    limits: Limits,
}

impl Wharf {
    /// Opens the storage `config` names, on the system clock.
    ///
    /// # Errors
    /// Why the storage could not be opened, naming the path.
    pub async fn open(config: &Config) -> Result<Self> {
        Self::open_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Opens the storage `config` names, with time from `clock`.
    ///
    /// # Errors
    /// Why the storage could not be opened, naming the path.
    pub async fn open_with_clock(config: &Config, clock: Arc<dyn Clock>) -> Result<Self> {
        match &config.storage {
            StorageConfig::Embedded { path, durability } => {
                let (path, durability) = (path.clone(), *durability);
                let defaults = config.queues.defaults.clone();
                defaults.validate()?;
                let runtime = tokio::runtime::Handle::current();
                let store = tokio::task::spawn_blocking(move || {
                    let _entered = runtime.enter();
                    EmbeddedStore::open_with(&path, durability, defaults, clock)
                })
                .await
                .map_err(|e| Error::Storage(format!("opening storage failed: {e}")))??;
                let store = Arc::new(store);
                Ok(Self {
                    log: store.clone(),
                    queues: store,
                    queue_defaults: Arc::new(config.queues.defaults.clone()),
                    limits: config.limits,
                })
            }
        }
    }

    /// The limits requests are checked against.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The settings of queues created by their first enqueue.
    pub fn queue_defaults(&self) -> &QueueSettings {
        &self.queue_defaults
    }

    /// The queue port, for code that works on any backend.
    pub fn queue_store(&self) -> Arc<dyn QueueStore> {
        self.queues.clone()
    }

    /// The event-log port, for code that works on any backend.
    pub fn event_log(&self) -> Arc<dyn EventLog> {
        self.log.clone()
    }

    /// Appends `events` to `stream` atomically if `expected` holds.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty, oversized or malformed batch
    /// (nothing is written); [`Error::WrongExpectedVersion`];
    /// [`Error::EventIdConflict`]; [`Error::Unavailable`].
    pub async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome> {
        validate::batch(&events, &self.limits)?;
        let count = events.len() as u64;
        let started = Instant::now();
        let outcome = self
            .log
            .append(AppendRequest {
                stream: stream.clone(),
                expected,
                events,
            })
            .await;
        metrics::histogram!("wharf_append_duration_seconds").record(started.elapsed());
        match &outcome {
            Ok(AppendOutcome::Appended(_)) => {
                metrics::counter!("wharf_append_total", "outcome" => "appended").increment(1);
                metrics::counter!("wharf_events_appended_total").increment(count);
            }
            Ok(AppendOutcome::Duplicate(_)) => {
                metrics::counter!("wharf_append_total", "outcome" => "duplicate").increment(1);
            }
            Err(_) => {
                metrics::counter!("wharf_append_total", "outcome" => "error").increment(1);
            }
        }
        outcome
    }

    /// Reads up to `limit` events of `stream` from `start` in `direction`.
    ///
    /// # Errors
    /// [`Error::StreamNotFound`] when the stream has no events.
    pub async fn read_stream(
        &self,
        stream: &StreamName,
        start: StreamStart,
        direction: ReadDirection,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.log.read_stream(stream, start, direction, limit).await
    }

    /// Reads up to `limit` events of the log at or after `from` that pass `filter`.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn read_all(
        &self,
        from: Position,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<ReadAllPage> {
        self.log.read_all(from, filter, limit).await
    }

    /// Subscribes to the log from `from`: the backlog, then live events.
    pub fn subscribe(&self, from: Position, filter: LogFilter) -> Subscription {
        Subscription::new(self.log.clone(), from, filter)
    }

    /// The last version of `stream`, `None` if it has no events.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn stream_version(&self, stream: &StreamName) -> Result<Option<u64>> {
        self.log.stream_version(stream).await
    }

    /// The first position committed at or after `at`.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn position_at(&self, at: Timestamp) -> Result<Option<Position>> {
        self.log.position_at(at).await
    }

    /// The position the next event will get.
    pub fn head(&self) -> Position {
        *self.log.watch_head().borrow()
    }

    /// Commits everything already accepted, then releases the storage.
    pub async fn close(&self) {
        self.log.close().await;
    }
}
