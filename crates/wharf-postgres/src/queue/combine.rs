//! Enqueues, dequeues and acknowledgements of one queue, combined per node.
//!
//! Each node runs *rounds* per queue in two lanes ([`Lane`]): one for
//! enqueues and dequeues, one for acknowledgements, each with at most
//! [`ROUNDS`] rounds at a time. Requests that arrive while they run
//! wait for the next round of their lane, which takes them all: one
//! transaction, sent as one pipeline (`BEGIN`, the enqueues as one `INSERT`
//! under the queue's head lock, the promotion of due messages, the cursor's
//! lock, one delivering statement per visibility timeout asked for;
//! `COMMIT`), or, for acknowledgements, one `DELETE` that is its own
//! transaction, so one round trip and one
//! commit serve every producer and consumer of the queue on this node
//! rather than one each per request (enqueues under the head lock would
//! otherwise commit one at a time). An idle queue answers a lone request as
//! fast as a plain statement would.
//!
//! A round fails or commits as a whole: every request in it gets the same
//! error (transactions aborted by a conflict are run again first).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;
use wharf_core::{
    Delivery, DequeueOptions, Enqueued, Error, NewMessage, QueueName, Result, Timestamp,
};
use wharf_storage::ORPHANED;
use wharf_storage::receipt::ReceiptParts;

use super::Inner;
use super::deliver::{
    ENQUEUE, InsertRow, LOCK_SHARED, create, lease_lost, lease_states, queue_key,
};
use super::fresh::{LOCK_CURSOR, LOCK_HEAD, head_key, lease_of, rewrite_expired};
use super::step::{DELIVERY_COLUMNS, Step, attempt_of, delivery, micros, retrying, seq_of};
use super::wake::{announcement, wake_up};
use crate::flush;
use crate::vacuum::Vacuum;

/// Deletes the messages whose receipts name their current delivery (never
/// an expired last attempt) and commits asynchronously ([`COMMIT_ASYNC`]),
/// counting them in shard `$6`, and counts the
/// fresh ones out of their leases. A fresh message is in flight, attempt 1,
/// exactly while its row exists and is fresh (a receipt is only ever issued
/// for a delivered one); its lease is looked up only where attempt 1 may be
/// the last, to refuse an expired one. An ordinary one must be at the
/// receipt's attempt. Returns the queue id and attempts limit (NULL: no
/// such queue) and the deliveries deleted. The fresh ones are counted out
/// lease by lease (a queue has a few leases in flight, an acknowledgement
/// up to 100 messages), not by looking up each message's lease.
///
/// The receipts' rows are found by lateral range scans of the primary key,
/// one per run of nearby keys in `$7`..`$8` (see [`key_runs`]: a consumer
/// acknowledges what one dequeue leased, consecutive keys, so one scan
/// instead of a probe per receipt), and
/// deleted by `ctid`, never through a join or a `seq = ANY (…)`: a generic
/// plan made from the statistics of an empty table (the planner re-plans
/// after every vacuum) scanned every message of the queue for each round
/// that way, filtering by `seq`. The probe reads the version the
/// statement's snapshot sees; rows in a run that no receipt names fail the
/// `WHERE`. The range scan is kept a lateral subquery (`OFFSET 0`), and the
/// receipt checks inside the `CASE`, where they stay hashed lookups: pulled
/// up into joins, a generic plan read every message of the queue for each
/// run and compared every row with every receipt (the benchmark fell to a
/// fifth). When another transaction changed the row
/// after the snapshot (a timer made the expired delivery ready, or rewrote
/// its expired lease's fresh messages), the `DELETE` waits for it and
/// rechecks its `WHERE` on the newest version, `ctid` included, which that
/// version does not have: the row is left, and [`Inner::ack_outcomes`]
/// acknowledges such receipts again while their delivery is current (test
/// `ack_races`). Each pass over the deleted rows costs ~10 µs a hundred:
/// the fresh range is found in one (`span`), each touched lease's count is
/// made once (`OFFSET 0`: pulled up, its subquery ran for the filter and
/// again for the column), and the answer's two arrays come from one.
static ACK: LazyLock<String> = LazyLock::new(|| {
    format!(
        "
WITH q AS MATERIALIZED (
    SELECT id, attempt_limit, coalesce(attempt_limit, 2147483647) AS lim
    FROM queues WHERE name = $1),
r AS MATERIALIZED (
    SELECT * FROM unnest($2::bigint[], $3::uuid[], $4::int[]) AS r(seq, message_id, attempt)),
done AS (
    DELETE FROM messages m
    WHERE m.ctid = ANY (ARRAY(
        SELECT y.ctid FROM unnest($7::bigint[], $8::bigint[]) AS g(lo, hi) CROSS JOIN LATERAL (
            SELECT ctid FROM messages y
            WHERE y.queue_id = (SELECT id FROM q) AND y.seq BETWEEN g.lo AND g.hi
            OFFSET 0) AS y))
      AND CASE WHEN m.fresh
          THEN (m.seq, m.message_id) IN (SELECT seq, message_id FROM r WHERE attempt = 1)
               AND ((SELECT lim FROM q) > 1 OR NOT EXISTS (
                   SELECT 1 FROM {lease} AS l WHERE l.first_seq <= m.seq AND l.expires_at <= $5))
          ELSE (m.seq, m.message_id, m.attempts) IN (SELECT seq, message_id, attempt FROM r)
               AND NOT (m.leased AND NOT m.ready AND m.visible_at <= $5
                        AND m.attempts >= (SELECT lim FROM q))
          END
    RETURNING m.seq, CASE WHEN m.fresh THEN 1 ELSE m.attempts END AS attempts, m.fresh),
span AS MATERIALIZED (SELECT min(seq) AS lo, max(seq) AS hi FROM done WHERE fresh),
touched AS (
    SELECT * FROM (
        SELECT l.last_seq, (SELECT count(*) FROM done a
                            WHERE a.fresh AND a.seq BETWEEN l.first_seq AND l.last_seq) AS k
        FROM queue_leases l
        WHERE l.queue_id = (SELECT id FROM q)
          AND l.last_seq >= (SELECT lo FROM span)
          AND l.first_seq <= (SELECT hi FROM span)
        OFFSET 0) AS t
    WHERE k > 0),
emptied AS (
    DELETE FROM queue_leases l
    WHERE l.queue_id = (SELECT id FROM q) AND l.last_seq = ANY (ARRAY(SELECT last_seq FROM touched))
      AND l.remaining <= (SELECT k FROM touched t WHERE t.last_seq = l.last_seq)),
shrunk AS (
    UPDATE queue_leases l
    SET remaining = l.remaining - (SELECT k FROM touched t WHERE t.last_seq = l.last_seq)
    WHERE l.queue_id = (SELECT id FROM q) AND l.last_seq = ANY (ARRAY(SELECT last_seq FROM touched))
      AND l.remaining > (SELECT k FROM touched t WHERE t.last_seq = l.last_seq)),
counted AS (
    INSERT INTO queue_counters AS c (queue_id, shard, acks)
    SELECT (SELECT id FROM q), $6::smallint, count(*) FROM done HAVING count(*) > 0
    ON CONFLICT (queue_id, shard) DO UPDATE SET acks = c.acks + excluded.acks)
SELECT (SELECT id FROM q), (SELECT attempt_limit FROM q), coalesce(a.seqs, '{{}}'),
       coalesce(a.attempts, '{{}}'), {COMMIT_ASYNC}
FROM (SELECT array_agg(seq) AS seqs, array_agg(attempts) AS attempts FROM done) AS a",
        lease = lease_of("(SELECT id FROM q)", "m.seq")
    )
});

