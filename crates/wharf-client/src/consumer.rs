//! A consumer that keeps its next dequeue in flight while the caller works
//! on the current batch.

use std::time::Duration;

use tokio::task::JoinHandle;
use wharf_core::{Delivery, DequeueOptions, Error, QueueName, Result};

use crate::Client;

/// Dequeues from one queue with one set of options, always one call ahead:
/// when [`Consumer::next`] returns a batch, the dequeue of the next one is
/// already on its way, so a message enqueued while the caller works on the
/// batch is delivered to that waiting call at once (on the embedded engine,
/// by the very commit that enqueued it) instead of waiting for the caller's
/// next request. This is the prefetch of AMQP's `basic.qos` and of
/// JetStream's pull consumers, one batch deep.
///
/// The batch fetched ahead is leased from the moment it is delivered, so
/// its visibility timeout runs while the caller still works on the batch
/// before it; choose the timeout for two batches' work. [`Consumer::close`]
/// gives a batch fetched ahead and not taken back to the queue (each
/// message visible again at once, its delivery attempt counted). Dropping
/// the consumer instead cancels the call in flight: a long poll still
/// waiting takes nothing (what the server takes for it as it is cancelled,
/// the server gives back at once), but a batch whose answer was already on
/// its way stays invisible until its visibility timeout ends.
///
/// ```no_run
/// # async fn run(client: wharf_client::Client) -> wharf_core::Result<()> {
/// use std::time::Duration;
/// use wharf_core::DequeueOptions;
///
/// let queue = "email-queue".parse().unwrap();
/// let options = DequeueOptions {
///     max_messages: 100,
///     wait: Duration::from_secs(20),
///     ..DequeueOptions::default()
/// };
/// let mut consumer = client.consumer(&queue, options);
/// for _ in 0..10 {
///     let batch = consumer.next().await?;
///     // ... process each delivery, then:
///     let receipts: Vec<_> = batch.into_iter().map(|d| d.receipt).collect();
///     if !receipts.is_empty() {
///         client.ack_batch(&queue, &receipts).await?;
///     }
/// }
/// consumer.close().await?;
/// # Ok(()) }
/// ```
pub struct Consumer {
    client: Client,
    queue: QueueName,
    options: DequeueOptions,
    /// The dequeue of the next batch, once one batch was taken.
    ahead: Option<JoinHandle<Result<Vec<Delivery>>>>,
}

impl Client {
    /// A [`Consumer`] of `queue` that dequeues with `options`, one call
    /// ahead of its caller.
    pub fn consumer(&self, queue: &QueueName, options: DequeueOptions) -> Consumer {
        Consumer {
            client: self.clone(),
            queue: queue.clone(),
            options,
            ahead: None,
        }
    }
}

impl Consumer {
    /// The next batch: what the call ahead delivered (waiting for it if it
    /// is still waiting), or, on the first call and after an error, a
    /// dequeue made now. Empty when the wait ended with no message.
    ///
    /// # Errors
    /// As [`Client::dequeue`]. After an error nothing is fetched ahead.
    pub async fn next(&mut self) -> Result<Vec<Delivery>> {
        let batch = match self.ahead.take() {
            Some(ahead) => joined(ahead.await),
            None => self.client.dequeue(&self.queue, self.options).await,
        };
        if batch.is_ok() {
            let (client, queue, options) = (self.client.clone(), self.queue.clone(), self.options);
            self.ahead = Some(tokio::spawn(async move {
                client.dequeue(&queue, options).await
            }));
        }
        batch
    }

    /// Stops fetching ahead: a call still waiting is cancelled (it takes
    /// nothing: what the server took for it as it was cancelled, the
    /// server gives back), and a batch it already received is given back,
    /// each message visible again at once. Only an answer in transit at
    /// the moment of the cancellation waits out its visibility timeout.
    ///
    /// # Errors
    /// The first error giving a message back (its lease was lost, the
    /// server is unavailable); the others are still given back.
    pub async fn close(mut self) -> Result<()> {
        let Some(ahead) = self.ahead.take() else {
            return Ok(());
        };
        ahead.abort();
        // Cancelled, or failed: nothing was taken.
        let Ok(Ok(fetched)) = ahead.await else {
            return Ok(());
        };
        let releases = fetched.iter().map(|delivery| {
            self.client
                .nack(&self.queue, &delivery.receipt, Duration::ZERO, None)
        });
        futures::future::join_all(releases)
            .await
            .into_iter()
            .collect()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(ahead) = self.ahead.take() {
            ahead.abort();
        }
    }
}

fn joined(
    joined: std::result::Result<Result<Vec<Delivery>>, tokio::task::JoinError>,
) -> Result<Vec<Delivery>> {
    joined.unwrap_or_else(|e| {
        Err(Error::Unavailable(format!(
            "the dequeue fetched ahead did not finish: {e}"
        )))
    })
}
