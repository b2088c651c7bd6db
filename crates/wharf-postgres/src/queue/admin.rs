//! Creating, counting, listing, purging and deleting queues; the receipt
//! key.

use std::time::Duration;

use tokio_postgres::GenericClient;
use wharf_core::{
    Error, QueueCreated, QueueInfo, QueueName, QueueSettings, QueueStats, Result, Timestamp,
};
use wharf_storage::receipt::ReceiptKey;

use super::Inner;
use super::deliver::{LOCK_EXCLUSIVE, create, queue_key};
use super::fresh::LOCK_CURSOR;
use super::step::{Fail, Step, count, micros, queue_name, retrying, settings};
use crate::Shared;
use crate::error::pg;
use crate::vacuum::Vacuum;

const STORE_RECEIPT_KEY: &str = "
INSERT INTO queue_secrets (name, value) VALUES ('receipt_key', $1)
ON CONFLICT (name) DO NOTHING";

const READ_RECEIPT_KEY: &str = "SELECT value FROM queue_secrets WHERE name = 'receipt_key'";

const SETTINGS: &str = "
SELECT max_delivery_attempts, dead_letter_queue, visibility_timeout_us
FROM queues WHERE name = $1";

const LIST: &str = "
SELECT name, max_delivery_attempts, dead_letter_queue, visibility_timeout_us FROM queues";

/// What queue `$1` holds at clock time `$2`, and has done. Visible messages
/// are the ready ones, the fresh ones after the cursor, and waiting ones
/// whose time has come (but not expired last attempts); fresh messages up
/// to the cursor are in flight (their leases' expiry was settled first);
/// the oldest message is the first by enqueue order.
const STATS: &str = "
WITH q AS MATERIALIZED (
    SELECT id, dead_letter_queue, coalesce(attempt_limit, 2147483647) AS attempt_limit,
           attempt_limit IS NOT NULL AS dead_letters
    FROM queues WHERE name = $1),
waiting AS (
    SELECT count(*) FILTER (WHERE visible_at <= $2
                              AND NOT (leased AND attempts >= (SELECT attempt_limit FROM q))) AS due,
           count(*) FILTER (WHERE visible_at > $2 AND leased) AS in_flight,
           count(*) FILTER (WHERE visible_at > $2 AND NOT leased) AS delayed
    FROM messages WHERE queue_id = (SELECT id FROM q) AND NOT ready AND NOT fresh),
fresh AS (
    SELECT count(*) FILTER (WHERE seq > c.delivered) AS visible,
           count(*) FILTER (WHERE seq <= c.delivered) AS in_flight
    FROM messages m JOIN queue_cursors c ON c.queue_id = m.queue_id
    WHERE m.queue_id = (SELECT id FROM q) AND m.fresh),
counters AS (
    SELECT (coalesce(sum(deliveries), 0) + coalesce((SELECT deliveries FROM queue_cursors
                                                      WHERE queue_id = (SELECT id FROM q)), 0)
           )::bigint AS deliveries,
           coalesce(sum(acks), 0)::bigint AS acks,
           coalesce(sum(nacks), 0)::bigint AS nacks,
           coalesce(sum(dead_lettered), 0)::bigint AS dead_lettered
    FROM queue_counters WHERE queue_id = (SELECT id FROM q))
SELECT (SELECT id FROM q),
    (SELECT count(*) FROM messages WHERE queue_id = (SELECT id FROM q) AND ready) + f.visible,
    w.due, w.in_flight + f.in_flight, w.delayed,
    (SELECT enqueued_at FROM messages WHERE queue_id = (SELECT id FROM q)
     ORDER BY seq LIMIT 1) AS oldest,
    (SELECT count(*) FROM messages d
     WHERE (SELECT dead_letters FROM q)
       AND d.queue_id = (SELECT t.id FROM queues t WHERE t.name = (SELECT dead_letter_queue FROM q))
       AND d.origin_queue_id = (SELECT id FROM q)) AS dead_letters,
    c.deliveries, c.acks, c.nacks, c.dead_lettered
