//! The queue model-based test on PostgreSQL: random operation sequences
//! checked step by step against the reference model.

use std::sync::Arc;

use wharf_core::ManualClock;
use wharf_postgres::testing::TestSchema;
use wharf_storage::conformance::TestQueues;
use wharf_storage::conformance::queue_model::run_queue_model;

/// Cases per run: every step is a few round trips to the server, so fewer
/// than the embedded store's; `WHARF_QUEUE_MODEL_CASES` overrides it for a
/// longer soak.
const CASES: u32 = 200;

async fn postgres(clock: ManualClock) -> TestQueues {
    let schema = TestSchema::new();
    let store = schema.open(Arc::new(clock)).await;
    TestQueues {
        queues: Arc::new(store),
        guard: Box::new(schema),
    }
}

#[test]
fn the_postgres_store_behaves_as_the_queue_model() {
    let cases = std::env::var("WHARF_QUEUE_MODEL_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CASES);
    run_queue_model(postgres, cases);
}
