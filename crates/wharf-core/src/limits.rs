//! Bounds on what a client may send in one request.

use serde::{Deserialize, Serialize};

/// Size and count limits enforced by the engine before anything is written.
///
/// The defaults follow the peers users know: an event of at most 1 MiB inline
/// (JetStream's default maximum message size), and an append batch that fits
/// comfortably inside one gRPC message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest event `data` + metadata stored inline, in bytes.
    pub max_event_bytes: usize,
    /// Most events in one append.
    pub max_batch_events: usize,
    /// Largest total size of one append, in bytes, counting offloaded data
    /// at the size of its reference.
    pub max_batch_bytes: usize,
    /// Largest `data` of one event or message when payload offloading is on
    /// (data over the offload threshold goes to the payload store).
    pub max_payload_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_bytes: 1024 * 1024,
            max_batch_events: 10_000,
            max_batch_bytes: 16 * 1024 * 1024,
            max_payload_bytes: 128 * 1024 * 1024,
        }
    }
}
