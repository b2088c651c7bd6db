//! Queues on the writer thread: order and timers in memory, rows in SQLite.
//!
//! Each queue keeps every message's small state (attempts, visibility, id)
//! in a `BTreeMap` by enqueue order, plus two ordered sets: `ready` (visible
//! now, by enqueue order) and `waiting` (invisible, by the time they become
//! visible). A dequeue moves the expired head of `waiting` into `ready` and
//! pops the head of `ready`; acknowledge, nack and extend find their message
//! by key. Every step is O(log n) in queue depth, and SQLite is touched only
//! by primary key. The payload stays on disk until it is delivered.
//!
//! Only the writer thread owns this state, so operations are serialised and
//! become durable with the group commit they ride in. When a commit fails,
//! the state is rebuilt from disk.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;
use uuid::Uuid;
use wharf_core::queue::{
    DEAD_LETTERED_AT, DEDUP_WINDOW, DELIVERY_ATTEMPTS, LAST_ERROR, NACKED_WITHOUT_REASON,
    ORIGINAL_STREAM_NAME, VISIBILITY_TIMEOUT_EXPIRED,
};
use wharf_core::{
    Delivery, DequeueOptions, Enqueued, Error, NewMessage, QueueCreated, QueueInfo, QueueName,
    QueueSettings, QueueStats, Receipt, Result, Timestamp,
};
use wharf_storage::receipt::{ReceiptKey, ReceiptParts};

use wharf_storage::codec::{
    decode_metadata, encode_metadata, reference_columns, reference_from_columns,
};

/// Where a writer sends one answer.
pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

/// A queue operation for the writer, with where to send its answer.
pub(crate) enum QueueCommand {
    Create {
        queue: QueueName,
        settings: QueueSettings,
        reply: Reply<QueueCreated>,
    },
    Enqueue {
        queue: QueueName,
        messages: Vec<NewMessage>,
        reply: Reply<Vec<Enqueued>>,
    },
    /// With a `park` ticket, a dequeue that finds nothing waits in the
    /// writer, and is served inside the commit that makes a message visible.
    Dequeue {
        queue: QueueName,
        options: DequeueOptions,
        park: Option<u64>,
        reply: Reply<Vec<Delivery>>,
    },
    /// Answers the parked dequeue `ticket` with nothing, unless a commit
    /// already served it: its long poll gave up.
    Unpark {
        queue: QueueName,
        ticket: u64,
    },
    /// Receipts are checked by the caller (see [`Queues::receipt_key`]):
    /// the writer, which every queue operation waits for, only looks up.
    Ack {
        queue: QueueName,
        receipts: Vec<Result<ReceiptParts>>,
        reply: Reply<Vec<Result<()>>>,
    },
    Nack {
        queue: QueueName,
        receipt: Receipt,
        redeliver_after: Duration,
        reason: Option<String>,
        reply: Reply<()>,
    },
    Reject {
        queue: QueueName,
        receipt: Receipt,
        reason: String,
        metadata: BTreeMap<String, String>,
        reply: Reply<()>,
    },
    Extend {
        queue: QueueName,
        receipt: Receipt,
        timeout: Duration,
        reply: Reply<()>,
    },
    Stats {
        queue: QueueName,
        reply: Reply<QueueStats>,
    },
    List {
        reply: Reply<Vec<QueueInfo>>,
    },
    Redrive {
        queue: QueueName,
        to: Option<QueueName>,
        reply: Reply<u64>,
    },
    Purge {
        queue: QueueName,
        reply: Reply<u64>,
    },
    Delete {
        queue: QueueName,
        reply: Reply<()>,
    },
    /// Moves every expired delivery and delay on; sent by the timer.
    Sweep {
        reply: Reply<()>,
    },
}

/// An answer computed inside a transaction, sent only after it commits.
pub(crate) enum Answer {
    Created(Reply<QueueCreated>, Result<QueueCreated>),
    Enqueued(Reply<Vec<Enqueued>>, Result<Vec<Enqueued>>),
    Delivered(Reply<Vec<Delivery>>, Result<Vec<Delivery>>),
    /// Deliveries of `queue` that took messages: given back if their
    /// dequeue is gone by the time they are sent (see [`Orphans`]).
    Served(QueueName, Reply<Vec<Delivery>>, Vec<Delivery>),
    Acked(Reply<Vec<Result<()>>>, Result<Vec<Result<()>>>),
    Done(Reply<()>, Result<()>),
    Stats(Reply<QueueStats>, Result<QueueStats>),
    Listed(Reply<Vec<QueueInfo>>, Result<Vec<QueueInfo>>),
    Counted(Reply<u64>, Result<u64>),
}

/// The answers to long polls served by a transaction.
#[derive(Default)]
pub(crate) struct Served {
    /// Deliveries only of messages the same transaction enqueued: they may
    /// be sent once it commits, before its flush. Were the commit lost in
    /// a crash, the messages would be lost with their leases, and their
    /// enqueues were never acknowledged (those wait for the flush), so no
    /// promise is broken: the consumer saw a message that, as far as any
    /// producer was told, was never enqueued. Acknowledging it is a later
    /// transaction, flushed after this one. This is what RabbitMQ and
    /// JetStream do for every delivery; here only for these, because a
    /// lost lease of an older message would lose a delivery attempt from
    /// its count.
    pub(crate) at_commit: Vec<Answer>,
    /// Everything else: sent after the flush.
    pub(crate) after_flush: Vec<Answer>,
}

/// Deliveries whose dequeue was gone when they were sent (its caller
/// cancelled it, as a consumer closing while its long poll is served
/// does), with their queue: the writer gives them back, visible again at
/// once, rather than leave them invisible until their visibility timeout.
pub(crate) type Orphans = (QueueName, Vec<Delivery>);

impl Answer {
    /// Sends the answer; returns the deliveries nobody took.
    #[must_use]
    pub(crate) fn send(self) -> Option<Orphans> {
        match self {
            Self::Served(queue, r, deliveries) => {
                return r
                    .send(Ok(deliveries))
                    .err()
                    .and_then(|unsent| unsent.ok().map(|deliveries| (queue, deliveries)));
            }
            Self::Created(r, v) => drop(r.send(v)),
            Self::Enqueued(r, v) => drop(r.send(v)),
            Self::Delivered(r, v) => drop(r.send(v)),
            Self::Acked(r, v) => drop(r.send(v)),
            Self::Done(r, v) => drop(r.send(v)),
            Self::Stats(r, v) => drop(r.send(v)),
            Self::Listed(r, v) => drop(r.send(v)),
            Self::Counted(r, v) => drop(r.send(v)),
        }
        None
    }

