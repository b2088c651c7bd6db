//! [`wharf_core::Error`] ⇄ gRPC [`Status`], with a machine-readable detail.
//!
//! Every error carries a `google.rpc.ErrorInfo` in domain `wharf` whose
//! `reason` names the meaning and whose `metadata` holds the facts, so a
//! client in any language can branch on it without parsing messages.
//!
//! A payload that could not be retrieved maps by its failure:
//!
//! | error | code | reason |
//! |---|---|---|
//! | [`Error::IntegrityFailed`] | `DATA_LOSS` | `PAYLOAD_INTEGRITY_FAILED` |
//! | `PayloadRetrievalFailed`, not found | `NOT_FOUND` | `PAYLOAD_NOT_FOUND` |
//! | `PayloadRetrievalFailed`, access denied | `PERMISSION_DENIED` | `PAYLOAD_ACCESS_DENIED` |
//! | `PayloadRetrievalFailed`, timeout | `UNAVAILABLE` | `PAYLOAD_TIMEOUT` |
//! | `PayloadRetrievalFailed`, unavailable | `UNAVAILABLE` | `PAYLOAD_UNAVAILABLE` |
//!
//! with the reference's facts in the `ErrorInfo` metadata (`storage_type`,
//! `uri`, `content_hash`, `original_size`, `error`, `failure`) and, as a
//! second detail, a [`v1::PayloadRetrievalFailedDetails`] (see
//! [`payload_details`]).

use std::collections::HashMap;

use prost::Message as _;
use prost_types::Any;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use wharf_core::{
    Error, NameError, PayloadFailure, PayloadRetrievalFailedDetails, QueueName, StreamName,
};

use crate::convert;
use crate::v1;

/// The `ErrorInfo.domain` of Wharf's errors.
pub const DOMAIN: &str = "wharf";

/// Machine-readable reasons, as sent in `ErrorInfo.reason`.
pub mod reason {
    /// A name broke a naming rule.
    pub const INVALID_NAME: &str = "INVALID_NAME";
    /// An argument was out of bounds or malformed.
    pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
    /// The stream's version did not match; metadata `stream`, `expected`, `actual`.
    pub const WRONG_EXPECTED_VERSION: &str = "WRONG_EXPECTED_VERSION";
    /// An event id is used elsewhere; metadata `id`.
    pub const EVENT_ID_CONFLICT: &str = "EVENT_ID_CONFLICT";
    /// The stream does not exist; metadata `stream`.
    pub const STREAM_NOT_FOUND: &str = "STREAM_NOT_FOUND";
    /// The queue does not exist; metadata `queue`.
    pub const QUEUE_NOT_FOUND: &str = "QUEUE_NOT_FOUND";
    /// The queue exists with other settings; metadata `queue`.
    pub const QUEUE_EXISTS: &str = "QUEUE_EXISTS";
    /// The receipt is no longer the message's current delivery; metadata
    /// `queue`, `message_id`, `reason`.
    pub const LEASE_LOST: &str = "LEASE_LOST";
    /// Try again later.
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
    /// A storage failure.
    pub const STORAGE: &str = "STORAGE";
    /// A stored payload does not match its reference (hash or size).
    pub const PAYLOAD_INTEGRITY_FAILED: &str = "PAYLOAD_INTEGRITY_FAILED";
    /// No object under a reference's key.
    pub const PAYLOAD_NOT_FOUND: &str = "PAYLOAD_NOT_FOUND";
    /// The payload store refused the server's credentials.
    pub const PAYLOAD_ACCESS_DENIED: &str = "PAYLOAD_ACCESS_DENIED";
    /// The payload store did not answer in time, after retries.
    pub const PAYLOAD_TIMEOUT: &str = "PAYLOAD_TIMEOUT";
    /// The payload store failed otherwise, after retries.
    pub const PAYLOAD_UNAVAILABLE: &str = "PAYLOAD_UNAVAILABLE";
    /// The server runs without payload offloading (`payload_offload.enabled`).
    pub const PAYLOAD_OFFLOAD_DISABLED: &str = "PAYLOAD_OFFLOAD_DISABLED";
}

