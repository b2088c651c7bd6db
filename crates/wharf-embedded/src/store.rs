//! [`EmbeddedStore`]: the [`EventLog`] and [`QueueStore`] of a data directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot, watch};
use wharf_core::{
    AppendOutcome, Clock, ContentHash, Delivery, DequeueOptions, Durability, Enqueued, Error,
    ExpectedVersion, LogFilter, NewMessage, Position, QueueCreated, QueueInfo, QueueName,
    QueueSettings, QueueStats, ReadDirection, Receipt, RecordedEvent, Result, StreamName,
    StreamStart, Timestamp,
};
use wharf_storage::receipt::ReceiptKey;
use wharf_storage::{
    AppendRequest, EventLog, LocalPayloadLocks, PayloadGuard, PayloadRefs, QueueStore, ReadAllPage,
};

use crate::checkpoint;
use crate::data_dir::{self, DirLock};
use crate::queue::{QueueCommand, Queues, Reply};
use crate::reader::{self, Readers};
use crate::schema;
use crate::writer::{AppendJob, DeleteJob, Job, Writer};

/// Appends that may wait for the writer before callers feel backpressure.
const QUEUE_DEPTH: usize = 4096;

/// The event log and queues of one data directory, on SQLite with group
/// commit.
///
/// Open it once per directory: the directory is locked while it is open,
/// and a second open (from this or another process) fails with
/// [`Error::DataDirLocked`].
pub struct EmbeddedStore {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    head: watch::Receiver<Position>,
    readers: Arc<Readers>,
    /// Tickets naming parked long polls.
    tickets: AtomicU64,
    clock: Arc<dyn Clock>,
    payload_locks: LocalPayloadLocks,
    /// Checks receipts before they reach the writer (see `QueueCommand::Ack`).
    receipt_key: ReceiptKey,
    path: PathBuf,
    _lock: DirLock,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in the data directory `dir`,
    /// with the default settings for queues created by their first enqueue.
    ///
    /// # Errors
    /// [`Error::DataDirLocked`] when another process holds the directory;
    /// [`Error::Storage`] naming the path when it cannot be created, written
    /// or read, or holds a newer schema.
    pub fn open(dir: &Path, durability: Durability, clock: Arc<dyn Clock>) -> Result<Self> {
        Self::open_with(dir, durability, QueueSettings::default(), clock)
    }