    /// The same answer with `error` instead: its transaction did not commit.
    pub(crate) fn fail(self, error: Error) {
        match self {
            Self::Created(r, _) => drop(r.send(Err(error))),
            Self::Enqueued(r, _) => drop(r.send(Err(error))),
            Self::Delivered(r, _) | Self::Served(_, r, _) => drop(r.send(Err(error))),
            Self::Acked(r, _) => drop(r.send(Err(error))),
            Self::Done(r, _) => drop(r.send(Err(error))),
            Self::Stats(r, _) => drop(r.send(Err(error))),
            Self::Listed(r, _) => drop(r.send(Err(error))),
            Self::Counted(r, _) => drop(r.send(Err(error))),
        }
    }
}

impl QueueCommand {
    /// Payload bytes the command carries, for sizing commit groups.
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Self::Enqueue { messages, .. } => messages.iter().map(NewMessage::size).sum(),
            _ => 0,
        }
    }
}

/// A long-polling dequeue waiting in the writer for its queue to get a
/// visible message.
struct Parked {
    ticket: u64,
    options: DequeueOptions,
    reply: Reply<Vec<Delivery>>,
}

/// The small state of one message kept in memory.
#[derive(Debug, Clone, Copy)]
struct Meta {
    message_id: Uuid,
    enqueued_at: i64,
    /// When it becomes visible; meaningful while it is in `waiting`.
    visible_at: i64,
    attempts: u32,
    /// Invisible because it is being processed (not because of a delay).
    leased: bool,
    /// The queue a dead letter came from.
    origin: Option<i64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    deliveries: u64,
    acks: u64,
    nacks: u64,
    dead_lettered: u64,
}

struct QueueState {
    id: i64,
    name: QueueName,
    settings: QueueSettings,
    messages: BTreeMap<u64, Meta>,
    ready: BTreeSet<u64>,
    waiting: BTreeSet<(i64, u64)>,
    leased: u64,
    /// Dead letters held here, by the queue they came from.
    dead_letters_from: HashMap<i64, u64>,
    counters: Counters,
    counters_dirty: bool,
}

impl QueueState {
    fn new(id: i64, name: QueueName, settings: QueueSettings) -> Self {
        Self {
            id,
            name,
            settings,
            messages: BTreeMap::new(),
            ready: BTreeSet::new(),
            waiting: BTreeSet::new(),
            leased: 0,
            dead_letters_from: HashMap::new(),
            counters: Counters::default(),
            counters_dirty: false,
        }
    }

    /// Files a message under `ready` or `waiting` by its state at `now`.
    fn place(&mut self, seq: u64, meta: Meta, now: i64) {
        if meta.visible_at <= now && !meta.leased {
            self.ready.insert(seq);
        } else {
            self.waiting.insert((meta.visible_at, seq));
            if meta.leased {
                self.leased += 1;
            }
        }
        self.messages.insert(seq, meta);
    }

    /// Takes a message out of `ready` / `waiting` (it stays in `messages`).
    fn unplace(&mut self, seq: u64, meta: &Meta) {
        if !self.ready.remove(&seq) && self.waiting.remove(&(meta.visible_at, seq)) && meta.leased {
            self.leased -= 1;
        }
    }

    fn remove(&mut self, seq: u64) -> Option<Meta> {
        let meta = self.messages.remove(&seq)?;
        self.unplace(seq, &meta);
        Some(meta)
    }

    fn stats(&self, now: i64, dead_letters: u64) -> QueueStats {
        let waiting = self.waiting.len() as u64;
        QueueStats {
            visible: self.ready.len() as u64,
            in_flight: self.leased,
            delayed: waiting - self.leased,
            oldest_age_micros: self
                .messages
                .first_key_value()
                .map(|(_, m)| now.saturating_sub(m.enqueued_at).max(0).unsigned_abs()),
            dead_letters,
            deliveries: self.counters.deliveries,
            acks: self.counters.acks,
            nacks: self.counters.nacks,
            dead_lettered: self.counters.dead_lettered,
        }
    }
}

/// Every queue of the database, as the writer sees it.
pub(crate) struct Queues {
    by_name: HashMap<QueueName, QueueState>,
    names: HashMap<i64, QueueName>,
    next_seq: u64,
    defaults: QueueSettings,
    key: ReceiptKey,
    /// Long polls waiting for a message, oldest first, by queue.
    parked: HashMap<QueueName, VecDeque<Parked>>,
    /// Queues that got a visible message in the transaction in progress.
    to_wake: Vec<QueueName>,
}

