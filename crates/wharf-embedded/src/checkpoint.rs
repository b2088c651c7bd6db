//! WAL checkpoints off the writer's path.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the
//! threshold, so one commit in ~50 also copies 16 MiB into the database file
//! and fsyncs it while every append and queue operation of its group waits.
//! Here the writer's connection has automatic checkpoints off; after commits
//! it nudges this thread, which runs a PASSIVE checkpoint on its own
//! connection (never blocking the writer or readers). Once a checkpoint has
//! copied every frame, SQLite starts the WAL over at the next commit.

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::time::Duration;

use rusqlite::Connection;
use wharf_core::{Durability, Error, Result};

use crate::schema;

/// How long the thread lets commits accumulate before a checkpoint, so it
/// copies many commits' pages at once instead of chasing each one.
const COALESCE: Duration = Duration::from_millis(50);

/// Starts the checkpoint thread for the database at `path`; it ends when
/// the returned sender is dropped.
pub(crate) fn spawn(path: &Path, durability: Durability) -> Result<SyncSender<()>> {
    let shown = path.display().to_string();
    let conn = Connection::open(path)
        .and_then(|c| schema::configure(&c, durability).map(|()| c))
        .map_err(|e| Error::Storage(format!("cannot open {shown} for checkpoints: {e}")))?;
    let (nudge, nudged) = sync_channel(1);
    std::thread::Builder::new()
        .name("wharf-checkpoint".into())
        .spawn(move || run(&conn, &nudged))
        .map_err(|e| Error::Storage(format!("cannot start the checkpoint thread: {e}")))?;
    Ok(nudge)
}

fn run(conn: &Connection, nudged: &Receiver<()>) {
    while nudged.recv().is_ok() {
        std::thread::sleep(COALESCE);
        let closing = matches!(nudged.try_recv(), Err(TryRecvError::Disconnected));
        let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        if let Err(e) = done {
            tracing::warn!(error = %e, "WAL checkpoint failed; retrying after the next commit");
        }
        if closing {
            return;
        }
    }
}
