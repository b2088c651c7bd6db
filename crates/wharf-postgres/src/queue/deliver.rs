//! The hot path: enqueue, long polling, acknowledge and extend, and the
//! lease checks every receipt goes through. Dequeues and acknowledgements
//! run in the queue's rounds (see `combine`).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use uuid::Uuid;
use wharf_core::queue::DEDUP_WINDOW;
use wharf_core::{
    Delivery, DequeueOptions, Enqueued, Error, NewMessage, QueueName, QueueSettings, Receipt,
    Result, Timestamp,
};
use wharf_storage::receipt::ReceiptParts;

use super::Inner;
use super::fresh::{LOCK_HEAD, REWRITE_ONE, head_key, lease_of};
use super::step::{Fail, Step, after, attempt_of, micros, retrying, seq_of};
use super::wake::{announcement, wake_up};
use wharf_storage::codec::{encode_metadata, encode_reference};

/// Inserts a batch into the queue named `$1`; inserts nothing when it does
/// not exist. Messages visible at once are inserted fresh (see `fresh`),
/// which needs the queue's head lock; delayed ones wait. Sends the notifications `$11` when it does, but a wake-up
/// (`q:`) only when a long poll of another node than `$12` waits on the
/// queue: `NOTIFY` serializes the commits of every notifying transaction
/// in the database, so producers must not all notify. Runs after
/// [`LOCK_SHARED`] in the same transaction (see [`Inner::register_waiter`]
/// for why that makes the check safe).
pub(super) const ENQUEUE: &str = "
WITH q AS MATERIALIZED (SELECT id FROM queues WHERE name = $1),
inserted AS (
    INSERT INTO messages (seq, queue_id, ready, leased, fresh, visible_at, attempts, enqueued_at,
                          message_id, content_type, metadata, payload_hash, payload_ref, data)
    SELECT nextval('message_seq'), (SELECT id FROM q), false, false, r.visible_at <= $2,
           r.visible_at,
           0, $2, r.message_id, r.content_type, r.metadata, r.payload_hash, r.payload_ref, r.data
    FROM unnest($3::uuid[], $4::bigint[], $5::bytea[], $6::bytea[], $7::bytea[], $8::bytea[],
                $9::bytea[]) WITH ORDINALITY
         AS r(message_id, visible_at, content_type, metadata, payload_hash, payload_ref, data, ord)
    WHERE EXISTS (SELECT 1 FROM q)
    ORDER BY r.ord
    RETURNING 1),
notified AS (
    SELECT pg_notify($10, p) FROM unnest($11::text[]) AS p
    WHERE EXISTS (SELECT 1 FROM q)
      AND (left(p, 2) <> 'q:' OR EXISTS (
          SELECT 1 FROM queue_waiters w
          WHERE w.queue = $1 AND w.node <> $12 AND w.expires_at > $2)))
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

/// What a lease check needs of messages `$1` of queue `$2`; a fresh
/// message as the row it stands for (in flight as attempt 1 while a lease
/// holds it, else ready and never delivered).
static LEASE_STATE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "
SELECT m.seq, m.message_id,
       CASE WHEN NOT m.fresh THEN m.attempts WHEN l.first_seq <= m.seq THEN 1 ELSE 0 END,
       CASE WHEN NOT m.fresh THEN m.leased ELSE coalesce(l.first_seq <= m.seq, false) END,
       CASE WHEN NOT m.fresh THEN m.ready ELSE NOT coalesce(l.first_seq <= m.seq, false) END,
       CASE WHEN NOT m.fresh THEN m.visible_at WHEN l.first_seq <= m.seq THEN l.expires_at
            ELSE m.visible_at END
FROM messages m LEFT JOIN LATERAL {lease} AS l ON m.fresh
WHERE m.seq = ANY ($1::bigint[]) AND m.queue_id = $2",
        lease = lease_of("m.queue_id", "m.seq")
    )
});

const QUEUE_ID: &str = "SELECT id, attempt_limit FROM queues WHERE name = $1";

