use std::sync::Arc;
use std::time::{Duration, Instant};
use wharf_core::{DequeueOptions, NewMessage, QueueName, SystemClock};
use wharf_postgres::testing::TestSchema;
use wharf_storage::QueueStore;

const N: usize = 40_000;
const CONSUMERS: usize = 4;

async fn pgmq() -> f64 {
    let url = "host=127.0.0.1 port=5432 user=postgres dbname=test";
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    c.batch_execute("DROP TABLE IF EXISTS tmp_pgmq; CREATE TABLE tmp_pgmq (msg_id bigserial PRIMARY KEY, read_ct integer NOT NULL DEFAULT 0, enqueued_at timestamptz NOT NULL DEFAULT now(), vt timestamptz NOT NULL DEFAULT now(), message bytea NOT NULL); CREATE INDEX ON tmp_pgmq (vt);").await.unwrap();
    let payload = vec![7u8; 1024];
    for _ in 0..N / 100 {
        let batch: Vec<&[u8]> = (0..100).map(|_| &payload[..]).collect();
        c.execute("INSERT INTO tmp_pgmq (message) SELECT unnest($1::bytea[])", &[&batch]).await.unwrap();
    }
    let started = Instant::now();
    let mut tasks = vec![];
    for _ in 0..CONSUMERS {
        tasks.push(tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            let deq = c.prepare("UPDATE tmp_pgmq q SET vt = now() + interval '300 seconds', read_ct = q.read_ct + 1 FROM (SELECT msg_id FROM tmp_pgmq WHERE vt <= now() ORDER BY msg_id LIMIT $1 FOR UPDATE SKIP LOCKED) s WHERE q.msg_id = s.msg_id RETURNING q.msg_id, q.message").await.unwrap();
            let ack = c.prepare("DELETE FROM tmp_pgmq WHERE msg_id = ANY($1)").await.unwrap();
            let mut n = 0;
            loop {
                let rows = c.query(&deq, &[&100i64]).await.unwrap();
                if rows.is_empty() { return n; }
                let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
                c.execute(&ack, &[&ids]).await.unwrap();
                n += ids.len();
            }
        }));
    }
    let mut total = 0;
    for t in tasks { total += t.await.unwrap(); }
    assert_eq!(total, N);
    let rate = N as f64 / started.elapsed().as_secs_f64();
    c.batch_execute("DROP TABLE tmp_pgmq").await.unwrap();
    rate
}

async fn wharf(overlap: bool) -> f64 {
    let mut schema = TestSchema::new();
    schema.config.pool_size = 16;
    let store = Arc::new(schema.open(Arc::new(SystemClock)).await);
    let q = QueueName::new("bench").unwrap();
    let payload = bytes::Bytes::from(vec![7u8; 1024]);
    for _ in 0..N / 100 {
        store.enqueue(&q, (0..100).map(|_| NewMessage::new(payload.clone())).collect()).await.unwrap();
    }
    let started = Instant::now();
    let mut tasks = vec![];
    for _ in 0..CONSUMERS {
        let store = store.clone();
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            let mut pending: Option<tokio::task::JoinHandle<()>> = None;
            loop {
                let got = store.dequeue(&q, DequeueOptions { visibility_timeout: Some(Duration::from_secs(300)), max_messages: 100, wait: Duration::ZERO }).await.unwrap();
                if let Some(p) = pending.take() { p.await.unwrap(); }
                if got.is_empty() { return n; }
                n += got.len();
                let receipts: Vec<_> = got.iter().map(|d| d.receipt.clone()).collect();
                let s = store.clone(); let q2 = q.clone();
                let fut = async move { let out = s.ack(&q2, &receipts).await.unwrap(); assert!(out.iter().all(|r| r.is_ok())); };
                if overlap { pending = Some(tokio::spawn(fut)); } else { fut.await; }
            }
        }));
    }
    let mut total = 0;
    for t in tasks { total += t.await.unwrap(); }
    assert_eq!(total, N);
    N as f64 / started.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmp_bench() {
    for _ in 0..2 {
        let p = pgmq().await;
        let w = wharf(false).await;
        let wo = wharf(true).await;
        eprintln!("pgmq {p:.0} msg/s, wharf {w:.0} msg/s ({:.2}x), wharf overlapped acks {wo:.0} ({:.2}x)", w / p, wo / p);
    }
}
