//! The queue API end to end: a real server on loopback, the real client.
//!
//! Round trips and long polling here; refused requests in [`bad_input`],
//! the HTTP admin API and metrics in [`admin`].

#[path = "queues/admin.rs"]
mod admin;
#[path = "queues/bad_input.rs"]
mod bad_input;
#[path = "queues/consumer.rs"]
mod consumer;
#[path = "queues/enqueue_stream.rs"]
mod enqueue_stream;
mod support;

use std::time::{Duration, Instant};

use support::{Running, start};
use wharf_client::Client;
use wharf_core::queue::{LAST_ERROR, ORIGINAL_STREAM_NAME};
use wharf_core::{
    DequeueOptions, Error, Limits, NewMessage, QueueCreated, QueueName, QueueSettings, QueueStats,
    Receipt,
};
use wharf_proto::v1::queues_client::QueuesClient;

impl Running {
    fn url(&self) -> String {
        format!("http://{}", self.server.grpc_addr())
    }

    async fn raw(&self) -> QueuesClient<tonic::transport::Channel> {
        QueuesClient::connect(self.url()).await.unwrap()
    }

    /// The queue's counts, without the age of its oldest message (which
    /// moves with the clock).
    async fn counts(&self, queue: &QueueName) -> QueueStats {
        let stats = self.client.queue_stats(queue).await.unwrap();
        QueueStats {
            oldest_age_micros: None,
            ..stats
        }
    }
}

fn q(name: &str) -> QueueName {
    name.parse().unwrap()
}

fn take(n: u32) -> DequeueOptions {
    DequeueOptions {
        max_messages: n,
        ..DequeueOptions::default()
    }
}

/// A running server with `queue` holding one visible message.
async fn start_with_one_message(queue: &QueueName) -> Running {
    let r = start().await;
    r.client.enqueue(queue, NewMessage::new("m")).await.unwrap();
    r
}

fn invalid_argument(err: &Error, needle: &str) -> bool {
    matches!(err, Error::InvalidArgument(m) if m.contains(needle))
}

// ---------------------------------------------------------------------------
// Round trips

#[tokio::test]
async fn create_enqueue_dequeue_and_ack_round_trip() {
    let r = start().await;
    let jobs = q("jobs");
    let settings = QueueSettings {
        max_delivery_attempts: 3,
        dead_letter_queue: Some(q("jobs-dlq")),
        visibility_timeout: Duration::from_secs(45),
    };
    let created = r.client.create_queue(&jobs, settings.clone()).await;
    assert_eq!(created, Ok(QueueCreated::Created));
    let again = r.client.create_queue(&jobs, settings.clone()).await;
    assert_eq!(again, Ok(QueueCreated::Existed));

    let message = NewMessage::new(vec![0u8, 159, 146, 150])
        .with_metadata("tenant", "acme")
        .with_content_type("application/x-test")
        .with_dedup_id("order-1");
    let first = r.client.enqueue(&jobs, message.clone()).await.unwrap();
    assert!(!first.duplicate);
    let repeat = r.client.enqueue(&jobs, message.clone()).await.unwrap();
    assert!(repeat.duplicate, "{repeat:?}");
    assert_eq!(repeat.message_id, first.message_id);
    let batch = r
        .client
        .enqueue_batch(&jobs, vec![NewMessage::new("b"), NewMessage::new("c")])
        .await
        .unwrap();
    assert_eq!(batch.len(), 2);
    assert!(
        batch[0].message_id < batch[1].message_id,
        "time-ordered ids"
    );

    let deliveries = r.client.dequeue(&jobs, take(10)).await.unwrap();
    assert_eq!(deliveries.len(), 3);
    let d = &deliveries[0];
    assert_eq!(d.message_id, first.message_id);
    assert_eq!(d.data, message.data);
    assert_eq!(d.metadata, message.metadata);
    assert_eq!(d.content_type, "application/x-test");
    assert_eq!(d.delivery_attempt, 1);
    let age = wharf_core::Timestamp::from_system_time(std::time::SystemTime::now())
        .duration_since(d.enqueued_at);
    assert!(age < Duration::from_secs(60), "enqueued {age:?} ago");
    let ids: Vec<_> = deliveries.iter().map(|d| d.message_id).collect();
    assert_eq!(
        ids,
        [first.message_id, batch[0].message_id, batch[1].message_id]
    );

    r.client.ack(&jobs, &deliveries[0].receipt).await.unwrap();
    let receipts: Vec<Receipt> = deliveries[1..].iter().map(|d| d.receipt.clone()).collect();
    let results = r.client.ack_batch(&jobs, &receipts).await.unwrap();
    assert_eq!(results, vec![Ok(()), Ok(())]);
    let stats = r.counts(&jobs).await;
    assert_eq!((stats.depth(), stats.deliveries, stats.acks), (0, 3, 3));
    r.server.shutdown().await;
}

