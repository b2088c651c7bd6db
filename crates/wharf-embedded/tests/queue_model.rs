//! The queue model-based test on the embedded backend: random operation
//! sequences checked step by step against the reference model.

use std::sync::Arc;

use wharf_core::{Durability, ManualClock};
use wharf_embedded::EmbeddedStore;
use wharf_storage::conformance::TestQueues;
use wharf_storage::conformance::queue_model::run_queue_model;

/// Cases per run; `WHARF_QUEUE_MODEL_CASES` overrides it for a longer soak.
const CASES: u32 = 10_000;

async fn embedded(clock: ManualClock) -> TestQueues {
    let dir = tempfile::tempdir().expect("temporary directory");
    // Relaxed: no fsync per commit, so ten thousand cases stay fast.
    let store = EmbeddedStore::open(dir.path(), Durability::Relaxed, Arc::new(clock))
        .expect("open embedded store");
    TestQueues {
        queues: Arc::new(store),
        guard: Box::new(dir),
    }
}

#[test]
fn the_embedded_store_behaves_as_the_queue_model() {
    let cases = std::env::var("WHARF_QUEUE_MODEL_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CASES);
    run_queue_model(embedded, cases);
}
