//! [`EmbeddedLog`]: the [`EventLog`] of a data directory.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot, watch};
use wharf_core::{
    AppendOutcome, Clock, Durability, Error, LogFilter, NewEvent, Position, ReadDirection,
    RecordedEvent, Result, StreamName, StreamStart, Timestamp,
};
use wharf_storage::{AppendRequest, EventLog, ReadAllPage};

use crate::data_dir::{self, DirLock};
use crate::reader::{self, Readers};
use crate::schema;
use crate::writer::{Job, Writer};

/// Appends that may wait for the writer before callers feel backpressure.
const QUEUE_DEPTH: usize = 4096;

/// The event log of one data directory, on SQLite with group commit.
///
/// Open it once per directory: the directory is locked while it is open,
/// and a second open (from this or another process) fails with
/// [`Error::DataDirLocked`].
pub struct EmbeddedLog {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    head: watch::Receiver<Position>,
    readers: Arc<Readers>,
    path: PathBuf,
    _lock: DirLock,
}

impl EmbeddedLog {
    /// Opens (creating if needed) the log in the data directory `dir`.
    ///
    /// # Errors
    /// [`Error::DataDirLocked`] when another process holds the directory;
    /// [`Error::Storage`] naming the path when it cannot be created, written
    /// or read, or holds a newer schema.
    pub fn open(dir: &Path, durability: Durability, clock: Arc<dyn Clock>) -> Result<Self> {
        let lock = data_dir::lock(dir)?;
        let path = dir.join("wharf.db");
        let shown = path.display();
        let mut conn = Connection::open(&path)
            .map_err(|e| Error::Storage(format!("cannot open {shown}: {e}")))?;
        schema::configure(&conn, durability)
            .map_err(|e| Error::Storage(format!("cannot configure {shown}: {e}")))?;
        schema::migrate(&mut conn).map_err(|e| Error::Storage(format!("{shown}: {e}")))?;
        let (head_tx, head) = watch::channel(Position::START);
        let writer = Writer::new(conn, clock, head_tx)
            .map_err(|e| Error::Storage(format!("cannot read {shown}: {e}")))?;
        let (jobs, rx) = mpsc::channel(QUEUE_DEPTH);
        let handle = std::thread::Builder::new()
            .name("wharf-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::Storage(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            jobs: Mutex::new(Some(jobs)),
            writer: Mutex::new(Some(handle)),
            head,
            readers: Arc::new(Readers::new(path.clone(), durability)),
            path,
            _lock: lock,
        })
    }

    /// The SQLite database file.
    pub fn database_path(&self) -> &Path {
        &self.path
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.with(f))
            .await
            .map_err(|e| Error::Storage(format!("reader task failed: {e}")))?
    }
}

fn batch_bytes(events: &[NewEvent]) -> usize {
    events.iter().map(NewEvent::size).sum()
}

#[async_trait]
impl EventLog for EmbeddedLog {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome> {
        if request.events.is_empty() {
            return Err(Error::InvalidArgument(
                "an append needs at least one event".into(),
            ));
        }
        let jobs = self
            .jobs
            .lock()
            .map_err(|_| Error::Storage("writer handle poisoned".into()))?
            .clone()
            .ok_or_else(|| Error::Unavailable("the event log is closed".into()))?;
        let (reply, answer) = oneshot::channel();
        let bytes = batch_bytes(&request.events);
        jobs.send(Job {
            request,
            bytes,
            reply,
        })
        .await
        .map_err(|_| Error::Unavailable("the event log is closed".into()))?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the writer stopped before answering".into()))?
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        start: StreamStart,
        direction: ReadDirection,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let stream = stream.clone();
        self.read(move |c| reader::read_stream(c, &stream, start, direction, limit))
            .await
    }

    async fn read_all(
        &self,
        from: Position,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<ReadAllPage> {
        let head = *self.head.borrow();
        if from >= head {
            return Ok(ReadAllPage {
                events: Vec::new(),
                next: from,
            });
        }
        let filter = filter.clone();
        let (events, next) = self
            .read(move |c| reader::read_all(c, from, head, &filter, limit))
            .await?;
        Ok(ReadAllPage { events, next })
    }

    async fn stream_version(&self, stream: &StreamName) -> Result<Option<u64>> {
        let stream = stream.clone();
        self.read(move |c| reader::stream_version(c, &stream)).await
    }

    async fn position_at(&self, at: Timestamp) -> Result<Option<Position>> {
        let head = *self.head.borrow();
        self.read(move |c| reader::position_at(c, head, at)).await
    }

    fn watch_head(&self) -> watch::Receiver<Position> {
        self.head.clone()
    }

    /// Drops the writer's queue so it commits what is queued and exits, then
    /// waits for it.
    async fn close(&self) {
        let sender = self.jobs.lock().ok().and_then(|mut j| j.take());
        drop(sender);
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

impl Drop for EmbeddedLog {
    fn drop(&mut self) {
        // Without an explicit close, let the writer drain and exit on its own.
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
    }
}
