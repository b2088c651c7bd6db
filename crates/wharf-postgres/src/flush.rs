//! Group flushes: transactions that hold a hot lock commit without waiting
//! for their WAL to reach the disk, and wait for it afterwards, many at once.
//!
//! PostgreSQL releases a transaction's locks only after its commit record
//! is flushed. A queue round holds its queue's cursor (and an enqueue the
//! queue's head lock) to commit, so with `synchronous_commit = on` the next
//! round waits a whole disk flush for each one before it can start: a
//! queue's dequeues would run one flush apart, however fast the statements.
//! So rounds commit with `synchronous_commit = off` (set local to their
//! transaction, see `queue::combine::COMMIT_ASYNC`), which makes
//! the commit (and the release of its locks) immediate, and before they
//! answer anyone they wait here until the WAL is flushed past their commit.
//!
//! A flush is one tiny transaction that writes one WAL record and commits
//! with the session's own `synchronous_commit` (the server's setting): its
//! commit waits until the WAL up to its commit record, and so every commit
//! record written before it started, is flushed (and replicated, if the
//! server asks for synchronous replicas). Requests that arrive while a flush
//! runs share the next one. Nothing is answered before it is durable: a
//! reader may see a commit before it is flushed, but anything the reader
//! then commits lies later in the WAL, and its own answer waits for a flush
//! that covers both.
//!
//! The record matters: PostgreSQL commits a transaction that wrote no WAL
//! asynchronously whatever `synchronous_commit` says (`RecordTransactionCommit`
//! flushes only when the transaction wrote WAL), even one that took a
//! transaction id. A flush that only took an id (`SELECT
//! pg_current_xact_id()`, as it once did) returned without waiting for the
//! disk: 2,000 of them caused one `fdatasync`, against 2,000 for 2,000 of
//! these.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;
use wharf_core::{Error, Result};

use crate::Shared;

/// Commits one transactional logical-decoding message (prefix
/// `wharf-flush`, empty content; it takes a transaction id and writes one
/// small WAL record, touching no table, so flushes of many nodes never
/// wait for each other) with the session's `synchronous_commit`: the WAL
/// is flushed up to it when it returns. Logical decoding passes the message
/// to output plugins that ask for messages; nothing else reads it. One
/// prepared statement, its own transaction: no `BEGIN` and `COMMIT` to
/// send, nothing to parse or plan again for each flush.
pub(crate) const FLUSH: &str = "SELECT pg_logical_emit_message(true, 'wharf-flush', ''::bytea)";

/// Requests waiting for the next flush, and whether a flush task runs.
#[derive(Default)]
pub(crate) struct Flusher(Mutex<State>);

#[derive(Default)]
struct State {
    waiting: Vec<oneshot::Sender<Result<()>>>,
    running: bool,
}

impl Flusher {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Waits until every commit that returned before this call is durable.
///
/// # Errors
/// `Unavailable` when the flush transaction fails: the commits it was to
/// cover may or may not be durable.
pub(crate) async fn flushed(shared: &Arc<Shared>) -> Result<()> {
    let (reply, answer) = oneshot::channel();
    let start = {
        let mut state = shared.flusher.state();
        state.waiting.push(reply);
        !std::mem::replace(&mut state.running, true)
    };
    if start {
        tokio::spawn(run(shared.clone()));
    }
    answer.await.map_err(|_| {
        Error::Unavailable("the store closed before the commit was flushed".to_owned())
    })?
}

/// Flushes for whoever waits, until nobody does.
async fn run(shared: Arc<Shared>) {
    loop {
        let waiting = {
            let mut state = shared.flusher.state();
            if state.waiting.is_empty() {
                state.running = false;
                return;
            }
            std::mem::take(&mut state.waiting)
        };
        let outcome = flush(&shared).await;
        for reply in waiting {
            let _ = reply.send(outcome.clone());
        }
    }
}

async fn flush(shared: &Shared) -> Result<()> {
    let conn = shared.conn().await?;
    let flushed = async {
        let statement = conn.prepare_cached(FLUSH).await?;
        conn.query(&statement, &[]).await
    };
    flushed
        .await
        .map(drop)
        .map_err(|e| crate::error::pg("flush the write-ahead log", e))
}
