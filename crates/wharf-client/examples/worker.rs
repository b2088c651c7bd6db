//! A queue worker: sends the emails of `email-queue`.
//!
//! It long-polls for messages (no sleep loop), keeps each message invisible
//! while it works on it (extending the visibility timeout for jobs that run
//! long), acknowledges what it sent, and nacks with a reason what it could
//! not — the reason becomes the dead letter's `LastError` once the queue's
//! delivery attempts are used up. Ctrl-C stops it.
//!
//! ```text
//! wharf serve &
//! cargo run -p wharf-client --example worker -- http://127.0.0.1:50051
//! wharf queue enqueue email-queue --data '{"to":"ada@example.com","subject":"Welcome!","body":"Hello Ada"}'
//! ```
//!
//! Settings: the server URL as the first argument or `WHARF_SERVER`
//! (default `http://127.0.0.1:50051`); `WORKER_QUEUE` (default
//! `email-queue`); `WORKER_EXIT_AFTER=N` stops after N messages.

use std::future::Future;
use std::time::Duration;

use serde::Deserialize;
use wharf_client::Client;
use wharf_core::{Delivery, DequeueOptions, Error, QueueName, QueueSettings, Result};

/// How long a delivered message stays invisible to other workers.
const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a running job pushes its visibility timeout out again: well
/// before it ends, so one slow extend does not lose the message.
const EXTEND_EVERY: Duration = Duration::from_secs(10);
/// How long one dequeue waits for a message (the most the server allows).
const WAIT: Duration = Duration::from_secs(20);
/// Most messages taken per dequeue.
const BATCH: u32 = 10;
/// When a failed email is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// What a message of the queue holds.
#[derive(Debug, Deserialize)]
struct Email {
    to: String,
    subject: String,
    body: String,
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("WHARF_SERVER").ok())
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let queue: QueueName = std::env::var("WORKER_QUEUE")
        .unwrap_or_else(|_| "email-queue".to_owned())
        .parse()?;
    let exit_after = std::env::var("WORKER_EXIT_AFTER")
        .ok()
        .map(|n| n.parse::<u64>())
        .transpose()?;

    let client = Client::connect(&url).await?;
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let handled = run(&client, &queue, exit_after, stop).await?;
    eprintln!("worker stopped after {handled} messages");
    Ok(())
}

/// Works on `queue` until `stop` completes or `exit_after` messages are
/// handled; returns how many were.
///
/// # Errors
/// What the server answers that a worker cannot go on after.
pub async fn run(
    client: &Client,
    queue: &QueueName,
    exit_after: Option<u64>,
    stop: impl Future<Output = ()>,
) -> Result<u64> {
    match client.create_queue(queue, QueueSettings::default()).await {
        // It exists with settings someone chose: use those.
        Ok(_) | Err(Error::QueueExists { .. }) => {}
        Err(e) => return Err(e),
    }
    tokio::pin!(stop);
    let mut handled = 0;
    while exit_after.is_none_or(|n| handled < n) {
        let options = DequeueOptions {
            visibility_timeout: Some(VISIBILITY_TIMEOUT),
            max_messages: exit_after.map_or(BATCH, |n| BATCH.min((n - handled) as u32)),
            wait: WAIT,
        };
        // Stopping abandons the long poll; a message delivered at that very
        // moment is not lost: it is visible again after its timeout.
        let deliveries = tokio::select! {
            () = &mut stop => break,
            deliveries = client.dequeue(queue, options) => deliveries,
        };
        let deliveries = match deliveries {
            Ok(deliveries) => deliveries,
            Err(Error::Unavailable(why)) => {
                eprintln!("server unavailable ({why}); retrying in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        for delivery in deliveries {
            handle(client, queue, delivery).await?;
            handled += 1;
        }
    }
    Ok(handled)
}

/// Sends one email, then acknowledges it, or nacks it with the reason.
async fn handle(client: &Client, queue: &QueueName, delivery: Delivery) -> Result<()> {
    let receipt = delivery.receipt.clone();
    // While the job runs, a background task keeps the message invisible.
    let keep_leased = tokio::spawn(keep_leased(client.clone(), queue.clone(), delivery.clone()));
    let outcome = process(&delivery).await;
    keep_leased.abort();

    let answered = match outcome {
        Ok(()) => client.ack(queue, &receipt).await,
        Err(reason) => {
            eprintln!(
                "message {} (attempt {}) failed: {reason}",
                delivery.message_id, delivery.delivery_attempt
            );
            client
                .nack(queue, &receipt, RETRY_AFTER, Some(reason))
                .await
        }
    };
    match answered {
        // The message was delivered again meanwhile (this worker was too
        // slow, or paused): the new delivery's worker owns it now.
        Err(Error::LeaseLost { reason, .. }) => {
            eprintln!("message {} lost its lease: {reason}", delivery.message_id);
            Ok(())
        }
        other => other,
    }
}

/// Extends the visibility timeout of `delivery` every [`EXTEND_EVERY`]
/// until aborted, or until the lease is gone.
async fn keep_leased(client: Client, queue: QueueName, delivery: Delivery) {
    loop {
        tokio::time::sleep(EXTEND_EVERY).await;
        if let Err(e) = client
            .extend(&queue, &delivery.receipt, VISIBILITY_TIMEOUT)
            .await
        {
            eprintln!("cannot extend message {}: {e}", delivery.message_id);
            return;
        }
    }
}

/// The job. A real worker would talk to a mail server here.
async fn process(delivery: &Delivery) -> std::result::Result<(), String> {
    let email: Email =
        serde_json::from_slice(&delivery.data).map_err(|e| format!("not an email message: {e}"))?;
    if !email.to.contains('@') {
        return Err(format!("`{}` is not an email address", email.to));
    }
    // Stands in for the SMTP round trip.
    tokio::time::sleep(Duration::from_millis(20)).await;
    println!(
        "sent `{}` to {} ({} bytes)",
        email.subject,
        email.to,
        email.body.len()
    );
    Ok(())
}
