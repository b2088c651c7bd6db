//! Queue rounds commit without waiting for the disk and answer only after a
//! group flush (src/flush.rs). These tests hold the flush to what it
//! promises: when an answer comes back, the WAL is on disk past its commit.

use std::sync::Arc;
use std::time::Duration;

use wharf_core::{DequeueOptions, NewMessage, QueueName, SystemClock};
use wharf_postgres::testing::{self, TestSchema};
use wharf_storage::QueueStore;

/// PostgreSQL flushes the WAL at a commit only when the transaction wrote
/// some: a flush that only takes a transaction id commits asynchronously
/// and waits for nothing. `EXPLAIN (ANALYZE, WAL)` counts the records the
/// flush statement itself writes, whatever else the server is doing.
#[tokio::test]
async fn a_group_flush_writes_wal_so_that_its_commit_waits_for_the_disk() {
    let client = testing::raw_client().await;
    let explained: serde_json::Value = client
        .query_one(
            &format!(
                "EXPLAIN (ANALYZE, WAL, FORMAT JSON) {}",
                testing::FLUSH_STATEMENT
            ),
            &[],
        )
        .await
        .expect("explain the flush")
        .get(0);
    let records = explained[0]["Plan"]["WAL Records"]
        .as_i64()
        .unwrap_or_else(|| panic!("no WAL Records in {explained}"));
    assert!(
        records >= 1,
        "the flush statement wrote {records} WAL records: its commit would not wait for the disk"
    );
}

/// End to end: once a dequeue and an acknowledgement return, the server
/// has flushed its WAL past everything written before they were sent.
#[tokio::test]
async fn a_dequeue_and_an_acknowledgement_are_on_disk_when_they_return() {
    let schema = TestSchema::new();
    let store = schema.open(Arc::new(SystemClock)).await;
    let observer = testing::raw_client().await;
    let queue = QueueName::new("durable").unwrap();
    store
        .enqueue(&queue, vec![NewMessage::new(b"x".to_vec())])
        .await
        .unwrap();
    let before_dequeue = insert_lsn(&observer).await;
    let options = DequeueOptions {
        visibility_timeout: Some(Duration::from_secs(60)),
        max_messages: 1,
        wait: Duration::ZERO,
    };
    let got = store.dequeue(&queue, options).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_flushed_past(&observer, &before_dequeue, "dequeue").await;

    let before_ack = insert_lsn(&observer).await;
    let receipts = [got[0].receipt.clone()];
    for outcome in store.ack(&queue, &receipts).await.unwrap() {
        outcome.unwrap();
    }
    assert_flushed_past(&observer, &before_ack, "acknowledgement").await;
}

/// Where the server writes its next WAL record, as text.
async fn insert_lsn(client: &tokio_postgres::Client) -> String {
    client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap()
        .get(0)
}

async fn assert_flushed_past(client: &tokio_postgres::Client, lsn: &str, what: &str) {
    let flushed: bool = client
        .query_one(
            "SELECT pg_current_wal_flush_lsn() > $1::text::pg_lsn",
            &[&lsn],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        flushed,
        "the {what} returned before the WAL it wrote after {lsn} was flushed"
    );
}
