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
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
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
