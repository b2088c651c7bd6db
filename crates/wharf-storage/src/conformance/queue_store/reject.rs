//! Rejection (immediate dead-lettering) and offloaded references on queues.

use std::collections::BTreeMap;

use super::*;
use wharf_core::payload::dead_letter_keys;
use wharf_core::queue::{DELIVERY_ATTEMPTS, LAST_ERROR, ORIGINAL_STREAM_NAME};
use wharf_core::{ContentHash, PayloadReference, PayloadStorageType};

fn failure() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            dead_letter_keys::ERROR.to_owned(),
            "object not found".to_owned(),
        ),
        (
            dead_letter_keys::URI.to_owned(),
            "memory:///x.bin".to_owned(),
        ),
    ])
}

pub fn reference(byte: u8) -> PayloadReference {
    PayloadReference {
        storage_type: PayloadStorageType::S3,
        uri: format!("s3://bucket/events/{}.bin", ContentHash([byte; 32])),
        content_hash: ContentHash([byte; 32]),
        original_size: 5 << 20,
        stored_at: Timestamp::from_micros(1_767_225_600_000_000),
    }
}

pub async fn rejecting_a_delivery_dead_letters_it_at_once_with_the_metadata(
    queues: &Arc<dyn QueueStore>,
    _clock: &ManualClock,
) {
    let vt = Duration::from_secs(30);
    create(queues, "jobs", settings(5, Some("jobs-dlq"), vt)).await;
    let id = enqueue_data(queues, "jobs", "a").await;
    let d = dequeue_one(queues, "jobs", vt).await;
    queues
        .reject(
            &q("jobs"),
            &d.receipt,
            "payload retrieval failed".into(),
            failure(),
        )
        .await
        .expect("reject succeeds");
    assert_nothing_visible(queues, "jobs", "after the reject").await;
    let dead = dequeue_one(queues, "jobs-dlq", vt).await;
    assert_eq!(dead.message_id, id);
    assert_eq!(data(&dead), "a");
    assert_eq!(dead.metadata[ORIGINAL_STREAM_NAME], "jobs");
    assert_eq!(dead.metadata[DELIVERY_ATTEMPTS], "1");
    assert_eq!(dead.metadata[LAST_ERROR], "payload retrieval failed");
    assert_eq!(dead.metadata[dead_letter_keys::ERROR], "object not found");
    assert_eq!(dead.metadata[dead_letter_keys::URI], "memory:///x.bin");
    assert_eq!(stats(queues, "jobs").await.dead_lettered, 1);
}

pub async fn rejecting_without_a_dead_letter_target_hides_it_for_the_visibility_timeout(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    let vt = Duration::from_secs(30);
    create(queues, "solo", settings(5, None, vt)).await;
    enqueue_data(queues, "solo", "a").await;
    let d = dequeue_one(queues, "solo", Duration::from_secs(5)).await;
    queues
        .reject(&q("solo"), &d.receipt, "broken".into(), failure())
        .await
        .expect("reject succeeds");
    clock.advance(vt - MICRO);
    assert_nothing_visible(queues, "solo", "before the queue's visibility timeout").await;
    clock.advance(MICRO);
    let again = dequeue_one(queues, "solo", vt).await;
    assert_eq!(again.delivery_attempt, 2);
    assert!(!again.metadata.contains_key(dead_letter_keys::ERROR));
}

pub async fn rejecting_with_a_stale_receipt_is_lease_lost(
    queues: &Arc<dyn QueueStore>,
    _clock: &ManualClock,
) {
    let vt = Duration::from_secs(30);
    create(queues, "jobs", settings(5, Some("jobs-dlq"), vt)).await;
    enqueue_data(queues, "jobs", "a").await;
    let d = dequeue_one(queues, "jobs", vt).await;
    queues
        .ack(&q("jobs"), std::slice::from_ref(&d.receipt))
        .await
        .unwrap();
    let err = queues
        .reject(&q("jobs"), &d.receipt, "late".into(), failure())
        .await
        .expect_err("the message is gone");
    assert!(matches!(err, Error::LeaseLost { .. }), "{err:?}");
    assert_eq!(stats(queues, "jobs").await.dead_lettered, 0);
}

pub async fn offloaded_references_survive_delivery_dead_lettering_and_redrive(
    queues: &Arc<dyn QueueStore>,
    _clock: &ManualClock,
) {
    let vt = Duration::from_secs(30);
    create(queues, "big", settings(1, Some("big-dlq"), vt)).await;
    let message = NewMessage {
        external: Some(reference(9)),
        ..NewMessage::new(bytes::Bytes::new())
    };
    enqueue(queues, "big", message).await;
    let d = dequeue_one(queues, "big", vt).await;
    assert_eq!(d.external, Some(reference(9)));
    assert!(d.data.is_empty());
    queues
        .reject(
            &q("big"),
            &d.receipt,
            "payload retrieval failed".into(),
            failure(),
        )
        .await
        .unwrap();
    let dead = dequeue_one(queues, "big-dlq", vt).await;
    assert_eq!(dead.external, Some(reference(9)));
    queues
        .nack(&q("big-dlq"), &dead.receipt, Duration::ZERO, None)
        .await
        .unwrap();
    assert_eq!(queues.redrive(&q("big-dlq"), None).await.unwrap(), 1);
    let back = dequeue_one(queues, "big", vt).await;
    assert_eq!(back.external, Some(reference(9)));
    for key in [dead_letter_keys::ERROR, dead_letter_keys::URI, LAST_ERROR] {
        assert!(
            !back.metadata.contains_key(key),
            "redrive removes `{key}`: {:?}",
            back.metadata
        );
    }
}
