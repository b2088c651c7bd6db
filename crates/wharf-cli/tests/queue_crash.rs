//! Crash safety of queues on the real server: SIGKILL under a mixed load of
//! producers and consumers, restart on the same data directory, several
//! times, then drain.
//!
//! What a client saw acknowledged must hold across every kill:
//! - every message whose enqueue was acknowledged is delivered;
//! - no message is delivered again once its acknowledge was acknowledged;
//! - a message's delivery attempts never go backwards;
//! - nothing is delivered that no producer sent.
//!
//! The kill points come from a seed printed at the start; set
//! `QUEUE_CRASH_SEED` to replay one.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::ChildGuard;
use uuid::Uuid;
use wharf_client::Client;
use wharf_core::{DequeueOptions, Error, NewMessage, QueueName, QueueSettings, Receipt};

/// Kill-and-restart rounds before the drain.
const ROUNDS: usize = 4;
/// How long a delivery stays invisible: short, so deliveries cut off by a
/// kill come back within the test.
const VISIBILITY: Duration = Duration::from_secs(1);
/// How long the server may take to start, and clients to notice it died.
const DEADLINE: Duration = Duration::from_secs(20);

/// A `wharf serve` process on port 0, killed (SIGKILL) when dropped.
struct ServerProcess {
    child: ChildGuard,
    url: String,
}

