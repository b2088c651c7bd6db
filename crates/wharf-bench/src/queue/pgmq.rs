//! A PostgreSQL queue in the style of pgmq: one table, `FOR UPDATE SKIP LOCKED` dequeues,
//! a visibility timestamp `vt` instead of a lease table.
//!
//! - Enqueue: an `INSERT`; a batch is one `INSERT ... SELECT unnest($1::bytea[])`. Every
//!   statement commits on its own with the server's `synchronous_commit` (reported in the
//!   durability label). PostgreSQL runs one transaction per connection at a time, so each
//!   producer is its own connection: `enqueue_single_c32` uses 32.
//! - Receive: one statement, `UPDATE ... SET vt = now() + 300 s, read_ct = read_ct + 1 FROM
//!   (SELECT ... WHERE vt <= now() ORDER BY msg_id LIMIT $1 FOR UPDATE SKIP LOCKED) ...
//!   RETURNING`. pgmq has no long poll: a receive that finds nothing polls again every
//!   10 ms until its wait is over (no `LISTEN`/`NOTIFY`).
//! - Ack: `DELETE ... WHERE msg_id = ANY($1)` with the batch's ids.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use tokio_postgres::{Client, NoTls, Statement};

use super::peer::{Consumer, Peer, Producer, Received};

pub const SYSTEM: &str = "postgres-skip-locked";

const CONNECT: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";
/// How often a receive that found nothing asks again.
const POLL: Duration = Duration::from_millis(10);

const CREATE: &str = "
    DROP TABLE IF EXISTS wharf_bench_pgmq;
    CREATE TABLE wharf_bench_pgmq (
        msg_id bigserial PRIMARY KEY,
        read_ct integer NOT NULL DEFAULT 0,
        enqueued_at timestamptz NOT NULL DEFAULT now(),
        vt timestamptz NOT NULL DEFAULT now(),
        message bytea NOT NULL
    );
    CREATE INDEX wharf_bench_pgmq_vt_idx ON wharf_bench_pgmq (vt);
";
const DROP: &str = "DROP TABLE IF EXISTS wharf_bench_pgmq";
const INSERT_ONE: &str = "INSERT INTO wharf_bench_pgmq (message) VALUES ($1)";
const INSERT_MANY: &str = "INSERT INTO wharf_bench_pgmq (message) SELECT unnest($1::bytea[])";
const DEQUEUE: &str = "
    UPDATE wharf_bench_pgmq q
    SET vt = now() + interval '300 seconds', read_ct = q.read_ct + 1
    FROM (
        SELECT msg_id FROM wharf_bench_pgmq
        WHERE vt <= now()
        ORDER BY msg_id
        LIMIT $1
        FOR UPDATE SKIP LOCKED
    ) s
    WHERE q.msg_id = s.msg_id
    RETURNING q.msg_id, q.message";
const ACK: &str = "DELETE FROM wharf_bench_pgmq WHERE msg_id = ANY($1)";
const COUNT: &str = "SELECT count(*) FROM wharf_bench_pgmq";

#[derive(Clone)]
pub struct Pgmq {
    control: Arc<Client>,
    durability: String,
}

async fn connect() -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(CONNECT, NoTls).await.context(
        "PostgreSQL at 127.0.0.1:5432 (database `test`, user `postgres`) is unreachable",
    )?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("queue: a PostgreSQL connection failed: {e}");
        }
    });
    Ok(client)
}

async fn show(client: &Client, setting: &str) -> anyhow::Result<String> {
    let row = client
        .query_one(&format!("SHOW {setting}"), &[])
        .await
        .with_context(|| format!("SHOW {setting}"))?;
    Ok(row.get(0))
}

impl Pgmq {
    pub async fn connect() -> anyhow::Result<Self> {
        let control = connect().await?;
        let durability = format!(
            "WAL, synchronous_commit={}, fsync={}",
            show(&control, "synchronous_commit").await?,
            show(&control, "fsync").await?
        );
        Ok(Self {
            control: Arc::new(control),
            durability,
        })
    }

    /// The server's commit durability, as `SHOW` reports it.
    pub fn durability(&self) -> &str {
        &self.durability
    }
}

impl Peer for Pgmq {
    type Producer = PgmqProducer;
    type Consumer = PgmqConsumer;

    async fn reset(&self) -> anyhow::Result<()> {
        self.control
            .batch_execute(CREATE)
            .await
            .context("creating the queue table")
    }

    async fn producers(&self, n: usize) -> anyhow::Result<Vec<PgmqProducer>> {
        let mut producers = Vec::with_capacity(n);
        for _ in 0..n {
            let client = connect().await?;
            producers.push(PgmqProducer {
                insert_one: client.prepare(INSERT_ONE).await?,
                insert_many: client.prepare(INSERT_MANY).await?,
                client,
            });
        }
        Ok(producers)
    }

    async fn consumer(&self) -> anyhow::Result<PgmqConsumer> {
        let client = connect().await?;
        Ok(PgmqConsumer {
            dequeue: client.prepare(DEQUEUE).await?,
            ack: client.prepare(ACK).await?,
            client,
        })
    }

    async fn remaining(&self) -> anyhow::Result<u64> {
        let row = self.control.query_one(COUNT, &[]).await?;
        Ok(u64::try_from(row.get::<_, i64>(0))?)
    }

    async fn remove(&self) -> anyhow::Result<()> {
        self.control
            .batch_execute(DROP)
            .await
            .context("dropping the queue table")
    }
}

pub struct PgmqProducer {
    client: Client,
    insert_one: Statement,
    insert_many: Statement,
}

impl Producer for PgmqProducer {
    async fn enqueue(&self, payload: Bytes) -> anyhow::Result<()> {
        let payload: &[u8] = &payload;
        self.client.execute(&self.insert_one, &[&payload]).await?;
        Ok(())
    }

    async fn enqueue_batch(&self, payloads: Vec<Bytes>) -> anyhow::Result<()> {
        let payloads: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
        let inserted = self.client.execute(&self.insert_many, &[&payloads]).await?;
        ensure!(
            inserted == payloads.len() as u64,
            "inserted {inserted} of {} messages",
            payloads.len()
        );
        Ok(())
    }
}

pub struct PgmqConsumer {
    client: Client,
    dequeue: Statement,
    ack: Statement,
}

impl Consumer for PgmqConsumer {
    /// The message ids.
    type Ack = Vec<i64>;

    async fn receive(&mut self, max: usize, wait: Duration) -> anyhow::Result<Received<Self::Ack>> {
        let deadline = Instant::now() + wait;
        let limit = i64::try_from(max)?;
        loop {
            let rows = self.client.query(&self.dequeue, &[&limit]).await?;
            let now = Instant::now();
            if !rows.is_empty() || now >= deadline {
                let ids = rows.iter().map(|row| row.get::<_, i64>(0)).collect();
                let payloads = rows
                    .iter()
                    .map(|row| Bytes::copy_from_slice(row.get::<_, &[u8]>(1)))
                    .collect();
                return Ok(Received { payloads, ack: ids });
            }
            tokio::time::sleep(POLL.min(deadline - now)).await;
        }
    }

    async fn ack(&mut self, ids: Vec<i64>) -> anyhow::Result<()> {
        let deleted = self.client.execute(&self.ack, &[&ids]).await?;
        ensure!(
            deleted == ids.len() as u64,
            "deleted {deleted} of {} messages",
            ids.len()
        );
        Ok(())
    }

    async fn close(self) -> anyhow::Result<()> {
        Ok(())
    }
}
