//! Reads, on a small pool of connections that never block the writer.

use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params_from_iter, types::Value};
use uuid::Uuid;
use wharf_core::{
    Durability, Error, LogFilter, Position, ReadDirection, RecordedEvent, Result, StreamName,
    StreamStart, Timestamp,
};

use crate::schema;
use wharf_storage::codec::{decode_metadata, reference_from_columns};

/// Columns every event query selects, in [`event_from_row`]'s order.
const EVENT_COLUMNS: &str = "e.position, s.name, e.version, e.event_id, e.event_type, \
     e.content_type, e.created_at, e.metadata, e.data, e.payload_hash, e.payload_ref";

pub(crate) struct Readers {
    path: PathBuf,
    durability: Durability,
    idle: Mutex<Vec<Connection>>,
}

/// Idle connections kept for reuse; more may be open under load.
const KEEP_IDLE: usize = 8;

impl Readers {
    pub(crate) fn new(path: PathBuf, durability: Durability) -> Self {
        Self {
            path,
            durability,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` on a reader connection.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.idle.lock().map_err(poisoned)?.pop();
        let conn = match conn {
            Some(c) => c,
            None => self.open().map_err(storage)?,
        };
        let out = f(&conn);
        let mut idle = self.idle.lock().map_err(poisoned)?;
        if idle.len() < KEEP_IDLE {
            idle.push(conn);
        }
        out
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        schema::configure(&conn, self.durability)?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(conn)
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::Storage("reader pool lock poisoned".to_owned())
}

/// A read's failure; one that met a damaged page says what to do about it.
pub(crate) fn storage(e: rusqlite::Error) -> Error {
    if schema::is_damage(&e) {
        Error::Storage(format!(
            "{e}: the database file is damaged; {}",
            schema::RESTORE
        ))
    } else {
        Error::Storage(e.to_string())
    }
}

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<RecordedEvent> {
    let position: i64 = row.get(0)?;
    let corrupt = |what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Blob,
            format!("corrupt {what} in event at position {position}").into(),
        )
    };
    let name: String = row.get(1)?;
    let id: [u8; 16] = row.get(3)?;
    let metadata: Vec<u8> = row.get(7)?;
    let data: Vec<u8> = row.get(8)?;
    let external = reference_from_columns(row.get(9)?, row.get(10)?).map_err(corrupt)?;
    Ok(RecordedEvent {
        id: Uuid::from_bytes(id),
        stream: StreamName::new(name).map_err(|_| corrupt("stream name"))?,
        event_type: row.get(4)?,
        data: data.into(),
        metadata: decode_metadata(&metadata).ok_or_else(|| corrupt("metadata"))?,
        content_type: row.get(5)?,
        stream_version: row.get::<_, i64>(2)? as u64,
        position: Position(position as u64),
        created_at: Timestamp::from_micros(row.get(6)?),
        external,
    })
}

/// Whether a committed event or a queued message references `hash`.
pub(crate) fn is_referenced(conn: &Connection, hash: &[u8]) -> Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM events WHERE payload_hash = ?1) \
         OR EXISTS (SELECT 1 FROM message_payloads WHERE payload_hash = ?1)",
    )
    .and_then(|mut s| s.query_row([hash], |r| r.get(0)))
    .map_err(storage)
}

pub(crate) fn stream_id(conn: &Connection, stream: &StreamName) -> Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM streams WHERE name = ?1")
        .and_then(|mut s| s.query_row([stream.as_str()], |r| r.get(0)).optional())
        .map_err(storage)
}

pub(crate) fn stream_version(conn: &Connection, stream: &StreamName) -> Result<Option<u64>> {
    let Some(id) = stream_id(conn, stream)? else {
        return Ok(None);
    };
    conn.prepare_cached("SELECT max(version) FROM events WHERE stream_id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get::<_, Option<i64>>(0)))
        .map(|v| v.map(|v| v as u64))
        .map_err(storage)
}

pub(crate) fn read_stream(
    conn: &Connection,
    stream: &StreamName,
    start: StreamStart,
    direction: ReadDirection,
    limit: usize,
) -> Result<Vec<RecordedEvent>> {
    let Some(id) = stream_id(conn, stream)? else {
        return Err(Error::StreamNotFound(stream.clone()));
    };
    let (cmp, order) = match direction {
        ReadDirection::Forwards => (">=", "ASC"),
        ReadDirection::Backwards => ("<=", "DESC"),
    };
    let from = match (start, direction) {
        (StreamStart::Version(v), _) => i64::try_from(v).unwrap_or(i64::MAX),
        (StreamStart::Edge, ReadDirection::Forwards) => 0,
        (StreamStart::Edge, ReadDirection::Backwards) => i64::MAX,
    };
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events e JOIN streams s ON s.id = e.stream_id \
         WHERE e.stream_id = ?1 AND e.version {cmp} ?2 ORDER BY e.version {order} LIMIT ?3"
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(&sql).map_err(storage)?;
    let events: Vec<RecordedEvent> = stmt
        .query_map(rusqlite::params![id, from, limit], event_from_row)
        .and_then(|rows| rows.collect())
        .map_err(storage)?;
    // A deleted stream keeps its row (and id) but has no events.
    if events.is_empty() && stream_version(conn, stream)?.is_none() {
        return Err(Error::StreamNotFound(stream.clone()));
    }
    Ok(events)
}

/// Reads matching events with `from <= position < head`.
///
/// The upper bound is the head the writer published after its last commit,
/// so a page never includes a commit that landed while it was being read and
/// `next` is exact.
pub(crate) fn read_all(
    conn: &Connection,
    from: Position,
    head: Position,
    filter: &LogFilter,
    limit: usize,
) -> Result<(Vec<RecordedEvent>, Position)> {
    let mut sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events e JOIN streams s ON s.id = e.stream_id \
         WHERE e.position >= ?1 AND e.position < ?2"
    );
    let mut args: Vec<Value> = vec![Value::Integer(from.0 as i64), Value::Integer(head.0 as i64)];
    if let Some(prefix) = &filter.stream_prefix {
        args.push(Value::Blob(prefix.as_bytes().to_vec()));
        sql.push_str(&format!(
            " AND substr(CAST(s.name AS BLOB), 1, {}) = ?{}",
            prefix.len(),
            args.len()
        ));
    }
    if !filter.event_types.is_empty() {
        let first = args.len() + 1;
        args.extend(filter.event_types.iter().cloned().map(Value::Text));
        let marks: Vec<String> = (first..=args.len()).map(|i| format!("?{i}")).collect();
        sql.push_str(&format!(" AND e.event_type IN ({})", marks.join(", ")));
    }
    sql.push_str(&format!(" ORDER BY e.position LIMIT {}", limit.max(1)));
    let mut stmt = conn.prepare_cached(&sql).map_err(storage)?;
    let events: Vec<RecordedEvent> = stmt
        .query_map(params_from_iter(args), event_from_row)
        .and_then(|rows| rows.collect())
        .map_err(storage)?;
    let next = match events.last() {
        Some(last) if events.len() >= limit => last.position.next(),
        _ => head.max(from),
    };
    Ok((events, next))
}

/// Binary search over positions: `created_at` never decreases with the
/// position, so the first event at or after `at` is found in O(log n)
/// primary-key probes without an index on time.
pub(crate) fn position_at(
    conn: &Connection,
    head: Position,
    at: Timestamp,
) -> Result<Option<Position>> {
    let mut probe = conn
        .prepare_cached(
            "SELECT position, created_at FROM events WHERE position >= ?1 \
             ORDER BY position LIMIT 1",
        )
        .map_err(storage)?;
    let mut first_at = |p: u64| -> Result<Option<(u64, i64)>> {
        probe
            .query_row([p as i64], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
            .optional()
            .map_err(storage)
    };
    let Some((min, _)) = first_at(0)? else {
        return Ok(None);
    };
    let (mut lo, mut hi) = (min, head.0);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match first_at(mid)? {
            Some((_, created)) if created >= at.as_micros() => hi = mid,
            Some((p, _)) => lo = p + 1,
            None => hi = mid,
        }
    }
    if lo >= head.0 {
        return Ok(None);
    }
    Ok(first_at(lo)?
        .filter(|(p, _)| *p < head.0)
        .map(|(p, _)| Position(p)))
}
