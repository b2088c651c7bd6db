//! The PostgreSQL backend: the event log, queues and payload references of
//! Wharf in one database schema, shared by any number of nodes.
//!
//! Every node holds a connection pool and one LISTEN connection. State lives
//! only in the database, so nodes are interchangeable; notifications wake
//! long polls and subscriptions on every node whichever node wrote.
//!
//! ```no_run
//! # async fn demo() -> wharf_core::Result<()> {
//! use std::sync::Arc;
//! use wharf_core::{PostgresConfig, QueueSettings, SystemClock};
//!
//! let config = PostgresConfig::new("postgres://wharf@db.internal/wharf");
//! let store = wharf_postgres::PgStore::connect(&config, QueueSettings::default(), Arc::new(SystemClock)).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use wharf_core::{Clock, Error, PostgresConfig, QueueSettings, Result};

mod error;
mod events;
mod flush;
mod listener;
mod queue;
mod refs;
mod schema;
#[doc(hidden)]
pub mod testing;
mod vacuum;

pub use schema::{LATEST_VERSION, SchemaStatus};

use crate::listener::Listener;

/// How every connection plans, set for the session when it connects.
///
/// Statements run with their generic plans: PostgreSQL otherwise keeps
/// planning a queue round's statements anew for each execution, which costs
/// more than executing them. A generic plan is made once per connection,
/// from the statistics of that moment; made while `messages` was empty (or
/// just vacuumed, or with autovacuum off and no statistics) it may scan the
/// whole table on every later execution, which the benchmark caught at
/// 36 ms a round at 100k messages. Every statement here is meant to walk an
/// index, so sequential scans are ruled out, and so are hash and merge joins
/// (a generic plan joined expired leases to their messages by hashing the
/// whole primary key), and so are bitmap scans (a generic plan's estimate
/// of 11 rows per key made every probe of one message by its key a bitmap
/// scan, about twice the cost of an index scan). A plan that cannot walk an
/// index still runs: `enable_*` only prices the other kinds out.
///
/// These were once set per queue round (`SET LOCAL`, a statement of its own
/// after `BEGIN`) so that other statements kept the defaults; on the
/// connection, a round that only acknowledges is one statement instead of
/// four, and the read of delivered content one instead of four.
const PLAN_SETTINGS: &str = "-c plan_cache_mode=force_generic_plan -c enable_seqscan=off \
     -c enable_hashjoin=off -c enable_mergejoin=off -c enable_bitmapscan=off";

/// The largest pool a node may ask for.
const MAX_POOL_SIZE: usize = 1000;

/// The event log, queues and payload references of one PostgreSQL schema.
///
/// Implements [`wharf_storage::EventLog`], [`wharf_storage::QueueStore`] and
/// [`wharf_storage::PayloadRefs`].
pub struct PgStore {
    shared: Arc<Shared>,
    events: events::Events,
    queues: queue::Queues,
}

/// What every part of the backend uses: connections, the clock, the
/// notification fan-out.
pub(crate) struct Shared {
    pool: Pool,
    clock: Arc<dyn Clock>,
    listener: Listener,
    channel: String,
    queue_defaults: QueueSettings,
    closed: AtomicBool,
    target: String,
    unlocks: refs::PendingUnlocks,
    vacuum: vacuum::Vacuum,
    flusher: flush::Flusher,
}

impl Shared {
    /// A pooled connection.
    ///
    /// # Errors
    /// `Unavailable` when the store is closed, or no connection can be had
    /// within the connect timeout.
    pub(crate) async fn conn(&self) -> Result<deadpool_postgres::Object> {
        if self.is_closed() {
            return Err(Error::Unavailable(
                "the PostgreSQL store is closed".to_owned(),
            ));
        }
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => {
                error::pg(&format!("connect to {}", self.target), e)
            }
            other => error::pool(other),
        })
    }

    /// The store's clock.
    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The NOTIFY channel of this schema: `SELECT pg_notify($channel, 'kind:…')`.
    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    /// The notification fan-out.
    pub(crate) fn listener(&self) -> &Listener {
        &self.listener
    }

    /// Settings of queues created by their first enqueue.
    pub(crate) fn queue_defaults(&self) -> &QueueSettings {
        &self.queue_defaults
    }

    /// Whether [`Shared::close`] has run.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Refuses new work and releases the connections.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.pool.close();
        self.listener.stop();
    }
}