/// A failed queue operation: the caller's fault, or the database's.
pub(crate) enum QueueFailure {
    Caller(Error),
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for QueueFailure {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

type Step<T> = std::result::Result<T, QueueFailure>;

fn not_found(queue: &QueueName) -> QueueFailure {
    QueueFailure::Caller(Error::QueueNotFound(queue.clone()))
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Queues {
    /// Reads every queue and message's state from `conn`.
    pub(crate) fn load(
        conn: &Connection,
        defaults: QueueSettings,
        now: Timestamp,
    ) -> rusqlite::Result<Self> {
        let key = receipt_key(conn)?;
        let mut queues = Self {
            by_name: HashMap::new(),
            names: HashMap::new(),
            next_seq: 0,
            defaults,
            key,
            parked: HashMap::new(),
            to_wake: Vec::new(),
        };
        let mut stmt = conn.prepare(
            "SELECT id, name, max_delivery_attempts, dead_letter_queue, visibility_timeout_us, \
             deliveries, acks, nacks, dead_lettered FROM queues",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let name = parse_name(r.get(1)?)?;
            let dead_letter_queue = r.get::<_, Option<String>>(3)?.map(parse_name).transpose()?;
            let settings = QueueSettings {
                max_delivery_attempts: r.get(2)?,
                dead_letter_queue,
                visibility_timeout: Duration::from_micros(
                    r.get::<_, i64>(4)?.max(0).unsigned_abs(),
                ),
            };
            let mut state = QueueState::new(id, name.clone(), settings);
            state.counters = Counters {
                deliveries: r.get::<_, i64>(5)? as u64,
                acks: r.get::<_, i64>(6)? as u64,
                nacks: r.get::<_, i64>(7)? as u64,
                dead_lettered: r.get::<_, i64>(8)? as u64,
            };
            queues.names.insert(id, name.clone());
            queues.by_name.insert(name, state);
        }
        let now = now.as_micros();
        let mut stmt = conn.prepare(
            "SELECT seq, queue_id, message_id, enqueued_at, visible_at, attempts, leased, \
             origin_queue_id FROM message_state",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let seq = r.get::<_, i64>(0)? as u64;
            queues.next_seq = queues.next_seq.max(seq + 1);
            let queue_id: i64 = r.get(1)?;
            let Some(name) = queues.names.get(&queue_id) else {
                continue;
            };
            let id: Vec<u8> = r.get(2)?;
            let meta = Meta {
                message_id: Uuid::from_slice(&id).unwrap_or_default(),
                enqueued_at: r.get(3)?,
                visible_at: r.get(4)?,
                attempts: r.get(5)?,
                leased: r.get(6)?,
                origin: r.get(7)?,
            };
            let state = queues.by_name.get_mut(name).expect("named queues exist");
            if let Some(origin) = meta.origin {
                *state.dead_letters_from.entry(origin).or_default() += 1;
            }
            state.place(seq, meta, now);
        }
        Ok(queues)
    }

    /// The same queues read afresh from `conn`, after a failed commit; the
    /// long polls still waiting go on waiting.
    pub(crate) fn reload(&mut self, conn: &Connection, now: Timestamp) -> rusqlite::Result<Self> {
        let mut fresh = Self::load(conn, self.defaults.clone(), now)?;
        fresh.parked = std::mem::take(&mut self.parked);
        Ok(fresh)
    }

    /// The earliest time a waiting message becomes visible (or its lease
    /// expires), over every queue.
    pub(crate) fn next_deadline(&self) -> Option<Timestamp> {
        self.by_name
            .values()
            .filter_map(|q| q.waiting.first().map(|(at, _)| *at))
            .min()
            .map(Timestamp::from_micros)
    }

    /// Forgets which queues got visible messages; after each transaction.
    pub(crate) fn forget_wakes(&mut self) {
        self.to_wake.clear();
    }

    /// Serves the long polls of queues that got visible messages in the
    /// transaction in progress, oldest first, inside that transaction: a
    /// message enqueued to a waiting consumer is delivered by the commit
    /// that enqueued it, one disk flush instead of two. A database error
    /// (the second value) fails the transaction.
    ///
    /// An answer that delivers only messages enqueued by this transaction
    /// (seq `fresh_from` or later) may go out as soon as it commits, before
    /// its flush; see [`Served::at_commit`].
    pub(crate) fn serve_parked(
        &mut self,
        conn: &Connection,
        now: Timestamp,
        fresh_from: u64,
    ) -> (Served, Option<rusqlite::Error>) {
        let mut served = Served::default();
        // Serving may dead-letter, which wakes the dead-letter queue: the
        // list grows while it is walked.
        let mut i = 0;
        while let Some(queue) = self.to_wake.get(i).cloned() {
            i += 1;
            while self
                .by_name
                .get(&queue)
                .is_some_and(|q| !q.ready.is_empty())
            {
                let Some(parked) = self.parked.get_mut(&queue).and_then(VecDeque::pop_front) else {
                    break;
                };
                // A long poll whose caller went away takes nothing.
                if parked.reply.is_closed() {
                    continue;
                }
                match self.take(conn, &queue, parked.options, now.as_micros()) {
                    Ok((deliveries, oldest)) => {
                        let answer = Answer::Served(queue.clone(), parked.reply, deliveries);
                        if oldest.is_some_and(|seq| seq >= fresh_from) {
                            served.at_commit.push(answer);
                        } else {
                            served.after_flush.push(answer);
                        }
                    }
                    Err(QueueFailure::Caller(e)) => {
                        served
                            .after_flush
                            .push(Answer::Delivered(parked.reply, Err(e)));
                    }
                    Err(QueueFailure::Sqlite(e)) => {
                        let failed = Err(Error::Storage(String::new()));
                        served
                            .after_flush
                            .push(Answer::Delivered(parked.reply, failed));
                        return (served, Some(e));
                    }
                }
            }
            self.forget_if_unparked(&queue);
        }
        (served, None)
    }

    /// The key receipts are issued and checked with.
    pub(crate) fn receipt_key(&self) -> &ReceiptKey {
        &self.key
    }

    /// The seq the next enqueued message gets.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Drops `queue`'s entry of long polls once none waits.
    fn forget_if_unparked(&mut self, queue: &QueueName) {
        if self.parked.get(queue).is_some_and(VecDeque::is_empty) {
            self.parked.remove(queue);
        }
    }

    /// Runs one command inside the open transaction. The answer, if the
    /// command has one now (a parked long poll has not), is sent after the
    /// commit; a database error (the second value) fails the transaction,
    /// and with it the answer.
    pub(crate) fn apply(
        &mut self,
        conn: &Connection,
        command: QueueCommand,
        now: Timestamp,
    ) -> (Option<Answer>, Option<rusqlite::Error>) {
        macro_rules! run {
            ($variant:ident, $reply:expr, $body:expr) => {{
                let reply = $reply;
                match $body {
                    Ok(v) => (Some(Answer::$variant(reply, Ok(v))), None),
                    Err(QueueFailure::Caller(e)) => (Some(Answer::$variant(reply, Err(e))), None),
                    Err(QueueFailure::Sqlite(e)) => (
                        Some(Answer::$variant(reply, Err(Error::Storage(String::new())))),
                        Some(e),
                    ),
                }
            }};
        }
        let at = now.as_micros();
        match command {
            QueueCommand::Create {
                queue,
                settings,
                reply,
            } => run!(Created, reply, self.create(conn, &queue, settings)),
            QueueCommand::Enqueue {
                queue,
                messages,
                reply,
            } => run!(Enqueued, reply, self.enqueue(conn, &queue, messages, at)),
            QueueCommand::Dequeue {
                queue,
                options,
                park,
                reply,
            } => match (self.dequeue(conn, &queue, options, at), park) {
                (Ok(deliveries), Some(ticket)) if deliveries.is_empty() => {
                    let parked = Parked {
                        ticket,
                        options,
                        reply,
                    };
                    self.parked.entry(queue).or_default().push_back(parked);
                    (None, None)
                }
                (Ok(deliveries), _) if !deliveries.is_empty() => {
                    (Some(Answer::Served(queue, reply, deliveries)), None)
                }
                (dequeued, _) => run!(Delivered, reply, dequeued),
            },
            QueueCommand::Unpark { queue, ticket } => {
                let waiting = self.parked.get_mut(&queue);
                let found = waiting.and_then(|w| {
                    let at = w.iter().position(|p| p.ticket == ticket)?;
                    w.remove(at)
                });
                self.forget_if_unparked(&queue);
                (
                    found.map(|p| Answer::Delivered(p.reply, Ok(Vec::new()))),
                    None,
                )
            }
            QueueCommand::Ack {
                queue,
                receipts,
                reply,
            } => run!(Acked, reply, self.ack(conn, &queue, &receipts, at)),
            QueueCommand::Nack {
                queue,
                receipt,
                redeliver_after,
                reason,
                reply,
            } => run!(
                Done,
                reply,
                self.nack(conn, &queue, &receipt, redeliver_after, reason, at)
            ),
            QueueCommand::Reject {
                queue,
                receipt,
                reason,
                metadata,
                reply,
            } => run!(
                Done,
                reply,
                self.reject(conn, &queue, &receipt, &reason, metadata, at)
            ),
            QueueCommand::Extend {
                queue,
                receipt,
                timeout,
                reply,
            } => run!(
                Done,
                reply,
                self.extend(conn, &queue, &receipt, timeout, at)
            ),
            QueueCommand::Stats { queue, reply } => {
                run!(Stats, reply, self.stats(conn, &queue, at))
            }
            QueueCommand::List { reply } => run!(Listed, reply, self.list(conn, at)),
            QueueCommand::Redrive { queue, to, reply } => {
                run!(Counted, reply, self.redrive(conn, &queue, to.as_ref(), at))
            }
            QueueCommand::Purge { queue, reply } => {
                run!(Counted, reply, self.purge(conn, &queue))
            }
            QueueCommand::Delete { queue, reply } => {
                run!(Done, reply, self.delete(conn, &queue))
            }
            QueueCommand::Sweep { reply } => run!(Done, reply, self.sweep(conn, at)),
        }
    }

    /// Writes the counters of queues that changed; before the commit.
    pub(crate) fn flush_counters(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        for q in self.by_name.values_mut().filter(|q| q.counters_dirty) {
            let c = q.counters;
            conn.prepare_cached(
                "UPDATE queues SET deliveries = ?1, acks = ?2, nacks = ?3, dead_lettered = ?4 \
                 WHERE id = ?5",
            )?
            .execute(params![
                c.deliveries as i64,
                c.acks as i64,
                c.nacks as i64,
                c.dead_lettered as i64,
                q.id
            ])?;
            q.counters_dirty = false;
        }
        Ok(())
    }

    fn create(
        &mut self,
        conn: &Connection,
        queue: &QueueName,
        settings: QueueSettings,
    ) -> Step<QueueCreated> {
        match self.by_name.get(queue) {
            Some(q) if q.settings == settings => Ok(QueueCreated::Existed),
            Some(_) => Err(QueueFailure::Caller(Error::QueueExists {
                queue: queue.clone(),
            })),
            None => {
                self.insert_queue(conn, queue, settings)?;
                Ok(QueueCreated::Created)
            }
        }
    }

    fn insert_queue(
        &mut self,
        conn: &Connection,
        queue: &QueueName,
        settings: QueueSettings,
    ) -> rusqlite::Result<()> {
        conn.prepare_cached(
            "INSERT INTO queues (name, max_delivery_attempts, dead_letter_queue, \
             visibility_timeout_us) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            queue.as_str(),
            settings.max_delivery_attempts,
            settings.dead_letter_queue.as_ref().map(QueueName::as_str),
            micros(settings.visibility_timeout),
        ])?;
        let id = conn.last_insert_rowid();
        self.names.insert(id, queue.clone());
        self.by_name
            .insert(queue.clone(), QueueState::new(id, queue.clone(), settings));
        Ok(())
    }

    /// The queue, created with `settings` if it does not exist.
    fn get_or_create(
        &mut self,
        conn: &Connection,
        queue: &QueueName,
        settings: impl FnOnce() -> QueueSettings,
    ) -> rusqlite::Result<&mut QueueState> {
        if !self.by_name.contains_key(queue) {
            self.insert_queue(conn, queue, settings())?;
        }
        Ok(self.by_name.get_mut(queue).expect("inserted above"))
    }

    fn existing(&mut self, queue: &QueueName) -> Step<&mut QueueState> {
        self.by_name.get_mut(queue).ok_or_else(|| not_found(queue))
    }

    fn enqueue(
        &mut self,
        conn: &Connection,
        queue: &QueueName,
        messages: Vec<NewMessage>,
        now: i64,
    ) -> Step<Vec<Enqueued>> {
        let defaults = self.defaults.clone();
        let first_seq = self.next_seq;
        let q = self.get_or_create(conn, queue, || defaults)?;
        let mut seq = first_seq;
        let mut out = Vec::with_capacity(messages.len());
        let mut any_visible = false;
        let mut insert_state = conn.prepare_cached(
            "INSERT INTO message_state (seq, queue_id, message_id, enqueued_at, visible_at, \
             attempts, leased, origin_queue_id) VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, NULL)",
        )?;
        let mut insert_payload = conn.prepare_cached(
            "INSERT INTO message_payloads (seq, content_type, metadata, data, payload_hash, \
             payload_ref) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for message in messages {
            if let Some(dedup_id) = &message.dedup_id
                && let Some(original) = find_dedup(conn, q.id, dedup_id, now)?
            {
                out.push(Enqueued {
                    message_id: original,
                    duplicate: true,
                });
                continue;
            }
            let message_id = Uuid::now_v7();
            if let Some(dedup_id) = &message.dedup_id {
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO dedup (queue_id, dedup_id, message_id, expires_at) \
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    q.id,
                    dedup_id,
                    message_id.as_bytes(),
                    now.saturating_add(micros(DEDUP_WINDOW))
                ])?;
            }
            let (payload_hash, payload_ref) = reference_columns(message.external.as_ref());
            let meta = Meta {
                message_id,
                enqueued_at: now,
                visible_at: now.saturating_add(micros(message.delay)),
                attempts: 0,
                leased: false,
                origin: None,
            };
            insert_state.execute(params![
                seq as i64,
                q.id,
                message_id.as_bytes(),
                now,
                meta.visible_at
            ])?;
            insert_payload.execute(params![
                seq as i64,
                message.content_type,
                encode_metadata(&message.metadata),
                message.data.as_ref(),
                payload_hash,
                payload_ref,
            ])?;
            any_visible |= meta.visible_at <= now;
            q.place(seq, meta, now);
            seq += 1;
            out.push(Enqueued {
                message_id,
                duplicate: false,
            });
        }
        self.next_seq = seq;
        if any_visible {
            self.to_wake.push(queue.clone());
        }
        Ok(out)
    }

