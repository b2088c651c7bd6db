//! [`EventLog`] on PostgreSQL, shared by every node of a deployment.
//!
//! # Global order
//!
//! Readers follow the log by position and must never miss an event that
//! commits later with a lower position. A sequence cannot promise that:
//! `nextval` hands out numbers when a transaction *starts* writing, and
//! transactions commit in any order, so a reader may see position 11 commit
//! while 10 is still in flight, move past it, and never read 10.
//!
//! Positions here come from the single row of `log_head`, read and updated
//! inside the appending transaction and locked until it commits. Whoever
//! holds the lock assigns the next positions; the next appender, on this
//! node or another, waits for the commit before it reads the head. So
//! positions are assigned in commit order, and PostgreSQL makes a commit
//! visible before it releases the commit's row locks: any snapshot that shows
//! an event shows every event below it. The same row carries the newest
//! `created_at`, so `created_at = max(clock.now(), last_created_at)` never
//! decreases as positions grow, even when nodes' clocks disagree.
//!
//! The lock serializes appends across the whole deployment, so each node
//! makes the most of every hold: a batcher task takes every append queued on
//! the node and commits them in one transaction ([`batcher`]), paying for
//! one lock and one flush of the write-ahead log for all of them.
//!
//! # Waking followers
//!
//! [`EventLog::watch_head`] advances when this node's batcher commits, and
//! when another node's commit is announced: each appending transaction sends
//! `pg_notify(channel, 'e:<next position>')`, delivered to every node at
//! commit ([`head`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use wharf_core::{
    AppendOutcome, Error, ExpectedVersion, LogFilter, Position, ReadDirection, RecordedEvent,
    Result, StreamName, StreamStart, Timestamp,
};
use wharf_storage::{AppendRequest, EventLog, ReadAllPage};

use crate::{PgStore, Shared};

mod batcher;
mod delete;
mod head;
mod read;
mod rows;

/// Appends that may wait for the batcher before callers feel backpressure.
const QUEUE_DEPTH: usize = 1024;

/// The longest any one database round of the log may take before the
/// request fails as `Unavailable`: a connection that stops answering must
/// not hang callers, or wedge the batcher behind them.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// The node's side of the event log: the batcher's queue and the head watch.
pub(crate) struct Events {
    jobs: Mutex<Option<mpsc::Sender<batcher::Job>>>,
    batcher: Mutex<Option<JoinHandle<()>>>,
    follower: JoinHandle<()>,
    head: watch::Receiver<Position>,
}

impl Events {
    /// Reads the head and starts the batcher and the task that follows other
    /// nodes' commits.
    ///
    /// # Errors
    /// `Unavailable` when the head cannot be read.
    pub(crate) async fn start(shared: Arc<Shared>) -> Result<Self> {
        // Subscribed before the head is read, so a commit in between is
        // announced to us rather than lost.
        let signals = shared.listener().subscribe("e");
        let initial = head::read(&shared).await?;
        let (sender, head) = watch::channel(initial);
        let sender = Arc::new(sender);
        let follower = tokio::spawn(head::follow(shared.clone(), signals, sender.clone()));
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        let batcher = tokio::spawn(batcher::run(shared, queue, sender));
        Ok(Self {
            jobs: Mutex::new(Some(jobs)),
            batcher: Mutex::new(Some(batcher)),
            follower,
            head,
        })
    }

    fn sender(&self) -> Result<mpsc::Sender<batcher::Job>> {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| Error::Unavailable("the event log is closed".to_owned()))
    }

    /// Refuses new appends, lets the batcher commit what it accepted, and
    /// stops following the head (which closes the head watch).
    async fn close(&self) {
        drop(
            self.jobs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let batcher = self
            .batcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(batcher) = batcher {
            let _ = batcher.await;
        }
        self.follower.abort();
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        // The batcher drains what it accepted and ends once its queue closes.
        self.jobs
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.follower.abort();
    }
}

/// Runs one database round under [`DEADLINE`].
pub(crate) async fn timed<T>(doing: &str, round: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(DEADLINE, round)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Unavailable(format!(
                "PostgreSQL did not answer within {} s ({doing})",
                DEADLINE.as_secs()
            )))
        })
}

#[async_trait]
impl EventLog for PgStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome> {
        let bytes = request.checked_size()?;
        let jobs = self.events.sender()?;
        let (reply, answer) = oneshot::channel();
        jobs.send(batcher::Job {
            request,
            bytes,
            reply,
        })
        .await
        .map_err(|_| Error::Unavailable("the event log is closed".to_owned()))?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the event log stopped before answering".to_owned()))?
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        start: StreamStart,
        direction: ReadDirection,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        read::read_stream(&self.shared, stream, start, direction, limit).await
    }

    async fn read_all(
        &self,
        from: Position,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<ReadAllPage> {
        read::read_all(&self.shared, from, filter, limit).await
    }

    async fn delete_stream(&self, stream: &StreamName, expected: ExpectedVersion) -> Result<u64> {
        delete::delete_stream(&self.shared, stream, expected).await
    }

    async fn stream_version(&self, stream: &StreamName) -> Result<Option<u64>> {
        read::stream_version(&self.shared, stream).await
    }

    async fn position_at(&self, at: Timestamp) -> Result<Option<Position>> {
        read::position_at(&self.shared, at).await
    }

    fn watch_head(&self) -> watch::Receiver<Position> {
        self.events.head.clone()
    }

    async fn close(&self) {
        self.events.close().await;
        self.shared.close();
    }
}
