//! Dequeues and acknowledgements of one queue, combined per node.
//!
//! Each node runs at most [`ROUNDS`] *rounds* per queue at a time. Requests
//! that arrive while they run wait for the next one, which takes them all:
//! one transaction, sent as one pipeline (`BEGIN`, the promotion of due
//! messages, one delivering `UPDATE` per visibility timeout asked for, the
//! acknowledgements as one `DELETE`, `COMMIT`), so one round trip and one
//! commit serve every consumer of the queue on this node rather than one
//! each per dequeue and per acknowledgement. An idle queue answers a lone
//! request as fast as a plain statement would.
//!
//! A round fails or commits as a whole: every request in it gets the same
//! error (transactions aborted by a conflict are run again first).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use tokio::sync::oneshot;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;
use wharf_core::{Delivery, DequeueOptions, Error, QueueName, Result, Timestamp};
use wharf_storage::receipt::ReceiptParts;

use super::Inner;
use super::deliver::{lease_lost, lease_states};
use super::step::{DELIVERY_COLUMNS, Step, attempt_of, delivery, micros, retrying, seq_of};
use super::wake::{announcement, wake_up};
use crate::vacuum::Vacuum;

/// Deletes the messages whose receipts name their current delivery (never
/// an expired last attempt), counting them in shard `$6`: one key lookup
/// per receipt (a `seq = ANY ($2)` condition would be re-sorted for every
/// lookup of the join). Returns the queue id and attempts limit (NULL: no
/// such queue) and the deliveries deleted.
const ACK: &str = "
WITH q AS MATERIALIZED (SELECT id, attempt_limit FROM queues WHERE name = $1),
acked AS (
    DELETE FROM messages m
    USING unnest($2::bigint[], $3::uuid[], $4::int[]) AS r(seq, message_id, attempt)
    WHERE m.queue_id = (SELECT id FROM q) AND m.seq = r.seq
      AND m.message_id = r.message_id AND m.attempts = r.attempt
      AND NOT (m.leased AND NOT m.ready AND m.visible_at <= $5
               AND m.attempts >= coalesce((SELECT attempt_limit FROM q), 2147483647))
    RETURNING m.seq, m.attempts),
counted AS (
    INSERT INTO queue_counters AS c (queue_id, shard, acks)
    SELECT (SELECT id FROM q), $6::smallint, count(*) FROM acked HAVING count(*) > 0
    ON CONFLICT (queue_id, shard) DO UPDATE SET acks = c.acks + excluded.acks)
SELECT (SELECT id FROM q), (SELECT attempt_limit FROM q), ARRAY(SELECT seq FROM acked),
       ARRAY(SELECT attempts FROM acked)";

/// Makes due waiting messages of queue `$1` ready (never an expired last
/// attempt), notifying `$4` if any; reports whether an expired last attempt
/// of the queue, or of a queue dead-lettering into it, waits to be moved.
const PROMOTE: &str = "
WITH q AS MATERIALIZED (SELECT id, attempt_limit FROM queues WHERE name = $1),
promoted AS (
    UPDATE messages m SET ready = true
    WHERE m.queue_id = (SELECT id FROM q) AND NOT m.ready AND m.visible_at <= $2
      AND NOT (m.leased AND m.attempts >= coalesce((SELECT attempt_limit FROM q), 2147483647))
    RETURNING 1),
n AS (SELECT count(*) AS k FROM promoted),
notified AS (SELECT pg_notify($3, $4) FROM n WHERE k > 0)
SELECT (SELECT id FROM q), (SELECT k FROM n), (SELECT count(*) FROM notified),
    EXISTS (
        SELECT 1 FROM queues s JOIN messages m ON m.queue_id = s.id
        WHERE (s.name = $1 OR s.dead_letter_queue = $1) AND s.attempt_limit IS NOT NULL
          AND NOT m.ready AND m.leased AND m.visible_at <= $2 AND m.attempts >= s.attempt_limit)";

