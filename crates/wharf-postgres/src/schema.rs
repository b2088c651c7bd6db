//! Versioned schema migrations, applied on start.
//!
//! Each migration runs once, in order, inside one transaction that holds an
//! advisory lock on the schema: two nodes starting at once serialize here,
//! and the second finds the work done. A database whose schema is newer than
//! this binary knows is refused rather than used.

use tokio_postgres::Client;
use wharf_core::{Error, Result};

use crate::error::pg;

/// One step of the schema.
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, in order; versions are dense from 1. Append only: a
/// released migration never changes.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "event log",
        sql: include_str!("migrations/0001_events.sql"),
    },
    Migration {
        version: 2,
        name: "queues",
        sql: include_str!("migrations/0002_queues.sql"),
    },
    Migration {
        version: 3,
        name: "queue cursors",
        sql: include_str!("migrations/0003_queue_cursors.sql"),
    },
    Migration {
        version: 4,
        name: "messages fill their pages",
        sql: include_str!("migrations/0004_messages_fillfactor.sql"),
    },
];

/// The schema version this binary writes.
pub const LATEST_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// What [`status`] found in a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaStatus {
    /// The version the database is at; 0 when Wharf has never run there.
    pub current: i32,
    /// The version this binary writes.
    pub latest: i32,
}

impl SchemaStatus {
    /// Whether starting would apply migrations.
    pub fn needs_migration(&self) -> bool {
        self.current < self.latest
    }
}

/// Brings `schema` to [`LATEST_VERSION`]; returns the version it was at.
///
/// # Errors
/// [`Error::Storage`] when the schema is newer than this binary, or a
/// migration fails (nothing of it is applied).
pub(crate) async fn migrate(client: &mut Client, schema: &str) -> Result<i32> {
    let doing = format!("migrate schema `{schema}`");
    let tx = client.transaction().await.map_err(|e| pg(&doing, e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(schema)])
        .await
        .map_err(|e| pg(&doing, e))?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
         SET LOCAL search_path TO \"{schema}\";
         CREATE TABLE IF NOT EXISTS wharf_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await
    .map_err(|e| pg(&doing, e))?;
    let current = current_version(&tx, &doing).await?;
    refuse_newer(schema, current)?;
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.batch_execute(m.sql).await.map_err(|e| {
            pg(
                &format!("apply migration {} ({}) to `{schema}`", m.version, m.name),
                e,
            )
        })?;
        tx.execute(
            "INSERT INTO wharf_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .map_err(|e| pg(&doing, e))?;
    }
    tx.commit().await.map_err(|e| pg(&doing, e))?;
    if current < LATEST_VERSION {
        tracing::info!(
            schema,
            from = current,
            to = LATEST_VERSION,
            "migrated the PostgreSQL schema"
        );
    }
    Ok(current)
}

/// Reads the schema version without changing anything.
///
/// # Errors
/// `Unavailable` when the database cannot be reached; `Storage` when the
/// schema is newer than this binary.
pub(crate) async fn status(client: &Client, schema: &str) -> Result<SchemaStatus> {
    let doing = format!("read the version of schema `{schema}`");
    let exists = client
        .query_one(
            "SELECT to_regclass(format('%I.wharf_migrations', $1::text)) IS NOT NULL",
            &[&schema],
        )
        .await
        .map_err(|e| pg(&doing, e))?
        .get::<_, bool>(0);
    let current = if exists {
        client
            .query_one(
                &format!("SELECT coalesce(max(version), 0) FROM \"{schema}\".wharf_migrations"),
                &[],
            )
            .await
            .map_err(|e| pg(&doing, e))?
            .get(0)
    } else {
        0
    };
    refuse_newer(schema, current)?;
    Ok(SchemaStatus {
        current,
        latest: LATEST_VERSION,
    })
}

async fn current_version(tx: &tokio_postgres::Transaction<'_>, doing: &str) -> Result<i32> {
    Ok(tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM wharf_migrations",
            &[],
        )
        .await
        .map_err(|e| pg(doing, e))?
        .get(0))
}

fn refuse_newer(schema: &str, current: i32) -> Result<()> {
    if current > LATEST_VERSION {
        return Err(Error::Storage(format!(
            "PostgreSQL schema `{schema}` is at version {current}, newer than the version \
             {LATEST_VERSION} this Wharf binary knows: a newer Wharf has migrated it; \
             run that version (refusing to start rather than misread its tables)"
        )));
    }
    Ok(())
}

/// The advisory-lock key that serializes migrations of one schema.
fn lock_key(schema: &str) -> i64 {
    // FNV-1a: stable across builds and platforms, unlike `DefaultHasher`.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"wharf-migrate:".iter().chain(schema.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

/// Checks that `schema` is a plain identifier Wharf can quote safely.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the rule.
pub(crate) fn validate_schema_name(schema: &str) -> Result<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 48
        && schema
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "storage.schema `{schema}` is not a valid schema name: use 1-48 characters \
             of a-z, 0-9 and _, not starting with a digit"
        )))
    }
}