    /// Moves every message of `queue` whose time has come out of `waiting`:
    /// into `ready`, or to the dead-letter queue when an expired lease was
    /// its last allowed attempt.
    fn promote(&mut self, conn: &Connection, queue: &QueueName, now: i64) -> Step<()> {
        let mut dead = Vec::new();
        let q = self.existing(queue)?;
        let target_limit = q
            .settings
            .dead_letter_target(&q.name)
            .map(|_| q.settings.max_delivery_attempts);
        let mut woke = false;
        while let Some(&(at, seq)) = q.waiting.first() {
            if at > now {
                break;
            }
            q.waiting.pop_first();
            let meta = q.messages.get_mut(&seq).expect("waiting messages exist");
            if meta.leased {
                meta.leased = false;
                q.leased -= 1;
                if target_limit.is_some_and(|max| meta.attempts >= max) {
                    dead.push(seq);
                    continue;
                }
            }
            q.ready.insert(seq);
            woke = true;
        }
        if woke {
            self.to_wake.push(queue.clone());
        }
        for seq in dead {
            self.dead_letter(
                conn,
                queue,
                seq,
                VISIBILITY_TIMEOUT_EXPIRED,
                BTreeMap::new(),
                now,
            )?;
        }
        Ok(())
    }

    /// Moves message `seq` of `queue` to the end of its dead-letter queue.
    fn dead_letter(
        &mut self,
        conn: &Connection,
        queue: &QueueName,
        seq: u64,
        last_error: &str,
        extra: BTreeMap<String, String>,
        now: i64,
    ) -> Step<()> {
        let q = self.existing(queue)?;
        let Some(target) = q.settings.dead_letter_target(&q.name).cloned() else {
            return Ok(());
        };
        let origin = q.id;
        let meta = q.remove(seq).expect("dead-lettered messages exist");
        q.counters.dead_lettered += 1;
        q.counters_dirty = true;
        if let Some(from) = meta.origin {
            release_dead_letter(q, from);
        }
        let mut metadata = read_metadata(conn, seq)?;
        metadata.extend(extra);
        metadata.insert(ORIGINAL_STREAM_NAME.into(), queue.to_string());
        metadata.insert(DELIVERY_ATTEMPTS.into(), meta.attempts.to_string());
        metadata.insert(LAST_ERROR.into(), last_error.to_owned());
        metadata.insert(
            DEAD_LETTERED_AT.into(),
            Timestamp::from_micros(now).to_string(),
        );
        let moved = Meta {
            enqueued_at: now,
            visible_at: now,
            attempts: 0,
            leased: false,
            origin: Some(origin),
            ..meta
        };
        // A dead-letter queue made on demand keeps its messages.
        let settings = QueueSettings {
            dead_letter_queue: None,
            ..self.defaults.clone()
        };
        self.move_message(conn, seq, &target, moved, &metadata, now, settings)?;
        let dlq = self.by_name.get_mut(&target).expect("created by move");
        *dlq.dead_letters_from.entry(origin).or_default() += 1;
        Ok(())
    }

