-- Fresh messages and delivery cursors: a message enqueued without a delay
-- is *fresh* until something happens to it other than its first delivery
-- and its acknowledgement. A queue's fresh messages are delivered in
-- enqueue order by advancing the queue's cursor, and their first delivery
-- is recorded as one lease row per dequeue, not by rewriting each message:
-- a dequeue of 100 fresh messages writes two rows instead of a hundred.
--
-- A fresh message is, in the terms of the other states:
-- - beyond its queue's cursor: ready, never delivered;
-- - within a lease's range: in flight, attempt 1, until the lease's
--   `expires_at`.
-- A nack, extend or reject of it, or its lease expiring, rewrites it as an
-- ordinary in-flight row (`fresh = false`, attempts 1, visible at the
-- lease's expiry), and from then on it goes the ordinary way.

ALTER TABLE messages ADD COLUMN fresh boolean NOT NULL DEFAULT false;

-- Fresh rows are found through the primary key from the cursor on; they
-- stay out of the index of waiting rows.
DROP INDEX messages_waiting;
CREATE INDEX messages_waiting ON messages (queue_id, visible_at) WHERE NOT ready AND NOT fresh;

-- The last fresh message of each queue a dequeue has taken. Every queue
-- has one row, made with the queue. Fresh messages are inserted under the
-- queue's head lock (an advisory lock) so that their enqueue order is their
-- commit order: the cursor never passes a message that commits later.
CREATE TABLE queue_cursors (
    queue_id   bigint PRIMARY KEY,
    delivered  bigint NOT NULL DEFAULT 0,
    -- Deliveries counted by dequeues, which write this row anyway (the
    -- other counters are in `queue_counters`).
    deliveries bigint NOT NULL DEFAULT 0
) WITH (
    -- Updated by every dequeue: room for HOT versions on the page.
    fillfactor = 10,
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
INSERT INTO queue_cursors (queue_id) SELECT id FROM queues;

-- One row per dequeue that took fresh messages: those of the queue's
-- fresh rows with `first_seq <= seq <= last_seq` are in flight until
-- `expires_at`. Ranges of one queue never overlap (the cursor only moves
-- forward), so a message's lease is the first one ending at or after it.
-- `remaining` counts its fresh messages not yet acknowledged or rewritten;
-- the lease is deleted when that reaches 0, or when it expires.
CREATE TABLE queue_leases (
    queue_id   bigint NOT NULL,
    last_seq   bigint NOT NULL,
    first_seq  bigint NOT NULL,
    expires_at bigint NOT NULL,
    remaining  integer NOT NULL,
    PRIMARY KEY (queue_id, last_seq)
) WITH (
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
-- Expired leases of a queue (or, a probe per queue, of every queue).
CREATE INDEX queue_leases_by_expiry ON queue_leases (queue_id, expires_at);