/// Makes the round's transaction commit asynchronously ([`COMMIT_ASYNC`]);
/// makes due waiting messages of queue `$1` ready (never an expired last
/// attempt) and rewrites the fresh messages of its expired leases,
/// notifying `$4` if any became visible; reports whether an expired last
/// attempt of the queue, or of a queue dead-lettering into it, waits to be
/// moved.
static PROMOTE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "
WITH q AS MATERIALIZED (SELECT id, attempt_limit FROM queues WHERE name = $1),
{rewrite},
promoted AS (
    UPDATE messages m SET ready = true
    WHERE m.queue_id = (SELECT id FROM q) AND NOT m.ready AND NOT m.fresh AND m.visible_at <= $2
      AND NOT (m.leased AND m.attempts >= coalesce((SELECT attempt_limit FROM q), 2147483647))
    RETURNING 1),
n AS (SELECT (SELECT count(*) FROM promoted) + (SELECT count(*) FROM rewritten WHERE ready) AS k),
notified AS (SELECT pg_notify($3, $4) FROM n WHERE k > 0)
SELECT (SELECT id FROM q), (SELECT k FROM n), (SELECT count(*) FROM notified),
    EXISTS (SELECT 1 FROM rewritten WHERE NOT ready) OR EXISTS (
        SELECT 1 FROM queues s JOIN messages m ON m.queue_id = s.id
        WHERE (s.name = $1 OR s.dead_letter_queue = $1) AND s.attempt_limit IS NOT NULL
          AND NOT m.ready AND NOT m.fresh AND m.leased AND m.visible_at <= $2
          AND m.attempts >= s.attempt_limit),
    {COMMIT_ASYNC}",
        rewrite = rewrite_expired("s.name = $1", "$2")
    )
});

/// Delivers up to `$2` visible messages of queue `$1` in enqueue order, in
/// flight until `$3` plus the timeout `$4` (or the queue's), counted on
/// the cursor row (which the round holds anyway): ordinary ready rows
/// (redeliveries, messages whose delay passed) are each updated; fresh ones
/// after the cursor, which the round has locked, are leased: the cursor
/// moved past them and one lease inserted for them. The ordinary rows it
/// delivers are updated by the `ctid` their lock returned (see `ACK` for
/// why not by `seq = ANY (…)`). One row with the queue id (NULL: no such
/// queue) and the delivery columns (NULL: nothing delivered), whether it
/// was fresh and the last `seq` it stands for, or one row per ordinary
/// delivery and one for the lease of fresh ones: its `seq` and last `seq`
/// are the lease's range and its `visible_at` the lease's expiry. The fresh
/// messages' content is read after the commit ([`FETCH`]), so that the
/// round, which holds the queue's cursor, neither copies nor sends it, and
/// the statement answers one row for them, not one each (a hundred rows of
/// twelve columns, built, sent and parsed only to find the range).
static DELIVER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "
WITH q AS MATERIALIZED (SELECT id, visibility_timeout_us FROM queues WHERE name = $1),
until AS MATERIALIZED (SELECT $3 + coalesce($4, (SELECT visibility_timeout_us FROM q)) AS t),
slow AS MATERIALIZED (
    SELECT seq, ctid FROM messages
    WHERE queue_id = (SELECT id FROM q) AND ready
    ORDER BY seq LIMIT $2
    FOR UPDATE SKIP LOCKED),
