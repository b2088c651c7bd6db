//! PostgreSQL errors as Wharf errors.
//!
//! The rule callers rely on: anything that means "the database could not be
//! reached or the connection broke" is [`Error::Unavailable`] (gRPC
//! `UNAVAILABLE`, safe to retry); everything else is [`Error::Storage`].

use tokio_postgres::error::SqlState;
use wharf_core::Error;

/// Maps a driver error; `doing` names the operation, e.g. `"append to `orders`"`.
pub(crate) fn pg(doing: &str, e: tokio_postgres::Error) -> Error {
    if is_connection_error(&e) {
        return Error::Unavailable(format!("PostgreSQL is unreachable ({doing}): {e}"));
    }
    match e.as_db_error() {
        // Class 28: invalid authorization (unknown role, wrong password).
        Some(db) if db.code().code().starts_with("28") => Error::Storage(format!(
            "PostgreSQL refused the credentials ({doing}): {}",
            db.message()
        )),
        Some(db) => Error::Storage(format!(
            "PostgreSQL failed to {doing}: {} ({})",
            db.message(),
            db.code().code()
        )),
        None => Error::Storage(format!("PostgreSQL failed to {doing}: {e}")),
    }
}

/// Maps a pool error (no connection could be had in time, or made).
pub(crate) fn pool(e: deadpool_postgres::PoolError) -> Error {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => pg("connect", e),
        PoolError::Timeout(_) => {
            Error::Unavailable("PostgreSQL: no connection became free in time".to_owned())
        }
        other => Error::Unavailable(format!("PostgreSQL: {other}")),
    }
}

/// Whether `e` means the connection is gone rather than the statement failed.
pub(crate) fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            // Class 08 (connection exception), 57P01..57P03 (admin shutdown,
            // crash shutdown, cannot connect now).
            code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
        }
        // No SQLSTATE: an I/O error or a protocol error on the socket.
        None => e.as_db_error().is_none(),
    }
}

/// Whether `e` is a serialization failure or deadlock, worth retrying the
/// whole transaction.
pub(crate) fn is_retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}
