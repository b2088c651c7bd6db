//! The schema the suite's Wharf nodes share: held by one run of the suite at a time
//! (a PostgreSQL advisory lock, released when the run's connection closes, however it
//! ends), dropped before and after the suite, and vacuumed before each run.
//!
//! Every dequeue of the backend writes a new version of its rows and every
//! acknowledgement deletes them, so a run leaves about as many dead tuples as it moved
//! messages, in tables that outlive the run. pgmq's table is dropped and created again for
//! each run, so it never carries them into the next one. Autovacuum would clean them in
//! time, but on its own schedule, and it may be off (it is on the CI server). So before
//! each run, untimed, every table of the schema is vacuumed and analysed: each run of
//! either system starts without its predecessors' dead tuples.

use std::sync::Arc;

use anyhow::Context;
use tokio_postgres::{Client, NoTls};

use crate::queue::peer::Peer;

/// An administrative connection to the database and the schema it manages.
#[derive(Clone)]
pub struct Schema {
    client: Arc<Client>,
    name: String,
}

impl Schema {
    /// Connects to the database at `url` to manage schema `name`.
    pub async fn connect(url: &str, name: &str) -> anyhow::Result<Self> {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .with_context(|| format!("PostgreSQL at {url} is unreachable"))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("postgres: the administrative connection failed: {e}");
            }
        });
        Ok(Self {
            client: Arc::new(client),
            name: name.to_owned(),
        })
    }

    /// Waits until no other process holds the schema, then holds it until this connection
    /// closes: two runs of the suite would drop each other's tables and share the CPU.
    pub async fn claim(&self) -> anyhow::Result<()> {
        let key = format!("wharf-bench schema {}", self.name);
        let claimed: bool = self
            .client
            .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&key])
            .await
            .context("claiming the benchmark schema")?
            .get(0);
        if !claimed {
            eprintln!(
                "postgres: another process runs on schema `{}`; waiting for it to finish",
                self.name
            );
            self.client
                .execute("SELECT pg_advisory_lock(hashtext($1))", &[&key])
                .await
                .context("waiting for the benchmark schema")?;
        }
        Ok(())
    }

    /// Removes the schema and everything in it.
    pub async fn remove(&self) -> anyhow::Result<()> {
        self.client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name))
            .await
            .with_context(|| format!("dropping schema `{}`", self.name))
    }

    /// Whether the server runs autovacuum.
    pub async fn autovacuum(&self) -> anyhow::Result<bool> {
        let row = self
            .client
            .query_one("SHOW autovacuum", &[])
            .await
            .context("SHOW autovacuum")?;
        Ok(row.get::<_, String>(0) == "on")
    }

    /// `VACUUM (ANALYZE)` of every table of the schema (none before the first node made
    /// them).
    async fn vacuum(&self) -> anyhow::Result<()> {
        let rows = self
            .client
            .query(
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables \
                 WHERE schemaname = $1",
                &[&self.name],
            )
            .await
            .with_context(|| format!("listing the tables of schema `{}`", self.name))?;
        let tables: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
        if tables.is_empty() {
            return Ok(());
        }
        self.client
            .batch_execute(&format!("VACUUM (ANALYZE) {}", tables.join(", ")))
            .await
            .with_context(|| format!("vacuuming schema `{}`", self.name))
    }

    /// `peer`, with the schema vacuumed after each reset.
    pub fn vacuumed<P: Peer>(&self, peer: P) -> Vacuumed<P> {
        Vacuumed {
            inner: peer,
            schema: self.clone(),
        }
    }
}

/// A peer on the schema whose every run starts on vacuumed tables.
#[derive(Clone)]
pub struct Vacuumed<P> {
    inner: P,
    schema: Schema,
}

impl<P: Peer> Peer for Vacuumed<P> {
    type Producer = P::Producer;
    type Consumer = P::Consumer;

    async fn reset(&self) -> anyhow::Result<()> {
        self.inner.reset().await?;
        self.schema.vacuum().await
    }

    async fn producers(&self, n: usize) -> anyhow::Result<Vec<P::Producer>> {
        self.inner.producers(n).await
    }

    async fn consumer(&self) -> anyhow::Result<P::Consumer> {
        self.inner.consumer().await
    }

    async fn remaining(&self) -> anyhow::Result<u64> {
        self.inner.remaining().await
    }

    async fn remove(&self) -> anyhow::Result<()> {
        self.inner.remove().await
    }
}
