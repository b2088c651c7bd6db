//! Redis Streams as a queue: `XADD`, a consumer group read with `XREADGROUP`, `XACK`.
//!
//! - Enqueue: `XADD`; a batch is 100 `XADD`s in one pipeline (one round trip, not a
//!   transaction). Producers share one connection, so `enqueue_single_c32` is a pipeline
//!   window of 32.
//! - Receive: `XREADGROUP ... COUNT 100 BLOCK <wait>` on the consumer's own connection.
//! - Ack: one `XACK` naming the batch's ids. As always with Redis Streams, an ack removes the
//!   entry from the group's pending list; the entry itself stays in the stream until it is
//!   trimmed, which these runs leave to the final `DEL`.
//!
//! The server runs without persistence; [`AofGuard`] switches the append-only file on with
//! the `appendfsync` policy being measured and puts the original settings back afterwards,
//! also when a run fails or panics.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::io::tcp::TcpSettings;
use redis::streams::StreamInfoGroupsReply;
use redis::{AsyncConnectionConfig, IntoConnectionInfo, Value};

use super::peer::{Consumer, Peer, Producer, Received};

pub const SYSTEM_EVERYSEC: &str = "redis-streams-everysec";
pub const DURABILITY_EVERYSEC: &str = "AOF appendfsync everysec";
pub const SYSTEM_ALWAYS: &str = "redis-streams-always";
pub const DURABILITY_ALWAYS: &str = "AOF appendfsync always";

const URL: &str = "redis://127.0.0.1:6379/";
const KEY: &str = "wharf-bench-queue";
const GROUP: &str = "wharf-bench";
const FIELD: &str = "d";
/// Longer than any blocking read or pipeline of a run; the client's default is 500 ms.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long switching the AOF on may take (it rewrites the file first).
const AOF_REWRITE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct RedisStreams {
    client: redis::Client,
    control: MultiplexedConnection,
    consumers: Arc<AtomicUsize>,
}

/// A client with `TCP_NODELAY` set, which redis-rs leaves off by default (every other
/// client here sets it): without it, Nagle's algorithm stalls pipelined requests.
fn client() -> anyhow::Result<redis::Client> {
    let info = URL
        .into_connection_info()
        .context("the Redis URL")?
        .set_tcp_settings(TcpSettings::default().set_nodelay(true));
    redis::Client::open(info).context("the Redis URL")
}

async fn connection(client: &redis::Client) -> anyhow::Result<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .context("Redis at 127.0.0.1:6379 is unreachable")
}

impl RedisStreams {
    pub async fn connect() -> anyhow::Result<Self> {
        let client = client()?;
        let control = connection(&client).await?;
        Ok(Self {
            client,
            control,
            consumers: Arc::new(AtomicUsize::new(0)),
        })
    }
}

impl Peer for RedisStreams {
    type Producer = RedisProducer;
    type Consumer = RedisConsumer;

    async fn reset(&self) -> anyhow::Result<()> {
        self.remove().await?;
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(KEY)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async::<()>(&mut self.control.clone())
            .await
            .context("creating the Redis stream and consumer group")
    }

    async fn producers(&self, n: usize) -> anyhow::Result<Vec<RedisProducer>> {
        let connection = connection(&self.client).await?;
        Ok(vec![RedisProducer { connection }; n])
    }

    async fn consumer(&self) -> anyhow::Result<RedisConsumer> {
        let index = self.consumers.fetch_add(1, Ordering::Relaxed);
        Ok(RedisConsumer {
            connection: connection(&self.client).await?,
            name: format!("consumer-{index}"),
        })
    }

    async fn remaining(&self) -> anyhow::Result<u64> {
        let info: StreamInfoGroupsReply = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(KEY)
            .query_async(&mut self.control.clone())
            .await
            .context("reading the Redis consumer group")?;
        let group = info
            .groups
            .iter()
            .find(|g| g.name == GROUP)
            .context("the Redis consumer group is gone")?;
        let undelivered = group
            .lag
            .context("Redis cannot tell how many entries the group has not read")?;
        Ok((group.pending + undelivered) as u64)
    }