FROM waiting AS w, fresh AS f, counters AS c";

/// Deletes every message of queue `$1` (one statement through the primary
/// key, so that a message promoted meanwhile is not missed, see `MOVABLE`)
/// and its leases. Runs after [`LOCK_CURSOR`]: no dequeue reads the fresh
/// messages meanwhile.
const PURGE: &str = "
WITH q AS MATERIALIZED (SELECT id FROM queues WHERE name = $1),
purged AS (DELETE FROM messages WHERE queue_id = (SELECT id FROM q) RETURNING 1),
leases AS (DELETE FROM queue_leases WHERE queue_id = (SELECT id FROM q))
SELECT (SELECT id FROM q), (SELECT count(*) FROM purged)";

const DELETE_QUEUE: &str = "DELETE FROM queues WHERE name = $1 RETURNING id";

const DELETE_CONTENTS: &str = "
WITH purged AS (DELETE FROM messages WHERE queue_id = $1 RETURNING 1),
leases AS (DELETE FROM queue_leases WHERE queue_id = $1),
cursor AS (DELETE FROM queue_cursors WHERE queue_id = $1),
counters AS (DELETE FROM queue_counters WHERE queue_id = $1),
dedup AS (DELETE FROM queue_dedup WHERE queue_id = $1)
SELECT count(*) FROM purged";

/// The receipt key every node shares: made by the first node to start,
/// read by the others.
///
/// # Errors
/// `Unavailable` when the database cannot be reached; `Storage` when the
/// stored key is malformed.
pub(super) async fn receipt_key(shared: &Shared) -> Result<ReceiptKey> {
    let doing = "read the receipt key";
    let secret: [u8; 32] = rand::random();
    let conn = shared.conn().await?;
    conn.execute(STORE_RECEIPT_KEY, &[&&secret[..]])
        .await
        .map_err(|e| pg(doing, e))?;
    let stored: Vec<u8> = conn
        .query_one(READ_RECEIPT_KEY, &[])
        .await
        .map_err(|e| pg(doing, e))?
        .get(0);
    let stored: [u8; 32] = stored.try_into().map_err(|_| {
        Error::Storage("the stored receipt key is not 32 bytes; the schema is damaged".into())
    })?;
    Ok(ReceiptKey::new(stored))
}

/// `settings` as stored: timeouts in whole microseconds.
fn as_stored(settings: &QueueSettings) -> QueueSettings {
    QueueSettings {
        visibility_timeout: Duration::from_micros(
            micros(settings.visibility_timeout).max(0).unsigned_abs(),
        ),
        ..settings.clone()
    }
}

impl Inner {
    pub(super) async fn create_queue(
        &self,
        queue: &QueueName,
        settings: &QueueSettings,
    ) -> Result<QueueCreated> {
        retrying(
            || format!("create queue `{queue}`"),
            || self.create_once(queue, settings),
        )
        .await
    }

    async fn create_once(&self, queue: &QueueName, settings: &QueueSettings) -> Step<QueueCreated> {
        let conn = self.shared.conn().await?;
        // Each round creates the queue or finds it, unless a concurrent
        // delete removes it in between.
        for _ in 0..8 {
            if create(&**conn, queue, settings).await?.is_some() {
                return Ok(QueueCreated::Created);
            }
            if let Some(row) = conn.query_opt(SETTINGS, &[&queue.as_str()]).await? {
                return if as_stored(&self::settings(&row, 0)?) == as_stored(settings) {
                    Ok(QueueCreated::Existed)
                } else {
                    Err(Fail::Caller(Error::QueueExists {
                        queue: queue.clone(),
                    }))
                };
            }
        }
        Err(Fail::Caller(Error::Unavailable(format!(
            "queue `{queue}` is being created and deleted concurrently; try again"
        ))))
    }

