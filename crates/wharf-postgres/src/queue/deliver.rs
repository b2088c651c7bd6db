//! The hot path: enqueue, dequeue (with long polling), acknowledge and
//! extend, each one statement in the common case.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Statement};
use uuid::Uuid;
use wharf_core::queue::DEDUP_WINDOW;
use wharf_core::{
    Delivery, DequeueOptions, Enqueued, Error, NewMessage, QueueName, QueueSettings, Receipt,
    Result, Timestamp,
};
use wharf_storage::receipt::ReceiptParts;

use super::codec::{encode_metadata, encode_reference};
use super::step::{
    DELIVERY_COLUMNS, Fail, Step, after, attempt_of, delivery, micros, retrying, seq_of,
};
use super::wake::{announcement, wake_up};
use super::Inner;

/// Inserts a batch into the queue named `$1`, locking its row against a
/// concurrent delete (`FOR KEY SHARE`); inserts nothing when it does not
/// exist. Sends the notifications `$11` when it does.
const ENQUEUE: &str = "
WITH q AS MATERIALIZED (SELECT id FROM queues WHERE name = $1 FOR KEY SHARE),
inserted AS (
    INSERT INTO messages (seq, queue_id, ready, leased, visible_at, attempts, enqueued_at,
                          message_id, content_type, metadata, payload_hash, payload_ref, data)
    SELECT nextval('message_seq'), (SELECT id FROM q), r.visible_at <= $2, false, r.visible_at,
           0, $2, r.message_id, r.content_type, r.metadata, r.payload_hash, r.payload_ref, r.data
    FROM unnest($3::uuid[], $4::bigint[], $5::bytea[], $6::bytea[], $7::bytea[], $8::bytea[],
                $9::bytea[]) WITH ORDINALITY
         AS r(message_id, visible_at, content_type, metadata, payload_hash, payload_ref, data, ord)
    WHERE EXISTS (SELECT 1 FROM q)
    ORDER BY r.ord
    RETURNING 1),
notified AS (SELECT pg_notify($10, p) FROM unnest($11::text[]) AS p WHERE EXISTS (SELECT 1 FROM q))
SELECT (SELECT id FROM q), (SELECT count(*) FROM inserted), (SELECT count(*) FROM notified)";

