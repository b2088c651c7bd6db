//! Queues on the engine: bounds checked here, semantics in the store.

use std::time::Duration;

use wharf_core::queue::check_timeout;
use wharf_core::{
    Delivery, DequeueOptions, Enqueued, Error, NewMessage, QueueCreated, QueueInfo, QueueName,
    QueueSettings, QueueStats, Receipt, Result,
};

use crate::{Wharf, validate};

impl Wharf {
    /// Creates `queue` with `settings`; a no-op when it exists with the same settings.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for settings out of bounds;
    /// [`Error::QueueExists`] when it exists with other settings.
    pub async fn create_queue(
        &self,
        queue: &QueueName,
        settings: QueueSettings,
    ) -> Result<QueueCreated> {
        settings.validate()?;
        self.queues.create_queue(queue, &settings).await
    }

    /// Enqueues one message, creating the queue with the default settings if needed.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a message over the inline limit or a
    /// malformed one (nothing is written); [`Error::Unavailable`].
    pub async fn enqueue(&self, queue: &QueueName, message: NewMessage) -> Result<Enqueued> {
        let mut enqueued = self.enqueue_batch(queue, vec![message]).await?;
        enqueued
            .pop()
            .ok_or_else(|| Error::Storage("the store answered an enqueue with nothing".into()))
    }

    /// Enqueues `messages` atomically and in order.
    ///
    /// # Errors
    /// As [`Wharf::enqueue`], for the whole batch.
    pub async fn enqueue_batch(
        &self,
        queue: &QueueName,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Enqueued>> {
        let mut messages = messages;
        validate::messages(&messages, &self.limits, self.offload_threshold())?;
        let count = messages.len() as u64;
        let _pins = self
            .offload_all(messages.iter_mut().map(|m| (&mut m.data, &mut m.external)))
            .await?;
        let enqueued = self.queues.enqueue(queue, messages).await?;
        metrics::counter!("wharf_queue_enqueued_total").increment(count);
        Ok(enqueued)
    }

    /// Delivers up to `options.max_messages` visible messages of `queue`,
    /// oldest first, long-polling up to `options.wait` when none is visible.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for options out of bounds;
    /// [`Error::QueueNotFound`].
    pub async fn dequeue(
        &self,
        queue: &QueueName,
        options: DequeueOptions,
    ) -> Result<Vec<Delivery>> {
        options.validate()?;
        let deliveries = self.queues.dequeue(queue, options).await?;
        self.resolve_deliveries(queue, deliveries).await
    }

    /// Acknowledges one delivery: the message is deleted.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] when the receipt is no longer the message's
    /// current delivery; [`Error::InvalidArgument`] for a malformed or
    /// foreign receipt; [`Error::QueueNotFound`].
    pub async fn ack(&self, queue: &QueueName, receipt: &Receipt) -> Result<()> {
        self.ack_batch(queue, std::slice::from_ref(receipt))
            .await?
            .pop()
            .unwrap_or_else(|| {
                Err(Error::Storage(
                    "the store answered an ack with nothing".into(),
                ))
            })
    }

    /// Acknowledges many deliveries; each receipt has its own outcome, in order.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty or oversized batch;
    /// [`Error::QueueNotFound`].
    pub async fn ack_batch(
        &self,
        queue: &QueueName,
        receipts: &[Receipt],
    ) -> Result<Vec<Result<()>>> {
        if receipts.is_empty() || receipts.len() > self.limits.max_batch_events {
            return Err(Error::InvalidArgument(format!(
                "an acknowledge takes 1 to {} receipts, not {}",
                self.limits.max_batch_events,
                receipts.len()
            )));
        }
        self.queues.ack(queue, receipts).await
    }

    /// Gives a delivery back: visible again after `redeliver_after`, or
    /// dead-lettered with `reason` if it was the last attempt.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a delay over 12 h or an oversized
    /// reason; otherwise as [`Wharf::ack`].
    pub async fn nack(
        &self,
        queue: &QueueName,
        receipt: &Receipt,
        redeliver_after: Duration,
        reason: Option<String>,
    ) -> Result<()> {
        validate::redeliver_after(redeliver_after)?;
        validate::reason(reason.as_deref())?;
        self.queues
            .nack(queue, receipt, redeliver_after, reason)
            .await
    }

    /// Keeps a delivery invisible until `timeout` from now.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a timeout of 0 or over 12 h; otherwise
    /// as [`Wharf::ack`].
    pub async fn extend(
        &self,
        queue: &QueueName,
        receipt: &Receipt,
        timeout: Duration,
    ) -> Result<()> {
        check_timeout("visibility timeout", timeout)?;
        self.queues.extend(queue, receipt, timeout).await
    }

    /// What `queue` holds and has done.
    ///
    /// # Errors
    /// [`Error::QueueNotFound`].
    pub async fn queue_stats(&self, queue: &QueueName) -> Result<QueueStats> {
        self.queues.stats(queue).await
    }

    /// Every queue with its settings and statistics.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn list_queues(&self) -> Result<Vec<QueueInfo>> {
        self.queues.list_queues().await
    }

    /// Moves the dead letters of `dead_letter_queue` back to the queues they
    /// came from, or all to `to`; returns how many moved.
    ///
    /// # Errors
    /// [`Error::QueueNotFound`]; [`Error::InvalidArgument`] when the queue is
    /// not a dead-letter queue.
    pub async fn redrive(
        &self,
        dead_letter_queue: &QueueName,
        to: Option<&QueueName>,
    ) -> Result<u64> {
        self.queues.redrive(dead_letter_queue, to).await
    }

    /// Deletes every message of `queue`; returns how many.
    ///
    /// # Errors
    /// [`Error::QueueNotFound`].
    pub async fn purge(&self, queue: &QueueName) -> Result<u64> {
        self.queues.purge(queue).await
    }

    /// Deletes `queue` and its messages.
    ///
    /// # Errors
    /// [`Error::QueueNotFound`].
    pub async fn delete_queue(&self, queue: &QueueName) -> Result<()> {
        self.queues.delete_queue(queue).await
    }
}
