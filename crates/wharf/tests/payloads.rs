//! Payload offloading through the engine: large data goes to the payload
//! store once, comes back verified, failures go to the dead-letter queue,
//! and the reaper deletes only what nothing references — even while appends
//! race it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use wharf::{
    Config, DequeueOptions, Error, ExpectedVersion, LogFilter, NewEvent, NewMessage,
    PayloadFailure, PayloadOffloadConfig, PayloadStorageType, Position, QueueName, ReadDirection,
    StreamName, StreamStart, SubscriptionItem, Wharf,
};
use wharf_core::payload::dead_letter_keys;
use wharf_core::{ManualClock, Timestamp};

const THRESHOLD: u64 = 64 * 1024;
const DAY: Duration = Duration::from_secs(86_400);

struct Fixture {
    wharf: Wharf,
    clock: ManualClock,
    payloads: PathBuf,
    _dir: tempfile::TempDir,
}

fn offload_config(payloads: &Path) -> PayloadOffloadConfig {
    let mut c = PayloadOffloadConfig {
        enabled: true,
        threshold_bytes: THRESHOLD,
        ttl_days: 30,
        reaper_interval_hours: 0,
        ..PayloadOffloadConfig::default()
    };
    c.filesystem.base_path = payloads.to_path_buf();
    c
}

async fn open() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let payloads = dir.path().join("payloads");
    let mut config = Config::embedded(dir.path().join("data"));
    config.payload_offload = offload_config(&payloads);
    let clock = ManualClock::new(Timestamp::from_system_time(SystemTime::now()));
    let wharf = Wharf::open_with_clock(&config, Arc::new(clock.clone()))
        .await
        .unwrap();
    Fixture {
        wharf,
        clock,
        payloads,
        _dir: dir,
    }
}

/// Deterministic, incompressible-enough bytes.
fn blob(len: usize, seed: u8) -> Bytes {
    let mut x = u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<_>>()
        .into()
}

fn stream(name: &str) -> StreamName {
    name.parse().unwrap()
}

fn queue(name: &str) -> QueueName {
    name.parse().unwrap()
}