/// Claims dedup id `$2` for message `$3` unless a claim is still live.
const CLAIM_DEDUP: &str = "
INSERT INTO queue_dedup AS d (queue_id, dedup_id, message_id, expires_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT (queue_id, dedup_id) DO UPDATE
    SET message_id = excluded.message_id, expires_at = excluded.expires_at
    WHERE d.expires_at <= $5
RETURNING 1";

const FIND_DEDUP: &str = "SELECT message_id FROM queue_dedup WHERE queue_id = $1 AND dedup_id = $2";

/// Makes due waiting rows of queue `$1` ready (never an expired last
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

/// Delivers up to `$2` ready messages of queue `$1`, oldest first, until
/// `$3` plus the timeout `$4` (or the queue's); counts them in shard `$5`.
/// One row with the queue id (NULL: no such queue) and the delivery
/// columns (NULL: nothing delivered), or one per delivery.
static DEQUEUE: LazyLock<String> = LazyLock::new(|| {
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

/// Deletes the messages whose receipts name their current delivery,
/// counting them in shard `$6`. Returns the queue id and attempts limit
/// (NULL: no such queue) and the deliveries deleted (keys and attempts).
const ACK: &str = "
WITH q AS MATERIALIZED (SELECT id, attempt_limit FROM queues WHERE name = $1),
acked AS (
    DELETE FROM messages m
    WHERE m.seq = ANY ($2::bigint[]) AND m.queue_id = (SELECT id FROM q)
      AND EXISTS (
          SELECT 1 FROM unnest($2::bigint[], $3::uuid[], $4::int[]) AS r(seq, message_id, attempt)
          WHERE r.seq = m.seq AND r.message_id = m.message_id AND r.attempt = m.attempts)
      AND NOT (m.leased AND NOT m.ready AND m.visible_at <= $5
               AND m.attempts >= coalesce((SELECT attempt_limit FROM q), 2147483647))
    RETURNING m.seq, m.attempts),
counted AS (
    INSERT INTO queue_counters AS c (queue_id, shard, acks)
    SELECT (SELECT id FROM q), $6::smallint, count(*) FROM acked HAVING count(*) > 0
    ON CONFLICT (queue_id, shard) DO UPDATE SET acks = c.acks + excluded.acks)
SELECT (SELECT id FROM q), (SELECT attempt_limit FROM q), ARRAY(SELECT seq FROM acked),
       ARRAY(SELECT attempts FROM acked)";

/// Keeps the message of a current delivery in flight until `$5`.
const EXTEND: &str = "
WITH q AS MATERIALIZED (SELECT id, attempt_limit FROM queues WHERE name = $1),
extended AS (
    UPDATE messages m SET visible_at = $5, ready = false, leased = true
    WHERE m.seq = $2 AND m.queue_id = (SELECT id FROM q) AND m.message_id = $3
      AND m.attempts = $4
      AND NOT (m.leased AND NOT m.ready AND m.visible_at <= $6
               AND m.attempts >= coalesce((SELECT attempt_limit FROM q), 2147483647))
    RETURNING 1),
notified AS (SELECT pg_notify($7, p) FROM unnest($8::text[]) AS p WHERE EXISTS (SELECT 1 FROM extended))
SELECT (SELECT id FROM q), (SELECT attempt_limit FROM q), (SELECT count(*) FROM extended),
       (SELECT count(*) FROM notified)";

/// What a lease check needs of messages `$1` of queue `$2`.
const LEASE_STATE: &str = "
SELECT seq, message_id, attempts, leased, ready, visible_at
FROM messages WHERE seq = ANY ($1::bigint[]) AND queue_id = $2";

const NOTIFY: &str = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p";

const QUEUE_ID: &str = "SELECT id, attempt_limit FROM queues WHERE name = $1";

const LOCK_QUEUE: &str = "SELECT id FROM queues WHERE name = $1 FOR KEY SHARE";

const CREATE_QUEUE: &str = "
INSERT INTO queues (name, max_delivery_attempts, dead_letter_queue, visibility_timeout_us)
VALUES ($1, $2, $3, $4)
ON CONFLICT (name) DO NOTHING
RETURNING id";

/// A message ready to insert.
struct Row<'a> {
    id: Uuid,
    visible_at: i64,
    content_type: &'a [u8],
    metadata: Vec<u8>,
    payload_hash: Option<&'a [u8]>,
    payload_ref: Option<Vec<u8>>,
    data: &'a [u8],
}

/// A message's state as a lease check sees it.
pub(super) struct LeaseState {
    pub(super) message_id: Uuid,
    pub(super) attempts: i32,
    pub(super) leased: bool,
    pub(super) ready: bool,
    pub(super) visible_at: i64,
}

impl LeaseState {
    /// Whether this is an expired last attempt waiting to be dead-lettered.
    pub(super) fn doomed(&self, limit: Option<i32>, now: Timestamp) -> bool {
        self.leased
            && !self.ready
            && self.visible_at <= now.as_micros()
            && limit.is_some_and(|l| self.attempts >= l)
    }
}

/// Why the receipt `parts` no longer holds its message, or `None` when it
/// does.
pub(super) fn lease_lost(
    queue: &QueueName,
    parts: &ReceiptParts,
    state: Option<&LeaseState>,
    limit: Option<i32>,
    now: Timestamp,
) -> Option<Error> {
    let reason = match state {
        Some(s) if s.message_id == parts.message_id => {
            if s.attempts != attempt_of(parts) {
                format!(
                    "delivery attempt {} was superseded by attempt {}",
                    parts.attempt, s.attempts
                )
            } else if s.doomed(limit, now) {
                "its last delivery attempt timed out: the message is being dead-lettered"
                    .to_owned()
            } else {
                return None;
            }
        }
        _ => "the message is no longer in the queue (acknowledged, dead-lettered or purged)"
            .to_owned(),
    };
    Some(Error::LeaseLost {
        queue: queue.clone(),
        message_id: parts.message_id,
        reason,
    })
}

/// The queue's id, or `QueueNotFound`.
pub(super) async fn existing(
    client: &(impl GenericClient + Sync),
    queue: &QueueName,
) -> Step<(i64, Option<i32>)> {
    match client.query_opt(QUEUE_ID, &[&queue.as_str()]).await? {
        Some(row) => Ok((row.try_get(0)?, row.try_get(1)?)),
        None => Err(Fail::Caller(Error::QueueNotFound(queue.clone()))),
    }
}

/// The id of `queue`, locked against deletion until the transaction ends;
/// created with `settings` if it does not exist.
pub(super) async fn lock_or_create(
    client: &(impl GenericClient + Sync),
    queue: &QueueName,
    settings: &QueueSettings,
) -> Step<i64> {
    // Each round either finds the queue or creates it, unless a concurrent
    // creation and deletion interleave with it; give up after a few.
    for _ in 0..8 {
        if let Some(row) = client.query_opt(LOCK_QUEUE, &[&queue.as_str()]).await? {
            return Ok(row.try_get(0)?);
        }
        if let Some(id) = create(client, queue, settings).await? {
            return Ok(id);
        }
    }
    Err(Fail::Caller(Error::Unavailable(format!(
        "queue `{queue}` is being created and deleted concurrently; try again"
    ))))
}

/// Creates `queue` unless it exists; its id when this call created it.
pub(super) async fn create(
    client: &(impl GenericClient + Sync),
    queue: &QueueName,
    settings: &QueueSettings,
) -> Step<Option<i64>> {
    let max = i32::try_from(settings.max_delivery_attempts).unwrap_or(i32::MAX);
    let dead = settings.dead_letter_queue.as_ref().map(QueueName::as_str);
    let row = client
        .query_opt(
            CREATE_QUEUE,
            &[
                &queue.as_str(),
                &max,
                &dead,
                &micros(settings.visibility_timeout),
            ],
        )
        .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

impl Inner {
    pub(super) async fn enqueue(
        &self,
        queue: &QueueName,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Enqueued>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.shared.clock().now();
        let rows: Vec<Row<'_>> = messages
            .iter()
            .map(|m| Row {
                id: Uuid::now_v7(),
                visible_at: after(now, m.delay),
                content_type: m.content_type.as_bytes(),
                metadata: encode_metadata(&m.metadata),
                payload_hash: m.external.as_ref().map(|r| &r.content_hash.0[..]),
                payload_ref: m.external.as_ref().map(encode_reference),
                data: &m.data,
            })
            .collect();
        let doing = || format!("enqueue to `{queue}`");
        let outcome = if messages.iter().any(|m| m.dedup_id.is_some()) {
            retrying(doing, || self.enqueue_deduplicated(queue, &messages, &rows, now)).await?
        } else {
            retrying(doing, || self.enqueue_plain(queue, &rows, now)).await?;
            rows.iter()
                .map(|r| Enqueued {
                    message_id: r.id,
                    duplicate: false,
                })
                .collect()
        };
        self.enqueued(queue, &rows, &outcome, now);
        Ok(outcome)
    }

    /// Wakes this node's long polls and schedules the timer for what an
    /// enqueue added.
    fn enqueued(&self, queue: &QueueName, rows: &[Row<'_>], outcome: &[Enqueued], now: Timestamp) {
        let added = rows.iter().zip(outcome).filter(|(_, e)| !e.duplicate);
        let mut visible = false;
        for (row, _) in added {
            if row.visible_at <= now.as_micros() {
                visible = true;
            } else {
                self.schedule.at(Timestamp::from_micros(row.visible_at));
            }
        }
        if visible {
            self.wakers.wake(queue.as_str());
        }
    }

    /// The notifications an insert of `rows` sends.
    fn enqueue_notes(&self, queue: &QueueName, rows: &[&Row<'_>], now: Timestamp) -> Vec<String> {
        let mut notes = Vec::new();
        if rows.iter().any(|r| r.visible_at <= now.as_micros()) {
            notes.push(wake_up(queue.as_str()));
        }
        let first_delayed = rows
            .iter()
            .map(|r| r.visible_at)
            .filter(|at| *at > now.as_micros())
            .min()
            .map(Timestamp::from_micros);
        if let Some(at) = first_delayed
            && self.schedule.must_announce(at, now)
        {
            notes.push(announcement(at));
        }
        notes
    }

    /// Inserts `rows` into `queue`; `false` when the queue does not exist.
    async fn insert(
        &self,
        client: &(impl GenericClient + Sync),
        statement: &Statement,
        queue: &QueueName,
        rows: &[&Row<'_>],
        now: Timestamp,
    ) -> Step<bool> {
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let visible_at: Vec<i64> = rows.iter().map(|r| r.visible_at).collect();
        let content_types: Vec<&[u8]> = rows.iter().map(|r| r.content_type).collect();
        let metadata: Vec<&[u8]> = rows.iter().map(|r| &r.metadata[..]).collect();
        let hashes: Vec<Option<&[u8]>> = rows.iter().map(|r| r.payload_hash).collect();
        let refs: Vec<Option<&[u8]>> = rows.iter().map(|r| r.payload_ref.as_deref()).collect();
        let data: Vec<&[u8]> = rows.iter().map(|r| r.data).collect();
        let notes = self.enqueue_notes(queue, rows, now);
        let row = client
            .query_one(
                statement,
                &[
                    &queue.as_str(),
                    &now.as_micros(),
                    &ids,
                    &visible_at,
                    &content_types,
                    &metadata,
                    &hashes,
                    &refs,
                    &data,
                    &self.shared.channel(),
                    &notes,
                ],
            )
            .await?;
        Ok(row.try_get::<_, Option<i64>>(0)?.is_some())
    }

    async fn enqueue_plain(&self, queue: &QueueName, rows: &[Row<'_>], now: Timestamp) -> Step<()> {
        let conn = self.shared.conn().await?;
        let statement = conn.prepare_cached(ENQUEUE).await?;
        let rows: Vec<&Row<'_>> = rows.iter().collect();
        if self.insert(&**conn, &statement, queue, &rows, now).await? {
            return Ok(());
        }
        create(&**conn, queue, self.shared.queue_defaults()).await?;
        if self.insert(&**conn, &statement, queue, &rows, now).await? {
            return Ok(());
        }
        Err(Fail::Caller(Error::Unavailable(format!(
            "queue `{queue}` was deleted while it was being created; try again"
        ))))
    }

    /// An enqueue with dedup ids: one transaction that claims each id
    /// (or finds the message that holds it) and inserts the new messages.
    async fn enqueue_deduplicated(
        &self,
        queue: &QueueName,
        messages: &[NewMessage],
        rows: &[Row<'_>],
        now: Timestamp,
    ) -> Step<Vec<Enqueued>> {
        let mut conn = self.shared.conn().await?;
        let tx = conn.transaction().await?;
        let queue_id = lock_or_create(&*tx, queue, self.shared.queue_defaults()).await?;
        let expires_at = after(now, DEDUP_WINDOW);
        let mut outcome = Vec::with_capacity(rows.len());
        let mut fresh = Vec::with_capacity(rows.len());
        for (message, row) in messages.iter().zip(rows) {
            if let Some(dedup) = &message.dedup_id {
                let dedup = dedup.as_bytes();
                let claimed = tx
                    .query_opt(
                        CLAIM_DEDUP,
                        &[&queue_id, &dedup, &row.id, &expires_at, &now.as_micros()],
                    )
                    .await?;
                if claimed.is_none() {
                    let first: Uuid = tx
                        .query_one(FIND_DEDUP, &[&queue_id, &dedup])
                        .await?
                        .try_get(0)?;
                    outcome.push(Enqueued {
                        message_id: first,
                        duplicate: true,
                    });
                    continue;
                }
            }
            outcome.push(Enqueued {
                message_id: row.id,
                duplicate: false,
            });
            fresh.push(row);
        }
        let statement = tx.prepare_cached(ENQUEUE).await?;
        if !fresh.is_empty() && !self.insert(&*tx, &statement, queue, &fresh, now).await? {
            return Err(Fail::Caller(Error::Storage(format!(
                "queue `{queue}` vanished while locked"
            ))));
        }
        tx.commit().await?;
        Ok(outcome)
    }

    /// Long polls: registered on the queue's notifier before each look, so
    /// a wake-up between the look and the wait is not lost.
    pub(super) async fn dequeue(
        &self,
        queue: &QueueName,
        options: DequeueOptions,
    ) -> Result<Vec<Delivery>> {
        if options.wait.is_zero() {
            return self.dequeue_now(queue, options).await;
        }
        let clock = self.shared.clock().clone();
        let give_up = clock.now().saturating_add(options.wait);
        let notify = self.wakers.of(queue.as_str());
        loop {
            let woken = notify.clone().notified_owned();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let got = self.dequeue_now(queue, options).await?;
            if !got.is_empty() || clock.now() >= give_up {
                return Ok(got);
            }
            tokio::select! {
                () = woken => {}
                () = clock.sleep_until(give_up) => return Ok(Vec::new()),
            }
        }
    }

    async fn dequeue_now(&self, queue: &QueueName, options: DequeueOptions) -> Result<Vec<Delivery>> {
        let (deliveries, dead_due) = retrying(
            || format!("dequeue from `{queue}`"),
            || self.deliver(queue, options),
        )
        .await?;
        if dead_due
            && let Err(e) = self.settle_now(Some(queue)).await
        {
            if deliveries.is_empty() {
                return Err(e);
            }
            // The deliveries are committed: hand them out; the timer
            // moves the dead letters.
            tracing::warn!(queue = %queue, error = %e, "could not dead-letter expired last attempts");
        }
        Ok(deliveries)
    }

    /// Promotes due messages and delivers, both statements sent at once.
    /// Also says whether expired last attempts wait to be dead-lettered.
    async fn deliver(&self, queue: &QueueName, options: DequeueOptions) -> Step<(Vec<Delivery>, bool)> {
        let now = self.shared.clock().now();
        let conn = self.shared.conn().await?;
        let (promote, take) =
            futures::try_join!(conn.prepare_cached(PROMOTE), conn.prepare_cached(&DEQUEUE))?;
        let name = queue.as_str();
        let wake = wake_up(name);
        let vt = options.visibility_timeout.map(micros);
        let limit = i64::from(options.max_messages);
        let shard = self.shard();
        let channel = self.shared.channel();
        let now_us = now.as_micros();
        let promote_params: [&(dyn ToSql + Sync); 4] = [&name, &now_us, &channel, &wake];
        let take_params: [&(dyn ToSql + Sync); 5] = [&name, &limit, &now_us, &vt, &shard];
        // Sent together: the promotion commits before the delivery starts,
        // on the same connection, in one round trip.
        let (promoted, taken) = futures::join!(
            conn.query_one(&promote, &promote_params),
            conn.query(&take, &take_params),
        );
        let rows = taken?;
        let head = rows
            .first()
            .ok_or_else(|| Fail::Caller(Error::Storage("a dequeue returned no row".into())))?;
        if head.try_get::<_, Option<i64>>(0)?.is_none() {
            return Err(Fail::Caller(Error::QueueNotFound(queue.clone())));
        }
        let mut deliveries = Vec::with_capacity(rows.len());
        let mut due = None;
        for row in &rows {
            if row.try_get::<_, Option<i64>>(1)?.is_none() {
                continue;
            }
            due = Some(Timestamp::from_micros(row.try_get(5)?));
            deliveries.push((row.try_get::<_, i64>(1)?, delivery(row, 1, &self.key, queue)?));
        }
        deliveries.sort_by_key(|(seq, _)| *seq);
        let deliveries: Vec<Delivery> = deliveries.into_iter().map(|(_, d)| d).collect();
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
        let dead_due = match promoted {
            Ok(row) => {
                if row.try_get::<_, i64>(1)? > 0 {
                    self.wakers.wake(name);
                }
                row.try_get::<_, bool>(3)?
            }
            // Without the promotion the delivery may have missed messages
            // that just became visible: fail (and retry) unless it
            // delivered, in which case the deliveries must be handed out.
            Err(e) if deliveries.is_empty() => return Err(e.into()),
            Err(e) => {
                tracing::warn!(queue = %queue, error = %e, "promoting due messages failed");
                false
            }
        };
        Ok((deliveries, dead_due))
    }

    pub(super) async fn ack(&self, queue: &QueueName, receipts: &[Receipt]) -> Result<Vec<Result<()>>> {
        let parts: Vec<Result<ReceiptParts>> =
            receipts.iter().map(|r| self.key.check(queue, r)).collect();
        retrying(
            || format!("acknowledge messages of `{queue}`"),
            || self.ack_once(queue, &parts),
        )
        .await
    }

    async fn ack_once(&self, queue: &QueueName, parts: &[Result<ReceiptParts>]) -> Step<Vec<Result<()>>> {
        let now = self.shared.clock().now();
        let valid: Vec<&ReceiptParts> = parts.iter().filter_map(|p| p.as_ref().ok()).collect();
        let seqs = valid.iter().map(|p| seq_of(p)).collect::<Step<Vec<i64>>>()?;
        let ids: Vec<Uuid> = valid.iter().map(|p| p.message_id).collect();
        let attempts: Vec<i32> = valid.iter().map(|p| attempt_of(p)).collect();
        let conn = self.shared.conn().await?;
        let statement = conn.prepare_cached(ACK).await?;
        let row = conn
            .query_one(
                &statement,
                &[
                    &queue.as_str(),
                    &seqs,
                    &ids,
                    &attempts,
                    &now.as_micros(),
                    &self.shard(),
                ],
            )
            .await?;
        let Some(queue_id) = row.try_get::<_, Option<i64>>(0)? else {
            return Err(Fail::Caller(Error::QueueNotFound(queue.clone())));
        };
        let limit: Option<i32> = row.try_get(1)?;
        let mut acked: HashSet<(i64, i32)> = row
            .try_get::<_, Vec<i64>>(2)?
            .into_iter()
            .zip(row.try_get::<_, Vec<i32>>(3)?)
            .collect();
        let lost: Vec<i64> = seqs
            .iter()
            .zip(&attempts)
            .filter(|key| !acked.contains(&(*key.0, *key.1)))
            .map(|(seq, _)| *seq)
            .collect();
        let states = if lost.is_empty() {
            HashMap::new()
        } else {
            lease_states(&**conn, &lost, queue_id).await?
        };
        parts
            .iter()
            .map(|p| {
                let p = match p {
                    Ok(p) => p,
                    Err(e) => return Ok(Err(e.clone())),
                };
                let seq = seq_of(p)?;
                // A receipt named twice in one call acknowledges once.
                if acked.remove(&(seq, attempt_of(p))) {
                    return Ok(Ok(()));
                }
                Ok(Err(lease_lost(queue, p, states.get(&seq), limit, now)
                    .unwrap_or_else(|| Error::LeaseLost {
                        queue: queue.clone(),
                        message_id: p.message_id,
                        reason: "the message was acknowledged meanwhile".to_owned(),
                    })))
            })
            .collect()
    }

    pub(super) async fn extend(
        &self,
        queue: &QueueName,
        receipt: &Receipt,
        timeout: std::time::Duration,
    ) -> Result<()> {
        let parts = self.key.check(queue, receipt);
        retrying(
            || format!("extend a delivery of `{queue}`"),
            || self.extend_once(queue, &parts, timeout),
        )
        .await
    }

    async fn extend_once(
        &self,
        queue: &QueueName,
        parts: &Result<ReceiptParts>,
        timeout: std::time::Duration,
    ) -> Step<()> {
        let conn = self.shared.conn().await?;
        let parts = match parts {
            Ok(p) => p,
            Err(e) => {
                existing(&**conn, queue).await?;
                return Err(Fail::Caller(e.clone()));
            }
        };
        let now = self.shared.clock().now();
        let until = now.saturating_add(timeout);
        let notes: Vec<String> = if self.schedule.must_announce(until, now) {
            vec![announcement(until)]
        } else {
            Vec::new()
        };
        let seq = seq_of(parts)?;
        let statement = conn.prepare_cached(EXTEND).await?;
        let row = conn
            .query_one(
                &statement,
                &[
                    &queue.as_str(),
                    &seq,
                    &parts.message_id,
                    &attempt_of(parts),
                    &until.as_micros(),
                    &now.as_micros(),
                    &self.shared.channel(),
                    &notes,
                ],
            )
            .await?;
        let Some(queue_id) = row.try_get::<_, Option<i64>>(0)? else {
            return Err(Fail::Caller(Error::QueueNotFound(queue.clone())));
        };
        if row.try_get::<_, i64>(2)? > 0 {
            self.schedule.at(until);
            return Ok(());
        }
        let limit: Option<i32> = row.try_get(1)?;
        let states = lease_states(&**conn, &[seq], queue_id).await?;
        Err(Fail::Caller(
            lease_lost(queue, parts, states.get(&seq), limit, now).unwrap_or_else(|| {
                Error::LeaseLost {
                    queue: queue.clone(),
                    message_id: parts.message_id,
                    reason: "the delivery changed meanwhile".to_owned(),
                }
            }),
        ))
    }
}

/// The lease states of messages `seqs` of queue `queue_id`, by key.
pub(super) async fn lease_states(
    client: &(impl GenericClient + Sync),
    seqs: &[i64],
    queue_id: i64,
) -> Step<HashMap<i64, LeaseState>> {
    let rows = client.query(LEASE_STATE, &[&seqs, &queue_id]).await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                LeaseState {
                    message_id: r.try_get(1)?,
                    attempts: r.try_get(2)?,
                    leased: r.try_get(3)?,
                    ready: r.try_get(4)?,
                    visible_at: r.try_get(5)?,
                },
            ))
        })
        .collect()
}
