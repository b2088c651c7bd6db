//! Keeps the queue table from bloating under churn.
//!
//! Acknowledged messages are deleted, so a busy queue leaves dead tuples
//! (and dead index entries at the head of `messages_ready`) as fast as it
//! consumes. Autovacuum reclaims them, but it looks only every
//! `autovacuum_naptime` (a minute by default), and meanwhile the table and
//! its indexes grow by a minute of churn and dequeues walk the dead entries.
//! So each node counts the rows it deletes and, once they pass a threshold
//! relative to the table's size, runs `VACUUM (SKIP_LOCKED)` on it in the
//! background: one at a time per node, skipped when another node's (or
//! autovacuum's) vacuum holds the table. Space freed this way is reused by
//! later inserts, so the table's size stops at what the queue holds plus a
//! bounded slack (measured by `tests/table_growth.rs`).
//!
//! Freed space is only worth having once rows are written to use it, and a
//! vacuum is not free: besides its own work, it changes the table's
//! statistics, and every connection then parses and plans each queue
//! statement again (`perf` put the two at about a tenth of PostgreSQL's
//! time in a drain of a 100,000-message backlog, vacuumed eleven times on
//! the way down). So at each threshold the node asks PostgreSQL's
//! statistics whether any node wrote rows to the table (inserted or
//! updated) since it last looked. If so, it vacuums; if not (a backlog
//! being drained), the vacuum is *owed* and runs as soon as the node has
//! deleted nothing for [`QUIET`], so that the next fill finds the space
//! freed, or at the next threshold that finds rows written, whichever
//! comes first.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::Shared;

/// Deletions before a vacuum, at least.
const MIN_DELETIONS: u64 = 5_000;
/// Deletions before a vacuum, as a fraction of the table's live rows
/// (PostgreSQL's estimate): a deep queue is vacuumed less often, since each
/// vacuum scans its indexes whole.
const FRACTION_OF_LIVE: f64 = 0.2;
/// How long a node must have deleted nothing before it runs an owed vacuum.
const QUIET: Duration = Duration::from_secs(1);

/// The rows written to `messages` by every node (inserted or updated), as
/// PostgreSQL's cumulative statistics count them; NULL when it does not
/// count them (`track_counts` off), and then every threshold vacuums.
const WRITTEN: &str = "
SELECT CASE WHEN current_setting('track_counts')::bool THEN n_tup_ins + n_tup_upd END
FROM pg_stat_user_tables WHERE relid = 'messages'::regclass";

/// `written` before anything was read.
const UNREAD: u64 = u64::MAX;

/// Deletions counted since the last vacuum, and whether one is running.
pub(crate) struct Vacuum {
    /// Rows deleted since the last vacuum (or skipped check).
    deleted: AtomicU64,
    /// Rows deleted since this node started, to tell quiet from busy.
    deleted_ever: AtomicU64,
    /// Whether a check or a vacuum runs.
    running: AtomicBool,
    /// Whether a vacuum was skipped and waits for the node to fall quiet.
    owed: AtomicBool,
    /// The threshold in force, recomputed after each vacuum.
    threshold: AtomicU64,
    /// [`WRITTEN`] when this node last read it ([`UNREAD`]: never).
    written: AtomicU64,
    /// Vacuums this node ran.
    vacuums: AtomicU64,
}

impl Default for Vacuum {
    fn default() -> Self {
        Vacuum {
            deleted: AtomicU64::new(0),
            deleted_ever: AtomicU64::new(0),
            running: AtomicBool::new(false),
            owed: AtomicBool::new(false),
            threshold: AtomicU64::new(MIN_DELETIONS),
            written: AtomicU64::new(UNREAD),
            vacuums: AtomicU64::new(0),
        }
    }
}

