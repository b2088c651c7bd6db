//! The payload store's metrics, recorded through the `metrics` facade; the
//! server's exporter serves them on `/metrics`.
//!
//! Every series has the label [`LABEL_STORE`] = the store's type
//! (`filesystem`, `s3`, `gcs`, `memory`).
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | [`PUT_TOTAL`] | counter | puts that succeeded, dedup hits included |
//! | [`PUT_DEDUP_TOTAL`] | counter | puts that found the payload stored already |
//! | [`PUT_BYTES_TOTAL`] | counter | original (uncompressed) bytes of newly stored payloads; dedup hits add nothing |
//! | [`PUT_ERRORS_TOTAL`] | counter | puts that failed (after retries) |
//! | [`GET_TOTAL`] | counter | retrievals, failed ones included |
//! | [`GET_ERRORS_TOTAL`] | counter | retrievals that failed, by [`LABEL_FAILURE`] (`not_found`, `integrity_failed`, `access_denied`, `timeout`, `unavailable`) |
//! | [`CLEANUP_DELETED_TOTAL`] | counter | payloads deleted by the reaper or a manual cleanup |
//! | [`PUT_SECONDS`] | histogram | duration of successful puts |
//! | [`GET_SECONDS`] | histogram | duration of successful retrievals, verification included |

use std::time::Duration;

use wharf_core::{PayloadFailure, PayloadStorageType};

/// Counter: puts that succeeded, dedup hits included.
pub const PUT_TOTAL: &str = "payload_store_put_total";
/// Counter: puts whose payload was stored already (a subset of [`PUT_TOTAL`]).
pub const PUT_DEDUP_TOTAL: &str = "payload_store_put_dedup_total";
/// Counter: original bytes of newly stored payloads.
pub const PUT_BYTES_TOTAL: &str = "payload_store_put_bytes_total";
/// Counter: puts that failed after retries.
pub const PUT_ERRORS_TOTAL: &str = "payload_store_put_errors_total";
/// Counter: retrievals, failed ones included.
pub const GET_TOTAL: &str = "payload_store_get_total";
/// Counter: retrievals that failed, labelled with [`LABEL_FAILURE`].
pub const GET_ERRORS_TOTAL: &str = "payload_store_get_errors_total";
/// Counter: payloads deleted by cleanup; see [`record_cleanup_deleted`].
pub const CLEANUP_DELETED_TOTAL: &str = "payload_store_cleanup_deleted_total";
/// Histogram: seconds per successful put.
pub const PUT_SECONDS: &str = "payload_store_put_seconds";
/// Histogram: seconds per successful retrieval.
pub const GET_SECONDS: &str = "payload_store_get_seconds";

/// The label naming the store's type.
pub const LABEL_STORE: &str = "store";
/// The label naming why a retrieval failed ([`PayloadFailure::as_str`]).
pub const LABEL_FAILURE: &str = "failure";

/// Registers the descriptions of every series; call once after installing
/// the exporter.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(PUT_TOTAL, "Payloads stored (dedup hits included)");
    describe_counter!(PUT_DEDUP_TOTAL, "Puts whose payload was stored already");
    describe_counter!(
        PUT_BYTES_TOTAL,
        Unit::Bytes,
        "Original bytes of newly stored payloads"
    );
    describe_counter!(PUT_ERRORS_TOTAL, "Puts that failed after retries");
    describe_counter!(GET_TOTAL, "Payload retrievals (failed ones included)");
    describe_counter!(GET_ERRORS_TOTAL, "Payload retrievals that failed");
    describe_counter!(CLEANUP_DELETED_TOTAL, "Payloads deleted by cleanup");
    describe_histogram!(PUT_SECONDS, Unit::Seconds, "Duration of successful puts");
    describe_histogram!(
        GET_SECONDS,
        Unit::Seconds,
        "Duration of successful retrievals"
    );
}

/// Counts `deleted` payloads removed from a store of type `store` by the
/// reaper or a manual cleanup.
pub fn record_cleanup_deleted(store: PayloadStorageType, deleted: u64) {
    metrics::counter!(CLEANUP_DELETED_TOTAL, LABEL_STORE => store.as_str()).increment(deleted);
}

