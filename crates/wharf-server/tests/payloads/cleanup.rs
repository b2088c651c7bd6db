//! Cleaning up the payload store (HTTP admin and gRPC) and its metrics.

use std::time::Duration;

use serde_json::{Value, json};
use wharf_core::{ExpectedVersion, NewEvent, NewMessage, ReadDirection, StreamStart};

use super::{name, payload, q, reference_of, take};
use crate::support::{http_get, http_post, start_offloading};

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn http_cleanup_deletes_unreferenced_payloads_and_keeps_referenced_ones() {
    let r = start_offloading().await;
    let size = 100_000;
    let (gone, kept) = (name("gone"), name("kept"));
    r.client
        .append(
            &gone,
            ExpectedVersion::Any,
            vec![NewEvent::new("T", payload(size, 11))],
        )
        .await
        .unwrap();
    r.client
        .append(
            &kept,
            ExpectedVersion::Any,
            vec![NewEvent::new("T", payload(size, 12))],
        )
        .await
        .unwrap();
    let kept_ref = reference_of(&r, &kept).await;
    let jobs = q("jobs");
    r.client
        .enqueue(&jobs, NewMessage::new(payload(size, 13)))
        .await
        .unwrap();
    let delivered = r.client.dequeue(&jobs, take(1)).await.unwrap();
    // The deleted stream's and the acknowledged message's payloads are now
    // unreferenced.
    r.client.ack(&jobs, &delivered[0].receipt).await.unwrap();
    assert_eq!(
        r.client
            .delete_stream(&gone, ExpectedVersion::Any)
            .await
            .unwrap(),
        1
    );
    assert_eq!(r.payload_files(), 3);
    let addr = r.server.http_addr();

    let (status, body) = http_post(addr, "/admin/payload-store/cleanup?age=0s&dry_run=true").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body),
        json!({"scanned": 3, "deleted": 2, "bytes_freed": 2 * size, "kept_referenced": 1, "dry_run": true})
    );
    assert_eq!(r.payload_files(), 3, "a dry run deletes nothing");

    let (status, body) = http_post(addr, "/admin/payload-store/cleanup?age=0s").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body),
        json!({"scanned": 3, "deleted": 2, "bytes_freed": 2 * size, "kept_referenced": 1, "dry_run": false})
    );
    assert_eq!(r.payload_files(), 1);
    assert!(r.payload_file(&kept_ref.content_hash).exists());

    // Nothing is a week old: nothing is even considered.
    let (status, body) = http_post(addr, "/admin/payload-store/cleanup?age=7d").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body),
        json!({"scanned": 1, "deleted": 0, "bytes_freed": 0, "kept_referenced": 0, "dry_run": false})
    );
    let events = r
        .client
        .read_stream(&kept, StreamStart::Edge, ReadDirection::Forwards, None)
        .await
        .unwrap();
    assert!(
        events[0].data == payload(size, 12),
        "a referenced payload survives"
    );

    let (status, body) = http_get(addr, "/admin/payload-store/stats").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body),
        json!({"objects": 1, "bytes": size, "storage_type": "filesystem"})
    );
    r.server.shutdown().await;
}

#[tokio::test]
async fn http_cleanup_refuses_a_malformed_age_naming_it() {
    let r = start_offloading().await;
    r.client.payload_put(payload(100_000, 14)).await.unwrap();
    let addr = r.server.http_addr();
    let (status, body) = http_post(addr, "/admin/payload-store/cleanup?age=banana").await;
    assert_eq!(status, 400, "{body}");
    let error = &parse(&body)["error"];
    assert_eq!(error["reason"], "INVALID_ARGUMENT");
    assert_eq!(
        error["metadata"],
        json!({"parameter": "age", "value": "banana"})
    );
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("`age`") && message.contains("`banana`"),
        "{message}"
    );
    for (path, parameter) in [
        ("/admin/payload-store/cleanup", "age"),
        (
            "/admin/payload-store/cleanup?age=1d&dry_run=maybe",
            "dry_run",
        ),
        ("/admin/payload-store/cleanup?older_than=1d", "older_than"),
    ] {
        let (status, body) = http_post(addr, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(
            parse(&body)["error"]["metadata"]["parameter"],
            parameter,
            "{path}"
        );
    }
    assert_eq!(r.payload_files(), 1, "refused requests delete nothing");
    r.server.shutdown().await;
}

#[tokio::test]
async fn grpc_cleanup_reports_a_summary_and_a_dry_run_deletes_nothing() {
    let r = start_offloading().await;
    for seed in 0..3 {
        r.client
            .payload_put(payload(70_000, 20 + seed))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let dry = r
        .client
        .payload_cleanup(Duration::ZERO, true, |p| seen.push(*p))
        .await
        .unwrap();
    assert_eq!(
        (
            dry.scanned,
            dry.deleted,
            dry.bytes_freed,
            dry.kept_referenced,
            dry.dry_run
        ),
        (3, 3, 210_000, 0, true)
    );
    assert!(seen.iter().all(|p| p.scanned <= 3 && p.dry_run), "{seen:?}");
    assert_eq!(r.payload_files(), 3);
    let done = r
        .client
        .payload_cleanup(Duration::ZERO, false, |_| {})
        .await
        .unwrap();
    assert_eq!((done.deleted, done.dry_run), (3, false));
    assert_eq!(r.payload_files(), 0);
    r.server.shutdown().await;
}

/// The value of the series line that starts with `prefix`.
fn value(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `{prefix}` series in\n{metrics}"))
}

#[tokio::test]
async fn metrics_show_the_payload_store_series() {
    let r = start_offloading().await;
    let data = payload(90_000, 30);
    let reference = r.client.payload_put(data.clone()).await.unwrap();
    r.client.payload_get(reference.into()).await.unwrap();
    let missing = "1".repeat(64).parse().unwrap();
    let _ = r
        .client
        .payload_get(wharf_client::PayloadLocator::Reference(
            wharf_core::PayloadReference {
                content_hash: missing,
                uri: format!("file:///nowhere/{missing}.bin"),
                ..r.client.payload_put(data).await.unwrap()
            },
        ))
        .await
        .unwrap_err();
    r.client
        .payload_cleanup(Duration::ZERO, false, |_| {})
        .await
        .unwrap();

    let (status, metrics) = http_get(r.server.http_addr(), "/metrics").await;
    assert_eq!(status, 200);
    let store = "{store=\"filesystem\"}";
    assert!(value(&metrics, &format!("payload_store_put_total{store}")) >= 2.0);
    assert!(value(&metrics, &format!("payload_store_put_bytes_total{store}")) >= 90_000.0);
    assert!(value(&metrics, &format!("payload_store_get_total{store}")) >= 2.0);
    assert!(
        value(
            &metrics,
            "payload_store_get_errors_total{store=\"filesystem\",failure=\"not_found\"}"
        ) >= 1.0
    );
    assert!(
        value(
            &metrics,
            &format!("payload_store_cleanup_deleted_total{store}")
        ) >= 1.0
    );
    for line in [
        "# TYPE payload_store_put_total counter",
        "# TYPE payload_store_get_seconds histogram",
        "# TYPE payload_store_put_seconds histogram",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in\n{metrics}"
        );
    }
    assert!(
        metrics.contains("payload_store_get_seconds_bucket{store=\"filesystem\",le=\"0.01\"}"),
        "{metrics}"
    );
    r.server.shutdown().await;
}
