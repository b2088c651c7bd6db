//! The writer thread: group commit of appends and queue operations.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::c_int;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, TryLockError};
use std::time::Duration;

use rusqlite::hooks::Wal;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot, watch};
use wharf_core::{
    AppendOutcome, AppendResult, Clock, Durability, Error, ExpectedVersion, NewEvent, Position,
    Result, StreamName, Timestamp,
};
use wharf_storage::{AppendRequest, ORPHANED};

use crate::checkpoint::{self, Checkpoints, Copied};
use crate::queue::{Answer, Orphans, QueueCommand, Queues};
use crate::schema;
use wharf_storage::codec::{encode_metadata, reference_columns};

/// Most appends one transaction carries; bounds the latency a large group
/// adds to its first member.
const MAX_GROUP: usize = 1024;
/// Most payload bytes one transaction carries.
const MAX_GROUP_BYTES: usize = 32 * 1024 * 1024;
/// Past this many WAL bytes since its last checkpoint, the writer
/// checkpoints itself before its next group, first waiting for a
/// checkpoint of the checkpoint thread to end if one is running: the bound
/// on the WAL (plus one group).
const WAL_BUDGET: usize = 32 * 1024 * 1024;
/// The writer's own checkpoint stalls its next group by two flushes, so it
/// catches up with the checkpoint thread only once about this many WAL
/// bytes were written since its last one.
const CATCH_UP_AFTER: usize = 16 * 1024 * 1024;
/// Streams whose id and version the writer remembers; past this the cache
/// starts over, costing one indexed lookup per stream.
const STREAM_CACHE: usize = 100_000;

/// A request to the writer, with where to send the answer.
pub(crate) enum Job {
    Append(AppendJob),
    DeleteStream(DeleteJob),
    Queue(QueueCommand),
}

/// A stream deletion, with where to send the answer.
pub(crate) struct DeleteJob {
    pub(crate) stream: StreamName,
    pub(crate) expected: ExpectedVersion,
    pub(crate) reply: oneshot::Sender<Result<u64>>,
}

/// An append, with where to send the answer.
pub(crate) struct AppendJob {
    pub(crate) request: AppendRequest,
    pub(crate) bytes: usize,
    pub(crate) reply: oneshot::Sender<Result<AppendOutcome>>,
}

impl Job {
    fn bytes(&self) -> usize {
        match self {
            Self::Append(job) => job.bytes,
            Self::DeleteStream(_) => 0,
            Self::Queue(command) => command.bytes(),
        }
    }
}

/// An answer held until its group commits.
enum Pending {
    Append(
        oneshot::Sender<Result<AppendOutcome>>,
        Result<AppendOutcome>,
    ),
    Delete(oneshot::Sender<Result<u64>>, Result<u64>),
    Queue(Answer),
}

impl Pending {
    /// Sends the answer; returns deliveries nobody took (see [`Orphans`]).
    fn send(self) -> Option<Orphans> {
        match self {
            Self::Append(reply, result) => drop(reply.send(result)),
            Self::Delete(reply, result) => drop(reply.send(result)),
            Self::Queue(answer) => return answer.send(),
        }
        None
    }