fresh AS MATERIALIZED (
    SELECT seq FROM messages
    WHERE queue_id = (SELECT id FROM q) AND fresh
      AND seq > (SELECT delivered FROM queue_cursors WHERE queue_id = (SELECT id FROM q))
    ORDER BY seq LIMIT $2),
chosen AS MATERIALIZED (
    SELECT seq, f FROM (SELECT seq, false AS f FROM slow UNION ALL SELECT seq, true FROM fresh) AS u
    ORDER BY seq LIMIT $2),
delivered AS (
    UPDATE messages m
    SET ready = false, leased = true, attempts = m.attempts + 1,
        visible_at = (SELECT t FROM until)
    WHERE m.ctid = ANY (ARRAY(
        SELECT ctid FROM slow WHERE seq IN (SELECT seq FROM chosen WHERE NOT f)))
    RETURNING {DELIVERY_COLUMNS}, false AS fresh, m.seq AS last),
lease AS MATERIALIZED (
    SELECT min(seq) AS first, max(seq) AS last, count(*) AS n
    FROM fresh WHERE seq <= (SELECT max(seq) FROM chosen WHERE f)),
advanced AS (
    UPDATE queue_cursors c
    SET delivered = coalesce((SELECT last FROM lease), c.delivered),
        deliveries = c.deliveries + (SELECT count(*) FROM chosen)
    WHERE queue_id = (SELECT id FROM q) AND EXISTS (SELECT 1 FROM chosen)),
leased AS (
    INSERT INTO queue_leases (queue_id, last_seq, first_seq, expires_at, remaining)
    SELECT (SELECT id FROM q), last, first, (SELECT t FROM until), n FROM lease WHERE n > 0)
SELECT (SELECT id FROM q), d.*
FROM (SELECT 1) AS one
LEFT JOIN (
    SELECT * FROM delivered
    UNION ALL
    SELECT first, NULL::uuid, 1, NULL::bigint, (SELECT t FROM until), NULL::bytea, NULL::bytea,
           NULL::bytea, NULL::bytea, NULL::bytea, true, last
    FROM lease WHERE n > 0) AS d ON true"
    )
});

/// The fresh messages of queue `$1` with `$2 <= seq <= $3`, which a round
/// has just leased until `$4` (a lease's range holds no other fresh
/// message), in the layout of [`DELIVER`]'s rows. A message rewritten
/// meanwhile (its lease expired already) is not fresh any more and is left
/// out: it is delivered again the ordinary way.
const FETCH: &str = "
SELECT $1::bigint, seq, message_id, 1, enqueued_at, $4::bigint, content_type, metadata,
       payload_hash, payload_ref, data, true
FROM messages WHERE queue_id = $1 AND seq BETWEEN $2 AND $3 AND fresh ORDER BY seq";

const NOTIFY: &str = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p";

/// Makes the transaction of the statement it ends commit without waiting
/// for the disk: every statement of a round that dequeues (its promotion)
/// or acknowledges ends with it. The queue's cursor (or the rows an
/// acknowledgement locked) is then free for the next round at once
/// (PostgreSQL holds locks until the commit is flushed); the round's
/// answers wait for a group flush instead (see `crate::flush`), which the
/// lanes' rounds share. `set_config(…, true)` lasts until the transaction
/// ends, after its commit record: an acknowledgement alone is one statement
/// in its own transaction, and commits asynchronously all the same. Rounds
/// that only enqueue commit synchronously: the extra round trip of a flush
/// would cost a lone producer more than the head lock does.
const COMMIT_ASYNC: &str = "set_config('synchronous_commit', 'off', true)";

/// What a dequeue got: its deliveries, and whether expired last attempts
/// wait to be dead-lettered.
pub(super) struct Taken {
    pub(super) deliveries: Vec<Delivery>,
    pub(super) dead_due: bool,
}

struct AckJob {
    parts: Vec<Result<ReceiptParts>>,
    reply: oneshot::Sender<Result<Vec<Result<()>>>>,
}

struct TakeJob {
    options: DequeueOptions,
    reply: oneshot::Sender<Result<Taken>>,
}

/// An enqueue without dedup ids: its messages and the ids they get.
struct PutJob {
    messages: Vec<NewMessage>,
    ids: Vec<Uuid>,
    reply: oneshot::Sender<Result<()>>,
}

/// Requests of one queue waiting for the next round.
#[derive(Default)]
struct Pending {
    acks: Vec<AckJob>,
    takes: Vec<TakeJob>,
    puts: Vec<PutJob>,
    /// Workers running rounds for the queue.
    running: usize,
}

/// The requests one round serves.
struct Jobs {
    acks: Vec<AckJob>,
    takes: Vec<TakeJob>,
    puts: Vec<PutJob>,
}

impl Jobs {
    /// Whether the round commits asynchronously ([`COMMIT_ASYNC`]) and so
    /// answers only after a group flush: every round that dequeues or
    /// acknowledges.
    fn commits_async(&self) -> bool {
        !self.takes.is_empty() || !self.acks.is_empty()
    }
}

/// The two kinds of rounds of a queue, which a node runs side by side on
/// two connections: a queue's deliveries take turns at its cursor, so a
/// round that also acknowledged would keep PostgreSQL on one core for the
/// whole queue; acknowledgements need no cursor and run in rounds of their
/// own meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Lane {
    /// Enqueues and dequeues (a dequeue can take what the round enqueued).
    Deliver,
    /// Acknowledgements.
    Ack,
}

/// Rounds of one queue and lane a node runs at once: a second one sends
/// its statements while the first finishes. Two delivering rounds hold the
/// queue's cursor one after the other, but only from their delivering
/// statement to their commit (the messages' content is read after it, see
/// [`FETCH`]); acknowledging rounds do not wait for each other. One or
/// four made no difference in `wharf-bench postgres`.
const ROUNDS: usize = 2;