/// The stored objects, by file name.
fn objects(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "bin"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

async fn read(wharf: &Wharf, name: &str) -> wharf::Result<Vec<wharf::RecordedEvent>> {
    wharf
        .read_stream(
            &stream(name),
            StreamStart::Edge,
            ReadDirection::Forwards,
            100,
        )
        .await
}

fn options() -> DequeueOptions {
    DequeueOptions {
        visibility_timeout: Some(Duration::from_secs(30)),
        max_messages: 10,
        wait: Duration::ZERO,
    }
}

#[tokio::test]
async fn large_events_are_offloaded_once_and_read_back_whole() {
    let f = open().await;
    let big = blob(5 << 20, 1);
    f.wharf
        .append(
            &stream("docs"),
            ExpectedVersion::Any,
            vec![
                NewEvent::new("Uploaded", big.clone()),
                NewEvent::new("Small", "inline"),
                NewEvent::new("UploadedAgain", big.clone()),
            ],
        )
        .await
        .unwrap();
    let events = read(&f.wharf, "docs").await.unwrap();
    assert_eq!(events[0].data, big, "the full payload comes back");
    assert_eq!(events[2].data, big);
    assert_eq!(&events[1].data[..], b"inline");
    assert_eq!(events[1].external, None, "small data stays inline");
    let reference = events[0].external.clone().expect("the reference is kept");
    assert_eq!(reference.storage_type, PayloadStorageType::Filesystem);
    assert_eq!(reference.original_size, 5 << 20);
    assert!(reference.uri.starts_with("file:///"), "{}", reference.uri);
    assert!(
        reference
            .uri
            .ends_with(&format!("{}.bin", reference.content_hash))
    );
    assert_eq!(
        objects(&f.payloads).len(),
        1,
        "identical payloads are stored once"
    );

    // The log itself holds only the reference.
    let raw = f
        .wharf
        .event_log()
        .read_stream(
            &stream("docs"),
            StreamStart::Edge,
            ReadDirection::Forwards,
            10,
        )
        .await
        .unwrap();
    assert!(raw[0].data.is_empty());
    assert_eq!(raw[0].external, Some(reference));

    let page = f
        .wharf
        .read_all(Position(0), &LogFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(page.events[0].data, big);

    let mut subscription = f.wharf.subscribe(Position(0), LogFilter::default());
    match subscription.next().await.unwrap() {
        SubscriptionItem::Event(e) => assert_eq!(e.data, big),
        other => panic!("expected the event, got {other:?}"),
    }
    f.wharf.close().await;
}

#[tokio::test]
async fn large_messages_are_offloaded_and_dequeued_whole() {
    let f = open().await;
    let big = blob(5 << 20, 2);
    f.wharf
        .enqueue(&queue("jobs"), NewMessage::new(big.clone()))
        .await
        .unwrap();
    let got = f.wharf.dequeue(&queue("jobs"), options()).await.unwrap();
    assert_eq!(got[0].data, big);
    assert!(got[0].external.is_some());
    assert_eq!(objects(&f.payloads).len(), 1);
    f.wharf.close().await;
}

#[tokio::test]
async fn a_corrupted_payload_fails_a_read_with_the_details() {
    let f = open().await;
    f.wharf
        .append(
            &stream("docs"),
            ExpectedVersion::Any,
            vec![NewEvent::new("Uploaded", blob(200_000, 3))],
        )
        .await
        .unwrap();
    let object = objects(&f.payloads).remove(0);
    let mut bytes = std::fs::read(&object).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&object, &bytes).unwrap();
    let err = read(&f.wharf, "docs").await.expect_err("integrity check");
    let Error::IntegrityFailed { details } = &err else {
        panic!("expected IntegrityFailed, got {err:?}");
    };
    assert!(
        object
            .to_string_lossy()
            .ends_with(&format!("{}.bin", details.content_hash))
    );
    assert_eq!(details.original_size, 200_000);
    assert!(details.uri.starts_with("file:///"));

    std::fs::write(&object, &bytes[..5000]).unwrap();
    let err = read(&f.wharf, "docs").await.expect_err("truncated");
    assert!(matches!(err, Error::IntegrityFailed { .. }), "{err:?}");

    std::fs::remove_file(&object).unwrap();
    let err = read(&f.wharf, "docs").await.expect_err("missing");
    assert_eq!(
        err.payload_details().map(|(failure, _)| failure),
        Some(PayloadFailure::NotFound),
        "{err:?}"
    );
    f.wharf.close().await;
}

#[tokio::test]
async fn a_delivery_whose_payload_is_gone_is_dead_lettered_with_the_details_then_redriven() {
    let f = open().await;
    let big = blob(300_000, 4);
    let jobs = queue("jobs");
    f.wharf
        .enqueue(&jobs, NewMessage::new(big.clone()))
        .await
        .unwrap();
    f.wharf
        .enqueue(&jobs, NewMessage::new("fine"))
        .await
        .unwrap();
    let object = objects(&f.payloads).remove(0);
    let saved = std::fs::read(&object).unwrap();
    std::fs::remove_file(&object).unwrap();

    let got = f.wharf.dequeue(&jobs, options()).await.unwrap();
    assert_eq!(got.len(), 1, "the consumer is not handed a bare reference");
    assert_eq!(&got[0].data[..], b"fine");

    let dlq = queue("dlq");
    let dead = f.wharf.dequeue(&dlq, options()).await.unwrap();
    assert_eq!(dead.len(), 1);
    let dead = &dead[0];
    assert!(
        dead.data.is_empty(),
        "a dead letter keeps the reference, not data"
    );
    let reference = dead.external.clone().expect("reference kept");
    assert_eq!(dead.metadata["OriginalStreamName"], "jobs");
    assert_eq!(dead.metadata[dead_letter_keys::STORAGE_TYPE], "filesystem");
    assert_eq!(dead.metadata[dead_letter_keys::URI], reference.uri);
    assert_eq!(
        dead.metadata[dead_letter_keys::CONTENT_HASH],
        reference.content_hash.to_hex()
    );
    assert_eq!(dead.metadata[dead_letter_keys::ORIGINAL_SIZE], "300000");
    assert!(!dead.metadata[dead_letter_keys::ERROR].is_empty());

    // An operator restores the object and redrives: the message is whole again.
    std::fs::write(&object, &saved).unwrap();
    f.wharf
        .nack(&dlq, &dead.receipt, Duration::ZERO, None)
        .await
        .unwrap();
    assert_eq!(f.wharf.redrive(&dlq, None).await.unwrap(), 1);
    let back = f.wharf.dequeue(&jobs, options()).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].data, big);
    f.wharf.close().await;
}

