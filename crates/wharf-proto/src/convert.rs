//! Conversions between the generated messages and the domain types.
//!
//! Durations travel as `uint64` microseconds; a domain duration is rounded
//! *up* to the next microsecond, so a bound check on the far side never
//! passes a value that was out of bounds on this side.

use std::time::Duration;

use bytes::Bytes;
use tonic::Status;
use uuid::Uuid;
use wharf_core::{
    AppendOutcome, AppendResult, ContentHash, Delivery, Enqueued, ExpectedVersion, NewEvent,
    NewMessage, PayloadReference, PayloadRetrievalFailedDetails, PayloadStorageType, Position,
    QueueInfo, QueueName, QueueSettings, QueueStats, Receipt, RecordedEvent, StreamName, Timestamp,
};

use crate::status::{invalid_field, invalid_queue_name, invalid_stream_name};
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
        external: None,
    })
}

impl From<RecordedEvent> for v1::RecordedEvent {
    /// An event whose offloaded payload was not fetched (empty `data`, a
    /// reference to a non-empty payload) goes out as `external`; one whose
    /// payload was fetched as `data` with `resolved_from`.
    fn from(e: RecordedEvent) -> Self {
        use v1::recorded_event::Payload;
        let (payload, resolved_from) = match WirePayload::of(e.data, e.external) {
            WirePayload::Data(data, from) => (Payload::Data(data), from),
            WirePayload::External(reference) => (Payload::External(reference), None),
        };
        Self {
            id: e.id.as_bytes().to_vec().into(),
            stream: e.stream.into_string(),
            r#type: e.event_type,
            payload: Some(payload),
            metadata: e.metadata,
            content_type: e.content_type,
            stream_version: e.stream_version,
            position: e.position.0,
            created_at_micros: e.created_at.as_micros(),
            resolved_from,
        }
    }
}

/// A recorded event from the wire: `external` is the reference whether the
/// payload came fetched (`data` with `resolved_from`) or not (`external`,
/// with empty `data`).
///
/// # Errors
/// `INVALID_ARGUMENT` when the server sent a malformed id, stream name or
/// reference.
pub fn recorded_event(e: v1::RecordedEvent) -> Result<RecordedEvent, Status> {
    use v1::recorded_event::Payload;
    let (data, external) = match e.payload {
        None => (Bytes::new(), None),
        Some(Payload::Data(data)) => (data, e.resolved_from),
        Some(Payload::External(reference)) => (Bytes::new(), Some(reference)),
    };
    Ok(RecordedEvent {
        id: Uuid::from_slice(&e.id).map_err(|_| invalid_field("id", "must be 16 bytes"))?,
        stream: stream_name(e.stream)?,
        event_type: e.r#type,
        data,
        metadata: e.metadata,
        content_type: e.content_type,
        stream_version: e.stream_version,
        position: Position(e.position),
        created_at: Timestamp::from_micros(e.created_at_micros),
        external: external
            .map(|r| payload_reference("external", r))
            .transpose()?,
    })
}

/// How a payload travels in a `RecordedEvent` or `Delivery`.
enum WirePayload {
    /// The bytes, and where they were stored when they were offloaded.
    Data(Bytes, Option<v1::PayloadReference>),
    /// The reference alone: the payload was not fetched.
    External(v1::PayloadReference),
}

impl WirePayload {
    fn of(data: Bytes, external: Option<PayloadReference>) -> Self {
        match external {
            // An offloaded payload is never empty (it was over a threshold
            // of at least one byte), so empty data means "not fetched".
            Some(reference) if data.is_empty() && reference.original_size > 0 => {
                Self::External(reference.into())
            }
            reference => Self::Data(data, reference.map(Into::into)),
        }
    }
}

impl From<PayloadStorageType> for v1::PayloadStorageType {
    fn from(t: PayloadStorageType) -> Self {
        match t {
            PayloadStorageType::Filesystem => Self::Filesystem,
            PayloadStorageType::Gcs => Self::Gcs,
            PayloadStorageType::S3 => Self::S3,
            PayloadStorageType::Memory => Self::Memory,
        }
    }
}

