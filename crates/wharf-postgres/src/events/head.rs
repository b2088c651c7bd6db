//! The head watch: where the next committed event will land, as this node
//! knows it.
//!
//! It moves when this node's batcher commits, and when the listener relays
//! another node's `e:<next position>` notification. After a reconnect of the
//! listener (notifications may have been missed) the head is read again
//! from `log_head`. It only ever moves forwards: notifications of older
//! commits can arrive after newer local ones.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use wharf_core::{Position, Result};

use crate::Shared;
use crate::error::pg;
use crate::events::timed;
use crate::listener::{self, Signal};

/// Moves the head to `next` unless it is already there or past it.
pub(super) fn advance(head: &watch::Sender<Position>, next: Position) {
    head.send_if_modified(|current| {
        if next > *current {
            *current = next;
            true
        } else {
            false
        }
    });
}

/// The committed head in the database.
///
/// # Errors
/// `Unavailable` when the database cannot be reached.
pub(super) async fn read(shared: &Shared) -> Result<Position> {
    timed("read the head of the event log", async {
        let conn = shared.conn().await?;
        let stmt = conn
            .prepare_cached("SELECT next_position FROM log_head")
            .await
            .map_err(|e| pg("read the head of the event log", e))?;
        let row = conn
            .query_one(&stmt, &[])
            .await
            .map_err(|e| pg("read the head of the event log", e))?;
        Ok(Position(row.get::<_, i64>(0) as u64))
    })
    .await
}

/// Follows other nodes' commits until the listener is gone (or the task is
/// aborted when the log closes).
pub(super) async fn follow(
    shared: Arc<Shared>,
    mut signals: broadcast::Receiver<Signal>,
    head: Arc<watch::Sender<Position>>,
) {
    while let Some(signal) = listener::recv(&mut signals).await {
        match signal {
            Signal::Notified(next) => match next.parse::<u64>() {
                Ok(next) => advance(&head, Position(next)),
                Err(_) => {
                    tracing::warn!(payload = %next, "ignoring a malformed event-log notification")
                }
            },
            Signal::Resync => resync(&shared, &head).await,
        }
    }
}

/// Reads the head again after notifications may have been lost; retries a
/// few times, since a resync usually follows a connection failure.
async fn resync(shared: &Shared, head: &watch::Sender<Position>) {
    let mut backoff = Duration::from_millis(50);
    for _ in 0..6 {
        match read(shared).await {
            Ok(next) => return advance(head, next),
            Err(e) if shared.is_closed() => {
                tracing::debug!(error = %e, "not resyncing the head of a closed log");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-reading the head of the event log failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
    }
}
