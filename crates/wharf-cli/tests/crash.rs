//! Crash safety of the real server: SIGKILL under concurrent appends, at
//! several points, then restart and check what was acknowledged.
//!
//! Every append acknowledged before a kill must be present after restart at
//! the positions and versions it was acknowledged with, and every batch must
//! be visible whole or not at all.

mod support;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use support::ChildGuard;
use wharf_client::Client;
use wharf_core::{AppendResult, Error, ExpectedVersion, LogFilter, NewEvent, Position};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

struct ServerProcess {
    child: ChildGuard,
    url: String,
}

impl ServerProcess {
    async fn start(data: &Path) -> Self {
        let (grpc, http) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .arg("serve")
            .env("WHARF_STORAGE__PATH", data)
            .env("WHARF_SERVER__GRPC_LISTEN", format!("127.0.0.1:{grpc}"))
            .env("WHARF_SERVER__HTTP_LISTEN", format!("127.0.0.1:{http}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("wharf serve starts");
        let url = format!("http://127.0.0.1:{grpc}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Client::connect(&url).await.is_err() {
            assert!(Instant::now() < deadline, "server did not come up at {url}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child: ChildGuard(child),
            url,
        }
    }

    fn kill(self) {
        self.child.kill();
    }
}

/// What a client saw acknowledged.
struct Acked {
    ids: Vec<uuid::Uuid>,
    result: AppendResult,
}

/// Appends batches of 1–20 events until the server dies; returns what was
/// acknowledged. Half the clients share one stream, so versions interleave.
async fn append_until_killed(
    url: String,
    client_no: usize,
    round: usize,
    appended: Arc<AtomicUsize>,
) -> Vec<Acked> {
    let client = Client::connect(&url).await.expect("connect");
    let stream = if client_no.is_multiple_of(2) {
        format!("shared-{round}")
    } else {
        format!("own-{round}-{client_no}")
    };
    let stream = stream.parse().expect("valid name");
    let mut acked = Vec::new();
    for batch_no in 0..100_000usize {
        let size = 1 + (batch_no * 7 + client_no) % 20;
        let batch_id = format!("{round}-{client_no}-{batch_no}");
        let events: Vec<NewEvent> = (0..size)
            .map(|i| {
                NewEvent::new("Crash", vec![b'x'; 200 + i])
                    .with_metadata("batch", batch_id.clone())
                    .with_metadata("size", size.to_string())
            })
            .collect();
        let ids = events.iter().map(|e| e.id).collect();
        match client.append(&stream, ExpectedVersion::Any, events).await {
            Ok(outcome) => {
                appended.fetch_add(1, Ordering::SeqCst);
                acked.push(Acked {
                    ids,
                    result: outcome.result(),
                })
            }
            Err(Error::Unavailable(_)) => break,
            Err(e) => panic!("unexpected append error: {e}"),
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_no_acknowledged_append_and_shows_no_partial_batch() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let mut acknowledged: Vec<Acked> = Vec::new();
    // Kill points, in milliseconds after the round's first acknowledged
    // append: early, middle, late.
    for (round, kill_after_ms) in [40u64, 150, 320, 75, 500].into_iter().enumerate() {
        let server = ServerProcess::start(&data).await;
        let appended = Arc::new(AtomicUsize::new(0));
        let clients: Vec<_> = (0..8)
            .map(|c| {
                tokio::spawn(append_until_killed(
                    server.url.clone(),
                    c,
                    round,
                    appended.clone(),
                ))
            })
            .collect();
        let started = Instant::now();
        while appended.load(Ordering::SeqCst) == 0 && started.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
        server.kill();
        let before = acknowledged.len();
        for c in clients {
            let acked = tokio::time::timeout(Duration::from_secs(20), c)
                .await
                .expect("clients notice the dead server")
                .expect("client task");
            acknowledged.extend(acked);
        }
        let this_round = acknowledged.len() - before;
        eprintln!(
            "round {round}: SIGKILL {kill_after_ms} ms after the first append, \
             {this_round} appends acknowledged"
        );
        assert!(
            this_round > 0,
            "round {round} killed the server before any append"
        );
        verify(&data, &acknowledged, round).await;
    }
    assert!(
        acknowledged.len() > 100,
        "the load was real: {} acknowledged appends",
        acknowledged.len()
    );
}

async fn verify(data: &Path, acknowledged: &[Acked], round: usize) {
    let server = ServerProcess::start(data).await;
    let client = Client::connect(&server.url).await.expect("reconnect");
    let mut by_position = HashMap::new();
    let mut batches: HashMap<String, (usize, usize)> = HashMap::new();
    let mut pages = client
        .read_all(Position::START, &LogFilter::default(), None)
        .await
        .expect("read the log");
    let mut expected_position = 0;
    while let Some(page) = pages.next().await {
        for e in page.expect("page") {
            assert_eq!(e.position.0, expected_position, "positions are gapless");
            expected_position += 1;
            let size: usize = e.metadata["size"].parse().expect("size");
            let seen = batches
                .entry(e.metadata["batch"].clone())
                .or_insert((size, 0));
            seen.1 += 1;
            by_position.insert(e.position.0, (e.id, e.stream_version));
        }
    }
    for (batch, (size, seen)) in &batches {
        assert_eq!(
            size, seen,
            "round {round}: batch {batch} is partially visible"
        );
    }
    for a in acknowledged {
        for (i, id) in a.ids.iter().enumerate() {
            let position = a.result.first_position.0 + i as u64;
            assert_eq!(
                by_position.get(&position),
                Some(&(*id, a.result.first_version + i as u64)),
                "round {round}: acknowledged event at position {position} lost or moved"
            );
        }
    }
    server.kill();
}
