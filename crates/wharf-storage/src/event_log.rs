//! The event-log port.

use async_trait::async_trait;
use tokio::sync::watch;
use wharf_core::{
    AppendOutcome, ExpectedVersion, LogFilter, NewEvent, Position, ReadDirection, RecordedEvent,
    Result, StreamName, StreamStart, Timestamp,
};

/// One append: events for one stream under one expectation.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// The stream.
    pub stream: StreamName,
    /// The optimistic-concurrency check.
    pub expected: ExpectedVersion,
    /// The events, appended atomically in this order; never empty.
    pub events: Vec<NewEvent>,
}

impl AppendRequest {
    /// The bytes of its events (data, metadata, type), for batching bounds.
    ///
    /// # Errors
    /// [`wharf_core::Error::InvalidArgument`] when it has no events: every
    /// backend refuses an empty append the same way.
    pub fn checked_size(&self) -> Result<usize> {
        if self.events.is_empty() {
            return Err(wharf_core::Error::InvalidArgument(
                "an append needs at least one event".to_owned(),
            ));
        }
        Ok(self.events.iter().map(NewEvent::size).sum())
    }
}

/// A page of the global log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadAllPage {
    /// Matching events in position order.
    pub events: Vec<RecordedEvent>,
    /// Where the next page starts: past every position this read looked at,
    /// matching or not.
    pub next: Position,
}

/// The durable, append-only log of events.
///
/// Why a port: the embedded engine and PostgreSQL keep the log differently
/// (one writer with group commit; many nodes under row locks), but callers
/// must not be able to tell them apart.
///
/// # Contract
///
/// - `append` is atomic: all events of the request are committed, in order,
///   with gapless stream versions (0-based) and strictly increasing global
///   positions, or none is. It returns only once the commit is durable under
///   the configured durability.
/// - A failed expectation returns [`wharf_core::Error::WrongExpectedVersion`]
///   with the actual version and writes nothing.
/// - Re-appending events whose ids are already in the stream at the same
///   versions returns [`AppendOutcome::Duplicate`] with the original result;
///   an id already used elsewhere returns
///   [`wharf_core::Error::EventIdConflict`].
/// - **Global order**: once an event at position `p` is visible to a reader,
///   every event with a position below `p` is visible too. A reader following
///   the log by position never misses an event.
/// - `created_at` never decreases as the position increases.
/// - [`EventLog::watch_head`] changes after every commit, to the position
///   after the last committed event, so followers wake without polling.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends a batch. See the contract.
    ///
    /// # Errors
    /// `WrongExpectedVersion`, `EventIdConflict`, `Unavailable`, `Storage`.
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome>;

    /// Reads up to `limit` events of one stream from `start` in `direction`.
    ///
    /// # Errors
    /// `StreamNotFound` when the stream has no events.
    async fn read_stream(
        &self,
        stream: &StreamName,
        start: StreamStart,
        direction: ReadDirection,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>>;

    /// Reads up to `limit` matching events at or after `from`, in position order.
    ///
    /// # Errors
    /// `Unavailable`, `Storage`.
    async fn read_all(
        &self,
        from: Position,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<ReadAllPage>;

    /// Deletes every event of `stream` if `expected` holds; returns how many.
    /// The stream then reads as never written: its name may be appended to
    /// again, starting at version 0, and its events no longer reference
    /// offloaded payloads. Positions of other events do not change.
    ///
    /// # Errors
    /// `StreamNotFound` when it has no events; `WrongExpectedVersion`.
    async fn delete_stream(&self, stream: &StreamName, expected: ExpectedVersion) -> Result<u64>;

    /// The last version of `stream`, or `None` when it has no events.
    ///
    /// # Errors
    /// `Unavailable`, `Storage`.
    async fn stream_version(&self, stream: &StreamName) -> Result<Option<u64>>;

    /// The first position whose event was committed at or after `at`, or
    /// `None` when every event is older.
    ///
    /// # Errors
    /// `Unavailable`, `Storage`.
    async fn position_at(&self, at: Timestamp) -> Result<Option<Position>>;

    /// The position the next committed event will get, as a watch that
    /// changes after each commit.
    fn watch_head(&self) -> watch::Receiver<Position>;

    /// Stops taking appends, finishes the commits already accepted, and
    /// releases the storage. Later appends fail with `Unavailable`.
    async fn close(&self);
}
