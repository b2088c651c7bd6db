//! The node's timer: sleeps on the store's clock until the earliest known
//! due time, then makes due messages visible (waking their long polls on
//! every node), dead-letters expired last attempts, and learns the next due
//! time from the database.

use std::sync::Arc;
use std::time::Duration;

use wharf_core::Timestamp;

use super::Inner;
use tokio_postgres::IsolationLevel;
use wharf_core::Result;

use super::step::{Step, retrying};

/// Most messages one promotion makes visible.
const PROMOTE_BATCH: i64 = 10_000;

/// Makes due waiting messages of every queue visible (never an expired
/// last attempt), skipping rows other transactions hold, and notifies
/// their queues. Runs at REPEATABLE READ, where every row it locks is the
/// version its snapshot sees, so the update can find them by `ctid`.
const PROMOTE_DUE: &str = "
WITH due AS (
    SELECT m.ctid FROM queues q JOIN messages m ON m.queue_id = q.id
    WHERE NOT m.ready AND NOT m.fresh AND m.visible_at <= $1
      AND NOT (m.leased AND m.attempts >= coalesce(q.attempt_limit, 2147483647))
    LIMIT $3
    FOR UPDATE OF m SKIP LOCKED),
promoted AS (
    UPDATE messages m SET ready = true WHERE m.ctid = ANY (ARRAY(SELECT ctid FROM due))
    RETURNING m.queue_id),
woken AS (SELECT name FROM queues WHERE id IN (SELECT queue_id FROM promoted)),
notified AS (SELECT pg_notify($2, 'q:' || name) FROM woken)
SELECT ARRAY(SELECT name FROM woken), (SELECT count(*) FROM promoted),
       (SELECT count(*) FROM notified)";

/// The earliest due time of any waiting message or lease: one index probe
/// per queue and table.
const NEXT_DUE: &str = "
SELECT least(
    (SELECT min(w.visible_at) FROM queues q CROSS JOIN LATERAL (
        SELECT visible_at FROM messages m WHERE m.queue_id = q.id AND NOT m.ready AND NOT m.fresh
        ORDER BY visible_at LIMIT 1) AS w),
    (SELECT min(l.expires_at) FROM queues q CROSS JOIN LATERAL (
        SELECT expires_at FROM queue_leases x WHERE x.queue_id = q.id
        ORDER BY expires_at LIMIT 1) AS l))";

/// Forgets expired dedup ids and long-poll registrations.
const SWEEP: &str = "
WITH dedup AS (
    DELETE FROM queue_dedup WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM queue_dedup WHERE expires_at <= $1 LIMIT 1000))),
waiters AS (DELETE FROM queue_waiters WHERE expires_at <= $1)
SELECT 1";

/// How long (clock time) the timer sleeps when it knows of nothing due: a
/// bound on how late a due message is noticed when the node that wrote it
/// died before its time.
const RESCAN: Duration = Duration::from_secs(10);

/// How often (clock time) expired dedup ids and long-poll registrations
/// are forgotten, at most.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The first pause (real time) before firing again when a fire failed or
/// left rows due that other transactions held; doubles up to a second.
const FIRST_PAUSE: Duration = Duration::from_millis(20);

/// Runs the timer until the store closes (or the task is aborted).
pub(super) async fn run(inner: Arc<Inner>) {
    let clock = inner.shared.clock().clone();
    let mut pause = FIRST_PAUSE;
    let mut swept: Option<Timestamp> = None;
    loop {
        if inner.shared.is_closed() {
            return;
        }
        let now = clock.now();
        let due = inner
            .schedule
            .next()
            .unwrap_or_else(|| now.saturating_add(RESCAN));
        if due > now {
            tokio::select! {
                () = inner.schedule.changed.notified() => continue,
                () = clock.sleep_until(due) => {}
            }
        }
        inner.schedule.take();
        let fired = inner.fire(&mut swept).await;
        let behind = match fired {
            Ok(next) => {
                inner.schedule.learned(next);
                // Rows still due were held by other transactions: give
                // them a moment rather than asking again at once.
                next.is_some_and(|at| at <= clock.now())
            }
            Err(e) => {
                tracing::warn!(error = %e, "queue timer failed; retrying");
                inner.schedule.at(now);
                true
            }
        };
        if behind {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        } else {
            pause = FIRST_PAUSE;
        }
    }
}

impl Inner {
    /// One fire at the clock's time: promotes, dead-letters, sweeps dedup
    /// ids now and then; returns the earliest due time left.
    async fn fire(&self, swept: &mut Option<Timestamp>) -> Result<Option<Timestamp>> {
        let now = self.shared.clock().now();
        let doing = || "run the queue timer".to_owned();
        while retrying(doing, || self.promote_due(now)).await? >= PROMOTE_BATCH {}
        retrying(doing, || self.settle(None, true)).await?;
        let sweep = swept.is_none_or(|at| now >= at.saturating_add(SWEEP_EVERY));
        let next = retrying(doing, || self.look_ahead(now, sweep)).await?;
        if sweep {
            *swept = Some(now);
        }
        Ok(next)
    }

    /// Forgets expired dedup ids and registrations if `sweep`; returns the
    /// earliest due time left.
    async fn look_ahead(&self, now: Timestamp, sweep: bool) -> Step<Option<Timestamp>> {
        let conn = self.shared.conn().await?;
        if sweep {
            conn.execute(SWEEP, &[&now.as_micros()]).await?;
        }
        let next: Option<i64> = conn.query_one(NEXT_DUE, &[]).await?.try_get(0)?;
        Ok(next.map(Timestamp::from_micros))
    }

    /// Makes one batch of due messages visible; returns how many.
    async fn promote_due(&self, now: Timestamp) -> Step<i64> {
        let mut conn = self.shared.conn().await?;
        // REPEATABLE READ, as for dead letters (see `settle`): a row
        // another transaction just promoted fails this one rather than
        // staying locked by it.
        let tx = conn
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .start()
            .await?;
        let statement = tx.prepare_cached(PROMOTE_DUE).await?;
        let row = tx
            .query_one(
                &statement,
                &[&now.as_micros(), &self.shared.channel(), &PROMOTE_BATCH],
            )
            .await?;
        tx.commit().await?;
        for name in row.try_get::<_, Vec<String>>(0)? {
            self.wakers.wake(&name);
        }
        Ok(row.try_get(1)?)
    }
}