impl PgStore {
    /// Connects, brings the schema up to date, and starts listening.
    /// Queues created by their first enqueue get `queue_defaults`.
    ///
    /// # Errors
    /// `InvalidArgument` for a malformed URL, schema name or pool size;
    /// `Unavailable` when the database cannot be reached or refuses the
    /// credentials; `Storage` when its schema is newer than this binary.
    pub async fn connect(
        config: &PostgresConfig,
        queue_defaults: QueueSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let pg_config = pg_config(config)?;
        let target = describe(&pg_config);
        let pool = pool(config, pg_config.clone())?;
        let mut conn = pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => {
                error::pg(&format!("connect to {target}"), e)
            }
            other => error::pool(other),
        })?;
        let client: &mut tokio_postgres::Client = &mut conn;
        schema::migrate(client, &config.schema).await?;
        drop(conn);
        let channel = format!("wharf.{}", config.schema);
        let listener = Listener::start(pg_config, channel.clone()).await?;
        let shared = Arc::new(Shared {
            pool,
            clock,
            listener,
            channel,
            queue_defaults,
            closed: AtomicBool::new(false),
            target,
            unlocks: refs::PendingUnlocks::default(),
            vacuum: vacuum::Vacuum::default(),
            flusher: flush::Flusher::default(),
        });
        let events = events::Events::start(shared.clone()).await?;
        let queues = queue::Queues::start(shared.clone()).await?;
        Ok(Self {
            shared,
            events,
            queues,
        })
    }

    /// Checks that `config` is valid and the database reachable, and reads
    /// its schema version, changing nothing (`wharf serve --check-config`).
    ///
    /// # Errors
    /// As [`PgStore::connect`].
    pub async fn check(config: &PostgresConfig) -> Result<SchemaStatus> {
        let pg_config = pg_config(config)?;
        let target = describe(&pg_config);
        let (client, connection) = pg_config
            .connect(NoTls)
            .await
            .map_err(|e| error::pg(&format!("connect to {target}"), e))?;
        let driver = tokio::spawn(connection);
        let status = schema::status(&client, &config.schema).await;
        drop(client);
        let _ = driver.await;
        status
    }

    /// `user@host:port/database`, for messages (never the password).
    pub fn target(&self) -> &str {
        &self.shared.target
    }

    /// Whether the notification connection is up now; a node whose
    /// connection is down still serves requests but may wake late.
    pub fn notifications_connected(&self) -> bool {
        *self.shared.listener().connected().borrow()
    }
}

/// The driver's configuration for `config`: its URL, with the schema as
/// search path and Wharf's connect timeout.
fn pg_config(config: &PostgresConfig) -> Result<tokio_postgres::Config> {
    schema::validate_schema_name(&config.schema)?;
    if !(1..=MAX_POOL_SIZE).contains(&config.pool_size) {
        return Err(Error::InvalidArgument(format!(
            "storage.pool_size {} is out of range: use 1 to {MAX_POOL_SIZE}",
            config.pool_size
        )));
    }
    let mut c: tokio_postgres::Config = config.url.parse().map_err(|e| {
        Error::InvalidArgument(format!(
            "storage.url is not a PostgreSQL connection URL (postgres://user@host:port/database): {e}"
        ))
    })?;
    // JIT compilation pays off for long analytical queries; Wharf's are
    // short, and a generic plan whose estimate passes `jit_above_cost`
    // (say, a join over `messages` that runs on an empty outer side) was
    // compiled on every execution, tens of milliseconds each.
    c.options(format!(
        "-c search_path={} -c jit=off {PLAN_SETTINGS}",
        config.schema
    ));
    if c.get_application_name().is_none() {
        c.application_name("wharf");
    }
    c.connect_timeout(config.connect_timeout);
    Ok(c)
}

fn pool(config: &PostgresConfig, pg_config: tokio_postgres::Config) -> Result<Pool> {
    let manager = Manager::from_config(
        pg_config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(config.connect_timeout))
        .create_timeout(Some(config.connect_timeout))
        .recycle_timeout(Some(config.connect_timeout))
        .build()
        .map_err(|e| Error::InvalidArgument(format!("cannot build the PostgreSQL pool: {e}")))
}

/// `user@host:port/database` of a driver configuration.
fn describe(c: &tokio_postgres::Config) -> String {
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        c.get_user().unwrap_or("?"),
        c.get_dbname().unwrap_or("?")
    )
}
