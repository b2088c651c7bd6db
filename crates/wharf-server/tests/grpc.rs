//! The gRPC API end to end: a real server on loopback, the real client.

mod support;

use std::time::Duration;

use futures::StreamExt;
use support::{http_get, start, start_with};
use tonic::Code;
use tonic_types::StatusExt;
use wharf_client::SubscriptionItem;
use wharf_core::{
    AppendOutcome, Config, Durability, Error, ExpectedVersion, LogFilter, NewEvent, Position,
    ReadDirection, StorageConfig, StreamName, StreamStart, Timestamp,
};
use wharf_proto::v1::{self, streams_client::StreamsClient};

fn name(s: &str) -> StreamName {
    s.parse().unwrap()
}

#[tokio::test]
async fn append_and_read_round_trip_over_grpc() {
    let r = start().await;
    let event = NewEvent::new("Placed", vec![1u8, 2, 3]).with_metadata("k", "v");
    let outcome = r
        .client
        .append(&name("o-1"), ExpectedVersion::NoStream, vec![event.clone()])
        .await
        .unwrap();
    assert!(matches!(outcome, AppendOutcome::Appended(a) if a.first_version == 0));
    let again = r
        .client
        .append(&name("o-1"), ExpectedVersion::NoStream, vec![event.clone()])
        .await
        .unwrap();
    assert!(matches!(again, AppendOutcome::Duplicate(_)), "{again:?}");
    let read = r
        .client
        .read_stream(
            &name("o-1"),
            StreamStart::Edge,
            ReadDirection::Forwards,
            None,
        )
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].id, event.id);
    assert_eq!(read[0].data, event.data);
    assert_eq!(read[0].metadata, event.metadata);
    r.server.shutdown().await;
}

#[tokio::test]
async fn wrong_expected_version_carries_expected_and_actual_in_the_status_detail() {
    let r = start().await;
    r.client
        .append(
            &name("s"),
            ExpectedVersion::Any,
            vec![NewEvent::new("T", "a")],
        )
        .await
        .unwrap();
    // Through the SDK: the typed error.
    let err = r
        .client
        .append(
            &name("s"),
            ExpectedVersion::Exact(5),
            vec![NewEvent::new("T", "b")],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::WrongExpectedVersion {
            stream: name("s"),
            expected: "5".into(),
            actual: Some(0)
        }
    );
    // On the wire: the status code and the machine-readable detail.
    let mut raw = StreamsClient::connect(format!("http://{}", r.server.grpc_addr()))
        .await
        .unwrap();
    let status = raw
        .append(v1::AppendRequest {
            stream: "s".into(),
            expected_version: Some(ExpectedVersion::NoStream.into()),
            events: vec![NewEvent::new("T", "c").into()],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo detail");
    assert_eq!(info.reason, "WRONG_EXPECTED_VERSION");
    assert_eq!(info.metadata["expected"], "no-stream");
    assert_eq!(info.metadata["actual"], "0");
    r.server.shutdown().await;
}

#[tokio::test]
async fn invalid_stream_names_are_rejected_naming_the_rule() {
    let r = start().await;
    let mut raw = StreamsClient::connect(format!("http://{}", r.server.grpc_addr()))
        .await
        .unwrap();
    for (bad, rule) in [
        (String::new(), "empty"),
        ("x".repeat(257), "257 bytes"),
        ("a\u{7}b".to_owned(), "control character"),
        ("$all".to_owned(), "reserved"),
    ] {
        let status = raw
            .append(v1::AppendRequest {
                stream: bad.clone(),
                expected_version: None,
                events: vec![NewEvent::new("T", "x").into()],
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
        assert!(
            status.message().contains(rule),
            "{bad:?}: {}",
            status.message()
        );
    }
    assert_eq!(r.server.wharf().head(), Position(0), "nothing was written");
    r.server.shutdown().await;
}

#[tokio::test]
async fn oversized_event_and_batch_are_rejected_and_write_nothing() {
    let limits = wharf_core::Limits {
        max_event_bytes: 1024,
        max_batch_events: 10,
        max_batch_bytes: 4096,
        ..wharf_core::Limits::default()
    };
    let r = start_with(limits).await;
    let err = r
        .client
        .append(
            &name("big"),
            ExpectedVersion::Any,
            vec![NewEvent::new("T", vec![0u8; 2000])],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("inline limit is 1024")),
        "{err:?}"
    );
    let eleven: Vec<_> = (0..11).map(|_| NewEvent::new("T", "x")).collect();
    let err = r
        .client
        .append(&name("big"), ExpectedVersion::Any, eleven)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("11 events")),
        "{err:?}"
    );
    let heavy: Vec<_> = (0..5).map(|_| NewEvent::new("T", vec![0u8; 900])).collect();
    let err = r
        .client
        .append(&name("big"), ExpectedVersion::Any, heavy)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("limit is 4096")),
        "{err:?}"
    );
    let missing = r
        .client
        .read_stream(
            &name("big"),
            StreamStart::Edge,
            ReadDirection::Forwards,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(missing, Error::StreamNotFound(name("big")));
    r.server.shutdown().await;
}

