//! The payload-refs conformance suite on the embedded backend.

use std::sync::Arc;

use wharf_core::{Durability, ManualClock};
use wharf_embedded::EmbeddedStore;
use wharf_storage::conformance::TestPayloadRefs;

async fn embedded(clock: ManualClock) -> TestPayloadRefs {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Arc::new(
        EmbeddedStore::open(dir.path(), Durability::Relaxed, Arc::new(clock))
            .expect("open embedded store"),
    );
    TestPayloadRefs {
        log: store.clone(),
        queues: store.clone(),
        refs: store,
        guard: Box::new(dir),
    }
}

wharf_storage::payload_refs_conformance!(embedded);
