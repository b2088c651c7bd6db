//! The event-log conformance suite on PostgreSQL, one fresh schema per
//! scenario.

use std::sync::Arc;

use wharf_core::ManualClock;
use wharf_postgres::testing::TestSchema;
use wharf_storage::conformance::TestLog;

async fn postgres(clock: ManualClock) -> TestLog {
    let schema = TestSchema::new();
    let log = schema.open(Arc::new(clock)).await;
    TestLog {
        log: Arc::new(log),
        guard: Box::new(schema),
    }
}

wharf_storage::event_log_conformance!(postgres);
