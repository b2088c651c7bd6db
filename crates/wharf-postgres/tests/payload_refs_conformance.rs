//! The payload-refs conformance suite on PostgreSQL, one fresh schema per
//! scenario; and the locks across nodes, which only this backend has.

use std::sync::Arc;
use std::time::Duration;

use wharf_core::{ContentHash, ManualClock};
use wharf_postgres::testing::TestSchema;
use wharf_storage::PayloadRefs;
use wharf_storage::conformance::{TestPayloadRefs, test_clock};

async fn postgres(clock: ManualClock) -> TestPayloadRefs {
    let schema = TestSchema::new();
    let store = Arc::new(schema.open(Arc::new(clock)).await);
    TestPayloadRefs {
        log: store.clone(),
        queues: store.clone(),
        refs: store,
        guard: Box::new(schema),
    }
}

wharf_storage::payload_refs_conformance!(postgres);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_on_one_node_keeps_every_other_node_from_reaping() {
    let schema = TestSchema::new();
    let clock = Arc::new(test_clock());
    let a = schema.open(clock.clone()).await;
    let b = Arc::new(schema.open(clock).await);
    let hash = ContentHash([42; 32]);

    let pin = a.pin(&hash).await.unwrap();
    assert!(b.try_reap(&hash).await.unwrap().is_none(), "pinned on a");
    drop(pin);
    // The unlock on `a` is asynchronous; `b` sees it within moments.
    let reap = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(reap) = b.try_reap(&hash).await.unwrap() {
                return reap;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the reap lock is free once a's pin is dropped");
    assert!(a.try_reap(&hash).await.unwrap().is_none(), "one reaper");

    let waiting = tokio::spawn({
        let b = b.clone();
        async move { b.pin(&hash).await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "a pin on b waits for a's reap");
    drop(reap);
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the pin is granted after the reap")
        .unwrap()
        .unwrap();
}
