//! `wharf serve` on PostgreSQL, and what it does with a bad database: an
//! unreachable server, wrong credentials, a schema newer than the binary,
//! and a connection lost mid-run (requests fail with UNAVAILABLE, the
//! server recovers when the database returns, nothing acknowledged is lost).
//!
//! Each test works in a schema of its own on the local PostgreSQL
//! (`WHARF_TEST_POSTGRES_URL`), dropped afterwards.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Server, postgres_serve_command, run, wharf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use wharf_client::Client;
use wharf_core::{
    DequeueOptions, Error, ExpectedVersion, NewEvent, NewMessage, QueueName, ReadDirection,
    StreamName, StreamStart,
};
use wharf_postgres::testing::{self, TestSchema};

/// How long the database may stay away in the connection-loss test, and
/// the server take to notice it is back.
const RECOVERY: Duration = Duration::from_secs(20);

fn with_port(url: &str, port: u16) -> String {
    // The test URL is postgres://user@127.0.0.1:5432/db; swap the port.
    url.replacen(":5432/", &format!(":{port}/"), 1)
}

#[test]
fn check_config_connects_and_reports_the_schema_version_without_creating_it() {
    let schema = TestSchema::new();
    let mut cmd = postgres_serve_command(&testing::url(), schema.name());
    cmd.arg("--check-config");
    let out = run(cmd, None);
    let lines = out.lines();
    assert_eq!(lines.len(), 1, "{out:#?}");
    assert!(lines[0].starts_with("config ok"), "{out:#?}");
    assert!(
        lines[0].contains(&format!("schema `{}` is new", schema.name())),
        "{out:#?}"
    );

    // A server creates it; the check then finds it current.
    let server = Server::start_postgres(&testing::url(), schema.name(), &[]);
    drop(server);
    let mut cmd = postgres_serve_command(&testing::url(), schema.name());
    cmd.args(["--check-config"]);
    let out = run(cmd, None);
    assert!(out.lines()[0].contains("(current)"), "{out:#?}");

    let doc = run(json_check(&testing::url(), schema.name()), None).json();
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["config"]["storage"]["type"], "postgres");
}

/// `wharf --json serve --check-config` on PostgreSQL.
fn json_check(url: &str, schema: &str) -> std::process::Command {
    let mut cmd = wharf();
    for (k, v) in postgres_serve_command(url, schema).get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd.args(["--json", "serve", "--check-config"]);
    cmd
}

#[test]
fn check_config_never_prints_the_password() {
    let schema = TestSchema::new();
    let url = testing::url().replacen("postgres@", "postgres:s3cret-pw@", 1);
    let out = run(json_check(&url, schema.name()), None);
    let text = format!("{out:?}");
    assert!(!text.contains("s3cret-pw"), "{text}");
    assert_eq!(
        out.json()["config"]["storage"]["url"]
            .as_str()
            .map(|u| u.contains("***")),
        Some(true),
        "{text}"
    );
}

#[test]
fn an_unreachable_database_fails_the_start_with_its_address() {
    let schema = TestSchema::new();
    // Port 1 on loopback: nothing listens, the connection is refused.
    let url = with_port(&testing::url(), 1);
    let started = Instant::now();
    let out = run(postgres_serve_command(&url, schema.name()), None);
    out.assert_error(1, &["127.0.0.1:1", "unreachable"]);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "fails promptly"
    );

    let mut cmd = postgres_serve_command(&url, schema.name());
    cmd.arg("--check-config");
    // The check reports the same, as "unavailable".
    run(cmd, None).assert_error(5, &["127.0.0.1:1", "unreachable"]);
}

