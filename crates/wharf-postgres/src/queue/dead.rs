//! Failed deliveries: nack, reject, dead-letter moves and redrive.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use tokio_postgres::IsolationLevel;
use wharf_core::queue::{
    DEAD_LETTERED_AT, DELIVERY_ATTEMPTS, LAST_ERROR, NACKED_WITHOUT_REASON, ORIGINAL_STREAM_NAME,
    VISIBILITY_TIMEOUT_EXPIRED,
};
use wharf_core::{Error, QueueName, Receipt, Result, Timestamp};
use wharf_storage::receipt::ReceiptParts;

use super::Inner;
use super::deliver::{LeaseState, existing, lease_lost, lock_or_create};
use super::fresh::{LOCK_CURSOR, REWRITE_ONE, rewrite_expired};
use super::step::{Fail, Step, after, metadata, queue_name, retrying, seq_of};
use super::wake::{announcement, wake_up};
use wharf_storage::codec::encode_metadata;

/// Expired last attempts of queue `$1` and of the queues dead-lettering
/// into it, or of every queue when `$1` is NULL, at clock time `$2`.
const DOOMED_WHERE: &str = "
    ($1::text IS NULL OR s.name = $1 OR s.dead_letter_queue = $1)
    AND s.attempt_limit IS NOT NULL
    AND NOT m.ready AND NOT m.fresh AND m.leased AND m.visible_at <= $2
    AND m.attempts >= s.attempt_limit";

/// Rewrites the fresh messages of the expired leases of queue `$1` and of
/// the queues dead-lettering into it, or of every queue when `$1` is NULL,
/// at clock time `$2` (see `fresh`), notifying (on channel `$3`) the queues
/// where messages became visible; returns those queues.
static REWRITE_EXPIRED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH {rewrite},
woken AS (SELECT name FROM queues WHERE id IN (SELECT queue_id FROM rewritten WHERE ready)),
notified AS (SELECT pg_notify($3, 'q:' || name) FROM woken)
SELECT ARRAY(SELECT name FROM woken), (SELECT count(*) FROM notified)",
        rewrite = rewrite_expired(
            "$1::text IS NULL OR s.name = $1 OR s.dead_letter_queue = $1",
            "$2"
        )
    )
});

static ANY_DOOMED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT EXISTS (SELECT 1 FROM queues s JOIN messages m ON m.queue_id = s.id \
         WHERE {DOOMED_WHERE})"
    )
});

/// The advisory-lock key held by whoever moves expired last attempts to
/// their dead-letter queues (top bit set, as queue keys: never a payload
/// key).
const MOVES_KEY: i64 = i64::MIN | 0x7768_6172_665f_646c;
const LOCK_MOVES: &str = super::deliver::LOCK_EXCLUSIVE;
const TRY_LOCK_MOVES: &str = "SELECT pg_try_advisory_xact_lock($1)";

/// Most dead letters moved in one transaction.
const BATCH: usize = 1000;

fn doomed_sql(skip_locked: bool) -> String {
    format!(
        "SELECT m.seq, s.id, s.name, s.dead_letter_queue, m.attempts, m.visible_at, m.metadata \
         FROM queues s JOIN messages m ON m.queue_id = s.id WHERE {DOOMED_WHERE} \
         ORDER BY m.visible_at, m.seq LIMIT {BATCH} FOR UPDATE OF m{}",
        if skip_locked { " SKIP LOCKED" } else { "" }
    )
}

static DOOMED_WAIT: LazyLock<String> = LazyLock::new(|| doomed_sql(false));
static DOOMED_SKIP: LazyLock<String> = LazyLock::new(|| doomed_sql(true));

const NEW_SEQS: &str =
    "SELECT ARRAY(SELECT nextval('message_seq') FROM generate_series(1, $1::int))";

/// Rewrites messages `($7, $1)` as new ones at the end of another queue:
/// visible now (`$6`), attempt count 0, message id kept.
const MOVE: &str = "
UPDATE messages m
SET seq = r.new_seq, queue_id = r.queue_id, ready = true, leased = false, fresh = false,
    visible_at = $6,
    attempts = 0, enqueued_at = $6, origin_queue_id = r.origin, metadata = r.metadata
FROM unnest($7::bigint[], $1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bytea[])
     AS r(old_queue, old_seq, new_seq, queue_id, origin, metadata)
WHERE m.queue_id = ANY ($7::bigint[]) AND m.seq = ANY ($1::bigint[])
  AND m.queue_id = r.old_queue AND m.seq = r.old_seq";