/// The `Any.type_url` of the [`v1::PayloadRetrievalFailedDetails`] detail.
pub const PAYLOAD_DETAILS_TYPE_URL: &str =
    "type.googleapis.com/wharf.v1.PayloadRetrievalFailedDetails";

/// The code and reason of a payload retrieval failure.
fn payload_failure_code(failure: PayloadFailure) -> (Code, &'static str) {
    match failure {
        PayloadFailure::IntegrityFailed => (Code::DataLoss, reason::PAYLOAD_INTEGRITY_FAILED),
        PayloadFailure::NotFound => (Code::NotFound, reason::PAYLOAD_NOT_FOUND),
        PayloadFailure::AccessDenied => (Code::PermissionDenied, reason::PAYLOAD_ACCESS_DENIED),
        PayloadFailure::Timeout => (Code::Unavailable, reason::PAYLOAD_TIMEOUT),
        PayloadFailure::Unavailable => (Code::Unavailable, reason::PAYLOAD_UNAVAILABLE),
    }
}

/// The failure a `PAYLOAD_*` reason stands for.
fn payload_failure_of(why: &str) -> Option<PayloadFailure> {
    Some(match why {
        reason::PAYLOAD_INTEGRITY_FAILED => PayloadFailure::IntegrityFailed,
        reason::PAYLOAD_NOT_FOUND => PayloadFailure::NotFound,
        reason::PAYLOAD_ACCESS_DENIED => PayloadFailure::AccessDenied,
        reason::PAYLOAD_TIMEOUT => PayloadFailure::Timeout,
        reason::PAYLOAD_UNAVAILABLE => PayloadFailure::Unavailable,
        _ => return None,
    })
}

/// The status of a payload that could not be retrieved: `ErrorInfo` with
/// the facts as metadata, then the typed details.
fn payload_status(
    error: &Error,
    failure: PayloadFailure,
    details: &PayloadRetrievalFailedDetails,
) -> Status {
    let (code, why) = payload_failure_code(failure);
    let metadata = HashMap::from([
        ("storage_type".to_owned(), details.storage_type.to_string()),
        ("uri".to_owned(), details.uri.clone()),
        ("content_hash".to_owned(), details.content_hash.to_hex()),
        (
            "original_size".to_owned(),
            details.original_size.to_string(),
        ),
        ("error".to_owned(), details.error.clone()),
        ("failure".to_owned(), failure.as_str().to_owned()),
    ]);
    let info = tonic_types::pb::ErrorInfo {
        reason: why.to_owned(),
        domain: DOMAIN.to_owned(),
        metadata,
    };
    let message = wire_message(error);
    let status = tonic_types::pb::Status {
        code: code as i32,
        message: message.clone(),
        details: vec![
            Any {
                type_url: tonic_types::ErrorInfo::TYPE_URL.to_owned(),
                value: info.encode_to_vec(),
            },
            Any {
                type_url: PAYLOAD_DETAILS_TYPE_URL.to_owned(),
                value: convert::retrieval_failed_details(details, failure.as_str()).encode_to_vec(),
            },
        ],
    };
    Status::with_details(code, message, status.encode_to_vec().into())
}

/// The [`v1::PayloadRetrievalFailedDetails`] a status carries, if any.
pub fn payload_details(status: &Status) -> Option<v1::PayloadRetrievalFailedDetails> {
    let rpc = tonic_types::pb::Status::decode(status.details()).ok()?;
    rpc.details
        .iter()
        .find(|any| any.type_url == PAYLOAD_DETAILS_TYPE_URL)
        .and_then(|any| v1::PayloadRetrievalFailedDetails::decode(any.value.as_slice()).ok())
}