impl Vacuum {
    /// Counts `n` rows of `messages` deleted by this node; past the
    /// threshold, vacuums if rows were written since the node last looked,
    /// and otherwise owes a vacuum.
    pub(crate) fn deleted(shared: &Arc<Shared>, n: u64) {
        let v = &shared.vacuum;
        v.deleted_ever.fetch_add(n, Ordering::Relaxed);
        let total = v.deleted.fetch_add(n, Ordering::Relaxed) + n;
        let threshold = v.threshold.load(Ordering::Relaxed).max(MIN_DELETIONS);
        if total < threshold || v.running.swap(true, Ordering::AcqRel) {
            return;
        }
        v.deleted.store(0, Ordering::Relaxed);
        let shared = shared.clone();
        tokio::spawn(async move {
            let check = async {
                if rows_written_since_last_look(&shared).await? {
                    run(&shared).await
                } else {
                    if !shared.vacuum.owed.swap(true, Ordering::AcqRel) {
                        tokio::spawn(vacuum_when_quiet(shared.clone()));
                    }
                    Ok(())
                }
            };
            release_after(&shared, check).await;
        });
    }

    /// Vacuums this node has run.
    pub(crate) fn count(&self) -> u64 {
        self.vacuums.load(Ordering::Relaxed)
    }
}

/// Whether rows were written to `messages` since this node last looked
/// (true the first time, and whenever the statistics do not tell).
async fn rows_written_since_last_look(shared: &Shared) -> wharf_core::Result<bool> {
    let conn = shared.conn().await?;
    let written: Option<i64> = conn
        .query_opt(WRITTEN, &[])
        .await
        .map_err(|e| crate::error::pg("read how many rows the queue table took", e))?
        .and_then(|row| row.get(0));
    let Some(written) = written.and_then(|w| u64::try_from(w).ok()) else {
        return Ok(true);
    };
    let before = shared.vacuum.written.swap(written, Ordering::Relaxed);
    Ok(before == UNREAD || written > before)
}

/// Runs the owed vacuum once this node has deleted nothing for [`QUIET`]
/// (unless a vacuum ran meanwhile), or gives up when the store closes.
async fn vacuum_when_quiet(shared: Arc<Shared>) {
    let v = &shared.vacuum;
    let mut seen = v.deleted_ever.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(QUIET).await;
        if shared.is_closed() || !v.owed.load(Ordering::Acquire) {
            return;
        }
        let now = v.deleted_ever.load(Ordering::Relaxed);
        if now != seen {
            seen = now;
            continue;
        }
        if v.running.swap(true, Ordering::AcqRel) {
            continue;
        }
        release_after(&shared, run(&shared)).await;
        return;
    }
}

/// Runs `work`, which holds the node's vacuum (`running`, taken by the
/// caller), logs its failure, and lets the next check or vacuum run.
async fn release_after(shared: &Shared, work: impl Future<Output = wharf_core::Result<()>>) {
    if let Err(e) = work.await {
        tracing::debug!(error = %e, "vacuuming the queue table failed; autovacuum will");
    }
    shared.vacuum.running.store(false, Ordering::Release);
}

/// Vacuums the queue tables and sets the next threshold; pays what is owed.
async fn run(shared: &Shared) -> wharf_core::Result<()> {
    shared.vacuum.owed.store(false, Ordering::Release);
    let conn = shared.conn().await?;
    conn.batch_execute("VACUUM (SKIP_LOCKED) messages, queue_leases, queue_cursors")
        .await
        .map_err(|e| crate::error::pg("vacuum the queue table", e))?;
    shared.vacuum.vacuums.fetch_add(1, Ordering::Relaxed);
    let live: f32 = conn
        .query_one(
            "SELECT greatest(reltuples, 0)::real FROM pg_class WHERE oid = 'messages'::regclass",
            &[],
        )
        .await
        .map_err(|e| crate::error::pg("read the queue table's size", e))?
        .get(0);
    let threshold = (f64::from(live) * FRACTION_OF_LIVE) as u64;
    shared
        .vacuum
        .threshold
        .store(threshold.max(MIN_DELETIONS), Ordering::Relaxed);
    Ok(())
}
