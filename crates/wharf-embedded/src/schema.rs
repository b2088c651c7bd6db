//! The SQLite schema and its versioning.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use wharf_core::{Durability, Error};

/// Page size of new databases, in bytes.
const PAGE_SIZE: i64 = 16 * 1024;

/// The schema version this binary writes (`PRAGMA user_version`).
pub(crate) const SCHEMA_VERSION: i64 = 3;

const SCHEMA_V1: &str = "
CREATE TABLE streams (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
-- `data` is the last column so that reading the other columns of a row does
-- not walk the payload's overflow pages.
CREATE TABLE events (
    position     INTEGER PRIMARY KEY,
    stream_id    INTEGER NOT NULL,
    version      INTEGER NOT NULL,
    event_id     BLOB NOT NULL,
    event_type   TEXT NOT NULL,
    content_type TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    first        INTEGER NOT NULL,
    metadata     BLOB NOT NULL,
    data         BLOB NOT NULL
);
CREATE UNIQUE INDEX events_by_stream ON events (stream_id, version);
-- Only the first event of each append is indexed by id: that is what
-- recognises a retried append. Indexing every event cost 20% of batched
-- append throughput (measured), for a guarantee retries do not need.
CREATE UNIQUE INDEX appends_by_first_id ON events (event_id) WHERE first = 1;
";

/// Version 2: queues.
const SCHEMA_V2: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE queues (
    id                    INTEGER PRIMARY KEY,
    name                  TEXT NOT NULL UNIQUE,
    max_delivery_attempts INTEGER NOT NULL,
    dead_letter_queue     TEXT,
    visibility_timeout_us INTEGER NOT NULL,
    deliveries            INTEGER NOT NULL DEFAULT 0,
    acks                  INTEGER NOT NULL DEFAULT 0,
    nacks                 INTEGER NOT NULL DEFAULT 0,
    dead_lettered         INTEGER NOT NULL DEFAULT 0
);
-- A queue's order and timers live in memory (rebuilt from `message_state`
-- at open); rows are found by `seq` alone, so neither table needs another
-- index. `seq` is the enqueue order; a dead-lettered or redriven message gets
-- a new one at the end of its new queue. The state a dequeue rewrites is kept
-- apart from the payload, so a dequeue of 100 messages dirties about one page
-- instead of every page the payloads fill.
CREATE TABLE message_state (
    seq             INTEGER PRIMARY KEY,
    queue_id        INTEGER NOT NULL,
    message_id      BLOB NOT NULL,
    enqueued_at     INTEGER NOT NULL,
    visible_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL,
    leased          INTEGER NOT NULL,
    origin_queue_id INTEGER
);
CREATE TABLE message_payloads (
    seq          INTEGER PRIMARY KEY,
    content_type TEXT NOT NULL,
    metadata     BLOB NOT NULL,
    data         BLOB NOT NULL
);
CREATE TABLE dedup (
    queue_id   INTEGER NOT NULL,
    dedup_id   TEXT NOT NULL,
    message_id BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (queue_id, dedup_id)
) WITHOUT ROWID;
CREATE INDEX dedup_by_expiry ON dedup (expires_at);
";

/// Version 3: offloaded payloads. An event or message whose data went to
/// the payload store keeps empty `data`, the reference's hash in
/// `payload_hash` and the rest of it in `payload_ref`. The columns come after
/// `data`, but a NULL costs no overflow-page walk: SQLite reads it from the
/// record header. The partial indexes hold only offloaded rows, so inline
/// appends pay nothing; they answer the reaper's "is this hash still
/// referenced?".
const SCHEMA_V3: &str = "
ALTER TABLE events ADD COLUMN payload_hash BLOB;
ALTER TABLE events ADD COLUMN payload_ref BLOB;
CREATE INDEX events_by_payload ON events (payload_hash) WHERE payload_hash IS NOT NULL;
ALTER TABLE message_payloads ADD COLUMN payload_hash BLOB;
ALTER TABLE message_payloads ADD COLUMN payload_ref BLOB;
CREATE INDEX messages_by_payload ON message_payloads (payload_hash)
    WHERE payload_hash IS NOT NULL;
";

/// What every error about a damaged database file tells its reader to do.
pub(crate) const RESTORE: &str = "restore the data directory from a backup";

/// Most problems SQLite's integrity check reports for a damaged file.
const PROBLEMS_SHOWN: u32 = 3;

/// A storage error saying `message`, and, when SQLite's integrity check
/// finds the database at `path` damaged, that it is and what the check
/// found: an open that trips over a damaged page then says so instead of
/// only naming the column it could not read. The check reads the whole
/// file, so it runs only after something failed.
pub(crate) fn failure(path: &Path, message: String) -> Error {
    match problems(path) {
        Some(found) => Error::Storage(format!(
            "{message}; {} is damaged (SQLite's integrity check: {found}): {RESTORE}",
            path.display()
        )),
        None => Error::Storage(message),
    }
}

/// What `PRAGMA quick_check` finds wrong with the database at `path`, or
/// `None` when it finds nothing or cannot run (a file that cannot be
/// opened is not known to be damaged).
fn problems(path: &Path) -> Option<String> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    let checked = conn
        .prepare(&format!("PRAGMA quick_check({PROBLEMS_SHOWN})"))
        .and_then(|mut check| {
            check
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        });
    match checked {
        Ok(rows) if rows == ["ok"] => None,
        Ok(rows) => Some(
            rows.iter()
                .flat_map(|row| row.lines())
                .filter(|line| !line.starts_with("***"))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Err(e) if is_damage(&e) => Some(e.to_string()),
        Err(_) => None,
    }
}

/// Whether SQLite failed because the database file is damaged (a page it
/// read makes no sense, or the file is not a database at all): retrying
/// will not help, restoring will.
pub(crate) fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// Sets the connection options every connection shares.
pub(crate) fn configure(conn: &Connection, durability: Durability) -> rusqlite::Result<()> {
    // Takes effect only when the database is created. SQLite writes each WAL
    // frame with its own syscalls, so 16 KiB pages cut a batch commit's
    // syscalls fourfold; measured: +40% batched append throughput over 4 KiB,
    // while 64 KiB pages slowed small commits by rewriting whole large pages.
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match durability {
            Durability::Full => "FULL",
            Durability::Relaxed => "NORMAL",
        },
    )?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -65_536)?; // 64 MiB
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(())
}

/// Creates or checks the schema.
///
/// # Errors
/// A message when the database was written by a newer Wharf.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), String> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if version > SCHEMA_VERSION {
        return Err(format!(
            "the database has schema version {version}, newer than this binary's \
             {SCHEMA_VERSION}; upgrade Wharf"
        ));
    }
    if version < SCHEMA_VERSION {
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        for (to, script) in [(1, SCHEMA_V1), (2, SCHEMA_V2), (3, SCHEMA_V3)] {
            if version < to {
                tx.execute_batch(script)
                    .map_err(|e| format!("migrating to schema version {to}: {e}"))?;
            }
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
    }
    Ok(())
}