/// The status of a payload call on a server whose payload offloading is
/// off: `FAILED_PRECONDITION`, reason `PAYLOAD_OFFLOAD_DISABLED`.
pub fn payload_offload_disabled() -> Status {
    let details = ErrorDetails::with_error_info(
        reason::PAYLOAD_OFFLOAD_DISABLED,
        DOMAIN,
        HashMap::from([("key".to_owned(), "payload_offload.enabled".to_owned())]),
    );
    Status::with_error_details(
        Code::FailedPrecondition,
        "payload offloading is off on this server: payload_offload.enabled is false",
        details,
    )
}

/// The [`Status`] a domain error is sent as.
pub fn to_status(error: &Error) -> Status {
    if let Some((failure, details)) = error.payload_details() {
        return payload_status(error, failure, details);
    }
    let mut meta = HashMap::new();
    let (code, why) = match error {
        Error::InvalidName { kind, .. } => {
            meta.insert("kind".to_owned(), (*kind).to_owned());
            (Code::InvalidArgument, reason::INVALID_NAME)
        }
        Error::InvalidArgument(_) => (Code::InvalidArgument, reason::INVALID_ARGUMENT),
        Error::WrongExpectedVersion {
            stream,
            expected,
            actual,
        } => {
            meta.insert("stream".to_owned(), stream.to_string());
            meta.insert("expected".to_owned(), expected.clone());
            meta.insert(
                "actual".to_owned(),
                actual.map_or_else(|| "no-stream".to_owned(), |v| v.to_string()),
            );
            (Code::FailedPrecondition, reason::WRONG_EXPECTED_VERSION)
        }
        Error::EventIdConflict { id } => {
            meta.insert("id".to_owned(), id.to_string());
            (Code::AlreadyExists, reason::EVENT_ID_CONFLICT)
        }
        Error::StreamNotFound(stream) => {
            meta.insert("stream".to_owned(), stream.to_string());
            (Code::NotFound, reason::STREAM_NOT_FOUND)
        }
        Error::QueueNotFound(queue) => {
            meta.insert("queue".to_owned(), queue.to_string());
            (Code::NotFound, reason::QUEUE_NOT_FOUND)
        }
        Error::QueueExists { queue } => {
            meta.insert("queue".to_owned(), queue.to_string());
            (Code::AlreadyExists, reason::QUEUE_EXISTS)
        }
        Error::LeaseLost {
            queue,
            message_id,
            reason: why,
        } => {
            meta.insert("queue".to_owned(), queue.to_string());
            meta.insert("message_id".to_owned(), message_id.to_string());
            meta.insert("reason".to_owned(), why.clone());
            (Code::FailedPrecondition, reason::LEASE_LOST)
        }
        Error::Unavailable(_) | Error::DataDirLocked { .. } => {
            (Code::Unavailable, reason::UNAVAILABLE)
        }
        _ => (Code::Internal, reason::STORAGE),
    };
    let details = ErrorDetails::with_error_info(why, DOMAIN, meta);
    Status::with_error_details(code, wire_message(error), details)
}

/// The status message: variants that wrap a message send it bare, so the
/// error rebuilt by [`from_status`] displays exactly as the original.
fn wire_message(error: &Error) -> String {
    match error {
        Error::InvalidArgument(m) | Error::Unavailable(m) | Error::Storage(m) => m.clone(),
        other => other.to_string(),
    }
}

