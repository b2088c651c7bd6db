//! The single-node storage engine of Wharf, on SQLite.
//!
//! One writer thread owns the only write connection and **group-commits**:
//! it takes every append waiting in its queue, applies them in one SQLite
//! transaction (each under its own savepoint, so one failing append does not
//! fail its neighbours), commits once, and only then acknowledges them all.
//! With `synchronous=FULL` a commit is one WAL fsync however many appends it
//! carries, which is what lets many concurrent clients outrun the disk's
//! fsync rate. Readers use their own connections and never block the writer.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> wharf_core::Result<()> {
//! use std::sync::Arc;
//! use wharf_core::{Durability, ExpectedVersion, NewEvent, SystemClock};
//! use wharf_embedded::EmbeddedStore;
//! use wharf_storage::{AppendRequest, EventLog};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let log = EmbeddedStore::open(dir.path(), Durability::Full, Arc::new(SystemClock))?;
//! let outcome = log
//!     .append(AppendRequest {
//!         stream: "greetings".parse().unwrap(),
//!         expected: ExpectedVersion::NoStream,
//!         events: vec![NewEvent::new("Hello", "world")],
//!     })
//!     .await?;
//! assert_eq!(outcome.result().first_version, 0);
//! log.close().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod checkpoint;
mod data_dir;
mod queue;
mod reader;
mod schema;
mod store;
mod writer;

pub use store::EmbeddedStore;