#[tokio::test]
async fn a_subscription_dead_letters_an_event_whose_payload_is_gone_and_goes_on() {
    let f = open().await;
    f.wharf
        .append(
            &stream("docs"),
            ExpectedVersion::Any,
            vec![
                NewEvent::new("Uploaded", blob(100_000, 5)),
                NewEvent::new("Next", "after"),
            ],
        )
        .await
        .unwrap();
    std::fs::remove_file(objects(&f.payloads).remove(0)).unwrap();
    let mut subscription = f.wharf.subscribe(Position(0), LogFilter::default());
    match subscription.next().await.unwrap() {
        SubscriptionItem::Event(e) => assert_eq!(e.event_type, "Next"),
        other => panic!("expected the next event, got {other:?}"),
    }
    let dead = f.wharf.dequeue(&queue("dlq"), options()).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].metadata["OriginalStreamName"], "docs");
    assert_eq!(dead[0].metadata[wharf::EVENT_TYPE], "Uploaded");
    assert_eq!(dead[0].metadata[wharf::EVENT_POSITION], "0");
    assert!(dead[0].metadata.contains_key(dead_letter_keys::ERROR));
    f.wharf.close().await;
}

#[tokio::test]
async fn the_reaper_deletes_old_unreferenced_payloads_and_keeps_the_rest() {
    let f = open().await;
    let jobs = queue("jobs");
    f.wharf
        .append(
            &stream("kept"),
            ExpectedVersion::Any,
            vec![NewEvent::new("A", blob(100_000, 6))],
        )
        .await
        .unwrap();
    f.wharf
        .append(
            &stream("deleted"),
            ExpectedVersion::Any,
            vec![NewEvent::new("B", blob(100_000, 7))],
        )
        .await
        .unwrap();
    f.wharf
        .enqueue(&jobs, NewMessage::new(blob(100_000, 8)))
        .await
        .unwrap();
    assert_eq!(objects(&f.payloads).len(), 3);

    f.wharf
        .delete_stream(&stream("deleted"), ExpectedVersion::Any)
        .await
        .unwrap();
    let d = f.wharf.dequeue(&jobs, options()).await.unwrap();
    f.wharf.ack(&jobs, &d[0].receipt).await.unwrap();

    let young = f
        .wharf
        .cleanup_payloads(30 * DAY, false, |_| {})
        .await
        .unwrap();
    let ancient = f
        .wharf
        .cleanup_payloads(Duration::from_secs(u64::MAX / 4), false, |_| {})
        .await
        .unwrap();
    assert_eq!(
        ancient.deleted, 0,
        "an age before the epoch selects nothing"
    );
    assert_eq!((young.scanned, young.deleted), (3, 0), "nothing is old yet");

    f.clock.advance(31 * DAY);
    let dry = f
        .wharf
        .cleanup_payloads(30 * DAY, true, |_| {})
        .await
        .unwrap();
    assert_eq!((dry.deleted, dry.kept_referenced), (2, 1));
    assert_eq!(objects(&f.payloads).len(), 3, "a dry run deletes nothing");

    let mut seen = 0;
    let report = f
        .wharf
        .cleanup_payloads(30 * DAY, false, |r| seen = r.scanned)
        .await
        .unwrap();
    assert_eq!(
        (report.scanned, report.deleted, report.kept_referenced),
        (3, 2, 1)
    );
    assert_eq!(report.bytes_freed, 200_000);
    assert_eq!(seen, 3, "progress is reported");
    assert_eq!(objects(&f.payloads).len(), 1);
    assert_eq!(
        read(&f.wharf, "kept").await.unwrap()[0].data,
        blob(100_000, 6)
    );
    f.wharf.close().await;
}

