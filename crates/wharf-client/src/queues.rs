//! The queue calls of [`Client`], named and typed as the engine's.

use std::time::Duration;

use tonic::Status;
use wharf_core::{
    Delivery, DequeueOptions, Enqueued, Error, NewMessage, QueueCreated, QueueInfo, QueueName,
    QueueSettings, QueueStats, Receipt, Result,
};
use wharf_proto::convert::{self, micros};
use wharf_proto::status::{from_rpc_status, from_status};
use wharf_proto::v1;

use crate::{Client, enqueue_stream};

fn error(status: Status) -> Error {
    from_status(&status)
}

/// The server answered a batch with the wrong number of results.
fn miscounted(call: &str, sent: usize, got: usize) -> Error {
    Error::Storage(format!(
        "the server answered {call} of {sent} with {got} results"
    ))
}

impl Client {
    /// Creates `queue` with `settings`; [`QueueCreated::Existed`] when it
    /// exists with the same settings.
    ///
    /// # Errors
    /// `QueueExists` when it exists with other settings; `InvalidArgument`
    /// for settings out of bounds; `Unavailable`.
    pub async fn create_queue(
        &self,
        queue: &QueueName,
        settings: QueueSettings,
    ) -> Result<QueueCreated> {
        let request = v1::CreateQueueRequest {
            queue: queue.to_string(),
            settings: Some((&settings).into()),
        };
        let response = self
            .queues
            .clone()
            .create_queue(request)
            .await
            .map_err(error)?;
        Ok(if response.into_inner().created {
            QueueCreated::Created
        } else {
            QueueCreated::Existed
        })
    }

    /// Enqueues one message, creating the queue with the server's default
    /// settings if needed.
    ///
    /// Small messages (up to 64 KiB encoded) go on one stream that this
    /// client and its clones share, so many enqueues in flight at once
    /// cost a frame each, not a call each; larger ones go as a call of
    /// their own. Either way this returns once the message is durable.
    /// Dropping the returned future does not take back a message already
    /// sent on the stream: it may still be enqueued.
    ///
    /// # Errors
    /// `InvalidArgument` for a message over the inline limit or malformed
    /// (nothing is written); `Unavailable`.
    pub async fn enqueue(&self, queue: &QueueName, message: NewMessage) -> Result<Enqueued> {
        let message = v1::NewMessage::from(message);
        if !enqueue_stream::streamable(&message) {
            let mut enqueued = self.enqueue_wire(queue, vec![message]).await?;
            return match enqueued.len() {
                1 => Ok(enqueued.remove(0)),
                n => Err(miscounted("an enqueue", 1, n)),
            };
        }
        let request = v1::EnqueueStreamRequest {
            queue: queue.to_string(),
            message: Some(message),
        };
        self.enqueue_stream.enqueue(&self.queues, request).await
    }