/// Delivers up to `$2` ready messages of queue `$1`, oldest first, in
/// flight until `$3` plus the timeout `$4` (or the queue's); counts them in
/// shard `$5`. One row with the queue id (NULL: no such queue) and the
/// delivery columns (NULL: nothing delivered), or one row per delivery.
static DELIVER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "
WITH q AS MATERIALIZED (SELECT id, visibility_timeout_us FROM queues WHERE name = $1),
picked AS (
    SELECT seq FROM messages
    WHERE queue_id = (SELECT id FROM q) AND ready
    ORDER BY seq LIMIT $2
    FOR UPDATE SKIP LOCKED),
delivered AS (
    UPDATE messages m
    SET ready = false, leased = true, attempts = m.attempts + 1,
        visible_at = $3 + coalesce($4, (SELECT visibility_timeout_us FROM q))
    WHERE m.queue_id = (SELECT id FROM q) AND m.seq = ANY (ARRAY(SELECT seq FROM picked))
    RETURNING {DELIVERY_COLUMNS}),
counted AS (
    INSERT INTO queue_counters AS c (queue_id, shard, deliveries)
    SELECT (SELECT id FROM q), $5::smallint, count(*) FROM delivered HAVING count(*) > 0
    ON CONFLICT (queue_id, shard) DO UPDATE SET deliveries = c.deliveries + excluded.deliveries)
SELECT (SELECT id FROM q), d.*
FROM (SELECT 1) AS one LEFT JOIN delivered AS d ON true"
    )
});

const NOTIFY: &str = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p";

/// Opens a round. Its statements run with their generic plans (checked to
/// use the partial indexes): PostgreSQL otherwise keeps planning them anew
/// for each execution, which costs more than executing them. A generic plan
/// is made once per connection, from the statistics of that moment; made
/// while `messages` was empty (or just vacuumed, or with autovacuum off and
/// no statistics) it may scan the whole table on every later round, which
/// the benchmark caught at 36 ms a round at 100k messages. Every statement
/// of a round is meant to walk an index, so sequential scans are ruled out
/// for the round. `LOCAL`: the connection's other users keep the defaults.
const BEGIN: &str = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; \
                     SET LOCAL enable_seqscan = off";

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

/// Requests of one queue waiting for the next round.
#[derive(Default)]
struct Pending {
    acks: Vec<AckJob>,
    takes: Vec<TakeJob>,
    /// Workers running rounds for the queue.
    running: usize,
}

/// Rounds of one queue a node runs at once: a second round executes while
/// the first waits for its commit to be flushed.
const ROUNDS: usize = 2;

/// The requests of each queue waiting for a round on this node.
#[derive(Default)]
pub(super) struct Combiner(Mutex<HashMap<QueueName, Pending>>);