#[test]
fn wrong_credentials_fail_the_start_naming_the_user() {
    let schema = TestSchema::new();
    let url = testing::url().replacen("postgres@", "wharf_no_such_role@", 1);
    let out = run(postgres_serve_command(&url, schema.name()), None);
    out.assert_error(1, &["refused the credentials", "wharf_no_such_role"]);
    let mut cmd = postgres_serve_command(&url, schema.name());
    cmd.arg("--check-config");
    run(cmd, None).assert_error(1, &["refused the credentials", "wharf_no_such_role"]);
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_is_refused_and_left_alone() {
    let schema = TestSchema::new();
    let name = schema.name().to_owned();
    let (client, connection) = tokio_postgres::connect(&testing::url(), tokio_postgres::NoTls)
        .await
        .expect("test PostgreSQL");
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "CREATE SCHEMA \"{name}\";
             CREATE TABLE \"{name}\".wharf_migrations (
                 version integer PRIMARY KEY, name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO \"{name}\".wharf_migrations (version, name) VALUES (1, 'event log'), (999, 'from the future');"
        ))
        .await
        .expect("a schema from a newer Wharf");
    let out = tokio::task::spawn_blocking({
        let name = name.clone();
        move || run(postgres_serve_command(&testing::url(), &name), None)
    })
    .await
    .unwrap();
    out.assert_error(1, &["version 999", "newer", &name]);
    let mut cmd = postgres_serve_command(&testing::url(), &name);
    cmd.arg("--check-config");
    let out = tokio::task::spawn_blocking(move || run(cmd, None))
        .await
        .unwrap();
    out.assert_error(1, &["version 999", "newer"]);
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 1, "nothing was created in the newer schema");
}

/// A TCP proxy in front of PostgreSQL that can cut every connection and
/// refuse new ones, as a database that goes away would.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let (up, links) = (up.clone(), links.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        // Refused: closed at once.
                        drop(inbound);
                        continue;
                    }
                    let link = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    links.lock().unwrap().push(link);
                }
            }
        });
        Self {
            port,
            up,
            links,
            accept,
        }
    }

    /// Cuts every open connection and refuses new ones.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_database_fails_requests_as_unavailable_and_the_server_recovers() {
    let schema = TestSchema::new();
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = with_port(&testing::url(), proxy.port);
    let name = schema.name().to_owned();
    let server = tokio::task::spawn_blocking(move || {
        Server::start_postgres(&url, &name, &[("WHARF_STORAGE__CONNECT_TIMEOUT", "2s")])
    })
    .await
    .unwrap();
    let client = Client::connect(&server.url()).await.expect("client");
    let queue: QueueName = "orders".parse().unwrap();
    let stream: StreamName = "ledger".parse().unwrap();
    for i in 0..3 {
        client
            .enqueue(&queue, NewMessage::new(format!("kept-{i}")))
            .await
            .expect("enqueue before the outage");
    }
    client
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![NewEvent::new("Posted", "kept")],
        )
        .await
        .expect("append before the outage");

    proxy.cut();
    let no_wait = DequeueOptions {
        max_messages: 10,
        ..DequeueOptions::default()
    };
    let failures = [
        client
            .enqueue(&queue, NewMessage::new("during"))
            .await
            .map(drop),
        client.dequeue(&queue, no_wait).await.map(drop),
        client
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![NewEvent::new("Posted", "during")],
            )
            .await
            .map(drop),
        client
            .read_stream(&stream, StreamStart::Edge, ReadDirection::Forwards, None)
            .await
            .map(drop),
    ];
    for (i, failure) in failures.into_iter().enumerate() {
        match failure {
            Err(Error::Unavailable(message)) => {
                assert!(message.contains("PostgreSQL"), "request {i}: {message}");
            }
            other => panic!("request {i} during the outage: {other:?}"),
        }
    }

    proxy.restore();
    let deadline = Instant::now() + RECOVERY;
    let delivered = loop {
        match client.dequeue(&queue, no_wait).await {
            Ok(d) if !d.is_empty() => break d,
            Ok(_) => panic!("the acknowledged messages are gone after the outage"),
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "not recovered within {RECOVERY:?}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let mut kept: Vec<String> = delivered
        .iter()
        .map(|d| String::from_utf8_lossy(&d.data).into_owned())
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        ["kept-0", "kept-1", "kept-2"],
        "nothing acknowledged was lost"
    );
    for d in &delivered {
        client
            .ack(&queue, &d.receipt)
            .await
            .expect("ack after recovery");
    }
    let events = client
        .read_stream(&stream, StreamStart::Edge, ReadDirection::Forwards, None)
        .await
        .expect("read after recovery");
    let datas: Vec<&[u8]> = events.iter().map(|e| e.data.as_ref()).collect();
    assert_eq!(
        datas,
        [b"kept".as_slice()],
        "the refused append left nothing"
    );
    drop(server);
}
