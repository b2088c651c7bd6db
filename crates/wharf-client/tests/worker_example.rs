//! The worker example, run against a real server: it sends what it can,
//! nacks with a reason what it cannot, and stops when told.

use std::time::Duration;

use wharf_client::Client;
use wharf_core::{Config, Durability, NewMessage, QueueName, StorageConfig};
use wharf_server::Server;

#[allow(dead_code)]
#[path = "../examples/worker.rs"]
mod worker;

async fn start() -> (Server, Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        storage: StorageConfig::Embedded {
            path: dir.path().join("data"),
            durability: Durability::Relaxed,
        },
        ..Config::default()
    };
    config.server.grpc_listen = "127.0.0.1:0".parse().unwrap();
    config.server.http_listen = "127.0.0.1:0".parse().unwrap();
    let server = Server::start(&config).await.expect("server starts");
    let client = Client::connect(&format!("http://{}", server.grpc_addr()))
        .await
        .expect("client connects");
    (server, client, dir)
}

fn email(to: &str) -> NewMessage {
    NewMessage::new(format!(
        r#"{{"to":"{to}","subject":"Welcome!","body":"Hello"}}"#
    ))
    .with_content_type("application/json")
}

#[tokio::test]
async fn worker_acknowledges_sent_emails_and_nacks_failures_with_the_reason() {
    let (server, client, _dir) = start().await;
    let queue: QueueName = "email-queue".parse().unwrap();
    let messages = vec![
        email("ada@example.com"),
        email("not-an-address"),
        email("grace@example.com"),
        NewMessage::new("{oops"),
    ];
    client.enqueue_batch(&queue, messages).await.unwrap();

    let handled = tokio::time::timeout(
        Duration::from_secs(10),
        worker::run(&client, &queue, Some(4), std::future::pending()),
    )
    .await
    .expect("the worker handles four messages promptly")
    .unwrap();
    assert_eq!(handled, 4);

    let stats = client.queue_stats(&queue).await.unwrap();
    assert_eq!((stats.acks, stats.nacks), (2, 2), "{stats:?}");
    // The two failures wait out the worker's retry delay.
    assert_eq!((stats.visible, stats.in_flight, stats.delayed), (0, 0, 2));
    server.shutdown().await;
}

#[tokio::test]
async fn worker_stops_when_told_while_waiting_for_messages() {
    let (server, client, _dir) = start().await;
    let queue: QueueName = "idle".parse().unwrap();
    let stop = tokio::time::sleep(Duration::from_millis(200));
    let handled = tokio::time::timeout(
        Duration::from_secs(5),
        worker::run(&client, &queue, None, stop),
    )
    .await
    .expect("the worker stops well within its 20 s long poll")
    .unwrap();
    assert_eq!(handled, 0);
    server.shutdown().await;
}
