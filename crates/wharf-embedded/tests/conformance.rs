//! The event-log conformance suite on the embedded backend.

use std::sync::Arc;

use wharf_core::{Durability, ManualClock};
use wharf_embedded::EmbeddedStore;
use wharf_storage::conformance::TestLog;

async fn embedded(clock: ManualClock) -> TestLog {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = EmbeddedStore::open(dir.path(), Durability::Relaxed, Arc::new(clock))
        .expect("open embedded log");
    TestLog {
        log: Arc::new(log),
        guard: Box::new(dir),
    }
}

wharf_storage::event_log_conformance!(embedded);