/// The requests of each queue and lane waiting for a round on this node.
#[derive(Default)]
pub(super) struct Combiner(Mutex<HashMap<(QueueName, Lane), Pending>>);

/// What a round answers: the queue id (`None`: no such queue), per ack job
/// the outcome of each receipt, per take job its deliveries.
struct Answers {
    queue_id: Option<i64>,
    acked: Vec<Vec<Result<()>>>,
    taken: Vec<Vec<Delivery>>,
    dead_due: bool,
    /// The deliveries of each delivering statement, until [`Inner::fetched`]
    /// hands them out to `taken`.
    groups: Vec<Group>,
}

/// What one delivering statement of a round delivered, for the take jobs
/// `jobs` (indexes into the round's takes, in the order they came).
struct Group {
    jobs: Vec<usize>,
    /// Ordinary messages, by `seq`.
    delivered: Vec<(i64, Delivery)>,
    /// The fresh messages it leased, still to be read: the first and last
    /// `seq` and the lease's expiry.
    leased: Option<(i64, i64, i64)>,
}

type Query<'a> =
    Pin<Box<dyn Future<Output = std::result::Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a>>;

impl Inner {
    /// Acknowledges in the queue's next round.
    pub(super) async fn ack_combined(
        self: &Arc<Self>,
        queue: &QueueName,
        parts: Vec<Result<ReceiptParts>>,
    ) -> Result<Vec<Result<()>>> {
        let (reply, answer) = oneshot::channel();
        self.submit(queue, Lane::Ack, |p| p.acks.push(AckJob { parts, reply }));
        answer.await.map_err(|_| stopped())?
    }

    /// Dequeues in the queue's next round.
    pub(super) async fn take_combined(
        self: &Arc<Self>,
        queue: &QueueName,
        options: DequeueOptions,
    ) -> Result<Taken> {
        let (reply, answer) = oneshot::channel();
        self.submit(queue, Lane::Deliver, |p| {
            p.takes.push(TakeJob { options, reply });
        });
        answer.await.map_err(|_| stopped())?
    }

    /// Gives back `orphans`, deliveries whose dequeue was gone when its
    /// round answered (its caller cancelled it, as a consumer closing
    /// while its long poll was being served does): each is visible again
    /// at once, its attempt counted, rather than invisible to everyone
    /// until its visibility timeout. A round leaves out dequeues already
    /// gone when it starts; this covers those that go while it runs.
    async fn give_back_orphans(&self, queue: &QueueName, orphans: Vec<Delivery>) {
        for delivery in orphans {
            let reason = Some(ORPHANED.to_owned());
            if let Err(e) = self
                .nack(queue, &delivery.receipt, Duration::ZERO, reason)
                .await
            {
                tracing::warn!(queue = %queue, error = %e,
                    "could not give back a delivery whose dequeue was cancelled");
            }
        }
    }

