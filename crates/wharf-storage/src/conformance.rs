//! Conformance suites: the contract of each port as scenario functions.
//!
//! A backend's test file calls the port's macro with a factory, and gets one
//! `#[test]` per scenario, so one broken guarantee is one failing test:
//!
//! ```text
//! async fn make(clock: wharf_core::ManualClock) -> wharf_storage::conformance::TestLog { … }
//! wharf_storage::event_log_conformance!(make);
//! ```
//!
//! The queue port has the same, plus a model-based test
//! ([`queue_model::run_queue_model`]) that checks random operation sequences
//! against a reference model of the contract.

use std::any::Any;
use std::sync::Arc;

use wharf_core::{ManualClock, Timestamp};

use crate::{EventLog, PayloadRefs, QueueStore};

pub mod event_log;
pub mod payload_refs;
pub mod queue_model;
pub mod queue_store;

/// A backend under test, with whatever keeps it alive (a temporary
/// directory, a database schema) dropped after the scenario.
pub struct TestLog {
    /// The log under test.
    pub log: Arc<dyn EventLog>,
    /// Dropped when the scenario ends.
    pub guard: Box<dyn Any + Send + Sync>,
}

/// A queue store under test, opened with [`wharf_core::QueueSettings::default`]
/// as its queue defaults and the scenario's clock; `guard` is dropped after
/// the scenario.
pub struct TestQueues {
    /// The store under test.
    pub queues: Arc<dyn QueueStore>,
    /// Dropped when the scenario ends.
    pub guard: Box<dyn Any + Send + Sync>,
}

/// One backend's event log, queues and payload references, sharing storage.
pub struct TestPayloadRefs {
    /// The event log.
    pub log: Arc<dyn EventLog>,
    /// The queues.
    pub queues: Arc<dyn QueueStore>,
    /// The payload-reference port under test.
    pub refs: Arc<dyn PayloadRefs>,
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
            deleting_a_stream_removes_its_events_and_the_name_starts_over,
            deleting_a_stream_checks_its_expectation,
            deleting_a_missing_stream_is_not_found,
            offloaded_references_round_trip,
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

/// Expands into one test per payload-refs scenario, each calling
/// `$make(clock).await` for a fresh [`TestPayloadRefs`].
#[macro_export]
macro_rules! payload_refs_conformance {
    ($make:path) => {
        $crate::payload_refs_conformance!(@each $make;
            an_appended_reference_is_live_until_its_stream_is_deleted,
            a_queued_reference_is_live_until_acknowledged_or_purged,
            a_dead_lettered_reference_stays_live,
            pins_and_reap_locks_exclude_each_other,
        );
    };
    (@each $make:path; $($scenario:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                let clock = $crate::conformance::test_clock();
                let fixture: $crate::conformance::TestPayloadRefs = $make(clock.clone()).await;
                $crate::conformance::payload_refs::$scenario(&fixture, &clock).await;
                drop(fixture);
            }
        )*
    };
}

/// Expands into one test per queue-store scenario, each calling
/// `$make(clock).await` for a fresh [`TestQueues`].
#[macro_export]
macro_rules! queue_store_conformance {
    ($make:path) => {
        $crate::queue_store_conformance!(@each $make;
            first_enqueue_creates_the_queue_with_the_default_settings,
            creating_a_queue_again_with_the_same_settings_changes_nothing,
            creating_a_queue_again_with_other_settings_is_refused,
            operations_on_a_missing_queue_are_not_found,
            message_ids_are_unique_and_time_ordered,
            delivery_carries_the_message_as_enqueued,
            a_large_batch_enqueues_every_message_whole_and_in_order,
            dequeue_returns_visible_messages_in_enqueue_order,
            a_redelivered_message_goes_before_newer_ones,
            batch_dequeue_returns_at_most_max_messages,
            dequeue_of_an_empty_queue_without_wait_returns_nothing_at_once,
            a_delivered_message_is_invisible_until_exactly_its_visibility_timeout,
            the_queue_visibility_timeout_applies_when_a_dequeue_names_none,
            acknowledging_deletes_the_message,
            acknowledging_twice_is_lease_lost_and_changes_nothing,
            a_receipt_stays_valid_after_its_timeout_until_the_message_is_delivered_again,
            a_stale_receipt_cannot_acknowledge_nack_or_extend,
            forged_malformed_and_foreign_receipts_are_invalid_arguments,
            batch_acknowledge_reports_each_receipt_and_acknowledges_the_valid_ones,
            nack_makes_the_message_visible_again_at_once,
            nack_with_redeliver_after_delays_the_redelivery,
            extending_keeps_a_message_invisible_and_a_stale_extend_fails,
            a_delayed_message_becomes_visible_exactly_when_its_delay_passes,
            nacking_the_last_attempt_dead_letters_the_message_with_its_history,
            nacking_the_last_attempt_without_a_reason_records_nacked,
            a_timed_out_last_attempt_is_dead_lettered_without_any_client_call,
            a_message_is_never_delivered_more_than_max_delivery_attempts_times,
            a_dead_letter_queue_never_dead_letters_its_messages,
            a_queue_without_a_dead_letter_target_redelivers_without_limit,
            a_queue_naming_itself_as_dead_letter_queue_never_dead_letters,
            a_dedup_id_within_the_window_returns_the_first_message,
            a_dedup_id_after_the_window_enqueues_anew,
            dedup_ids_are_scoped_to_their_queue,
            long_poll_returns_as_soon_as_a_message_is_enqueued,
            long_poll_returns_nothing_when_its_wait_passes_on_the_clock,
            long_poll_is_woken_by_a_visibility_timeout_expiring,
            long_poll_is_woken_by_a_delay_passing,
            long_poll_is_woken_by_a_nack,
            a_long_poll_that_loses_the_race_for_a_message_keeps_waiting,
            a_long_poll_whose_caller_went_away_takes_nothing,
            a_long_poll_that_gives_up_leaves_the_next_message_visible,
            stats_count_exactly_after_a_scripted_sequence,
            list_queues_returns_every_queue_with_settings_and_stats,
            redrive_moves_dead_letters_back_to_the_end_of_their_original_queues,
            redrive_to_a_named_queue_moves_every_dead_letter_there,
            redrive_leaves_dead_letters_in_flight,
            redriving_a_queue_that_is_not_a_dead_letter_queue_is_invalid_and_changes_nothing,
            purge_deletes_every_message_in_flight_or_not,
            deleting_a_queue_removes_it_and_its_messages,
            a_receipt_from_before_a_delete_cannot_touch_the_queue_made_again,
            concurrent_consumers_receive_each_message_exactly_once,
            rejecting_a_delivery_dead_letters_it_at_once_with_the_metadata,
            rejecting_without_a_dead_letter_target_hides_it_for_the_visibility_timeout,
            rejecting_with_a_stale_receipt_is_lease_lost,
            offloaded_references_survive_delivery_dead_lettering_and_redrive,
        );
    };
    (@each $make:path; $($scenario:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                let clock = $crate::conformance::test_clock();
                let fixture: $crate::conformance::TestQueues = $make(clock.clone()).await;
                $crate::conformance::queue_store::$scenario(&fixture.queues, &clock).await;
                drop(fixture);
            }
        )*
    };
}
