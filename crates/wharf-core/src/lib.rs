//! Domain types of Wharf: names, events, positions, errors and configuration.
//!
//! This crate performs no I/O. Every other crate speaks in these types, so a
//! stream name validated here is valid everywhere, and an error raised by a
//! storage backend means the same thing whether it reaches an embedded caller,
//! a gRPC client or the CLI.
#![warn(missing_docs)]

pub mod clock;
pub mod config;
pub mod error;
pub mod event;
pub mod limits;
pub mod name;
pub mod payload;
pub mod queue;

pub use clock::{Clock, ManualClock, Sleep, SystemClock, Timestamp};
pub use config::{Config, Durability, PostgresConfig, ServerConfig, StorageConfig};
pub use error::{Error, Result};
pub use event::{
    AppendOutcome, AppendResult, ExpectedVersion, LogFilter, NewEvent, Position, ReadDirection,
    RecordedEvent, StreamStart,
};
pub use limits::Limits;
pub use name::{NameError, QueueName, StreamName};
pub use payload::{
    ContentHash, PayloadFailure, PayloadOffloadConfig, PayloadReference,
    PayloadRetrievalFailedDetails, PayloadStorageType,
};
pub use queue::{
    Delivery, DequeueOptions, Enqueued, NewMessage, QueueCreated, QueueInfo, QueueSettings,
    QueueStats, QueuesConfig, Receipt,
};
