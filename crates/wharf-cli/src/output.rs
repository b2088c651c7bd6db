//! What commands print: text for humans, JSON for scripts.
//!
//! The JSON shapes are the CLI contract (DESIGN.md §7); in particular a
//! payload appears as `data` (a string) when it is valid UTF-8 and as
//! `data_base64` otherwise, so binary payloads survive a round trip. An
//! offloaded payload adds `external`, its reference; when the payload was not
//! fetched (asked for references, or a dead letter whose payload could not
//! be retrieved) there is `external` and no data at all.

use std::fmt;
use std::io::{self, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};
use wharf_core::{Delivery, PayloadReference, RecordedEvent};

use crate::exit::StdoutClosed;

/// How to print results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Text for people.
    Human,
    /// JSON for scripts.
    Json,
}

impl Format {
    /// The format `--json` asks for.
    pub fn from_json_flag(json: bool) -> Self {
        if json { Self::Json } else { Self::Human }
    }
}

/// Prints one line on stdout.
///
/// # Errors
/// [`StdoutClosed`] when the reader went away; other write errors as they are.
pub fn line(text: impl fmt::Display) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// Writes `bytes` to stdout as they are.
///
/// # Errors
/// As [`line`].
pub fn raw(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// Prints one JSON document on one line of stdout.
///
/// # Errors
/// As [`line`].
pub fn json(value: &Value) -> anyhow::Result<()> {
    line(value)
}

fn stdout_error(e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        StdoutClosed.into()
    } else {
        anyhow::Error::new(e).context("cannot write to stdout")
    }
}

/// An event as JSON: `id`, `stream`, `type`, `stream_version`, `position`,
/// `created_at` (RFC 3339), `content_type`, `metadata`, and `data` or
/// `data_base64`.
pub fn event_json(event: &RecordedEvent) -> Value {
    let mut object = Map::new();
    object.insert("id".into(), json!(event.id.to_string()));
    object.insert("stream".into(), json!(event.stream.as_str()));
    object.insert("type".into(), json!(event.event_type));
    object.insert("stream_version".into(), json!(event.stream_version));
    object.insert("position".into(), json!(event.position.0));
    object.insert("created_at".into(), json!(event.created_at.to_string()));
    object.insert("content_type".into(), json!(event.content_type));
    object.insert("metadata".into(), json!(event.metadata));
    insert_payload(&mut object, &event.data, event.external.as_ref());
    Value::Object(object)
}

/// A queue delivery as JSON: `message_id`, `receipt`, `delivery_attempt`,
/// `enqueued_at` (RFC 3339), `content_type`, `metadata`, and `data` or
/// `data_base64`.
pub fn delivery_json(delivery: &Delivery) -> Value {
    let mut object = Map::new();
    object.insert("message_id".into(), json!(delivery.message_id.to_string()));
    object.insert("receipt".into(), json!(delivery.receipt.as_str()));
    object.insert("delivery_attempt".into(), json!(delivery.delivery_attempt));
    object.insert(
        "enqueued_at".into(),
        json!(delivery.enqueued_at.to_string()),
    );
    object.insert("content_type".into(), json!(delivery.content_type));
    object.insert("metadata".into(), json!(delivery.metadata));
    insert_payload(&mut object, &delivery.data, delivery.external.as_ref());
    Value::Object(object)
}

/// A payload reference as JSON: `storage_type`, `uri`, `content_hash`
/// (hex), `original_size` and `stored_at` (RFC 3339).
pub fn reference_json(reference: &PayloadReference) -> Value {
    json!({
        "storage_type": reference.storage_type.as_str(),
        "uri": reference.uri,
        "content_hash": reference.content_hash.to_hex(),
        "original_size": reference.original_size,
        "stored_at": reference.stored_at.to_string(),
    })
}

/// Whether a payload is offloaded and was not fetched: there is a
/// reference to a non-empty payload but no data.
fn unfetched(data: &[u8], external: Option<&PayloadReference>) -> bool {
    external.is_some_and(|r| data.is_empty() && r.original_size > 0)
}

/// Adds a payload: its data (unless it was not fetched) and, when it was
/// offloaded, `external`.
fn insert_payload(
    object: &mut Map<String, Value>,
    data: &[u8],
    external: Option<&PayloadReference>,
) {
    if !unfetched(data, external) {
        insert_data(object, data);
    }
    if let Some(reference) = external {
        object.insert("external".into(), reference_json(reference));
    }
}