/// The domain error a [`Status`] stands for. Statuses without Wharf's
/// detail (from a proxy, or the transport) map by their code.
pub fn from_status(status: &Status) -> Error {
    let message = status.message().to_owned();
    let details = status.get_error_details();
    let Some(info) = details.error_info().filter(|i| i.domain == DOMAIN) else {
        // A status the client library made from a transport error (the
        // connection reset, the server going away) carries that error as its
        // source; whatever its code, the server is not there to answer.
        if std::error::Error::source(status).is_some() {
            return Error::Unavailable(message);
        }
        return by_code(status.code(), message);
    };
    let get = |k: &str| info.metadata.get(k).cloned().unwrap_or_default();
    let stream = || StreamName::new(get("stream"));
    let queue = || QueueName::new(get("queue"));
    if let Some(failure) = payload_failure_of(&info.reason) {
        return payload_error(status, failure, &get).unwrap_or(Error::Storage(message));
    }
    match info.reason.as_str() {
        reason::PAYLOAD_OFFLOAD_DISABLED => Error::InvalidArgument(message),
        reason::INVALID_NAME => Error::InvalidArgument(message),
        reason::UNAVAILABLE => Error::Unavailable(message),
        reason::STORAGE => Error::Storage(message),
        reason::INVALID_ARGUMENT => Error::InvalidArgument(message),
        reason::WRONG_EXPECTED_VERSION => match stream() {
            Ok(stream) => Error::WrongExpectedVersion {
                stream,
                expected: get("expected"),
                actual: get("actual").parse().ok(),
            },
            Err(_) => Error::Storage(message),
        },
        reason::EVENT_ID_CONFLICT => match get("id").parse() {
            Ok(id) => Error::EventIdConflict { id },
            Err(_) => Error::Storage(message),
        },
        reason::STREAM_NOT_FOUND => match stream() {
            Ok(stream) => Error::StreamNotFound(stream),
            Err(_) => Error::Storage(message),
        },
        reason::QUEUE_NOT_FOUND => match queue() {
            Ok(queue) => Error::QueueNotFound(queue),
            Err(_) => Error::Storage(message),
        },
        reason::QUEUE_EXISTS => match queue() {
            Ok(queue) => Error::QueueExists { queue },
            Err(_) => Error::Storage(message),
        },
        reason::LEASE_LOST => match (queue(), get("message_id").parse()) {
            (Ok(queue), Ok(message_id)) => Error::LeaseLost {
                queue,
                message_id,
                reason: get("reason"),
            },
            _ => Error::Storage(message),
        },
        _ => by_code(status.code(), message),
    }
}

/// The retrieval error of a `PAYLOAD_*` status: from the typed detail, or
/// from the `ErrorInfo` metadata when a proxy dropped it.
fn payload_error(
    status: &Status,
    failure: PayloadFailure,
    get: &dyn Fn(&str) -> String,
) -> Option<Error> {
    let details = match payload_details(status) {
        Some(wire) => convert::payload_retrieval_failed_details(wire).ok()?,
        None => {
            let storage_type = match get("storage_type").as_str() {
                "filesystem" => wharf_core::PayloadStorageType::Filesystem,
                "s3" => wharf_core::PayloadStorageType::S3,
                "gcs" => wharf_core::PayloadStorageType::Gcs,
                "memory" => wharf_core::PayloadStorageType::Memory,
                _ => return None,
            };
            PayloadRetrievalFailedDetails {
                storage_type,
                uri: get("uri"),
                content_hash: get("content_hash").parse().ok()?,
                original_size: get("original_size").parse().ok()?,
                error: get("error"),
            }
        }
    };
    Some(Error::payload_retrieval(failure, details))
}

fn by_code(code: Code, message: String) -> Error {
    match code {
        Code::InvalidArgument | Code::OutOfRange => Error::InvalidArgument(message),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted => {
            Error::Unavailable(message)
        }
        _ => Error::Storage(message),
    }
}

/// A [`Status`] for a request field that failed to parse; names the field.
pub fn invalid_field(field: &str, problem: impl std::fmt::Display) -> Status {
    to_status(&Error::InvalidArgument(format!("{field}: {problem}")))
}

/// A [`Status`] for an invalid stream name.
pub fn invalid_stream_name(source: NameError) -> Status {
    to_status(&Error::invalid_stream_name(source))
}

/// A [`Status`] for an invalid queue name.
pub fn invalid_queue_name(source: NameError) -> Status {
    to_status(&Error::invalid_queue_name(source))
}

