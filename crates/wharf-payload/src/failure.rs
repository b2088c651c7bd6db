//! What a failed store call means, independent of the backend that failed.
//!
//! object_store's errors are mapped once, here, into the few meanings the
//! store acts on (retry or not, dedup hit, not found) and the engine branches
//! on ([`PayloadFailure`]); the backend's message is kept for the operator.

use std::fmt;
use std::io;

use wharf_core::PayloadFailure;

/// The meaning of a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// No object under the key.
    NotFound,
    /// A write-once put found the key taken: a dedup hit.
    AlreadyExists,
    /// The store refused the credentials.
    AccessDenied,
    /// No answer in time.
    Timeout,
    /// Any other failure of the store.
    Unavailable,
    /// The object's bytes do not match the reference.
    Integrity,
}

/// A classified failure with the backend's words.
#[derive(Debug, Clone)]
pub(crate) struct StoreError {
    pub(crate) kind: Kind,
    /// Whether trying again may succeed.
    pub(crate) transient: bool,
    pub(crate) message: String,
    /// Set by integrity failures of a framed decode of an object whose size
    /// equals the payload's: the object may be a raw payload that merely
    /// starts like a frame header, and deserves a second, raw reading.
    pub(crate) retry_as_raw: bool,
}

impl StoreError {
    pub(crate) fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            transient: matches!(kind, Kind::Timeout | Kind::Unavailable),
            message: message.into(),
            retry_as_raw: false,
        }
    }

    pub(crate) fn integrity(message: impl Into<String>) -> Self {
        Self::new(Kind::Integrity, message)
    }

    pub(crate) fn permanent(mut self) -> Self {
        self.transient = false;
        self
    }

    pub(crate) fn timeout(limit: std::time::Duration, what: &str) -> Self {
        Self::new(Kind::Timeout, format!("{what} timed out after {limit:?}"))
    }

    /// Classifies an object_store error.
    pub(crate) fn from_object_store(err: &object_store::Error) -> Self {
        use object_store::Error as E;
        let message = error_chain(err);
        match err {
            E::NotFound { .. } => Self::new(Kind::NotFound, message),
            E::AlreadyExists { .. } | E::Precondition { .. } | E::NotModified { .. } => {
                Self::new(Kind::AlreadyExists, message)
            }
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
                Self::new(Kind::AccessDenied, format!("access denied: {message}"))
            }
            E::Generic { source, .. } => classify_generic(source.as_ref(), message),
            _ => Self::new(Kind::Unavailable, message).permanent(),
        }
    }

    /// Classifies an I/O error of the local filesystem. Local errors are
    /// not retried: a full disk or a broken file does not heal in 100 ms.
    pub(crate) fn from_io(err: &io::Error, what: impl fmt::Display) -> Self {
        let message = format!("{what}: {err}");
        match err.kind() {
            io::ErrorKind::NotFound => Self::new(Kind::NotFound, message),
            io::ErrorKind::AlreadyExists => Self::new(Kind::AlreadyExists, message),
            io::ErrorKind::PermissionDenied => {
                Self::new(Kind::AccessDenied, format!("access denied: {message}"))
            }
            io::ErrorKind::TimedOut => Self::new(Kind::Timeout, message).permanent(),
            _ => Self::new(Kind::Unavailable, message).permanent(),
        }
    }

    /// The engine's name for this failure of a retrieval.
    pub(crate) fn payload_failure(&self) -> PayloadFailure {
        match self.kind {
            Kind::NotFound => PayloadFailure::NotFound,
            Kind::AccessDenied => PayloadFailure::AccessDenied,
            Kind::Timeout => PayloadFailure::Timeout,
            Kind::Integrity => PayloadFailure::IntegrityFailed,
            Kind::AlreadyExists | Kind::Unavailable => PayloadFailure::Unavailable,
        }
    }

    /// Adds how many attempts were made, when there were several.
    pub(crate) fn after_attempts(mut self, attempts: u32) -> Self {
        if attempts > 1 {
            self.message = format!("{} (after {attempts} attempts)", self.message);
        }
        self
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// object_store's `Generic` carries transport failures, server errors and
/// client errors alike. Its status-carrying error type is not public, so the
/// status is read from the message it prints (`... status code: 503 ...`).
/// Client errors (4xx other than 408 and 429) will fail again the same way;
/// everything else — no connection, reset, 5xx, throttling — may not.
fn classify_generic(
    source: &(dyn std::error::Error + Send + Sync + 'static),
    message: String,
) -> StoreError {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(source);
    while let Some(err) = current {
        if let Some(http) = err.downcast_ref::<object_store::client::HttpError>()
            && matches!(http.kind(), object_store::client::HttpErrorKind::Timeout)
        {
            return StoreError::new(Kind::Timeout, message);
        }
        current = err.source();
    }
    match http_status(&message) {
        Some(401 | 403) => StoreError::new(Kind::AccessDenied, format!("access denied: {message}")),
        Some(status) if (400..500).contains(&status) && status != 408 && status != 429 => {
            StoreError::new(Kind::Unavailable, message).permanent()
        }
        _ => StoreError::new(Kind::Unavailable, message),
    }
}

/// The HTTP status in an object_store error message, if it names one.
fn http_status(message: &str) -> Option<u16> {
    let (_, after) = message.split_once("status code: ")?;
    after.get(..3)?.parse().ok()
}

/// The error and its sources, joined, so the root cause (connection
/// refused, the server's XML error) reaches the operator.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut current = err.source();
    while let Some(source) = current {
        let text = source.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        current = source.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(text: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: text.to_owned().into(),
        }
    }

    #[test]
    fn client_errors_are_permanent_and_server_errors_transient() {
        let bad_request = StoreError::from_object_store(&generic(
            "Server returned non-2xx status code: 400 Bad Request: <Error/>",
        ));
        assert_eq!(bad_request.kind, Kind::Unavailable);
        assert!(!bad_request.transient);
        for status in [
            "500 Internal Server Error",
            "503 Service Unavailable",
            "429 Too Many Requests",
        ] {
            let err = StoreError::from_object_store(&generic(&format!(
                "Server returned non-2xx status code: {status}: body"
            )));
            assert!(err.transient, "{status}");
        }
        let refused =
            StoreError::from_object_store(&generic("error sending request: connection refused"));
        assert!(refused.transient);
        assert_eq!(refused.kind, Kind::Unavailable);
    }

    #[test]
    fn meanings_map_to_payload_failures() {
        let not_found = StoreError::from_object_store(&object_store::Error::NotFound {
            path: "k".into(),
            source: "gone".into(),
        });
        assert_eq!(not_found.payload_failure(), PayloadFailure::NotFound);
        assert!(!not_found.transient);
        let denied = StoreError::from_object_store(&object_store::Error::PermissionDenied {
            path: "k".into(),
            source: "SignatureDoesNotMatch".into(),
        });
        assert_eq!(denied.payload_failure(), PayloadFailure::AccessDenied);
        assert!(denied.message.starts_with("access denied"));
        assert!(!denied.transient);
        let exists = StoreError::from_object_store(&object_store::Error::AlreadyExists {
            path: "k".into(),
            source: "taken".into(),
        });
        assert_eq!(exists.kind, Kind::AlreadyExists);
        assert!(!exists.transient);
    }

    #[test]
    fn local_errors_are_never_retried() {
        let err = StoreError::from_io(&io::Error::other("disk on fire"), "writing /x");
        assert!(!err.transient);
        assert!(err.message.contains("writing /x"));
        let missing = StoreError::from_io(&io::ErrorKind::NotFound.into(), "opening /x");
        assert_eq!(missing.kind, Kind::NotFound);
    }

    #[test]
    fn attempts_are_named_only_when_there_were_several() {
        let once = StoreError::new(Kind::Unavailable, "down").after_attempts(1);
        assert_eq!(once.message, "down");
        let thrice = StoreError::new(Kind::Unavailable, "down").after_attempts(3);
        assert_eq!(thrice.message, "down (after 3 attempts)");
    }
}
