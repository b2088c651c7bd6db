//! [`wharf_core::Error`] ⇄ gRPC [`Status`], with a machine-readable detail.
//!
//! Every error carries a `google.rpc.ErrorInfo` in domain `wharf` whose
//! `reason` names the meaning and whose `metadata` holds the facts, so a
//! client in any language can branch on it without parsing messages.

use std::collections::HashMap;

use prost::Message as _;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use wharf_core::{Error, NameError, QueueName, StreamName};

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
}

/// The [`Status`] a domain error is sent as.
pub fn to_status(error: &Error) -> Status {
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
    match info.reason.as_str() {
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

    #[test]
    fn plain_transport_statuses_map_by_code() {
        let e = from_status(&Status::unavailable("connection refused"));
        assert!(matches!(e, Error::Unavailable(m) if m == "connection refused"));
    }
}
