//! Wharf as a queue, served in this process over gRPC from a scratch data directory with
//! full durability, and reached through [`wharf_client::Client`] like any remote client.
//!
//! - Enqueue: `enqueue`; a batch is one `enqueue_batch` of 100. Producers share one
//!   HTTP/2 connection, so `enqueue_single_c32` is 32 concurrent requests on it.
//! - Receive: `dequeue` with `max_messages` up to 100 and the workload's wait as long poll,
//!   each consumer on its own connection.
//! - Ack: one `ack_batch` with the batch's receipts, kept in flight while the consumer
//!   dequeues its next batch (AMQP and JetStream acknowledgements are one-way messages;
//!   this is the same overlap with every outcome still checked). The next ack, or
//!   `close`, first waits for the previous one and fails if any receipt failed, so at
//!   most one batch per consumer is unconfirmed, and the drain only ends once every ack
//!   is durable.

use std::path::Path;
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

pub const SYSTEM: &str = "wharf";
pub const DURABILITY: &str = "embedded SQLite WAL, fsync per commit (group commit)";

const QUEUE: &str = "wharf-bench-queue";
/// Longer than any run, so nothing is redelivered while a run is under way.
const VISIBILITY: Duration = Duration::from_secs(300);

#[derive(Clone)]
pub struct WharfGrpc {
    url: String,
    client: Client,
    queue: QueueName,
}

/// Starts a server storing its data in `dir`, on free loopback ports.
pub async fn start_server(dir: &Path) -> anyhow::Result<Server> {
    let mut config = Config {
        storage: StorageConfig::Embedded {
            path: dir.to_path_buf(),
            durability: Durability::Full,
        },
        ..Config::default()
    };
    config.server.grpc_listen = "127.0.0.1:0".parse()?;
    config.server.http_listen = "127.0.0.1:0".parse()?;
    Server::start(&config)
        .await
        .with_context(|| format!("starting a Wharf server on {}", dir.display()))
}

impl WharfGrpc {
    pub async fn connect(server: &Server) -> anyhow::Result<Self> {
        let url = format!("http://{}", server.grpc_addr());
        let client = Client::connect(&url)
            .await
            .with_context(|| format!("the Wharf server at {url} is unreachable"))?;
        Ok(Self {
            url,
            client,
            queue: QueueName::new(QUEUE)?,
        })
    }
}

impl Peer for WharfGrpc {
    type Producer = WharfProducer;
    type Consumer = WharfConsumer;

    async fn reset(&self) -> anyhow::Result<()> {
        self.remove().await?;
        let settings = QueueSettings {
            dead_letter_queue: None,
            visibility_timeout: VISIBILITY,
            ..QueueSettings::default()
        };
        self.client
            .create_queue(&self.queue, settings)
            .await
            .context("creating the Wharf queue")?;
        Ok(())
    }

    async fn producers(&self, n: usize) -> anyhow::Result<Vec<WharfProducer>> {
        let producer = WharfProducer {
            client: self.client.clone(),
            queue: self.queue.clone(),
        };
        Ok(vec![producer; n])
    }

    async fn consumer(&self) -> anyhow::Result<WharfConsumer> {
        let client = Client::connect(&self.url)
            .await
            .with_context(|| format!("the Wharf server at {} is unreachable", self.url))?;
        Ok(WharfConsumer {
            client,
            queue: self.queue.clone(),
            acking: None,
        })
    }

    async fn remaining(&self) -> anyhow::Result<u64> {
        let stats = self
            .client
            .queue_stats(&self.queue)
            .await
            .context("reading the Wharf queue's statistics")?;
        Ok(stats.depth())
    }

    async fn remove(&self) -> anyhow::Result<()> {
        match self.client.delete_queue(&self.queue).await {
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
        let deliveries = self.client.dequeue(&self.queue, options).await?;
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
        self.confirmed().await.map(drop)
    }
}
