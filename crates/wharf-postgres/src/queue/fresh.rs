//! Fresh messages: first deliveries by cursor, recorded as one lease per
//! dequeue (migration `0003_queue_cursors.sql` describes the tables).
//!
//! A message enqueued without a delay is inserted *fresh*: outside both
//! partial indexes, under the queue's *head lock* (a transaction-scoped
//! advisory lock), so fresh messages of a queue commit in the order of
//! their `seq`. A dequeue locks the queue's cursor row in a statement of
//! its own (the next statement's snapshot then sees every fresh message
//! committed before the lock was granted: a prefix of the queue in `seq`
//! order), takes the fresh messages after the cursor through the primary
//! key, moves the cursor past them and inserts one lease row for them,
//! which counts them (`remaining`). An acknowledgement deletes the message
//! row and counts it out of its lease, deleting the lease with its last
//! message.
//!
//! Whatever else happens to a fresh message *rewrites* it first as the
//! ordinary in-flight row it stands for (`fresh = false`, attempt 1,
//! visible at its lease's expiry) and then takes the ordinary path: a
//! nack, reject or extend rewrites the one message ([`REWRITE_ONE`]); an
//! expired lease is deleted and all its fresh messages rewritten
//! ([`rewrite_expired`]), by the queue's next dequeue round, by a
//! settle before stats, purge or redrive, or by any node's timer.
//!
//! Lease rows of one queue cover disjoint ranges of `seq`, so the lease of
//! message `s` is the first with `last_seq >= s`, if its `first_seq <= s`
//! ([`lease_of`]). A lease whose count two transactions changed at once
//! may keep a count above what it holds (the second one's deletion finds
//! the count changed and does nothing); it is never deleted while it holds
//! a fresh message, and it expires like any other and is deleted then,
//! rewriting nothing.

use wharf_core::QueueName;

/// Takes the head lock of a queue (its key `$1`) until the transaction
/// ends: held by whoever inserts fresh messages, so that a queue's fresh
/// messages commit in `seq` order and a cursor never passes one that
/// commits later.
/// The statement is the queue lock's (`deliver::LOCK_EXCLUSIVE`), on the
/// head key ([`head_key`]).
pub(super) const LOCK_HEAD: &str = super::deliver::LOCK_EXCLUSIVE;

/// Locks the cursor of queue `$1` until the transaction ends; its own
/// statement, so that what the round reads next is read after the lock.
pub(super) const LOCK_CURSOR: &str = "
SELECT delivered FROM queue_cursors
WHERE queue_id = (SELECT id FROM queues WHERE name = $1)
FOR UPDATE";

/// The lease of message `seq` of queue `queue_id`, as a lateral subquery
/// over `queue_leases`: the first lease ending at or after it (one index
/// probe). The caller checks `first_seq <= seq`: the lease covers the
/// message only then.
pub(super) fn lease_of(queue_id: &str, seq: &str) -> String {
    format!(
        "(SELECT first_seq, last_seq, expires_at FROM queue_leases x \
         WHERE x.queue_id = {queue_id} AND x.last_seq >= {seq} ORDER BY x.last_seq LIMIT 1)"
    )
}

/// Rewrites fresh message `$2` of queue `$1`, if its lease still holds it,
/// as the in-flight row it stands for (attempt 1, visible at the lease's
/// expiry), and counts it out of the lease (deleting the lease with its
/// last message). Nack, reject and extend run it first and then find an
/// ordinary row. The lease is locked first, so two rewrites of one lease
/// count one after the other.
pub(super) const REWRITE_ONE: &str = "
WITH q AS MATERIALIZED (SELECT id FROM queues WHERE name = $1),
l AS MATERIALIZED (
    SELECT first_seq, last_seq, expires_at FROM queue_leases x
    WHERE x.queue_id = (SELECT id FROM q) AND x.last_seq >= $2
    ORDER BY x.last_seq LIMIT 1
    FOR UPDATE),
rewritten AS (
    UPDATE messages m
    SET fresh = false, leased = true, ready = false, attempts = 1, visible_at = l.expires_at
    FROM l
    WHERE m.queue_id = (SELECT id FROM q) AND m.seq = $2 AND m.fresh AND l.first_seq <= $2
    RETURNING 1),
emptied AS (
    DELETE FROM queue_leases x
    WHERE x.queue_id = (SELECT id FROM q) AND x.last_seq = (SELECT last_seq FROM l)
      AND x.remaining <= 1 AND EXISTS (SELECT 1 FROM rewritten)),
shrunk AS (
    UPDATE queue_leases x SET remaining = x.remaining - 1
    WHERE x.queue_id = (SELECT id FROM q) AND x.last_seq = (SELECT last_seq FROM l)
      AND x.remaining > 1 AND EXISTS (SELECT 1 FROM rewritten))
SELECT count(*) FROM rewritten";

/// CTEs `expired` and `rewritten`: deletes the leases of the queues
/// `scope` selects (a condition on `queues s`) that expired by `now` and
/// rewrites their fresh messages as the in-flight rows they stand for,
/// already made ready unless it was their last attempt (attempt 1 of a
/// queue that allows one), which the dead-letter move then finds.
/// `rewritten` returns each message's `queue_id` and `ready`. The messages
/// are found lease by lease (a lateral probe of the primary key) and
/// updated by `ctid`, never through a join the planner could turn round
/// (see `combine::ACK`); a row another transaction changed meanwhile fails
/// the `ctid` recheck and is left to it (deleted by an acknowledgement, or
/// already rewritten).
///
/// A lease another transaction holds is waited for, never skipped (its
/// holders are rewrites and deletions, both short): once the statement is
/// done, every lease of its scope that had expired is rewritten and
/// committed, by it or by the other transaction, and the next statement
/// sees their messages. The timer relies on it as much as a dequeue: it
/// dead-letters expired last attempts in the order they fell due, which
/// it could not if some of them were still fresh behind a skipped lease.
pub(super) fn rewrite_expired(scope: &str, now: &str) -> String {
    format!(
        "expired AS (
    DELETE FROM queue_leases l
    WHERE l.ctid = ANY (ARRAY(
        SELECT x.ctid FROM queues s JOIN queue_leases x ON x.queue_id = s.id
        WHERE ({scope}) AND x.expires_at <= {now}
        FOR UPDATE OF x))
    RETURNING l.queue_id, l.first_seq, l.last_seq, l.expires_at),
rewritten AS (
    UPDATE messages m
    SET fresh = false, leased = true, attempts = 1,
        visible_at = (SELECT e.expires_at FROM expired e
                      WHERE e.queue_id = m.queue_id AND m.seq BETWEEN e.first_seq AND e.last_seq),
        ready = 1 < coalesce((SELECT s.attempt_limit FROM queues s WHERE s.id = m.queue_id),
                             2147483647)
    WHERE m.ctid = ANY (ARRAY(
        SELECT y.ctid FROM expired e CROSS JOIN LATERAL (
            SELECT ctid FROM messages y
            WHERE y.queue_id = e.queue_id AND y.seq BETWEEN e.first_seq AND e.last_seq
              AND y.fresh) AS y))
      AND m.fresh
    RETURNING m.queue_id, m.ready)"
    )
}

/// The head-lock key of queue `name`: a hash of the name, as for the
/// queue's lock key ([`super::deliver::queue_key`]), in a namespace of its
/// own.
pub(super) fn head_key(queue: &QueueName) -> i64 {
    super::deliver::named_key(b"wharf-queue-head:", queue)
}