/// Adds a payload as `data` when it is UTF-8, else as `data_base64`.
pub fn insert_data(object: &mut Map<String, Value>, data: &[u8]) {
    match std::str::from_utf8(data) {
        Ok(text) => object.insert("data".into(), json!(text)),
        Err(_) => object.insert("data_base64".into(), json!(BASE64.encode(data))),
    };
}

/// A delivery as one line for people:
/// `<receipt> <message_id> <delivery_attempt> <enqueued_at> <payload>`.
/// The receipt comes first because it is what `ack`, `nack` and `extend`
/// take, so `cut -d' ' -f1` finds it.
pub struct DeliveryLine<'a>(pub &'a Delivery);

impl fmt::Display for DeliveryLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        write!(
            f,
            "{} {} {} {} {}",
            d.receipt,
            d.message_id,
            d.delivery_attempt,
            d.enqueued_at,
            PayloadText(&d.data, d.external.as_ref())
        )
    }
}

/// An event as one line for people:
/// `<version> <position> <created_at> <type> <payload>`, or with the stream
/// (`<position> <stream>@<version> …`) where events of many streams mix.
pub struct EventLine<'a> {
    event: &'a RecordedEvent,
    with_stream: bool,
}

impl<'a> EventLine<'a> {
    /// The line of an event read from a known stream.
    pub fn in_stream(event: &'a RecordedEvent) -> Self {
        Self {
            event,
            with_stream: false,
        }
    }

    /// The line of an event from the global log, naming its stream.
    pub fn in_log(event: &'a RecordedEvent) -> Self {
        Self {
            event,
            with_stream: true,
        }
    }
}

impl fmt::Display for EventLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.event;
        if self.with_stream {
            write!(f, "{} {}@{}", e.position, e.stream, e.stream_version)?;
        } else {
            write!(f, "{} {}", e.stream_version, e.position)?;
        }
        write!(
            f,
            " {} {} {}",
            e.created_at,
            e.event_type,
            PayloadText(&e.data, e.external.as_ref())
        )
    }
}

/// A payload that may be offloaded, for people: as [`Payload`], or
/// `<N bytes at URI>` when it was not fetched.
struct PayloadText<'a>(&'a [u8], Option<&'a PayloadReference>);

impl fmt::Display for PayloadText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(r) if unfetched(self.0, self.1) => {
                write!(f, "<{} bytes at {}>", r.original_size, r.uri)
            }
            _ => Payload(self.0).fmt(f),
        }
    }
}

/// A payload for people: its text with control characters escaped, so one
/// event stays one line; `<N bytes binary>` when it is not UTF-8.
pub struct Payload<'a>(pub &'a [u8]);

