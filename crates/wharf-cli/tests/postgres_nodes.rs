//! Several nodes: three real `wharf serve` processes on their own loopback
//! ports over one PostgreSQL schema and one S3 bucket, with producers,
//! consumers, appenders and a follower spread across them, and one node
//! killed with SIGKILL halfway.
//!
//! What must hold, from what the clients saw:
//! - every message whose enqueue was acknowledged is delivered, with its
//!   data whole (large ones were offloaded to the shared bucket);
//! - no message is delivered to two consumers at once within its
//!   visibility timeout, and none comes back after its ack was confirmed;
//! - the global order invariant: a follower reading the log by position on
//!   one node, while the others append, sees exactly the final log, in
//!   order, missing nothing;
//! - killing a node loses nothing acknowledged.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use support::Server;
use uuid::Uuid;
use wharf_client::Client;
use wharf_core::{
    DequeueOptions, ExpectedVersion, LogFilter, NewEvent, NewMessage, Position, QueueName, Receipt,
    StreamName,
};
use wharf_payload::testing::{S3TestServer, in_ci, unique_bucket};
use wharf_postgres::testing::{self, TestSchema};

const NODES: usize = 3;
/// The node killed halfway; the follower runs on another.
const VICTIM: usize = 2;
const PRODUCERS: usize = 3;
/// The producer that enqueues one message at a time (on the enqueue
/// stream of the node that is killed); the others enqueue batches.
const SINGLE_PRODUCER: usize = VICTIM;
const BATCHES: usize = 30;
const BATCH: usize = 5;
const CONSUMERS: usize = 4;
const APPENDERS: usize = 3;
const APPENDS: usize = 60;
/// Payloads over this are offloaded to the bucket.
const THRESHOLD: usize = 64 * 1024;
const VISIBILITY: Duration = Duration::from_secs(3);
const DEADLINE: Duration = Duration::from_secs(90);

/// The data of the message with `key`: every 10th is large (offloaded).
fn body(key: &str, n: usize) -> Vec<u8> {
    if n.is_multiple_of(10) {
        key.as_bytes()
            .iter()
            .copied()
            .cycle()
            .take(THRESHOLD + 4096)
            .collect()
    } else {
        key.as_bytes().to_vec()
    }
}

#[derive(Debug, Clone)]
struct Seen {
    key: String,
    message_id: Uuid,
    attempt: u32,
    requested: Instant,
    received: Instant,
    intact: bool,
}

#[derive(Default)]
struct Record {
    /// Acknowledged enqueues: key → message id.
    enqueued: HashMap<String, Uuid>,
    seen: Vec<Seen>,
    /// Confirmed acks: message id → when the confirmation arrived.
    acked: HashMap<Uuid, Instant>,
    /// Positions of acknowledged appends.
    appended: Vec<Position>,
}

type Shared = Arc<Mutex<Record>>;

fn record(shared: &Shared) -> std::sync::MutexGuard<'_, Record> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The clients of every node; the victim's is skipped once it is dead.
struct Cluster {
    clients: Vec<Client>,
    dead: AtomicBool,
}

