//! Reads of the log, on pooled connections; they never wait for appends.

use tokio_postgres::types::ToSql;
use wharf_core::{
    Error, LogFilter, Position, ReadDirection, RecordedEvent, Result, StreamName, StreamStart,
    Timestamp,
};
use wharf_storage::ReadAllPage;

use super::rows::{self, EVENT_COLUMNS};
use super::timed;
use crate::Shared;
use crate::error::pg;

/// The last version of `stream`, `None` when it has no events.
pub(super) async fn stream_version(shared: &Shared, stream: &StreamName) -> Result<Option<u64>> {
    let doing = format!("read the version of stream `{stream}`");
    timed(&doing, async {
        let conn = shared.conn().await?;
        let stmt = conn
            .prepare_cached("SELECT max(version) FROM events WHERE stream = $1")
            .await
            .map_err(|e| pg(&doing, e))?;
        let row = conn
            .query_one(&stmt, &[&stream.as_str()])
            .await
            .map_err(|e| pg(&doing, e))?;
        Ok(row.get::<_, Option<i64>>(0).map(|v| v as u64))
    })
    .await
}

pub(super) async fn read_stream(
    shared: &Shared,
    stream: &StreamName,
    start: StreamStart,
    direction: ReadDirection,
    limit: usize,
) -> Result<Vec<RecordedEvent>> {
    let doing = format!("read stream `{stream}`");
    let (cmp, order) = match direction {
        ReadDirection::Forwards => (">=", "ASC"),
        ReadDirection::Backwards => ("<=", "DESC"),
    };
    let from = match (start, direction) {
        (StreamStart::Version(v), _) => i64::try_from(v).unwrap_or(i64::MAX),
        (StreamStart::Edge, ReadDirection::Forwards) => 0,
        (StreamStart::Edge, ReadDirection::Backwards) => i64::MAX,
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events e \
         WHERE e.stream = $1 AND e.version {cmp} $2 ORDER BY e.version {order} LIMIT $3"
    );
    let events = timed(&doing, async {
        let conn = shared.conn().await?;
        let stmt = conn.prepare_cached(&sql).await.map_err(|e| pg(&doing, e))?;
        conn.query(&stmt, &[&stream.as_str(), &from, &limit])
            .await
            .map_err(|e| pg(&doing, e))?
            .iter()
            .map(|row| rows::event(row, 0))
            .collect::<Result<Vec<_>>>()
    })
    .await?;
    // A page past either end is empty; a stream without events is missing.
    if events.is_empty() && stream_version(shared, stream).await?.is_none() {
        return Err(Error::StreamNotFound(stream.clone()));
    }
    Ok(events)
}

/// Reads matching events with `from <= position < head`, where `head` is the
/// committed head in the same snapshot as the events: every position below
/// it is settled (committed, or deleted), so `next` never skips an event
/// that commits later.
pub(super) async fn read_all(
    shared: &Shared,
    from: Position,
    filter: &LogFilter,
    limit: usize,
) -> Result<ReadAllPage> {
    let doing = "read the event log";
    let start = i64::try_from(from.0).unwrap_or(i64::MAX);
    let max = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&start, &max];
    let mut conditions = String::new();
    if let Some(prefix) = &filter.stream_prefix {
        params.push(prefix);
        conditions.push_str(&format!(" AND starts_with(e.stream, ${})", params.len()));
    }
    if !filter.event_types.is_empty() {
        params.push(&filter.event_types);
        conditions.push_str(&format!(" AND e.event_type = ANY(${})", params.len()));
    }
    // One statement, so the head and the events come from one snapshot; the
    // lateral join yields one row of NULL events when nothing matches.
    let sql = format!(
        "SELECT h.next_position, x.* FROM log_head h LEFT JOIN LATERAL ( \
             SELECT {EVENT_COLUMNS} FROM events e \
             WHERE e.position >= $1 AND e.position < h.next_position{conditions} \
             ORDER BY e.position LIMIT $2 \
         ) x ON true ORDER BY x.position"
    );
    let (head, events) = timed(doing, async {
        let conn = shared.conn().await?;
        let stmt = conn.prepare_cached(&sql).await.map_err(|e| pg(doing, e))?;
        let found = conn.query(&stmt, &params).await.map_err(|e| pg(doing, e))?;
        let Some(first) = found.first() else {
            return Err(Error::Storage(
                "the event log has no head row (log_head is empty)".to_owned(),
            ));
        };
        let head = Position(first.get::<_, i64>(0) as u64);
        let events = found
            .iter()
            .filter(|row| row.get::<_, Option<i64>>(1).is_some())
            .map(|row| rows::event(row, 1))
            .collect::<Result<Vec<_>>>()?;
        Ok((head, events))
    })
    .await?;
    let next = match events.last() {
        Some(last) if events.len() >= limit => last.position.next(),
        _ => head.max(from),
    };
    Ok(ReadAllPage { events, next })
}

/// Binary search over positions: `created_at` never decreases with the
/// position, so the first event at or after `at` is found in O(log n)
/// primary-key probes, without an index on time that every append would
/// pay for.
pub(super) async fn position_at(shared: &Shared, at: Timestamp) -> Result<Option<Position>> {
    let doing = "find a position by time";
    timed(doing, async {
        let conn = shared.conn().await?;
        let head_stmt = conn
            .prepare_cached("SELECT next_position FROM log_head")
            .await
            .map_err(|e| pg(doing, e))?;
        let probe = conn
            .prepare_cached(
                "SELECT position, created_at FROM events WHERE position >= $1 \
                 ORDER BY position LIMIT 1",
            )
            .await
            .map_err(|e| pg(doing, e))?;
        let head = conn
            .query_one(&head_stmt, &[])
            .await
            .map_err(|e| pg(doing, e))?
            .get::<_, i64>(0) as u64;
        // The first event at or after position `p`: (position, created_at).
        let first_at = async |p: u64| -> Result<Option<(u64, i64)>> {
            let row = conn
                .query_opt(&probe, &[&(p as i64)])
                .await
                .map_err(|e| pg(doing, e))?;
            Ok(row.map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1))))
        };
        let Some((min, _)) = first_at(0).await? else {
            return Ok(None);
        };
        let (mut lo, mut hi) = (min, head);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match first_at(mid).await? {
                Some((_, created)) if created >= at.as_micros() => hi = mid,
                Some((p, _)) => lo = p + 1,
                None => hi = mid,
            }
        }
        if lo >= head {
            return Ok(None);
        }
        Ok(first_at(lo)
            .await?
            .filter(|(p, _)| *p < head)
            .map(|(p, _)| Position(p)))
    })
    .await
}
