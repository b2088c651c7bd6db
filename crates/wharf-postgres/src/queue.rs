//! [`QueueStore`] on PostgreSQL: every node serves every queue; the
//! database holds all state, notifications and per-node timers make waits
//! and timeouts prompt.
//!
//! # Tables
//!
//! `queues` holds names and settings (with `attempt_limit`, the attempts
//! limit when the queue dead-letters, else NULL). `messages` holds one row
//! per live message, in one of three states:
//!
//! - **fresh** (`fresh = true`): enqueued without a delay and, at most,
//!   delivered once by the queue's cursor, which a lease row records for
//!   the whole dequeue (see `fresh`): visible when after the cursor, in
//!   flight when a lease holds it. Fresh rows are in neither partial index;
//!   dequeues find them through the primary key from the cursor on.
//! - **ready** (`ready = true`): visible now. The partial index
//!   `messages_ready (queue_id, seq) WHERE ready` orders them by enqueue
//!   order (`seq`, one global sequence).
//! - **waiting**: delayed, nacked with a delay, or in flight until
//!   `visible_at` (`leased` tells in flight from delayed). The partial index
//!   `messages_waiting (queue_id, visible_at) WHERE NOT ready` orders them by
//!   due time.
//!
//! A dequeue reads only the head of `messages_ready` and the fresh rows
//! after the cursor, so in-flight and delayed rows, however many, are never
//! scanned: it is O(log n) in queue depth. The primary key is `(queue_id, seq)`, a superset of
//! `messages_ready` in the same order, so the planner keeps choosing the
//! partial index (a key on `seq` alone is smaller, and the planner takes it,
//! filtering `ready` row by row through every in-flight row at the head).
//! Acknowledged messages are deleted. Against bloat under churn the table
//! has aggressive, unthrottled autovacuum settings, and every round reports
//! the rows it made dead to the node's vacuum trigger (`crate::vacuum`),
//! which vacuums long before autovacuum's next look. Dequeue updates cannot
//! be HOT (they move a row between the two partial indexes); the fillfactor
//! of 70 keeps the new version on the same page, so its WAL record is
//! compressed against the old one and `data`, the last column, is not
//! logged again. Stats count rows (O(depth)); nothing on the hot path does.
//!
//! # Dequeue and acknowledge
//!
//! A dequeue runs three statements in one transaction:
//!
//! 1. *promote*: waiting rows of the queue whose `visible_at` has passed on
//!    the store's clock become ready (found through `messages_waiting`, so
//!    an empty check costs one index probe), and the fresh messages of its
//!    expired leases are rewritten as ordinary rows; it also reports
//!    whether an expired **last** attempt waits to be dead-lettered.
//! 2. the lock of the queue's cursor row.
//! 3. *deliver*: the first `n` by `seq` of the ready rows (pgmq style,
//!    `FOR UPDATE SKIP LOCKED`, each updated: `visible_at = now + timeout`,
//!    `attempts + 1`) and of the fresh rows after the cursor (read; the
//!    cursor moves past them and one lease row records them), counted in a
//!    counter shard, all committed before the rows are returned.
//!
//! So a first delivery writes no message row: a dequeue of 100 fresh
//! messages writes the cursor and one lease instead of 100 row versions
//! with their index entries. Redeliveries, delays and nacks take the
//! ordinary path.
//!
//! An acknowledgement is one `DELETE` of every receipt that still names its
//! message's current delivery (for a fresh message: while it is still
//! fresh), which also counts fresh messages out of their leases and deletes
//! the leases it empties. On each node, the enqueues,
//! dequeues and acknowledgements of a queue that arrive while a round for it
//! runs are combined into the next round: one transaction sent as one
//! pipeline (one round trip, one commit) for all of them (see `combine`).
//!
//! An expired last attempt is never made ready: every statement that could
//! deliver, acknowledge, nack or extend it excludes it, and it moves to the
//! dead-letter target (created with the defaults if missing) in one
//! transaction that locks it (`FOR UPDATE`) — the dequeue's own follow-up,
//! a stats or list call, or any node's timer (`SKIP LOCKED`, so timers on
//! several nodes never wait on each other; at REPEATABLE READ, so a row
//! another transaction just moved makes the timer retry rather than stay
//! locked by it, which would hide it from dequeues' `SKIP LOCKED`).
//!
//! # Wake-ups and timers
//!
//! Whatever makes a message visible sends `pg_notify(channel, 'q:<queue>')`
//! in its transaction, once per queue; each node's listener fans
//! notifications out to the long polls waiting on that node, and a
//! reconnect wakes them all. Enqueues are the exception that matters:
//! PostgreSQL serializes the commits of notifying transactions, so an
//! enqueue notifies only when a long poll of *another* node is registered
//! in `queue_waiters` (its own node's polls it wakes in memory after the
//! commit). A poll registers when it first finds its queue empty and then
//! looks once more before waiting; registering takes the queue's advisory
//! lock key exclusively, an enqueue takes it shared, so each enqueue either
//! commits before the poll's second look or sees the registration.
//! Registrations expire a second after their poll's wait.
//!
//! The same key keeps a queue from being deleted under an insert: a delete
//! takes it exclusively before removing the queue's rows, an enqueue (or a
//! dead-letter move, or a redrive into the queue) shares it. An advisory
//! lock rather than `FOR KEY SHARE` on the queue's row, which concurrent
//! producers would each have to write.
//!
//! Each node runs one timer task sleeping on the store's clock until the
//! earliest due time it knows. It learns due times from its own writes,
//! from `SELECT min(visible_at)` over `messages_waiting` after each fire,
//! and from `t:<micros>` notifications, which a write sends only when its
//! due time is earlier than the earliest one already announced. When it
//! fires it promotes every due row (notifying their queues), dead-letters
//! expired last attempts, forgets expired dedup ids, and reads the next
//! due time. With nothing due it still looks every ten seconds of clock
//! time, so rows whose writer died are not left waiting; there is no
//! polling loop.
//!
//! # Counters
//!
//! `deliveries`, `acks`, `nacks` and `dead_lettered` live in
//! `queue_counters`, one row per queue and shard; each transaction adds to
//! the shard this node picks next (round robin), and stats sum the shards.
//! Consumers on different connections do not serialize on one hot row.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use wharf_core::{
    Delivery, DequeueOptions, Enqueued, NewMessage, QueueCreated, QueueInfo, QueueName,
    QueueSettings, QueueStats, Receipt, Result,
};
use wharf_storage::QueueStore;
use wharf_storage::receipt::ReceiptKey;

