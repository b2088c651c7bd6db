//! Events, versions and positions.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use uuid::Uuid;

use crate::{PayloadReference, StreamName, Timestamp};

/// A place in the global log. Positions start at 0 and strictly increase in
/// commit order across all streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position(pub u64);

impl Position {
    /// The position of the first event ever committed.
    pub const START: Position = Position(0);

    /// The position right after this one.
    pub fn next(self) -> Position {
        Position(self.0 + 1)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The optimistic-concurrency check of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// Append whatever the stream's state.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must already have at least one event.
    StreamExists,
    /// The stream's last event must have this version.
    Exact(u64),
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no-stream"),
            Self::StreamExists => f.write_str("exists"),
            Self::Exact(n) => n.fmt(f),
        }
    }
}

/// Error of parsing an [`ExpectedVersion`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected version must be `any`, `no-stream`, `exists` or a number, not `{0}`")]
pub struct ParseExpectedVersionError(String);

impl FromStr for ExpectedVersion {
    type Err = ParseExpectedVersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "any" => Ok(Self::Any),
            "no-stream" => Ok(Self::NoStream),
            "exists" => Ok(Self::StreamExists),
            n => n
                .parse()
                .map(Self::Exact)
                .map_err(|_| ParseExpectedVersionError(s.to_owned())),
        }
    }
}

/// An event to append. Its id makes re-appending idempotent; give one when a
/// retried append must not duplicate the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Unique id; [`NewEvent::new`] generates a time-ordered UUID (v7).
    pub id: Uuid,
    /// Application-defined type, e.g. `OrderPlaced`.
    pub event_type: String,
    /// The payload.
    pub data: Bytes,
    /// Free-form string metadata.
    pub metadata: BTreeMap<String, String>,
    /// MIME type of `data`, e.g. `application/json`.
    pub content_type: String,
    /// Set by the engine when `data` was offloaded to the payload store:
    /// `data` is then empty and this names the stored bytes.
    pub external: Option<PayloadReference>,
}

impl NewEvent {
    /// An event of `event_type` carrying `data`, with a fresh id, no metadata
    /// and content type `application/octet-stream`.
    pub fn new(event_type: impl Into<String>, data: impl Into<Bytes>) -> Self {
        Self {
            id: Uuid::now_v7(),
            event_type: event_type.into(),
            data: data.into(),
            metadata: BTreeMap::new(),
            content_type: "application/octet-stream".to_owned(),
            external: None,
        }
    }

    /// Replaces the id.
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// Adds one metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Replaces the content type.
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = content_type.into();
        self
    }

    /// Bytes this event occupies for the purpose of size limits: data (or
    /// its reference's URI), type, content type and metadata.
    pub fn size(&self) -> usize {
        self.data.len()
            + self.external.as_ref().map_or(0, |r| r.uri.len())
            + self.event_type.len()
            + self.content_type.len()
            + self
                .metadata
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// An event as committed to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The id given at append.
    pub id: Uuid,
    /// The stream it belongs to.
    pub stream: StreamName,
    /// Application-defined type.
    pub event_type: String,
    /// The payload.
    pub data: Bytes,
    /// Free-form string metadata.
    pub metadata: BTreeMap<String, String>,
    /// MIME type of `data`.
    pub content_type: String,
    /// 0-based, gapless version within its stream.
    pub stream_version: u64,
    /// Global position in the log.
    pub position: Position,
    /// Server time of the commit; never decreases with position.
    pub created_at: Timestamp,
    /// Where `data` is stored when it was offloaded. Reads through the engine
    /// fill `data` from the store and keep this for callers that want it.
    pub external: Option<PayloadReference>,
}

/// Where a committed append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Version of the first event of the batch.
    pub first_version: u64,
    /// Version of the last event of the batch: the stream's version after it.
    pub last_version: u64,
    /// Position of the first event of the batch.
    pub first_position: Position,
    /// Position of the last event of the batch.
    pub last_position: Position,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The events were written.
    Appended(AppendResult),
    /// The same events (by id, at the same versions) were already in the
    /// stream; nothing was written and the original result is returned.
    Duplicate(AppendResult),
}

impl AppendOutcome {
    /// The result, whether freshly written or found.
    pub fn result(&self) -> AppendResult {
        match self {
            Self::Appended(r) | Self::Duplicate(r) => *r,
        }
    }
}

/// Where to start reading a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStart {
    /// The first event (forwards) or the last event (backwards).
    Edge,
    /// This version, inclusive.
    Version(u64),
}

/// Direction of a stream read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadDirection {
    /// Increasing versions.
    Forwards,
    /// Decreasing versions.
    Backwards,
}

/// Which events of the global log a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only streams whose name starts with this.
    pub stream_prefix: Option<String>,
    /// Only these event types (empty: all).
    pub event_types: Vec<String>,
}

impl LogFilter {
    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        self.stream_prefix
            .as_deref()
            .is_none_or(|p| event.stream.as_str().starts_with(p))
            && (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_version_parses_its_display_form() {
        for v in [
            ExpectedVersion::Any,
            ExpectedVersion::NoStream,
            ExpectedVersion::StreamExists,
            ExpectedVersion::Exact(7),
        ] {
            assert_eq!(v.to_string().parse::<ExpectedVersion>().unwrap(), v);
        }
        assert!("seven".parse::<ExpectedVersion>().is_err());
    }

    #[test]
    fn new_events_get_distinct_time_ordered_ids() {
        let a = NewEvent::new("t", "x");
        let b = NewEvent::new("t", "x");
        assert!(a.id < b.id);
    }
}