    fn fail(self, error: Error) {
        match self {
            Self::Append(reply, _) => drop(reply.send(Err(error))),
            Self::Delete(reply, _) => drop(reply.send(Err(error))),
            Self::Queue(answer) => answer.fail(error),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct StreamState {
    id: i64,
    last: Option<u64>,
}

/// State the writer owns; changed only after a commit succeeds.
pub(crate) struct Writer {
    conn: Connection,
    /// Flushes each commit to disk, under `durability: full`.
    wal: Option<WalSync>,
    clock: Arc<dyn Clock>,
    head: watch::Sender<Position>,
    queues: Queues,
    /// The next time a queue message becomes visible; the timer waits for it.
    deadline: watch::Sender<Option<Timestamp>>,
    /// The checkpoint thread: nudged after commits; says when it caught up.
    checkpoints: Checkpoints,
    /// WAL bytes written since the writer's last checkpoint or the WAL's
    /// last restart, counted from the frames SQLite reports at each commit.
    unchecked: usize,
    /// Frames in the WAL after the last commit; fewer after the next one
    /// means the WAL started over.
    wal_frames: usize,
    /// Bytes of one WAL frame's page.
    page_size: usize,
    next_position: u64,
    last_created_at: Timestamp,
    streams: HashMap<String, StreamState>,
    /// Deliveries whose dequeue was gone when they were answered: given
    /// back by the next group, which runs at once (see [`Orphans`]).
    orphans: Vec<Orphans>,
}

/// What a transaction in progress has changed, merged into the writer's
/// state once it commits.
struct Staged {
    next_position: u64,
    streams: HashMap<String, StreamState>,
}

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        durability: Durability,
        clock: Arc<dyn Clock>,
        head: watch::Sender<Position>,
        queues: Queues,
        deadline: watch::Sender<Option<Timestamp>>,
        checkpoints: Checkpoints,
    ) -> rusqlite::Result<Self> {
        // Checkpoints run on their own thread; see `checkpoint`. Turning
        // automatic checkpoints off replaces the WAL hook, so the hook that
        // counts frames goes in after.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.wal_hook(Some(note_wal_frames));
        let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
        let wal = match durability {
            Durability::Full => Some(WalSync::new(&conn)?),
            Durability::Relaxed => None,
        };
        let mut writer = Self {
            conn,
            wal,
            clock,
            head,
            queues,
            deadline,
            checkpoints,
            unchecked: 0,
            wal_frames: 0,
            page_size: usize::try_from(page_size).unwrap_or(4096),
            next_position: 0,
            last_created_at: Timestamp::EPOCH,
            streams: HashMap::new(),
            orphans: Vec::new(),
        };
        writer.reload()?;
        Ok(writer)
    }

    /// Reads the log's head from disk; after open and after a failed commit.
    fn reload(&mut self) -> rusqlite::Result<()> {
        let (max, created): (Option<i64>, Option<i64>) = self
            .conn
            .query_row(
                "SELECT position, created_at FROM events ORDER BY position DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .unwrap_or((None, None));
        self.next_position = max.map_or(0, |p| p as u64 + 1);
        self.last_created_at = Timestamp::from_micros(created.unwrap_or(0));
        self.streams.clear();
        self.head.send_replace(Position(self.next_position));
        self.deadline.send_replace(self.queues.next_deadline());
        Ok(())
    }

    /// Serves jobs until every sender is gone, then returns.
    pub(crate) fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        loop {
            // Orphaned deliveries are given back by a group that runs at
            // once, without waiting for a job.
            group.extend(self.give_back());
            if group.is_empty() {
                match jobs.blocking_recv() {
                    Some(first) => group.push(first),
                    None => return,
                }
            }
            let mut bytes: usize = group.iter().map(Job::bytes).sum();
            while group.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
                match jobs.try_recv() {
                    Ok(job) => {
                        bytes += job.bytes();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(&mut group);
        }
    }

    /// Jobs that give the orphaned deliveries back: a nack of each,
    /// visible again at once (the attempt counts, as it would once its
    /// visibility timeout ended). Nobody waits for their answers.
    fn give_back(&mut self) -> Vec<Job> {
        let mut jobs = Vec::new();
        for (queue, deliveries) in self.orphans.drain(..) {
            jobs.extend(deliveries.into_iter().map(|delivery| {
                Job::Queue(QueueCommand::Nack {
                    queue: queue.clone(),
                    receipt: delivery.receipt,
                    redeliver_after: Duration::ZERO,
                    reason: Some(ORPHANED.to_owned()),
                    reply: oneshot::channel().0,
                })
            }));
        }
        jobs
    }

    /// A PASSIVE checkpoint on the writer's connection, between groups.
    /// With `wait`, a checkpoint the checkpoint thread is running is waited
    /// for first; without, the writer gives up if one is. The count starts
    /// over also when readers kept some frames from being copied (trying at
    /// every group would flush at every group).
    fn checkpoint(&mut self, wait: bool) {
        let running = self.checkpoints.running.clone();
        let _running = match running.try_lock() {
            Ok(held) => held,
            Err(TryLockError::Poisoned(held)) => held.into_inner(),
            Err(TryLockError::WouldBlock) if wait => {
                running.lock().unwrap_or_else(PoisonError::into_inner)
            }
            Err(TryLockError::WouldBlock) => return,
        };
        match checkpoint::passive(&self.conn) {
            Ok(Copied::Busy) => {}
            Ok(Copied::All | Copied::Some) => self.unchecked = 0,
            Err(e) => {
                tracing::warn!(error = %e, "the writer's WAL checkpoint failed");
                self.unchecked = 0;
            }
        }
    }

    fn commit_group(&mut self, group: &mut Vec<Job>) {
        if self.unchecked > WAL_BUDGET {
            // The checkpoint thread is falling behind (starved of CPU or
            // disk): copy everything here rather than let the WAL grow.
            self.checkpoint(true);
        } else if self.unchecked > CATCH_UP_AFTER
            && self.checkpoints.caught_up.swap(false, Ordering::Acquire)
        {
            // The checkpoint thread copied all it saw: copy what committed
            // since, so this group starts the WAL over (see `checkpoint`).
            self.checkpoint(false);
        }
        let now = self.clock.now().max(self.last_created_at);
        let mut staged = Staged {
            next_position: self.next_position,
            streams: HashMap::new(),
        };
        let mut pending = Vec::with_capacity(group.len());
        let outcome = self.apply_group(group.drain(..), now, &mut staged, &mut pending);
        match outcome {
            Ok(()) => {
                self.next_position = staged.next_position;
                self.last_created_at = now;
                if self.streams.len() + staged.streams.len() > STREAM_CACHE {
                    self.streams.clear();
                }
                self.streams.extend(staged.streams);
                self.head.send_replace(Position(self.next_position));
                self.deadline.send_if_modified(|d| {
                    let next = self.queues.next_deadline();
                    std::mem::replace(d, next) != next
                });
                self.queues.forget_wakes();
                let orphans = pending.into_iter().filter_map(Pending::send);
                self.orphans.extend(orphans);
                // Full means a nudge is already waiting.
                let _ = self.checkpoints.nudge.try_send(());
            }
            Err(e) => {
                tracing::error!(error = %e, "group commit failed");
                let failure = if schema::is_damage(&e) {
                    // The group read a damaged page: every retry would.
                    let db = self.conn.path().unwrap_or_default();
                    Error::Storage(format!(
                        "commit failed: {e}: {db} is damaged; {}",
                        schema::RESTORE
                    ))
                } else {
                    Error::Unavailable(format!("commit failed: {e}"))
                };
                for answer in pending {
                    answer.fail(failure.clone());
                }
                self.queues.forget_wakes();
                if let Err(e) = self.reload_all(now) {
                    tracing::error!(error = %e, "reloading the writer's state failed");
                }
            }
        }
    }

    /// Rebuilds everything the writer keeps in memory after a failed commit.
    fn reload_all(&mut self, now: Timestamp) -> rusqlite::Result<()> {
        self.queues = self.queues.reload(&self.conn, now)?;
        self.reload()
    }

    /// Applies every job in one transaction and commits it, leaving each
    /// job's answer in `pending`. An error here is a failure of the
    /// transaction itself; a job's own failure is its answer.
    fn apply_group(
        &mut self,
        group: impl Iterator<Item = Job>,
        now: Timestamp,
        staged: &mut Staged,
        pending: &mut Vec<Pending>,
    ) -> rusqlite::Result<()> {
        let changes = self.conn.total_changes();
        let fresh_from = self.queues.next_seq();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Each append runs under its own savepoint so a failing one leaves
        // its neighbours' writes in place. Cached statements: rusqlite's
        // `Savepoint` re-parses its SQL on every call. Queue operations check
        // everything before they write, so they need none.
        let run = |sql: &str| tx.prepare_cached(sql).and_then(|mut s| s.execute([]));
        for job in group {
            let job = match job {
                Job::Queue(command) => {
                    let (answer, failed) = self.queues.apply(&tx, command, now);
                    pending.extend(answer.map(Pending::Queue));
                    if let Some(e) = failed {
                        return Err(e);
                    }
                    continue;
                }
                Job::DeleteStream(job) => {
                    let result = match delete_stream(&tx, &self.streams, staged, &job) {
                        Ok(deleted) => Ok(deleted),
                        Err(Failure::Job(e)) => Err(e),
                        Err(Failure::Sqlite(e)) => {
                            pending.push(Pending::Delete(
                                job.reply,
                                Err(Error::Storage(String::new())),
                            ));
                            return Err(e);
                        }
                    };
                    pending.push(Pending::Delete(job.reply, result));
                    continue;
                }
                Job::Append(job) => job,
            };
            run("SAVEPOINT job")?;
            let before = staged.next_position;
            let mut local = HashMap::new();
            let result = match apply(&tx, &self.streams, staged, &mut local, &job.request, now) {
                Ok(outcome) => {
                    run("RELEASE job")?;
                    staged.streams.extend(local);
                    Ok(outcome)
                }
                Err(Failure::Job(e)) => {
                    run("ROLLBACK TO job")?;
                    run("RELEASE job")?;
                    staged.next_position = before;
                    Err(e)
                }
                Err(Failure::Sqlite(e)) => {
                    pending.push(Pending::Append(
                        job.reply,
                        Err(Error::Storage(String::new())),
                    ));
                    return Err(e);
                }
            };
            pending.push(Pending::Append(job.reply, result));
        }
        let (served, failed) = self.queues.serve_parked(&tx, now, fresh_from);
        pending.extend(served.after_flush.into_iter().map(Pending::Queue));
        let committed = match failed {
            Some(e) => {
                drop(tx); // rolls back
                Err(e)
            }
            None => self.queues.flush_counters(&tx).and_then(|()| tx.commit()),
        };
        if let Err(e) = committed {
            pending.extend(served.at_commit.into_iter().map(Pending::Queue));
            return Err(e);
        }
        let orphans = served.at_commit.into_iter().filter_map(Answer::send);
        self.orphans.extend(orphans);
        // A group that changed no row (empty or parked polls, statistics,
        // unparking) wrote no frame: nothing to flush or checkpoint.
        if self.conn.total_changes() != changes {
            let frames = WAL_FRAMES.get();
            match frames.checked_sub(self.wal_frames) {
                Some(more) => self.unchecked += more * self.page_size,
                // Fewer frames than after the last commit: the WAL started
                // over, every earlier frame checkpointed, so only this
                // commit's frames are unchecked (a light load restarts it
                // by itself and the writer need not checkpoint at all).
                None => self.unchecked = frames * self.page_size,
            }
            self.wal_frames = frames;
            if let Some(wal) = &mut self.wal {
                wal.flush()?;
            }
        }
        Ok(())
    }
}

thread_local! {
    /// Frames in the WAL after the writer thread's last commit, as SQLite
    /// reports them to [`note_wal_frames`] (its hook takes no state of its own).
    static WAL_FRAMES: Cell<usize> = const { Cell::new(0) };
}

/// The writer connection's WAL hook: SQLite calls it after each commit,
/// on the committing thread, with the frames now in the WAL.
fn note_wal_frames(_: &Wal, frames: c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.set(usize::try_from(frames).unwrap_or(0));
    Ok(())
}

/// Why one job failed: its own fault, or the database's.
enum Failure {
    Job(Error),
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

fn lookup(
    conn: &Connection,
    cache: &HashMap<String, StreamState>,
    staged: &Staged,
    local: &HashMap<String, StreamState>,
    name: &str,
) -> rusqlite::Result<Option<StreamState>> {
    if let Some(s) = local
        .get(name)
        .or_else(|| staged.streams.get(name))
        .or_else(|| cache.get(name))
    {
        return Ok(Some(*s));
    }
    let id: Option<i64> = conn
        .prepare_cached("SELECT id FROM streams WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    let Some(id) = id else { return Ok(None) };
    let last: Option<i64> = conn
        .prepare_cached("SELECT max(version) FROM events WHERE stream_id = ?1")?
        .query_row([id], |r| r.get(0))?;
    Ok(Some(StreamState {
        id,
        last: last.map(|v| v as u64),
    }))
}

fn apply(
    conn: &Connection,
    cache: &HashMap<String, StreamState>,
    staged: &mut Staged,
    local: &mut HashMap<String, StreamState>,
    request: &AppendRequest,
    now: Timestamp,
) -> Result<AppendOutcome, Failure> {
    let name = request.stream.as_str();
    let state = lookup(conn, cache, staged, local, name)?;
    let current = state.and_then(|s| s.last);

    // A retry is recognised only when the append cannot go ahead as new:
    // its expectation fails, or its first id is already taken. The common
    // path pays no extra lookup.
    let matches = match request.expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => current.is_none(),
        ExpectedVersion::StreamExists => current.is_some(),
        ExpectedVersion::Exact(n) => current == Some(n),
    };
    if !matches {
        if let Some(outcome) = find_duplicate(conn, state, request)? {
            return Ok(outcome);
        }
        return Err(Failure::Job(Error::WrongExpectedVersion {
            stream: request.stream.clone(),
            expected: request.expected.to_string(),
            actual: current,
        }));
    }

    let stream_id = match state {
        Some(s) => s.id,
        None => {
            conn.prepare_cached("INSERT INTO streams (name) VALUES (?1)")?
                .execute([name])?;
            conn.last_insert_rowid()
        }
    };
    let first_version = current.map_or(0, |v| v + 1);
    let first_position = staged.next_position;
    let mut insert = conn.prepare_cached(
        "INSERT INTO events (position, stream_id, version, event_id, event_type, \
         content_type, created_at, first, metadata, data, payload_hash, payload_ref) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    for (i, event) in request.events.iter().enumerate() {
        let i = i as u64;
        let inserted = insert_event(
            &mut insert,
            first_position + i,
            stream_id,
            first_version + i,
            i == 0,
            event,
            now,
        );
        if let (0, Err(Failure::Job(Error::EventIdConflict { .. }))) = (i, &inserted)
            && let Some(outcome) = find_duplicate(conn, state, request)?
        {
            // Nothing of this append was written: the first insert failed.
            return Ok(outcome);
        }
        inserted?;
    }
    let n = request.events.len() as u64;
    staged.next_position = first_position + n;
    local.insert(
        name.to_owned(),
        StreamState {
            id: stream_id,
            last: Some(first_version + n - 1),
        },
    );
    Ok(AppendOutcome::Appended(AppendResult {
        first_version,
        last_version: first_version + n - 1,
        first_position: Position(first_position),
        last_position: Position(first_position + n - 1),
    }))
}

fn insert_event(
    insert: &mut rusqlite::CachedStatement<'_>,
    position: u64,
    stream_id: i64,
    version: u64,
    first: bool,
    event: &NewEvent,
    now: Timestamp,
) -> Result<(), Failure> {
    let (payload_hash, payload_ref) = reference_columns(event.external.as_ref());
    let inserted = insert.execute(params![
        position as i64,
        stream_id,
        version as i64,
        event.id.as_bytes(),
        event.event_type,
        event.content_type,
        now.as_micros(),
        first,
        encode_metadata(&event.metadata),
        event.data.as_ref(),
        payload_hash,
        payload_ref,
    ]);
    match inserted {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(Failure::Job(Error::EventIdConflict { id: event.id }))
        }
        Err(e) => Err(Failure::Sqlite(e)),
    }
}

/// Deletes the events of a stream, leaving the stream row (its id) for reuse.
fn delete_stream(
    conn: &Connection,
    cache: &HashMap<String, StreamState>,
    staged: &mut Staged,
    job: &DeleteJob,
) -> Result<u64, Failure> {
    let name = job.stream.as_str();
    let state = lookup(conn, cache, staged, &HashMap::new(), name)?;
    let Some(StreamState {
        id,
        last: Some(last),
    }) = state
    else {
        return Err(Failure::Job(Error::StreamNotFound(job.stream.clone())));
    };
    let matches = match job.expected {
        ExpectedVersion::Any | ExpectedVersion::StreamExists => true,
        ExpectedVersion::NoStream => false,
        ExpectedVersion::Exact(n) => n == last,
    };
    if !matches {
        return Err(Failure::Job(Error::WrongExpectedVersion {
            stream: job.stream.clone(),
            expected: job.expected.to_string(),
            actual: Some(last),
        }));
    }
    let deleted = conn
        .prepare_cached("DELETE FROM events WHERE stream_id = ?1")?
        .execute([id])?;
    staged
        .streams
        .insert(name.to_owned(), StreamState { id, last: None });
    Ok(deleted as u64)
}

/// Recognises a retry: the batch's events already sit, by id and in order,
/// in this stream. Any other reuse of an id is a conflict.
fn find_duplicate(
    conn: &Connection,
    state: Option<StreamState>,
    request: &AppendRequest,
) -> Result<Option<AppendOutcome>, Failure> {
    let first = &request.events[0];
    let found: Option<(i64, i64)> = conn
        .prepare_cached("SELECT stream_id, version FROM events WHERE event_id = ?1 AND first = 1")?
        .query_row([first.id.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((stream_id, version)) = found else {
        return Ok(None);
    };
    let conflict = || Failure::Job(Error::EventIdConflict { id: first.id });
    let Some(state) = state.filter(|s| s.id == stream_id) else {
        return Err(conflict());
    };
    let mut stmt = conn.prepare_cached(
        "SELECT event_id, position FROM events WHERE stream_id = ?1 AND version >= ?2 \
         ORDER BY version LIMIT ?3",
    )?;
    let rows: Vec<(Vec<u8>, i64)> = stmt
        .query_map(
            params![stream_id, version, request.events.len() as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .collect::<rusqlite::Result<_>>()?;
    let same = rows.len() == request.events.len()
        && rows
            .iter()
            .zip(&request.events)
            .all(|((id, _), e)| id.as_slice() == e.id.as_bytes());
    if !same {
        return Err(conflict());
    }
    let first_version = version as u64;
    let compatible = match request.expected {
        ExpectedVersion::Any | ExpectedVersion::StreamExists => true,
        ExpectedVersion::NoStream => first_version == 0,
        ExpectedVersion::Exact(n) => first_version == n + 1,
    };
    if !compatible {
        return Err(Failure::Job(Error::WrongExpectedVersion {
            stream: request.stream.clone(),
            expected: request.expected.to_string(),
            actual: state.last,
        }));
    }
    let n = request.events.len() as u64;
    Ok(Some(AppendOutcome::Duplicate(AppendResult {
        first_version,
        last_version: first_version + n - 1,
        first_position: Position(rows[0].1 as u64),
        last_position: Position(rows[rows.len() - 1].1 as u64),
    })))
}

/// Makes each commit durable with one `fdatasync` of the WAL.
///
/// SQLite's own `synchronous=FULL` syncs the WAL with `fsync`, which on
/// Linux also journals the file's times: measured here, a commit took 3–4×
/// the time of writing and `fdatasync`-ing the same bytes. So the writer's
/// connection runs `synchronous=NORMAL` (in WAL mode: the WAL is synced
/// before each checkpoint, the database after it, and the WAL header when
/// the WAL is reused; commits are not synced) and the writer syncs the WAL
/// itself after every commit, before any answer of the group is sent. That
/// is the guarantee of `FULL` with a cheaper system call: a commit is
/// acknowledged only once its frames are on disk.
struct WalSync {
    path: std::path::PathBuf,
    /// Opened on the first flush: the WAL exists once something committed.
    file: Option<std::fs::File>,
}

impl WalSync {
    fn new(conn: &Connection) -> rusqlite::Result<Self> {
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let db = conn.path().unwrap_or_default();
        Ok(Self {
            path: format!("{db}-wal").into(),
            file: None,
        })
    }

    fn flush(&mut self) -> rusqlite::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => self
                .file
                .insert(std::fs::File::open(&self.path).map_err(io_failure)?),
        };
        file.sync_data().map_err(io_failure)
    }
}

/// An I/O error of the writer's own, as the database errors it travels with.
fn io_failure(e: std::io::Error) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
        Some(format!("flushing the write-ahead log: {e}")),
    )
}