    pub(super) async fn stats(&self, queue: &QueueName) -> Result<QueueStats> {
        self.settle_now(Some(queue)).await?;
        retrying(
            || format!("read the stats of `{queue}`"),
            || async {
                let conn = self.shared.conn().await?;
                let now = self.shared.clock().now();
                self.stats_of(&**conn, queue, now)
                    .await?
                    .ok_or_else(|| Fail::Caller(Error::QueueNotFound(queue.clone())))
            },
        )
        .await
    }

    /// The stats of `queue`, `None` when it does not exist.
    async fn stats_of(
        &self,
        client: &(impl GenericClient + Sync),
        queue: &QueueName,
        now: Timestamp,
    ) -> Step<Option<QueueStats>> {
        let row = client
            .query_one(STATS, &[&queue.as_str(), &now.as_micros()])
            .await?;
        if row.try_get::<_, Option<i64>>(0)?.is_none() {
            return Ok(None);
        }
        let get = |i: usize| -> Step<u64> { Ok(count(row.try_get::<_, i64>(i)?)) };
        let oldest: Option<i64> = row.try_get(5)?;
        Ok(Some(QueueStats {
            visible: get(1)? + get(2)?,
            in_flight: get(3)?,
            delayed: get(4)?,
            oldest_age_micros: oldest.map(|at| {
                now.duration_since(Timestamp::from_micros(at))
                    .as_micros()
                    .try_into()
                    .unwrap_or(u64::MAX)
            }),
            dead_letters: get(6)?,
            deliveries: get(7)?,
            acks: get(8)?,
            nacks: get(9)?,
            dead_lettered: get(10)?,
        }))
    }

    pub(super) async fn list_queues(&self) -> Result<Vec<QueueInfo>> {
        self.settle_now(None).await?;
        retrying(|| "list queues".to_owned(), || self.list_once()).await
    }

    async fn list_once(&self) -> Step<Vec<QueueInfo>> {
        let conn = self.shared.conn().await?;
        let now = self.shared.clock().now();
        let rows = conn.query(LIST, &[]).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let name = queue_name(row.try_get(0)?)?;
            // A queue deleted since the list was read is left out.
            if let Some(stats) = self.stats_of(&**conn, &name, now).await? {
                out.push(QueueInfo {
                    settings: settings(row, 1)?,
                    name,
                    stats,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub(super) async fn purge(&self, queue: &QueueName) -> Result<u64> {
        self.settle_now(Some(queue)).await?;
        retrying(
            || format!("purge `{queue}`"),
            || async {
                let mut conn = self.shared.conn().await?;
                let tx = conn.transaction().await?;
                tx.query(LOCK_CURSOR, &[&queue.as_str()]).await?;
                let row = tx.query_one(PURGE, &[&queue.as_str()]).await?;
                tx.commit().await?;
                if row.try_get::<_, Option<i64>>(0)?.is_none() {
                    return Err(Fail::Caller(Error::QueueNotFound(queue.clone())));
                }
                let purged = count(row.try_get(1)?);
                Vacuum::deleted(&self.shared, purged);
                Ok(purged)
            },
        )
        .await
    }

    pub(super) async fn delete_queue(&self, queue: &QueueName) -> Result<()> {
        self.settle_now(Some(queue)).await?;
        retrying(
            || format!("delete `{queue}`"),
            || async {
                let mut conn = self.shared.conn().await?;
                let tx = conn.transaction().await?;
                tx.query_one(LOCK_EXCLUSIVE, &[&queue_key(queue)]).await?;
                let Some(row) = tx.query_opt(DELETE_QUEUE, &[&queue.as_str()]).await? else {
                    return Err(Fail::Caller(Error::QueueNotFound(queue.clone())));
                };
                let id: i64 = row.try_get(0)?;
                let purged: i64 = tx.query_one(DELETE_CONTENTS, &[&id]).await?.try_get(0)?;
                tx.commit().await?;
                Vacuum::deleted(&self.shared, count(purged));
                Ok(())
            },
        )
        .await
    }
}
