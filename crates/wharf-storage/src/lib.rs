//! Storage ports of Wharf and the conformance suites every backend must pass.
//!
//! A port is a trait whose `# Contract` section states the guarantees; the
//! [`conformance`] module checks them as scenario functions over `&dyn Port`,
//! and each backend expands them into one test per scenario with
//! [`event_log_conformance!`](crate::event_log_conformance).
#![warn(missing_docs)]

pub mod codec;
pub mod conformance;
mod event_log;
mod payload_refs;
mod queue_store;
pub mod receipt;
mod subscription;

pub use event_log::{AppendRequest, EventLog, ReadAllPage};
pub use payload_refs::{LocalPayloadLocks, PayloadGuard, PayloadRefs};
pub use queue_store::QueueStore;
pub use subscription::{Subscription, SubscriptionItem};

/// The reason (`LastError`) a backend records when it gives back a delivery
/// whose dequeue was cancelled before it was answered: the messages are
/// visible again at once instead of after their visibility timeout.
pub const ORPHANED: &str = "the dequeue that took it was cancelled before it answered";
