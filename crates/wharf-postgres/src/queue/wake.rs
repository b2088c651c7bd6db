//! Where long polls wait, and what the node knows of the next due time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;
use wharf_core::Timestamp;

/// Long polls of this node wait on their queue's notifier; notifications
/// (from any node), this node's commits and its timer wake them.
#[derive(Default)]
pub(crate) struct Wakers(Mutex<HashMap<String, Waiters>>);

#[derive(Default)]
struct Waiters {
    notify: Arc<Notify>,
    /// Until when the database knows that this node waits on the queue.
    registered_until: Option<Timestamp>,
}

impl Wakers {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiters>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The notifier of `queue`.
    pub(crate) fn of(&self, queue: &str) -> Arc<Notify> {
        self.map()
            .entry(queue.to_owned())
            .or_default()
            .notify
            .clone()
    }

    /// Wakes the long polls of `queue` waiting now.
    pub(crate) fn wake(&self, queue: &str) {
        if let Some(w) = self.map().get(queue) {
            w.notify.notify_waiters();
        }
    }

    /// Wakes every long poll: anything may have changed.
    pub(crate) fn wake_all(&self) {
        for w in self.map().values() {
            w.notify.notify_waiters();
        }
    }

    /// Until when this node's registration as a waiter on `queue` lasts.
    pub(crate) fn registered_until(&self, queue: &str) -> Option<Timestamp> {
        self.map().get(queue).and_then(|w| w.registered_until)
    }

    /// Notes a committed registration on `queue` until `until`.
    pub(crate) fn registered(&self, queue: &str, until: Timestamp) {
        let mut map = self.map();
        let w = map.entry(queue.to_owned()).or_default();
        w.registered_until = w.registered_until.max(Some(until));
    }
}

/// The node's timer schedule: the earliest time something may fall due
/// (a delay, a visibility timeout, a nack delay), and the earliest due time
/// announced to every node.
#[derive(Default)]
pub(crate) struct Schedule {
    state: Mutex<State>,
    /// Signalled (with a stored permit) when `next` moves earlier.
    pub(crate) changed: Notify,
}

#[derive(Default)]
struct State {
    next: Option<Timestamp>,
    announced: Option<Timestamp>,
}

impl Schedule {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the timer fire at `at` at the latest.
    pub(crate) fn at(&self, at: Timestamp) {
        let mut s = self.state();
        if s.next.is_none_or(|next| at < next) {
            s.next = Some(at);
            drop(s);
            self.changed.notify_one();
        }
    }

    /// When the timer should fire next.
    pub(crate) fn next(&self) -> Option<Timestamp> {
        self.state().next
    }

    /// Forgets the schedule as the timer fires; writes committed from now
    /// on schedule themselves again.
    pub(crate) fn take(&self) {
        self.state().next = None;
    }

    /// The announced due time still ahead of `now`: a write due earlier
    /// must announce itself, one due later need not (every node fires by
    /// then and learns it from the database).
    pub(crate) fn announced(&self, now: Timestamp) -> Option<Timestamp> {
        self.state().announced.filter(|a| *a > now)
    }

    /// Whether a write due at `at` must be announced. Only asks: a write
    /// may fail and be retried; once its announcement is sent, this node
    /// hears it like every other and lowers the announced time then.
    pub(crate) fn must_announce(&self, at: Timestamp, now: Timestamp) -> bool {
        self.announced(now).is_none_or(|a| at < a)
    }

    /// Another node (or this one) announced a due time.
    pub(crate) fn heard(&self, at: Timestamp) {
        {
            let mut s = self.state();
            if s.announced.is_none_or(|a| at < a) {
                s.announced = Some(at);
            }
        }
        self.at(at);
    }

    /// After a fire: the earliest due time in the database, which every
    /// node that fires around now reads too.
    pub(crate) fn learned(&self, earliest: Option<Timestamp>) {
        self.state().announced = earliest;
        if let Some(at) = earliest {
            self.at(at);
        }
    }
}

/// The payload of a due-time announcement, `t:<micros>`.
pub(crate) fn announcement(at: Timestamp) -> String {
    format!("t:{}", at.as_micros())
}

/// The payload that wakes long polls of `queue` on every node, `q:<name>`.
pub(crate) fn wake_up(queue: &str) -> String {
    format!("q:{queue}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(micros: i64) -> Timestamp {
        Timestamp::from_micros(micros)
    }

    #[test]
    fn the_schedule_only_moves_earlier() {
        let s = Schedule::default();
        s.at(t(10));
        s.at(t(20));
        assert_eq!(s.next(), Some(t(10)));
        s.at(t(5));
        assert_eq!(s.next(), Some(t(5)));
        s.take();
        assert_eq!(s.next(), None);
    }

    #[test]
    fn only_due_times_earlier_than_the_announced_one_are_announced() {
        let s = Schedule::default();
        assert!(s.must_announce(t(100), t(0)), "nothing announced yet");
        s.heard(t(100));
        assert!(!s.must_announce(t(150), t(0)), "later than 100");
        assert!(s.must_announce(t(90), t(0)), "earlier than 100");
        assert!(
            s.must_announce(t(200), t(100)),
            "the announced time has passed"
        );
        s.heard(t(50));
        assert_eq!(s.announced(t(0)), Some(t(50)));
        assert_eq!(s.next(), Some(t(50)));
        s.heard(t(70));
        assert_eq!(
            s.announced(t(0)),
            Some(t(50)),
            "only earlier times lower it"
        );
        s.learned(None);
        assert_eq!(s.announced(t(0)), None);
    }
}