/// Appends that reuse an old payload race the reaper, many times: whatever
/// the interleaving, an append that succeeded can always read its payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_reusing_old_payloads_never_lose_them_to_a_concurrent_reaper() {
    let f = open().await;
    let payload = blob(80_000, 9);
    f.clock.advance(60 * DAY);
    for round in 0..200 {
        let name = format!("race-{round}");
        // The previous round's stream is deleted, so the object is old and
        // unreferenced: exactly what the reaper wants to delete.
        if round > 0 {
            f.wharf
                .delete_stream(
                    &stream(&format!("race-{}", round - 1)),
                    ExpectedVersion::Any,
                )
                .await
                .unwrap();
        }
        let append = {
            let (wharf, payload, name) = (f.wharf.clone(), payload.clone(), name.clone());
            tokio::spawn(async move {
                wharf
                    .append(
                        &stream(&name),
                        ExpectedVersion::Any,
                        vec![NewEvent::new("Reused", payload)],
                    )
                    .await
            })
        };
        let reap = {
            let wharf = f.wharf.clone();
            tokio::spawn(async move { wharf.cleanup_payloads(Duration::ZERO, false, |_| {}).await })
        };
        append.await.unwrap().unwrap();
        reap.await.unwrap().unwrap();
        let events = read(&f.wharf, &name)
            .await
            .unwrap_or_else(|e| panic!("round {round}: the appended payload is gone: {e}"));
        assert_eq!(events[0].data, payload, "round {round}");
    }
    f.wharf.close().await;
}

#[tokio::test]
async fn bad_offload_settings_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    for (threshold, needle) in [(0, "threshold_bytes"), (2 << 20, "threshold_bytes")] {
        let mut config = Config::embedded(dir.path().join("data"));
        config.payload_offload = offload_config(&dir.path().join("p"));
        config.payload_offload.threshold_bytes = threshold;
        match Wharf::open(&config).await {
            Err(Error::InvalidArgument(m)) => assert!(m.contains(needle), "{m}"),
            Err(e) => panic!("threshold {threshold}: expected InvalidArgument, got {e:?}"),
            Ok(_) => panic!("threshold {threshold}: expected InvalidArgument, got an open engine"),
        }
    }
}

#[tokio::test]
async fn an_unreachable_store_fails_the_append_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = Config::embedded(dir.path().join("data"));
    config.payload_offload = PayloadOffloadConfig {
        enabled: true,
        threshold_bytes: THRESHOLD,
        store_type: PayloadStorageType::S3,
        s3: Some(wharf_core::payload::S3StoreConfig {
            bucket: "wharf".into(),
            prefix: String::new(),
            region: "us-east-1".into(),
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            access_key_id: Some("key".into()),
            secret_access_key: Some("secret".into()),
        }),
        retry: wharf_core::payload::RetryConfig {
            max_attempts: 2,
            timeout: Duration::from_millis(500),
            backoff: Duration::from_millis(10),
        },
        reaper_interval_hours: 0,
        ..PayloadOffloadConfig::default()
    };
    let wharf = Wharf::open(&config).await.unwrap();
    let started = std::time::Instant::now();
    let err = wharf
        .append(
            &stream("docs"),
            ExpectedVersion::Any,
            vec![NewEvent::new("Big", blob(100_000, 10))],
        )
        .await
        .expect_err("the store is unreachable");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded retries"
    );
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")) || err.to_string().contains("s3://"),
        "the error names the store: {err}"
    );
    assert!(matches!(
        read(&wharf, "docs").await,
        Err(Error::StreamNotFound(_))
    ));
    wharf.close().await;
}

