//! The queue-store conformance suite on PostgreSQL: every scenario on a
//! schema of its own, dropped afterwards.

use std::sync::Arc;

use wharf_core::ManualClock;
use wharf_postgres::testing::TestSchema;
use wharf_storage::conformance::TestQueues;

async fn postgres(clock: ManualClock) -> TestQueues {
    let schema = TestSchema::new();
    let store = schema.open(Arc::new(clock)).await;
    TestQueues {
        queues: Arc::new(store),
        guard: Box::new(schema),
    }
}

wharf_storage::queue_store_conformance!(postgres);