use crate::listener::{self, Signal};
use crate::{PgStore, Shared};

mod admin;
mod combine;
mod dead;
mod deliver;
mod fresh;
mod step;
mod timer;
mod wake;

/// Counter shards per queue.
const SHARDS: usize = 16;

/// The queue half of a [`PgStore`]: its receipt key, the long polls waiting
/// on this node, and the tasks that wake them.
pub(crate) struct Queues {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

/// What queue operations share.
pub(crate) struct Inner {
    shared: Arc<Shared>,
    key: ReceiptKey,
    wakers: wake::Wakers,
    schedule: wake::Schedule,
    combiner: combine::Combiner,
    next_shard: AtomicUsize,
    /// This node, as the waiters it registers name it.
    node: uuid::Uuid,
}

impl Queues {
    /// Reads (or makes) the receipt key every node shares, and starts the
    /// notification fan-out and the timer.
    ///
    /// # Errors
    /// `Unavailable` when the database cannot be reached.
    pub(crate) async fn start(shared: Arc<Shared>) -> Result<Self> {
        let key = admin::receipt_key(&shared).await?;
        let inner = Arc::new(Inner {
            shared,
            key,
            wakers: wake::Wakers::default(),
            schedule: wake::Schedule::default(),
            combiner: combine::Combiner::default(),
            next_shard: AtomicUsize::new(rand::random_range(0..SHARDS)),
            node: uuid::Uuid::new_v4(),
        });
        // Fire once at start: rows may have fallen due while no node ran.
        inner.schedule.at(inner.shared.clock().now());
        let wakeups = inner.shared.listener().subscribe("q");
        let announcements = inner.shared.listener().subscribe("t");
        let tasks = vec![
            tokio::spawn(fan_out(inner.clone(), wakeups, announcements)),
            tokio::spawn(timer::run(inner.clone())),
        ];
        Ok(Self { inner, tasks })
    }
}

impl Drop for Queues {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Inner {
    /// The counter shard of the next transaction.
    fn shard(&self) -> i16 {
        let n = self.next_shard.fetch_add(1, Ordering::Relaxed) % SHARDS;
        i16::try_from(n).unwrap_or(0)
    }

