//! The payload-reference port: which offloaded payloads are still live, and
//! the locks that keep the reaper from deleting one an append is reusing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use tokio::sync::Notify;
use wharf_core::{ContentHash, Result};

/// Held while a payload must not be deleted (a pin) or while it is being
/// deleted (a reap lock); releases on drop.
pub struct PayloadGuard(#[allow(dead_code)] Box<dyn Send + Sync>);

impl PayloadGuard {
    /// Wraps whatever releases the lock when dropped.
    pub fn new(release: impl Send + Sync + 'static) -> Self {
        Self(Box::new(release))
    }
}

impl std::fmt::Debug for PayloadGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PayloadGuard")
    }
}

/// What the reaper asks the storage before it deletes an offloaded payload.
///
/// Why a port: references are rows of the event log and the queues, kept in
/// the same transaction as the append or enqueue that makes them, so only
/// the storage can say whether one is live; and the lock that makes reuse
/// safe must span every node that shares the storage (a process-local table
/// for the embedded engine, advisory locks for PostgreSQL).
///
/// # Contract
///
/// - `is_referenced(h)` is true exactly when a committed event or a queued
///   message (in flight, delayed, dead-lettered: anything not acknowledged,
///   purged or deleted) carries a reference to `h`.
/// - `pin(h)` and `try_reap(h)` exclude each other: while a pin on `h` is
///   held `try_reap(h)` returns `None`, and while a reap lock is held
///   `pin(h)` waits until it is released. Pins do not exclude each other.
/// - The safe protocol, which the engine follows: an append or enqueue
///   stores its payload, then pins the hash, then checks the object still
///   exists (storing it again if not), then commits its reference, then
///   drops the pin. The reaper takes the reap lock, then checks
///   `is_referenced`, then deletes, then drops the lock. Either the reaper
///   sees the reference or the pin, or the append sees the deletion.
#[async_trait]
pub trait PayloadRefs: Send + Sync + 'static {
    /// Whether a live event or message references `hash`.
    ///
    /// # Errors
    /// `Unavailable`, `Storage`.
    async fn is_referenced(&self, hash: &ContentHash) -> Result<bool>;

    /// Keeps `hash` from being reaped until the guard drops; waits while it
    /// is being reaped.
    ///
    /// # Errors
    /// `Unavailable`, `Storage`.
    async fn pin(&self, hash: &ContentHash) -> Result<PayloadGuard>;

    /// The exclusive right to delete `hash`'s object, or `None` while it is
    /// pinned or being reaped by someone else.
    ///
    /// # Errors
    /// `Unavailable`, `Storage`.
    async fn try_reap(&self, hash: &ContentHash) -> Result<Option<PayloadGuard>>;
}

/// Pins and reap locks for backends used by one process at a time (the
/// embedded engine holds an exclusive lock on its data directory).
#[derive(Clone, Default)]
pub struct LocalPayloadLocks {
    inner: Arc<LocksInner>,
}

#[derive(Default)]
struct LocksInner {
    held: Mutex<HashMap<ContentHash, Held>>,
    released: Notify,
}

#[derive(Debug, Clone, Copy)]
enum Held {
    Pinned(usize),
    Reaping,
}

impl LocalPayloadLocks {
    /// Pins `hash`, waiting while it is being reaped.
    pub async fn pin(&self, hash: &ContentHash) -> PayloadGuard {
        loop {
            // Registered before the check, so a release between the check
            // and the wait still wakes us.
            let released = self.inner.released.notified();
            {
                let mut held = self.inner.lock();
                match held.get_mut(hash) {
                    Some(Held::Reaping) => {}
                    Some(Held::Pinned(n)) => {
                        *n += 1;
                        return self.guard(*hash);
                    }
                    None => {
                        held.insert(*hash, Held::Pinned(1));
                        return self.guard(*hash);
                    }
                }
            }
            released.await;
        }
    }

    /// The reap lock on `hash`, or `None` while it is pinned or reaped.
    pub fn try_reap(&self, hash: &ContentHash) -> Option<PayloadGuard> {
        let mut held = self.inner.lock();
        if held.contains_key(hash) {
            return None;
        }
        held.insert(*hash, Held::Reaping);
        Some(self.guard(*hash))
    }

    fn guard(&self, hash: ContentHash) -> PayloadGuard {
        PayloadGuard::new(Release {
            inner: self.inner.clone(),
            hash,
        })
    }
}

impl LocksInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ContentHash, Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Release {
    inner: Arc<LocksInner>,
    hash: ContentHash,
}

impl Drop for Release {
    fn drop(&mut self) {
        let mut held = self.inner.lock();
        match held.get_mut(&self.hash) {
            Some(Held::Pinned(n)) if *n > 1 => *n -= 1,
            Some(_) => {
                held.remove(&self.hash);
                drop(held);
                self.inner.released.notify_waiters();
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn pins_exclude_reaping_and_reaping_holds_pins_back() {
        let locks = LocalPayloadLocks::default();
        let h = ContentHash([1; 32]);
        let pin = locks.pin(&h).await;
        let second = locks.pin(&h).await;
        assert!(locks.try_reap(&h).is_none(), "pinned twice");
        drop(pin);
        assert!(locks.try_reap(&h).is_none(), "still pinned once");
        drop(second);
        let reap = locks.try_reap(&h).expect("no pin left");
        assert!(locks.try_reap(&h).is_none(), "one reaper at a time");

        let waiting = tokio::spawn({
            let locks = locks.clone();
            async move { locks.pin(&h).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "a pin waits for the reaper");
        drop(reap);
        let pin = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the pin is granted once the reaper is done")
            .unwrap();
        assert!(locks.try_reap(&h).is_none());
        drop(pin);
        assert!(
            locks.try_reap(&ContentHash([2; 32])).is_some(),
            "other hashes are free"
        );
    }
}
