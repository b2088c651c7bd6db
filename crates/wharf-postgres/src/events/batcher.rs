//! Group commit: one task per node turns the appends queued on the node into
//! one transaction.
//!
//! Every append in the deployment serializes on the `log_head` row, so a
//! node that sent its appends one transaction each would pay a lock wait,
//! a few round trips and a flush of the write-ahead log per append. The
//! batcher takes whatever is queued (up to [`MAX_GROUP`] appends and
//! [`MAX_GROUP_BYTES`]) and, in one transaction:
//!
//! 1. locks the head and reads the versions of the group's streams and any
//!    earlier appends whose first event ids the group reuses — one round
//!    trip, pipelined;
//! 2. decides each append in memory: all appenders wait on the head lock,
//!    so the versions it read cannot move until it commits. A failed
//!    expectation, a retry or an id conflict settles that append alone and
//!    writes nothing for it; its neighbours go ahead;
//! 3. inserts the events of every accepted append with one multi-row
//!    `INSERT … SELECT FROM unnest(…)`, moves the head, notifies the other
//!    nodes and commits — one more round trip, pipelined.
//!
//! A failure of the transaction itself (the connection broke, the database
//! refused) fails every append of the group with that error; the next group
//! takes a fresh connection.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::types::Json;
use tokio_postgres::{Client, Statement};
use uuid::Uuid;
use wharf_core::{AppendOutcome, AppendResult, Error, ExpectedVersion, Position, Result};
use wharf_storage::AppendRequest;

use super::{DEADLINE, head, rows};
use crate::Shared;
use crate::error::{self, pg};

/// Most appends one transaction carries; bounds the latency a large group
/// adds to its first member.
const MAX_GROUP: usize = 500;
/// Most event bytes one transaction carries.
const MAX_GROUP_BYTES: usize = 8 * 1024 * 1024;
/// How often a group is tried again after a deadlock or serialization
/// failure (neither should happen with one lock, but both are safe to retry).
const RETRIES: usize = 3;

/// A statement parameter.
type Param<'a> = dyn tokio_postgres::types::ToSql + Sync + 'a;

/// What a failed group was doing, for its error message.
const DOING: &str = "append to the event log";

/// An append, with where to send its outcome.
pub(crate) struct Job {
    pub(crate) request: AppendRequest,
    pub(crate) bytes: usize,
    pub(crate) reply: oneshot::Sender<Result<AppendOutcome>>,
}

