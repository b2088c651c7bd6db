//! Queues through the engine facade: bounds are checked before storage, and
//! a bad request changes nothing.

use std::sync::Arc;
use std::time::Duration;

use wharf::{Config, DequeueOptions, Error, NewMessage, QueueName, QueueSettings, Receipt, Wharf};
use wharf_core::{ManualClock, Timestamp};

async fn open() -> (Wharf, ManualClock, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_micros(1_767_225_600_000_000));
    let wharf = Wharf::open_with_clock(&Config::embedded(dir.path()), Arc::new(clock.clone()))
        .await
        .unwrap();
    (wharf, clock, dir)
}

fn jobs() -> QueueName {
    "jobs".parse().unwrap()
}

fn invalid(result: wharf::Result<impl std::fmt::Debug>, needle: &str) {
    match result {
        Err(Error::InvalidArgument(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
        other => panic!("expected InvalidArgument containing {needle:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn enqueue_dequeue_ack_round_trip() {
    let (wharf, _clock, _dir) = open().await;
    let sent = wharf
        .enqueue(&jobs(), NewMessage::new("hello").with_metadata("k", "v"))
        .await
        .unwrap();
    let got = wharf
        .dequeue(&jobs(), DequeueOptions::default())
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message_id, sent.message_id);
    assert_eq!(got[0].data.as_ref(), b"hello");
    assert_eq!(got[0].metadata["k"], "v");
    assert_eq!(got[0].delivery_attempt, 1);
    wharf.ack(&jobs(), &got[0].receipt).await.unwrap();
    assert!(matches!(
        wharf.ack(&jobs(), &got[0].receipt).await,
        Err(Error::LeaseLost { .. })
    ));
    assert_eq!(wharf.queue_stats(&jobs()).await.unwrap().depth(), 0);
    wharf.close().await;
}

#[tokio::test]
async fn out_of_bounds_requests_are_refused_and_change_nothing() {
    let (wharf, _clock, _dir) = open().await;
    wharf.enqueue(&jobs(), NewMessage::new("x")).await.unwrap();
    let before = wharf.queue_stats(&jobs()).await.unwrap();
    let opts = DequeueOptions::default();
    invalid(
        wharf
            .dequeue(
                &jobs(),
                DequeueOptions {
                    max_messages: 0,
                    ..opts
                },
            )
            .await,
        "max_messages must be 1 to 100",
    );
    invalid(
        wharf
            .dequeue(
                &jobs(),
                DequeueOptions {
                    max_messages: 101,
                    ..opts
                },
            )
            .await,
        "max_messages must be 1 to 100",
    );
    invalid(
        wharf
            .dequeue(
                &jobs(),
                DequeueOptions {
                    wait: Duration::from_secs(21),
                    ..opts
                },
            )
            .await,
        "wait must be at most 20s",
    );
    for timeout in [Duration::ZERO, Duration::from_secs(12 * 3600 + 1)] {
        invalid(
            wharf
                .dequeue(
                    &jobs(),
                    DequeueOptions {
                        visibility_timeout: Some(timeout),
                        ..opts
                    },
                )
                .await,
            "visibility_timeout must be more than 0 and at most 12h",
        );
    }
    invalid(
        wharf
            .enqueue(&jobs(), NewMessage::new(vec![0u8; 1024 * 1024 + 1]))
            .await,
        "inline limit",
    );
    invalid(
        wharf.enqueue_batch(&jobs(), vec![]).await,
        "at least one message",
    );
    invalid(
        wharf
            .ack(&jobs(), &Receipt::new("definitely-not-a-receipt"))
            .await,
        "malformed receipt",
    );
    invalid(
        wharf
            .create_queue(
                &"other".parse().unwrap(),
                QueueSettings {
                    max_delivery_attempts: 0,
                    ..Default::default()
                },
            )
            .await,
        "max_delivery_attempts",
    );
    assert!(matches!(
        wharf.dequeue(&"missing".parse().unwrap(), opts).await,
        Err(Error::QueueNotFound(q)) if q.as_str() == "missing"
    ));
    assert_eq!(wharf.queue_stats(&jobs()).await.unwrap(), before);
    assert_eq!(wharf.list_queues().await.unwrap().len(), 1);
    wharf.close().await;
}

#[tokio::test]
async fn an_expired_last_attempt_is_dead_lettered_by_the_timer() {
    let (wharf, clock, _dir) = open().await;
    let settings = QueueSettings {
        max_delivery_attempts: 1,
        ..Default::default()
    };
    wharf.create_queue(&jobs(), settings).await.unwrap();
    wharf.enqueue(&jobs(), NewMessage::new("x")).await.unwrap();
    let got = wharf
        .dequeue(&jobs(), DequeueOptions::default())
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    let dlq: QueueName = "dlq".parse().unwrap();
    let waiter = {
        let wharf = wharf.clone();
        let dlq = dlq.clone();
        tokio::spawn(async move {
            loop {
                // The DLQ does not exist until the first dead letter.
                match wharf
                    .dequeue(
                        &dlq,
                        DequeueOptions {
                            wait: Duration::from_secs(20),
                            ..Default::default()
                        },
                    )
                    .await
                {
                    Err(Error::QueueNotFound(_)) => tokio::task::yield_now().await,
                    other => return other,
                }
            }
        })
    };
    clock.advance(Duration::from_secs(30));
    let dead = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the timer dead-letters without a client call")
        .unwrap()
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].metadata["LastError"], "visibility timeout expired");
    assert_eq!(dead[0].metadata["OriginalStreamName"], "jobs");
    assert_eq!(dead[0].metadata["DeliveryAttempts"], "1");
    assert_eq!(wharf.queue_stats(&jobs()).await.unwrap().dead_letters, 1);
    wharf.close().await;
}