    async fn remove(&self) -> anyhow::Result<()> {
        redis::cmd("DEL")
            .arg(KEY)
            .query_async::<()>(&mut self.control.clone())
            .await
            .context("deleting the Redis stream")
    }
}

#[derive(Clone)]
pub struct RedisProducer {
    connection: MultiplexedConnection,
}

fn xadd(payload: &[u8]) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(KEY).arg("*").arg(FIELD).arg(payload);
    cmd
}

impl Producer for RedisProducer {
    async fn enqueue(&self, payload: Bytes) -> anyhow::Result<()> {
        xadd(&payload)
            .query_async::<()>(&mut self.connection.clone())
            .await
            .context("XADD")
    }

    async fn enqueue_batch(&self, payloads: Vec<Bytes>) -> anyhow::Result<()> {
        let mut pipe = redis::pipe();
        for payload in &payloads {
            pipe.add_command(xadd(payload)).ignore();
        }
        pipe.query_async::<()>(&mut self.connection.clone())
            .await
            .context("pipelined XADDs")
    }
}

pub struct RedisConsumer {
    connection: MultiplexedConnection,
    name: String,
}

impl Consumer for RedisConsumer {
    /// The entry ids.
    type Ack = Vec<String>;

    async fn receive(&mut self, max: usize, wait: Duration) -> anyhow::Result<Received<Self::Ack>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(&self.name)
            .arg("COUNT")
            .arg(max);
        // `BLOCK 0` would block forever.
        let block_ms = wait.as_millis();
        if block_ms > 0 {
            cmd.arg("BLOCK").arg(block_ms as u64);
        }
        cmd.arg("STREAMS").arg(KEY).arg(">");
        let reply: Value = cmd
            .query_async(&mut self.connection)
            .await
            .context("XREADGROUP")?;
        let (ids, payloads) = entries(reply)?;
        Ok(Received { payloads, ack: ids })
    }

    async fn ack(&mut self, ids: Vec<String>) -> anyhow::Result<()> {
        let acked: usize = redis::cmd("XACK")
            .arg(KEY)
            .arg(GROUP)
            .arg(&ids)
            .query_async(&mut self.connection)
            .await
            .context("XACK")?;
        ensure!(
            acked == ids.len(),
            "XACK acknowledged {acked} of {} ids",
            ids.len()
        );
        Ok(())
    }

    async fn close(self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The ids and payloads of an `XREADGROUP` reply (RESP2: nil, or
/// `[[key, [[id, [field, value, ...]], ...]]]`), read without copying payloads twice.
fn entries(reply: Value) -> anyhow::Result<(Vec<String>, Vec<Bytes>)> {
    let mut ids = Vec::new();
    let mut payloads = Vec::new();
    let streams = match reply {
        Value::Nil => return Ok((ids, payloads)),
        Value::Array(streams) => streams,
        other => bail!("unexpected XREADGROUP reply: {other:?}"),
    };
    for stream in streams {
        let Value::Array(key_and_entries) = stream else {
            bail!("unexpected XREADGROUP stream: {stream:?}");
        };
        let Some(Value::Array(stream_entries)) = key_and_entries.into_iter().nth(1) else {
            bail!("an XREADGROUP stream without entries");
        };
        for entry in stream_entries {
            let Value::Array(id_and_fields) = entry else {
                bail!("unexpected XREADGROUP entry: {entry:?}");
            };
            let mut parts = id_and_fields.into_iter();
            let (Some(Value::BulkString(id)), Some(Value::Array(fields))) =
                (parts.next(), parts.next())
            else {
                bail!("an XREADGROUP entry without id or fields");
            };
            let Some(Value::BulkString(payload)) = fields.into_iter().nth(1) else {
                bail!("an XREADGROUP entry without a payload");
            };
            ids.push(String::from_utf8(id).context("a stream id that is not UTF-8")?);
            payloads.push(Bytes::from(payload));
        }
    }
    Ok((ids, payloads))
}

/// Persistence switched on for a measurement; dropping it puts the original back.
pub struct AofGuard {
    client: redis::Client,
    /// `(parameter, value)` as found, restored in reverse order.
    original: Vec<(String, String)>,
    restored: bool,
}

impl AofGuard {
    /// Switches the AOF on with `appendfsync = fsync` and waits for its initial rewrite.
    ///
    /// Blocking: call it outside the async runtime.
    pub fn enable(fsync: &str) -> anyhow::Result<Self> {
        let client = client()?;
        let mut connection = client
            .get_connection()
            .context("Redis at 127.0.0.1:6379 is unreachable")?;
        let mut original = Vec::new();
        for parameter in ["appendonly", "appendfsync"] {
            let pair: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(parameter)
                .query(&mut connection)
                .with_context(|| format!("CONFIG GET {parameter}"))?;
            let value = pair
                .get(1)
                .with_context(|| format!("Redis has no `{parameter}` setting"))?;
            original.push((parameter.to_owned(), value.clone()));
        }
        let guard = Self {
            client,
            original,
            restored: false,
        };
        config_set(&mut connection, "appendfsync", fsync)?;
        config_set(&mut connection, "appendonly", "yes")?;
        wait_for_rewrite(&mut connection)?;
        Ok(guard)
    }

    /// Puts the original settings back.
    pub fn restore(mut self) -> anyhow::Result<()> {
        self.restore_settings()
    }

    fn restore_settings(&mut self) -> anyhow::Result<()> {
        self.restored = true;
        let mut connection = self
            .client
            .get_connection()
            .context("reconnecting to Redis to restore its settings")?;
        for (parameter, value) in self.original.iter().rev() {
            config_set(&mut connection, parameter, value)?;
        }
        Ok(())
    }
}

impl Drop for AofGuard {
    fn drop(&mut self) {
        if !self.restored
            && let Err(e) = self.restore_settings()
        {
            eprintln!(
                "queue: could not restore the Redis settings {:?}: {e:#}",
                self.original
            );
        }
    }
}

fn config_set(
    connection: &mut redis::Connection,
    parameter: &str,
    value: &str,
) -> anyhow::Result<()> {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(parameter)
        .arg(value)
        .query::<()>(connection)
        .with_context(|| format!("CONFIG SET {parameter} {value}"))
}

fn wait_for_rewrite(connection: &mut redis::Connection) -> anyhow::Result<()> {
    let since = Instant::now();
    loop {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query(connection)
            .context("INFO persistence")?;
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let busy = field("aof_rewrite_in_progress") != Some("0")
            || field("aof_rewrite_scheduled") != Some("0");
        if !busy {
            ensure!(
                field("aof_last_bgrewrite_status") == Some("ok"),
                "Redis could not write its append-only file: {info}"
            );
            return Ok(());
        }
        ensure!(
            since.elapsed() < AOF_REWRITE_TIMEOUT,
            "the Redis AOF rewrite did not finish in {AOF_REWRITE_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn an_xreadgroup_reply_yields_ids_and_payloads_in_order() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk(KEY),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk(FIELD), bulk("a")]),
                ]),
                Value::Array(vec![
                    bulk("1-1"),
                    Value::Array(vec![bulk(FIELD), bulk("b")]),
                ]),
            ]),
        ])]);
        let (ids, payloads) = entries(reply).unwrap();
        assert_eq!(ids, ["1-0", "1-1"]);
        assert_eq!(payloads, [Bytes::from("a"), Bytes::from("b")]);
    }

    #[test]
    fn a_timed_out_xreadgroup_is_empty() {
        let (ids, payloads) = entries(Value::Nil).unwrap();
        assert!(ids.is_empty() && payloads.is_empty());
    }
}
