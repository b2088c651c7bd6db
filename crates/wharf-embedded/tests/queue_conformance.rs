//! The queue-store conformance suite on the embedded backend.

use std::sync::Arc;

use wharf_core::{Durability, ManualClock};
use wharf_embedded::EmbeddedStore;
use wharf_storage::conformance::TestQueues;

async fn embedded(clock: ManualClock) -> TestQueues {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = EmbeddedStore::open(dir.path(), Durability::Relaxed, Arc::new(clock))
        .expect("open embedded store");
    TestQueues {
        queues: Arc::new(store),
        guard: Box::new(dir),
    }
}

wharf_storage::queue_store_conformance!(embedded);