/// Serves groups until every sender is gone and the queue is drained.
pub(super) async fn run(
    shared: Arc<Shared>,
    mut jobs: mpsc::Receiver<Job>,
    head: Arc<watch::Sender<Position>>,
) {
    // Appends put off by the previous group; they go first.
    let mut carried: VecDeque<Job> = VecDeque::new();
    loop {
        let mut group = Vec::new();
        let mut bytes = 0;
        while group.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
            let Some(job) = carried.pop_front() else {
                break;
            };
            bytes += job.bytes;
            group.push(job);
        }
        if group.is_empty() {
            match jobs.recv().await {
                Some(job) => {
                    bytes += job.bytes;
                    group.push(job);
                }
                None => return,
            }
        }
        while group.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
            match jobs.try_recv() {
                Ok(job) => {
                    bytes += job.bytes;
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        carried.extend(commit_group(&shared, &head, group).await);
    }
}

/// What became of one append of a group.
enum Verdict {
    /// Written by this group's transaction, once it commits.
    Appended(AppendResult),
    /// Settled without writing: a retry's original result, or its error.
    Settled(Result<AppendOutcome>),
    /// Reuses the first event id of an append earlier in the same group
    /// (typically a retry racing its original): decided by the next group,
    /// which sees the earlier one committed.
    Deferred,
}

/// Commits `group` and answers its appends; returns the deferred ones.
async fn commit_group(
    shared: &Shared,
    head: &watch::Sender<Position>,
    group: Vec<Job>,
) -> Vec<Job> {
    let failed = |group: Vec<Job>, e: Error| {
        for job in group {
            let _ = job.reply.send(Err(e.clone()));
        }
        Vec::new()
    };
    let conn = match shared.conn().await {
        Ok(conn) => conn,
        Err(e) => return failed(group, e),
    };
    let requests: Vec<&AppendRequest> = group.iter().map(|j| &j.request).collect();
    let mut attempt = 0;
    let outcome = loop {
        let round = tokio::time::timeout(DEADLINE, apply(&conn, shared, &requests)).await;
        match round {
            Ok(Ok(outcome)) => break outcome,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, appends = group.len(), "committing a group of appends failed");
                if error::is_connection_error(&e) || !abandon(&conn).await {
                    drop(deadpool_postgres::Object::take(conn));
                    return failed(group, pg(DOING, e));
                }
                if error::is_retryable(&e) && attempt < RETRIES {
                    attempt += 1;
                    continue;
                }
                return failed(group, pg(DOING, e));
            }
            Err(_) => {
                // Cut off mid-transaction: the connection's state is unknown,
                // and so is the outcome, which a retry of the same events
                // will find out (it is idempotent).
                drop(deadpool_postgres::Object::take(conn));
                return failed(
                    group,
                    Error::Unavailable(format!(
                        "PostgreSQL did not answer within {} s ({DOING}); \
                         the append may or may not have been committed",
                        DEADLINE.as_secs()
                    )),
                );
            }
        }
    };
    drop(requests);
    drop(conn);
    let (verdicts, next) = outcome;
    if let Some(next) = next {
        head::advance(head, next);
    }
    let mut deferred = Vec::new();
    for (job, verdict) in group.into_iter().zip(verdicts) {
        match verdict {
            Verdict::Appended(result) => {
                let _ = job.reply.send(Ok(AppendOutcome::Appended(result)));
            }
            Verdict::Settled(outcome) => {
                let _ = job.reply.send(outcome);
            }
            Verdict::Deferred => deferred.push(job),
        }
    }
    deferred
}

/// Rolls back whatever transaction a failed group left open; `false` when
/// the connection cannot be trusted with anything else.
async fn abandon(conn: &Client) -> bool {
    // Outside a transaction, ROLLBACK only warns.
    matches!(
        tokio::time::timeout(DEADLINE, conn.batch_execute("ROLLBACK")).await,
        Ok(Ok(()))
    )
}

/// The statements of a group, prepared once per connection.
struct Statements {
    lock: Statement,
    streams: Statement,
    first_ids: Statement,
    span: Statement,
    insert: Statement,
    move_head: Statement,
    notify: Statement,
}

impl Statements {
    async fn prepare(conn: &deadpool_postgres::Object) -> Result<Self, tokio_postgres::Error> {
        let (lock, streams, first_ids, span, insert, move_head, notify) = futures::try_join!(
            conn.prepare_cached(
                "SELECT next_position, last_created_at FROM log_head FOR NO KEY UPDATE"
            ),
            // One backward probe of `events_by_stream` per stream.
            conn.prepare_cached(
                "SELECT n.name, (SELECT max(e.version) FROM events e WHERE e.stream = n.name) \
                 FROM unnest($1::text[]) AS n(name)"
            ),
            conn.prepare_cached(
                "SELECT event_id, stream, version FROM events \
                 WHERE event_id = ANY($1::uuid[]) AND first"
            ),
            conn.prepare_cached(
                "SELECT event_id, position FROM events WHERE stream = $1 AND version >= $2 \
                 ORDER BY version LIMIT $3"
            ),
            conn.prepare_cached(
                "INSERT INTO events (position, stream, version, event_id, first, created_at, \
                 event_type, content_type, metadata, payload_hash, payload_ref, data) \
                 SELECT p, s, v, i, f, $6, t, c, m, h, r, d FROM unnest($1::bigint[], \
                 $2::text[], $3::bigint[], $4::uuid[], $5::boolean[], $7::text[], \
                 $8::text[], $9::jsonb[], $10::bytea[], $11::jsonb[], $12::bytea[]) \
                 AS u(p, s, v, i, f, t, c, m, h, r, d)"
            ),
            conn.prepare_cached("UPDATE log_head SET next_position = $1, last_created_at = $2"),
            conn.prepare_cached("SELECT pg_notify($1, $2)"),
        )?;
        Ok(Self {
            lock,
            streams,
            first_ids,
            span,
            insert,
            move_head,
            notify,
        })
    }
}