    /// Settings of a dead-letter queue made by its first dead letter.
    fn dead_letter_settings(&self) -> QueueSettings {
        QueueSettings {
            dead_letter_queue: None,
            ..self.shared.queue_defaults().clone()
        }
    }
}

/// Wakes this node's long polls for `q:` notifications and feeds `t:`
/// announcements to the timer; after a reconnect, wakes everything and
/// fires the timer, since notifications were missed.
async fn fan_out(
    inner: Arc<Inner>,
    mut wakeups: tokio::sync::broadcast::Receiver<Signal>,
    mut announcements: tokio::sync::broadcast::Receiver<Signal>,
) {
    let resync = |inner: &Inner| {
        inner.wakers.wake_all();
        inner.schedule.at(wharf_core::Timestamp::EPOCH);
    };
    loop {
        tokio::select! {
            signal = listener::recv(&mut wakeups) => match signal {
                Some(Signal::Notified(queue)) => inner.wakers.wake(&queue),
                Some(Signal::Resync) => resync(&inner),
                None => return,
            },
            signal = listener::recv(&mut announcements) => match signal {
                Some(Signal::Notified(at)) => match at.parse::<i64>() {
                    Ok(at) => inner.schedule.heard(wharf_core::Timestamp::from_micros(at)),
                    Err(_) => tracing::warn!(payload = %at, "ignoring a malformed due-time announcement"),
                },
                Some(Signal::Resync) => resync(&inner),
                None => return,
            },
        }
    }
}

#[async_trait]
impl QueueStore for PgStore {
    async fn create_queue(
        &self,
        queue: &QueueName,
        settings: &QueueSettings,
    ) -> Result<QueueCreated> {
        self.queues.inner.create_queue(queue, settings).await
    }

    async fn enqueue(&self, queue: &QueueName, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>> {
        self.queues.inner.enqueue(queue, messages).await
    }

    async fn dequeue(&self, queue: &QueueName, options: DequeueOptions) -> Result<Vec<Delivery>> {
        self.queues.inner.dequeue(queue, options).await
    }

    async fn ack(&self, queue: &QueueName, receipts: &[Receipt]) -> Result<Vec<Result<()>>> {
        self.queues.inner.ack(queue, receipts).await
    }

    async fn nack(
        &self,
        queue: &QueueName,
        receipt: &Receipt,
        redeliver_after: Duration,
        reason: Option<String>,
    ) -> Result<()> {
        self.queues
            .inner
            .nack(queue, receipt, redeliver_after, reason)
            .await
    }

    async fn reject(
        &self,
        queue: &QueueName,
        receipt: &Receipt,
        reason: String,
        metadata: BTreeMap<String, String>,
    ) -> Result<()> {
        self.queues
            .inner
            .reject(queue, receipt, reason, metadata)
            .await
    }

    async fn extend(&self, queue: &QueueName, receipt: &Receipt, timeout: Duration) -> Result<()> {
        self.queues.inner.extend(queue, receipt, timeout).await
    }

    async fn stats(&self, queue: &QueueName) -> Result<QueueStats> {
        self.queues.inner.stats(queue).await
    }

    async fn list_queues(&self) -> Result<Vec<QueueInfo>> {
        self.queues.inner.list_queues().await
    }

    async fn redrive(&self, dead_letter_queue: &QueueName, to: Option<&QueueName>) -> Result<u64> {
        self.queues.inner.redrive(dead_letter_queue, to).await
    }

    async fn purge(&self, queue: &QueueName) -> Result<u64> {
        self.queues.inner.purge(queue).await
    }

    async fn delete_queue(&self, queue: &QueueName) -> Result<()> {
        self.queues.inner.delete_queue(queue).await
    }
}