#[tokio::test]
async fn read_all_pages_through_many_events_in_order() {
    let r = start().await;
    for i in 0..30 {
        let batch: Vec<_> = (0..100)
            .map(|j| NewEvent::new(if j % 2 == 0 { "Even" } else { "Odd" }, vec![i as u8; 2048]))
            .collect();
        r.client
            .append(&name(&format!("p-{}", i % 4)), ExpectedVersion::Any, batch)
            .await
            .unwrap();
    }
    let mut pages = r
        .client
        .read_all(Position::START, &LogFilter::default(), None)
        .await
        .unwrap();
    let mut positions = Vec::new();
    while let Some(page) = pages.next().await {
        positions.extend(page.unwrap().into_iter().map(|e| e.position.0));
    }
    assert_eq!(positions, (0..3000).collect::<Vec<_>>());
    let filter = LogFilter {
        stream_prefix: Some("p-1".into()),
        event_types: vec!["Odd".into()],
    };
    let mut pages = r
        .client
        .read_all(Position::START, &filter, Some(120))
        .await
        .unwrap();
    let mut n = 0;
    while let Some(page) = pages.next().await {
        for e in page.unwrap() {
            assert_eq!((e.stream.as_str(), e.event_type.as_str()), ("p-1", "Odd"));
            n += 1;
        }
    }
    assert_eq!(n, 120);
    r.server.shutdown().await;
}

#[tokio::test]
async fn subscription_catches_up_then_receives_pushed_events() {
    let r = start().await;
    r.client
        .append(
            &name("live"),
            ExpectedVersion::Any,
            vec![NewEvent::new("Old", "1")],
        )
        .await
        .unwrap();
    let mut sub = r
        .client
        .subscribe(Position::START, &LogFilter::default())
        .await
        .unwrap();
    assert!(matches!(next(&mut sub).await, SubscriptionItem::Event(e) if e.event_type == "Old"));
    assert_eq!(next(&mut sub).await, SubscriptionItem::CaughtUp);
    r.client
        .append(
            &name("live"),
            ExpectedVersion::Any,
            vec![NewEvent::new("New", "2")],
        )
        .await
        .unwrap();
    assert!(matches!(next(&mut sub).await, SubscriptionItem::Event(e) if e.event_type == "New"));
    // Shutdown ends live subscriptions instead of waiting on them forever.
    tokio::time::timeout(Duration::from_secs(10), r.server.shutdown())
        .await
        .expect("shutdown completes with a live subscription open");
}

#[tokio::test]
async fn position_at_over_grpc() {
    let r = start().await;
    let before = Timestamp::from_system_time(std::time::SystemTime::now());
    assert_eq!(r.client.position_at(before).await.unwrap(), None);
    let a = r
        .client
        .append(
            &name("t"),
            ExpectedVersion::Any,
            vec![NewEvent::new("T", "x")],
        )
        .await
        .unwrap();
    assert_eq!(
        r.client.position_at(before).await.unwrap(),
        Some(a.result().first_position)
    );
    r.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_keeps_every_acknowledged_append() {
    let r = start().await;
    let appenders: Vec<_> = (0..32)
        .map(|i| {
            let client = r.client.clone();
            tokio::spawn(async move {
                let stream = name(&format!("g-{i}"));
                let mut acknowledged = 0u64;
                // Appends until the server stops answering; bounded by the
                // shutdown below, and by a hard cap.
                while acknowledged < 100_000 {
                    let event = NewEvent::new("T", acknowledged.to_string());
                    match client
                        .append(&stream, ExpectedVersion::Any, vec![event])
                        .await
                    {
                        Ok(_) => acknowledged += 1,
                        Err(Error::Unavailable(_)) => break,
                        Err(e) => panic!("unexpected error under shutdown: {e:?}"),
                    }
                }
                (stream, acknowledged)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::time::timeout(Duration::from_secs(10), r.server.shutdown())
        .await
        .expect("shutdown finishes while clients keep appending");
    let config = Config {
        storage: StorageConfig::Embedded {
            path: r._dir.path().join("data"),
            durability: Durability::Relaxed,
        },
        ..Config::default()
    };
    let reopened = wharf::Wharf::open(&config).await.expect("storage reopens");
    let mut total = 0;
    for a in appenders {
        let (stream, acknowledged) = tokio::time::timeout(Duration::from_secs(10), a)
            .await
            .expect("appender stops once the server is gone")
            .unwrap();
        total += acknowledged;
        let stored = reopened
            .stream_version(&stream)
            .await
            .unwrap()
            .map_or(0, |v| v + 1);
        assert!(
            stored >= acknowledged,
            "{stream}: {acknowledged} acknowledged but {stored} stored"
        );
    }
    assert!(total > 0, "the load ran before shutdown");
    reopened.close().await;
}

#[tokio::test]
async fn admin_api_serves_health_readiness_and_metrics() {
    let r = start().await;
    r.client
        .append(
            &name("m"),
            ExpectedVersion::Any,
            vec![NewEvent::new("T", "x")],
        )
        .await
        .unwrap();
    let addr = r.server.http_addr();
    let (status, _) = http_get(addr, "/healthz").await;
    assert_eq!(status, 200);
    let (status, body) = http_get(addr, "/readyz").await;
    assert_eq!((status, body.trim()), (200, "ready"));
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("wharf_log_head_position"), "{body}");
    assert!(body.contains("wharf_events_appended_total"), "{body}");
    r.server.shutdown().await;
}

async fn next(sub: &mut wharf_client::BoxStream<SubscriptionItem>) -> SubscriptionItem {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("an item within 5 s")
        .expect("stream open")
        .expect("no error")
}
