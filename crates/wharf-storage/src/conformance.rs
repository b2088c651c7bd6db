//! Conformance suites: the contract of each port as scenario functions.
//!
//! A backend's test file calls the port's macro with a factory, and gets one
//! `#[test]` per scenario, so one broken guarantee is one failing test:
//!
//! ```text
//! async fn make(clock: wharf_core::ManualClock) -> wharf_storage::conformance::TestLog { … }
//! wharf_storage::event_log_conformance!(make);
//! ```

use std::any::Any;
use std::sync::Arc;

use wharf_core::{ManualClock, Timestamp};

use crate::EventLog;

pub mod event_log;

/// A backend under test, with whatever keeps it alive (a temporary
/// directory, a database schema) dropped after the scenario.
pub struct TestLog {
    /// The log under test.
    pub log: Arc<dyn EventLog>,
    /// Dropped when the scenario ends.
    pub guard: Box<dyn Any + Send + Sync>,
}

/// The clock every scenario starts from: 2026-01-01T00:00:00Z.
pub fn test_clock() -> ManualClock {
    ManualClock::new(Timestamp::from_micros(1_767_225_600_000_000))
}

/// Expands into one test per event-log scenario, each calling
/// `$make(clock).await` for a fresh [`TestLog`].
#[macro_export]
macro_rules! event_log_conformance {
    ($make:path) => {
        $crate::event_log_conformance!(@each $make;
            append_to_new_stream_assigns_versions_from_zero,
            positions_strictly_increase_across_streams,
            expected_no_stream_fails_once_the_stream_exists,
            expected_stream_exists_fails_on_a_missing_stream,
            expected_exact_version_must_match_the_last_version,
            expected_any_appends_whatever_the_state,
            wrong_expected_version_writes_nothing,
            reappending_the_same_events_is_idempotent,
            reusing_an_event_id_elsewhere_is_a_conflict,
            failed_appends_leave_no_trace_and_spare_their_neighbours,
            read_stream_forwards_from_a_version,
            read_stream_backwards_from_the_end,
            reading_a_missing_stream_is_not_found,
            event_fields_round_trip,
            read_all_returns_every_stream_in_position_order,
            read_all_filters_by_stream_prefix,
            read_all_filters_by_event_type,
            position_at_finds_first_event_at_or_after_a_time,
            head_watch_advances_on_commit,
            subscription_catches_up_then_receives_live_events,
            subscription_applies_its_filter_live,
            concurrent_appends_keep_stream_versions_gapless,
            concurrent_exact_appends_admit_exactly_one_winner,
            close_commits_what_was_accepted_and_refuses_later_appends,
        );
    };
    (@each $make:path; $($scenario:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                let clock = $crate::conformance::test_clock();
                let fixture: $crate::conformance::TestLog = $make(clock.clone()).await;
                $crate::conformance::event_log::$scenario(&fixture.log, &clock).await;
                drop(fixture);
            }
        )*
    };
}
