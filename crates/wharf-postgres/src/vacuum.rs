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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::Shared;

/// Deletions before a vacuum, at least.
const MIN_DELETIONS: u64 = 5_000;
/// Deletions before a vacuum, as a fraction of the table's live rows
/// (PostgreSQL's estimate): a deep queue is vacuumed less often, since each
/// vacuum scans its indexes whole.
const FRACTION_OF_LIVE: f64 = 0.2;

/// Deletions counted since the last vacuum, and whether one is running.
#[derive(Default)]
pub(crate) struct Vacuum {
    deleted: AtomicU64,
    running: AtomicBool,
    /// The threshold in force, recomputed after each vacuum.
    threshold: AtomicU64,
}

impl Vacuum {
    /// Counts `n` rows of `messages` deleted by this node; starts a vacuum
    /// when they pass the threshold.
    pub(crate) fn deleted(shared: &Arc<Shared>, n: u64) {
        let v = &shared.vacuum;
        let total = v.deleted.fetch_add(n, Ordering::Relaxed) + n;
        let threshold = v.threshold.load(Ordering::Relaxed).max(MIN_DELETIONS);
        if total < threshold || v.running.swap(true, Ordering::AcqRel) {
            return;
        }
        v.deleted.store(0, Ordering::Relaxed);
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = run(&shared).await {
                tracing::debug!(error = %e, "vacuuming the queue table failed; autovacuum will");
            }
            shared.vacuum.running.store(false, Ordering::Release);
        });
    }
}

async fn run(shared: &Shared) -> wharf_core::Result<()> {
    let conn = shared.conn().await?;
    conn.batch_execute("VACUUM (SKIP_LOCKED) messages, queue_leases, queue_cursors")
        .await
        .map_err(|e| crate::error::pg("vacuum the queue table", e))?;
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
