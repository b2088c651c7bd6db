//! Payload offloading through the gRPC API: large payloads round-trip in
//! full, references on request, integrity failures with their details, the
//! Payloads service, and the size limits. Cleanup and metrics are in
//! [`cleanup`].

#[path = "payloads/cleanup.rs"]
mod cleanup;
mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use support::{Running, THRESHOLD, offloading_in, start, start_configured, start_offloading};
use tonic::Code;
use tonic_types::StatusExt;
use wharf_client::{PayloadLocator, SubscriptionItem};
use wharf_core::payload::dead_letter_keys;
use wharf_core::queue::ORIGINAL_STREAM_NAME;
use wharf_core::{
    DequeueOptions, Error, ExpectedVersion, LogFilter, NewEvent, NewMessage, PayloadFailure,
    PayloadReference, PayloadStorageType, Position, QueueName, QueueSettings, ReadDirection,
    StreamName, StreamStart,
};
use wharf_proto::status::{payload_details, reason};
use wharf_proto::v1::{
    self, payloads_client::PayloadsClient, recorded_event, streams_client::StreamsClient,
};

fn name(s: &str) -> StreamName {
    s.parse().unwrap()
}

fn q(s: &str) -> QueueName {
    s.parse().unwrap()
}

fn take(n: u32) -> DequeueOptions {
    DequeueOptions {
        max_messages: n,
        ..DequeueOptions::default()
    }
}

/// `size` bytes that differ with `seed` and do not compress: a xorshift
/// stream.
fn payload(size: usize, seed: u64) -> Bytes {
    let mut x = 0x9E37_79B9_7F4A_7C15_u64 ^ seed.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size);
    out.into()
}

/// Overwrites a few bytes in the middle of the stored object, keeping its size.
fn corrupt(r: &Running, reference: &PayloadReference) {
    let path = r.payload_file(&reference.content_hash);
    let mut bytes = std::fs::read(&path).expect("the payload object exists");
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 4] {
        *b ^= 0xff;
    }
    std::fs::write(&path, bytes).unwrap();
}

fn url(r: &Running) -> String {
    format!("http://{}", r.server.grpc_addr())
}

/// The reference of the payload of `stream`'s first event, read without
/// fetching.
async fn reference_of(r: &Running, stream: &StreamName) -> PayloadReference {
    let events = r
        .client
        .with_payload_references(true)
        .read_stream(stream, StreamStart::Edge, ReadDirection::Forwards, Some(1))
        .await
        .unwrap();
    events[0]
        .external
        .clone()
        .expect("the payload was offloaded")
}

