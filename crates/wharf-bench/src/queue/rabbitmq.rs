//! RabbitMQ as a queue: a durable classic queue, persistent messages (delivery mode 2),
//! publisher confirms, manual acks.
//!
//! - Enqueue: a publish on a confirm-mode channel, complete when the broker confirms it;
//!   a batch is 100 publishes sent back to back, then their 100 confirms awaited. The
//!   producers of one run share one channel, so `enqueue_single_c32` keeps 32 unconfirmed
//!   publishes in flight on it.
//! - Receive: each consumer has its own connection and channel with `basic.qos` prefetch 100
//!   and a `basic.consume` subscription; a receive takes the deliveries that have arrived,
//!   up to 100.
//! - Ack: one `basic.ack` with `multiple = true` per received batch (at most 100 messages).
//!   An AMQP ack is one-way, so it returns once sent; each run checks afterwards that the
//!   queue is empty.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use bytes::Bytes;
use futures::{FutureExt as _, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::peer::{Consumer, Peer, Producer, Received};
use super::workloads::BATCH;

pub const SYSTEM: &str = "rabbitmq";
pub const DURABILITY: &str = "durable queue, persistent, publisher confirms";

const URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const QUEUE: &str = "wharf-bench-queue";
/// AMQP delivery mode of a persistent message.
const PERSISTENT: u8 = 2;

#[derive(Clone)]
pub struct RabbitMq {
    connection: Arc<Connection>,
    control: Channel,
}

async fn connect() -> anyhow::Result<Connection> {
    Connection::connect(URI, ConnectionProperties::default())
        .await
        .context("RabbitMQ at 127.0.0.1:5672 is unreachable")
}

impl RabbitMq {
    pub async fn connect() -> anyhow::Result<Self> {
        let connection = connect().await?;
        let control = connection
            .create_channel()
            .await
            .context("opening a RabbitMQ channel")?;
        Ok(Self {
            connection: Arc::new(connection),
            control,
        })
    }

    async fn declare(&self, passive: bool) -> anyhow::Result<lapin::Queue> {
        let mut options = QueueDeclareOptions::durable();
        options.passive = passive;
        self.control
            .queue_declare(QUEUE.into(), options, FieldTable::default())
            .await
            .context("declaring the RabbitMQ queue")
    }
}

impl Peer for RabbitMq {
    type Producer = RabbitMqProducer;
    type Consumer = RabbitMqConsumer;

    async fn reset(&self) -> anyhow::Result<()> {
        self.remove().await?;
        self.declare(false).await?;
        Ok(())
    }

    async fn producers(&self, n: usize) -> anyhow::Result<Vec<RabbitMqProducer>> {
        let channel = self
            .connection
            .create_channel()
            .await
            .context("opening a RabbitMQ channel")?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("enabling publisher confirms")?;
        Ok(vec![RabbitMqProducer { channel }; n])
    }

    async fn consumer(&self) -> anyhow::Result<RabbitMqConsumer> {
        let connection = connect().await?;
        let channel = connection
            .create_channel()
            .await
            .context("opening a RabbitMQ channel")?;
        channel
            .basic_qos(BATCH as u16, BasicQosOptions::default())
            .await
            .context("setting the RabbitMQ prefetch")?;
        Ok(RabbitMqConsumer {
            connection,
            channel,
            deliveries: None,
        })
    }

    async fn remaining(&self) -> anyhow::Result<u64> {
        // Counts ready messages; unacknowledged ones return to ready when their consumer's
        // channel closes, which every run does before asking.
        Ok(u64::from(self.declare(true).await?.message_count()))
    }

    async fn remove(&self) -> anyhow::Result<()> {
        self.control
            .queue_delete(QUEUE.into(), QueueDeleteOptions::default())
            .await
            .context("deleting the RabbitMQ queue")?;
        Ok(())
    }
}

#[derive(Clone)]
pub struct RabbitMqProducer {
    channel: Channel,
}

impl RabbitMqProducer {
    async fn publish(&self, payload: &[u8]) -> anyhow::Result<lapin::PublisherConfirm> {
        self.channel
            .basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions::default(),
                payload,
                BasicProperties::default().with_delivery_mode(PERSISTENT),
            )
            .await
            .context("publishing to RabbitMQ")
    }
}

async fn confirmed(confirm: lapin::PublisherConfirm) -> anyhow::Result<()> {
    let confirmation = confirm.await.context("waiting for a publisher confirm")?;
    ensure!(
        confirmation.is_ack(),
        "RabbitMQ refused a message: {confirmation:?}"
    );
    Ok(())
}

impl Producer for RabbitMqProducer {
    async fn enqueue(&self, payload: Bytes) -> anyhow::Result<()> {
        confirmed(self.publish(&payload).await?).await
    }

    async fn enqueue_batch(&self, payloads: Vec<Bytes>) -> anyhow::Result<()> {
        let mut confirms = Vec::with_capacity(payloads.len());
        for payload in &payloads {
            confirms.push(confirmed(self.publish(payload).await?));
        }
        futures::future::try_join_all(confirms).await?;
        Ok(())
    }
}

pub struct RabbitMqConsumer {
    connection: Connection,
    channel: Channel,
    deliveries: Option<lapin::Consumer>,
}

impl Consumer for RabbitMqConsumer {
    /// The delivery tag of the batch's last message.
    type Ack = u64;

    async fn receive(&mut self, max: usize, wait: Duration) -> anyhow::Result<Received<Self::Ack>> {
        let deliveries = match &mut self.deliveries {
            Some(deliveries) => deliveries,
            None => {
                let consumer = self
                    .channel
                    .basic_consume(
                        QUEUE.into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .context("subscribing to the RabbitMQ queue")?;
                self.deliveries.insert(consumer)
            }
        };
        let mut payloads = Vec::new();
        let mut last_tag = 0;
        if let Ok(first) = tokio::time::timeout(wait, deliveries.next()).await {
            let mut next = Some(first);
            while let Some(item) = next {
                let delivery = item
                    .context("the RabbitMQ consumer was cancelled")?
                    .context("receiving from RabbitMQ")?;
                last_tag = delivery.delivery_tag;
                payloads.push(Bytes::from(delivery.data));
                next = if payloads.len() < max {
                    deliveries.next().now_or_never()
                } else {
                    None
                };
            }
        }
        Ok(Received {
            payloads,
            ack: last_tag,
        })
    }

    async fn ack(&mut self, last_tag: u64) -> anyhow::Result<()> {
        self.channel
            .basic_ack(last_tag, BasicAckOptions { multiple: true })
            .await
            .context("acking on RabbitMQ")
    }

    async fn close(self) -> anyhow::Result<()> {
        self.channel
            .close(200, "done".into())
            .await
            .context("closing a RabbitMQ channel")?;
        self.connection
            .close(200, "done".into())
            .await
            .context("closing a RabbitMQ connection")
    }
}