impl ServerProcess {
    /// Starts the server on `data` and waits for its "serving" line.
    fn start(data: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .arg("serve")
            .env("WHARF_STORAGE__PATH", data)
            .env("WHARF_SERVER__GRPC_LISTEN", "127.0.0.1:0")
            .env("WHARF_SERVER__HTTP_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wharf serve starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the serving line, then keeps draining so the server never
        // blocks on a full pipe; other lines are passed on for diagnosis.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                match line.strip_prefix("wharf serving gRPC on ") {
                    Some(rest) => {
                        let addr = rest.split(',').next().unwrap_or_default().to_owned();
                        let _ = tx.send(addr);
                    }
                    None => eprintln!("server: {line}"),
                }
            }
        });
        let addr = rx
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|e| panic!("server not serving within {DEADLINE:?}: {e}"));
        let addr: SocketAddr = addr.parse().expect("address in serving line");
        Self {
            child: ChildGuard(child),
            url: format!("http://{addr}"),
        }
    }

    async fn client(&self) -> Client {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match Client::connect(&self.url).await {
                Ok(client) => return client,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot connect to {}: {e}",
                        self.url
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn kill(self) {
        self.child.kill();
    }
}

/// One delivery as a consumer saw it.
#[derive(Debug, Clone)]
struct Seen {
    key: String,
    message_id: Uuid,
    attempt: u32,
    /// When the dequeue that returned it was sent.
    requested: Instant,
    /// When its answer arrived.
    received: Instant,
    round: usize,
}

/// What the clients saw acknowledged, shared by every task.
#[derive(Default)]
struct Record {
    /// Payload keys producers tried to enqueue, acknowledged or not.
    attempted: HashSet<String>,
    /// Acknowledged enqueues: payload key → message id.
    enqueued: HashMap<String, Uuid>,
    /// Every delivery, in the order answers arrived.
    seen: Vec<Seen>,
    /// Acknowledged acks: message id → when the first one's answer arrived.
    acked: HashMap<Uuid, Instant>,
}

type Shared = Arc<Mutex<Record>>;

fn record(shared: &Shared) -> std::sync::MutexGuard<'_, Record> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether an error means the server went away, which ends a task's round.
fn server_gone(error: &Error) -> bool {
    matches!(error, Error::Unavailable(_))
}

/// Enqueues uniquely keyed messages, one at a time or in batches of up to
/// five, until the server dies.
async fn produce(url: String, queue: QueueName, producer: usize, round: usize, shared: Shared) {
    let Ok(client) = Client::connect(&url).await else {
        return;
    };
    for n in 0usize.. {
        let batch = 1 + (n + producer) % 5;
        let keys: Vec<String> = (0..batch)
            .map(|i| format!("r{round}-p{producer}-n{n}-{i}"))
            .collect();
        record(&shared).attempted.extend(keys.iter().cloned());
        let messages: Vec<NewMessage> = keys
            .iter()
            .map(|k| NewMessage::new(k.clone().into_bytes()).with_metadata("key", k.clone()))
            .collect();
        let result = if batch == 1 {
            let mut messages = messages;
            client
                .enqueue(&queue, messages.remove(0))
                .await
                .map(|e| vec![e])
        } else {
            client.enqueue_batch(&queue, messages).await
        };
        match result {
            Ok(enqueued) => {
                assert_eq!(enqueued.len(), keys.len(), "one answer per message");
                let mut r = record(&shared);
                for (key, e) in keys.into_iter().zip(enqueued) {
                    assert!(!e.duplicate, "no dedup id was given");
                    r.enqueued.insert(key, e.message_id);
                }
            }
            Err(e) if server_gone(&e) => return,
            Err(e) => panic!("enqueue failed: {e}"),
        }
    }
}

/// Dequeues and mostly acknowledges, sometimes nacks, sometimes lets the
/// visibility timeout expire, until the server dies or `stop` is set.
async fn consume(
    url: String,
    queue: QueueName,
    consumer: usize,
    round: usize,
    shared: Shared,
    stop: Arc<AtomicBool>,
) {
    let Ok(client) = Client::connect(&url).await else {
        return;
    };
    let options = DequeueOptions {
        visibility_timeout: Some(VISIBILITY),
        max_messages: 10,
        wait: Duration::from_millis(200),
    };
    let mut turn = consumer;
    while !stop.load(Ordering::Relaxed) {
        let requested = Instant::now();
        let deliveries = match client.dequeue(&queue, options).await {
            Ok(d) => d,
            Err(e) if server_gone(&e) => return,
            Err(e) => panic!("dequeue failed: {e}"),
        };
        let received = Instant::now();
        {
            let mut r = record(&shared);
            for d in &deliveries {
                r.seen.push(Seen {
                    key: String::from_utf8_lossy(&d.data).into_owned(),
                    message_id: d.message_id,
                    attempt: d.delivery_attempt,
                    requested,
                    received,
                    round,
                });
            }
        }
        let mut to_ack: Vec<(Uuid, Receipt)> = Vec::new();
        for d in deliveries {
            turn += 1;
            match turn % 7 {
                // Left to time out: comes back after VISIBILITY.
                0 => {}
                1 => match client
                    .nack(
                        &queue,
                        &d.receipt,
                        Duration::ZERO,
                        Some("crash test".into()),
                    )
                    .await
                {
                    Ok(()) | Err(Error::LeaseLost { .. }) => {}
                    Err(e) if server_gone(&e) => return,
                    Err(e) => panic!("nack failed: {e}"),
                },
                _ => to_ack.push((d.message_id, d.receipt)),
            }
        }
        if to_ack.is_empty() {
            continue;
        }
        let receipts: Vec<Receipt> = to_ack.iter().map(|(_, r)| r.clone()).collect();
        let outcomes = if turn.is_multiple_of(2) {
            client.ack_batch(&queue, &receipts).await
        } else {
            // Single acks too, so both calls are under the load.
            let mut outcomes = Vec::new();
            for receipt in &receipts {
                match client.ack(&queue, receipt).await {
                    Err(e) if server_gone(&e) => return,
                    outcome => outcomes.push(outcome),
                }
            }
            Ok(outcomes)
        };
        let outcomes = match outcomes {
            Ok(o) => o,
            Err(e) if server_gone(&e) => return,
            Err(e) => panic!("ack failed: {e}"),
        };
        let acked_at = Instant::now();
        let mut r = record(&shared);
        for ((message_id, _), outcome) in to_ack.iter().zip(outcomes) {
            match outcome {
                Ok(()) => {
                    r.acked.entry(*message_id).or_insert(acked_at);
                }
                // A slow consumer: the message was delivered again meanwhile.
                Err(Error::LeaseLost { .. }) => {}
                Err(e) if server_gone(&e) => return,
                Err(e) => panic!("ack of {message_id} failed: {e}"),
            }
        }
    }
}

/// Restarts the server and consumes until the queue is empty.
async fn drain(data: &Path, queue: &QueueName, shared: &Shared, round: usize) {
    let server = ServerProcess::start(data);
    let client = server.client().await;
    let deadline = Instant::now() + DEADLINE;
    let options = DequeueOptions {
        visibility_timeout: Some(Duration::from_secs(60)),
        max_messages: 100,
        wait: Duration::from_millis(500),
    };
    loop {
        assert!(
            Instant::now() < deadline,
            "queue not drained within {DEADLINE:?}"
        );
        let requested = Instant::now();
        let deliveries = client.dequeue(queue, options).await.expect("drain dequeue");
        let received = Instant::now();
        if deliveries.is_empty() {
            let stats = client.queue_stats(queue).await.expect("stats");
            assert_eq!(
                stats.dead_letters, 0,
                "nothing was dead-lettered: {stats:?}"
            );
            if stats.depth() == 0 {
                break;
            }
            // Deliveries cut off by the last kill reappear after VISIBILITY.
            continue;
        }
        let receipts: Vec<Receipt> = deliveries.iter().map(|d| d.receipt.clone()).collect();
        {
            let mut r = record(shared);
            for d in &deliveries {
                r.seen.push(Seen {
                    key: String::from_utf8_lossy(&d.data).into_owned(),
                    message_id: d.message_id,
                    attempt: d.delivery_attempt,
                    requested,
                    received,
                    round,
                });
            }
        }
        let outcomes = client.ack_batch(queue, &receipts).await.expect("drain ack");
        let acked_at = Instant::now();
        let mut r = record(shared);
        for (d, outcome) in deliveries.iter().zip(outcomes) {
            outcome.unwrap_or_else(|e| panic!("drain ack of {}: {e}", d.message_id));
            r.acked.entry(d.message_id).or_insert(acked_at);
        }
    }
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_queue_load_keeps_every_acknowledged_enqueue_and_ack() {
    let seed = std::env::var("QUEUE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("QUEUE_CRASH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let queue: QueueName = "crash".parse().expect("valid name");
    let shared: Shared = Arc::default();
    let started = Instant::now();

    for round in 0..ROUNDS {
        let server = ServerProcess::start(&data);
        if round == 0 {
            let settings = QueueSettings {
                max_delivery_attempts: 100,
                dead_letter_queue: Some("crash-dlq".parse().expect("valid name")),
                visibility_timeout: VISIBILITY,
            };
            server
                .client()
                .await
                .create_queue(&queue, settings)
                .await
                .expect("create the queue");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for producer in 0..3 {
            let (url, q, s) = (server.url.clone(), queue.clone(), shared.clone());
            tasks.push(tokio::spawn(produce(url, q, producer, round, s)));
        }
        for consumer in 0..2 {
            let (url, q, s) = (server.url.clone(), queue.clone(), shared.clone());
            let stop = stop.clone();
            tasks.push(tokio::spawn(consume(url, q, consumer, round, s, stop)));
        }
        let kill_after = Duration::from_millis(rng.random_range(300..1200));
        tokio::time::sleep(kill_after).await;
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("clients notice the dead server")
                .expect("client task");
        }
        let r = record(&shared);
        eprintln!(
            "round {round}: SIGKILL after {kill_after:?}; so far {} enqueues and {} acks \
             acknowledged, {} deliveries",
            r.enqueued.len(),
            r.acked.len(),
            r.seen.len()
        );
    }
    drain(&data, &queue, &shared, ROUNDS).await;

    let r = record(&shared);
    let across_kills = verify(&r);
    eprintln!(
        "{} enqueues, {} deliveries, {} acks, {across_kills} messages delivered again after \
         a kill, in {:?}",
        r.enqueued.len(),
        r.seen.len(),
        r.acked.len(),
        started.elapsed()
    );
    assert!(
        r.enqueued.len() > 100 && r.acked.len() > 50 && across_kills > 0,
        "the load was real: {} enqueues, {} acks, {across_kills} redelivered across a kill",
        r.enqueued.len(),
        r.acked.len()
    );
}

/// Checks the invariants; returns how many messages were delivered both
/// before and after a kill, the deliveries that test attempt counting.
fn verify(r: &Record) -> usize {
    let mut by_message: HashMap<Uuid, Vec<&Seen>> = HashMap::new();
    for seen in &r.seen {
        assert!(
            r.attempted.contains(&seen.key),
            "delivered a message no producer sent: {seen:?}"
        );
        if let Some(id) = r.enqueued.get(&seen.key) {
            assert_eq!(
                *id, seen.message_id,
                "the enqueue answered another id: {seen:?}"
            );
        }
        by_message.entry(seen.message_id).or_default().push(seen);
    }

    for (key, id) in &r.enqueued {
        assert!(
            by_message.contains_key(id),
            "acknowledged enqueue {key} ({id}) was never delivered"
        );
    }

    let mut across_kills = 0;
    for (id, deliveries) in &by_message {
        if let Some(acked_at) = r.acked.get(id) {
            for d in deliveries {
                assert!(
                    d.requested <= *acked_at,
                    "{id} delivered again (attempt {}, round {}) after its ack was acknowledged",
                    d.attempt,
                    d.round
                );
            }
        }
        if deliveries.iter().any(|d| d.round != deliveries[0].round) {
            across_kills += 1;
        }
        // A delivery asked for after another's answer arrived must have a
        // higher attempt, across kills too.
        for earlier in deliveries {
            for later in deliveries {
                if later.requested > earlier.received {
                    assert!(
                        later.attempt > earlier.attempt,
                        "{id}: attempt went from {} (round {}) to {} (round {})",
                        earlier.attempt,
                        earlier.round,
                        later.attempt,
                        later.round
                    );
                }
            }
        }
    }
    across_kills
}