    /// Enqueues `messages` (none with a dedup id) in the queue's next
    /// round, creating the queue if it does not exist.
    pub(super) async fn put_combined(
        self: &Arc<Self>,
        queue: &QueueName,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Enqueued>> {
        let ids: Vec<Uuid> = messages.iter().map(|_| Uuid::now_v7()).collect();
        let enqueued = ids
            .iter()
            .map(|&message_id| Enqueued {
                message_id,
                duplicate: false,
            })
            .collect();
        let (reply, answer) = oneshot::channel();
        self.submit(queue, Lane::Deliver, |p| {
            p.puts.push(PutJob {
                messages,
                ids,
                reply,
            });
        });
        answer.await.map_err(|_| stopped())??;
        Ok(enqueued)
    }

    fn submit(self: &Arc<Self>, queue: &QueueName, lane: Lane, add: impl FnOnce(&mut Pending)) {
        let start = {
            let mut map = self
                .combiner
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let pending = map.entry((queue.clone(), lane)).or_default();
            add(pending);
            let start = pending.running < ROUNDS;
            if start {
                pending.running += 1;
            }
            start
        };
        if start {
            tokio::spawn(self.clone().rounds(queue.clone(), lane));
        }
    }

    /// The requests waiting for the next round of `queue`, or `None` (and
    /// this worker retires) when nothing waits.
    fn next_jobs(&self, queue: &QueueName, lane: Lane) -> Option<Jobs> {
        let mut map = self
            .combiner
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = (queue.clone(), lane);
        let pending = map.get_mut(&key)?;
        // A dequeue whose caller has gone is not served: dropping a
        // dequeue before the store delivers loses nothing.
        pending.takes.retain(|t| !t.reply.is_closed());
        if pending.acks.is_empty() && pending.takes.is_empty() && pending.puts.is_empty() {
            pending.running -= 1;
            if pending.running == 0 {
                map.remove(&key);
            }
            return None;
        }
        Some(Jobs {
            acks: std::mem::take(&mut pending.acks),
            takes: std::mem::take(&mut pending.takes),
            puts: std::mem::take(&mut pending.puts),
        })
    }

    /// Runs rounds for `queue` until nothing waits. A round's requests are
    /// answered once its commit is flushed (by a group flush for rounds
    /// that dequeue or acknowledge, see [`COMMIT_ASYNC`]), while the next round runs.
    async fn rounds(self: Arc<Self>, queue: QueueName, lane: Lane) {
        while let Some(jobs) = self.next_jobs(&queue, lane) {
            let answered = self.serve(&queue, &jobs).await;
            let this = self.clone();
            let queue = queue.clone();
            let unflushed = jobs.commits_async();
            tokio::spawn(async move {
                let answered = match answered {
                    Ok(answers) if unflushed => {
                        let (flushed, fetched) = futures::join!(
                            flush::flushed(&this.shared),
                            this.fetched(&queue, answers, &jobs.takes)
                        );
                        flushed.and(fetched)
                    }
                    other => other,
                };
                let orphans = answer(&queue, jobs, answered);
                this.give_back_orphans(&queue, orphans).await;
            });
        }
    }

    /// Runs one round for `jobs`; when it enqueues into a queue that does
    /// not exist, creates the queue and runs it again.
    async fn serve(&self, queue: &QueueName, jobs: &Jobs) -> Result<Answers> {
        let doing = || format!("work on queue `{queue}`");
        let answers = retrying(doing, || self.round(queue, jobs)).await?;
        if answers.queue_id.is_some() || jobs.puts.is_empty() {
            return Ok(answers);
        }
        retrying(doing, || async {
            let conn = self.shared.conn().await?;
            create(&**conn, queue, self.shared.queue_defaults()).await
        })
        .await?;
        retrying(doing, || self.round(queue, jobs)).await
    }

    /// One round: every statement in one transaction, sent at once.
    async fn round(&self, queue: &QueueName, jobs: &Jobs) -> Step<Answers> {
        let Jobs { acks, takes, puts } = jobs;
        let now = self.shared.clock().now();
        let name = queue.as_str();
        let now_us = now.as_micros();
        let channel = self.shared.channel();
        let conn = self.shared.conn().await?;

        let parts = well_formed(acks);
        let ack_args = AckArgs::of(&parts, now_us, self.shard())?;
        let wake = wake_up(name);
        // Dequeues by visibility timeout: one statement for each.
        let mut groups: Vec<(Option<i64>, i64, Vec<usize>)> = Vec::new();
        for (i, job) in takes.iter().enumerate() {
            let vt = job.options.visibility_timeout.map(micros);
            let limit = i64::from(job.options.max_messages);
            match groups.iter_mut().find(|(g, _, _)| *g == vt) {
                Some((_, total, jobs)) => {
                    *total += limit;
                    jobs.push(i);
                }
                None => groups.push((vt, limit, vec![i])),
            }
        }
        let put_rows: Vec<InsertRow<'_>> = puts
            .iter()
            .flat_map(|job| {
                job.messages
                    .iter()
                    .zip(&job.ids)
                    .map(|(m, id)| InsertRow::of(m, *id, now))
            })
            .collect();
        let put_refs: Vec<&InsertRow<'_>> = put_rows.iter().collect();
        let insert = self.insert_params(queue, &put_refs, now);
        let insert_params = insert.sql(&channel);
        let queue_lock = queue_key(queue);
        let head_lock = head_key(queue);

        let (lock_shared, lock_head, enqueue) = if puts.is_empty() {
            (None, None, None)
        } else {
            let (s, h, e) = futures::try_join!(
                conn.prepare_cached(LOCK_SHARED),
                conn.prepare_cached(LOCK_HEAD),
                conn.prepare_cached(ENQUEUE)
            )?;
            (Some(s), Some(h), Some(e))
        };
        let ack = if acks.is_empty() {
            None
        } else {
            Some(conn.prepare_cached(&ACK).await?)
        };
        let (promote, lock_cursor, deliver) = if takes.is_empty() {
            (None, None, None)
        } else {
            let (p, l, d) = futures::try_join!(
                conn.prepare_cached(&PROMOTE),
                conn.prepare_cached(LOCK_CURSOR),
                conn.prepare_cached(&DELIVER)
            )?;
            (Some(p), Some(l), Some(d))
        };
        let queue_lock_params: [&(dyn ToSql + Sync); 1] = [&queue_lock];
        let head_lock_params: [&(dyn ToSql + Sync); 1] = [&head_lock];
        let ack_params = ack_args.sql(&name);
        let promote_params: [&(dyn ToSql + Sync); 4] = [&name, &now_us, &channel, &wake];
        let cursor_params: [&(dyn ToSql + Sync); 1] = [&name];
        let deliver_params: Vec<[&(dyn ToSql + Sync); 4]> = groups
            .iter()
            .map(|(vt, limit, _)| -> [&(dyn ToSql + Sync); 4] { [&name, limit, &now_us, vt] })
            .collect();
        // Enqueues first, under the head lock, so the round's dequeues can
        // take what it enqueued. Then the promotion: every round locks
        // waiting rows in the same (index) order before anything else, so
        // rounds on two nodes do not deadlock over an acknowledged message
        // that fell due. The cursor is locked by a statement of its own,
        // before the deliveries that read after it.
        let mut queries: Vec<Query<'_>> = Vec::new();
        if let (Some(s), Some(h), Some(e)) = (&lock_shared, &lock_head, &enqueue) {
            queries.push(Box::pin(conn.query(s, &queue_lock_params)));
            queries.push(Box::pin(conn.query(h, &head_lock_params)));
            queries.push(Box::pin(conn.query(e, &insert_params)));
        }
        if let (Some(p), Some(l), Some(d)) = (&promote, &lock_cursor, &deliver) {
            queries.push(Box::pin(conn.query(p, &promote_params)));
            queries.push(Box::pin(conn.query(l, &cursor_params)));
            for params in &deliver_params {
                queries.push(Box::pin(conn.query(d, params)));
            }
        }
        if let Some(a) = &ack {
            queries.push(Box::pin(conn.query(a, &ack_params)));
        }
        // Sent in this order before any answer is read; a failed statement
        // aborts the transaction, and the COMMIT then rolls it back. A
        // round that only acknowledges is one statement, its own
        // transaction.
        let results = if puts.is_empty() && takes.is_empty() {
            futures::future::join_all(queries).await
        } else {
            let (begun, results, committed) = futures::join!(
                conn.batch_execute("BEGIN"),
                futures::future::join_all(queries),
                conn.batch_execute("COMMIT"),
            );
            begun?;
            committed.map(|()| results)?
        };
        let mut results = results
            .into_iter()
            .collect::<std::result::Result<Vec<_>, _>>()?
            .into_iter();

        let mut dead = 0;
        let mut answers = Answers {
            queue_id: None,
            acked: Vec::new(),
            taken: Vec::new(),
            dead_due: false,
            groups: Vec::new(),
        };
        if !puts.is_empty() {
            let _locks = (results.next(), results.next());
            let Some((_, queue_id)) = queue_row(results.next())? else {
                return Ok(answers);
            };
            answers.queue_id = Some(queue_id);
            self.enqueued(queue, &put_refs, now);
        }
        if !takes.is_empty() {
            let promoted = queue_row(results.next())?;
            let _cursor = results.next();
            let Some((promoted, queue_id)) = promoted else {
                return Ok(answers);
            };
            answers.queue_id = Some(queue_id);
            if promoted.try_get::<_, i64>(1)? > 0 {
                self.wakers.wake(name);
            }
            answers.dead_due = promoted.try_get(3)?;
            answers.taken = takes.iter().map(|_| Vec::new()).collect();
            let mut due = None;
            for (_, _, jobs) in groups {
                let rows = results.next().unwrap_or_default();
                let mut group = Group {
                    jobs,
                    delivered: Vec::with_capacity(rows.len()),
                    leased: None,
                };
                for row in &rows {
                    let Some(seq) = row.try_get::<_, Option<i64>>(1)? else {
                        continue;
                    };
                    let until: i64 = row.try_get(5)?;
                    due = Some(Timestamp::from_micros(until));
                    if row.try_get::<_, bool>(11)? {
                        group.leased = Some((seq, row.try_get(12)?, until));
                    } else {
                        // An ordinary row's delivery leaves its previous
                        // version dead; a fresh one's writes no row.
                        dead += 1;
                        group
                            .delivered
                            .push((seq, delivery(row, 1, &self.key, queue)?));
                    }
                }
                answers.groups.push(group);
            }
            if let Some(due) = due {
                self.schedule.at(due);
                // Rare: only when no earlier due time is known to every node.
                if self.schedule.must_announce(due, now) {
                    let notes = vec![announcement(due)];
                    if let Err(e) = conn.execute(NOTIFY, &[&channel, &notes]).await {
                        tracing::warn!(error = %e, "could not announce a due time");
                    }
                }
            }
        }
        if !acks.is_empty() {
            let Some((row, queue_id)) = queue_row(results.next())? else {
                return Ok(answers);
            };
            answers.queue_id = Some(queue_id);
            let (acked, again) = self
                .ack_outcomes(&conn, queue, queue_id, &row, acks, now, ack_args.shard)
                .await?;
            dead += row.try_get::<_, Vec<i64>>(2)?.len() as u64 + again;
            answers.acked = acked;
        }
        Vacuum::deleted(&self.shared, dead);
        Ok(answers)
    }

    /// Reads the fresh messages the round's delivering statements leased
    /// (one statement per lease, sent at once, each its own transaction)
    /// and hands
    /// out every group's deliveries, oldest first, to its take jobs in the
    /// order they came.
    async fn fetched(
        &self,
        queue: &QueueName,
        mut answers: Answers,
        takes: &[TakeJob],
    ) -> Result<Answers> {
        let Some(queue_id) = answers.queue_id else {
            return Ok(answers);
        };
        let leased: Vec<(i64, i64, i64)> = answers.groups.iter().filter_map(|g| g.leased).collect();
        if !leased.is_empty() {
            let doing = || format!("read the messages delivered from queue `{queue}`");
            let mut fetched = retrying(doing, || async {
                let conn = self.shared.conn().await?;
                let fetch = conn.prepare_cached(FETCH).await?;
                let params: Vec<[&(dyn ToSql + Sync); 4]> = leased
                    .iter()
                    .map(|(first, last, until)| -> [&(dyn ToSql + Sync); 4] {
                        [&queue_id, first, last, until]
                    })
                    .collect();
                let rows =
                    futures::future::try_join_all(params.iter().map(|p| conn.query(&fetch, p)))
                        .await?;
                let mut deliveries = Vec::with_capacity(rows.len());
                for rows in rows {
                    deliveries.push(
                        rows.iter()
                            .map(|row| Ok((row.try_get(1)?, delivery(row, 1, &self.key, queue)?)))
                            .collect::<Step<Vec<(i64, Delivery)>>>()?,
                    );
                }
                Ok(deliveries)
            })
            .await?
            .into_iter();
            for group in answers.groups.iter_mut().filter(|g| g.leased.is_some()) {
                group.delivered.extend(fetched.next().unwrap_or_default());
            }
        }
        for group in std::mem::take(&mut answers.groups) {
            let mut delivered = group.delivered;
            delivered.sort_by_key(|(seq, _)| *seq);
            let mut delivered = delivered.into_iter().map(|(_, d)| d);
            for job in group.jobs {
                let max = takes[job].options.max_messages as usize;
                answers.taken[job] = delivered.by_ref().take(max).collect();
            }
        }
        Ok(answers)
    }

    /// Each ack job's outcomes, from the keys and attempts the round
    /// deleted; receipts that deleted nothing are told why. A receipt whose
    /// delivery is still current although the round deleted nothing met a
    /// write of its row that committed after the round's snapshot (a timer
    /// made it ready, or rewrote its expired lease): [`ACK`] deletes by the
    /// `ctid` its snapshot saw, which the newer version does not have. Such
    /// receipts are acknowledged again by a statement of their own, whose
    /// snapshot sees the write, up to [`ACK_AGAIN`] times. Returns the
    /// outcomes and how many rows the repeats deleted.
    #[allow(clippy::too_many_arguments)]
    async fn ack_outcomes(
        &self,
        client: &deadpool_postgres::Object,
        queue: &QueueName,
        queue_id: i64,
        row: &Row,
        acks: &[AckJob],
        now: Timestamp,
        shard: i16,
    ) -> Step<(Vec<Vec<Result<()>>>, u64)> {
        let limit: Option<i32> = row.try_get(1)?;
        let mut acked = acked_keys(row)?;
        let parts = well_formed(acks);
        let mut again = 0;
        let mut deleted = 0;
        let states = loop {
            let mut lost = Vec::new();
            for p in &parts {
                let key = (seq_of(p)?, attempt_of(p));
                if !acked.contains(&key) {
                    lost.push(key.0);
                }
            }
            if lost.is_empty() {
                break HashMap::new();
            }
            let states = lease_states(&***client, &lost, queue_id).await?;
            let current: Vec<&ReceiptParts> = parts
                .iter()
                .copied()
                .filter(|p| {
                    seq_of(p).is_ok_and(|seq| {
                        lost.contains(&seq)
                            && lease_lost(queue, p, states.get(&seq), limit, now).is_none()
                    })
                })
                .collect();
            if current.is_empty() || again == ACK_AGAIN {
                break states;
            }
            again += 1;
            let args = AckArgs::of(&current, now.as_micros(), shard)?;
            let statement = client.prepare_cached(&ACK).await?;
            let row = client
                .query_one(&statement, &args.sql(&queue.as_str()))
                .await?;
            let more = acked_keys(&row)?;
            deleted += more.len() as u64;
            acked.extend(more);
        };
        let outcomes = acks
            .iter()
            .map(|job| {
                job.parts
                    .iter()
                    .map(|p| {
                        let p = match p {
                            Ok(p) => p,
                            Err(e) => return Ok(Err(e.clone())),
                        };
                        // A receipt named twice acknowledges once.
                        if acked.remove(&(seq_of(p)?, attempt_of(p))) {
                            return Ok(Ok(()));
                        }
                        Ok(Err(lease_lost(
                            queue,
                            p,
                            states.get(&seq_of(p)?),
                            limit,
                            now,
                        )
                        .unwrap_or_else(|| Error::LeaseLost {
                            queue: queue.clone(),
                            message_id: p.message_id,
                            reason: "the message kept changing while it was being acknowledged"
                                .to_owned(),
                        })))
                    })
                    .collect()
            })
            .collect::<Step<_>>()?;
        Ok((outcomes, deleted))
    }
}

/// The well-formed receipts of the ack jobs `acks`, in order: those an
/// [`ACK`] is asked about (a malformed one is answered with its error).
fn well_formed(acks: &[AckJob]) -> Vec<&ReceiptParts> {
    acks.iter()
        .flat_map(|job| job.parts.iter().filter_map(|p| p.as_ref().ok()))
        .collect()
}

/// Times receipts whose delivery is current but whose row an [`ACK`] did
/// not find (see [`Inner::ack_outcomes`]) are acknowledged again.
const ACK_AGAIN: u32 = 3;

/// The keys and attempts an [`ACK`] deleted.
fn acked_keys(row: &Row) -> Step<HashSet<(i64, i32)>> {
    Ok(row
        .try_get::<_, Vec<i64>>(2)?
        .into_iter()
        .zip(row.try_get::<_, Vec<i32>>(3)?)
        .collect())
}

/// Keys that far apart or closer share one range scan in [`ACK`]: the
/// few messages between them that no receipt names cost less to read than
/// a probe more.
const RUN_GAP: i64 = 4;

/// The runs of nearby keys among `seqs` ([`RUN_GAP`]), as their first and
/// last keys.
fn key_runs(seqs: &[i64]) -> (Vec<i64>, Vec<i64>) {
    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    let (mut lows, mut highs): (Vec<i64>, Vec<i64>) = (Vec::new(), Vec::new());
    for seq in sorted {
        match highs.last_mut() {
            Some(high) if seq - *high <= RUN_GAP => *high = (*high).max(seq),
            _ => {
                lows.push(seq);
                highs.push(seq);
            }
        }
    }
    (lows, highs)
}

/// The parameters of [`ACK`] but the queue's name: the receipts' columns
/// and runs of keys ([`key_runs`]), the time and the counter shard.
struct AckArgs {
    seqs: Vec<i64>,
    ids: Vec<Uuid>,
    attempts: Vec<i32>,
    now: i64,
    shard: i16,
    lows: Vec<i64>,
    highs: Vec<i64>,
}

impl AckArgs {
    fn of(parts: &[&ReceiptParts], now: i64, shard: i16) -> Step<Self> {
        let seqs = parts
            .iter()
            .map(|p| seq_of(p))
            .collect::<Step<Vec<i64>>>()?;
        let (lows, highs) = key_runs(&seqs);
        Ok(Self {
            ids: parts.iter().map(|p| p.message_id).collect(),
            attempts: parts.iter().map(|p| attempt_of(p)).collect(),
            seqs,
            now,
            shard,
            lows,
            highs,
        })
    }