#[tokio::test]
async fn a_5_mib_event_and_message_round_trip_and_are_stored_once() {
    let r = start_offloading().await;
    let data = payload(5 << 20, 1);
    let scans = name("scans");
    // The same payload twice in the stream and once in a queue: one object.
    for _ in 0..2 {
        r.client
            .append(
                &scans,
                ExpectedVersion::Any,
                vec![NewEvent::new("Scanned", data.clone())],
            )
            .await
            .unwrap();
    }
    let jobs = q("jobs");
    r.client
        .enqueue(&jobs, NewMessage::new(data.clone()))
        .await
        .unwrap();

    let events = r
        .client
        .read_stream(&scans, StreamStart::Edge, ReadDirection::Forwards, None)
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
    let reference = events[0].external.clone().expect("offloaded");
    assert_eq!(reference.original_size, 5 << 20);
    assert_eq!(reference.storage_type, PayloadStorageType::Filesystem);
    assert!(
        reference
            .uri
            .ends_with(&format!("/{}.bin", reference.content_hash)),
        "{}",
        reference.uri
    );
    for e in &events {
        assert!(
            e.data == data,
            "event {} is byte-identical",
            e.stream_version
        );
        assert_eq!(e.external.as_ref().map(|x| &x.uri), Some(&reference.uri));
    }
    let mut pages = r
        .client
        .read_all(Position::START, &LogFilter::default(), None)
        .await
        .unwrap();
    let mut all = Vec::new();
    while let Some(page) = pages.next().await {
        all.extend(page.unwrap());
    }
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|e| e.data == data));

    let delivered = r.client.dequeue(&jobs, take(1)).await.unwrap();
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0].data == data, "the message is byte-identical");
    assert_eq!(
        delivered[0].external.as_ref().map(|x| x.content_hash),
        Some(reference.content_hash)
    );

    assert_eq!(r.payload_files(), 1, "three uses, one stored object");
    let stored = std::fs::read(r.payload_file(&reference.content_hash)).unwrap();
    assert!(stored == data, "the object is the payload itself");
    r.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_payload_round_trips_over_grpc() {
    let r = start_offloading().await;
    let data = payload(100 << 20, 100);
    let huge = name("huge");
    let started = Instant::now();
    let round_trip = async {
        r.client
            .append(
                &huge,
                ExpectedVersion::NoStream,
                vec![NewEvent::new("Huge", data.clone())],
            )
            .await
            .unwrap();
        let events = r
            .client
            .read_stream(&huge, StreamStart::Edge, ReadDirection::Forwards, None)
            .await
            .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data.len(), 100 << 20);
        assert!(events[0].data == data, "100 MiB event is byte-identical");
        let reference = events[0].external.clone().expect("offloaded");
        drop(events);
        let fetched = r.client.payload_get(reference.into()).await.unwrap();
        assert!(fetched.data == data, "100 MiB get is byte-identical");
    };
    tokio::time::timeout(Duration::from_secs(180), round_trip)
        .await
        .expect("100 MiB append, read and get within 3 minutes");
    eprintln!("100 MiB round trip took {:?}", started.elapsed());
    assert_eq!(r.payload_files(), 1);
    r.server.shutdown().await;
}

