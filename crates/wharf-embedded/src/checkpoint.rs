//! WAL checkpoints off the writer's path.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the
//! threshold, so one commit in ~50 also copies 16 MiB into the database file
//! and fsyncs it while every append and queue operation of its group waits.
//! Here the writer's connection has automatic checkpoints off; after commits
//! it nudges this thread, which runs a PASSIVE checkpoint on its own
//! connection (never blocking the writer or readers).
//!
//! SQLite starts the WAL over only at a write transaction that begins when
//! every frame has been copied. Under a steady load commits land while this
//! thread copies, so that moment never comes and the WAL grows without
//! bound (measured: 1.7 GB in one benchmark run), every commit appending to
//! it. So when a checkpoint here copied all it saw, it tells the writer
//! ([`Checkpoints::caught_up`]), which copies the few frames committed since
//! with a checkpoint of its own between two groups; its next group then
//! restarts the WAL, and commits overwrite the start of the file instead of
//! growing it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::Connection;
use wharf_core::{Durability, Error, Result};

use crate::schema;

/// How long the thread lets commits accumulate before a checkpoint, so it
/// copies many commits' pages at once instead of chasing each one.
const COALESCE: Duration = Duration::from_millis(50);

/// The writer's side of the checkpoint thread.
pub(crate) struct Checkpoints {
    /// Tells the thread there are new WAL frames; dropping it ends the thread.
    pub(crate) nudge: SyncSender<()>,
    /// Set when a checkpoint copied every frame it saw.
    pub(crate) caught_up: Arc<AtomicBool>,
    /// Held while a checkpoint runs, by the thread or by the writer: a
    /// writer whose WAL is over budget waits here for the thread's
    /// checkpoint to end instead of finding SQLite's checkpoint lock taken.
    pub(crate) running: Arc<Mutex<()>>,
}

/// Starts the checkpoint thread for the database at `path`.
pub(crate) fn spawn(path: &Path, durability: Durability) -> Result<Checkpoints> {
    let shown = path.display().to_string();
    let conn = Connection::open(path)
        .and_then(|c| schema::configure(&c, durability).map(|()| c))
        .map_err(|e| Error::Storage(format!("cannot open {shown} for checkpoints: {e}")))?;
    let (nudge, nudged) = sync_channel(1);
    let caught_up = Arc::new(AtomicBool::new(false));
    let running = Arc::new(Mutex::new(()));
    let (signal, lock) = (caught_up.clone(), running.clone());
    std::thread::Builder::new()
        .name("wharf-checkpoint".into())
        .spawn(move || run(&conn, &nudged, &signal, &lock))
        .map_err(|e| Error::Storage(format!("cannot start the checkpoint thread: {e}")))?;
    Ok(Checkpoints {
        nudge,
        caught_up,
        running,
    })
}

/// What a PASSIVE checkpoint did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Copied {
    /// Every frame of a WAL that had some.
    All,
    /// What readers' snapshots allowed, or nothing was there to copy.
    Some,
    /// Nothing: another checkpoint was running.
    Busy,
}

/// Runs a PASSIVE checkpoint on `conn` (it never waits).
pub(crate) fn passive(conn: &Connection) -> rusqlite::Result<Copied> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        let (busy, log, copied) = (
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        );
        Ok(match busy {
            0 if log > 0 && log == copied => Copied::All,
            0 => Copied::Some,
            _ => Copied::Busy,
        })
    })
}

fn run(conn: &Connection, nudged: &Receiver<()>, caught_up: &AtomicBool, running: &Mutex<()>) {
    while nudged.recv().is_ok() {
        std::thread::sleep(COALESCE);
        let closing = matches!(nudged.try_recv(), Err(TryRecvError::Disconnected));
        let copied = {
            let _running = running.lock().unwrap_or_else(PoisonError::into_inner);
            passive(conn)
        };
        match copied {
            Ok(Copied::All) => caught_up.store(true, Ordering::Release),
            Ok(Copied::Some | Copied::Busy) => {}
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint failed; retrying after the next commit");
            }
        }
        if closing {
            return;
        }
    }
}