    /// Rewrites row `seq` as a new message at the end of `target`, creating
    /// `target` with `create_with` if it does not exist.
    #[allow(clippy::too_many_arguments)]
    fn move_message(
        &mut self,
        conn: &Connection,
        seq: u64,
        target: &QueueName,
        meta: Meta,
        metadata: &BTreeMap<String, String>,
        now: i64,
        create_with: QueueSettings,
    ) -> rusqlite::Result<()> {
        let new_seq = self.next_seq;
        self.next_seq += 1;
        let t = self.get_or_create(conn, target, || create_with)?;
        conn.prepare_cached(
            "UPDATE message_state SET seq = ?1, queue_id = ?2, enqueued_at = ?3, \
             visible_at = ?4, attempts = 0, leased = 0, origin_queue_id = ?5 WHERE seq = ?6",
        )?
        .execute(params![
            new_seq as i64,
            t.id,
            meta.enqueued_at,
            meta.visible_at,
            meta.origin,
            seq as i64
        ])?;
        conn.prepare_cached("UPDATE message_payloads SET seq = ?1, metadata = ?2 WHERE seq = ?3")?
            .execute(params![
                new_seq as i64,
                encode_metadata(metadata),
                seq as i64
            ])?;
        t.place(new_seq, meta, now);
        self.to_wake.push(target.clone());
        Ok(())
    }

    fn dequeue(
        &mut self,
        conn: &Connection,
        queue: &QueueName,
        options: DequeueOptions,
        now: i64,
    ) -> Step<Vec<Delivery>> {
        self.take(conn, queue, options, now)
            .map(|(deliveries, _)| deliveries)
    }