    /// Enqueues `messages` atomically and in order; one result per message.
    ///
    /// # Errors
    /// As [`Client::enqueue`], for the whole batch.
    pub async fn enqueue_batch(
        &self,
        queue: &QueueName,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Enqueued>> {
        self.enqueue_wire(queue, messages.into_iter().map(Into::into).collect())
            .await
    }

    async fn enqueue_wire(
        &self,
        queue: &QueueName,
        messages: Vec<v1::NewMessage>,
    ) -> Result<Vec<Enqueued>> {
        let sent = messages.len();
        let request = v1::EnqueueRequest {
            queue: queue.to_string(),
            messages,
        };
        let response = self.queues.clone().enqueue(request).await.map_err(error)?;
        let enqueued = response
            .into_inner()
            .messages
            .into_iter()
            .map(|e| convert::enqueued(e).map_err(error))
            .collect::<Result<Vec<_>>>()?;
        if enqueued.len() != sent {
            return Err(miscounted("an enqueue", sent, enqueued.len()));
        }
        Ok(enqueued)
    }

    /// Delivers up to `options.max_messages` visible messages of `queue`,
    /// oldest first. With `options.wait` > 0 the server holds the call until
    /// a message is visible or the wait ends (empty), so a worker loops on
    /// this call without sleeping.
    ///
    /// Offloaded payloads come in full, with `external` set; a message whose
    /// payload cannot be retrieved is moved to the dead-letter queue by the
    /// server instead of being delivered (see
    /// [`Client::with_payload_references`] for the other mode).
    ///
    /// # Errors
    /// `QueueNotFound`; `InvalidArgument` for options out of bounds;
    /// `Unavailable`.
    pub async fn dequeue(
        &self,
        queue: &QueueName,
        options: DequeueOptions,
    ) -> Result<Vec<Delivery>> {
        let request = v1::DequeueRequest {
            queue: queue.to_string(),
            visibility_timeout_micros: options.visibility_timeout.map(micros),
            max_messages: Some(options.max_messages),
            wait_micros: micros(options.wait),
            payload_references: self.payload_references,
        };
        let response = self.queues.clone().dequeue(request).await.map_err(error)?;
        response
            .into_inner()
            .deliveries
            .into_iter()
            .map(|d| convert::delivery(d).map_err(error))
            .collect()
    }

    /// Acknowledges one delivery: the message is deleted.
    ///
    /// # Errors
    /// `LeaseLost` when the receipt is no longer the message's current
    /// delivery; `InvalidArgument` for a malformed or foreign receipt;
    /// `QueueNotFound`; `Unavailable`.
    pub async fn ack(&self, queue: &QueueName, receipt: &Receipt) -> Result<()> {
        let mut results = self.ack_batch(queue, std::slice::from_ref(receipt)).await?;
        match results.len() {
            1 => results.remove(0),
            n => Err(miscounted("an acknowledge", 1, n)),
        }
    }

    /// Acknowledges many deliveries; each receipt has its own outcome, in
    /// order.
    ///
    /// # Errors
    /// The outer error is for the whole call: `InvalidArgument` for an empty
    /// or oversized batch, `QueueNotFound`, `Unavailable`. Each inner one is
    /// as [`Client::ack`]'s.
    pub async fn ack_batch(
        &self,
        queue: &QueueName,
        receipts: &[Receipt],
    ) -> Result<Vec<Result<()>>> {
        let request = v1::AckRequest {
            queue: queue.to_string(),
            receipts: receipts.iter().map(|r| r.as_str().to_owned()).collect(),
        };
        let response = self.queues.clone().ack(request).await.map_err(error)?;
        let results: Vec<Result<()>> = response
            .into_inner()
            .results
            .into_iter()
            .map(|r| r.error.map_or(Ok(()), |e| Err(from_rpc_status(&e))))
            .collect();
        if results.len() != receipts.len() {
            return Err(miscounted("an acknowledge", receipts.len(), results.len()));
        }
        Ok(results)
    }

    /// Gives a delivery back: visible again after `redeliver_after`, or
    /// dead-lettered with `reason` as its `LastError` if it was the last
    /// allowed attempt.
    ///
    /// # Errors
    /// `InvalidArgument` for a delay over 12 h or an oversized reason;
    /// otherwise as [`Client::ack`].
    pub async fn nack(
        &self,
        queue: &QueueName,
        receipt: &Receipt,
        redeliver_after: Duration,
        reason: Option<String>,
    ) -> Result<()> {
        let request = v1::NackRequest {
            queue: queue.to_string(),
            receipt: receipt.as_str().to_owned(),
            redeliver_after_micros: micros(redeliver_after),
            reason,
        };
        self.queues.clone().nack(request).await.map_err(error)?;
        Ok(())
    }

    /// Keeps a delivery invisible until `timeout` from now; for work that
    /// outlasts the visibility timeout.
    ///
    /// # Errors
    /// `InvalidArgument` for a timeout of 0 or over 12 h; otherwise as
    /// [`Client::ack`].
    pub async fn extend(
        &self,
        queue: &QueueName,
        receipt: &Receipt,
        timeout: Duration,
    ) -> Result<()> {
        let request = v1::ExtendRequest {
            queue: queue.to_string(),
            receipt: receipt.as_str().to_owned(),
            timeout_micros: micros(timeout),
        };
        self.queues.clone().extend(request).await.map_err(error)?;
        Ok(())
    }

    /// What `queue` holds and has done.
    ///
    /// # Errors
    /// `QueueNotFound`, `Unavailable`.
    pub async fn queue_stats(&self, queue: &QueueName) -> Result<QueueStats> {
        let request = v1::StatsRequest {
            queue: queue.to_string(),
        };
        let response = self.queues.clone().stats(request).await.map_err(error)?;
        Ok(response.into_inner().stats.unwrap_or_default().into())
    }

    /// Every queue with its settings and statistics, by name.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn list_queues(&self) -> Result<Vec<QueueInfo>> {
        let response = self
            .queues
            .clone()
            .list_queues(v1::ListQueuesRequest {})
            .await
            .map_err(error)?;
        response
            .into_inner()
            .queues
            .into_iter()
            .map(|q| convert::queue_info(q).map_err(error))
            .collect()
    }

    /// Moves the dead letters of `dead_letter_queue` back to the queues they
    /// came from, or all to `to`; returns how many moved.
    ///
    /// # Errors
    /// `QueueNotFound`; `InvalidArgument` when the queue is not a
    /// dead-letter queue; `Unavailable`.
    pub async fn redrive(
        &self,
        dead_letter_queue: &QueueName,
        to: Option<&QueueName>,
    ) -> Result<u64> {
        let request = v1::RedriveRequest {
            dead_letter_queue: dead_letter_queue.to_string(),
            to: to.map(ToString::to_string),
        };
        let response = self.queues.clone().redrive(request).await.map_err(error)?;
        Ok(response.into_inner().moved)
    }

    /// Deletes every message of `queue`, in flight or not; returns how many.
    ///
    /// # Errors
    /// `QueueNotFound`, `Unavailable`.
    pub async fn purge(&self, queue: &QueueName) -> Result<u64> {
        let request = v1::PurgeRequest {
            queue: queue.to_string(),
        };
        let response = self.queues.clone().purge(request).await.map_err(error)?;
        Ok(response.into_inner().purged)
    }

    /// Deletes `queue`, its settings and its messages.
    ///
    /// # Errors
    /// `QueueNotFound`, `Unavailable`.
    pub async fn delete_queue(&self, queue: &QueueName) -> Result<()> {
        let request = v1::DeleteQueueRequest {
            queue: queue.to_string(),
        };
        self.queues
            .clone()
            .delete_queue(request)
            .await
            .map_err(error)?;
        Ok(())
    }
}
