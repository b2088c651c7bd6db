//! NATS JetStream as a work queue: a file-storage stream with `WorkQueue` retention (a
//! message is removed once acknowledged) and one durable pull consumer with explicit acks.
//!
//! - Enqueue: a JetStream publish, complete when the server's publish ack arrives; a batch
//!   is 100 publishes sent back to back, then their 100 acks awaited.
//! - Receive: each consumer holds an async-nats pull `stream()` that keeps pull requests of
//!   100 messages outstanding; a receive takes the messages that have arrived, up to 100.
//! - Ack: every message is acknowledged on its own (`AckExplicit`). A JetStream ack is a
//!   one-way message, so a batch's acks return once sent; each run checks afterwards that the
//!   stream is empty, i.e. that every ack was applied.

use std::future::IntoFuture;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{Config as StreamConfig, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use futures::{FutureExt as _, StreamExt};

use super::peer::{Consumer, Peer, Producer, Received};

pub const SYSTEM: &str = "nats-jetstream";
/// The server syncs its files on a timer (`sync_interval`, 2 min by default), not per message.
pub const DURABILITY: &str = "file storage, fsync every 2 min (not per message)";

const ADDR: &str = "127.0.0.1:4222";
const STREAM: &str = "WHARF_BENCH_QUEUE";
const SUBJECT: &str = "wharf-bench.queue";
const CONSUMER: &str = "wharf-bench";
/// Longer than any run, so nothing is redelivered while a run is under way.
const ACK_WAIT: Duration = Duration::from_secs(300);

#[derive(Clone)]
pub struct JetStream {
    js: Context,
}

async fn connect() -> anyhow::Result<(async_nats::Client, Context)> {
    let client = async_nats::connect(ADDR)
        .await
        .with_context(|| format!("NATS JetStream at {ADDR} is unreachable"))?;
    let js = jetstream::new(client.clone());
    Ok((client, js))
}

impl JetStream {
    /// Connects; whether JetStream answers shows at the first [`Peer::reset`], because
    /// async-nats 0.51 cannot parse the account-info reply of a 2.9 server.
    pub async fn connect() -> anyhow::Result<Self> {
        let (_, js) = connect().await?;
        Ok(Self { js })
    }
}

impl Peer for JetStream {
    type Producer = JetStreamProducer;
    type Consumer = JetStreamConsumer;

    async fn reset(&self) -> anyhow::Result<()> {
        self.remove().await?;
        let stream = self
            .js
            .create_stream(StreamConfig {
                name: STREAM.to_owned(),
                subjects: vec![SUBJECT.to_owned()],
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                ..StreamConfig::default()
            })
            .await
            .context("creating the JetStream stream")?;
        stream
            .create_consumer(pull::Config {
                durable_name: Some(CONSUMER.to_owned()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                ..pull::Config::default()
            })
            .await
            .context("creating the JetStream pull consumer")?;
        Ok(())
    }

    async fn producers(&self, n: usize) -> anyhow::Result<Vec<JetStreamProducer>> {
        Ok(vec![
            JetStreamProducer {
                js: self.js.clone()
            };
            n
        ])
    }

    async fn consumer(&self) -> anyhow::Result<JetStreamConsumer> {
        let (client, js) = connect().await?;
        let consumer: PullConsumer = js
            .get_consumer_from_stream(CONSUMER, STREAM)
            .await
            .context("looking up the JetStream consumer")?;
        Ok(JetStreamConsumer {
            client,
            consumer,
            messages: None,
        })
    }

    async fn remaining(&self) -> anyhow::Result<u64> {
        let info = self
            .js
            .get_stream(STREAM)
            .await
            .context("looking up the JetStream stream")?
            .get_info()
            .await
            .context("reading the JetStream stream's state")?;
        Ok(info.state.messages)
    }

    async fn remove(&self) -> anyhow::Result<()> {
        if self.js.get_stream(STREAM).await.is_ok() {
            self.js
                .delete_stream(STREAM)
                .await
                .context("deleting the JetStream stream")?;
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct JetStreamProducer {
    js: Context,
}

impl Producer for JetStreamProducer {
    async fn enqueue(&self, payload: Bytes) -> anyhow::Result<()> {
        self.js.publish(SUBJECT, payload).await?.await?;
        Ok(())
    }

    async fn enqueue_batch(&self, payloads: Vec<Bytes>) -> anyhow::Result<()> {
        let mut acks = Vec::with_capacity(payloads.len());
        for payload in payloads {
            acks.push(self.js.publish(SUBJECT, payload).await?.into_future());
        }
        futures::future::try_join_all(acks).await?;
        Ok(())
    }
}

pub struct JetStreamConsumer {
    client: async_nats::Client,
    consumer: PullConsumer,
    messages: Option<pull::Stream>,
}

impl Consumer for JetStreamConsumer {
    type Ack = Vec<jetstream::Message>;

    async fn receive(&mut self, max: usize, wait: Duration) -> anyhow::Result<Received<Self::Ack>> {
        let messages = match &mut self.messages {
            Some(messages) => messages,
            None => {
                let stream = self
                    .consumer
                    .stream()
                    .max_messages_per_batch(super::workloads::BATCH)
                    .messages()
                    .await
                    .context("starting to pull from the JetStream consumer")?;
                self.messages.insert(stream)
            }
        };
        let mut batch = Vec::new();
        if let Ok(first) = tokio::time::timeout(wait, messages.next()).await {
            batch.push(pulled(first)?);
            while batch.len() < max {
                match messages.next().now_or_never() {
                    Some(next) => batch.push(pulled(next)?),
                    None => break,
                }
            }
        }
        Ok(Received {
            payloads: batch.iter().map(|m| m.payload.clone()).collect(),
            ack: batch,
        })
    }

    async fn ack(&mut self, messages: Self::Ack) -> anyhow::Result<()> {
        for message in messages {
            message.ack().await.map_err(|e| anyhow!("acking: {e}"))?;
        }
        Ok(())
    }

    async fn close(self) -> anyhow::Result<()> {
        drop(self.messages);
        self.client.flush().await.context("flushing acks to NATS")?;
        Ok(())
    }
}

fn pulled(
    next: Option<Result<jetstream::Message, pull::MessagesError>>,
) -> anyhow::Result<jetstream::Message> {
    next.context("the JetStream message stream ended")?
        .context("pulling from the JetStream consumer")
}
