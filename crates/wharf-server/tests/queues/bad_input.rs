//! Bad input: each refused request gets a clear error and changes nothing.

use std::time::{Duration, Instant};

use tonic::Code;
use tonic_types::StatusExt;
use wharf_core::{DequeueOptions, Error, NewMessage, QueueSettings, Receipt};
use wharf_proto::v1;

use super::{invalid_argument, q, start, start_with_one_message, take};

#[tokio::test]
async fn dequeue_from_an_unknown_queue_is_not_found() {
    let r = start().await;
    let err = r.client.dequeue(&q("nope"), take(1)).await.unwrap_err();
    assert_eq!(err, Error::QueueNotFound(q("nope")));
    assert_eq!(err.to_string(), "queue `nope` not found");
    let status = r
        .raw()
        .await
        .dequeue(v1::DequeueRequest {
            queue: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo detail");
    assert_eq!(info.reason, "QUEUE_NOT_FOUND");
    assert_eq!(info.metadata["queue"], "nope");
    assert!(
        r.client.list_queues().await.unwrap().is_empty(),
        "nothing created"
    );
    r.server.shutdown().await;
}

#[tokio::test]
async fn ack_on_an_unknown_queue_is_not_found() {
    let jobs = q("jobs");
    let r = start_with_one_message(&jobs).await;
    let d = r.client.dequeue(&jobs, take(1)).await.unwrap().remove(0);
    let before = r.counts(&jobs).await;
    let err = r.client.ack(&q("nope"), &d.receipt).await.unwrap_err();
    assert_eq!(err, Error::QueueNotFound(q("nope")));
    assert_eq!(err.to_string(), "queue `nope` not found");
    assert_eq!(r.counts(&jobs).await, before);
    assert_eq!(r.client.list_queues().await.unwrap().len(), 1);
    r.server.shutdown().await;
}

#[tokio::test]
async fn visibility_timeouts_of_zero_or_over_twelve_hours_are_refused() {
    let jobs = q("jobs");
    let r = start_with_one_message(&jobs).await;
    let before = r.counts(&jobs).await;
    for timeout in [Duration::ZERO, Duration::from_secs(12 * 3600 + 1)] {
        let options = DequeueOptions {
            visibility_timeout: Some(timeout),
            ..DequeueOptions::default()
        };
        let err = r.client.dequeue(&jobs, options).await.unwrap_err();
        assert!(
            invalid_argument(
                &err,
                "visibility_timeout must be more than 0 and at most 12h"
            ),
            "{timeout:?}: {err:?}"
        );
    }
    let d = r.client.dequeue(&jobs, take(1)).await.unwrap().remove(0);
    let leased = r.counts(&jobs).await;
    for timeout in [Duration::ZERO, Duration::from_secs(12 * 3600 + 1)] {
        let err = r
            .client
            .extend(&jobs, &d.receipt, timeout)
            .await
            .unwrap_err();
        assert!(invalid_argument(&err, "at most 12h"), "{err:?}");
    }
    let err = r
        .client
        .nack(&jobs, &d.receipt, Duration::from_secs(12 * 3600 + 1), None)
        .await
        .unwrap_err();
    assert!(
        invalid_argument(&err, "redeliver_after must be at most 12h"),
        "{err:?}"
    );
    assert_eq!(
        before.deliveries, 0,
        "the refused dequeues delivered nothing"
    );
    assert_eq!(r.counts(&jobs).await, leased);
    r.server.shutdown().await;
}

#[tokio::test]
async fn dequeue_batch_sizes_of_zero_or_over_one_hundred_are_refused() {
    let jobs = q("jobs");
    let r = start_with_one_message(&jobs).await;
    let before = r.counts(&jobs).await;
    for n in [0, 101] {
        let err = r.client.dequeue(&jobs, take(n)).await.unwrap_err();
        assert!(
            invalid_argument(&err, &format!("max_messages must be 1 to 100, not {n}")),
            "{err:?}"
        );
    }
    assert_eq!(r.counts(&jobs).await, before);
    r.server.shutdown().await;
}

#[tokio::test]
async fn a_wait_over_twenty_seconds_is_refused() {
    let jobs = q("jobs");
    let r = start_with_one_message(&jobs).await;
    let before = r.counts(&jobs).await;
    let options = DequeueOptions {
        wait: Duration::from_secs(21),
        ..DequeueOptions::default()
    };
    let started = Instant::now();
    let err = r.client.dequeue(&jobs, options).await.unwrap_err();
    assert!(
        invalid_argument(&err, "wait must be at most 20s, not 21s"),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once"
    );
    assert_eq!(r.counts(&jobs).await, before);
    r.server.shutdown().await;
}

#[tokio::test]
async fn a_message_over_the_inline_limit_is_refused() {
    let jobs = q("jobs");
    let r = start_with_one_message(&jobs).await;
    let before = r.counts(&jobs).await;
    let big = NewMessage::new(vec![7u8; 1024 * 1024 + 1]);
    let err = r.client.enqueue(&jobs, big.clone()).await.unwrap_err();
    assert!(
        invalid_argument(
            &err,
            "message 0: 1048601 bytes; the inline limit is 1048576 bytes"
        ),
        "{err:?}"
    );
    let err = r
        .client
        .enqueue_batch(&jobs, vec![NewMessage::new("ok"), big])
        .await
        .unwrap_err();
    assert!(invalid_argument(&err, "message 1:"), "{err:?}");
    assert_eq!(
        r.counts(&jobs).await,
        before,
        "no part of the batch was written"
    );
    r.server.shutdown().await;
}

#[tokio::test]
async fn a_malformed_receipt_is_refused() {
    let jobs = q("jobs");
    let r = start_with_one_message(&jobs).await;
    r.client.dequeue(&jobs, take(1)).await.unwrap();
    let before = r.counts(&jobs).await;
    let junk = Receipt::new("not-a-receipt");
    let err = r.client.ack(&jobs, &junk).await.unwrap_err();
    assert!(
        invalid_argument(&err, "malformed receipt `not-a-receipt`"),
        "{err:?}"
    );
    let err = r
        .client
        .nack(&jobs, &junk, Duration::ZERO, None)
        .await
        .unwrap_err();
    assert!(invalid_argument(&err, "malformed receipt"), "{err:?}");
    let err = r
        .client
        .extend(&jobs, &junk, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(invalid_argument(&err, "malformed receipt"), "{err:?}");
    assert_eq!(r.counts(&jobs).await, before);
    r.server.shutdown().await;
}

#[tokio::test]
async fn forged_and_foreign_receipts_are_refused() {
    let (jobs, other) = (q("jobs"), q("other"));
    let r = start_with_one_message(&jobs).await;
    r.client
        .enqueue(&other, NewMessage::new("o"))
        .await
        .unwrap();
    let d = r.client.dequeue(&jobs, take(1)).await.unwrap().remove(0);
    r.client.dequeue(&other, take(1)).await.unwrap();
    let (before, before_other) = (r.counts(&jobs).await, r.counts(&other).await);

    // One character changed: still well-formed, but the tag no longer matches.
    let mut text: Vec<char> = d.receipt.as_str().chars().collect();
    text[10] = if text[10] == 'A' { 'B' } else { 'A' };
    let forged = Receipt::new(text.into_iter().collect::<String>());
    let err = r.client.ack(&jobs, &forged).await.unwrap_err();
    assert!(
        invalid_argument(&err, "was not issued by queue `jobs`"),
        "{err:?}"
    );

    let err = r.client.ack(&other, &d.receipt).await.unwrap_err();
    assert!(
        invalid_argument(&err, "was not issued by queue `other`"),
        "{err:?}"
    );

    assert_eq!(r.counts(&jobs).await, before);
    assert_eq!(r.counts(&other).await, before_other);
    r.server.shutdown().await;
}

#[tokio::test]
async fn acknowledging_twice_loses_the_lease() {
    let jobs = q("jobs");
    let r = start_with_one_message(&jobs).await;
    let d = r.client.dequeue(&jobs, take(1)).await.unwrap().remove(0);
    r.client.ack(&jobs, &d.receipt).await.unwrap();
    let before = r.counts(&jobs).await;
    let err = r.client.ack(&jobs, &d.receipt).await.unwrap_err();
    assert!(
        matches!(&err, Error::LeaseLost { queue, message_id, reason }
            if *queue == jobs && *message_id == d.message_id && reason.contains("no longer in the queue")),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with("lease lost on message"),
        "{err}"
    );
    // In a batch, the same receipt fails alone.
    let results = r
        .client
        .ack_batch(&jobs, std::slice::from_ref(&d.receipt))
        .await
        .unwrap();
    assert!(
        matches!(&results[..], [Err(Error::LeaseLost { .. })]),
        "{results:?}"
    );
    assert_eq!(r.counts(&jobs).await, before);
    assert_eq!(before.acks, 1);
    r.server.shutdown().await;
}

#[tokio::test]
async fn lease_lost_on_the_wire_is_failed_precondition_with_its_facts() {
    let jobs = q("jobs");
    let r = start_with_one_message(&jobs).await;
    r.client
        .enqueue(&jobs, NewMessage::new("second"))
        .await
        .unwrap();
    let ds = r.client.dequeue(&jobs, take(2)).await.unwrap();
    r.client.ack(&jobs, &ds[0].receipt).await.unwrap();
    let response = r
        .raw()
        .await
        .ack(v1::AckRequest {
            queue: "jobs".into(),
            receipts: vec![ds[0].receipt.to_string(), ds[1].receipt.to_string()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.results.len(), 2);
    assert!(
        response.results[1].error.is_none(),
        "the second receipt was acknowledged"
    );
    let error = response.results[0].error.clone().expect("the first failed");
    assert_eq!(error.code, Code::FailedPrecondition as i32);
    let status = tonic::Status::with_details(
        Code::FailedPrecondition,
        error.message.clone(),
        prost::Message::encode_to_vec(&error).into(),
    );
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo detail");
    assert_eq!(info.reason, "LEASE_LOST");
    assert_eq!(info.metadata["queue"], "jobs");
    assert_eq!(info.metadata["message_id"], ds[0].message_id.to_string());
    assert!(!info.metadata["reason"].is_empty());
    r.server.shutdown().await;
}

#[tokio::test]
async fn redrive_of_a_queue_that_is_not_a_dead_letter_queue_is_refused() {
    let jobs = q("jobs");
    let r = start_with_one_message(&jobs).await;
    let before = r.counts(&jobs).await;
    let err = r.client.redrive(&jobs, None).await.unwrap_err();
    assert!(
        invalid_argument(&err, "queue `jobs` is not a dead-letter queue"),
        "{err:?}"
    );
    let err = r.client.redrive(&q("nope"), None).await.unwrap_err();
    assert_eq!(err, Error::QueueNotFound(q("nope")));
    assert_eq!(r.counts(&jobs).await, before);
    r.server.shutdown().await;
}

#[tokio::test]
async fn invalid_queue_names_are_refused_naming_the_rule() {
    let r = start().await;
    let mut raw = r.raw().await;
    for (bad, rule) in [
        (String::new(), "empty"),
        ("x".repeat(257), "257 bytes"),
        ("a\u{7}b".to_owned(), "control character"),
        ("$jobs".to_owned(), "reserved"),
    ] {
        let enqueue = raw
            .enqueue(v1::EnqueueRequest {
                queue: bad.clone(),
                messages: vec![NewMessage::new("x").into()],
            })
            .await
            .unwrap_err();
        let dequeue = raw
            .dequeue(v1::DequeueRequest {
                queue: bad.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        let mut statuses = vec![enqueue, dequeue];
        // An empty dead-letter queue name means "none", so it is not tried.
        if !bad.is_empty() {
            let create = raw
                .create_queue(v1::CreateQueueRequest {
                    queue: "fine".into(),
                    settings: Some(v1::QueueSettings {
                        dead_letter_queue: Some(bad.clone()),
                        ..Default::default()
                    }),
                })
                .await
                .unwrap_err();
            statuses.push(create);
        }
        for status in statuses {
            assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
            assert!(
                status.message().starts_with("invalid queue name")
                    && status.message().contains(rule),
                "{bad:?}: {}",
                status.message()
            );
            let details = status.get_error_details();
            let info = details.error_info().expect("ErrorInfo detail");
            assert_eq!(
                (info.reason.as_str(), info.metadata["kind"].as_str()),
                ("INVALID_NAME", "queue")
            );
        }
    }
    assert!(
        r.client.list_queues().await.unwrap().is_empty(),
        "nothing created"
    );
    r.server.shutdown().await;
}

#[tokio::test]
async fn creating_an_existing_queue_with_other_settings_conflicts() {
    let r = start().await;
    let jobs = q("jobs");
    r.client
        .create_queue(&jobs, QueueSettings::default())
        .await
        .unwrap();
    let other = QueueSettings {
        max_delivery_attempts: 9,
        ..QueueSettings::default()
    };
    let err = r.client.create_queue(&jobs, other).await.unwrap_err();
    assert_eq!(
        err,
        Error::QueueExists {
            queue: jobs.clone()
        }
    );
    let zero = QueueSettings {
        max_delivery_attempts: 0,
        ..QueueSettings::default()
    };
    let err = r.client.create_queue(&q("zero"), zero).await.unwrap_err();
    assert!(
        invalid_argument(&err, "max_delivery_attempts must be at least 1"),
        "{err:?}"
    );
    let queues = r.client.list_queues().await.unwrap();
    assert_eq!(queues.len(), 1);
    assert_eq!(
        queues[0].settings,
        QueueSettings::default(),
        "settings unchanged"
    );
    r.server.shutdown().await;
}