    /// Opens the store in `dir`; queues created by their first enqueue get
    /// `queue_defaults`.
    ///
    /// # Errors
    /// As [`EmbeddedStore::open`].
    pub fn open_with(
        dir: &Path,
        durability: Durability,
        queue_defaults: QueueSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let lock = data_dir::lock(dir)?;
        let path = dir.join("wharf.db");
        let shown = path.display();
        // Past the open, a failure may be a damaged file: say so if it is.
        let failed = |message: String| schema::failure(&path, message);
        let mut conn = Connection::open(&path)
            .map_err(|e| Error::Storage(format!("cannot open {shown}: {e}")))?;
        schema::configure(&conn, durability)
            .map_err(|e| failed(format!("cannot configure {shown}: {e}")))?;
        schema::migrate(&mut conn).map_err(|e| failed(format!("{shown}: {e}")))?;
        let queues = Queues::load(&conn, queue_defaults, clock.now())
            .map_err(|e| failed(format!("cannot read the queues of {shown}: {e}")))?;
        let receipt_key = queues.receipt_key().clone();
        let (head_tx, head) = watch::channel(Position::START);
        let (deadline_tx, deadline) = watch::channel(None);
        let checkpoint = checkpoint::spawn(&path, durability)?;
        let writer = Writer::new(
            conn,
            durability,
            clock.clone(),
            head_tx,
            queues,
            deadline_tx,
            checkpoint,
        )
        .map_err(|e| failed(format!("cannot read {shown}: {e}")))?;
        let (jobs, rx) = mpsc::channel(QUEUE_DEPTH);
        let handle = std::thread::Builder::new()
            .name("wharf-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::Storage(format!("cannot start the writer thread: {e}")))?;
        spawn_timer(clock.clone(), deadline, jobs.downgrade())?;
        Ok(Self {
            jobs: Mutex::new(Some(jobs)),
            writer: Mutex::new(Some(handle)),
            head,
            readers: Arc::new(Readers::new(path.clone(), durability)),
            tickets: AtomicU64::new(0),
            clock,
            payload_locks: LocalPayloadLocks::default(),
            receipt_key,
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

    /// Sends a log job to the writer and waits for its answer.
    async fn write<T>(&self, job: impl FnOnce(oneshot::Sender<Result<T>>) -> Job) -> Result<T> {
        let jobs = self.sender()?;
        let (reply, answer) = oneshot::channel();
        jobs.send(job(reply))
            .await
            .map_err(|_| Error::Unavailable("the event log is closed".into()))?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the writer stopped before answering".into()))?
    }

    fn sender(&self) -> Result<mpsc::Sender<Job>> {
        self.jobs
            .lock()
            .map_err(|_| Error::Storage("writer handle poisoned".into()))?
            .clone()
            .ok_or_else(|| Error::Unavailable("the store is closed".into()))
    }

    /// Sends a queue command to the writer and waits for its answer.
    async fn queue<T>(&self, command: impl FnOnce(Reply<T>) -> QueueCommand) -> Result<T> {
        let jobs = self.sender()?;
        let (reply, answer) = oneshot::channel();
        jobs.send(Job::Queue(command(reply)))
            .await
            .map_err(|_| Error::Unavailable("the store is closed".into()))?;
        answer.await.map_err(|_| {
            Error::Unavailable("the commit failed or the writer stopped before answering".into())
        })?
    }
}

/// Starts the thread that wakes the writer when the next queue message
/// becomes visible, so expired leases and delays take effect (and wake long
/// polls) without any client call. It waits on the store's clock, so a
/// test's [`wharf_core::ManualClock`] drives it; it ends with the writer.
fn spawn_timer(
    clock: Arc<dyn Clock>,
    mut deadline: watch::Receiver<Option<Timestamp>>,
    jobs: mpsc::WeakSender<Job>,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| Error::Storage(format!("cannot start the queue timer: {e}")))?;
    let run = async move {
        loop {
            let next = *deadline.borrow_and_update();
            let due = async {
                match next {
                    Some(at) => clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = deadline.changed() => {
                    if changed.is_err() {
                        return; // the writer is gone
                    }
                }
                () = due => {
                    let Some(jobs) = jobs.upgrade() else { return };
                    let (reply, answer) = oneshot::channel();
                    if jobs.send(Job::Queue(QueueCommand::Sweep { reply })).await.is_err() {
                        return;
                    }
                    drop(jobs);
                    if let Ok(Err(e)) = answer.await {
                        tracing::warn!(error = %e, "queue sweep failed");
                    }
                    // A sweep that left the deadline where it was (the clock
                    // read earlier than the timer) must not spin: wait for
                    // the next change or the same deadline again.
                    if *deadline.borrow() == next {
                        let _ = tokio::time::timeout(Duration::from_millis(1), deadline.changed()).await;
                    }
                }
            }
        }
    };
    std::thread::Builder::new()
        .name("wharf-queue-timer".into())
        .spawn(move || runtime.block_on(run))
        .map_err(|e| Error::Storage(format!("cannot start the queue timer: {e}")))?;
    Ok(())
}

#[async_trait]
impl EventLog for EmbeddedStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome> {
        let bytes = request.checked_size()?;
        self.write(|reply| {
            Job::Append(AppendJob {
                request,
                bytes,
                reply,
            })
        })
        .await
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

    async fn delete_stream(&self, stream: &StreamName, expected: ExpectedVersion) -> Result<u64> {
        let stream = stream.clone();
        self.write(|reply| {
            Job::DeleteStream(DeleteJob {
                stream,
                expected,
                reply,
            })
        })
        .await
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

#[async_trait]
impl QueueStore for EmbeddedStore {
    async fn create_queue(
        &self,
        queue: &QueueName,
        settings: &QueueSettings,
    ) -> Result<QueueCreated> {
        let (queue, settings) = (queue.clone(), settings.clone());
        self.queue(|reply| QueueCommand::Create {
            queue,
            settings,
            reply,
        })
        .await
    }

    async fn enqueue(&self, queue: &QueueName, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>> {
        let queue = queue.clone();
        self.queue(|reply| QueueCommand::Enqueue {
            queue,
            messages,
            reply,
        })
        .await
    }

    /// A long poll that finds nothing parks in the writer, which serves it
    /// inside the commit that makes a message visible (an enqueue, a nack,
    /// the timer's sweep when a delay or lease ends). When its wait is over
    /// it asks the writer to unpark it: the writer answers with nothing, or
    /// with what a commit delivered to it meanwhile, so nothing is leased to
    /// a caller that stopped waiting.
    async fn dequeue(&self, queue: &QueueName, options: DequeueOptions) -> Result<Vec<Delivery>> {
        let queue = queue.clone();
        if options.wait.is_zero() {
            return self
                .queue(|reply| QueueCommand::Dequeue {
                    queue,
                    options,
                    park: None,
                    reply,
                })
                .await;
        }
        let give_up = self.clock.now().saturating_add(options.wait);
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        let stopped = |_| Error::Unavailable("the commit failed or the writer stopped".into());
        let (reply, mut answer) = oneshot::channel();
        let park = QueueCommand::Dequeue {
            queue: queue.clone(),
            options,
            park: Some(ticket),
            reply,
        };
        // No sender is held while parked, so closing the store is not kept
        // waiting for long polls: the writer stops and drops their replies.
        self.sender()?
            .send(Job::Queue(park))
            .await
            .map_err(|_| Error::Unavailable("the store is closed".into()))?;
        tokio::select! {
            answered = &mut answer => return answered.map_err(stopped)?,
            () = self.clock.sleep_until(give_up) => {}
        }
        if let Ok(jobs) = self.sender() {
            // If the writer is gone, so is the parked reply: `answer` fails.
            let _ = jobs
                .send(Job::Queue(QueueCommand::Unpark { queue, ticket }))
                .await;
        }
        answer.await.map_err(stopped)?
    }

    async fn ack(&self, queue: &QueueName, receipts: &[Receipt]) -> Result<Vec<Result<()>>> {
        let checked = receipts.iter().map(|r| self.receipt_key.check(queue, r));
        let (receipts, queue) = (checked.collect(), queue.clone());
        self.queue(|reply| QueueCommand::Ack {
            queue,
            receipts,
            reply,
        })
        .await
    }

    async fn nack(
        &self,
        queue: &QueueName,
        receipt: &Receipt,
        redeliver_after: Duration,
        reason: Option<String>,
    ) -> Result<()> {
        let (queue, receipt) = (queue.clone(), receipt.clone());
        self.queue(|reply| QueueCommand::Nack {
            queue,
            receipt,
            redeliver_after,
            reason,
            reply,
        })
        .await
    }

    async fn reject(
        &self,
        queue: &QueueName,
        receipt: &Receipt,
        reason: String,
        metadata: std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        let (queue, receipt) = (queue.clone(), receipt.clone());
        self.queue(|reply| QueueCommand::Reject {
            queue,
            receipt,
            reason,
            metadata,
            reply,
        })
        .await
    }

    async fn extend(&self, queue: &QueueName, receipt: &Receipt, timeout: Duration) -> Result<()> {
        let (queue, receipt) = (queue.clone(), receipt.clone());
        self.queue(|reply| QueueCommand::Extend {
            queue,
            receipt,
            timeout,
            reply,
        })
        .await
    }

    async fn stats(&self, queue: &QueueName) -> Result<QueueStats> {
        let queue = queue.clone();
        self.queue(|reply| QueueCommand::Stats { queue, reply })
            .await
    }

    async fn list_queues(&self) -> Result<Vec<QueueInfo>> {
        self.queue(|reply| QueueCommand::List { reply }).await
    }

    async fn redrive(&self, dead_letter_queue: &QueueName, to: Option<&QueueName>) -> Result<u64> {
        let (queue, to) = (dead_letter_queue.clone(), to.cloned());
        self.queue(|reply| QueueCommand::Redrive { queue, to, reply })
            .await
    }

    async fn purge(&self, queue: &QueueName) -> Result<u64> {
        let queue = queue.clone();
        self.queue(|reply| QueueCommand::Purge { queue, reply })
            .await
    }

    async fn delete_queue(&self, queue: &QueueName) -> Result<()> {
        let queue = queue.clone();
        self.queue(|reply| QueueCommand::Delete { queue, reply })
            .await
    }
}

/// References live in the `payload_hash` columns of `events` and
/// `message_payloads`; the locks are process-local because the data
/// directory is locked to this process.
#[async_trait]
impl PayloadRefs for EmbeddedStore {
    async fn is_referenced(&self, hash: &ContentHash) -> Result<bool> {
        let hash = *hash;
        self.read(move |c| reader::is_referenced(c, &hash.0)).await
    }

    async fn pin(&self, hash: &ContentHash) -> Result<PayloadGuard> {
        Ok(self.payload_locks.pin(hash).await)
    }

    async fn try_reap(&self, hash: &ContentHash) -> Result<Option<PayloadGuard>> {
        Ok(self.payload_locks.try_reap(hash))
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Without an explicit close, let the writer drain and exit on its own.
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::oneshot;
    use wharf_core::{DequeueOptions, Durability, NewMessage, QueueName, QueueSettings};
    use wharf_storage::QueueStore;
    use wharf_storage::conformance::test_clock;

    use super::EmbeddedStore;
    use crate::queue::QueueCommand;
    use crate::writer::Job;

    /// A dequeue whose caller is gone by the time the writer answers it
    /// (a consumer closed while its long poll was served) took a message:
    /// the writer gives it back, visible at once, instead of leaving it
    /// invisible until its visibility timeout.
    #[tokio::test]
    async fn a_delivery_nobody_waits_for_is_given_back_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            EmbeddedStore::open(dir.path(), Durability::Relaxed, Arc::new(test_clock())).unwrap();
        let queue: QueueName = "orphans".parse().unwrap();
        store
            .create_queue(&queue, &QueueSettings::default())
            .await
            .unwrap();
        let message = NewMessage::new(&b"lost?"[..]);
        store.enqueue(&queue, vec![message]).await.unwrap();

        let (reply, gone) = oneshot::channel();
        drop(gone);
        let dequeue = QueueCommand::Dequeue {
            queue: queue.clone(),
            options: DequeueOptions::default(),
            park: None,
            reply,
        };
        store
            .sender()
            .unwrap()
            .send(Job::Queue(dequeue))
            .await
            .unwrap();

        // A long poll: the give-back may come a group after this dequeue's
        // first look (the clock is manual, so only the give-back ends it).
        let waiting = DequeueOptions {
            wait: Duration::from_secs(20),
            ..DequeueOptions::default()
        };
        let again = tokio::time::timeout(Duration::from_secs(10), store.dequeue(&queue, waiting))
            .await
            .expect("the message stayed invisible")
            .unwrap();
        assert_eq!(
            again.len(),
            1,
            "visible again before its visibility timeout"
        );
        assert_eq!(again[0].delivery_attempt, 2, "the lost delivery counts");
    }
}
