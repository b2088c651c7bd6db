//! Test support: a fresh schema per test, dropped afterwards, so tests and
//! test runs sharing one PostgreSQL server cannot see each other.
//!
//! The server is `WHARF_TEST_POSTGRES_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test` (what `.ci/run` starts). A
//! test that cannot reach it fails; it never skips.

use std::sync::Arc;

use wharf_core::{Clock, PostgresConfig, QueueSettings};

use crate::PgStore;

/// The server tests use.
pub fn url() -> String {
    std::env::var("WHARF_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A plain connection to the test server, for a test to look at or hold
/// things behind the store's back.
///
/// # Panics
/// When the test server cannot be reached.
pub async fn raw_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL for tests at {}: {e}", url()));
    tokio::spawn(connection);
    client
}

/// Vacuums of the queue table `store` has run itself (see `src/vacuum.rs`).
pub fn vacuums(store: &PgStore) -> u64 {
    store.shared.vacuum.count()
}

/// The statement a group flush runs (see `src/flush.rs`): its transaction
/// must write WAL, or PostgreSQL commits it without waiting for the disk.
pub const FLUSH_STATEMENT: &str = crate::flush::FLUSH;

/// A schema of its own for one test; dropped (with everything in it) when
/// this is dropped.
#[derive(Debug)]
pub struct TestSchema {
    /// A configuration naming the schema, with a small pool.
    pub config: PostgresConfig,
}

impl TestSchema {
    /// A new, unique schema name on the test server (created by the first
    /// store that connects).
    pub fn new() -> Self {
        let schema = format!("wharf_test_{:016x}", rand::random::<u64>());
        let mut config = PostgresConfig::new(url());
        config.schema = schema;
        config.pool_size = 8;
        Self { config }
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.config.schema
    }

    /// A store on this schema with `clock` and the default queue settings.
    ///
    /// # Panics
    /// When the test server cannot be reached: tests that need PostgreSQL
    /// fail without it.
    pub async fn open(&self, clock: Arc<dyn Clock>) -> PgStore {
        PgStore::connect(&self.config, QueueSettings::default(), clock)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL for tests at {} (set WHARF_TEST_POSTGRES_URL): {e}",
                    url()
                )
            })
    }
}

impl Default for TestSchema {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let (url, schema) = (url(), self.config.schema.clone());
        // Drop may run inside a runtime, which cannot block: use a thread
        // with its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .map_err(std::io::Error::other)?;
                tokio::spawn(connection);
                drop_schema(&client, &schema)
                    .await
                    .map_err(std::io::Error::other)
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test schema: {e}");
        }
    }
}

/// Tries to drop a test's schema this many times, ending the sessions in
/// its way between tries.
const DROP_TRIES: u32 = 5;

/// Drops `schema`, ending the sessions that hold locks in it when they
/// keep the drop waiting. The test's runtime is blocked in [`TestSchema`]'s
/// drop, so a transaction one of its stores left open (a timer's round,
/// say, when the store was dropped without closing) can never finish: the
/// drop would wait for it forever, and the open transaction would keep
/// vacuum from cleaning up after every other test meanwhile. Those sessions
/// are the test's own (the schema is), so ending them loses nothing.
async fn drop_schema(
    client: &tokio_postgres::Client,
    schema: &str,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("SET lock_timeout = '2s'").await?;
    let drop = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    let mut tries = 1;
    loop {
        match client.batch_execute(&drop).await {
            Err(e)
                if tries < DROP_TRIES
                    && e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) =>
            {
                tries += 1;
                client
                    .execute(
                        "SELECT pg_terminate_backend(l.pid) FROM pg_locks l
                         JOIN pg_class c ON c.oid = l.relation
                         JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE n.nspname = $1 AND l.pid <> pg_backend_pid()",
                        &[&schema],
                    )
                    .await?;
            }
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use wharf_core::SystemClock;

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// What a store dropped with a round under way leaves behind: a
    /// session idle in a transaction that locked the schema's tables, which
    /// nothing will ever finish. The schema's drop ends it rather than
    /// waiting for it (CI once hung here for 15 minutes).
    #[test]
    fn a_schema_is_dropped_even_when_a_session_left_a_transaction_open_in_it() {
        let schema = TestSchema::new();
        let name = schema.name().to_owned();
        runtime().block_on(async {
            drop(schema.open(Arc::new(SystemClock)).await);
        });

        let (locked, is_locked) = mpsc::channel();
        let holder = name.clone();
        std::thread::spawn(move || {
            runtime().block_on(async move {
                let client = raw_client().await;
                client
                    .batch_execute(&format!(
                        "BEGIN; LOCK TABLE \"{holder}\".messages IN ACCESS SHARE MODE"
                    ))
                    .await
                    .unwrap();
                locked.send(()).unwrap();
                // Idle in its transaction until the process ends.
                tokio::time::sleep(Duration::from_secs(600)).await;
            });
        });
        is_locked.recv().unwrap();

        let (dropped, is_dropped) = mpsc::channel();
        std::thread::spawn(move || {
            drop(schema);
            dropped.send(()).unwrap();
        });
        is_dropped
            .recv_timeout(Duration::from_secs(60))
            .expect("the schema's drop returned");
        let left = runtime().block_on(async {
            raw_client()
                .await
                .query_one(
                    "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
                    &[&name],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        });
        assert_eq!(left, 0, "schema {name} is gone");
    }
}
