//! An acknowledgement that meets a concurrent change to its message's row.
//!
//! A timer or another node may write the row of a current delivery while an
//! acknowledgement runs: a promotion makes an expired delivery ready, an
//! expired lease's fresh messages are rewritten as ordinary rows. The
//! delivery is still current after such a change, so the acknowledgement
//! must succeed. These tests hold such a write open in a transaction of
//! their own, let the acknowledgement start (its snapshot still shows the
//! row as it was) and wait on the row, then commit the write.

use std::sync::Arc;
use std::time::Duration;

use wharf_core::{Delivery, DequeueOptions, ManualClock, NewMessage, QueueName};
use wharf_postgres::PgStore;
use wharf_postgres::testing::{self, TestSchema};
use wharf_storage::QueueStore;
use wharf_storage::conformance::test_clock;

/// How long a test waits for the acknowledgement to block on the row
/// before failing (real time: the waits are on PostgreSQL's locks).
const BLOCK_WITHIN: Duration = Duration::from_secs(10);

async fn one_delivery(store: &PgStore, queue: &QueueName) -> Delivery {
    store
        .enqueue(queue, vec![NewMessage::new(b"job".to_vec())])
        .await
        .unwrap();
    let options = DequeueOptions {
        visibility_timeout: Some(Duration::from_secs(30)),
        max_messages: 1,
        wait: Duration::ZERO,
    };
    let mut got = store.dequeue(queue, options).await.unwrap();
    assert_eq!(got.len(), 1);
    got.pop().unwrap()
}

/// Acknowledges `delivery` while `writer` holds `change` (an `UPDATE` of
/// the schema's `messages`) open, commits it once the acknowledgement waits
/// on the row, and checks that the acknowledgement succeeded and the
/// message is gone.
async fn ack_across(store: Arc<PgStore>, schema: &TestSchema, delivery: Delivery, change: &str) {
    let queue: QueueName = "races".parse().unwrap();
    let writer = testing::raw_client().await;
    writer
        .batch_execute(&format!("SET search_path TO {}", schema.name()))
        .await
        .unwrap();
    writer.batch_execute("BEGIN").await.unwrap();
    let changed = writer.execute(change, &[]).await.unwrap();
    assert_eq!(changed, 1, "the writer changed the message's row");
    let writer_pid: i32 = writer
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);

    let acking = {
        let (store, queue, receipt) = (store.clone(), queue.clone(), delivery.receipt.clone());
        tokio::spawn(async move { store.ack(&queue, &[receipt]).await })
    };
    let watcher = testing::raw_client().await;
    let started = std::time::Instant::now();
    loop {
        let blocked: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid))",
                &[&writer_pid],
            )
            .await
            .unwrap()
            .get(0);
        if blocked > 0 {
            break;
        }
        assert!(
            !acking.is_finished(),
            "the acknowledgement did not wait for the row's writer: {:?}",
            acking.await
        );
        assert!(
            started.elapsed() < BLOCK_WITHIN,
            "the acknowledgement never waited on the row"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer.batch_execute("COMMIT").await.unwrap();

    let outcomes = acking.await.unwrap().expect("the acknowledgement ran");
    assert_eq!(outcomes.len(), 1);
    outcomes[0]
        .clone()
        .expect("a current delivery is acknowledged although its row changed meanwhile");
    let stats = store.stats(&queue).await.unwrap();
    assert_eq!(
        (stats.visible, stats.in_flight, stats.delayed, stats.acks),
        (0, 0, 0, 1),
        "the acknowledged message is gone: {stats:?}"
    );
}

async fn open(clock: &ManualClock) -> (TestSchema, Arc<PgStore>) {
    let schema = TestSchema::new();
    let store = Arc::new(schema.open(Arc::new(clock.clone())).await);
    (schema, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_of_a_fresh_delivery_survives_a_concurrent_write_of_its_row() {
    let clock = test_clock();
    let (schema, store) = open(&clock).await;
    let delivery = one_delivery(&store, &"races".parse().unwrap()).await;
    // Any new version of the row: the acknowledgement's snapshot holds the
    // old one.
    ack_across(
        store,
        &schema,
        delivery,
        "UPDATE messages SET visible_at = visible_at WHERE fresh",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_of_an_expired_delivery_survives_its_promotion_meanwhile() {
    let clock = test_clock();
    let (schema, store) = open(&clock).await;
    let queue: QueueName = "races".parse().unwrap();
    let delivery = one_delivery(&store, &queue).await;
    // An extension makes the fresh message an ordinary row; the writer
    // then makes it ready, as a timer's promotion does once its visibility
    // timeout passed (the clock stays put here, so that the store's own
    // timer does not). Nothing delivered it again: the delivery is current.
    store
        .extend(&queue, &delivery.receipt, Duration::from_secs(1))
        .await
        .unwrap();
    ack_across(
        store,
        &schema,
        delivery,
        "UPDATE messages SET ready = true WHERE NOT fresh AND NOT ready",
    )
    .await;
}
