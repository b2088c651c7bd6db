//! [`wharf_core::Error`] ⇄ gRPC [`Status`], with a machine-readable detail.
//!
//! Every error carries a `google.rpc.ErrorInfo` in domain `wharf` whose
//! `reason` names the meaning and whose `metadata` holds the facts, so a
//! client in any language can branch on it without parsing messages.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use wharf_core::{Error, NameError, StreamName};

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
    fn plain_transport_statuses_map_by_code() {
        let e = from_status(&Status::unavailable("connection refused"));
        assert!(matches!(e, Error::Unavailable(m) if m == "connection refused"));
    }
}
