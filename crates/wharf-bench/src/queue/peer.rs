//! What the workloads need from a queueing system, so that every system runs exactly the
//! same work: one queue, producers that enqueue, consumers that receive and acknowledge.
//!
//! Each system's adapter maps these onto its own idiom (a JetStream pull consumer, an AMQP
//! consumer with prefetch, `XREADGROUP`, a `SKIP LOCKED` statement, a Wharf dequeue) and
//! its module documents how.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// A queueing system under test, connected, with one queue the workloads use.
///
/// Handles are cheap to clone: every clone talks to the same queue.
pub trait Peer: Clone + Send + Sync + 'static {
    type Producer: Producer;
    type Consumer: Consumer;

    /// Makes the queue exist and be empty, removing whatever an earlier run left.
    fn reset(&self) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// `n` producers, each used by one task at a time.
    ///
    /// Systems that multiplex requests on one connection return `n` handles of one
    /// connection; PostgreSQL, which runs one transaction per connection at a time,
    /// returns `n` connections.
    fn producers(
        &self,
        n: usize,
    ) -> impl Future<Output = anyhow::Result<Vec<Self::Producer>>> + Send;

    /// A consumer with its own connection or channel; it starts receiving on its
    /// first [`Consumer::receive`], not before.
    fn consumer(&self) -> impl Future<Output = anyhow::Result<Self::Consumer>> + Send;

    /// Messages in the queue that are not acknowledged, counted once every consumer of
    /// the run is closed.
    fn remaining(&self) -> impl Future<Output = anyhow::Result<u64>> + Send;

    /// Deletes the queue.
    fn remove(&self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Enqueues; returns only once the system has confirmed the messages by its own
/// durability standard (the label the results carry).
pub trait Producer: Send + Sync + 'static {
    /// Enqueues one message.
    fn enqueue(&self, payload: Bytes) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Enqueues `payloads` as one batch (one request, transaction or burst of publishes).
    fn enqueue_batch(
        &self,
        payloads: Vec<Bytes>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Receives and acknowledges.
pub trait Consumer: Send + 'static {
    /// What acknowledging a received batch takes (ids, receipts, a delivery tag).
    type Ack: Send;

    /// Up to `max` messages, waiting up to `wait` for the first; empty if none came.
    fn receive(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = anyhow::Result<Received<Self::Ack>>> + Send;

    /// Acknowledges one non-empty received batch.
    fn ack(&mut self, ack: Self::Ack) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Waits for acknowledgements still in flight (for a consumer whose `ack` returns
    /// before the system confirmed it) and returns when the last one was confirmed;
    /// `None` when `ack` always returns confirmed.
    fn settle(&mut self) -> impl Future<Output = anyhow::Result<Option<Instant>>> + Send {
        async { Ok(None) }
    }

    /// Stops receiving; unacknowledged deliveries go back to the queue.
    fn close(self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// A batch of received messages and the means to acknowledge it.
pub struct Received<A> {
    pub payloads: Vec<Bytes>,
    pub ack: A,
}