    /// A dequeue, with the lowest seq it delivered (its deliveries are in
    /// seq order).
    fn take(
        &mut self,
        conn: &Connection,
        queue: &QueueName,
        options: DequeueOptions,
        now: i64,
    ) -> Step<(Vec<Delivery>, Option<u64>)> {
        self.promote(conn, queue, now)?;
        let key = self.key.clone();
        let q = self.existing(queue)?;
        let timeout = options
            .visibility_timeout
            .unwrap_or(q.settings.visibility_timeout);
        let visible_at = now.saturating_add(micros(timeout));
        // `ready` pops in enqueue order, so `taken` is sorted by seq.
        let mut taken = Vec::with_capacity(options.max_messages as usize);
        while taken.len() < options.max_messages as usize {
            let Some(seq) = q.ready.pop_first() else {
                break;
            };
            let meta = q.messages.get_mut(&seq).expect("ready messages exist");
            meta.attempts += 1;
            meta.visible_at = visible_at;
            meta.leased = true;
            taken.push((seq, *meta));
            q.waiting.insert((visible_at, seq));
            q.leased += 1;
        }
        let Some(&(oldest, _)) = taken.first() else {
            return Ok((Vec::new(), None));
        };
        q.counters.deliveries += taken.len() as u64;
        q.counters_dirty = true;

        // One statement per run of consecutive seqs instead of one per
        // message: a batch of fresh messages is usually a single run. Every
        // seq of a run is one of `taken`, so the range touches nothing else.
        let mut lease = conn.prepare_cached(
            "UPDATE message_state SET attempts = attempts + 1, visible_at = ?1, leased = 1 \
             WHERE seq BETWEEN ?2 AND ?3",
        )?;
        let mut read = conn.prepare_cached(
            "SELECT seq, content_type, metadata, data, payload_hash, payload_ref \
             FROM message_payloads WHERE seq BETWEEN ?1 AND ?2",
        )?;
        let runs = runs(taken.iter().map(|(seq, _)| *seq));
        for &(first, last) in &runs {
            let leased = lease.execute(params![visible_at, first as i64, last as i64])?;
            if leased as u64 != last - first + 1 {
                return Err(missing_rows(first, last));
            }
        }
        let mut out = Vec::with_capacity(taken.len());
        let mut next = taken.iter();
        for (first, last) in runs {
            let mut rows = read.query(params![first as i64, last as i64])?;
            let mut found = 0;
            while let Some(r) = rows.next()? {
                let &(seq, meta) = next.next().ok_or_else(|| missing_rows(first, last))?;
                if r.get::<_, i64>(0)? as u64 != seq {
                    return Err(missing_rows(first, last));
                }
                found += 1;
                let external = reference_from_columns(r.get(4)?, r.get(5)?).map_err(|what| {
                    QueueFailure::Caller(Error::Storage(format!(
                        "{what} of queued message {seq} is corrupt"
                    )))
                })?;
                out.push(Delivery {
                    message_id: meta.message_id,
                    receipt: key.issue(
                        queue,
                        ReceiptParts {
                            seq,
                            message_id: meta.message_id,
                            attempt: meta.attempts,
                        },
                    ),
                    data: r.get::<_, Vec<u8>>(3)?.into(),
                    metadata: decode(r.get(2)?, seq)?,
                    content_type: r.get(1)?,
                    delivery_attempt: meta.attempts,
                    enqueued_at: Timestamp::from_micros(meta.enqueued_at),
                    external,
                });
            }
            if found != last - first + 1 {
                return Err(missing_rows(first, last));
            }
        }
        Ok((out, Some(oldest)))
    }

    /// The message a receipt names, if the receipt is its current delivery.
    fn leased_message(&mut self, queue: &QueueName, receipt: &Receipt) -> Step<(u64, Meta)> {
        let parts = self
            .key
            .check(queue, receipt)
            .map_err(QueueFailure::Caller)?;
        self.leased_parts(queue, &parts)
    }

    /// The message a checked receipt names, if it is its current delivery.
    fn leased_parts(&mut self, queue: &QueueName, parts: &ReceiptParts) -> Step<(u64, Meta)> {
        let q = self.existing(queue)?;
        let lost = |reason: String| {
            QueueFailure::Caller(Error::LeaseLost {
                queue: queue.clone(),
                message_id: parts.message_id,
                reason,
            })
        };
        match q.messages.get(&parts.seq) {
            Some(meta) if meta.message_id == parts.message_id => {
                if meta.attempts == parts.attempt {
                    Ok((parts.seq, *meta))
                } else {
                    Err(lost(format!(
                        "delivery attempt {} was superseded by attempt {}",
                        parts.attempt, meta.attempts
                    )))
                }
            }
            _ => Err(lost(
                "the message is no longer in the queue (acknowledged, dead-lettered or purged)"
                    .into(),
            )),
        }
    }

