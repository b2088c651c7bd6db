//! Wharf as a queue, served in this process over gRPC and reached through
//! [`wharf_client::Client`] like any remote client. The storage is a parameter: the `queue`
//! suite serves a scratch data directory with full durability, the `postgres` suite one
//! PostgreSQL schema, from one node or several.
//!
//! - Enqueue: `enqueue`; a batch is one `enqueue_batch` of 100. Producers share one
//!   client per node, whose single enqueues go on one `EnqueueStream`, so
//!   `enqueue_single_c32` keeps 32 requests in flight on that stream, each answered once
//!   durable (on several nodes, producer `i` uses node `i mod nodes`).
//! - Receive: a [`wharf_client::Consumer`], which dequeues with `max_messages` up to 100
//!   and the workload's wait as long poll, one call ahead (the prefetch that the JetStream
//!   and RabbitMQ consumers have too: a batch is on its way while the previous one is
//!   acknowledged); each consumer on its own connection (on several nodes, the `i`-th
//!   consumer of a run connects to node `i mod nodes`).
//! - Ack: one `ack_batch` with the batch's receipts, kept in flight while the consumer
//!   dequeues its next batch (AMQP and JetStream acknowledgements are one-way messages;
//!   this is the same overlap with every outcome still checked). The next ack, or
//!   `close`, first waits for the previous one and fails if any receipt failed, so at
//!   most one batch per consumer is unconfirmed, and the drain only ends once every ack
//!   is durable.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use wharf::{
    Config, DequeueOptions, Durability, Error, NewMessage, QueueName, QueueSettings, Receipt,
    StorageConfig,
};
use wharf_client::Client;
use wharf_server::Server;

use super::peer::{Consumer, Peer, Producer, Received};
use crate::harness::Harness;

pub const SYSTEM: &str = "wharf";
pub const DURABILITY: &str = "embedded SQLite WAL, fdatasync per group commit";

const QUEUE: &str = "wharf-bench-queue";
/// Longer than any run, so nothing is redelivered while a run is under way.
const VISIBILITY: Duration = Duration::from_secs(300);

/// Handles to the servers of one run; clones share the consumer round robin.
#[derive(Clone)]
pub struct WharfGrpc {
    /// The nodes, in the order producers and consumers are spread over them; the first
    /// one also creates, counts and deletes the queue.
    nodes: Arc<[Node]>,
    queue: QueueName,
    /// Consumers opened since the last reset, so that each run spreads them from node 0.
    consumers: Arc<AtomicUsize>,
}

struct Node {
    url: String,
    client: Client,
}

/// The embedded store in `dir` with full durability: the storage of the `queue` suite.
pub fn embedded(dir: &Path) -> StorageConfig {
    StorageConfig::Embedded {
        path: dir.to_path_buf(),
        durability: Durability::Full,
    }
}

/// Starts a server on `storage`, on free loopback ports.
pub async fn start_server(storage: StorageConfig) -> anyhow::Result<Server> {
    let what = match &storage {
        StorageConfig::Embedded { path, .. } => format!("on {}", path.display()),
        StorageConfig::Postgres(pg) => format!("on PostgreSQL schema `{}`", pg.schema),
    };
    let mut config = Config {
        storage,
        ..Config::default()
    };
    config.server.grpc_listen = "127.0.0.1:0".parse()?;
    config.server.http_listen = "127.0.0.1:0".parse()?;
    Server::start(&config)
        .await
        .with_context(|| format!("starting a Wharf server {what}"))
}

