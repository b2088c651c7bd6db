//! The payload-store conformance suite, run on every backend: memory,
//! filesystem (a temporary directory), S3 (a real S3-compatible server on
//! loopback, see `s3.rs`), each with every codec variant; plus GCS builder
//! tests and a live GCS test that runs when credentials are given.
//!
//! A scenario is an `async fn(&Fixture)` in `scenarios.rs`;
//! [`payload_store_conformance!`] expands them into one `#[tokio::test]`
//! per scenario, per codec variant, for a backend's fixture.

mod fixture;
mod scenarios;

/// Expands into modules `plain`, `zstd`, `aes` and `zstd_aes`, each with one
/// test per scenario that applies to that codec, calling `$make(variant)`
/// for a fresh [`fixture::Fixture`] (`None`: the backend is unavailable
/// outside CI and the test is skipped with a notice).
macro_rules! payload_store_conformance {
    ($make:path) => {
        mod plain {
            payload_store_conformance!(@each $make, plain;
                payloads_of_every_size_round_trip,
                putting_the_same_payload_twice_stores_one_object,
                an_object_stored_by_someone_else_is_a_dedup_hit,
                concurrent_puts_of_one_payload_store_one_object,
                a_missing_object_is_not_found_with_the_reference_details,
                a_corrupted_object_fails_its_integrity_check,
                a_truncated_object_fails_its_integrity_check,
                a_reference_with_the_wrong_size_fails_its_integrity_check,
                delete_reports_whether_the_object_existed,
                list_stats_and_head_describe_the_stored_objects,
                objects_land_under_the_prefix_and_foreign_keys_are_ignored,
                a_large_payload_round_trips_through_the_multipart_path,
                objects_written_before_the_codec_changed_still_read,
                presigned_urls_serve_the_stored_object_where_the_store_signs,
            );
        }
        mod zstd {
            payload_store_conformance!(@each $make, zstd;
                payloads_of_every_size_round_trip,
                a_corrupted_object_fails_its_integrity_check,
                a_truncated_object_fails_its_integrity_check,
                a_large_payload_round_trips_through_the_multipart_path,
                objects_written_before_the_codec_changed_still_read,
            );
        }
        mod aes {
            payload_store_conformance!(@each $make, aes;
                payloads_of_every_size_round_trip,
                a_corrupted_object_fails_its_integrity_check,
                a_truncated_object_fails_its_integrity_check,
                a_large_payload_round_trips_through_the_multipart_path,
                objects_written_before_the_codec_changed_still_read,
                a_wrong_encryption_key_fails_with_decryption_failed,
            );
        }
        mod zstd_aes {
            payload_store_conformance!(@each $make, zstd_aes;
                payloads_of_every_size_round_trip,
                a_corrupted_object_fails_its_integrity_check,
                a_truncated_object_fails_its_integrity_check,
                a_large_payload_round_trips_through_the_multipart_path,
                objects_written_before_the_codec_changed_still_read,
                a_wrong_encryption_key_fails_with_decryption_failed,
            );
        }
    };
    (@each $make:path, $variant:ident; $($scenario:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                let Some(fixture) = $make($crate::fixture::Variant::$variant()).await else {
                    return;
                };
                $crate::scenarios::$scenario(&fixture).await;
                fixture.cleanup().await;
            }
        )*
    };
}

mod filesystem;
mod gcs;
mod memory;
mod s3;
