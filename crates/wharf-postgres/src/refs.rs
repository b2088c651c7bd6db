//! [`PayloadRefs`] on PostgreSQL: references are columns of the event and
//! message rows; pins and reap locks are advisory locks, so they exclude
//! each other across every node that shares the database.
//!
//! A pin is a *shared* session lock on the hash's key and a reap lock an
//! *exclusive* one: pins coexist, a reaper waits for none of them
//! (`pg_try_advisory_lock`), and a pin waits while a reap holds the key.
//! Each guard keeps its pooled connection until dropped, then unlocks and
//! returns it; a connection that cannot unlock is closed instead, which
//! releases its locks. Unlocking is asynchronous (a guard drops in
//! synchronous code), so the node counts the unlocks still under way and a
//! reap of a hash waits for its own node's to finish: a pin dropped before
//! `try_reap` is called is never seen as held.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use async_trait::async_trait;
use wharf_core::{ContentHash, Result};
use wharf_storage::{PayloadGuard, PayloadRefs};

use crate::PgStore;
use crate::error::pg;

#[async_trait]
impl PayloadRefs for PgStore {
    async fn is_referenced(&self, hash: &ContentHash) -> Result<bool> {
        let conn = self.shared.conn().await?;
        let row = conn
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM events WHERE payload_hash = $1)
                     OR EXISTS (SELECT 1 FROM messages WHERE payload_hash = $1)",
                &[&hash.0.as_slice()],
            )
            .await
            .map_err(|e| pg("look up payload references", e))?;
        Ok(row.get(0))
    }

    async fn pin(&self, hash: &ContentHash) -> Result<PayloadGuard> {
        let conn = self.shared.conn().await?;
        conn.execute("SELECT pg_advisory_lock_shared($1)", &[&key(hash)])
            .await
            .map_err(|e| pg("pin a payload", e))?;
        Ok(self.guard(conn, "SELECT pg_advisory_unlock_shared($1)", hash))
    }

    async fn try_reap(&self, hash: &ContentHash) -> Result<Option<PayloadGuard>> {
        self.shared.unlocks.settled(key(hash)).await;
        let conn = self.shared.conn().await?;
        let locked: bool = conn
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key(hash)])
            .await
            .map_err(|e| pg("lock a payload for reaping", e))?
            .get(0);
        Ok(locked.then(|| self.guard(conn, "SELECT pg_advisory_unlock($1)", hash)))
    }
}

impl PgStore {
    fn guard(
        &self,
        conn: deadpool_postgres::Object,
        unlock: &'static str,
        hash: &ContentHash,
    ) -> PayloadGuard {
        PayloadGuard::new(Unlock {
            conn: Some(conn),
            unlock,
            key: key(hash),
            unlocks: self.shared.unlocks.clone(),
        })
    }
}

/// Advisory unlocks this node has started and not finished, by key.
#[derive(Clone, Default)]
pub(crate) struct PendingUnlocks(Arc<PendingInner>);

#[derive(Default)]
struct PendingInner {
    counts: Mutex<HashMap<i64, usize>>,
    done: Notify,
}

impl PendingUnlocks {
    fn started(&self, key: i64) {
        *self.counts().entry(key).or_default() += 1;
    }

    fn finished(&self, key: i64) {
        let mut counts = self.counts();
        if let Some(n) = counts.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&key);
            }
        }
        drop(counts);
        self.0.done.notify_waiters();
    }

    /// Returns once no unlock of `key` started by this node is under way.
    async fn settled(&self, key: i64) {
        loop {
            let done = self.0.done.notified();
            if !self.counts().contains_key(&key) {
                return;
            }
            done.await;
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<i64, usize>> {
        self.0.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The advisory-lock key of a payload: the first 8 bytes of its hash, under
/// a fixed class so they never meet the migration lock.
fn key(hash: &ContentHash) -> i64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash.0[..8]);
    // Top bit cleared: payload keys are non-negative.
    i64::from_be_bytes(bytes) & i64::MAX
}

struct Unlock {
    conn: Option<deadpool_postgres::Object>,
    unlock: &'static str,
    key: i64,
    unlocks: PendingUnlocks,
}

impl Drop for Unlock {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to unlock on: closing the session releases the lock.
            drop(deadpool_postgres::Object::take(conn));
            return;
        };
        let (unlock, key, unlocks) = (self.unlock, self.key, self.unlocks.clone());
        unlocks.started(key);
        runtime.spawn(async move {
            if conn.execute(unlock, &[&key]).await.is_err() {
                drop(deadpool_postgres::Object::take(conn));
            }
            unlocks.finished(key);
        });
    }
}