const COUNT_DEAD: &str = "
INSERT INTO queue_counters AS c (queue_id, shard, dead_lettered) VALUES ($1, $2, $3)
ON CONFLICT (queue_id, shard) DO UPDATE SET dead_lettered = c.dead_lettered + excluded.dead_lettered";

const COUNT_NACK: &str = "
INSERT INTO queue_counters AS c (queue_id, shard, nacks) VALUES ($1, $2, 1)
ON CONFLICT (queue_id, shard) DO UPDATE SET nacks = c.nacks + 1";

const NOTIFY: &str = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p";

/// The delivery a receipt names, locked, with its queue's settings.
const LOCK_LEASE: &str = "
SELECT s.id, s.attempt_limit, s.dead_letter_queue, s.visibility_timeout_us,
       m.message_id, m.attempts, m.leased, m.ready, m.visible_at, m.metadata
FROM messages m JOIN queues s ON s.id = m.queue_id
WHERE m.seq = $1 AND s.name = $2
FOR UPDATE OF m";

/// Ends a lease: the message is visible at `$2` (ready now if `$3`), a nack
/// is counted, and notifications `$7` go out.
const RELEASE: &str = "
WITH released AS (
    UPDATE messages SET visible_at = $2, ready = $3, leased = false
    WHERE queue_id = $4 AND seq = $1 RETURNING 1),
counted AS (
    INSERT INTO queue_counters AS c (queue_id, shard, nacks) VALUES ($4, $5, 1)
    ON CONFLICT (queue_id, shard) DO UPDATE SET nacks = c.nacks + 1),
notified AS (SELECT pg_notify($6, p) FROM unnest($7::text[]) AS p)
SELECT (SELECT count(*) FROM released), (SELECT count(*) FROM notified)";

const IS_DEAD_LETTER_QUEUE: &str = "
SELECT EXISTS (SELECT 1 FROM queues WHERE dead_letter_queue = $1 AND name <> $1)
    OR EXISTS (SELECT 1 FROM messages WHERE queue_id = $2 AND origin_queue_id IS NOT NULL)";

/// Messages of queue `$1` a redrive moves: dead letters (or, with `$2`,
/// any message) not in flight at `$3`, fresh ones after the cursor
/// included. One statement over every state, through the primary key: a
/// row promoted while a second statement waited for it would fail that
/// statement's recheck and be missed. Runs after [`LOCK_CURSOR`] and the
/// rewrite of expired leases: every fresh message up to the cursor is in
/// flight.
const MOVABLE: &str = "
SELECT m.seq, m.metadata FROM messages m
WHERE m.queue_id = $1 AND (m.origin_queue_id IS NOT NULL OR $2)
  AND CASE WHEN m.fresh
           THEN m.seq > (SELECT delivered FROM queue_cursors c WHERE c.queue_id = $1)
           ELSE m.ready OR NOT (m.leased AND m.visible_at > $3) END
ORDER BY m.seq FOR UPDATE OF m";

/// A message leaving its queue for another.
pub(super) struct Move {
    pub(super) queue_id: i64,
    pub(super) seq: i64,
    pub(super) target: QueueName,
    /// The queue it came from, kept on a dead letter.
    pub(super) origin: Option<i64>,
    pub(super) metadata: BTreeMap<String, String>,
}

/// What a nack or reject does with its delivery.
enum GiveBack<'a> {
    Nack {
        after: Duration,
        reason: Option<&'a str>,
    },
    Reject {
        reason: &'a str,
        metadata: &'a BTreeMap<String, String>,
    },
}

/// `metadata` of a message dead-lettered from `source` after `attempts`.
fn dead_letter_metadata(
    mut metadata: BTreeMap<String, String>,
    extra: BTreeMap<String, String>,
    source: &str,
    attempts: i32,
    last_error: &str,
    at: Timestamp,
) -> BTreeMap<String, String> {
    metadata.extend(extra);
    metadata.insert(ORIGINAL_STREAM_NAME.into(), source.to_owned());
    metadata.insert(DELIVERY_ATTEMPTS.into(), attempts.to_string());
    metadata.insert(LAST_ERROR.into(), last_error.to_owned());
    metadata.insert(DEAD_LETTERED_AT.into(), at.to_string());
    metadata
}

impl Inner {
    /// Dead-letters the expired last attempts of `scope` (and of queues
    /// dead-lettering into it), or of every queue, waiting for rows other
    /// transactions hold so that what the caller reads next is settled.
    pub(super) async fn settle_now(&self, scope: Option<&QueueName>) -> Result<()> {
        retrying(
            || "dead-letter expired deliveries".to_owned(),
            || self.settle(scope, false),
        )
        .await
        .map(|_| ())
    }

