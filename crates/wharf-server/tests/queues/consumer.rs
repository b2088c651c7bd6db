//! `Client::consumer`: a dequeue always one call ahead of the caller.

use std::time::{Duration, Instant};

use wharf_client::Consumer;
use wharf_core::{DequeueOptions, NewMessage, QueueName};

use super::q;
use super::support::{Running, start};

fn one_at_a_time(wait: Duration) -> DequeueOptions {
    DequeueOptions {
        max_messages: 1,
        wait,
        ..DequeueOptions::default()
    }
}

async fn enqueue(r: &Running, queue: &QueueName, data: &'static str) {
    r.client
        .enqueue(queue, NewMessage::new(data))
        .await
        .unwrap();
}

/// Waits (up to 5 s) until `queue` has `n` messages in flight.
async fn in_flight(r: &Running, queue: &QueueName, n: u64) {
    let started = Instant::now();
    loop {
        let stats = r.client.queue_stats(queue).await.unwrap();
        if stats.in_flight == n {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{} in flight, expected {n}",
            stats.in_flight
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A server whose queue `jobs` held "a", and a long-polling consumer that
/// has taken it (its call ahead now waits).
async fn long_polling_after_taking_a() -> (Running, QueueName, Consumer) {
    let r = start().await;
    let jobs = q("jobs");
    enqueue(&r, &jobs, "a").await;
    let mut consumer = r
        .client
        .consumer(&jobs, one_at_a_time(Duration::from_secs(20)));
    assert_eq!(data(&consumer.next().await.unwrap()), [b"a"]);
    (r, jobs, consumer)
}

fn data(batch: &[wharf_core::Delivery]) -> Vec<&[u8]> {
    batch.iter().map(|d| d.data.as_ref()).collect()
}

#[tokio::test]
async fn a_consumer_dequeues_the_next_batch_while_its_caller_works_on_one() {
    let r = start().await;
    let jobs = q("jobs");
    for m in ["a", "b", "c"] {
        enqueue(&r, &jobs, m).await;
    }
    let mut consumer = r.client.consumer(&jobs, one_at_a_time(Duration::ZERO));
    assert_eq!(data(&consumer.next().await.unwrap()), [b"a"]);
    // "b" is leased by the call ahead before the caller asks for it.
    in_flight(&r, &jobs, 2).await;
    assert_eq!(data(&consumer.next().await.unwrap()), [b"b"]);
    assert_eq!(data(&consumer.next().await.unwrap()), [b"c"]);
    assert!(consumer.next().await.unwrap().is_empty());
    consumer.close().await.unwrap();
}

#[tokio::test]
async fn closing_gives_the_batch_fetched_ahead_back() {
    let r = start().await;
    let jobs = q("jobs");
    enqueue(&r, &jobs, "a").await;
    enqueue(&r, &jobs, "b").await;
    let mut consumer = r.client.consumer(&jobs, one_at_a_time(Duration::ZERO));
    let first = consumer.next().await.unwrap();
    assert_eq!(data(&first), [b"a"]);
    in_flight(&r, &jobs, 2).await;
    consumer.close().await.unwrap();
    let stats = r.client.queue_stats(&jobs).await.unwrap();
    assert_eq!((stats.visible, stats.in_flight), (1, 1));
    let again = r.client.dequeue(&jobs, one_at_a_time(Duration::ZERO)).await;
    let again = again.unwrap();
    assert_eq!(data(&again), [b"b"]);
    assert_eq!(
        again[0].delivery_attempt, 2,
        "the fetch ahead was a delivery"
    );
}

#[tokio::test]
async fn closing_cancels_a_waiting_call_ahead_which_takes_nothing() {
    let (r, jobs, consumer) = long_polling_after_taking_a().await;
    let started = Instant::now();
    consumer.close().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Let the server see the call go away before a message arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    enqueue(&r, &jobs, "b").await;
    let b = r.client.dequeue(&jobs, one_at_a_time(Duration::ZERO)).await;
    let b = b.unwrap();
    assert_eq!(data(&b), [b"b"]);
    assert_eq!(b[0].delivery_attempt, 1);
}

#[tokio::test]
async fn a_message_enqueued_while_the_caller_works_waits_in_the_call_ahead() {
    let (r, jobs, mut consumer) = long_polling_after_taking_a().await;
    enqueue(&r, &jobs, "b").await;
    // Delivered to the call ahead: leased before the caller asks again.
    in_flight(&r, &jobs, 2).await;
    assert_eq!(data(&consumer.next().await.unwrap()), [b"b"]);
    consumer.close().await.unwrap();
}
