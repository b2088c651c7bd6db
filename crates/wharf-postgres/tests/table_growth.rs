//! Table growth under churn: a queue that is filled and drained again and
//! again must not leave `messages` growing without bound. Acknowledged rows
//! are deleted; the node's own vacuum trigger (src/vacuum.rs) reclaims them
//! long before autovacuum's next look, so the table's size levels off at
//! what the queue holds plus a bounded slack.

use std::sync::Arc;
use std::time::Duration;

use wharf_core::{DequeueOptions, NewMessage, QueueName, SystemClock};
use wharf_postgres::PgStore;
use wharf_postgres::testing::{self, TestSchema};
use wharf_storage::QueueStore;

const ROUNDS: usize = 30;
const PER_ROUND: usize = 2_000;
const BATCH: usize = 100;

/// One number about `schema`'s queue table: `sql` with the schema as `$1`.
async fn about_messages(sql: &str, schema: &str) -> i64 {
    testing::raw_client()
        .await
        .query_one(sql, &[&schema])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

async fn table_bytes(schema: &str) -> i64 {
    about_messages(
        "SELECT pg_total_relation_size(format('%I.messages', $1::text)::regclass)",
        schema,
    )
    .await
}

/// Enqueues `n` copies of `data` in batches of [`BATCH`].
async fn fill(store: &PgStore, queue: &QueueName, data: &[u8], n: usize) {
    for _ in 0..n / BATCH {
        let batch = (0..BATCH).map(|_| NewMessage::new(data.to_vec())).collect();
        store.enqueue(queue, batch).await.unwrap();
    }
}

/// Dequeues and acknowledges `n` messages, [`BATCH`] at a time.
async fn drain(store: &PgStore, queue: &QueueName, n: usize) {
    let mut left = n;
    while left > 0 {
        let options = DequeueOptions {
            visibility_timeout: Some(Duration::from_secs(60)),
            max_messages: BATCH as u32,
            wait: Duration::ZERO,
        };
        let got = store.dequeue(queue, options).await.unwrap();
        assert!(!got.is_empty(), "{left} messages missing");
        let receipts: Vec<_> = got.iter().map(|d| d.receipt.clone()).collect();
        for outcome in store.ack(queue, &receipts).await.unwrap() {
            outcome.unwrap();
        }
        left -= got.len();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaves_the_queue_table_bounded() {
    let schema = TestSchema::new();
    let store = schema.open(Arc::new(SystemClock)).await;
    let queue: QueueName = "churn".parse().unwrap();
    let data = vec![7u8; 1024];
    let mut sizes = Vec::new();
    for _ in 0..ROUNDS {
        fill(&store, &queue, &data, PER_ROUND).await;
        drain(&store, &queue, PER_ROUND).await;
        sizes.push(table_bytes(schema.name()).await);
    }
    let churned_bytes = (ROUNDS * PER_ROUND * data.len()) as i64;
    let third = ROUNDS / 3;
    let mean = |window: &[i64]| window.iter().sum::<i64>() / window.len() as i64;
    let (middle, last) = (mean(&sizes[third..2 * third]), mean(&sizes[2 * third..]));
    let peak = *sizes.iter().max().unwrap();
    eprintln!("messages table bytes per round: {sizes:?}");
    // Without reclamation the table holds every row that went through it
    // (over 60 MB here); with it, what one vacuum period of churn leaves.
    assert!(
        peak < churned_bytes / 2,
        "the table kept {peak} bytes after {churned_bytes} bytes went through it: {sizes:?}"
    );
    assert!(
        last <= 2 * middle + (4 << 20),
        "the table is still growing (mean {middle} → {last} bytes): {sizes:?}"
    );
}

/// Rows written to `schema`'s queue table as PostgreSQL's statistics count
/// them.
async fn rows_written(schema: &str) -> i64 {
    about_messages(
        "SELECT n_tup_ins + n_tup_upd FROM pg_stat_user_tables \
         WHERE relid = format('%I.messages', $1::text)::regclass",
        schema,
    )
    .await
}

/// A backlog drained while nothing is written to the table is vacuumed once
/// on the way down, not at every threshold (each vacuum makes every
/// connection plan its statements again), and once more when the node has
/// fallen quiet, so that the next fill finds the space freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_backlog_is_vacuumed_once_while_draining_and_once_when_quiet() {
    const BACKLOG: usize = 30_000;
    let schema = TestSchema::new();
    let store = schema.open(Arc::new(SystemClock)).await;
    let queue: QueueName = "backlog".parse().unwrap();
    let data = vec![7u8; 1024];
    fill(&store, &queue, &data, BACKLOG).await;
    // The statistics lag the inserts by up to a few seconds; inserts that
    // showed up only during the drain would count as rows written then.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while rows_written(schema.name()).await < BACKLOG as i64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the statistics never showed the backlog's inserts"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    drain(&store, &queue, BACKLOG).await;
    // Six thresholds of 5,000 deletions were passed: the first vacuums
    // (nothing was looked at before), the others find nothing written.
    let while_draining = testing::vacuums(&store);
    assert!(
        while_draining <= 1,
        "{while_draining} vacuums while draining a backlog with nothing written"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while testing::vacuums(&store) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the owed vacuum did not run once the node fell quiet"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Twice the quiet period: an owed vacuum run twice would show by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(testing::vacuums(&store), 2, "one owed vacuum, run once");
}
