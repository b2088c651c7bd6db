//! NATS JetStream and a 5 MiB message: refused. A NATS server accepts messages up to its
//! `max_payload` (1 MiB unless configured otherwise, at most 64 MiB) and announces it when
//! a client connects; async-nats checks every publish against it and returns
//! `MaxPayloadExceeded` without sending (the server would close the connection instead).
//!
//! The workload publishes one 5 MiB message to a file-storage stream and records the
//! refusal: a figure of 0 with the error as the row's note. A server configured to accept
//! such messages is not what this workload documents, so it fails the suite, saying so.

use anyhow::{Context as _, bail};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::jetstream::{self, Context};
use bytes::Bytes;

pub const SYSTEM: &str = "nats-jetstream";
pub const WORKLOAD: &str = "append_5mib_nats";
/// The server syncs its files on a timer (`sync_interval`, 2 min by default), not per message.
pub const DURABILITY: &str = "file storage, fsync every 2 min (not per message)";

const ADDR: &str = "127.0.0.1:4222";
const STREAM: &str = "WHARF_BENCH_PAYLOAD";
const SUBJECT: &str = "wharf-bench.payload";

pub struct JetStream {
    client: async_nats::Client,
    js: Context,
}

impl JetStream {
    pub async fn connect() -> anyhow::Result<Self> {
        let client = async_nats::connect(ADDR)
            .await
            .with_context(|| format!("NATS JetStream at {ADDR} is unreachable"))?;
        let js = jetstream::new(client.clone());
        Ok(Self { client, js })
    }

    /// Publishes `data` to a fresh file-storage stream; returns why it was refused.
    pub async fn refusal(&self, data: Bytes) -> anyhow::Result<String> {
        let size = data.len();
        if self.js.get_stream(STREAM).await.is_ok() {
            self.js
                .delete_stream(STREAM)
                .await
                .context("deleting the JetStream stream")?;
        }
        self.js
            .create_stream(StreamConfig {
                name: STREAM.to_owned(),
                subjects: vec![SUBJECT.to_owned()],
                storage: StorageType::File,
                ..StreamConfig::default()
            })
            .await
            .context("creating the JetStream stream")?;
        let published = match self.js.publish(SUBJECT, data).await {
            Ok(ack) => ack.await.map(drop).context("waiting for the publish ack"),
            Err(e) => Err(e.into()),
        };
        self.js
            .delete_stream(STREAM)
            .await
            .context("deleting the JetStream stream")?;
        let max_payload = self.client.max_payload();
        match published {
            Err(e) => match e.downcast_ref::<jetstream::context::PublishError>() {
                Some(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => Ok(format!(
                    "refused: {e} (server max_payload {max_payload} bytes, nats-server {})",
                    self.client.server_info().version
                )),
                _ => Err(e.context(format!("publishing {size} bytes to JetStream"))),
            },
            Ok(()) => bail!(
                "NATS at {ADDR} accepted a {size}-byte message (max_payload {max_payload}); \
                 this workload documents the default limit of 1 MiB"
            ),
        }
    }
}
