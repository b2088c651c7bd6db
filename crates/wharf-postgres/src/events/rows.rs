//! How an event is laid out in a row of `events`, both ways.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio_postgres::Row;
use tokio_postgres::types::Json;
use uuid::Uuid;
use wharf_core::{
    ContentHash, Error, PayloadReference, PayloadStorageType, Position, RecordedEvent, Result,
    StreamName, Timestamp,
};

/// Columns every event query selects, in [`event`]'s order; `e` is
/// `events`.
pub(super) const EVENT_COLUMNS: &str = "e.position, e.stream, e.version, e.event_id, \
     e.created_at, e.event_type, e.content_type, e.metadata, e.payload_hash, e.payload_ref, \
     e.data";

/// The event in `row`, whose [`EVENT_COLUMNS`] start at column `at`.
///
/// # Errors
/// `Storage` when a column holds what Wharf never writes.
pub(super) fn event(row: &Row, at: usize) -> Result<RecordedEvent> {
    let position: i64 = get(row, at)?;
    let corrupt = |what: &str| {
        Error::Storage(format!(
            "corrupt {what} in the event at position {position}"
        ))
    };
    let name: String = get(row, at + 1)?;
    let hash: Option<Vec<u8>> = get(row, at + 8)?;
    let reference: Option<Value> = get(row, at + 9)?;
    let external = match (hash, reference) {
        (Some(hash), Some(reference)) => {
            Some(decode_reference(&hash, &reference).ok_or_else(|| corrupt("payload reference"))?)
        }
        (None, None) => None,
        _ => return Err(corrupt("payload reference")),
    };
    let metadata: Json<BTreeMap<String, String>> = get(row, at + 7)?;
    let data: Vec<u8> = get(row, at + 10)?;
    Ok(RecordedEvent {
        id: get::<Uuid>(row, at + 3)?,
        stream: StreamName::new(name).map_err(|_| corrupt("stream name"))?,
        event_type: get(row, at + 5)?,
        data: Bytes::from(data),
        metadata: metadata.0,
        content_type: get(row, at + 6)?,
        stream_version: get::<i64>(row, at + 2)? as u64,
        position: Position(position as u64),
        created_at: Timestamp::from_micros(get(row, at + 4)?),
        external,
    })
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, column: usize) -> Result<T> {
    row.try_get(column)
        .map_err(|e| Error::Storage(format!("cannot read an event row: {e}")))
}

/// The `payload_ref` column of a reference: everything but its hash, which
/// has its own indexed column.
pub(super) fn encode_reference(reference: &PayloadReference) -> Value {
    json!({
        "storage_type": reference.storage_type.as_str(),
        "uri": reference.uri,
        "original_size": reference.original_size,
        "stored_at": reference.stored_at.as_micros(),
    })
}

/// Reads back [`encode_reference`]'s column with the hash column; `None`
/// when either is malformed.
fn decode_reference(hash: &[u8], reference: &Value) -> Option<PayloadReference> {
    let storage_type: PayloadStorageType =
        serde_json::from_value(reference.get("storage_type")?.clone()).ok()?;
    Some(PayloadReference {
        storage_type,
        uri: reference.get("uri")?.as_str()?.to_owned(),
        content_hash: ContentHash(hash.try_into().ok()?),
        original_size: reference.get("original_size")?.as_u64()?,
        stored_at: Timestamp::from_micros(reference.get("stored_at")?.as_i64()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_round_trip_and_malformed_ones_are_refused() {
        let r = PayloadReference {
            storage_type: PayloadStorageType::Gcs,
            uri: "gs://b/events/ab.bin".into(),
            content_hash: ContentHash([9; 32]),
            original_size: u64::MAX,
            stored_at: Timestamp::from_micros(1_767_225_600_000_001),
        };
        let column = encode_reference(&r);
        assert_eq!(decode_reference(&[9; 32], &column), Some(r));
        assert_eq!(decode_reference(&[9; 31], &column), None);
        let mut unknown = column.clone();
        unknown["storage_type"] = json!("tape");
        assert_eq!(decode_reference(&[9; 32], &unknown), None);
    }
}
