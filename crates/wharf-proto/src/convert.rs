//! Conversions between the generated messages and the domain types.

use tonic::Status;
use uuid::Uuid;
use wharf_core::{
    AppendOutcome, AppendResult, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamName,
    Timestamp,
};

use crate::status::{invalid_field, invalid_stream_name};
use crate::v1;

/// Parses a stream name from the wire.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the broken rule.
pub fn stream_name(name: String) -> Result<StreamName, Status> {
    StreamName::new(name).map_err(invalid_stream_name)
}

impl From<ExpectedVersion> for v1::ExpectedVersion {
    fn from(e: ExpectedVersion) -> Self {
        use v1::expected_version::Kind;
        let kind = match e {
            ExpectedVersion::Any => Kind::Any(v1::Empty {}),
            ExpectedVersion::NoStream => Kind::NoStream(v1::Empty {}),
            ExpectedVersion::StreamExists => Kind::StreamExists(v1::Empty {}),
            ExpectedVersion::Exact(n) => Kind::Exact(n),
        };
        Self { kind: Some(kind) }
    }
}

/// The expectation of a request; absent means `Any`.
pub fn expected_version(e: Option<v1::ExpectedVersion>) -> ExpectedVersion {
    use v1::expected_version::Kind;
    match e.and_then(|e| e.kind) {
        None | Some(Kind::Any(_)) => ExpectedVersion::Any,
        Some(Kind::NoStream(_)) => ExpectedVersion::NoStream,
        Some(Kind::StreamExists(_)) => ExpectedVersion::StreamExists,
        Some(Kind::Exact(n)) => ExpectedVersion::Exact(n),
    }
}

impl From<NewEvent> for v1::NewEvent {
    fn from(e: NewEvent) -> Self {
        Self {
            id: e.id.as_bytes().to_vec().into(),
            r#type: e.event_type,
            data: e.data,
            metadata: e.metadata,
            content_type: e.content_type,
        }
    }
}

/// An event to append, from the wire; an empty id gets a fresh one.
///
/// # Errors
/// `INVALID_ARGUMENT` when the id is not 16 bytes.
pub fn new_event(index: usize, e: v1::NewEvent) -> Result<NewEvent, Status> {
    let id = if e.id.is_empty() {
        Uuid::now_v7()
    } else {
        Uuid::from_slice(&e.id).map_err(|_| {
            invalid_field(
                &format!("events[{index}].id"),
                format!("must be 16 bytes, got {}", e.id.len()),
            )
        })?
    };
    Ok(NewEvent {
        id,
        event_type: e.r#type,
        data: e.data,
        metadata: e.metadata,
        content_type: e.content_type,
    })
}

impl From<RecordedEvent> for v1::RecordedEvent {
    fn from(e: RecordedEvent) -> Self {
        Self {
            id: e.id.as_bytes().to_vec().into(),
            stream: e.stream.into_string(),
            r#type: e.event_type,
            data: e.data,
            metadata: e.metadata,
            content_type: e.content_type,
            stream_version: e.stream_version,
            position: e.position.0,
            created_at_micros: e.created_at.as_micros(),
        }
    }
}

/// A recorded event from the wire.
///
/// # Errors
/// `INVALID_ARGUMENT` when the server sent a malformed id or stream name.
pub fn recorded_event(e: v1::RecordedEvent) -> Result<RecordedEvent, Status> {
    Ok(RecordedEvent {
        id: Uuid::from_slice(&e.id).map_err(|_| invalid_field("id", "must be 16 bytes"))?,
        stream: stream_name(e.stream)?,
        event_type: e.r#type,
        data: e.data,
        metadata: e.metadata,
        content_type: e.content_type,
        stream_version: e.stream_version,
        position: Position(e.position),
        created_at: Timestamp::from_micros(e.created_at_micros),
    })
}

impl From<AppendOutcome> for v1::AppendResponse {
    fn from(o: AppendOutcome) -> Self {
        let r = o.result();
        Self {
            duplicate: matches!(o, AppendOutcome::Duplicate(_)),
            first_version: r.first_version,
            last_version: r.last_version,
            first_position: r.first_position.0,
            last_position: r.last_position.0,
        }
    }
}

impl From<v1::AppendResponse> for AppendOutcome {
    fn from(r: v1::AppendResponse) -> Self {
        let result = AppendResult {
            first_version: r.first_version,
            last_version: r.last_version,
            first_position: Position(r.first_position),
            last_position: Position(r.last_position),
        };
        if r.duplicate {
            Self::Duplicate(result)
        } else {
            Self::Appended(result)
        }
    }
}
