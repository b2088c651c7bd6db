-- Queues. Times are microseconds since the epoch as the store's clock reads
-- them (bigint), never PostgreSQL's now(): tests drive a manual clock.

-- Secrets every node shares: the receipt key.
CREATE TABLE queue_secrets (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);

CREATE TABLE queues (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                  text NOT NULL UNIQUE,
    max_delivery_attempts integer NOT NULL,
    dead_letter_queue     text,
    visibility_timeout_us bigint NOT NULL,
    -- max_delivery_attempts when the queue dead-letters (its target is
    -- another queue), else NULL: no limit.
    attempt_limit integer GENERATED ALWAYS AS (
        CASE WHEN dead_letter_queue IS NOT NULL AND dead_letter_queue <> name
             THEN max_delivery_attempts END
    ) STORED
);
CREATE INDEX queues_by_dead_letter_queue ON queues (dead_letter_queue)
    WHERE dead_letter_queue IS NOT NULL;

-- The enqueue order of every queue: one sequence, so a receipt of a deleted
-- queue can never name a message of the queue made again under its name.
CREATE SEQUENCE message_seq AS bigint;

-- One row per live message. A message is either `ready` (visible now,
-- found by enqueue order in `messages_ready`) or waiting (delayed or in
-- flight, found by the time it is due in `messages_waiting`); a waiting
-- message whose time has come is made ready (or dead-lettered) by the next
-- dequeue of its queue or by a node's timer. Dequeues therefore never scan
-- in-flight or delayed rows: the primary key holds every row of a queue in
-- the same order as `messages_ready`, so the planner prefers the smaller
-- partial index (a key on `seq` alone would be smaller, and it would scan
-- that one, filtering in-flight rows one by one). `data` is last so the narrow columns stay at
-- the front of the tuple; large payloads are TOASTed out of line. Text the
-- caller gives (content type, metadata, dedup ids) is stored as bytes:
-- PostgreSQL text cannot hold NUL, Wharf strings can.
CREATE TABLE messages (
    queue_id        bigint NOT NULL,
    seq             bigint NOT NULL,
    ready           boolean NOT NULL,
    leased          boolean NOT NULL,
    visible_at      bigint NOT NULL,
    attempts        integer NOT NULL,
    enqueued_at     bigint NOT NULL,
    message_id      uuid NOT NULL,
    origin_queue_id bigint,
    content_type    bytea NOT NULL,
    metadata        bytea NOT NULL,
    payload_hash    bytea,
    payload_ref     bytea,
    data            bytea NOT NULL,
    PRIMARY KEY (queue_id, seq)
) WITH (
    -- Room on each page for the new version a dequeue or nack writes.
    fillfactor = 70,
    -- Acknowledged messages are deleted: vacuum early and without
    -- throttling so dead tuples and index entries do not pile up at the
    -- head of a busy queue.
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);
CREATE INDEX messages_ready ON messages (queue_id, seq) WHERE ready;
CREATE INDEX messages_waiting ON messages (queue_id, visible_at) WHERE NOT ready;
-- Dead letters by the queue they came from (redrive, stats).
CREATE INDEX messages_dead_letters ON messages (queue_id, origin_queue_id)
    WHERE origin_queue_id IS NOT NULL;
-- Offloaded payloads still referenced (the payload reaper).
CREATE INDEX messages_by_payload ON messages (payload_hash)
    WHERE payload_hash IS NOT NULL;

-- Counts of what each queue has done, in shards: each transaction adds to
-- one shard, so consumers do not queue up behind one hot row; stats sum
-- them. Updates touch no indexed column, so they stay HOT.
CREATE TABLE queue_counters (
    queue_id      bigint NOT NULL,
    shard         smallint NOT NULL,
    deliveries    bigint NOT NULL DEFAULT 0,
    acks          bigint NOT NULL DEFAULT 0,
    nacks         bigint NOT NULL DEFAULT 0,
    dead_lettered bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (queue_id, shard)
) WITH (
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);

CREATE TABLE queue_dedup (
    queue_id   bigint NOT NULL,
    dedup_id   bytea NOT NULL,
    message_id uuid NOT NULL,
    expires_at bigint NOT NULL,
    PRIMARY KEY (queue_id, dedup_id)
);
CREATE INDEX queue_dedup_by_expiry ON queue_dedup (expires_at);

-- Long polls waiting on a queue, per node, until `expires_at` (clock
-- time): an enqueue notifies other nodes only when one of theirs waits.
-- Rows are never removed by their poll (a later poll of the same node may
-- have renewed them); they expire, and timers sweep them.
CREATE TABLE queue_waiters (
    queue      text NOT NULL,
    node       uuid NOT NULL,
    expires_at bigint NOT NULL,
    PRIMARY KEY (queue, node)
);