#[tokio::test]
async fn nack_extend_stats_and_list_round_trip() {
    let r = start().await;
    let jobs = q("jobs");
    r.client
        .enqueue_batch(&jobs, vec![NewMessage::new("a"), NewMessage::new("b")])
        .await
        .unwrap();
    let options = DequeueOptions {
        visibility_timeout: Some(Duration::from_secs(60)),
        max_messages: 2,
        wait: Duration::ZERO,
    };
    let deliveries = r.client.dequeue(&jobs, options).await.unwrap();
    assert_eq!(deliveries.len(), 2);
    r.client
        .extend(&jobs, &deliveries[1].receipt, Duration::from_secs(600))
        .await
        .unwrap();
    r.client
        .nack(
            &jobs,
            &deliveries[0].receipt,
            Duration::ZERO,
            Some("busy".into()),
        )
        .await
        .unwrap();

    let stats = r.client.queue_stats(&jobs).await.unwrap();
    assert_eq!((stats.visible, stats.in_flight, stats.delayed), (1, 1, 0));
    assert_eq!((stats.deliveries, stats.nacks, stats.acks), (2, 1, 0));
    assert!(stats.oldest_age_micros.is_some());

    let again = r.client.dequeue(&jobs, take(1)).await.unwrap();
    assert_eq!(again[0].message_id, deliveries[0].message_id);
    assert_eq!(again[0].delivery_attempt, 2);
    assert_ne!(again[0].receipt, deliveries[0].receipt);

    let queues = r.client.list_queues().await.unwrap();
    assert_eq!(queues.len(), 1);
    assert_eq!(queues[0].name, jobs);
    assert_eq!(queues[0].settings, QueueSettings::default());
    assert_eq!(queues[0].stats.in_flight, 2);
    r.server.shutdown().await;
}

#[tokio::test]
async fn dead_letters_redrive_purge_and_delete_round_trip() {
    let r = start().await;
    let (jobs, dlq) = (q("jobs"), q("jobs-dlq"));
    let settings = QueueSettings {
        max_delivery_attempts: 1,
        dead_letter_queue: Some(dlq.clone()),
        ..QueueSettings::default()
    };
    r.client.create_queue(&jobs, settings).await.unwrap();
    r.client.enqueue(&jobs, NewMessage::new("x")).await.unwrap();
    let d = r.client.dequeue(&jobs, take(1)).await.unwrap().remove(0);
    r.client
        .nack(&jobs, &d.receipt, Duration::ZERO, Some("bad input".into()))
        .await
        .unwrap();
    assert_eq!(r.counts(&jobs).await.dead_lettered, 1);
    assert_eq!(r.counts(&jobs).await.dead_letters, 1);

    let dead = r.client.dequeue(&dlq, take(1)).await.unwrap().remove(0);
    assert_eq!(dead.metadata[ORIGINAL_STREAM_NAME], "jobs");
    assert_eq!(dead.metadata[LAST_ERROR], "bad input");
    r.client
        .nack(&dlq, &dead.receipt, Duration::ZERO, None)
        .await
        .unwrap();

    assert_eq!(r.client.redrive(&dlq, None).await, Ok(1));
    let back = r.client.dequeue(&jobs, take(1)).await.unwrap().remove(0);
    assert_eq!(back.data, d.data);
    assert!(
        !back.metadata.contains_key(LAST_ERROR),
        "{:?}",
        back.metadata
    );
    assert_eq!(back.delivery_attempt, 1, "attempts start over");

    let elsewhere = q("elsewhere");
    r.client
        .enqueue_batch(&elsewhere, vec![NewMessage::new("1"), NewMessage::new("2")])
        .await
        .unwrap();
    assert_eq!(r.client.purge(&elsewhere).await, Ok(2));
    assert_eq!(r.counts(&elsewhere).await.depth(), 0);
    r.client.delete_queue(&elsewhere).await.unwrap();
    assert_eq!(
        r.client.queue_stats(&elsewhere).await,
        Err(Error::QueueNotFound(elsewhere.clone()))
    );
    let names: Vec<_> = r
        .client
        .list_queues()
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, [jobs, dlq]);
    r.server.shutdown().await;
}