/// The columns of the rows a group inserts, one entry per event.
#[derive(Default)]
struct Columns<'a> {
    positions: Vec<i64>,
    streams: Vec<&'a str>,
    versions: Vec<i64>,
    ids: Vec<Uuid>,
    firsts: Vec<bool>,
    types: Vec<&'a str>,
    content_types: Vec<&'a str>,
    metadata: Vec<Json<&'a std::collections::BTreeMap<String, String>>>,
    hashes: Vec<Option<&'a [u8]>>,
    references: Vec<Option<serde_json::Value>>,
    data: Vec<&'a [u8]>,
}

impl<'a> Columns<'a> {
    fn push(&mut self, request: &'a AppendRequest, first_position: u64, first_version: u64) {
        for (i, event) in request.events.iter().enumerate() {
            let i = i as u64;
            self.positions.push((first_position + i) as i64);
            self.streams.push(request.stream.as_str());
            self.versions.push((first_version + i) as i64);
            self.ids.push(event.id);
            self.firsts.push(i == 0);
            self.types.push(&event.event_type);
            self.content_types.push(&event.content_type);
            self.metadata.push(Json(&event.metadata));
            self.hashes
                .push(event.external.as_ref().map(|r| &r.content_hash.0[..]));
            self.references
                .push(event.external.as_ref().map(rows::encode_reference));
            self.data.push(&event.data);
        }
    }
}

/// Whether `expected` admits appending to a stream whose last version is
/// `current`.
fn expectation_holds(expected: ExpectedVersion, current: Option<u64>) -> bool {
    match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => current.is_none(),
        ExpectedVersion::StreamExists => current.is_some(),
        ExpectedVersion::Exact(n) => current == Some(n),
    }
}