    /// Moves expired last attempts to their dead-letter queues, a batch
    /// per transaction; with `skip_locked`, leaves rows another transaction
    /// holds to it. Returns how many moved.
    pub(super) async fn settle(&self, scope: Option<&QueueName>, skip_locked: bool) -> Step<usize> {
        let name = scope.map(QueueName::as_str);
        self.rewrite_expired(name).await?;
        let mut moved = 0;
        loop {
            let now = self.shared.clock().now();
            let mut conn = self.shared.conn().await?;
            let probe = conn.prepare_cached(&ANY_DOOMED).await?;
            let any: bool = conn
                .query_one(&probe, &[&name, &now.as_micros()])
                .await?
                .try_get(0)?;
            if !any {
                return Ok(moved);
            }
            // The timer runs at REPEATABLE READ: there a row another
            // transaction changed since the snapshot fails the statement
            // instead of being locked and skipped. At READ COMMITTED the
            // lock would stay held until commit, and a dequeue's SKIP
            // LOCKED would pass over a visible message nobody delivers.
            let tx = if skip_locked {
                conn.build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .start()
                    .await?
            } else {
                conn.transaction().await?
            };
            // One mover at a time, so that dead letters reach their queue
            // in the order they fell due: two movers skipping each other's
            // rows would split a batch and commit its halves either way.
            if skip_locked {
                let got: bool = tx
                    .query_one(TRY_LOCK_MOVES, &[&MOVES_KEY])
                    .await?
                    .try_get(0)?;
                if !got {
                    // Another node or task is moving them; the timer
                    // looks again shortly.
                    return Ok(moved);
                }
            } else {
                tx.query_one(LOCK_MOVES, &[&MOVES_KEY]).await?;
            }
            let select = tx
                .prepare_cached(if skip_locked {
                    &DOOMED_SKIP
                } else {
                    &DOOMED_WAIT
                })
                .await?;
            let rows = tx.query(&select, &[&name, &now.as_micros()]).await?;
            let mut moves = Vec::with_capacity(rows.len());
            let mut sources: Vec<(i64, i64)> = Vec::new();
            for row in &rows {
                let seq: i64 = row.try_get(0)?;
                let source_id: i64 = row.try_get(1)?;
                let source: String = row.try_get(2)?;
                let target: Option<String> = row.try_get(3)?;
                let attempts: i32 = row.try_get(4)?;
                let due: i64 = row.try_get(5)?;
                let original = metadata(row.try_get(6)?, seq)?;
                let Some(target) = target else { continue };
                moves.push(Move {
                    queue_id: source_id,
                    seq,
                    target: queue_name(target)?,
                    origin: Some(source_id),
                    metadata: dead_letter_metadata(
                        original,
                        BTreeMap::new(),
                        &source,
                        attempts,
                        VISIBILITY_TIMEOUT_EXPIRED,
                        Timestamp::from_micros(due),
                    ),
                });
                match sources.iter_mut().find(|(id, _)| *id == source_id) {
                    Some((_, n)) => *n += 1,
                    None => sources.push((source_id, 1)),
                }
            }
            let targets = self.move_messages(&tx, &moves, now).await?;
            for (source_id, n) in sources {
                tx.execute(COUNT_DEAD, &[&source_id, &self.shard(), &n])
                    .await?;
            }
            tx.commit().await?;
            self.woke(&targets);
            moved += moves.len();
            if rows.len() < BATCH {
                return Ok(moved);
            }
        }
    }

    /// Rewrites the fresh messages of expired leases of `scope` (see
    /// [`REWRITE_EXPIRED`]) and wakes this node's long polls of the
    /// queues where they became visible.
    async fn rewrite_expired(&self, scope: Option<&str>) -> Step<()> {
        let now = self.shared.clock().now();
        let conn = self.shared.conn().await?;
        let statement = conn.prepare_cached(&REWRITE_EXPIRED).await?;
        let row = conn
            .query_one(
                &statement,
                &[&scope, &now.as_micros(), &self.shared.channel()],
            )
            .await?;
        for name in row.try_get::<_, Vec<String>>(0)? {
            self.wakers.wake(&name);
        }
        Ok(())
    }

    /// Wakes this node's long polls of `queues` after a commit.
    pub(super) fn woke(&self, queues: &[QueueName]) {
        for queue in queues {
            self.wakers.wake(queue.as_str());
        }
    }