#[tokio::test]
async fn redrive_to_another_queue() {
    let r = start().await;
    let (jobs, dlq, retry) = (q("jobs"), q("dlq"), q("retry"));
    let settings = QueueSettings {
        max_delivery_attempts: 1,
        ..QueueSettings::default()
    };
    r.client.create_queue(&jobs, settings).await.unwrap();
    r.client.enqueue(&jobs, NewMessage::new("x")).await.unwrap();
    let d = r.client.dequeue(&jobs, take(1)).await.unwrap().remove(0);
    r.client
        .nack(&jobs, &d.receipt, Duration::ZERO, None)
        .await
        .unwrap();
    assert_eq!(r.client.redrive(&dlq, Some(&retry)).await, Ok(1));
    assert_eq!(r.counts(&retry).await.visible, 1);
    assert_eq!(r.counts(&jobs).await.depth(), 0);
    r.server.shutdown().await;
}

#[tokio::test]
async fn a_large_batch_within_the_limits_passes_the_grpc_size_limit() {
    let r = start().await;
    let jobs = q("bulk");
    let limits = Limits::default();
    // Fifteen messages just under the inline limit: over tonic's default 4 MiB
    // message size, within the 16 MiB batch limit.
    let size = limits.max_event_bytes - 64;
    let batch: Vec<_> = (0..15u8)
        .map(|i| NewMessage::new(vec![i; size]).with_dedup_id("d".repeat(100) + &i.to_string()))
        .collect();
    let enqueued = r.client.enqueue_batch(&jobs, batch).await.unwrap();
    assert_eq!(enqueued.len(), 15);
    let deliveries = r.client.dequeue(&jobs, take(100)).await.unwrap();
    assert_eq!(deliveries.len(), 15);
    assert!(deliveries.iter().all(|d| d.data.len() == size));
    r.server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Long polling

#[tokio::test]
async fn long_poll_returns_as_soon_as_another_client_enqueues() {
    let r = start().await;
    let jobs = q("jobs");
    r.client
        .create_queue(&jobs, QueueSettings::default())
        .await
        .unwrap();
    let consumer = r.client.clone();
    let queue = jobs.clone();
    let started = Instant::now();
    let poll = tokio::spawn(async move {
        let options = DequeueOptions {
            wait: Duration::from_secs(20),
            ..DequeueOptions::default()
        };
        let deliveries = consumer.dequeue(&queue, options).await;
        (deliveries, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !poll.is_finished(),
        "the dequeue waits while the queue is empty"
    );
    let producer = Client::connect(&r.url()).await.unwrap();
    let id = producer
        .enqueue(&jobs, NewMessage::new("wake"))
        .await
        .unwrap()
        .message_id;
    let (deliveries, elapsed) = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the long poll answers")
        .unwrap();
    let deliveries = deliveries.unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].message_id, id);
    assert!(
        elapsed < Duration::from_secs(5),
        "answered after {elapsed:?}, not at the enqueue"
    );
    r.server.shutdown().await;
}

#[tokio::test]
async fn long_poll_ends_empty_when_the_server_shuts_down() {
    let r = start().await;
    let jobs = q("jobs");
    r.client
        .create_queue(&jobs, QueueSettings::default())
        .await
        .unwrap();
    let consumer = r.client.clone();
    let poll = tokio::spawn(async move {
        let options = DequeueOptions {
            wait: Duration::from_secs(20),
            ..DequeueOptions::default()
        };
        consumer.dequeue(&jobs, options).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), r.server.shutdown())
        .await
        .expect("shutdown does not wait out the long poll");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let answer = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the long poll answers")
        .unwrap();
    assert_eq!(answer, Ok(Vec::new()));
}