    fn ack(
        &mut self,
        conn: &Connection,
        queue: &QueueName,
        receipts: &[Result<ReceiptParts>],
        now: i64,
    ) -> Step<Vec<Result<()>>> {
        self.promote(conn, queue, now)?;
        let mut out = Vec::with_capacity(receipts.len());
        let mut gone = Vec::with_capacity(receipts.len());
        for parts in receipts {
            let found = match parts {
                Ok(parts) => self.leased_parts(queue, parts),
                Err(e) => Err(QueueFailure::Caller(e.clone())),
            };
            let (seq, _) = match found {
                Ok(found) => found,
                Err(QueueFailure::Caller(e)) => {
                    out.push(Err(e));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let q = self.existing(queue)?;
            let meta = q.remove(seq).expect("found above");
            if let Some(from) = meta.origin {
                release_dead_letter(q, from);
            }
            q.counters.acks += 1;
            q.counters_dirty = true;
            gone.push(seq);
            out.push(Ok(()));
        }
        gone.sort_unstable();
        delete_messages(conn, &gone)?;
        Ok(out)
    }

    fn nack(
        &mut self,
        conn: &Connection,
        queue: &QueueName,
        receipt: &Receipt,
        redeliver_after: Duration,
        reason: Option<String>,
        now: i64,
    ) -> Step<()> {
        self.promote(conn, queue, now)?;
        let (seq, meta) = self.leased_message(queue, receipt)?;
        let q = self.existing(queue)?;
        q.counters.nacks += 1;
        q.counters_dirty = true;
        let last = q.settings.dead_letter_target(&q.name).is_some()
            && meta.attempts >= q.settings.max_delivery_attempts;
        if last {
            let reason = reason.unwrap_or_else(|| NACKED_WITHOUT_REASON.to_owned());
            return self.dead_letter(conn, queue, seq, &reason, BTreeMap::new(), now);
        }
        let visible_at = now.saturating_add(micros(redeliver_after));
        self.release(conn, queue, seq, meta, visible_at, now)
    }

    /// Ends the lease of message `seq`, making it visible at `visible_at`.
    fn release(
        &mut self,
        conn: &Connection,
        queue: &QueueName,
        seq: u64,
        meta: Meta,
        visible_at: i64,
        now: i64,
    ) -> Step<()> {
        let q = self.existing(queue)?;
        q.unplace(seq, &meta);
        q.place(
            seq,
            Meta {
                visible_at,
                leased: false,
                ..meta
            },
            now,
        );
        if visible_at <= now {
            self.to_wake.push(queue.clone());
        }
        set_visibility(conn, seq, visible_at, false)?;
        Ok(())
    }

    fn reject(
        &mut self,
        conn: &Connection,
        queue: &QueueName,
        receipt: &Receipt,
        reason: &str,
        metadata: BTreeMap<String, String>,
        now: i64,
    ) -> Step<()> {
        self.promote(conn, queue, now)?;
        let (seq, meta) = self.leased_message(queue, receipt)?;
        let q = self.existing(queue)?;
        q.counters.nacks += 1;
        q.counters_dirty = true;
        if q.settings.dead_letter_target(&q.name).is_some() {
            return self.dead_letter(conn, queue, seq, reason, metadata, now);
        }
        let visible_at = now.saturating_add(micros(q.settings.visibility_timeout));
        self.release(conn, queue, seq, meta, visible_at, now)
    }

    fn extend(
        &mut self,
        conn: &Connection,
        queue: &QueueName,
        receipt: &Receipt,
        timeout: Duration,
        now: i64,
    ) -> Step<()> {
        self.promote(conn, queue, now)?;
        let (seq, meta) = self.leased_message(queue, receipt)?;
        let q = self.existing(queue)?;
        let visible_at = now.saturating_add(micros(timeout));
        q.unplace(seq, &meta);
        q.place(
            seq,
            Meta {
                visible_at,
                leased: true,
                ..meta
            },
            now,
        );
        set_visibility(conn, seq, visible_at, true)?;
        Ok(())
    }

    fn dead_letters_of(&self, q: &QueueState) -> u64 {
        q.settings
            .dead_letter_target(&q.name)
            .and_then(|t| self.by_name.get(t))
            .and_then(|dlq| dlq.dead_letters_from.get(&q.id).copied())
            .unwrap_or(0)
    }

    fn stats(&mut self, conn: &Connection, queue: &QueueName, now: i64) -> Step<QueueStats> {
        self.promote(conn, queue, now)?;
        let q = &self.by_name[queue];
        Ok(q.stats(now, self.dead_letters_of(q)))
    }

    fn list(&mut self, conn: &Connection, now: i64) -> Step<Vec<QueueInfo>> {
        self.promote_all(conn, now)?;
        let mut out: Vec<QueueInfo> = self
            .by_name
            .values()
            .map(|q| QueueInfo {
                name: q.name.clone(),
                settings: q.settings.clone(),
                stats: q.stats(now, self.dead_letters_of(q)),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn redrive(
        &mut self,
        conn: &Connection,
        queue: &QueueName,
        to: Option<&QueueName>,
        now: i64,
    ) -> Step<u64> {
        self.promote(conn, queue, now)?;
        let named = self
            .by_name
            .values()
            .any(|q| q.settings.dead_letter_target(&q.name) == Some(queue));
        let dlq = self.existing(queue)?;
        if !named && dlq.dead_letters_from.is_empty() {
            return Err(QueueFailure::Caller(Error::InvalidArgument(format!(
                "queue `{queue}` is not a dead-letter queue: no queue names it as its \
                 dead_letter_queue and it holds no dead letters"
            ))));
        }
        let movable: Vec<(u64, Meta)> = dlq
            .messages
            .iter()
            .filter(|(_, m)| !m.leased && (m.origin.is_some() || to.is_some()))
            .map(|(s, m)| (*s, *m))
            .collect();
        let mut moved = 0;
        for (seq, meta) in movable {
            let mut metadata = read_metadata(conn, seq)?;
            let Some(target) = wharf_core::queue::redrive_target(&mut metadata, to) else {
                continue;
            };
            let dlq = self.existing(queue)?;
            dlq.remove(seq);
            if let Some(from) = meta.origin {
                release_dead_letter(dlq, from);
            }
            let fresh = Meta {
                enqueued_at: now,
                visible_at: now,
                attempts: 0,
                leased: false,
                origin: None,
                ..meta
            };
            let defaults = self.defaults.clone();
            self.move_message(conn, seq, &target, fresh, &metadata, now, defaults)?;
            moved += 1;
        }
        Ok(moved)
    }

    fn purge(&mut self, conn: &Connection, queue: &QueueName) -> Step<u64> {
        let q = self.existing(queue)?;
        let seqs: Vec<u64> = q.messages.keys().copied().collect();
        delete_messages(conn, &seqs)?;
        q.messages.clear();
        q.ready.clear();
        q.waiting.clear();
        q.leased = 0;
        q.dead_letters_from.clear();
        Ok(seqs.len() as u64)
    }

    fn delete(&mut self, conn: &Connection, queue: &QueueName) -> Step<()> {
        self.purge(conn, queue)?;
        let q = self.by_name.remove(queue).expect("purged above");
        self.names.remove(&q.id);
        conn.prepare_cached("DELETE FROM dedup WHERE queue_id = ?1")?
            .execute([q.id])?;
        conn.prepare_cached("DELETE FROM queues WHERE id = ?1")?
            .execute([q.id])?;
        Ok(())
    }

    /// Promotes every queue whose next deadline has passed.
    fn promote_all(&mut self, conn: &Connection, now: i64) -> Step<()> {
        let due: Vec<QueueName> = self
            .by_name
            .values()
            .filter(|q| q.waiting.first().is_some_and(|(at, _)| *at <= now))
            .map(|q| q.name.clone())
            .collect();
        for queue in due {
            self.promote(conn, &queue, now)?;
        }
        Ok(())
    }

    /// The timer's work: promotes every queue and forgets expired dedup ids.
    fn sweep(&mut self, conn: &Connection, now: i64) -> Step<()> {
        self.promote_all(conn, now)?;
        conn.prepare_cached("DELETE FROM dedup WHERE expires_at <= ?1")?
            .execute([now])?;
        Ok(())
    }
}

/// One dead letter from queue `from` left `dlq`.
fn release_dead_letter(dlq: &mut QueueState, from: i64) {
    if let Some(n) = dlq.dead_letters_from.get_mut(&from) {
        *n -= 1;
        if *n == 0 {
            dlq.dead_letters_from.remove(&from);
        }
    }
}

/// Deletes the messages `seqs` (sorted), one statement per table and run.
fn delete_messages(conn: &Connection, seqs: &[u64]) -> rusqlite::Result<()> {
    let mut state = conn.prepare_cached("DELETE FROM message_state WHERE seq BETWEEN ?1 AND ?2")?;
    let mut payloads =
        conn.prepare_cached("DELETE FROM message_payloads WHERE seq BETWEEN ?1 AND ?2")?;
    for (first, last) in runs(seqs.iter().copied()) {
        state.execute(params![first as i64, last as i64])?;
        payloads.execute(params![first as i64, last as i64])?;
    }
    Ok(())
}

/// The runs of consecutive numbers in ascending `seqs`, as `(first, last)`.
fn runs(seqs: impl IntoIterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for seq in seqs {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == seq => *last = seq,
            _ => out.push((seq, seq)),
        }
    }
    out
}

/// Rows a range statement should have found and did not: the database
/// disagrees with the state the writer holds, so the transaction fails and
/// the writer reloads its state from disk.
fn missing_rows(first: u64, last: u64) -> QueueFailure {
    QueueFailure::Sqlite(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
        Some(format!(
            "queued messages {first}..={last} are missing from the database"
        )),
    ))
}

fn set_visibility(
    conn: &Connection,
    seq: u64,
    visible_at: i64,
    leased: bool,
) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE message_state SET visible_at = ?1, leased = ?2 WHERE seq = ?3")?
        .execute(params![visible_at, leased, seq as i64])?;
    Ok(())
}

fn read_metadata(conn: &Connection, seq: u64) -> Step<BTreeMap<String, String>> {
    let blob: Vec<u8> = conn
        .prepare_cached("SELECT metadata FROM message_payloads WHERE seq = ?1")?
        .query_row([seq as i64], |r| r.get(0))?;
    decode(blob, seq)
}

fn decode(blob: Vec<u8>, seq: u64) -> Step<BTreeMap<String, String>> {
    decode_metadata(&blob).ok_or_else(|| {
        QueueFailure::Caller(Error::Storage(format!(
            "metadata of queued message {seq} is corrupt"
        )))
    })
}

fn find_dedup(
    conn: &Connection,
    queue_id: i64,
    dedup_id: &str,
    now: i64,
) -> rusqlite::Result<Option<Uuid>> {
    let found: Option<Vec<u8>> = conn
        .prepare_cached(
            "SELECT message_id FROM dedup WHERE queue_id = ?1 AND dedup_id = ?2 AND expires_at > ?3",
        )?
        .query_row(params![queue_id, dedup_id, now], |r| r.get(0))
        .optional()?;
    Ok(found.and_then(|id| Uuid::from_slice(&id).ok()))
}

fn parse_name(name: String) -> rusqlite::Result<QueueName> {
    QueueName::new(name).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// The store's receipt key, made on first use and kept in `meta`.
fn receipt_key(conn: &Connection) -> rusqlite::Result<ReceiptKey> {
    let stored: Option<Vec<u8>> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'receipt_key'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let secret: [u8; 32] = match stored.and_then(|v| v.try_into().ok()) {
        Some(secret) => secret,
        None => {
            let mut secret = [0u8; 32];
            secret[..16].copy_from_slice(Uuid::new_v4().as_bytes());
            secret[16..].copy_from_slice(Uuid::new_v4().as_bytes());
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('receipt_key', ?1)",
                [&secret[..]],
            )?;
            secret
        }
    };
    Ok(ReceiptKey::new(secret))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rusqlite::Connection;
    use tokio::sync::oneshot;
    use wharf_core::{
        Delivery, DequeueOptions, Durability, NewMessage, QueueSettings, Result, Timestamp,
    };

    use super::{QueueCommand, Queues, runs};
    use crate::schema;

    const NOW: Timestamp = Timestamp::from_micros(1_000_000);
    const LATER: Timestamp = Timestamp::from_micros(3_000_000);

    /// A store with the queue `jobs`, empty.
    fn open() -> (Connection, Queues) {
        let mut conn = Connection::open_in_memory().unwrap();
        schema::configure(&conn, Durability::Relaxed).unwrap();
        schema::migrate(&mut conn).unwrap();
        let mut queues = Queues::load(&conn, QueueSettings::default(), NOW).unwrap();
        let (reply, _created) = oneshot::channel();
        let create = QueueCommand::Create {
            queue: "jobs".parse().unwrap(),
            settings: QueueSettings::default(),
            reply,
        };
        run(&mut queues, &conn, create, NOW);
        (conn, queues)
    }

    /// Runs `command` at `now` as the writer would, answering at once.
    fn run(queues: &mut Queues, conn: &Connection, command: QueueCommand, now: Timestamp) {
        let (answer, failed) = queues.apply(conn, command, now);
        assert!(failed.is_none());
        if let Some(answer) = answer {
            let _ = answer.send();
        }
    }

    fn enqueue(queues: &mut Queues, conn: &Connection, message: NewMessage, now: Timestamp) {
        let (reply, _answer) = oneshot::channel();
        let command = QueueCommand::Enqueue {
            queue: "jobs".parse().unwrap(),
            messages: vec![message],
            reply,
        };
        run(queues, conn, command, now);
    }

    /// Parks a long poll of one message on the empty `jobs`; its answer
    /// comes on the returned receiver.
    fn park(queues: &mut Queues, conn: &Connection) -> oneshot::Receiver<Result<Vec<Delivery>>> {
        let (reply, answer) = oneshot::channel();
        let command = QueueCommand::Dequeue {
            queue: "jobs".parse().unwrap(),
            options: DequeueOptions::default(),
            park: Some(1),
            reply,
        };
        run(queues, conn, command, NOW);
        answer
    }

    /// What a transaction at `now` that enqueues one message serves: answers at
    /// commit, answers after the flush.
    fn enqueue_and_serve(queues: &mut Queues, conn: &Connection, now: Timestamp) -> (usize, usize) {
        let fresh_from = queues.next_seq();
        enqueue(queues, conn, NewMessage::new("new"), now);
        let (served, failed) = queues.serve_parked(conn, now, fresh_from);
        assert!(failed.is_none());
        (served.at_commit.len(), served.after_flush.len())
    }

    #[test]
    fn a_long_poll_served_only_messages_of_its_transaction_is_answered_at_commit() {
        let (conn, mut queues) = open();
        let _poll = park(&mut queues, &conn);
        assert_eq!(enqueue_and_serve(&mut queues, &conn, NOW), (1, 0));
    }

    #[test]
    fn a_long_poll_served_an_older_message_waits_for_the_flush() {
        let (conn, mut queues) = open();
        let delayed = NewMessage {
            delay: Duration::from_secs(1),
            ..NewMessage::new("old")
        };
        enqueue(&mut queues, &conn, delayed, NOW);
        queues.forget_wakes();
        let _poll = park(&mut queues, &conn);
        // By LATER the delayed message is due and goes first.
        assert_eq!(enqueue_and_serve(&mut queues, &conn, LATER), (0, 1));
    }

    #[test]
    fn runs_group_consecutive_seqs() {
        assert_eq!(runs([]), Vec::<(u64, u64)>::new());
        assert_eq!(runs([7]), vec![(7, 7)]);
        assert_eq!(runs([1, 2, 3, 5, 6, 9]), vec![(1, 3), (5, 6), (9, 9)]);
    }
}