pub(crate) fn record_put(
    store: PayloadStorageType,
    original_bytes: u64,
    dedup: bool,
    took: Duration,
) {
    let label = store.as_str();
    metrics::counter!(PUT_TOTAL, LABEL_STORE => label).increment(1);
    if dedup {
        metrics::counter!(PUT_DEDUP_TOTAL, LABEL_STORE => label).increment(1);
    } else {
        metrics::counter!(PUT_BYTES_TOTAL, LABEL_STORE => label).increment(original_bytes);
    }
    metrics::histogram!(PUT_SECONDS, LABEL_STORE => label).record(took.as_secs_f64());
}

pub(crate) fn record_put_error(store: PayloadStorageType) {
    metrics::counter!(PUT_ERRORS_TOTAL, LABEL_STORE => store.as_str()).increment(1);
}

pub(crate) fn record_get(store: PayloadStorageType, outcome: Result<Duration, PayloadFailure>) {
    let label = store.as_str();
    metrics::counter!(GET_TOTAL, LABEL_STORE => label).increment(1);
    match outcome {
        Ok(took) => {
            metrics::histogram!(GET_SECONDS, LABEL_STORE => label).record(took.as_secs_f64())
        }
        Err(failure) => {
            metrics::counter!(GET_ERRORS_TOTAL, LABEL_STORE => label, LABEL_FAILURE => failure.as_str())
                .increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
        SharedString, Unit,
    };

    use super::*;

    /// Counts per series, named `name{label=value,…}`.
    #[derive(Default)]
    struct Recorded(Mutex<BTreeMap<String, Arc<Series>>>);

    #[derive(Default)]
    struct Series(AtomicU64);

    impl CounterFn for Series {
        fn increment(&self, value: u64) {
            self.0.fetch_add(value, Ordering::SeqCst);
        }
        fn absolute(&self, value: u64) {
            self.0.store(value, Ordering::SeqCst);
        }
    }

    impl HistogramFn for Series {
        fn record(&self, _value: f64) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Recorded {
        fn series(&self, key: &Key) -> Arc<Series> {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let mut map = self.0.lock().expect("not poisoned");
            map.entry(name).or_default().clone()
        }

        fn get(&self, name: &str) -> u64 {
            let map = self.0.lock().expect("not poisoned");
            map.get(name).map_or(0, |s| s.0.load(Ordering::SeqCst))
        }
    }

    impl Recorder for Recorded {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.series(key))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(self.series(key))
        }
    }

    #[test]
    fn puts_gets_and_cleanups_are_counted_per_store() {
        let recorded = Recorded::default();
        metrics::with_local_recorder(&recorded, || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let store = crate::PayloadStore::memory(Arc::new(wharf_core::SystemClock));
                let data = bytes::Bytes::from_static(b"twelve bytes");
                let reference = store.put(&data).await.expect("put");
                store.put(&data).await.expect("dedup hit");
                store.get(&reference).await.expect("get");
                let missing = wharf_core::PayloadReference {
                    original_size: 1,
                    ..reference.clone()
                };
                assert!(store.delete(&reference.content_hash).await.expect("delete"));
                store.get(&missing).await.expect_err("gone");
            });
            record_cleanup_deleted(PayloadStorageType::S3, 7);
        });
        assert_eq!(recorded.get("payload_store_put_total{store=memory}"), 2);
        assert_eq!(
            recorded.get("payload_store_put_dedup_total{store=memory}"),
            1
        );
        assert_eq!(
            recorded.get("payload_store_put_bytes_total{store=memory}"),
            12,
            "dedup hits add no bytes"
        );
        assert_eq!(recorded.get("payload_store_put_seconds{store=memory}"), 2);
        assert_eq!(recorded.get("payload_store_get_total{store=memory}"), 2);
        assert_eq!(recorded.get("payload_store_get_seconds{store=memory}"), 1);
        assert_eq!(
            recorded.get("payload_store_get_errors_total{store=memory,failure=not_found}"),
            1
        );
        assert_eq!(
            recorded.get("payload_store_cleanup_deleted_total{store=s3}"),
            7
        );
    }
}