/// Runs the group's transaction: a verdict per request, and the new head
/// when anything was written. On error the transaction may still be open.
async fn apply(
    conn: &deadpool_postgres::Object,
    shared: &Shared,
    requests: &[&AppendRequest],
) -> Result<(Vec<Verdict>, Option<Position>), tokio_postgres::Error> {
    let stmts = Statements::prepare(conn).await?;
    let names: Vec<&str> = requests
        .iter()
        .map(|r| r.stream.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let first_ids: Vec<Uuid> = requests.iter().map(|r| r.events[0].id).collect();

    // Pipelined: sent in this order without waiting, run by the server in
    // this order, so the reads see every commit made before the lock was
    // granted.
    let names_param: [&Param<'_>; 1] = [&names];
    let ids_param: [&Param<'_>; 1] = [&first_ids];
    let (begin, locked, known, reused) = futures::join!(
        conn.batch_execute("BEGIN"),
        conn.query_one(&stmts.lock, &[]),
        conn.query(&stmts.streams, &names_param),
        conn.query(&stmts.first_ids, &ids_param),
    );
    begin?;
    let locked = locked?;
    let mut next = locked.get::<_, i64>(0) as u64;
    let now = shared
        .clock()
        .now()
        .as_micros()
        .max(locked.get::<_, i64>(1));
    // The last version of each stream as this transaction would leave it;
    // `None` for a stream without events.
    let mut streams: HashMap<&str, Option<u64>> = HashMap::with_capacity(names.len());
    for row in known? {
        let name: &str = row.get(0);
        let last = row.get::<_, Option<i64>>(1).map(|v| v as u64);
        // `name` borrows the row; key by the request's copy instead.
        if let Some(key) = names.iter().find(|n| **n == name) {
            streams.insert(key, last);
        }
    }
    let reused: HashMap<Uuid, (String, i64)> = reused?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();

    let mut verdicts = Vec::with_capacity(requests.len());
    let mut columns = Columns::default();
    let mut firsts_in_group: HashSet<Uuid> = HashSet::with_capacity(requests.len());
    for request in requests {
        let first_id = request.events[0].id;
        if firsts_in_group.contains(&first_id) {
            verdicts.push(Verdict::Deferred);
            continue;
        }
        let name = request.stream.as_str();
        let current = streams.get(name).copied().flatten();
        if let Some((stream, version)) = reused.get(&first_id) {
            let outcome = if stream == name {
                retried(conn, &stmts, current, request, *version).await?
            } else {
                Err(Error::EventIdConflict { id: first_id })
            };
            verdicts.push(Verdict::Settled(outcome));
            continue;
        }
        if !expectation_holds(request.expected, current) {
            verdicts.push(Verdict::Settled(Err(Error::WrongExpectedVersion {
                stream: request.stream.clone(),
                expected: request.expected.to_string(),
                actual: current,
            })));
            continue;
        }
        let first_version = current.map_or(0, |v| v + 1);
        let n = request.events.len() as u64;
        columns.push(request, next, first_version);
        streams.insert(name, Some(first_version + n - 1));
        firsts_in_group.insert(first_id);
        verdicts.push(Verdict::Appended(AppendResult {
            first_version,
            last_version: first_version + n - 1,
            first_position: Position(next),
            last_position: Position(next + n - 1),
        }));
        next += n;
    }

    if columns.positions.is_empty() {
        conn.batch_execute("ROLLBACK").await?;
        return Ok((verdicts, None));
    }
    let rows: [&Param<'_>; 12] = [
        &columns.positions,
        &columns.streams,
        &columns.versions,
        &columns.ids,
        &columns.firsts,
        &now,
        &columns.types,
        &columns.content_types,
        &columns.metadata,
        &columns.hashes,
        &columns.references,
        &columns.data,
    ];
    let next_param = next as i64;
    let head_params: [&Param<'_>; 2] = [&next_param, &now];
    let (channel, payload) = (shared.channel(), format!("e:{next}"));
    let notify_params: [&Param<'_>; 2] = [&channel, &payload];
    let (inserted, moved, notified, committed) = futures::join!(
        conn.execute(&stmts.insert, &rows),
        conn.execute(&stmts.move_head, &head_params),
        conn.execute(&stmts.notify, &notify_params),
        conn.batch_execute("COMMIT"),
    );
    // COMMIT of a transaction a statement failed in rolls back without an
    // error, so every statement's result is checked, the commit's last.
    inserted?;
    moved?;
    notified?;
    committed?;
    Ok((verdicts, Some(Position(next))))
}

/// Settles an append whose first event id is already the first id of a
/// committed append at `version` of the same stream, whose last version is
/// now `current`: a retry returns the original result, anything else is a
/// conflict (as in the embedded store).
async fn retried(
    conn: &Client,
    stmts: &Statements,
    current: Option<u64>,
    request: &AppendRequest,
    version: i64,
) -> Result<Result<AppendOutcome>, tokio_postgres::Error> {
    let first = request.events[0].id;
    let n = request.events.len();
    let found = conn
        .query(
            &stmts.span,
            &[&request.stream.as_str(), &version, &(n as i64)],
        )
        .await?;
    let same = found.len() == n
        && found
            .iter()
            .zip(&request.events)
            .all(|(row, e)| row.get::<_, Uuid>(0) == e.id);
    if !same {
        return Ok(Err(Error::EventIdConflict { id: first }));
    }
    let first_version = version as u64;
    let compatible = match request.expected {
        ExpectedVersion::Any | ExpectedVersion::StreamExists => true,
        ExpectedVersion::NoStream => first_version == 0,
        ExpectedVersion::Exact(v) => first_version == v + 1,
    };
    if !compatible {
        return Ok(Err(Error::WrongExpectedVersion {
            stream: request.stream.clone(),
            expected: request.expected.to_string(),
            actual: current,
        }));
    }
    let n = n as u64;
    let position = |row: &tokio_postgres::Row| Position(row.get::<_, i64>(1) as u64);
    Ok(Ok(AppendOutcome::Duplicate(AppendResult {
        first_version,
        last_version: first_version + n - 1,
        first_position: position(&found[0]),
        last_position: position(&found[found.len() - 1]),
    })))
}
