//! What every queue operation shares: its failure type, retries of
//! transactions PostgreSQL aborted for a conflict, and row decoding.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio_postgres::Row;
use wharf_core::{Delivery, Error, PayloadReference, QueueName, QueueSettings, Timestamp};
use wharf_storage::receipt::{ReceiptKey, ReceiptParts};

use crate::error::{is_retryable, pg};
use wharf_storage::codec::{decode_metadata, decode_reference};

/// A failed step: the caller's (or the pool's) error as it is, or a driver
/// error still to be mapped (and maybe retried).
pub(crate) enum Fail {
    Caller(Error),
    Db(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Self::Caller(e)
    }
}

pub(crate) type Step<T> = std::result::Result<T, Fail>;

/// Times a transaction aborted by a serialization failure or deadlock is
/// run again before the error is returned.
const RETRIES: u32 = 5;

/// Runs `op` until it succeeds, fails for good, or has been aborted by
/// conflicts [`RETRIES`] times; maps driver errors with `doing`.
pub(crate) async fn retrying<T, F, Fut>(
    doing: impl Fn() -> String,
    mut op: F,
) -> wharf_core::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Step<T>>,
{
    let mut tries = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(Fail::Caller(e)) => return Err(e),
            Err(Fail::Db(e)) if is_retryable(&e) && tries < RETRIES => {
                tries += 1;
                // A little jitter so two transactions that deadlocked do
                // not meet again at once.
                let pause = rand::random_range(1..=5u64) * u64::from(tries);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            Err(Fail::Db(e)) => return Err(pg(&doing(), e)),
        }
    }
}

/// `d` in microseconds, saturating.
pub(crate) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// A timestamp `d` after `t`, in microseconds.
pub(crate) fn after(t: Timestamp, d: Duration) -> i64 {
    t.saturating_add(d).as_micros()
}

/// A database integer that should be a count.
pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A stored queue name, which was valid when it was written.
pub(crate) fn queue_name(name: String) -> Step<QueueName> {
    QueueName::new(name.clone()).map_err(|e| {
        Fail::Caller(Error::Storage(format!(
            "stored queue name `{name}` is not valid: {e}"
        )))
    })
}

/// Settings from `max_delivery_attempts`, `dead_letter_queue`,
/// `visibility_timeout_us` at columns `at`, `at + 1`, `at + 2`.
pub(crate) fn settings(row: &Row, at: usize) -> Step<QueueSettings> {
    let max: i32 = row.try_get(at)?;
    let dead: Option<String> = row.try_get(at + 1)?;
    let vt: i64 = row.try_get(at + 2)?;
    Ok(QueueSettings {
        max_delivery_attempts: u32::try_from(max).unwrap_or(1),
        dead_letter_queue: dead.map(queue_name).transpose()?,
        visibility_timeout: Duration::from_micros(vt.max(0).unsigned_abs()),
    })
}

fn corrupt(what: &str, seq: i64) -> Fail {
    Fail::Caller(Error::Storage(format!(
        "the {what} of queued message {seq} is corrupt"
    )))
}

/// Decodes stored metadata.
pub(crate) fn metadata(bytes: &[u8], seq: i64) -> Step<BTreeMap<String, String>> {
    decode_metadata(bytes).ok_or_else(|| corrupt("metadata", seq))
}

/// The columns every delivery reads, in this order.
pub(crate) const DELIVERY_COLUMNS: &str = "seq, message_id, attempts, enqueued_at, visible_at, \
     content_type, metadata, payload_hash, payload_ref, data";

/// A delivery from a row of [`DELIVERY_COLUMNS`] starting at column `at`.
pub(crate) fn delivery(
    row: &Row,
    at: usize,
    key: &ReceiptKey,
    queue: &QueueName,
) -> Step<Delivery> {
    let seq: i64 = row.try_get(at)?;
    let message_id: uuid::Uuid = row.try_get(at + 1)?;
    let attempts: i32 = row.try_get(at + 2)?;
    let enqueued_at: i64 = row.try_get(at + 3)?;
    let content_type: Vec<u8> = row.try_get(at + 5)?;
    let meta: &[u8] = row.try_get(at + 6)?;
    let hash: Option<&[u8]> = row.try_get(at + 7)?;
    let reference: Option<&[u8]> = row.try_get(at + 8)?;
    let data: Vec<u8> = row.try_get(at + 9)?;
    let external: Option<PayloadReference> = match (hash, reference) {
        (Some(h), Some(r)) => {
            Some(decode_reference(h, r).ok_or_else(|| corrupt("payload reference", seq))?)
        }
        (None, None) => None,
        _ => return Err(corrupt("payload reference", seq)),
    };
    let attempt = u32::try_from(attempts).map_err(|_| corrupt("attempt count", seq))?;
    Ok(Delivery {
        message_id,
        receipt: key.issue(
            queue,
            ReceiptParts {
                seq: seq.unsigned_abs(),
                message_id,
                attempt,
            },
        ),
        data: data.into(),
        metadata: metadata(meta, seq)?,
        content_type: String::from_utf8(content_type).map_err(|_| corrupt("content type", seq))?,
        delivery_attempt: attempt,
        enqueued_at: Timestamp::from_micros(enqueued_at),
        external,
    })
}

/// A receipt's message key as the column holds it.
pub(crate) fn seq_of(parts: &ReceiptParts) -> Step<i64> {
    i64::try_from(parts.seq).map_err(|_| {
        Fail::Caller(Error::InvalidArgument(
            "receipt names no message".to_owned(),
        ))
    })
}

/// A receipt's attempt as the column holds it.
pub(crate) fn attempt_of(parts: &ReceiptParts) -> i32 {
    i32::try_from(parts.attempt).unwrap_or(i32::MAX)
}
