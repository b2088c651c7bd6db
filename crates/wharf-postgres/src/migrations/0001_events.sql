-- The event log. Times are microseconds since the Unix epoch from the
-- store's clock, never the database's `now()`.

-- The head of the log: the next position to assign and the newest
-- `created_at`. Every append and stream deletion locks this one row first
-- and keeps it locked until commit, so positions are handed out in commit
-- order on every node (see `events.rs` for why a sequence would not do).
CREATE TABLE log_head (
    only_row        boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    next_position   bigint NOT NULL,
    last_created_at bigint NOT NULL
);
INSERT INTO log_head (next_position, last_created_at) VALUES (0, 0);

-- A stream is the events that carry its name: it exists while it has any,
-- and a deleted stream's name starts again at version 0. The name sits in
-- every row rather than behind a `streams` table so that reading the log
-- filtered by stream prefix is a per-row test on the position scan, with no
-- join for the planner to get wrong; byte order ("C") keeps comparisons a
-- `memcmp`. `first` marks the first event of each append. `payload_hash`
-- (SHA-256 of an offloaded payload) and `payload_ref` (the rest of its
-- reference) are NULL for inline payloads. `data` comes last: it is the only
-- wide column.
CREATE TABLE events (
    position     bigint PRIMARY KEY,
    stream       text COLLATE "C" NOT NULL,
    version      bigint NOT NULL,
    event_id     uuid NOT NULL,
    first        boolean NOT NULL,
    created_at   bigint NOT NULL,
    event_type   text NOT NULL,
    content_type text NOT NULL,
    metadata     jsonb NOT NULL,
    payload_hash bytea,
    payload_ref  jsonb,
    data         bytea NOT NULL
);
CREATE UNIQUE INDEX events_by_stream ON events (stream, version);
-- Only the first event of each append is indexed by id: that is what
-- recognises a retried append, as in the embedded store.
CREATE UNIQUE INDEX events_by_first_id ON events (event_id) WHERE first;
-- Holds offloaded rows only, so inline appends pay nothing; answers the
-- reaper's "is this hash still referenced?".
CREATE INDEX events_by_payload ON events (payload_hash) WHERE payload_hash IS NOT NULL;