/// A domain error as a `google.rpc.Status` message, for errors carried
/// inside a response (the per-receipt results of an acknowledge).
pub fn to_rpc_status(error: &Error) -> tonic_types::pb::Status {
    let status = to_status(error);
    // `to_status` always attaches details, which are exactly an encoded
    // `google.rpc.Status`; the fallback keeps code and message regardless.
    tonic_types::pb::Status::decode(status.details()).unwrap_or_else(|_| tonic_types::pb::Status {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: Vec::new(),
    })
}

/// The domain error a `google.rpc.Status` message stands for.
pub fn from_rpc_status(status: &tonic_types::pb::Status) -> Error {
    let rebuilt = Status::with_details(
        Code::from_i32(status.code),
        status.message.clone(),
        status.encode_to_vec().into(),
    );
    from_status(&rebuilt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_expected_version_round_trips_with_its_facts() {
        let e = Error::WrongExpectedVersion {
            stream: "s".parse().unwrap(),
            expected: "3".into(),
            actual: Some(7),
        };
        let status = to_status(&e);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(from_status(&status), e);
    }

    #[test]
    fn missing_stream_actual_round_trips_as_none() {
        let e = Error::WrongExpectedVersion {
            stream: "s".parse().unwrap(),
            expected: "exists".into(),
            actual: None,
        };
        assert_eq!(from_status(&to_status(&e)), e);
    }

    #[test]
    fn not_found_and_conflict_keep_their_meaning() {
        let nf = Error::StreamNotFound("x".parse().unwrap());
        assert_eq!(to_status(&nf).code(), Code::NotFound);
        assert_eq!(from_status(&to_status(&nf)), nf);
        let c = Error::EventIdConflict {
            id: uuid::Uuid::nil(),
        };
        assert_eq!(from_status(&to_status(&c)), c);
    }

    #[test]
    fn message_carrying_errors_display_the_same_after_a_round_trip() {
        let e = Error::InvalidArgument("batch has 11 events; the limit is 10".into());
        assert_eq!(from_status(&to_status(&e)).to_string(), e.to_string());
    }

    #[test]
    fn queue_not_found_round_trips_as_not_found_naming_the_queue() {
        let e = Error::QueueNotFound("jobs".parse().unwrap());
        let status = to_status(&e);
        assert_eq!(status.code(), Code::NotFound);
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, reason::QUEUE_NOT_FOUND);
        assert_eq!(info.metadata["queue"], "jobs");
        assert_eq!(from_status(&status), e);
    }

    #[test]
    fn queue_exists_round_trips_as_already_exists() {
        let e = Error::QueueExists {
            queue: "jobs".parse().unwrap(),
        };
        let status = to_status(&e);
        assert_eq!(status.code(), Code::AlreadyExists);
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            reason::QUEUE_EXISTS
        );
        assert_eq!(from_status(&status), e);
    }

    #[test]
    fn lease_lost_round_trips_with_queue_message_and_reason() {
        let e = Error::LeaseLost {
            queue: "jobs".parse().unwrap(),
            message_id: uuid::Uuid::now_v7(),
            reason: "delivered again".into(),
        };
        let status = to_status(&e);
        assert_eq!(status.code(), Code::FailedPrecondition);
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, reason::LEASE_LOST);
        assert_eq!(info.metadata["reason"], "delivered again");
        assert_eq!(from_status(&status), e);
    }

    #[test]
    fn invalid_queue_names_say_queue_and_the_rule() {
        let status = invalid_queue_name(NameError::Empty);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with("invalid queue name"),
            "{}",
            status.message()
        );
        let details = status.get_error_details();
        assert_eq!(details.error_info().unwrap().metadata["kind"], "queue");
    }

    #[test]
    fn errors_inside_responses_round_trip_through_rpc_status() {
        let e = Error::LeaseLost {
            queue: "jobs".parse().unwrap(),
            message_id: uuid::Uuid::nil(),
            reason: "acknowledged".into(),
        };
        let rpc = to_rpc_status(&e);
        assert_eq!(rpc.code, Code::FailedPrecondition as i32);
        assert_eq!(from_rpc_status(&rpc), e);
        let bad = Error::InvalidArgument("malformed receipt `x`".into());
        assert_eq!(from_rpc_status(&to_rpc_status(&bad)), bad);
    }

    fn retrieval_details() -> PayloadRetrievalFailedDetails {
        PayloadRetrievalFailedDetails {
            storage_type: wharf_core::PayloadStorageType::Filesystem,
            uri: format!("file:///p/{}.bin", "ab".repeat(32)),
            content_hash: wharf_core::ContentHash([0xab; 32]),
            original_size: 5 << 20,
            error: "sha-256 mismatch".into(),
        }
    }

    #[test]
    fn payload_failures_map_to_their_codes_and_round_trip() {
        for (failure, code, why) in [
            (
                PayloadFailure::IntegrityFailed,
                Code::DataLoss,
                reason::PAYLOAD_INTEGRITY_FAILED,
            ),
            (
                PayloadFailure::NotFound,
                Code::NotFound,
                reason::PAYLOAD_NOT_FOUND,
            ),
            (
                PayloadFailure::AccessDenied,
                Code::PermissionDenied,
                reason::PAYLOAD_ACCESS_DENIED,
            ),
            (
                PayloadFailure::Timeout,
                Code::Unavailable,
                reason::PAYLOAD_TIMEOUT,
            ),
            (
                PayloadFailure::Unavailable,
                Code::Unavailable,
                reason::PAYLOAD_UNAVAILABLE,
            ),
        ] {
            let e = Error::payload_retrieval(failure, retrieval_details());
            let status = to_status(&e);
            assert_eq!(status.code(), code, "{failure:?}");
            let details = status.get_error_details();
            let info = details.error_info().expect("ErrorInfo");
            assert_eq!(info.reason, why);
            assert_eq!(info.metadata["content_hash"], "ab".repeat(32));
            assert_eq!(info.metadata["uri"], retrieval_details().uri);
            assert_eq!(info.metadata["original_size"], (5 << 20).to_string());
            assert_eq!(from_status(&status), e, "{failure:?}");
        }
    }

    #[test]
    fn payload_failures_carry_the_typed_details() {
        let e = Error::payload_retrieval(PayloadFailure::IntegrityFailed, retrieval_details());
        let wire = payload_details(&to_status(&e)).expect("typed detail");
        assert_eq!(wire.uri, retrieval_details().uri);
        assert_eq!(wire.content_hash.as_ref(), &[0xab; 32]);
        assert_eq!(wire.original_size, 5 << 20);
        assert_eq!(wire.failure, "integrity_failed");
        assert_eq!(wire.error, "sha-256 mismatch");
    }

    #[test]
    fn payload_failures_rebuild_from_error_info_alone() {
        let e = Error::payload_retrieval(PayloadFailure::NotFound, retrieval_details());
        let full = to_status(&e);
        // As a proxy that keeps only the standard details would pass it on.
        let info = full.get_error_details().error_info().cloned().unwrap();
        let stripped = Status::with_error_details(
            full.code(),
            full.message(),
            ErrorDetails::with_error_info(info.reason, info.domain, info.metadata),
        );
        assert!(payload_details(&stripped).is_none());
        assert_eq!(from_status(&stripped), e);
    }

    #[test]
    fn offloading_disabled_is_a_failed_precondition_naming_the_key() {
        let status = payload_offload_disabled();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(
            status.message().contains("payload_offload.enabled"),
            "{}",
            status.message()
        );
        assert!(
            matches!(from_status(&status), Error::InvalidArgument(m) if m.contains("payload_offload.enabled"))
        );
    }

    #[test]
    fn plain_transport_statuses_map_by_code() {
        let e = from_status(&Status::unavailable("connection refused"));
        assert!(matches!(e, Error::Unavailable(m) if m == "connection refused"));
    }
}
