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

mod payloads;
mod queues;
mod reaper;
mod validate;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use payloads::{EVENT_ID, EVENT_POSITION, EVENT_TYPE, Subscription};
pub use reaper::CleanupReport;
pub use wharf_core::{
    AppendOutcome, AppendResult, Clock, Config, Delivery, DequeueOptions, Durability, Enqueued,
    Error, ExpectedVersion, Limits, LogFilter, NewEvent, NewMessage, Position, QueueCreated,
    QueueInfo, QueueName, QueueSettings, QueueStats, ReadDirection, Receipt, RecordedEvent, Result,
    StorageConfig, StreamName, StreamStart, SystemClock, Timestamp,
};
pub use wharf_core::{
    ContentHash, PayloadFailure, PayloadOffloadConfig, PayloadReference,
    PayloadRetrievalFailedDetails, PayloadStorageType,
};
use wharf_embedded::EmbeddedStore;
pub use wharf_payload::{PayloadStore, PayloadStoreStats};
pub use wharf_storage::{
    AppendRequest, EventLog, PayloadRefs, QueueStore, ReadAllPage, SubscriptionItem,
};

use crate::payloads::Offload;

/// Checks that the storage `config` names can be used, changing nothing:
/// for PostgreSQL, that the database answers and its schema is not newer
/// than this binary. Returns a one-line summary of what was found.
///
/// # Errors
/// `InvalidArgument` for a malformed setting; `Unavailable` when the
/// database cannot be reached or refuses the credentials; `Storage` for a
/// schema newer than this binary.
pub async fn check_storage(config: &Config) -> Result<String> {
    match &config.storage {
        StorageConfig::Embedded { path, .. } => Ok(format!(
            "embedded store in {} (opened at start)",
            path.display()
        )),
        StorageConfig::Postgres(pg) => {
            let status = wharf_postgres::PgStore::check(pg).await?;
            let schema = &pg.schema;
            Ok(match status.current {
                0 => format!(
                    "PostgreSQL reachable; schema `{schema}` is new and will be created at version {}",
                    status.latest
                ),
                v if status.needs_migration() => format!(
                    "PostgreSQL reachable; schema `{schema}` at version {v} will be migrated to {}",
                    status.latest
                ),
                v => format!("PostgreSQL reachable; schema `{schema}` at version {v} (current)"),
            })
        }
    }
}

/// An open Wharf: the engine every interface (embedded, gRPC, CLI) calls.
///
/// Cloning is cheap and shares the same storage.
#[derive(Clone)]
pub struct Wharf {
    log: Arc<dyn EventLog>,
    queues: Arc<dyn QueueStore>,
    offload: Option<Arc<Offload>>,
    clock: Arc<dyn Clock>,
    queue_defaults: Arc<QueueSettings>,
    limits: Limits,
    reaper: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
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
        config.queues.defaults.validate()?;
        let offload_config = &config.payload_offload;
        let store = if offload_config.enabled {
            validate::offload(offload_config, &config.limits)?;
            Some(PayloadStore::from_config(offload_config, clock.clone())?)
        } else {
            None
        };
        let (log, queues, refs): (Arc<dyn EventLog>, Arc<dyn QueueStore>, Arc<dyn PayloadRefs>) =
            match &config.storage {
                StorageConfig::Embedded { path, durability } => {
                    let (path, durability) = (path.clone(), *durability);
                    let defaults = config.queues.defaults.clone();
                    let runtime = tokio::runtime::Handle::current();
                    let clock = clock.clone();
                    let store = tokio::task::spawn_blocking(move || {
                        let _entered = runtime.enter();
                        EmbeddedStore::open_with(&path, durability, defaults, clock)
                    })
                    .await
                    .map_err(|e| Error::Storage(format!("opening storage failed: {e}")))??;
                    let store = Arc::new(store);
                    (store.clone(), store.clone(), store)
                }
                StorageConfig::Postgres(pg) => {
                    let store = wharf_postgres::PgStore::connect(
                        pg,
                        config.queues.defaults.clone(),
                        clock.clone(),
                    )
                    .await?;
                    let store = Arc::new(store);
                    (store.clone(), store.clone(), store)
                }
            };
        let offload = store.map(|store| {
            Arc::new(Offload {
                store,
                refs,
                threshold: Some(offload_config.threshold_bytes),
            })
        });
        let wharf = Self {
            log,
            queues,
            offload,
            clock: clock.clone(),
            queue_defaults: Arc::new(config.queues.defaults.clone()),
            limits: config.limits,
            reaper: Arc::default(),
        };
        if wharf.offload.is_some() && offload_config.reaper_interval_hours > 0 {
            let interval =
                Duration::from_secs(u64::from(offload_config.reaper_interval_hours) * 3600);
            let ttl = Duration::from_secs(u64::from(offload_config.ttl_days) * 86_400);
            let task = tokio::spawn(reaper::run(wharf.clone(), clock, interval, ttl));
            *wharf.reaper.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        }
        Ok(wharf)
    }

    /// The payload store, when payload offloading is configured.
    pub fn payload_store(&self) -> Option<&PayloadStore> {
        self.offload.as_ref().map(|o| &o.store)
    }

    /// The clock the engine runs on.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
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
        let mut events = events;
        validate::batch(&events, &self.limits, self.offload_threshold())?;
        let count = events.len() as u64;
        let started = Instant::now();
        let _pins = self
            .offload_all(events.iter_mut().map(|e| (&mut e.data, &mut e.external)))
            .await?;
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
        let mut events = self
            .log
            .read_stream(stream, start, direction, limit)
            .await?;
        self.resolve_events(&mut events).await?;
        Ok(events)
    }

    /// Deletes every event of `stream` if `expected` holds; returns how many.
    /// The name may be appended to again, starting at version 0. Offloaded
    /// payloads the events referenced become the reaper's to delete.
    ///
    /// # Errors
    /// [`Error::StreamNotFound`]; [`Error::WrongExpectedVersion`].
    pub async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
    ) -> Result<u64> {
        self.log.delete_stream(stream, expected).await
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
        let mut page = self.log.read_all(from, filter, limit).await?;
        self.resolve_events(&mut page.events).await?;
        Ok(page)
    }

    /// Subscribes to the log from `from`: the backlog, then live events.
    pub fn subscribe(&self, from: Position, filter: LogFilter) -> Subscription {
        Subscription::new(
            wharf_storage::Subscription::new(self.log.clone(), from, filter),
            self.clone(),
        )
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

    /// Stops the reaper, commits everything already accepted, then releases
    /// the storage.
    pub async fn close(&self) {
        let reaper = self.reaper.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(reaper) = reaper {
            reaper.abort();
        }
        self.log.close().await;
    }

    /// The size over which new data is offloaded, when offloading is on.
    fn offload_threshold(&self) -> Option<u64> {
        self.offload.as_ref().and_then(|o| o.threshold)
    }
}