    /// Moves messages to the end of their target queues (created if
    /// missing: a dead letter's with the dead-letter defaults, a redriven
    /// message's with the store's defaults), notifying the targets.
    /// Returns the targets.
    pub(super) async fn move_messages(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        moves: &[Move],
        now: Timestamp,
    ) -> Step<Vec<QueueName>> {
        if moves.is_empty() {
            return Ok(Vec::new());
        }
        let dead_letter_settings = self.dead_letter_settings();
        let mut targets: Vec<(QueueName, i64)> = Vec::new();
        for m in moves {
            if targets.iter().any(|(t, _)| *t == m.target) {
                continue;
            }
            let settings = if m.origin.is_some() {
                &dead_letter_settings
            } else {
                self.shared.queue_defaults()
            };
            let id = lock_or_create(&**tx, &m.target, settings).await?;
            targets.push((m.target.clone(), id));
        }
        let n = i32::try_from(moves.len()).unwrap_or(i32::MAX);
        let mut new_seqs: Vec<i64> = tx.query_one(NEW_SEQS, &[&n]).await?.try_get(0)?;
        new_seqs.sort_unstable();
        let old_queues: Vec<i64> = moves.iter().map(|m| m.queue_id).collect();
        let old_seqs: Vec<i64> = moves.iter().map(|m| m.seq).collect();
        let queue_ids: Vec<i64> = moves
            .iter()
            .map(|m| {
                targets
                    .iter()
                    .find(|(t, _)| *t == m.target)
                    .map_or(0, |(_, id)| *id)
            })
            .collect();
        let origins: Vec<Option<i64>> = moves.iter().map(|m| m.origin).collect();
        let metadata: Vec<Vec<u8>> = moves.iter().map(|m| encode_metadata(&m.metadata)).collect();
        let statement = tx.prepare_cached(MOVE).await?;
        tx.execute(
            &statement,
            &[
                &old_seqs,
                &new_seqs,
                &queue_ids,
                &origins,
                &metadata,
                &now.as_micros(),
                &old_queues,
            ],
        )
        .await?;
        let notes: Vec<String> = targets.iter().map(|(t, _)| wake_up(t.as_str())).collect();
        tx.execute(NOTIFY, &[&self.shared.channel(), &notes])
            .await?;
        Ok(targets.into_iter().map(|(t, _)| t).collect())
    }

    pub(super) async fn nack(
        &self,
        queue: &QueueName,
        receipt: &Receipt,
        redeliver_after: Duration,
        reason: Option<String>,
    ) -> Result<()> {
        let parts = self.key.check(queue, receipt);
        let how = GiveBack::Nack {
            after: redeliver_after,
            reason: reason.as_deref(),
        };
        retrying(
            || format!("nack a delivery of `{queue}`"),
            || self.give_back(queue, &parts, &how),
        )
        .await
    }

    pub(super) async fn reject(
        &self,
        queue: &QueueName,
        receipt: &Receipt,
        reason: String,
        metadata: BTreeMap<String, String>,
    ) -> Result<()> {
        let parts = self.key.check(queue, receipt);
        let how = GiveBack::Reject {
            reason: &reason,
            metadata: &metadata,
        };
        retrying(
            || format!("reject a delivery of `{queue}`"),
            || self.give_back(queue, &parts, &how),
        )
        .await
    }

