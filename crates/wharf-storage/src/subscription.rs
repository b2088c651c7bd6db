//! Catch-up-then-live subscriptions, built once for every [`EventLog`].
//!
//! A subscription reads pages of the log until it reaches the head, then
//! sleeps on the head watch; a commit wakes it and it reads what is new.
//! There is no polling loop: with nothing committed it does nothing.

use std::collections::VecDeque;

use std::sync::Arc;

use tokio::sync::watch;
use wharf_core::{LogFilter, Position, RecordedEvent, Result};

use crate::EventLog;

/// How many events a subscription reads from storage at a time.
const PAGE: usize = 512;

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
// Boxing the event would allocate once per delivered event to shrink a
// marker variant yielded once per catch-up.
#[allow(clippy::large_enum_variant)]
pub enum SubscriptionItem {
    /// The next matching event.
    Event(RecordedEvent),
    /// Every event committed when this was yielded has been delivered; what
    /// follows is live. Yielded once per time the subscription catches up.
    CaughtUp,
}

/// A subscription to the global log: the backlog first, then
/// [`SubscriptionItem::CaughtUp`], then events as they commit.
pub struct Subscription {
    log: Arc<dyn EventLog>,
    filter: LogFilter,
    next: Position,
    head: watch::Receiver<Position>,
    buffered: VecDeque<RecordedEvent>,
    live: bool,
}

impl Subscription {
    /// Subscribes to `log` from `from` (inclusive), keeping the events that
    /// pass `filter`.
    pub fn new(log: Arc<dyn EventLog>, from: Position, filter: LogFilter) -> Self {
        Self {
            head: log.watch_head(),
            log,
            filter,
            next: from,
            buffered: VecDeque::new(),
            live: false,
        }
    }

    /// The next event, or [`SubscriptionItem::CaughtUp`] when the backlog is
    /// delivered. Waits for commits when there is nothing to deliver.
    ///
    /// # Errors
    /// A storage error while reading; the subscription can be retried from
    /// the position of the last event it delivered.
    pub async fn next(&mut self) -> Result<SubscriptionItem> {
        loop {
            if let Some(event) = self.buffered.pop_front() {
                return Ok(SubscriptionItem::Event(event));
            }
            // Mark the head as seen *before* reading, so a commit landing
            // between the read and the wait still wakes us.
            let head = *self.head.borrow_and_update();
            if self.next < head {
                let page = self.log.read_all(self.next, &self.filter, PAGE).await?;
                self.next = page.next;
                self.buffered.extend(page.events);
                continue;
            }
            if !self.live {
                self.live = true;
                return Ok(SubscriptionItem::CaughtUp);
            }
            if self.head.changed().await.is_err() {
                return Err(wharf_core::Error::Unavailable(
                    "the event log was closed".to_owned(),
                ));
            }
        }
    }

    /// Takes every event already read from storage, without waiting; lets a
    /// sender forward a whole page at once.
    pub fn drain_buffered(&mut self) -> impl Iterator<Item = RecordedEvent> + '_ {
        self.buffered.drain(..)
    }
}