    fn sql<'a>(&'a self, name: &'a &'a str) -> [&'a (dyn ToSql + Sync); 8] {
        [
            name,
            &self.seqs,
            &self.ids,
            &self.attempts,
            &self.now,
            &self.shard,
            &self.lows,
            &self.highs,
        ]
    }
}

/// The first row a statement answered and the queue id in its first
/// column; `None` when the queue does not exist.
fn queue_row(rows: Option<Vec<Row>>) -> Step<Option<(Row, i64)>> {
    let Some(row) = rows.unwrap_or_default().into_iter().next() else {
        return Ok(None);
    };
    let id: Option<i64> = row.try_get(0)?;
    Ok(id.map(|id| (row, id)))
}

/// Answers every request of a round; returns the deliveries whose
/// dequeue is gone (see [`Inner::give_back_orphans`]).
fn answer(queue: &QueueName, jobs: Jobs, answered: Result<Answers>) -> Vec<Delivery> {
    let mut orphans = Vec::new();
    let Jobs { acks, takes, puts } = jobs;
    match answered {
        Ok(Answers { queue_id: None, .. }) => {
            let missing = Error::QueueNotFound(queue.clone());
            for job in acks {
                let _ = job.reply.send(Err(missing.clone()));
            }
            for job in takes {
                let _ = job.reply.send(Err(missing.clone()));
            }
            let vanished = Error::Unavailable(format!(
                "queue `{queue}` was deleted while it was being created; try again"
            ));
            for job in puts {
                let _ = job.reply.send(Err(vanished.clone()));
            }
        }
        Ok(answers) => {
            for (job, outcome) in acks.into_iter().zip(answers.acked) {
                let _ = job.reply.send(Ok(outcome));
            }
            for (job, deliveries) in takes.into_iter().zip(answers.taken) {
                let sent = job.reply.send(Ok(Taken {
                    deliveries,
                    dead_due: answers.dead_due,
                }));
                if let Err(Ok(taken)) = sent {
                    orphans.extend(taken.deliveries);
                }
            }
            for job in puts {
                let _ = job.reply.send(Ok(()));
            }
        }
        Err(e) => {
            for job in acks {
                let _ = job.reply.send(Err(e.clone()));
            }
            for job in takes {
                let _ = job.reply.send(Err(e.clone()));
            }
            for job in puts {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
    orphans
}

fn stopped() -> Error {
    Error::Unavailable("the queue's worker stopped before answering".to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::oneshot;
    use wharf_core::{DequeueOptions, NewMessage, QueueName, QueueSettings};
    use wharf_storage::QueueStore;
    use wharf_storage::conformance::test_clock;

    use super::{Answers, Jobs, TakeJob, answer, key_runs};
    use crate::testing::TestSchema;

    /// A consumer that closes while its long poll is being served cancels
    /// the dequeue after the round took messages for it: the round finds
    /// the dequeue gone when it answers, and the messages are visible again
    /// at once instead of after their visibility timeout.
    #[tokio::test]
    async fn deliveries_of_a_dequeue_gone_before_its_answer_are_given_back() {
        let clock = test_clock();
        let schema = TestSchema::new();
        let store = schema.open(Arc::new(clock.clone())).await;
        let queue: QueueName = "orphans".parse().unwrap();
        store
            .create_queue(&queue, &QueueSettings::default())
            .await
            .unwrap();
        store
            .enqueue(&queue, vec![NewMessage::new(&b"lost?"[..])])
            .await
            .unwrap();
        let options = DequeueOptions::default();
        let taken = store.dequeue(&queue, options).await.unwrap();
        assert_eq!(taken.len(), 1);
        let message_id = taken[0].message_id;

        let (gone, dropped) = oneshot::channel();
        drop(dropped);
        let (waiting, answered) = oneshot::channel();
        let jobs = Jobs {
            acks: Vec::new(),
            takes: vec![
                TakeJob {
                    options,
                    reply: gone,
                },
                TakeJob {
                    options,
                    reply: waiting,
                },
            ],
            puts: Vec::new(),
        };
        let answers = Answers {
            queue_id: Some(1),
            acked: Vec::new(),
            taken: vec![taken, Vec::new()],
            dead_due: false,
            groups: Vec::new(),
        };
        let orphans = answer(&queue, jobs, Ok(answers));
        assert_eq!(orphans.len(), 1, "the gone dequeue's delivery comes back");
        assert!(answered.await.unwrap().unwrap().deliveries.is_empty());

        store.queues.inner.give_back_orphans(&queue, orphans).await;
        let again = store.dequeue(&queue, options).await.unwrap();
        assert_eq!(
            again.len(),
            1,
            "visible again before its visibility timeout"
        );
        assert_eq!(again[0].message_id, message_id);
        assert_eq!(again[0].delivery_attempt, 2);
    }

    #[test]
    fn nearby_keys_share_a_run_and_distant_ones_do_not() {
        assert_eq!(key_runs(&[]), (vec![], vec![]));
        assert_eq!(key_runs(&[7, 5, 6, 5]), (vec![5], vec![7]));
        assert_eq!(
            key_runs(&[1, 5, 10, 100]),
            (vec![1, 10, 100], vec![5, 10, 100])
        );
        assert_eq!(key_runs(&[1, 5, 9, 13]), (vec![1], vec![13]));
        assert_eq!(key_runs(&[3, 40]), (vec![3, 40], vec![3, 40]));
    }
}
