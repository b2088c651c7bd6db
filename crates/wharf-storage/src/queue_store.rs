//! The queue port.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use wharf_core::{
    Delivery, DequeueOptions, Enqueued, NewMessage, QueueCreated, QueueInfo, QueueName,
    QueueSettings, QueueStats, Receipt, Result,
};

/// At-least-once queues with visibility timeouts and dead letters.
///
/// Why a port: the embedded engine keeps a queue's order and timers in
/// memory beside its SQLite rows, PostgreSQL dequeues with
/// `FOR UPDATE SKIP LOCKED`; callers must not be able to tell them apart.
///
/// Callers (the engine facade) validate bounds first: names, sizes,
/// `max_messages`, timeouts and waits reach the port already checked.
///
/// # Contract
///
/// Time is the store's clock; "at time `t`" means as the clock reads.
///
/// - A queue exists from its first enqueue (with the store's default
///   settings) or its explicit creation. Operations other than enqueue and
///   create on a missing queue fail with `QueueNotFound`.
/// - **Order**: a dequeue returns the visible messages with the lowest
///   enqueue order first. A message is visible when it is not in flight, its
///   enqueue delay or nack delay has passed, and it has not been
///   acknowledged or dead-lettered.
/// - **Delivery**: each delivered message becomes invisible until
///   `now + visibility_timeout`, its attempt count increases by one, and
///   the delivery's receipt names that attempt. The new attempt count is
///   durable before the delivery is returned.
/// - **Leases**: a receipt is valid while the message is still in the queue
///   and has not been delivered again since. Acknowledge, nack and extend with
///   an invalid receipt fail with `LeaseLost` and change nothing; a receipt
///   that is not one this store issued for this queue fails with
///   `InvalidArgument`.
/// - **Timeouts are exact**: at time `t` every delivery whose visibility
///   timeout ended at or before `t` is visible again, or dead-lettered if it
///   was the last allowed attempt, without any client call.
/// - **Dead letters**: a message is delivered at most
///   `max_delivery_attempts` times when its queue has a dead-letter target
///   ([`QueueSettings::dead_letter_target`]); when its last attempt is nacked
///   or times out it moves (as one step) to the target, created if missing
///   with the defaults and no target of its own, carrying its data, content
///   type and metadata plus `OriginalStreamName`, `DeliveryAttempts`,
///   `LastError` and `DeadLetteredAt`. In the target it goes to the end of
///   the queue with its message id kept and attempt count 0.
/// - **Cancellation**: dropping a `dequeue` while it waits loses nothing;
///   dropping it once the store has delivered leaves the messages in flight
///   until their visibility timeout, with the attempt counted (as a
///   delivery lost on the network would).
/// - **Long polling**: a dequeue with `wait > 0` that finds nothing returns
///   as soon as a message becomes visible (enqueue, nack, timeout, delay)
///   or when `wait` has passed on the clock, with nothing.
#[async_trait]
pub trait QueueStore: Send + Sync + 'static {
    /// Creates `queue` with `settings`. Idempotent when it exists with the
    /// same settings.
    ///
    /// # Errors
    /// `QueueExists` when it exists with other settings.
    async fn create_queue(
        &self,
        queue: &QueueName,
        settings: &QueueSettings,
    ) -> Result<QueueCreated>;

    /// Enqueues `messages` in order, atomically, creating the queue if needed.
    ///
    /// # Errors
    /// `Unavailable`, `Storage`.
    async fn enqueue(&self, queue: &QueueName, messages: Vec<NewMessage>) -> Result<Vec<Enqueued>>;

    /// Delivers up to `options.max_messages` visible messages, oldest first,
    /// waiting up to `options.wait` for the first.
    ///
    /// # Errors
    /// `QueueNotFound`.
    async fn dequeue(&self, queue: &QueueName, options: DequeueOptions) -> Result<Vec<Delivery>>;

    /// Acknowledges (deletes) the messages of `receipts`. Each receipt has
    /// its own outcome, in order; the outer error is for the whole call.
    ///
    /// # Errors
    /// `QueueNotFound`; per receipt `LeaseLost` or `InvalidArgument`.
    async fn ack(&self, queue: &QueueName, receipts: &[Receipt]) -> Result<Vec<Result<()>>>;

    /// Gives the message of `receipt` back: visible again at
    /// `now + redeliver_after`, or dead-lettered with `reason` if this was its
    /// last attempt.
    ///
    /// # Errors
    /// `QueueNotFound`, `LeaseLost`, `InvalidArgument`.
    async fn nack(
        &self,
        queue: &QueueName,
        receipt: &Receipt,
        redeliver_after: Duration,
        reason: Option<String>,
    ) -> Result<()>;

    /// Moves the message of `receipt` to its queue's dead-letter queue now,
    /// whatever its attempt count, with `LastError` = `reason` and `metadata`
    /// added to the dead-letter keys. Without a dead-letter target the
    /// message is nacked instead, visible again after the queue's visibility
    /// timeout. The engine uses it for deliveries whose offloaded payload
    /// cannot be retrieved.
    ///
    /// # Errors
    /// `QueueNotFound`, `LeaseLost`, `InvalidArgument`.
    async fn reject(
        &self,
        queue: &QueueName,
        receipt: &Receipt,
        reason: String,
        metadata: BTreeMap<String, String>,
    ) -> Result<()>;

    /// Keeps the message of `receipt` invisible until `now + timeout`.
    ///
    /// # Errors
    /// `QueueNotFound`, `LeaseLost`, `InvalidArgument`.
    async fn extend(&self, queue: &QueueName, receipt: &Receipt, timeout: Duration) -> Result<()>;

    /// What `queue` holds and has done.
    ///
    /// # Errors
    /// `QueueNotFound`.
    async fn stats(&self, queue: &QueueName) -> Result<QueueStats>;

    /// Every queue, by name.
    ///
    /// # Errors
    /// `Unavailable`, `Storage`.
    async fn list_queues(&self) -> Result<Vec<QueueInfo>>;

    /// Moves the dead letters of `dead_letter_queue` that are not in flight
    /// back to the queue each came from (or all to `to`), at the end of that
    /// queue with their message id kept, attempt count 0 and the dead-letter
    /// metadata keys removed. Returns how many moved.
    ///
    /// # Errors
    /// `QueueNotFound`; `InvalidArgument` when the queue is not a
    /// dead-letter queue (no queue names it and it holds no dead letters).
    async fn redrive(&self, dead_letter_queue: &QueueName, to: Option<&QueueName>) -> Result<u64>;

    /// Deletes every message of `queue`, in flight or not; returns how many.
    ///
    /// # Errors
    /// `QueueNotFound`.
    async fn purge(&self, queue: &QueueName) -> Result<u64>;

    /// Deletes `queue`, its settings and its messages.
    ///
    /// # Errors
    /// `QueueNotFound`.
    async fn delete_queue(&self, queue: &QueueName) -> Result<()>;
}