/// Keeps queue `$1` (its lock key) from being deleted until the transaction
/// ends. A delete takes the key exclusively ([`LOCK_EXCLUSIVE`]) before it
/// deletes the queue's rows, so nothing is inserted into a queue being
/// deleted: an insert either commits first, or waits and then finds the
/// queue gone. An advisory lock rather than `FOR KEY SHARE` on the queue's
/// row: concurrent producers would each write that row (and share it
/// through a MultiXact).
pub(super) const LOCK_SHARED: &str = "SELECT pg_advisory_xact_lock_shared($1)";

/// Waits for the inserts into queue `$1` under way, and keeps new ones out
/// until the transaction ends.
pub(super) const LOCK_EXCLUSIVE: &str = "SELECT pg_advisory_xact_lock($1)";

const FIND_QUEUE: &str = "SELECT id FROM queues WHERE name = $1";

/// Records that a long poll of node `$2` waits on queue `$1` until `$3`.
const REGISTER_WAITER: &str = "
INSERT INTO queue_waiters AS w (queue, node, expires_at) VALUES ($1, $2, $3)
ON CONFLICT (queue, node) DO UPDATE SET expires_at = greatest(w.expires_at, excluded.expires_at)";

/// How long (clock time) a waiter's registration outlasts its poll's wait:
/// a consumer that polls again at once is still registered and need not
/// write again. Lasting longer than needed costs notifications nobody waits
/// for (and serialized commits), so it is short.
const WAITER_SLACK: std::time::Duration = std::time::Duration::from_secs(1);

/// Creates a queue and its cursor.
const CREATE_QUEUE: &str = "
WITH q AS (
    INSERT INTO queues (name, max_delivery_attempts, dead_letter_queue, visibility_timeout_us)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (name) DO NOTHING
    RETURNING id),
cursor AS (INSERT INTO queue_cursors (queue_id) SELECT id FROM q)
SELECT id FROM q";

/// A message ready to insert.
pub(super) struct InsertRow<'a> {
    id: Uuid,
    visible_at: i64,
    content_type: &'a [u8],
    metadata: Vec<u8>,
    payload_hash: Option<&'a [u8]>,
    payload_ref: Option<Vec<u8>>,
    data: &'a [u8],
}

impl<'a> InsertRow<'a> {
    /// `message` as message `id`, enqueued at `now`.
    pub(super) fn of(message: &'a NewMessage, id: Uuid, now: Timestamp) -> Self {
        InsertRow {
            id,
            visible_at: after(now, message.delay),
            content_type: message.content_type.as_bytes(),
            metadata: encode_metadata(&message.metadata),
            payload_hash: message.external.as_ref().map(|r| &r.content_hash.0[..]),
            payload_ref: message.external.as_ref().map(encode_reference),
            data: &message.data,
        }
    }
}

/// The parameters of one [`ENQUEUE`], owned so that the statement can be
/// sent in a pipeline.
pub(super) struct InsertParams<'a> {
    name: &'a str,
    now: i64,
    ids: Vec<Uuid>,
    visible_at: Vec<i64>,
    content_types: Vec<&'a [u8]>,
    metadata: Vec<&'a [u8]>,
    hashes: Vec<Option<&'a [u8]>>,
    refs: Vec<Option<&'a [u8]>>,
    data: Vec<&'a [u8]>,
    notes: Vec<String>,
    node: Uuid,
}

impl InsertParams<'_> {
    pub(super) fn sql<'s>(&'s self, channel: &'s &str) -> [&'s (dyn ToSql + Sync); 12] {
        [
            &self.name,
            &self.now,
            &self.ids,
            &self.visible_at,
            &self.content_types,
            &self.metadata,
            &self.hashes,
            &self.refs,
            &self.data,
            channel,
            &self.notes,
            &self.node,
        ]
    }
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
                "its last delivery attempt timed out: the message is being dead-lettered".to_owned()
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

/// The advisory-lock key of queue `name`: a hash of the name (a queue made
/// again under it is the same resource), with the top bit set so it never
/// meets a payload key (see `refs`).
pub(super) fn queue_key(queue: &QueueName) -> i64 {
    named_key(b"wharf-queue:", queue)
}

/// An advisory-lock key for `queue` in `namespace`, top bit set.
pub(super) fn named_key(namespace: &[u8], queue: &QueueName) -> i64 {
    // FNV-1a: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace.iter().chain(queue.as_str().as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes((h | 1 << 63).to_ne_bytes())
}

