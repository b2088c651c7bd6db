//! The HTTP admin API and `/metrics` report the queues.

use std::time::Duration;

use wharf_core::NewMessage;

use super::{q, start, take};
use crate::support::http_get;

#[tokio::test]
async fn admin_api_and_metrics_show_the_queues() {
    let r = start().await;
    let jobs = q("jobs");
    r.client
        .enqueue_batch(&jobs, (0..4).map(|i| NewMessage::new(vec![i])).collect())
        .await
        .unwrap();
    let ds = r.client.dequeue(&jobs, take(2)).await.unwrap();
    r.client.ack(&jobs, &ds[0].receipt).await.unwrap();
    r.client
        .nack(&jobs, &ds[1].receipt, Duration::from_secs(600), None)
        .await
        .unwrap();
    r.client.dequeue(&jobs, take(1)).await.unwrap();
    // Now: 1 visible, 1 in flight, 1 delayed; 3 deliveries, 1 ack, 1 nack.
    let addr = r.server.http_addr();

    let (status, body) = http_get(addr, "/admin/queues").await;
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let queue = &list[0];
    assert_eq!(queue["name"], "jobs");
    assert_eq!(queue["settings"]["max_delivery_attempts"], 5);
    assert_eq!(queue["settings"]["dead_letter_queue"], "dlq");
    assert_eq!(queue["settings"]["visibility_timeout"], "30s");
    let stats = &queue["stats"];
    for (key, want) in [
        ("visible", 1),
        ("in_flight", 1),
        ("delayed", 1),
        ("depth", 3),
        ("dead_letters", 0),
        ("deliveries", 3),
        ("acks", 1),
        ("nacks", 1),
        ("dead_lettered", 0),
    ] {
        assert_eq!(stats[key], want, "{key} in {stats}");
    }
    assert!(
        stats["oldest_age_seconds"]
            .as_f64()
            .is_some_and(|a| a >= 0.0),
        "{stats}"
    );

    let (status, one) = http_get(addr, "/admin/queues/jobs").await;
    assert_eq!(status, 200);
    let one: serde_json::Value = serde_json::from_str(&one).unwrap();
    assert_eq!(one["name"], "jobs");
    assert_eq!(one["stats"]["depth"], 3);

    let (status, missing) = http_get(addr, "/admin/queues/nope").await;
    assert_eq!(status, 404);
    let missing: serde_json::Value = serde_json::from_str(&missing).unwrap();
    assert_eq!(missing["error"]["reason"], "QUEUE_NOT_FOUND");
    assert_eq!(missing["error"]["message"], "queue `nope` not found");
    assert_eq!(missing["error"]["metadata"]["queue"], "nope");
    let (status, bad) = http_get(addr, "/admin/queues/%24bad").await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad.contains("INVALID_NAME"), "{bad}");

    let (status, metrics) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "wharf_queue_depth{queue=\"jobs\"} 3",
        "wharf_queue_visible{queue=\"jobs\"} 1",
        "wharf_queue_in_flight{queue=\"jobs\"} 1",
        "wharf_queue_delayed{queue=\"jobs\"} 1",
        "wharf_queue_dead_letters{queue=\"jobs\"} 0",
        "wharf_queue_deliveries_total{queue=\"jobs\"} 3",
        "wharf_queue_acks_total{queue=\"jobs\"} 1",
        "wharf_queue_nacks_total{queue=\"jobs\"} 1",
        "wharf_queue_dead_lettered_total{queue=\"jobs\"} 0",
        "# TYPE wharf_queue_acks_total counter",
        "# TYPE wharf_queue_depth gauge",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in\n{metrics}"
        );
    }
    assert!(
        metrics.contains("wharf_queue_oldest_age_seconds{queue=\"jobs\"} "),
        "{metrics}"
    );

    r.client.delete_queue(&jobs).await.unwrap();
    let (_, metrics) = http_get(addr, "/metrics").await;
    assert!(
        !metrics.contains("queue=\"jobs\""),
        "a deleted queue leaves no series:\n{metrics}"
    );
    r.server.shutdown().await;
}