impl fmt::Display for Payload<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok("") => f.write_str("<empty>"),
            Ok(text) => {
                for c in text.chars() {
                    if c.is_control() {
                        write!(f, "{}", c.escape_default())?;
                    } else {
                        write!(f, "{c}")?;
                    }
                }
                Ok(())
            }
            Err(_) => write!(f, "<{} bytes binary>", self.0.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use wharf_core::{Position, StreamName, Timestamp};

    use super::*;

    fn event(data: &'static [u8]) -> RecordedEvent {
        RecordedEvent {
            id: uuid::Uuid::nil(),
            stream: StreamName::new("order-1").unwrap(),
            event_type: "Placed".into(),
            data: Bytes::from_static(data),
            metadata: [("k".to_owned(), "v".to_owned())].into(),
            content_type: "application/json".into(),
            stream_version: 2,
            position: Position(9),
            created_at: Timestamp::from_micros(1_763_719_200_000_001),
            external: None,
        }
    }

    #[test]
    fn utf8_payload_is_data_and_binary_is_data_base64() {
        let text = event_json(&event(br#"{"a":1}"#));
        assert_eq!(text["data"], r#"{"a":1}"#);
        assert!(text.get("data_base64").is_none());
        let binary = event_json(&event(&[0xff, 0x00, 0x10]));
        assert_eq!(binary["data_base64"], "/wAQ");
        assert!(binary.get("data").is_none());
    }

    #[test]
    fn event_json_has_every_contract_field() {
        let v = event_json(&event(b"x"));
        assert_eq!(v["id"], "00000000-0000-0000-0000-000000000000");
        assert_eq!(v["stream"], "order-1");
        assert_eq!(v["type"], "Placed");
        assert_eq!(v["stream_version"], 2);
        assert_eq!(v["position"], 9);
        assert_eq!(v["created_at"], "2025-11-21T10:00:00.000001Z");
        assert_eq!(v["content_type"], "application/json");
        assert_eq!(v["metadata"]["k"], "v");
    }

    #[test]
    fn human_line_keeps_one_event_on_one_line() {
        let e = event(b"two\nlines");
        assert_eq!(
            EventLine::in_stream(&e).to_string(),
            r"2 9 2025-11-21T10:00:00.000001Z Placed two\nlines"
        );
        assert_eq!(
            EventLine::in_log(&e).to_string(),
            r"9 order-1@2 2025-11-21T10:00:00.000001Z Placed two\nlines"
        );
    }

    fn delivery(data: &'static [u8]) -> Delivery {
        Delivery {
            message_id: uuid::Uuid::nil(),
            receipt: wharf_core::Receipt::new("-rcpt"),
            data: Bytes::from_static(data),
            metadata: [("k".to_owned(), "v".to_owned())].into(),
            content_type: "text/plain".into(),
            delivery_attempt: 2,
            enqueued_at: Timestamp::from_micros(1_763_719_200_000_001),
            external: None,
        }
    }

    #[test]
    fn delivery_json_has_every_contract_field() {
        let v = delivery_json(&delivery(b"hello"));
        assert_eq!(
            v,
            json!({
                "message_id": "00000000-0000-0000-0000-000000000000",
                "receipt": "-rcpt",
                "delivery_attempt": 2,
                "enqueued_at": "2025-11-21T10:00:00.000001Z",
                "content_type": "text/plain",
                "metadata": {"k": "v"},
                "data": "hello",
            })
        );
        let binary = delivery_json(&delivery(&[0xff, 0x00, 0x10]));
        assert_eq!(binary["data_base64"], "/wAQ");
        assert!(binary.get("data").is_none());
    }

    #[test]
    fn delivery_line_starts_with_the_receipt() {
        assert_eq!(
            DeliveryLine(&delivery(b"a\tb")).to_string(),
            r"-rcpt 00000000-0000-0000-0000-000000000000 2 2025-11-21T10:00:00.000001Z a\tb"
        );
    }

    fn reference(size: u64) -> PayloadReference {
        PayloadReference {
            storage_type: wharf_core::PayloadStorageType::Filesystem,
            uri: format!("file:///p/{}.bin", "ab".repeat(32)),
            content_hash: wharf_core::ContentHash([0xab; 32]),
            original_size: size,
            stored_at: Timestamp::from_micros(1_763_719_200_000_001),
        }
    }

    #[test]
    fn an_offloaded_payload_shows_its_reference_beside_the_data() {
        let mut e = event(b"hello");
        e.external = Some(reference(5));
        let v = event_json(&e);
        assert_eq!(v["data"], "hello");
        assert_eq!(
            v["external"],
            json!({
                "storage_type": "filesystem",
                "uri": format!("file:///p/{}.bin", "ab".repeat(32)),
                "content_hash": "ab".repeat(32),
                "original_size": 5,
                "stored_at": "2025-11-21T10:00:00.000001Z",
            })
        );
    }

    #[test]
    fn an_unfetched_payload_has_its_reference_and_no_data() {
        let mut d = delivery(b"");
        d.external = Some(reference(5 << 20));
        let v = delivery_json(&d);
        assert!(
            v.get("data").is_none() && v.get("data_base64").is_none(),
            "{v}"
        );
        assert_eq!(v["external"]["original_size"], 5 << 20);
        let line = DeliveryLine(&d).to_string();
        assert!(
            line.ends_with(&format!(
                "<5242880 bytes at file:///p/{}.bin>",
                "ab".repeat(32)
            )),
            "{line}"
        );
    }

    #[test]
    fn binary_and_empty_payloads_are_described() {
        assert_eq!(Payload(&[0xff; 5]).to_string(), "<5 bytes binary>");
        assert_eq!(Payload(b"").to_string(), "<empty>");
    }
}