/// What a round answers: the queue id (`None`: no such queue), per ack job
/// the outcome of each receipt, per take job its deliveries.
struct Answers {
    queue_id: Option<i64>,
    acked: Vec<Vec<Result<()>>>,
    taken: Vec<Vec<Delivery>>,
    dead_due: bool,
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
        self.submit(queue, |p| p.acks.push(AckJob { parts, reply }));
        answer.await.map_err(|_| stopped())?
    }

    /// Dequeues in the queue's next round.
    pub(super) async fn take_combined(
        self: &Arc<Self>,
        queue: &QueueName,
        options: DequeueOptions,
    ) -> Result<Taken> {
        let (reply, answer) = oneshot::channel();
        self.submit(queue, |p| p.takes.push(TakeJob { options, reply }));
        answer.await.map_err(|_| stopped())?
    }

    fn submit(self: &Arc<Self>, queue: &QueueName, add: impl FnOnce(&mut Pending)) {
        let start = {
            let mut map = self
                .combiner
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let pending = map.entry(queue.clone()).or_default();
            add(pending);
            let start = pending.running < ROUNDS;
            if start {
                pending.running += 1;
            }
            start
        };
        if start {
            tokio::spawn(self.clone().rounds(queue.clone()));
        }
    }

    /// Runs rounds for `queue` until nothing waits.
    async fn rounds(self: Arc<Self>, queue: QueueName) {
        loop {
            let (acks, takes) = {
                let mut map = self
                    .combiner
                    .0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let Some(pending) = map.get_mut(&queue) else {
                    return;
                };
                // A dequeue whose caller has gone is not served: dropping a
                // dequeue before the store delivers loses nothing.
                pending.takes.retain(|t| !t.reply.is_closed());
                if pending.acks.is_empty() && pending.takes.is_empty() {
                    pending.running -= 1;
                    if pending.running == 0 {
                        map.remove(&queue);
                    }
                    return;
                }
                (
                    std::mem::take(&mut pending.acks),
                    std::mem::take(&mut pending.takes),
                )
            };
            let answered = retrying(
                || format!("dequeue from or acknowledge messages of `{queue}`"),
                || self.round(&queue, &acks, &takes),
            )
            .await;
            match answered {
                Ok(Answers { queue_id: None, .. }) => {
                    let missing = Error::QueueNotFound(queue.clone());
                    for job in acks {
                        let _ = job.reply.send(Err(missing.clone()));
                    }
                    for job in takes {
                        let _ = job.reply.send(Err(missing.clone()));
                    }
                }
                Ok(answers) => {
                    for (job, outcome) in acks.into_iter().zip(answers.acked) {
                        let _ = job.reply.send(Ok(outcome));
                    }
                    for (job, deliveries) in takes.into_iter().zip(answers.taken) {
                        let _ = job.reply.send(Ok(Taken {
                            deliveries,
                            dead_due: answers.dead_due,
                        }));
                    }
                }
                Err(e) => {
                    for job in acks {
                        let _ = job.reply.send(Err(e.clone()));
                    }
                    for job in takes {
                        let _ = job.reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    /// One round: every statement in one transaction, sent at once.
    async fn round(&self, queue: &QueueName, acks: &[AckJob], takes: &[TakeJob]) -> Step<Answers> {
        let now = self.shared.clock().now();
        let name = queue.as_str();
        let now_us = now.as_micros();
        let channel = self.shared.channel();
        let conn = self.shared.conn().await?;

        let parts: Vec<&ReceiptParts> = acks
            .iter()
            .flat_map(|job| job.parts.iter().filter_map(|p| p.as_ref().ok()))
            .collect();
        let seqs = parts
            .iter()
            .map(|p| seq_of(p))
            .collect::<Step<Vec<i64>>>()?;
        let ids: Vec<Uuid> = parts.iter().map(|p| p.message_id).collect();
        let attempts: Vec<i32> = parts.iter().map(|p| attempt_of(p)).collect();
        let ack_shard = self.shard();
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
        let shards: Vec<i16> = groups.iter().map(|_| self.shard()).collect();

        let ack = if acks.is_empty() {
            None
        } else {
            Some(conn.prepare_cached(ACK).await?)
        };
        let (promote, deliver) = if takes.is_empty() {
            (None, None)
        } else {
            let (p, d) =
                futures::try_join!(conn.prepare_cached(PROMOTE), conn.prepare_cached(&DELIVER))?;
            (Some(p), Some(d))
        };
        let ack_params: [&(dyn ToSql + Sync); 6] =
            [&name, &seqs, &ids, &attempts, &now_us, &ack_shard];
        let promote_params: [&(dyn ToSql + Sync); 4] = [&name, &now_us, &channel, &wake];
        let deliver_params: Vec<[&(dyn ToSql + Sync); 5]> = groups
            .iter()
            .zip(&shards)
            .map(|((vt, limit, _), shard)| -> [&(dyn ToSql + Sync); 5] {
                [&name, limit, &now_us, vt, shard]
            })
            .collect();
        // The promotion first: every round then locks waiting rows in the
        // same (index) order before anything else, so rounds on two nodes
        // do not deadlock over an acknowledged message that fell due.
        let mut queries: Vec<Query<'_>> = Vec::new();
        if let (Some(promote), Some(deliver)) = (&promote, &deliver) {
            queries.push(Box::pin(conn.query(promote, &promote_params)));
            for params in &deliver_params {
                queries.push(Box::pin(conn.query(deliver, params)));
            }
        }
        if let Some(ack) = &ack {
            queries.push(Box::pin(conn.query(ack, &ack_params)));
        }
        // Sent in this order before any answer is read; a failed statement
        // aborts the transaction, and the COMMIT then rolls it back.
        let (begun, results, committed) = futures::join!(
            conn.batch_execute(BEGIN),
            futures::future::join_all(queries),
            conn.batch_execute("COMMIT"),
        );
        begun?;
        let mut results = results
            .into_iter()
            .collect::<std::result::Result<Vec<_>, _>>()?
            .into_iter();
        committed?;

        let mut dead = 0;
        let mut answers = Answers {
            queue_id: None,
            acked: Vec::new(),
            taken: Vec::new(),
            dead_due: false,
        };
        if !takes.is_empty() {
            let promoted = results.next().unwrap_or_default();
            let Some(promoted) = promoted.first() else {
                return Ok(answers);
            };
            let Some(queue_id) = promoted.try_get::<_, Option<i64>>(0)? else {
                return Ok(answers);
            };
            answers.queue_id = Some(queue_id);
            if promoted.try_get::<_, i64>(1)? > 0 {
                self.wakers.wake(name);
            }
            answers.dead_due = promoted.try_get(3)?;
            answers.taken = takes.iter().map(|_| Vec::new()).collect();
            let mut due = None;
            for (_, _, jobs) in &groups {
                let rows = results.next().unwrap_or_default();
                let mut delivered = Vec::with_capacity(rows.len());
                for row in &rows {
                    if row.try_get::<_, Option<i64>>(1)?.is_none() {
                        continue;
                    }
                    due = Some(Timestamp::from_micros(row.try_get(5)?));
                    delivered.push((
                        row.try_get::<_, i64>(1)?,
                        delivery(row, 1, &self.key, queue)?,
                    ));
                }
                // Oldest first, to the requests in the order they came.
                delivered.sort_by_key(|(seq, _)| *seq);
                // Each delivery leaves the row's previous version dead.
                dead += delivered.len() as u64;
                let mut delivered = delivered.into_iter().map(|(_, d)| d);
                for &job in jobs {
                    let max = takes[job].options.max_messages as usize;
                    answers.taken[job] = delivered.by_ref().take(max).collect();
                }
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
            let rows = results.next().unwrap_or_default();
            let Some(row) = rows.first() else {
                return Ok(answers);
            };
            let Some(queue_id) = row.try_get::<_, Option<i64>>(0)? else {
                return Ok(answers);
            };
            answers.queue_id = Some(queue_id);
            let deleted = row.try_get::<_, Vec<i64>>(2)?.len() as u64;
            dead += deleted;
            answers.acked = self
                .ack_outcomes(&conn, queue, queue_id, row, acks, now)
                .await?;
        }
        Vacuum::deleted(&self.shared, dead);
        Ok(answers)
    }

    /// Each ack job's outcomes, from the keys and attempts the round
    /// deleted; receipts that deleted nothing are told why.
    async fn ack_outcomes(
        &self,
        client: &tokio_postgres::Client,
        queue: &QueueName,
        queue_id: i64,
        row: &Row,
        acks: &[AckJob],
        now: Timestamp,
    ) -> Step<Vec<Vec<Result<()>>>> {
        let limit: Option<i32> = row.try_get(1)?;
        let mut acked: HashSet<(i64, i32)> = row
            .try_get::<_, Vec<i64>>(2)?
            .into_iter()
            .zip(row.try_get::<_, Vec<i32>>(3)?)
            .collect();
        let mut lost = Vec::new();
        for job in acks {
            for p in job.parts.iter().filter_map(|p| p.as_ref().ok()) {
                let key = (seq_of(p)?, attempt_of(p));
                if !acked.contains(&key) {
                    lost.push(key.0);
                }
            }
        }
        let states = if lost.is_empty() {
            HashMap::new()
        } else {
            lease_states(client, &lost, queue_id).await?
        };
        acks.iter()
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
                            reason: "the message was acknowledged meanwhile".to_owned(),
                        })))
                    })
                    .collect()
            })
            .collect()
    }
}

fn stopped() -> Error {
    Error::Unavailable("the queue's worker stopped before answering".to_owned())
}
