//! Scenarios of the [`PayloadRefs`] contract: references are recorded with
//! the append or enqueue that makes them and released by stream deletion,
//! acknowledgement and purge; pins and reap locks exclude each other.
#![allow(missing_docs)] // each scenario's name is its documentation

use std::time::Duration;

use bytes::Bytes;
use wharf_core::{
    ContentHash, DequeueOptions, ExpectedVersion, ManualClock, NewEvent, NewMessage, QueueName,
    StreamName,
};

use super::TestPayloadRefs;
use super::queue_store::reference;
use crate::AppendRequest;

fn hash(byte: u8) -> ContentHash {
    ContentHash([byte; 32])
}

async fn referenced(f: &TestPayloadRefs, byte: u8) -> bool {
    f.refs
        .is_referenced(&hash(byte))
        .await
        .expect("refs are readable")
}

async fn append_reference(f: &TestPayloadRefs, stream: &str, byte: u8) {
    let event = NewEvent {
        external: Some(reference(byte)),
        ..NewEvent::new("Big", Bytes::new())
    };
    f.log
        .append(AppendRequest {
            stream: StreamName::new(stream).unwrap(),
            expected: ExpectedVersion::Any,
            events: vec![event],
        })
        .await
        .expect("append succeeds");
}

async fn enqueue_reference(f: &TestPayloadRefs, queue: &str, byte: u8) {
    let message = NewMessage {
        external: Some(reference(byte)),
        ..NewMessage::new(Bytes::new())
    };
    f.queues
        .enqueue(&QueueName::new(queue).unwrap(), vec![message])
        .await
        .expect("enqueue succeeds");
}

pub async fn an_appended_reference_is_live_until_its_stream_is_deleted(
    f: &TestPayloadRefs,
    _clock: &ManualClock,
) {
    assert!(!referenced(f, 1).await, "nothing references it yet");
    append_reference(f, "a", 1).await;
    append_reference(f, "b", 1).await;
    assert!(referenced(f, 1).await);
    assert!(!referenced(f, 2).await, "only the hash appended");
    f.log
        .delete_stream(&StreamName::new("a").unwrap(), ExpectedVersion::Any)
        .await
        .unwrap();
    assert!(referenced(f, 1).await, "stream `b` still references it");
    f.log
        .delete_stream(&StreamName::new("b").unwrap(), ExpectedVersion::Any)
        .await
        .unwrap();
    assert!(
        !referenced(f, 1).await,
        "deleted events release their payloads"
    );
}

pub async fn a_queued_reference_is_live_until_acknowledged_or_purged(
    f: &TestPayloadRefs,
    _clock: &ManualClock,
) {
    let jobs = QueueName::new("jobs").unwrap();
    enqueue_reference(f, "jobs", 3).await;
    enqueue_reference(f, "jobs", 4).await;
    assert!(referenced(f, 3).await && referenced(f, 4).await);
    let options = DequeueOptions {
        visibility_timeout: Some(Duration::from_secs(30)),
        max_messages: 1,
        wait: Duration::ZERO,
    };
    let d = f.queues.dequeue(&jobs, options).await.unwrap().remove(0);
    assert!(referenced(f, 3).await, "in flight is live");
    f.queues.ack(&jobs, &[d.receipt]).await.unwrap()[0]
        .clone()
        .unwrap();
    assert!(
        !referenced(f, 3).await,
        "acknowledged messages release their payloads"
    );
    assert!(referenced(f, 4).await);
    f.queues.purge(&jobs).await.unwrap();
    assert!(
        !referenced(f, 4).await,
        "purged messages release their payloads"
    );
}

pub async fn a_dead_lettered_reference_stays_live(f: &TestPayloadRefs, _clock: &ManualClock) {
    let jobs = QueueName::new("jobs").unwrap();
    enqueue_reference(f, "jobs", 5).await;
    let options = DequeueOptions {
        visibility_timeout: Some(Duration::from_secs(30)),
        max_messages: 1,
        wait: Duration::ZERO,
    };
    let d = f.queues.dequeue(&jobs, options).await.unwrap().remove(0);
    f.queues
        .reject(&jobs, &d.receipt, "gone".into(), Default::default())
        .await
        .unwrap();
    assert!(referenced(f, 5).await, "a dead letter keeps its payload");
}

pub async fn pins_and_reap_locks_exclude_each_other(f: &TestPayloadRefs, _clock: &ManualClock) {
    let pin = f.refs.pin(&hash(7)).await.unwrap();
    assert!(f.refs.try_reap(&hash(7)).await.unwrap().is_none(), "pinned");
    assert!(
        f.refs.try_reap(&hash(8)).await.unwrap().is_some(),
        "other hashes are free"
    );
    drop(pin);
    let reap = f.refs.try_reap(&hash(7)).await.unwrap().expect("unpinned");
    assert!(
        f.refs.try_reap(&hash(7)).await.unwrap().is_none(),
        "one reaper at a time"
    );
    let refs = f.refs.clone();
    let waiting = tokio::spawn(async move { refs.pin(&hash(7)).await.map(drop) });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !waiting.is_finished(),
        "a pin waits while the hash is reaped"
    );
    drop(reap);
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the pin is granted after the reap")
        .unwrap()
        .unwrap();
}
