//! Scenarios of the [`QueueStore`] contract.
//!
//! Every scenario runs on a [`ManualClock`]: timeouts, delays and long-poll
//! waits pass by moving the clock, never by sleeping. The few real-time
//! bounds (`within`) only stop a broken backend from hanging the test.
#![allow(missing_docs)] // each scenario's name is its documentation

use std::sync::Arc;
use std::time::Duration;

use wharf_core::{
    Clock, Delivery, DequeueOptions, Error, ManualClock, NewMessage, QueueName, QueueSettings,
    QueueStats, Receipt, Timestamp,
};

use crate::QueueStore;

mod dead_letters;
mod delivery;
mod leases;
mod lifecycle;
mod long_poll;
mod reject;

pub use dead_letters::*;
pub use delivery::*;
pub use leases::*;
pub use lifecycle::*;
pub use long_poll::*;
pub use reject::*;

const MICRO: Duration = Duration::from_micros(1);

fn q(name: &str) -> QueueName {
    QueueName::new(name).expect("valid test queue name")
}

fn settings(
    max_delivery_attempts: u32,
    dead_letter_queue: Option<&str>,
    vt: Duration,
) -> QueueSettings {
    QueueSettings {
        max_delivery_attempts,
        dead_letter_queue: dead_letter_queue.map(q),
        visibility_timeout: vt,
    }
}

async fn create(queues: &Arc<dyn QueueStore>, queue: &str, s: QueueSettings) {
    queues
        .create_queue(&q(queue), &s)
        .await
        .expect("queue is created");
}

async fn enqueue(queues: &Arc<dyn QueueStore>, queue: &str, message: NewMessage) -> uuid::Uuid {
    let enqueued = queues
        .enqueue(&q(queue), vec![message])
        .await
        .expect("enqueue succeeds");
    assert_eq!(enqueued.len(), 1, "one outcome per message");
    assert!(!enqueued[0].duplicate);
    enqueued[0].message_id
}

async fn enqueue_data(queues: &Arc<dyn QueueStore>, queue: &str, data: &str) -> uuid::Uuid {
    enqueue(queues, queue, NewMessage::new(data.to_owned())).await
}

fn options(max_messages: u32, vt: Duration) -> DequeueOptions {
    DequeueOptions {
        visibility_timeout: Some(vt),
        max_messages,
        wait: Duration::ZERO,
    }
}

async fn dequeue(
    queues: &Arc<dyn QueueStore>,
    queue: &str,
    max_messages: u32,
    vt: Duration,
) -> Vec<Delivery> {
    queues
        .dequeue(&q(queue), options(max_messages, vt))
        .await
        .expect("dequeue succeeds")
}

/// Dequeues and expects exactly one delivery.
async fn dequeue_one(queues: &Arc<dyn QueueStore>, queue: &str, vt: Duration) -> Delivery {
    let mut got = dequeue(queues, queue, 1, vt).await;
    assert_eq!(
        got.len(),
        1,
        "expected one delivery from `{queue}`, got {got:?}"
    );
    got.remove(0)
}

async fn assert_nothing_visible(queues: &Arc<dyn QueueStore>, queue: &str, when: &str) {
    let got = dequeue(queues, queue, 10, Duration::from_secs(1)).await;
    assert!(
        got.is_empty(),
        "nothing is visible in `{queue}` {when}, got {got:?}"
    );
}

fn data(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.data).into_owned()
}

fn datas(ds: &[Delivery]) -> Vec<String> {
    ds.iter().map(data).collect()
}

async fn stats(queues: &Arc<dyn QueueStore>, queue: &str) -> QueueStats {
    queues.stats(&q(queue)).await.expect("queue has stats")
}

async fn ack(
    queues: &Arc<dyn QueueStore>,
    queue: &str,
    receipt: &Receipt,
) -> wharf_core::Result<()> {
    let mut outcomes = queues
        .ack(&q(queue), std::slice::from_ref(receipt))
        .await
        .expect("the acknowledge call succeeds as a whole");
    assert_eq!(outcomes.len(), 1, "one outcome per receipt");
    outcomes.remove(0)
}

fn assert_lease_lost(
    result: wharf_core::Result<()>,
    queue: &str,
    message_id: uuid::Uuid,
    what: &str,
) {
    assert!(
        matches!(&result, Err(Error::LeaseLost { queue: got, message_id: id, .. })
            if got.as_str() == queue && *id == message_id),
        "{what}: expected LeaseLost on message {message_id} of `{queue}`, got {result:?}"
    );
}

fn assert_invalid_argument<T: std::fmt::Debug>(result: wharf_core::Result<T>, what: &str) {
    assert!(
        matches!(result, Err(Error::InvalidArgument(_))),
        "{what}: expected InvalidArgument, got {result:?}"
    );
}

fn assert_queue_not_found<T: std::fmt::Debug>(
    result: wharf_core::Result<T>,
    queue: &str,
    what: &str,
) {
    assert!(
        matches!(&result, Err(Error::QueueNotFound(got)) if got.as_str() == queue),
        "{what}: expected QueueNotFound(`{queue}`), got {result:?}"
    );
}

/// Awaits a spawned task, failing the scenario if it takes more than a few
/// real seconds (the clock is not moved meanwhile).
async fn within<T>(task: tokio::task::JoinHandle<T>, what: &str) -> T {
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap_or_else(|_| panic!("{what}: did not finish within 5 real seconds"))
        .expect("task does not panic")
}

/// Starts a long-polling dequeue and lets it reach its wait.
async fn spawn_long_poll(
    queues: &Arc<dyn QueueStore>,
    queue: &str,
    wait: Duration,
) -> tokio::task::JoinHandle<Vec<Delivery>> {
    let queues = queues.clone();
    let queue = q(queue);
    let task = tokio::spawn(async move {
        queues
            .dequeue(
                &queue,
                DequeueOptions {
                    visibility_timeout: Some(Duration::from_secs(60)),
                    max_messages: 10,
                    wait,
                },
            )
            .await
            .expect("long-polling dequeue succeeds")
    });
    settle().await;
    assert!(
        !task.is_finished(),
        "the long poll is waiting, not returned"
    );
    task
}

/// Gives spawned tasks a moment of real time to reach their await points.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn at(clock: &ManualClock) -> Timestamp {
    clock.now()
}