#[tokio::test]
async fn payload_references_come_instead_of_the_data_when_asked_for() {
    let r = start_offloading().await;
    let big = payload(THRESHOLD as usize + 1, 2);
    let s = name("mixed");
    r.client
        .append(
            &s,
            ExpectedVersion::Any,
            vec![
                NewEvent::new("Big", big.clone()),
                NewEvent::new("Small", "s"),
            ],
        )
        .await
        .unwrap();
    let jobs = q("jobs");
    r.client
        .enqueue(&jobs, NewMessage::new(big.clone()))
        .await
        .unwrap();
    let refs = r.client.with_payload_references(true);

    let events = refs
        .read_stream(&s, StreamStart::Edge, ReadDirection::Forwards, None)
        .await
        .unwrap();
    let reference = events[0].external.clone().expect("a reference");
    assert!(events[0].data.is_empty(), "no data with a reference");
    assert_eq!(reference.original_size, big.len() as u64);
    assert_eq!(
        (events[1].data.as_ref(), &events[1].external),
        (&b"s"[..], &None)
    );

    let mut pages = refs
        .read_all(Position::START, &LogFilter::default(), None)
        .await
        .unwrap();
    let page = pages.next().await.unwrap().unwrap();
    assert!(page[0].data.is_empty() && page[0].external == Some(reference.clone()));

    let mut sub = refs
        .subscribe(Position::START, &LogFilter::default())
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(&first, SubscriptionItem::Event(e) if e.data.is_empty() && e.external.is_some()),
        "{first:?}"
    );

    let delivered = refs.dequeue(&jobs, take(1)).await.unwrap();
    assert!(delivered[0].data.is_empty());
    assert_eq!(
        delivered[0].external.as_ref().map(|x| x.content_hash),
        Some(reference.content_hash)
    );

    // On the wire: the oneof carries `external` alone when asked, `data`
    // with `resolved_from` otherwise.
    let mut raw = StreamsClient::connect(url(&r)).await.unwrap();
    for references in [true, false] {
        let mut pages = raw
            .read_stream(v1::ReadStreamRequest {
                stream: "mixed".into(),
                limit: 1,
                payload_references: references,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let event = pages.message().await.unwrap().unwrap().events.remove(0);
        match (references, event.payload) {
            (true, Some(recorded_event::Payload::External(x))) => {
                assert_eq!(x.uri, reference.uri);
                assert!(event.resolved_from.is_none());
            }
            (false, Some(recorded_event::Payload::Data(d))) => {
                assert!(d == big);
                assert_eq!(
                    event.resolved_from.map(|x| x.uri),
                    Some(reference.uri.clone())
                );
            }
            (references, other) => panic!("references={references}: {other:?}"),
        }
    }
    r.server.shutdown().await;
}

#[tokio::test]
async fn a_corrupted_payload_fails_a_read_with_data_loss_naming_uri_and_hash() {
    let r = start_offloading().await;
    let s = name("doc");
    r.client
        .append(
            &s,
            ExpectedVersion::Any,
            vec![NewEvent::new("Doc", payload(200_000, 3))],
        )
        .await
        .unwrap();
    let reference = reference_of(&r, &s).await;
    corrupt(&r, &reference);

    let mut raw = StreamsClient::connect(url(&r)).await.unwrap();
    let mut pages = raw
        .read_stream(v1::ReadStreamRequest {
            stream: "doc".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let status = pages.message().await.unwrap_err();
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    let info = status.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.reason, reason::PAYLOAD_INTEGRITY_FAILED);
    assert_eq!(info.metadata["uri"], reference.uri);
    assert_eq!(
        info.metadata["content_hash"],
        reference.content_hash.to_hex()
    );
    let details = payload_details(&status).expect("PayloadRetrievalFailedDetails detail");
    assert_eq!(details.uri, reference.uri);
    assert_eq!(details.content_hash.as_ref(), &reference.content_hash.0);
    assert_eq!(details.original_size, 200_000);
    assert_eq!(details.failure, "integrity_failed");

    // Through the SDK: the typed error with the same details.
    let err = r
        .client
        .read_stream(&s, StreamStart::Edge, ReadDirection::Forwards, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::IntegrityFailed { details } if details.uri == reference.uri),
        "{err:?}"
    );
    let err = r
        .client
        .payload_get(reference.clone().into())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::IntegrityFailed { .. }), "{err:?}");

    // A missing object is NOT_FOUND.
    std::fs::remove_file(r.payload_file(&reference.content_hash)).unwrap();
    let err = r
        .client
        .read_stream(&s, StreamStart::Edge, ReadDirection::Forwards, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::PayloadRetrievalFailed { failure: PayloadFailure::NotFound, details }
                if details.content_hash == reference.content_hash
        ),
        "{err:?}"
    );
    r.server.shutdown().await;
}

#[tokio::test]
async fn a_dequeue_of_a_corrupted_message_dead_letters_it_with_the_details() {
    let r = start_offloading().await;
    let work = q("work");
    let work_dlq = q("work-dlq");
    r.client
        .create_queue(
            &work,
            QueueSettings {
                dead_letter_queue: Some(work_dlq.clone()),
                ..QueueSettings::default()
            },
        )
        .await
        .unwrap();
    let data = payload(300_000, 4);
    // The same bytes put directly: the same object, so its reference.
    let reference = r.client.payload_put(data.clone()).await.unwrap();
    r.client
        .enqueue(&work, NewMessage::new(data))
        .await
        .unwrap();
    corrupt(&r, &reference);

    let delivered = r.client.dequeue(&work, take(10)).await.unwrap();
    assert!(
        delivered.is_empty(),
        "a consumer never gets a payload that failed its check: {delivered:?}"
    );
    let dead = r.client.dequeue(&work_dlq, take(10)).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let d = &dead[0];
    assert!(
        d.data.is_empty(),
        "a dead letter's payload is not handed out"
    );
    let external = d.external.as_ref().expect("the reference is kept");
    assert_eq!(
        (&external.uri, external.content_hash),
        (&reference.uri, reference.content_hash)
    );
    let meta = &d.metadata;
    assert_eq!(meta[dead_letter_keys::URI], reference.uri);
    assert_eq!(
        meta[dead_letter_keys::CONTENT_HASH],
        reference.content_hash.to_hex()
    );
    assert_eq!(meta[dead_letter_keys::ORIGINAL_SIZE], "300000");
    assert_eq!(meta[dead_letter_keys::STORAGE_TYPE], "filesystem");
    assert!(
        !meta[dead_letter_keys::ERROR].is_empty(),
        "the retrieval error is recorded: {meta:?}"
    );
    assert_eq!(meta[ORIGINAL_STREAM_NAME], "work");
    r.server.shutdown().await;
}

