//! The error of every Wharf operation, as meanings callers branch on.
//!
//! Backends keep their own detailed errors and map them here at the adapter,
//! keeping the message; the wire (gRPC status, HTTP JSON, CLI exit code) is
//! mapped from these variants in one place at each edge.

use crate::payload::{PayloadFailure, PayloadRetrievalFailedDetails};
use crate::{NameError, QueueName, StreamName};

/// A stream's current version as reported in a conflict: `None` when the
/// stream does not exist.
pub type CurrentVersion = Option<u64>;

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A name broke a naming rule.
    #[error("invalid {kind} name: {rule}")]
    InvalidName {
        /// What was being named (`stream`, `queue`).
        kind: &'static str,
        /// The rule that was broken.
        rule: NameError,
    },
    /// A request argument is out of bounds or malformed; the message names
    /// the argument and the bound.
    #[error("{0}")]
    InvalidArgument(String),
    /// The stream's version did not match the expectation; nothing was written.
    #[error(
        "wrong expected version for stream `{stream}`: expected {expected}, actual {}",
        actual.map_or_else(|| "no stream".to_owned(), |v| v.to_string())
    )]
    WrongExpectedVersion {
        /// The stream appended to.
        stream: StreamName,
        /// The expectation given, in its display form (`any`, `no-stream`, `exists`, `N`).
        expected: String,
        /// The stream's actual last version.
        actual: CurrentVersion,
    },
    /// An event id in the batch is already used by a different event or at
    /// a different place, so the append is neither new nor a retry.
    #[error("event id {id} already exists at another place in the log")]
    EventIdConflict {
        /// The conflicting id.
        id: uuid::Uuid,
    },
    /// The stream has no events.
    #[error("stream `{0}` not found")]
    StreamNotFound(StreamName),
    /// The queue does not exist.
    #[error("queue `{0}` not found")]
    QueueNotFound(QueueName),
    /// An explicit creation named a queue that exists with other settings.
    #[error("queue `{queue}` already exists with different settings")]
    QueueExists {
        /// The queue.
        queue: QueueName,
    },
    /// The receipt no longer identifies the message's current delivery: the
    /// message was acknowledged, delivered again, or dead-lettered. Nothing
    /// was changed.
    #[error("lease lost on message {message_id} of queue `{queue}`: {reason}")]
    LeaseLost {
        /// The queue.
        queue: QueueName,
        /// The message the receipt named.
        message_id: uuid::Uuid,
        /// What happened to the lease.
        reason: String,
    },
    /// An offloaded payload's bytes do not match its reference (hash or
    /// size); the object is corrupt or truncated.
    #[error("payload {} failed its integrity check: {}", details.uri, details.error)]
    IntegrityFailed {
        /// The reference and what did not match.
        details: Box<PayloadRetrievalFailedDetails>,
    },
    /// An offloaded payload could not be retrieved (missing, access denied,
    /// timeout after retries).
    #[error("payload {} could not be retrieved ({}): {}", details.uri, failure.as_str(), details.error)]
    PayloadRetrievalFailed {
        /// Which kind of failure.
        failure: PayloadFailure,
        /// The reference and the store's error.
        details: Box<PayloadRetrievalFailedDetails>,
    },
    /// The storage cannot serve the request now; retrying later may succeed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The data directory is held by another Wharf process.
    #[error("data directory {path} is locked by another Wharf process")]
    DataDirLocked {
        /// The directory.
        path: String,
    },
    /// The storage failed in a way retrying will not fix.
    #[error("storage error: {0}")]
    Storage(String),
}

/// Result with Wharf's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::InvalidName`] for a stream name.
    pub fn invalid_stream_name(rule: NameError) -> Self {
        Self::InvalidName {
            kind: "stream",
            rule,
        }
    }

    /// The details of a payload that could not be retrieved, when this is
    /// such an error.
    pub fn payload_details(&self) -> Option<(PayloadFailure, &PayloadRetrievalFailedDetails)> {
        match self {
            Self::IntegrityFailed { details } => Some((PayloadFailure::IntegrityFailed, details)),
            Self::PayloadRetrievalFailed { failure, details } => Some((*failure, details)),
            _ => None,
        }
    }

    /// The error for `failure` of a retrieval, with `details`.
    pub fn payload_retrieval(
        failure: PayloadFailure,
        details: PayloadRetrievalFailedDetails,
    ) -> Self {
        let details = Box::new(details);
        match failure {
            PayloadFailure::IntegrityFailed => Self::IntegrityFailed { details },
            failure => Self::PayloadRetrievalFailed { failure, details },
        }
    }

    /// An [`Error::InvalidName`] for a queue name.
    pub fn invalid_queue_name(rule: NameError) -> Self {
        Self::InvalidName {
            kind: "queue",
            rule,
        }
    }
}