/// Starts one server per entry of `nodes` (in order), runs `measure` on them as one
/// peer, then shuts the servers down, also when measuring failed.
pub fn measure_served(
    h: &mut Harness<'_>,
    nodes: &[StorageConfig],
    measure: impl FnOnce(&mut Harness<'_>, WharfGrpc) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut servers = Vec::with_capacity(nodes.len());
    let connected = h.runtime()?.block_on(async {
        for storage in nodes {
            servers.push(start_server(storage.clone()).await?);
        }
        WharfGrpc::connect(&servers.iter().collect::<Vec<_>>()).await
    });
    let measured = connected.and_then(|peer| measure(h, peer));
    h.runtime()?.block_on(async {
        for server in servers {
            server.shutdown().await;
        }
    });
    measured
}

async fn connect(url: &str) -> anyhow::Result<Client> {
    Client::connect(url)
        .await
        .with_context(|| format!("the Wharf server at {url} is unreachable"))
}

impl WharfGrpc {
    /// Connects to `servers`, which must share their storage when there are several.
    pub async fn connect(servers: &[&Server]) -> anyhow::Result<Self> {
        ensure!(
            !servers.is_empty(),
            "a Wharf peer needs at least one server"
        );
        let mut nodes = Vec::with_capacity(servers.len());
        for server in servers {
            let url = format!("http://{}", server.grpc_addr());
            let client = connect(&url).await?;
            nodes.push(Node { url, client });
        }
        Ok(Self {
            nodes: nodes.into(),
            queue: QueueName::new(QUEUE)?,
            consumers: Arc::default(),
        })
    }

    /// The node that manages the queue.
    fn control(&self) -> &Client {
        &self.nodes[0].client
    }
}

impl Peer for WharfGrpc {
    type Producer = WharfProducer;
    type Consumer = WharfConsumer;

    async fn reset(&self) -> anyhow::Result<()> {
        self.consumers.store(0, Ordering::Relaxed);
        self.remove().await?;
        let settings = QueueSettings {
            dead_letter_queue: None,
            visibility_timeout: VISIBILITY,
            ..QueueSettings::default()
        };
        self.control()
            .create_queue(&self.queue, settings)
            .await
            .context("creating the Wharf queue")?;
        Ok(())
    }

    async fn producers(&self, n: usize) -> anyhow::Result<Vec<WharfProducer>> {
        let producers = (0..n)
            .map(|i| WharfProducer {
                client: self.nodes[i % self.nodes.len()].client.clone(),
                queue: self.queue.clone(),
            })
            .collect();
        Ok(producers)
    }

    async fn consumer(&self) -> anyhow::Result<WharfConsumer> {
        let i = self.consumers.fetch_add(1, Ordering::Relaxed);
        let node = &self.nodes[i % self.nodes.len()];
        Ok(WharfConsumer {
            client: connect(&node.url).await?,
            queue: self.queue.clone(),
            receiving: None,
            acking: None,
        })
    }

    async fn remaining(&self) -> anyhow::Result<u64> {
        let stats = self
            .control()
            .queue_stats(&self.queue)
            .await
            .context("reading the Wharf queue's statistics")?;
        Ok(stats.depth())
    }

    async fn remove(&self) -> anyhow::Result<()> {
        match self.control().delete_queue(&self.queue).await {
            Ok(()) | Err(Error::QueueNotFound(_)) => Ok(()),
            Err(e) => Err(e).context("deleting the Wharf queue"),
        }
    }
}

#[derive(Clone)]
pub struct WharfProducer {
    client: Client,
    queue: QueueName,
}

impl Producer for WharfProducer {
    async fn enqueue(&self, payload: Bytes) -> anyhow::Result<()> {
        self.client
            .enqueue(&self.queue, NewMessage::new(payload))
            .await?;
        Ok(())
    }

    async fn enqueue_batch(&self, payloads: Vec<Bytes>) -> anyhow::Result<()> {
        let count = payloads.len();
        let messages = payloads.into_iter().map(NewMessage::new).collect();
        let enqueued = self.client.enqueue_batch(&self.queue, messages).await?;
        ensure!(
            enqueued.len() == count,
            "enqueued {} of {count} messages",
            enqueued.len()
        );
        Ok(())
    }
}

pub struct WharfConsumer {
    client: Client,
    queue: QueueName,
    /// The consumer for the options of the last receive.
    receiving: Option<(DequeueOptions, wharf_client::Consumer)>,
    /// The acknowledgement in flight, if any; it yields when it was confirmed.
    acking: Option<tokio::task::JoinHandle<anyhow::Result<Instant>>>,
}

impl WharfConsumer {
    /// Waits for the acknowledgement in flight and checks every outcome.
    async fn confirmed(&mut self) -> anyhow::Result<Option<Instant>> {
        match self.acking.take() {
            Some(acking) => Ok(Some(acking.await.context("an ack task panicked")??)),
            None => Ok(None),
        }
    }
}

async fn ack_all(
    client: Client,
    queue: QueueName,
    receipts: Vec<Receipt>,
) -> anyhow::Result<Instant> {
    let outcomes = client.ack_batch(&queue, &receipts).await?;
    ensure!(
        outcomes.len() == receipts.len(),
        "{} outcomes for {} receipts",
        outcomes.len(),
        receipts.len()
    );
    for outcome in outcomes {
        outcome.context("acknowledging a Wharf delivery")?;
    }
    Ok(Instant::now())
}

impl Consumer for WharfConsumer {
    type Ack = Vec<Receipt>;

    async fn receive(&mut self, max: usize, wait: Duration) -> anyhow::Result<Received<Self::Ack>> {
        let options = DequeueOptions {
            visibility_timeout: Some(VISIBILITY),
            max_messages: u32::try_from(max)?,
            wait,
        };
        let consumer = match self.receiving.take() {
            Some((same, consumer)) if same == options => consumer,
            other => {
                if let Some((_, consumer)) = other {
                    consumer.close().await?;
                }
                self.client.consumer(&self.queue, options)
            }
        };
        let consumer = &mut self.receiving.insert((options, consumer)).1;
        let deliveries = consumer.next().await?;
        let (payloads, receipts) = deliveries.into_iter().map(|d| (d.data, d.receipt)).unzip();
        Ok(Received {
            payloads,
            ack: receipts,
        })
    }

    async fn ack(&mut self, receipts: Vec<Receipt>) -> anyhow::Result<()> {
        self.confirmed().await?;
        let (client, queue) = (self.client.clone(), self.queue.clone());
        self.acking = Some(tokio::spawn(ack_all(client, queue, receipts)));
        Ok(())
    }

    async fn settle(&mut self) -> anyhow::Result<Option<Instant>> {
        self.confirmed().await
    }

    async fn close(mut self) -> anyhow::Result<()> {
        if let Some((_, consumer)) = self.receiving.take() {
            consumer.close().await?;
        }
        self.confirmed().await.map(drop)
    }
}