#[tokio::test]
async fn a_subscription_skips_an_event_whose_payload_is_corrupt_and_dead_letters_it() {
    let r = start_offloading().await;
    let s = name("feed");
    r.client
        .append(
            &s,
            ExpectedVersion::Any,
            vec![
                NewEvent::new("Big", payload(150_000, 8)),
                NewEvent::new("Small", "ok"),
            ],
        )
        .await
        .unwrap();
    let reference = reference_of(&r, &s).await;
    corrupt(&r, &reference);
    let mut sub = r
        .client
        .subscribe(Position::START, &LogFilter::default())
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(&first, SubscriptionItem::Event(e) if e.event_type == "Small"),
        "the corrupt event is not delivered: {first:?}"
    );
    let dead = r.client.dequeue(&q("dlq"), take(10)).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].metadata[dead_letter_keys::URI], reference.uri);
    assert_eq!(dead[0].metadata[ORIGINAL_STREAM_NAME], "feed");
    assert!(dead[0].data.is_empty() && dead[0].external.is_some());
    r.server.shutdown().await;
}

#[tokio::test]
async fn put_get_and_stats_over_grpc() {
    let r = start_offloading().await;
    let data = payload(300 * 1024, 5);
    let reference = r.client.payload_put(data.clone()).await.unwrap();
    assert_eq!(reference.original_size, 300 * 1024);
    assert_eq!(
        r.client.payload_put(data.clone()).await.unwrap().uri,
        reference.uri,
        "a second put is a dedup hit"
    );
    for locator in [
        PayloadLocator::Reference(reference.clone()),
        PayloadLocator::Hash(reference.content_hash),
        PayloadLocator::Uri(reference.uri.clone()),
    ] {
        let fetched = r.client.payload_get(locator.clone()).await.unwrap();
        assert!(fetched.data == data, "{locator}");
        assert_eq!(fetched.reference.content_hash, reference.content_hash);
        assert_eq!(fetched.reference.original_size, 300 * 1024);
    }
    let stats = r.client.payload_stats().await.unwrap();
    assert_eq!(
        (stats.objects, stats.bytes, stats.storage_type),
        (1, 300 * 1024, PayloadStorageType::Filesystem)
    );

    let missing = "0".repeat(64).parse().unwrap();
    let err = r
        .client
        .payload_get(PayloadLocator::Hash(missing))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::PayloadRetrievalFailed {
                failure: PayloadFailure::NotFound,
                ..
            }
        ),
        "{err:?}"
    );
    let mut raw = PayloadsClient::connect(url(&r)).await.unwrap();
    let status = raw
        .get(v1::GetPayloadRequest {
            target: Some(v1::get_payload_request::Target::Uri("s3://b/x.txt".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("uri") && status.message().contains("s3://b/x.txt"),
        "{}",
        status.message()
    );
    r.server.shutdown().await;
}

#[tokio::test]
async fn payload_calls_fail_with_failed_precondition_when_offloading_is_off() {
    let r = start().await;
    let mut raw = PayloadsClient::connect(url(&r)).await.unwrap();
    let put = raw
        .put(v1::PutPayloadRequest {
            data: Bytes::from_static(b"x"),
        })
        .await
        .unwrap_err();
    let get = raw
        .get(v1::GetPayloadRequest {
            target: Some(v1::get_payload_request::Target::ContentHash(
                vec![0; 32].into(),
            )),
        })
        .await
        .unwrap_err();
    let stats = raw.stats(v1::PayloadStatsRequest {}).await.unwrap_err();
    let cleanup = raw
        .cleanup(v1::CleanupPayloadsRequest::default())
        .await
        .unwrap_err();
    for (call, status) in [
        ("put", put),
        ("get", get),
        ("stats", stats),
        ("cleanup", cleanup),
    ] {
        assert_eq!(status.code(), Code::FailedPrecondition, "{call}");
        assert!(
            status.message().contains("payload_offload.enabled"),
            "{call}: {}",
            status.message()
        );
        let info = status.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.reason, reason::PAYLOAD_OFFLOAD_DISABLED, "{call}");
    }
    let err = r.client.payload_stats().await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("payload_offload.enabled")),
        "{err:?}"
    );
    let addr = r.server.http_addr();
    for (status, body) in [
        support::http_get(addr, "/admin/payload-store/stats").await,
        support::http_post(addr, "/admin/payload-store/cleanup?age=1d").await,
    ] {
        assert_eq!(status, 409, "{body}");
        assert!(body.contains(reason::PAYLOAD_OFFLOAD_DISABLED), "{body}");
    }
    r.server.shutdown().await;
}