/// The id of `queue`, kept from deletion until the transaction ends;
/// created with `settings` if it does not exist.
pub(super) async fn lock_or_create(
    client: &(impl GenericClient + Sync),
    queue: &QueueName,
    settings: &QueueSettings,
) -> Step<i64> {
    client.query_one(LOCK_SHARED, &[&queue_key(queue)]).await?;
    // Each round either finds the queue or creates it, unless a concurrent
    // creation and deletion interleave with it; give up after a few.
    for _ in 0..8 {
        if let Some(row) = client.query_opt(FIND_QUEUE, &[&queue.as_str()]).await? {
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
        self: &Arc<Self>,
        queue: &QueueName,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Enqueued>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        if messages.iter().all(|m| m.dedup_id.is_none()) {
            return self.put_combined(queue, messages).await;
        }
        let now = self.shared.clock().now();
        let rows: Vec<InsertRow<'_>> = messages
            .iter()
            .map(|m| InsertRow::of(m, Uuid::now_v7(), now))
            .collect();
        let outcome = retrying(
            || format!("enqueue to `{queue}`"),
            || self.enqueue_deduplicated(queue, &messages, &rows, now),
        )
        .await?;
        let added: Vec<&InsertRow<'_>> = rows
            .iter()
            .zip(&outcome)
            .filter(|(_, e)| !e.duplicate)
            .map(|(r, _)| r)
            .collect();
        self.enqueued(queue, &added, now);
        Ok(outcome)
    }

    /// Wakes this node's long polls and schedules the timer for the
    /// messages an enqueue added.
    pub(super) fn enqueued(&self, queue: &QueueName, added: &[&InsertRow<'_>], now: Timestamp) {
        let mut visible = false;
        for row in added {
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
    fn enqueue_notes(
        &self,
        queue: &QueueName,
        rows: &[&InsertRow<'_>],
        now: Timestamp,
    ) -> Vec<String> {
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

    /// The parameters of [`ENQUEUE`] for `rows`.
    pub(super) fn insert_params<'a>(
        &self,
        queue: &'a QueueName,
        rows: &[&'a InsertRow<'a>],
        now: Timestamp,
    ) -> InsertParams<'a> {
        InsertParams {
            name: queue.as_str(),
            now: now.as_micros(),
            ids: rows.iter().map(|r| r.id).collect(),
            visible_at: rows.iter().map(|r| r.visible_at).collect(),
            content_types: rows.iter().map(|r| r.content_type).collect(),
            metadata: rows.iter().map(|r| &r.metadata[..]).collect(),
            hashes: rows.iter().map(|r| r.payload_hash).collect(),
            refs: rows.iter().map(|r| r.payload_ref.as_deref()).collect(),
            data: rows.iter().map(|r| r.data).collect(),
            notes: self.enqueue_notes(queue, rows, now),
            node: self.node,
        }
    }

    /// An enqueue with dedup ids: one transaction that claims each id
    /// (or finds the message that holds it) and inserts the new messages.
    async fn enqueue_deduplicated(
        &self,
        queue: &QueueName,
        messages: &[NewMessage],
        rows: &[InsertRow<'_>],
        now: Timestamp,
    ) -> Step<Vec<Enqueued>> {
        let mut conn = self.shared.conn().await?;
        let tx = conn.transaction().await?;
        let queue_id = lock_or_create(&*tx, queue, self.shared.queue_defaults()).await?;
        tx.query_one(LOCK_HEAD, &[&head_key(queue)]).await?;
        let expires_at = after(now, DEDUP_WINDOW);
        let mut outcome = Vec::with_capacity(rows.len());
        let mut new = Vec::with_capacity(rows.len());
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
            new.push(row);
        }
        if !new.is_empty() {
            let statement = tx.prepare_cached(ENQUEUE).await?;
            let params = self.insert_params(queue, &new, now);
            let channel = self.shared.channel();
            let inserted = tx.query_one(&statement, &params.sql(&channel)).await?;
            if inserted.try_get::<_, Option<i64>>(0)?.is_none() {
                return Err(Fail::Caller(Error::Storage(format!(
                    "queue `{queue}` vanished while locked"
                ))));
            }
        }
        tx.commit().await?;
        Ok(outcome)
    }

    /// Long polls: registered on the queue's notifier before each look, so
    /// a wake-up between the look and the wait is not lost.
    pub(super) async fn dequeue(
        self: &Arc<Self>,
        queue: &QueueName,
        options: DequeueOptions,
    ) -> Result<Vec<Delivery>> {
        if options.wait.is_zero() {
            return self.dequeue_now(queue, options).await;
        }
        let clock = self.shared.clock().clone();
        let give_up = clock.now().saturating_add(options.wait);
        let notify = self.wakers.of(queue.as_str());
        let mut registered = false;
        loop {
            let woken = notify.clone().notified_owned();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let got = self.dequeue_now(queue, options).await?;
            if !got.is_empty() || clock.now() >= give_up {
                return Ok(got);
            }
            if !registered {
                // Other nodes wake only queues someone waits on: say so,
                // then look once more before waiting.
                self.register_waiter(queue, give_up).await?;
                registered = true;
                continue;
            }
            tokio::select! {
                () = woken => {}
                () = clock.sleep_until(give_up) => return Ok(Vec::new()),
            }
        }
    }

    /// Registers a long poll of this node on `queue` until `until` (at
    /// least), unless a registration already covers it.
    ///
    /// The registration takes the queue's lock key exclusively, an enqueue
    /// shares it: either the enqueue commits first (and the poll's next look
    /// finds its message) or it starts after the registration committed
    /// (and sees the waiter, and notifies).
    async fn register_waiter(&self, queue: &QueueName, until: Timestamp) -> Result<()> {
        if self.wakers.registered_until(queue.as_str()) >= Some(until) {
            return Ok(());
        }
        let until = until.saturating_add(WAITER_SLACK);
        retrying(
            || format!("register a long poll on `{queue}`"),
            || async {
                let mut conn = self.shared.conn().await?;
                let tx = conn.transaction().await?;
                tx.query_one(LOCK_EXCLUSIVE, &[&queue_key(queue)]).await?;
                tx.execute(
                    REGISTER_WAITER,
                    &[&queue.as_str(), &self.node, &until.as_micros()],
                )
                .await?;
                tx.commit().await?;
                Ok(())
            },
        )
        .await?;
        self.wakers.registered(queue.as_str(), until);
        Ok(())
    }

    async fn dequeue_now(
        self: &Arc<Self>,
        queue: &QueueName,
        options: DequeueOptions,
    ) -> Result<Vec<Delivery>> {
        let taken = self.take_combined(queue, options).await?;
        if taken.dead_due
            && let Err(e) = self.settle_now(Some(queue)).await
        {
            if taken.deliveries.is_empty() {
                return Err(e);
            }
            // The deliveries are committed: hand them out; the timer
            // moves the dead letters.
            tracing::warn!(queue = %queue, error = %e, "could not dead-letter expired last attempts");
        }
        Ok(taken.deliveries)
    }

    pub(super) async fn ack(
        self: &Arc<Self>,
        queue: &QueueName,
        receipts: &[Receipt],
    ) -> Result<Vec<Result<()>>> {
        let parts = receipts.iter().map(|r| self.key.check(queue, r)).collect();
        self.ack_combined(queue, parts).await
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
        let (rewrite, statement) = futures::try_join!(
            conn.prepare_cached(REWRITE_ONE),
            conn.prepare_cached(EXTEND)
        )?;
        let name = queue.as_str();
        let rewrite_params: [&(dyn ToSql + Sync); 2] = [&name, &seq];
        let (attempt, until_us, now_us, channel) = (
            attempt_of(parts),
            until.as_micros(),
            now.as_micros(),
            self.shared.channel(),
        );
        let extend_params: [&(dyn ToSql + Sync); 8] = [
            &name,
            &seq,
            &parts.message_id,
            &attempt,
            &until_us,
            &now_us,
            &channel,
            &notes,
        ];
        // A fresh message is rewritten as an ordinary row first, in the
        // same transaction, sent as one pipeline.
        let (begun, rewritten, extended, committed) = futures::join!(
            conn.batch_execute("BEGIN"),
            conn.execute(&rewrite, &rewrite_params),
            conn.query_one(&statement, &extend_params),
            conn.batch_execute("COMMIT"),
        );
        begun?;
        rewritten?;
        let row = extended?;
        committed?;
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
    let rows = client.query(&*LEASE_STATE, &[&seqs, &queue_id]).await?;
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