#[tokio::test]
async fn over_the_payload_limit_is_refused_and_inline_limits_still_hold_without_offloading() {
    let f = open().await;
    let mut limits = f.wharf.limits();
    limits.max_payload_bytes = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::embedded(dir.path().join("data"));
    config.payload_offload = offload_config(&dir.path().join("p"));
    config.limits = limits;
    let small_limit = Wharf::open(&config).await.unwrap();
    let err = small_limit
        .enqueue(&queue("jobs"), NewMessage::new(blob(2 << 20, 11)))
        .await
        .expect_err("over max_payload_bytes");
    assert!(err.to_string().contains("payload limit"), "{err}");
    assert!(matches!(
        small_limit.queue_stats(&queue("jobs")).await,
        Err(Error::QueueNotFound(_))
    ));
    small_limit.close().await;

    let plain_dir = tempfile::tempdir().unwrap();
    let plain = Wharf::open(&Config::embedded(plain_dir.path()))
        .await
        .unwrap();
    let err = plain
        .append(
            &stream("docs"),
            ExpectedVersion::Any,
            vec![NewEvent::new("Big", blob(2 << 20, 12))],
        )
        .await
        .expect_err("no offloading: the inline limit applies");
    assert!(err.to_string().contains("inline limit"), "{err}");
    plain.close().await;
    f.wharf.close().await;
}

/// Peak resident memory of this process, in bytes (Linux).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// nextest runs each test in its own process, so the high-water mark is
/// this test's.
#[tokio::test]
async fn a_100_mib_payload_round_trips_without_several_copies_in_memory() {
    let f = open().await;
    let big = blob(100 << 20, 13);
    let before = peak_rss();
    f.wharf
        .append(
            &stream("huge"),
            ExpectedVersion::Any,
            vec![NewEvent::new("Huge", big.clone())],
        )
        .await
        .unwrap();
    let events = read(&f.wharf, "huge").await.unwrap();
    assert!(events[0].data == big);
    let grown = peak_rss().saturating_sub(before);
    // The input is already counted in `before`; the read adds one copy.
    assert!(
        grown < 180 << 20,
        "peak memory grew by {} MiB for a 100 MiB payload",
        grown >> 20
    );
    f.wharf.close().await;
}

#[tokio::test]
async fn the_reaper_runs_on_its_interval_without_any_call() {
    let dir = tempfile::tempdir().unwrap();
    let payloads = dir.path().join("payloads");
    let mut config = Config::embedded(dir.path().join("data"));
    config.payload_offload = offload_config(&payloads);
    config.payload_offload.reaper_interval_hours = 24;
    let clock = ManualClock::new(Timestamp::from_system_time(SystemTime::now()));
    let wharf = Wharf::open_with_clock(&config, Arc::new(clock.clone()))
        .await
        .unwrap();
    for (name, seed) in [("gone", 20), ("kept", 21)] {
        wharf
            .append(
                &stream(name),
                ExpectedVersion::Any,
                vec![NewEvent::new("Big", blob(100_000, seed))],
            )
            .await
            .unwrap();
    }
    wharf
        .delete_stream(&stream("gone"), ExpectedVersion::Any)
        .await
        .unwrap();
    assert_eq!(objects(&payloads).len(), 2);
    // Past the TTL, then one interval: the reaper wakes on the clock.
    clock.advance(31 * DAY);
    clock.advance(Duration::from_secs(24 * 3600));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while objects(&payloads).len() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the reaper did not run: {:?}",
            objects(&payloads)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        read(&wharf, "kept").await.unwrap()[0].data,
        blob(100_000, 21)
    );
    wharf.close().await;
}