#[tokio::test]
async fn data_over_max_payload_bytes_is_refused_naming_the_limit() {
    let r = start_configured(|dir, config| {
        config.payload_offload = offloading_in(dir);
        config.limits.max_payload_bytes = 2 << 20;
    })
    .await;
    // Over the payload limit, within the gRPC message limit (the payload
    // limit + 1 MiB), so the server itself says what is wrong.
    let too_big = payload((2 << 20) + 300_000, 6);
    let err = r
        .client
        .append(
            &name("big"),
            ExpectedVersion::Any,
            vec![NewEvent::new("T", too_big.clone())],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("payload limit is 2097152 bytes")),
        "{err:?}"
    );
    let err = r
        .client
        .enqueue(&q("big"), NewMessage::new(too_big.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("payload limit is 2097152 bytes")),
        "{err:?}"
    );
    let err = r.client.payload_put(too_big).await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m)
            if m.contains("2097152") && m.contains("limits.max_payload_bytes")),
        "{err:?}"
    );
    assert_eq!(r.payload_files(), 0, "nothing was stored");
    assert_eq!(r.server.wharf().head(), Position(0), "nothing was written");
    // At the limit it goes through.
    r.client
        .append(
            &name("big"),
            ExpectedVersion::Any,
            vec![NewEvent::new("T", payload(2 << 20, 7))],
        )
        .await
        .unwrap();
    r.server.shutdown().await;
}

#[tokio::test]
async fn a_deleted_stream_is_gone_and_can_start_again() {
    let r = start_offloading().await;
    let s = name("gone");
    r.client
        .append(
            &s,
            ExpectedVersion::Any,
            vec![NewEvent::new("A", "1"), NewEvent::new("B", "2")],
        )
        .await
        .unwrap();
    let err = r
        .client
        .delete_stream(&s, ExpectedVersion::Exact(0))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongExpectedVersion {
                actual: Some(1),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        r.client
            .delete_stream(&s, ExpectedVersion::Exact(1))
            .await
            .unwrap(),
        2
    );
    let err = r
        .client
        .read_stream(&s, StreamStart::Edge, ReadDirection::Forwards, None)
        .await
        .unwrap_err();
    assert_eq!(err, Error::StreamNotFound(s.clone()));
    let err = r
        .client
        .delete_stream(&name("never"), ExpectedVersion::Any)
        .await
        .unwrap_err();
    assert_eq!(err, Error::StreamNotFound(name("never")));
    r.server.shutdown().await;
}