    /// Ends the delivery `parts` names: visible again later, or moved to
    /// the dead-letter queue, in one transaction that holds the message.
    async fn give_back(
        &self,
        queue: &QueueName,
        parts: &Result<ReceiptParts>,
        how: &GiveBack<'_>,
    ) -> Step<()> {
        let mut conn = self.shared.conn().await?;
        let parts = match parts {
            Ok(p) => p,
            Err(e) => {
                existing(&**conn, queue).await?;
                return Err(Fail::Caller(e.clone()));
            }
        };
        let seq = seq_of(parts)?;
        let now = self.shared.clock().now();
        let tx = conn.transaction().await?;
        let rewrite = tx.prepare_cached(REWRITE_ONE).await?;
        tx.execute(&rewrite, &[&queue.as_str(), &seq]).await?;
        let lock = tx.prepare_cached(LOCK_LEASE).await?;
        let Some(row) = tx.query_opt(&lock, &[&seq, &queue.as_str()]).await? else {
            existing(&*tx, queue).await?;
            return Err(Fail::Caller(
                lease_lost(queue, parts, None, None, now).expect("no message, no lease"),
            ));
        };
        let queue_id: i64 = row.try_get(0)?;
        let limit: Option<i32> = row.try_get(1)?;
        let state = LeaseState {
            message_id: row.try_get(4)?,
            attempts: row.try_get(5)?,
            leased: row.try_get(6)?,
            ready: row.try_get(7)?,
            visible_at: row.try_get(8)?,
        };
        if let Some(lost) = lease_lost(queue, parts, Some(&state), limit, now) {
            return Err(Fail::Caller(lost));
        }
        // A target exists exactly when the queue has an attempts limit.
        let target = match limit {
            Some(_) => row
                .try_get::<_, Option<String>>(2)?
                .map(queue_name)
                .transpose()?,
            None => None,
        };
        let vt = Duration::from_micros(row.try_get::<_, i64>(3)?.max(0).unsigned_abs());
        let (dead, last_error, extra, visible_at) = match how {
            GiveBack::Nack {
                after: delay,
                reason,
            } => (
                target.filter(|_| limit.is_some_and(|l| state.attempts >= l)),
                reason.unwrap_or(NACKED_WITHOUT_REASON),
                BTreeMap::new(),
                after(now, *delay),
            ),
            GiveBack::Reject { reason, metadata } => {
                (target, *reason, (*metadata).clone(), after(now, vt))
            }
        };
        let Some(target) = dead else {
            let ready = visible_at <= now.as_micros();
            let due = Timestamp::from_micros(visible_at);
            let mut notes = Vec::new();
            if ready {
                notes.push(wake_up(queue.as_str()));
            } else if self.schedule.must_announce(due, now) {
                notes.push(announcement(due));
            }
            let release = tx.prepare_cached(RELEASE).await?;
            tx.query_one(
                &release,
                &[
                    &seq,
                    &visible_at,
                    &ready,
                    &queue_id,
                    &self.shard(),
                    &self.shared.channel(),
                    &notes,
                ],
            )
            .await?;
            tx.commit().await?;
            if ready {
                self.wakers.wake(queue.as_str());
            } else {
                self.schedule.at(due);
            }
            return Ok(());
        };
        let original = metadata(row.try_get(9)?, seq)?;
        let moves = [Move {
            queue_id,
            seq,
            target,
            origin: Some(queue_id),
            metadata: dead_letter_metadata(
                original,
                extra,
                queue.as_str(),
                state.attempts,
                last_error,
                now,
            ),
        }];
        tx.execute(COUNT_NACK, &[&queue_id, &self.shard()]).await?;
        let targets = self.move_messages(&tx, &moves, now).await?;
        tx.execute(COUNT_DEAD, &[&queue_id, &self.shard(), &1i64])
            .await?;
        tx.commit().await?;
        self.woke(&targets);
        Ok(())
    }

    pub(super) async fn redrive(
        &self,
        dead_letter_queue: &QueueName,
        to: Option<&QueueName>,
    ) -> Result<u64> {
        self.settle_now(None).await?;
        retrying(
            || format!("redrive `{dead_letter_queue}`"),
            || self.redrive_once(dead_letter_queue, to),
        )
        .await
    }

    async fn redrive_once(&self, dlq: &QueueName, to: Option<&QueueName>) -> Step<u64> {
        let now = self.shared.clock().now();
        let mut conn = self.shared.conn().await?;
        let tx = conn.transaction().await?;
        let (id, _) = existing(&*tx, dlq).await?;
        let is_dlq: bool = tx
            .query_one(IS_DEAD_LETTER_QUEUE, &[&dlq.as_str(), &id])
            .await?
            .try_get(0)?;
        if !is_dlq {
            return Err(Fail::Caller(Error::InvalidArgument(format!(
                "queue `{dlq}` is not a dead-letter queue: no queue names it as its \
                 dead_letter_queue and it holds no dead letters"
            ))));
        }
        tx.query(LOCK_CURSOR, &[&dlq.as_str()]).await?;
        let rows = tx
            .query(MOVABLE, &[&id, &to.is_some(), &now.as_micros()])
            .await?;
        let mut moves = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = row.try_get(0)?;
            let mut metadata = metadata(row.try_get(1)?, seq)?;
            let Some(target) = wharf_core::queue::redrive_target(&mut metadata, to) else {
                continue;
            };
            moves.push(Move {
                queue_id: id,
                seq,
                target,
                origin: None,
                metadata,
            });
        }
        let targets = self.move_messages(&tx, &moves, now).await?;
        tx.commit().await?;
        self.woke(&targets);
        Ok(moves.len() as u64)
    }
}
