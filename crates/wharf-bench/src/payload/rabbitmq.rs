//! RabbitMQ moving the same 5 MiB payloads: a durable classic queue, persistent messages
//! (delivery mode 2), publisher confirms, then `basic.get` with a manual `basic.ack`.
//!
//! - Append: one publish on a confirm-mode channel, complete when the broker confirms it
//!   (for a persistent message on a durable queue, once it is written to disk); the next
//!   publish starts after that, as Wharf's next append starts after the last returned.
//! - Read: one `basic.get` (a request and its answer, like Wharf's read of one event),
//!   then `basic.ack` of its delivery tag. An AMQP ack is one-way, so it returns once sent;
//!   each run checks afterwards that the queue is empty.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::{check_payload, payload};

pub const SYSTEM: &str = "rabbitmq";
pub const DURABILITY: &str = "durable queue, persistent, publisher confirms";

const URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const QUEUE: &str = "wharf-bench-payload";
/// AMQP delivery mode of a persistent message.
const PERSISTENT: u8 = 2;

pub struct RabbitMq {
    connection: Connection,
    /// In confirm mode: publishes, gets and acks.
    channel: Channel,
}

impl RabbitMq {
    pub async fn connect() -> anyhow::Result<Self> {
        let connection = Connection::connect(URI, ConnectionProperties::default())
            .await
            .context("RabbitMQ at 127.0.0.1:5672 is unreachable")?;
        let channel = connection
            .create_channel()
            .await
            .context("opening a RabbitMQ channel")?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("enabling publisher confirms")?;
        Ok(Self {
            connection,
            channel,
        })
    }

    async fn declare(&self, passive: bool) -> anyhow::Result<lapin::Queue> {
        let mut options = QueueDeclareOptions::durable();
        options.passive = passive;
        self.channel
            .queue_declare(QUEUE.into(), options, FieldTable::default())
            .await
            .context("declaring the RabbitMQ queue")
    }

    async fn remove(&self) -> anyhow::Result<()> {
        self.channel
            .queue_delete(QUEUE.into(), QueueDeleteOptions::default())
            .await
            .context("deleting the RabbitMQ queue")?;
        Ok(())
    }

    /// On a fresh queue: publishes one message per seed, then gets and acks them all;
    /// returns the time of the publishes and of the reads.
    pub async fn round_trip(&self, seeds: &[u64]) -> anyhow::Result<(Duration, Duration)> {
        self.remove().await?;
        self.declare(false).await?;

        let mut published = Duration::ZERO;
        for &seed in seeds {
            let data = payload(seed);
            let started = Instant::now();
            let confirm = self
                .channel
                .basic_publish(
                    "".into(),
                    QUEUE.into(),
                    BasicPublishOptions::default(),
                    &data,
                    BasicProperties::default().with_delivery_mode(PERSISTENT),
                )
                .await
                .context("publishing a 5 MiB message to RabbitMQ")?
                .await
                .context("waiting for a publisher confirm")?;
            published += started.elapsed();
            ensure!(
                confirm.is_ack(),
                "RabbitMQ refused a 5 MiB message: {confirm:?}"
            );
        }

        let mut read = Duration::ZERO;
        for &seed in seeds {
            let started = Instant::now();
            let message = self
                .channel
                .basic_get(QUEUE.into(), BasicGetOptions { no_ack: false })
                .await
                .context("getting a message from RabbitMQ")?
                .context("the RabbitMQ queue is empty before every message was read")?;
            self.channel
                .basic_ack(message.delivery.delivery_tag, BasicAckOptions::default())
                .await
                .context("acking on RabbitMQ")?;
            read += started.elapsed();
            check_payload(&message.delivery.data, seed).context("a RabbitMQ message")?;
        }
        let left = self.declare(true).await?.message_count();
        ensure!(left == 0, "{left} messages left in the RabbitMQ queue");
        Ok((published, read))
    }

    /// Deletes the queue and closes the connection.
    pub async fn close(&self) -> anyhow::Result<()> {
        self.remove().await?;
        self.channel
            .close(200, "done".into())
            .await
            .context("closing a RabbitMQ channel")?;
        self.connection
            .close(200, "done".into())
            .await
            .context("closing the RabbitMQ connection")
    }
}