/// A storage type from the wire (the enum's number).
///
/// # Errors
/// `INVALID_ARGUMENT` naming `field` for an unspecified or unknown type.
pub fn storage_type(field: &str, value: i32) -> Result<PayloadStorageType, Status> {
    match v1::PayloadStorageType::try_from(value) {
        Ok(v1::PayloadStorageType::Filesystem) => Ok(PayloadStorageType::Filesystem),
        Ok(v1::PayloadStorageType::Gcs) => Ok(PayloadStorageType::Gcs),
        Ok(v1::PayloadStorageType::S3) => Ok(PayloadStorageType::S3),
        Ok(v1::PayloadStorageType::Memory) => Ok(PayloadStorageType::Memory),
        Ok(v1::PayloadStorageType::Unspecified) => Err(invalid_field(field, "must be set")),
        Err(_) => Err(invalid_field(
            field,
            format!("{value} is not a known storage type"),
        )),
    }
}

/// A content hash from the wire.
///
/// # Errors
/// `INVALID_ARGUMENT` naming `field` unless it is 32 bytes.
pub fn content_hash(field: &str, bytes: &[u8]) -> Result<ContentHash, Status> {
    ContentHash::from_slice(bytes).map_err(|_| {
        invalid_field(
            field,
            format!("must be 32 bytes of SHA-256, got {}", bytes.len()),
        )
    })
}

impl From<PayloadReference> for v1::PayloadReference {
    fn from(r: PayloadReference) -> Self {
        Self {
            storage_type: v1::PayloadStorageType::from(r.storage_type).into(),
            uri: r.uri,
            content_hash: r.content_hash.0.to_vec().into(),
            original_size: r.original_size,
            stored_at_micros: r.stored_at.as_micros(),
        }
    }
}

/// A payload reference from the wire; `field` names it in errors.
///
/// # Errors
/// `INVALID_ARGUMENT` for an unknown storage type, an empty URI or a hash
/// that is not 32 bytes.
pub fn payload_reference(field: &str, r: v1::PayloadReference) -> Result<PayloadReference, Status> {
    if r.uri.is_empty() {
        return Err(invalid_field(&format!("{field}.uri"), "must not be empty"));
    }
    Ok(PayloadReference {
        storage_type: storage_type(&format!("{field}.storage_type"), r.storage_type)?,
        uri: r.uri,
        content_hash: content_hash(&format!("{field}.content_hash"), &r.content_hash)?,
        original_size: r.original_size,
        stored_at: Timestamp::from_micros(r.stored_at_micros),
    })
}

/// The wire form of why a payload could not be retrieved; `failure` is a
/// [`wharf_core::PayloadFailure`] name.
pub fn retrieval_failed_details(
    details: &PayloadRetrievalFailedDetails,
    failure: &str,
) -> v1::PayloadRetrievalFailedDetails {
    v1::PayloadRetrievalFailedDetails {
        storage_type: v1::PayloadStorageType::from(details.storage_type).into(),
        uri: details.uri.clone(),
        content_hash: details.content_hash.0.to_vec().into(),
        original_size: details.original_size,
        error: details.error.clone(),
        failure: failure.to_owned(),
    }
}