impl Cluster {
    /// The client for worker `i`, avoiding the dead node.
    fn client(&self, i: usize) -> &Client {
        let mut node = i % NODES;
        if node == VICTIM && self.dead.load(Ordering::SeqCst) {
            node = (node + 1) % NODES;
        }
        &self.clients[node]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_share_one_database_and_bucket_and_survive_losing_one() {
    let s3 = S3TestServer::from_env();
    if !s3.reachable().await {
        assert!(!in_ci(), "{}", s3.how_to_start());
        eprintln!("\n!!!! SKIPPED: multi-node test: {}\n", s3.how_to_start());
        return;
    }
    let bucket = unique_bucket();
    s3.create_bucket(&bucket).await;
    let schema = TestSchema::new();
    let threshold = THRESHOLD.to_string();
    let env: Vec<(String, String)> = [
        ("WHARF_PAYLOAD_OFFLOAD__ENABLED", "true"),
        ("WHARF_PAYLOAD_OFFLOAD__THRESHOLD_BYTES", threshold.as_str()),
        ("WHARF_PAYLOAD_OFFLOAD__STORE_TYPE", "s3"),
        ("WHARF_PAYLOAD_OFFLOAD__S3__BUCKET", bucket.as_str()),
        ("WHARF_PAYLOAD_OFFLOAD__S3__PREFIX", "payloads/"),
        ("WHARF_PAYLOAD_OFFLOAD__S3__ENDPOINT", s3.endpoint.as_str()),
        ("WHARF_PAYLOAD_OFFLOAD__S3__REGION", s3.region.as_str()),
        (
            "WHARF_PAYLOAD_OFFLOAD__S3__ACCESS_KEY_ID",
            s3.access_key.as_str(),
        ),
        (
            "WHARF_PAYLOAD_OFFLOAD__S3__SECRET_ACCESS_KEY",
            s3.secret_key.as_str(),
        ),
        ("WHARF_PAYLOAD_OFFLOAD__REAPER_INTERVAL_HOURS", "0"),
        ("WHARF_STORAGE__CONNECT_TIMEOUT", "3s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();

    // The nodes start at once: their migrations race, and must not clash.
    let starts: Vec<_> = (0..NODES)
        .map(|_| {
            let (schema, env) = (schema.name().to_owned(), env.clone());
            std::thread::spawn(move || {
                let env: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                Server::start_postgres(&testing::url(), &schema, &env)
            })
        })
        .collect();
    let mut servers: Vec<Option<Server>> = starts
        .into_iter()
        .map(|s| Some(s.join().expect("a node starts")))
        .collect();
    let mut clients = Vec::new();
    for server in servers.iter().flatten() {
        clients.push(Client::connect(&server.url()).await.expect("client"));
    }
    let cluster = Arc::new(Cluster {
        clients,
        dead: AtomicBool::new(false),
    });
    let shared: Shared = Arc::default();
    let queue: QueueName = "work".parse().unwrap();
    let produced = Arc::new(AtomicUsize::new(0));

    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let (cluster, shared, queue, produced) = (
            cluster.clone(),
            shared.clone(),
            queue.clone(),
            produced.clone(),
        );
        producers.push(tokio::spawn(async move {
            for b in 0..BATCHES {
                let keys: Vec<(String, usize)> = (0..BATCH)
                    .map(|i| (format!("p{p}-{b}-{i}"), b * BATCH + i))
                    .collect();
                let messages: Vec<NewMessage> = keys
                    .iter()
                    .map(|(k, n)| {
                        NewMessage::new(body(k, *n))
                            .with_dedup_id(k.clone())
                            .with_metadata("key", k.clone())
                            .with_metadata("n", n.to_string())
                    })
                    .collect();
                // Retried on another node when this one dies; the dedup id
                // keeps a batch that did commit from being enqueued twice.
                let started = Instant::now();
                let enqueued = if p == SINGLE_PRODUCER {
                    // One message at a time, all in flight on the client's
                    // enqueue stream (the large ones as calls of their own).
                    let singles = messages.iter().map(|message| {
                        let (cluster, queue) = (&cluster, &queue);
                        async move {
                            loop {
                                match cluster.client(p).enqueue(queue, message.clone()).await {
                                    Ok(e) => break e,
                                    Err(e) => {
                                        assert!(started.elapsed() < DEADLINE, "producer {p}: {e}");
                                        tokio::time::sleep(Duration::from_millis(100)).await;
                                    }
                                }
                            }
                        }
                    });
                    futures::future::join_all(singles).await
                } else {
                    loop {
                        match cluster
                            .client(p)
                            .enqueue_batch(&queue, messages.clone())
                            .await
                        {
                            Ok(e) => break e,
                            Err(e) => {
                                assert!(started.elapsed() < DEADLINE, "producer {p}: {e}");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                };
                let mut r = record(&shared);
                for ((key, _), e) in keys.into_iter().zip(enqueued) {
                    r.enqueued.insert(key, e.message_id);
                }
                produced.fetch_add(BATCH, Ordering::SeqCst);
            }
        }));
    }

    let mut appenders = Vec::new();
    for a in 0..APPENDERS {
        let (cluster, shared) = (cluster.clone(), shared.clone());
        appenders.push(tokio::spawn(async move {
            for i in 0..APPENDS {
                let stream: StreamName = format!("s-{a}-{}", i % 4).parse().unwrap();
                let event = NewEvent::new("Tick", format!("{a}-{i}"));
                let started = Instant::now();
                let outcome = loop {
                    match cluster
                        .client(a)
                        .append(&stream, ExpectedVersion::Any, vec![event.clone()])
                        .await
                    {
                        Ok(o) => break o,
                        Err(e) => {
                            assert!(started.elapsed() < DEADLINE, "appender {a}: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                };
                record(&shared)
                    .appended
                    .push(outcome.result().first_position);
            }
        }));
    }

    let consuming_done = Arc::new(AtomicBool::new(false));
    let mut consumers = Vec::new();
    for c in 0..CONSUMERS {
        let (cluster, shared, queue, done) = (
            cluster.clone(),
            shared.clone(),
            queue.clone(),
            consuming_done.clone(),
        );
        consumers.push(tokio::spawn(async move {
            let options = DequeueOptions {
                visibility_timeout: Some(VISIBILITY),
                max_messages: 10,
                wait: Duration::from_millis(500),
            };
            while !done.load(Ordering::SeqCst) {
                let client = cluster.client(c);
                let requested = Instant::now();
                let Ok(deliveries) = client.dequeue(&queue, options).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let received = Instant::now();
                let receipts: Vec<(Uuid, Receipt)> = deliveries
                    .iter()
                    .map(|d| (d.message_id, d.receipt.clone()))
                    .collect();
                {
                    let mut r = record(&shared);
                    for d in &deliveries {
                        let key = d.metadata.get("key").cloned().unwrap_or_default();
                        let n = d.metadata.get("n").and_then(|n| n.parse().ok());
                        let intact = n.is_some_and(|n| d.data.as_ref() == body(&key, n).as_slice());
                        r.seen.push(Seen {
                            key,
                            message_id: d.message_id,
                            attempt: d.delivery_attempt,
                            requested,
                            received,
                            intact,
                        });
                    }
                }
                if receipts.is_empty() {
                    continue;
                }
                let only: Vec<Receipt> = receipts.iter().map(|(_, r)| r.clone()).collect();
                if let Ok(outcomes) = client.ack_batch(&queue, &only).await {
                    let now = Instant::now();
                    let mut r = record(&shared);
                    for ((id, _), outcome) in receipts.iter().zip(outcomes) {
                        if outcome.is_ok() {
                            r.acked.entry(*id).or_insert(now);
                        }
                    }
                }
            }
        }));
    }

    // The follower reads the log by position on node 0 while the others
    // append, until told the appends are over and it has reached the end.
    let appends_done = Arc::new(AtomicBool::new(false));
    let follower = tokio::spawn({
        let (cluster, done) = (cluster.clone(), appends_done.clone());
        async move {
            let client = &cluster.clients[0];
            let mut seen: Vec<u64> = Vec::new();
            let mut next = Position(0);
            loop {
                let finished = done.load(Ordering::SeqCst);
                let mut pages = client
                    .read_all(next, &LogFilter::default(), Some(100))
                    .await
                    .expect("the follower's node stays up");
                let mut got = 0;
                while let Some(page) = pages.next().await {
                    for event in page.expect("a page") {
                        seen.push(event.position.0);
                        next = Position(event.position.0 + 1);
                        got += 1;
                    }
                }
                if finished && got == 0 {
                    return seen;
                }
                if got == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    });

    // Kill the victim once a third of the messages are in.
    let total = PRODUCERS * BATCHES * BATCH;
    let deadline = Instant::now() + DEADLINE;
    while produced.load(Ordering::SeqCst) < total / 3 {
        assert!(Instant::now() < deadline, "producers stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.dead.store(true, Ordering::SeqCst);
    servers[VICTIM].take().expect("victim").child.kill();

    for p in producers {
        p.await.expect("producer");
    }
    for a in appenders {
        a.await.expect("appender");
    }
    appends_done.store(true, Ordering::SeqCst);
    let followed = follower.await.expect("follower");

    // Drain: every acknowledged enqueue must be delivered, and the queue
    // emptied by acknowledgements. Not "every ack confirmed to a consumer":
    // an ack the killed node committed but never answered deleted its
    // messages all the same (the queue's `acks` count has them), and they
    // are rightly never delivered again.
    let expected: HashSet<Uuid> = record(&shared).enqueued.values().copied().collect();
    loop {
        let seen: HashSet<Uuid> = record(&shared).seen.iter().map(|s| s.message_id).collect();
        let stats = cluster.client(0).queue_stats(&queue).await;
        let emptied = stats.as_ref().is_ok_and(|s| s.depth() == 0);
        if expected.is_subset(&seen) && emptied {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged messages never delivered; queue: {stats:?}",
            expected.difference(&seen).count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    consuming_done.store(true, Ordering::SeqCst);
    for c in consumers {
        c.await.expect("consumer");
    }

    // Global order: the follower saw the final log exactly, in order.
    let client = &cluster.clients[1];
    let mut all = Vec::new();
    let mut pages = client
        .read_all(Position(0), &LogFilter::default(), None)
        .await
        .expect("read the whole log");
    while let Some(page) = pages.next().await {
        all.extend(page.expect("page").into_iter().map(|e| e.position.0));
    }
    // Taken out, so no lock is held across the awaits below.
    let r = std::mem::take(&mut *record(&shared));
    assert_eq!(r.enqueued.len(), total, "every batch was acknowledged once");
    // Nothing delivered that no producer sent, and offloaded data is whole.
    let ids: HashSet<Uuid> = r.enqueued.values().copied().collect();
    for s in &r.seen {
        assert!(ids.contains(&s.message_id), "unknown delivery {s:?}");
        assert!(s.intact, "data of {} came back changed", s.key);
    }
    // No delivery overlaps the previous lease of the same message, and none
    // follows a confirmed ack.
    let mut by_id: HashMap<Uuid, Vec<&Seen>> = HashMap::new();
    for s in &r.seen {
        by_id.entry(s.message_id).or_default().push(s);
    }
    for (id, mut deliveries) in by_id {
        deliveries.sort_by_key(|s| s.attempt);
        for pair in deliveries.windows(2) {
            assert!(
                pair[0].attempt < pair[1].attempt,
                "attempt repeated: {pair:?}"
            );
            assert!(
                pair[1].received >= pair[0].requested + VISIBILITY,
                "{id} delivered again within its visibility timeout: {pair:?}"
            );
        }
        if let Some(acked) = r.acked.get(&id) {
            assert!(
                deliveries.iter().all(|s| s.requested <= *acked),
                "{id} delivered after its ack was confirmed"
            );
        }
    }
    assert!(
        followed.windows(2).all(|w| w[0] < w[1]),
        "positions increase"
    );
    assert_eq!(followed, all, "the follower missed or invented events");
    let log: HashSet<u64> = all.iter().copied().collect();
    for p in &r.appended {
        assert!(
            log.contains(&p.0),
            "acknowledged append at {p:?} is missing"
        );
    }
    assert!(r.appended.len() >= APPENDERS * APPENDS);
    drop(servers);
    s3.remove_bucket(&bucket).await;
}