/// Why a payload could not be retrieved, from the wire.
///
/// # Errors
/// `INVALID_ARGUMENT` for an unknown storage type or a malformed hash.
pub fn payload_retrieval_failed_details(
    d: v1::PayloadRetrievalFailedDetails,
) -> Result<PayloadRetrievalFailedDetails, Status> {
    Ok(PayloadRetrievalFailedDetails {
        storage_type: storage_type("storage_type", d.storage_type)?,
        uri: d.uri,
        content_hash: content_hash("content_hash", &d.content_hash)?,
        original_size: d.original_size,
        error: d.error,
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

/// A duration as wire microseconds, rounded up, saturating.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1000)).unwrap_or(u64::MAX)
}

/// A duration from wire microseconds.
pub fn duration(micros: u64) -> Duration {
    Duration::from_micros(micros)
}

/// Parses a queue name from the wire.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the broken rule.
pub fn queue_name(name: String) -> Result<QueueName, Status> {
    QueueName::new(name).map_err(invalid_queue_name)
}

fn message_id(field: &str, bytes: &[u8]) -> Result<Uuid, Status> {
    Uuid::from_slice(bytes)
        .map_err(|_| invalid_field(field, format!("must be 16 bytes, got {}", bytes.len())))
}

impl From<&QueueSettings> for v1::QueueSettings {
    fn from(s: &QueueSettings) -> Self {
        Self {
            max_delivery_attempts: Some(s.max_delivery_attempts),
            dead_letter_queue: Some(
                s.dead_letter_queue
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            ),
            visibility_timeout_micros: Some(micros(s.visibility_timeout)),
        }
    }
}

/// Settings from the wire; each absent field takes its value from
/// `defaults`, and an empty `dead_letter_queue` means none. Bounds are left
/// to [`QueueSettings::validate`].
///
/// # Errors
/// `INVALID_ARGUMENT` for an invalid dead-letter queue name.
pub fn queue_settings(
    s: Option<v1::QueueSettings>,
    defaults: &QueueSettings,
) -> Result<QueueSettings, Status> {
    let s = s.unwrap_or_default();
    let dead_letter_queue = match s.dead_letter_queue {
        None => defaults.dead_letter_queue.clone(),
        Some(name) if name.is_empty() => None,
        Some(name) => Some(queue_name(name)?),
    };
    Ok(QueueSettings {
        max_delivery_attempts: s
            .max_delivery_attempts
            .unwrap_or(defaults.max_delivery_attempts),
        dead_letter_queue,
        visibility_timeout: s
            .visibility_timeout_micros
            .map_or(defaults.visibility_timeout, duration),
    })
}

impl From<NewMessage> for v1::NewMessage {
    fn from(m: NewMessage) -> Self {
        Self {
            data: m.data,
            metadata: m.metadata,
            content_type: m.content_type,
            delay_micros: micros(m.delay),
            dedup_id: m.dedup_id,
        }
    }
}

impl From<v1::NewMessage> for NewMessage {
    fn from(m: v1::NewMessage) -> Self {
        Self {
            data: m.data,
            metadata: m.metadata,
            content_type: m.content_type,
            delay: duration(m.delay_micros),
            dedup_id: m.dedup_id,
            external: None,
        }
    }
}

impl From<Enqueued> for v1::Enqueued {
    fn from(e: Enqueued) -> Self {
        Self {
            message_id: e.message_id.as_bytes().to_vec().into(),
            duplicate: e.duplicate,
        }
    }
}

/// An enqueue result from the wire.
///
/// # Errors
/// `INVALID_ARGUMENT` when the server sent a malformed id.
pub fn enqueued(e: v1::Enqueued) -> Result<Enqueued, Status> {
    Ok(Enqueued {
        message_id: message_id("message_id", &e.message_id)?,
        duplicate: e.duplicate,
    })
}

impl From<Delivery> for v1::Delivery {
    /// As for events: an unfetched offloaded payload goes out as
    /// `external`, a fetched one as `data` with `resolved_from`.
    fn from(d: Delivery) -> Self {
        use v1::delivery::Payload;
        let (payload, resolved_from) = match WirePayload::of(d.data, d.external) {
            WirePayload::Data(data, from) => (Payload::Data(data), from),
            WirePayload::External(reference) => (Payload::External(reference), None),
        };
        Self {
            message_id: d.message_id.as_bytes().to_vec().into(),
            receipt: d.receipt.as_str().to_owned(),
            payload: Some(payload),
            metadata: d.metadata,
            content_type: d.content_type,
            delivery_attempt: d.delivery_attempt,
            enqueued_at_micros: d.enqueued_at.as_micros(),
            resolved_from,
        }
    }
}

/// A delivery from the wire; `external` is set as for [`recorded_event`].
///
/// # Errors
/// `INVALID_ARGUMENT` when the server sent a malformed id or reference.
pub fn delivery(d: v1::Delivery) -> Result<Delivery, Status> {
    use v1::delivery::Payload;
    let (data, external) = match d.payload {
        None => (Bytes::new(), None),
        Some(Payload::Data(data)) => (data, d.resolved_from),
        Some(Payload::External(reference)) => (Bytes::new(), Some(reference)),
    };
    Ok(Delivery {
        message_id: message_id("message_id", &d.message_id)?,
        receipt: Receipt::new(d.receipt),
        data,
        metadata: d.metadata,
        content_type: d.content_type,
        delivery_attempt: d.delivery_attempt,
        enqueued_at: Timestamp::from_micros(d.enqueued_at_micros),
        external: external
            .map(|r| payload_reference("external", r))
            .transpose()?,
    })
}

impl From<QueueStats> for v1::QueueStats {
    fn from(s: QueueStats) -> Self {
        Self {
            visible: s.visible,
            in_flight: s.in_flight,
            delayed: s.delayed,
            oldest_age_micros: s.oldest_age_micros,
            dead_letters: s.dead_letters,
            deliveries: s.deliveries,
            acks: s.acks,
            nacks: s.nacks,
            dead_lettered: s.dead_lettered,
        }
    }
}

impl From<v1::QueueStats> for QueueStats {
    fn from(s: v1::QueueStats) -> Self {
        Self {
            visible: s.visible,
            in_flight: s.in_flight,
            delayed: s.delayed,
            oldest_age_micros: s.oldest_age_micros,
            dead_letters: s.dead_letters,
            deliveries: s.deliveries,
            acks: s.acks,
            nacks: s.nacks,
            dead_lettered: s.dead_lettered,
        }
    }
}

impl From<QueueInfo> for v1::QueueInfo {
    fn from(q: QueueInfo) -> Self {
        Self {
            settings: Some((&q.settings).into()),
            name: q.name.into_string(),
            stats: Some(q.stats.into()),
        }
    }
}

/// A queue's description from the wire; settings the server left out read
/// as the built-in defaults.
///
/// # Errors
/// `INVALID_ARGUMENT` when the server sent an invalid name.
pub fn queue_info(q: v1::QueueInfo) -> Result<QueueInfo, Status> {
    Ok(QueueInfo {
        name: queue_name(q.name)?,
        settings: queue_settings(q.settings, &QueueSettings::default())?,
        stats: q.stats.unwrap_or_default().into(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn durations_round_up_to_whole_microseconds() {
        assert_eq!(micros(Duration::ZERO), 0);
        assert_eq!(micros(Duration::from_nanos(1)), 1);
        assert_eq!(micros(Duration::from_secs(30)), 30_000_000);
        assert_eq!(micros(Duration::MAX), u64::MAX);
        assert_eq!(
            duration(micros(Duration::from_millis(1500))),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn settings_round_trip_and_absent_fields_take_the_defaults() {
        let custom = QueueSettings {
            max_delivery_attempts: 3,
            dead_letter_queue: None,
            visibility_timeout: Duration::from_secs(90),
        };
        let defaults = QueueSettings::default();
        assert_eq!(
            queue_settings(Some((&custom).into()), &defaults).unwrap(),
            custom
        );
        assert_eq!(queue_settings(None, &defaults).unwrap(), defaults);
        let only_attempts = v1::QueueSettings {
            max_delivery_attempts: Some(9),
            ..Default::default()
        };
        let s = queue_settings(Some(only_attempts), &defaults).unwrap();
        assert_eq!(s.max_delivery_attempts, 9);
        assert_eq!(s.dead_letter_queue, defaults.dead_letter_queue);
    }

    #[test]
    fn an_invalid_dead_letter_queue_name_is_refused() {
        let bad = v1::QueueSettings {
            dead_letter_queue: Some("$dlq".into()),
            ..Default::default()
        };
        let status = queue_settings(Some(bad), &QueueSettings::default()).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("queue name"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn deliveries_round_trip() {
        let d = Delivery {
            message_id: Uuid::now_v7(),
            receipt: Receipt::new("r-1"),
            data: bytes::Bytes::from_static(b"hello"),
            metadata: [("k".to_owned(), "v".to_owned())].into(),
            content_type: "text/plain".into(),
            delivery_attempt: 2,
            enqueued_at: Timestamp::from_micros(1_700_000_000_000_000),
            external: None,
        };
        assert_eq!(delivery(d.clone().into()).unwrap(), d);
    }

    fn reference(size: u64) -> PayloadReference {
        PayloadReference {
            storage_type: PayloadStorageType::S3,
            uri: "s3://b/events/ab.bin".into(),
            content_hash: ContentHash([0xab; 32]),
            original_size: size,
            stored_at: Timestamp::from_micros(1_700_000_000_000_001),
        }
    }

    fn event(data: &'static [u8], external: Option<PayloadReference>) -> RecordedEvent {
        RecordedEvent {
            id: Uuid::now_v7(),
            stream: "s".parse().unwrap(),
            event_type: "T".into(),
            data: bytes::Bytes::from_static(data),
            metadata: [("k".to_owned(), "v".to_owned())].into(),
            content_type: "application/octet-stream".into(),
            stream_version: 3,
            position: Position(9),
            created_at: Timestamp::from_micros(1_700_000_000_000_000),
            external,
        }
    }

    #[test]
    fn payload_references_round_trip_with_every_field() {
        for storage_type in [
            PayloadStorageType::Filesystem,
            PayloadStorageType::Gcs,
            PayloadStorageType::S3,
            PayloadStorageType::Memory,
        ] {
            let r = PayloadReference {
                storage_type,
                ..reference(5 << 20)
            };
            assert_eq!(payload_reference("r", r.clone().into()).unwrap(), r);
        }
    }

    #[test]
    fn malformed_references_are_refused_naming_the_field() {
        let mut wire: v1::PayloadReference = reference(1).into();
        wire.content_hash = vec![1, 2].into();
        let status = payload_reference("external", wire).unwrap_err();
        assert!(
            status.message().contains("external.content_hash")
                && status.message().contains("got 2"),
            "{}",
            status.message()
        );
        let mut wire: v1::PayloadReference = reference(1).into();
        wire.storage_type = 0;
        let status = payload_reference("external", wire).unwrap_err();
        assert!(
            status.message().contains("external.storage_type"),
            "{}",
            status.message()
        );
        let mut wire: v1::PayloadReference = reference(1).into();
        wire.storage_type = 99;
        assert!(payload_reference("r", wire).is_err());
    }

    #[test]
    fn an_unfetched_offloaded_event_travels_as_its_reference_alone() {
        let e = event(b"", Some(reference(300_000)));
        let wire: v1::RecordedEvent = e.clone().into();
        assert!(matches!(
            &wire.payload,
            Some(v1::recorded_event::Payload::External(r)) if r.original_size == 300_000
        ));
        assert_eq!(wire.resolved_from, None);
        assert_eq!(recorded_event(wire).unwrap(), e);
    }

    #[test]
    fn a_fetched_offloaded_event_travels_as_data_with_its_source() {
        let e = event(b"the whole payload", Some(reference(17)));
        let wire: v1::RecordedEvent = e.clone().into();
        assert!(matches!(
            &wire.payload,
            Some(v1::recorded_event::Payload::Data(d)) if d.as_ref() == b"the whole payload"
        ));
        assert!(wire.resolved_from.is_some());
        assert_eq!(recorded_event(wire).unwrap(), e);
        let inline = event(b"", None);
        assert_eq!(recorded_event(inline.clone().into()).unwrap(), inline);
    }

    #[test]
    fn data_keeps_its_field_number_inside_the_oneof() {
        use prost::Message;
        // What peers from before the oneof send and expect: `bytes data`,
        // field 4 of RecordedEvent and field 3 of Delivery.
        #[derive(Clone, PartialEq, prost::Message)]
        struct OldEvent {
            #[prost(bytes = "vec", tag = "4")]
            data: Vec<u8>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct OldDelivery {
            #[prost(bytes = "vec", tag = "3")]
            data: Vec<u8>,
        }
        let old = OldEvent {
            data: b"abc".to_vec(),
        };
        let new = v1::RecordedEvent::decode(old.encode_to_vec().as_slice()).unwrap();
        assert!(matches!(
            &new.payload,
            Some(v1::recorded_event::Payload::Data(d)) if d.as_ref() == b"abc"
        ));
        assert_eq!(
            OldEvent::decode(new.encode_to_vec().as_slice()).unwrap(),
            old
        );
        let new = v1::Delivery {
            payload: Some(v1::delivery::Payload::Data(Bytes::from_static(b"xyz"))),
            ..Default::default()
        };
        let old = OldDelivery::decode(new.encode_to_vec().as_slice()).unwrap();
        assert_eq!(old.data, b"xyz");
        let back = v1::Delivery::decode(old.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.payload, new.payload);
    }

    #[test]
    fn deliveries_with_references_round_trip() {
        let d = Delivery {
            message_id: Uuid::now_v7(),
            receipt: Receipt::new("r-2"),
            data: bytes::Bytes::new(),
            metadata: BTreeMap::new(),
            content_type: "application/octet-stream".into(),
            delivery_attempt: 1,
            enqueued_at: Timestamp::from_micros(1_700_000_000_000_000),
            external: Some(reference(6 << 20)),
        };
        let wire: v1::Delivery = d.clone().into();
        assert!(matches!(
            wire.payload,
            Some(v1::delivery::Payload::External(_))
        ));
        assert_eq!(delivery(wire).unwrap(), d);
        let fetched = Delivery {
            data: bytes::Bytes::from_static(b"123456"),
            external: Some(reference(6)),
            ..d
        };
        assert_eq!(delivery(fetched.clone().into()).unwrap(), fetched);
    }

    #[test]
    fn retrieval_failure_details_round_trip() {
        let details = PayloadRetrievalFailedDetails::new(&reference(10), "hash mismatch");
        let wire = retrieval_failed_details(&details, "integrity_failed");
        assert_eq!(wire.failure, "integrity_failed");
        assert_eq!(payload_retrieval_failed_details(wire).unwrap(), details);
    }

    #[test]
    fn malformed_message_ids_are_refused() {
        let e = v1::Enqueued {
            message_id: vec![1, 2, 3].into(),
            duplicate: false,
        };
        let status = enqueued(e).unwrap_err();
        assert!(
            status.message().contains("16 bytes"),
            "{}",
            status.message()
        );
    }
}
