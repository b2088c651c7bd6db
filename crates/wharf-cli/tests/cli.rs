//! The `wharf` binary end to end: real processes against a real server.
//!
//! Each test starts its own `wharf serve` on port 0 in a fresh data
//! directory and learns the bound addresses from the server's "serving"
//! line, so parallel tests never race for a port. Every wait is bounded.

mod support;

use std::process::Stdio;
use std::sync::mpsc::Receiver;
use std::thread;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use support::{
    ChildGuard, NOWHERE, SERVER_DEADLINE, Server, collect, line_channel, run, serve_command, w,
    wharf, wharf_offline,
};

/// Starts a long-running command (a tail) with its stdout delivered line by
/// line and its stderr collected, so a test can read as it goes.
fn spawn_following(
    server: &Server,
    args: &str,
) -> (ChildGuard, Receiver<String>, thread::JoinHandle<String>) {
    let mut child = ChildGuard(
        server
            .command(&w(args))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the command"),
    );
    let lines = line_channel(child.0.stdout.take().expect("stdout is piped"));
    let stderr = collect(child.0.stderr.take().expect("stderr is piped"));
    (child, lines, stderr)
}

impl Server {
    /// Appends `data` to `stream` and returns the JSON result.
    fn append(&self, stream: &str, data: &str) -> Value {
        self.wharf(&["--json", "stream", "append", stream, "--data", data])
            .json()
    }
}

/// The current time as RFC 3339 with microseconds.
fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

#[test]
fn append_then_read_round_trips_as_json() {
    let server = Server::start();
    let id = "0190f0e6-7f4a-7cc2-9d1e-4f2a3b4c5d6e";
    let mut args = w("--json stream append order-42 --type OrderPlaced \
         --content-type application/json --metadata tenant=acme --metadata trace=a=b \
         --expected-version no-stream");
    args.extend(["--id", id, "--data", r#"{"total":12}"#]);
    let appended = server.wharf(&args).json();
    assert_eq!(
        appended,
        serde_json::json!({
            "stream": "order-42",
            "first_version": 0,
            "last_version": 0,
            "first_position": 0,
            "last_position": 0,
            "duplicate": false,
        })
    );
    let second = server
        .wharf(&w(
            "--json stream append order-42 --data shipped --expected-version 0",
        ))
        .json();
    assert_eq!(second["last_version"], 1);

    let read = server.wharf(&w("--json stream read order-42")).json();
    let events = read["events"].as_array().expect("events array");
    assert_eq!(events.len(), 2, "{read}");
    let first = &events[0];
    assert_eq!(first["id"], id);
    assert_eq!(first["stream"], "order-42");
    assert_eq!(first["type"], "OrderPlaced");
    assert_eq!(first["stream_version"], 0);
    assert_eq!(first["position"], 0);
    assert_eq!(first["content_type"], "application/json");
    assert_eq!(first["data"], r#"{"total":12}"#);
    assert_eq!(
        first["metadata"],
        serde_json::json!({"tenant": "acme", "trace": "a=b"})
    );
    assert!(first.get("data_base64").is_none(), "{first}");
    let created_at = first["created_at"].as_str().expect("created_at string");
    assert!(
        created_at.parse::<wharf_core::Timestamp>().is_ok(),
        "created_at is not RFC 3339: {created_at}"
    );
    assert_eq!(events[1]["type"], "event", "default type");
    assert_eq!(events[1]["content_type"], "application/octet-stream");
    assert_eq!(events[1]["data"], "shipped");
}

#[test]
fn read_prints_one_line_per_event_for_humans_honouring_from_backwards_and_limit() {
    let server = Server::start();
    for data in ["zero", "one", "two\nlines"] {
        server.append("s", data);
    }
    let out = server.wharf(&w("stream read s"));
    let lines = out.lines();
    assert_eq!(lines.len(), 3, "{out:#?}");
    let fields: Vec<&str> = lines[2].splitn(5, ' ').collect();
    assert_eq!(fields[0], "2", "version first: {}", lines[2]);
    assert_eq!(fields[1], "2", "then position: {}", lines[2]);
    assert!(
        fields[2].parse::<wharf_core::Timestamp>().is_ok(),
        "{}",
        lines[2]
    );
    assert_eq!(fields[3], "event");
    assert_eq!(fields[4], r"two\nlines", "payload stays on one line");

    let newest = server.wharf(&w("stream read s --backwards --limit 2"));
    let versions: Vec<&str> = newest
        .lines()
        .iter()
        .map(|l| l.split(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(versions, ["2", "1"]);

    let from = server.wharf(&w("--json stream read s --from 1")).json();
    let versions: Vec<&Value> = from["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| &e["stream_version"])
        .collect();
    assert_eq!(versions, [1, 2]);
}

#[test]
fn retrying_an_append_with_the_same_id_reports_a_duplicate() {
    let server = Server::start();
    let args = [
        "stream",
        "append",
        "s",
        "--data",
        "x",
        "--id",
        "0190f0e6-7f4a-7cc2-9d1e-000000000001",
    ];
    let first = server.wharf(&args);
    assert_eq!(first.lines(), ["appended to s at version 0 (position 0)"]);
    let again = server.wharf(&args);
    assert_eq!(
        again.lines(),
        ["appended to s at version 0 (position 0) (duplicate: already appended)"]
    );
    let read = server.wharf(&w("--json stream read s")).json();
    assert_eq!(read["events"].as_array().map(Vec::len), Some(1));
}

#[test]
fn reusing_an_event_id_on_another_stream_exits_4() {
    let server = Server::start();
    let id = "0190f0e6-7f4a-7cc2-9d1e-000000000002";
    server
        .wharf(&["stream", "append", "a", "--data", "x", "--id", id])
        .lines();
    server
        .wharf(&["stream", "append", "b", "--data", "x", "--id", id])
        .assert_error(4, &[id]);
}

#[test]
fn read_of_missing_stream_exits_3() {
    let server = Server::start();
    server
        .wharf(&w("stream read missing"))
        .assert_error(3, &["stream `missing` not found"]);
    server
        .wharf(&w("--json stream read missing"))
        .assert_error(3, &["missing"]);
}

#[test]
fn wrong_expected_version_exits_4_naming_both_versions() {
    let server = Server::start();
    for data in ["a", "b", "c"] {
        server.append("s", data);
    }
    let out = server.wharf(&w("stream append s --data d --expected-version 0"));
    out.assert_error(
        4,
        &["error: wrong expected version for stream `s`: expected 0, actual 2"],
    );
    server
        .wharf(&w("stream append new --data d --expected-version exists"))
        .assert_error(4, &["expected exists, actual no stream"]);
    let read = server.wharf(&w("--json stream read s")).json();
    assert_eq!(
        read["events"].as_array().map(Vec::len),
        Some(3),
        "nothing written"
    );
}

#[test]
fn unreachable_server_exits_5() {
    wharf_offline(&w("stream read s")).assert_error(5, &["unavailable", NOWHERE]);
    wharf_offline(&w("--json stream append s --data x")).assert_error(5, &[NOWHERE]);
}

#[test]
fn invalid_stream_name_is_rejected_naming_the_rule() {
    // No server: the name is checked before connecting, so exit 1 with the
    // rule rather than 5 proves the check is client-side.
    let too_long = "a".repeat(257);
    let cases = [
        ("", "must not be empty"),
        ("$reserved", "reserved"),
        (too_long.as_str(), "257 bytes"),
        ("tab\there", "control character"),
    ];
    for (name, rule) in cases {
        wharf_offline(&["stream", "append", name, "--data", "x"])
            .assert_error(1, &["invalid stream name", rule]);
        wharf_offline(&["stream", "read", name]).assert_error(1, &[rule]);
    }
}

#[test]
fn binary_data_is_shown_as_base64() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("payload.bin");
    std::fs::write(&file, [0xff, 0x00, 0xfe]).expect("write payload");
    let path = file.to_str().expect("utf-8 path");
    server
        .wharf(&["stream", "append", "bin", "--data-file", path])
        .lines();

    let read = server.wharf(&w("--json stream read bin")).json();
    let event = &read["events"][0];
    assert_eq!(event["data_base64"], "/wD+");
    assert!(event.get("data").is_none(), "{event}");
    let human = server.wharf(&w("stream read bin"));
    assert!(
        human.lines()[0].ends_with(" event <3 bytes binary>"),
        "{human:#?}"
    );
}

#[test]
fn data_from_stdin_is_appended() {
    let server = Server::start();
    let out = server.wharf_with_stdin(&w("stream append in --data-file -"), b"from stdin\n");
    assert_eq!(out.lines(), ["appended to in at version 0 (position 0)"]);
    let read = server.wharf(&w("--json stream read in")).json();
    assert_eq!(read["events"][0]["data"], "from stdin\n");
}

#[test]
fn missing_data_is_a_usage_error_exit_2() {
    wharf_offline(&w("stream append s")).assert_error(2, &["--data", "--data-file"]);
    wharf_offline(&w("stream append s --data x --data-file f"))
        .assert_error(2, &["cannot be used with"]);
    wharf_offline(&w("--json stream append s --data x --metadata k"))
        .assert_error(2, &["KEY=VALUE"]);
    wharf_offline(&w("stream append s --data x --metadata k=1 --metadata k=2"))
        .assert_error(2, &["`k`", "twice"]);
}

#[test]
fn tail_with_limit_prints_backlog_and_live_events_as_json_lines() {
    let server = Server::start();
    server.append("t", "backlog-0");
    server.append("t", "backlog-1");
    let (mut tail, lines, stderr) = spawn_following(&server, "--json stream tail --limit 3");
    let next = || {
        let line = lines
            .recv_timeout(SERVER_DEADLINE)
            .expect("tail printed a line in time");
        serde_json::from_str::<Value>(&line)
            .unwrap_or_else(|e| panic!("not one JSON document per line ({e}): {line}"))
    };
    assert_eq!(next()["data"], "backlog-0");
    assert_eq!(next()["data"], "backlog-1");

    server.append("t", "live");
    let live = next();
    assert_eq!(live["data"], "live");
    assert_eq!(live["position"], 2);

    let status = tail
        .wait_for(SERVER_DEADLINE)
        .expect("tail exits after --limit");
    assert_eq!(
        status.code(),
        Some(0),
        "stderr: {}",
        stderr.join().unwrap_or_default()
    );
    assert!(
        lines.recv_timeout(Duration::from_secs(1)).is_err(),
        "nothing after the limit"
    );
}

#[test]
fn tail_stops_with_exit_0_on_ctrl_c() {
    let server = Server::start();
    server.append("t", "only");
    let (mut tail, lines, stderr) = spawn_following(&server, "stream tail");
    let line = lines
        .recv_timeout(SERVER_DEADLINE)
        .expect("tail printed the backlog");
    assert!(line.starts_with("0 t@0 "), "{line}");
    assert!(line.ends_with(" event only"), "{line}");

    tail.signal(libc::SIGINT);
    let status = tail
        .wait_for(SERVER_DEADLINE)
        .expect("tail stops on Ctrl-C");
    let stderr = stderr.join().unwrap_or_default();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
}

#[test]
fn tail_filters_by_stream_prefix_and_type() {
    let server = Server::start();
    for (stream, event_type) in [
        ("order-1", "Placed"),
        ("order-1", "Shipped"),
        ("user-1", "Placed"),
        ("order-2", "Placed"),
    ] {
        server
            .wharf(&[
                "stream", "append", stream, "--type", event_type, "--data", "x",
            ])
            .lines();
    }
    let out = server.wharf(&w("stream tail --prefix order- --type Placed --limit 2"));
    let streams: Vec<&str> = out
        .lines()
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap_or_default())
        .collect();
    assert_eq!(streams, ["order-1@0", "order-2@0"], "{out:#?}");
}

#[test]
fn position_at_finds_the_first_event_after_a_time() {
    let server = Server::start();
    server.append("p", "before");
    // Small bounded pauses put `between` strictly between the two commits'
    // microsecond timestamps.
    thread::sleep(Duration::from_millis(5));
    let between = now_rfc3339();
    thread::sleep(Duration::from_millis(5));
    let after = server.append("p", "after");

    let found = server
        .wharf(&["--json", "stream", "position-at", &between])
        .json();
    assert_eq!(
        found,
        serde_json::json!({"position": after["last_position"]})
    );
    let human = server.wharf(&["stream", "position-at", &between]);
    assert_eq!(human.lines(), ["position 1"]);

    let read = server.wharf(&w("--json stream read p")).json();
    let first_at = read["events"][0]["created_at"]
        .as_str()
        .expect("created_at");
    let exact = server
        .wharf(&["--json", "stream", "position-at", first_at])
        .json();
    assert_eq!(exact["position"], 0, "a commit's own time finds it");

    let future = "2999-01-01T00:00:00Z";
    let none = server
        .wharf(&["--json", "stream", "position-at", future])
        .json();
    assert_eq!(none, serde_json::json!({"position": null}));
    let human = server.wharf(&["stream", "position-at", future]);
    assert_eq!(
        human.lines(),
        ["no event at or after 2999-01-01T00:00:00.000000Z"]
    );
}

#[test]
fn malformed_timestamp_is_a_usage_error_naming_the_format() {
    wharf_offline(&w("stream position-at yesterday"))
        .assert_error(2, &["yesterday", "RFC 3339", "2026-11-21T10:00:00Z"]);
}

#[test]
fn serve_with_malformed_config_names_the_key_and_file_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("wharf.yaml");
    std::fs::write(&config, "server:\n  grpc_listen: not-an-address\n").expect("write config");
    let path = config.to_str().expect("utf-8 path");
    for check in [false, true] {
        let mut cmd = wharf();
        cmd.current_dir(dir.path())
            .args(["serve", "--config", path]);
        if check {
            cmd.arg("--check-config");
        }
        run(cmd, None).assert_error(1, &["server.grpc_listen", path]);
    }
    assert!(
        !dir.path().join("wharf-data").exists(),
        "no storage was opened"
    );
}

#[test]
fn serve_check_config_accepts_a_valid_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("wharf.yaml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "server:\n  grpc_listen: 127.0.0.1:6123\nstorage:\n  type: embedded\n  path: {}\n  durability: relaxed\n",
            data.display()
        ),
    )
    .expect("write config");
    let path = config.to_str().expect("utf-8 path");

    let mut cmd = wharf();
    cmd.args(["serve", "--check-config", "--config", path]);
    let human = run(cmd, None);
    let lines = human.lines();
    assert_eq!(lines.len(), 1, "{human:#?}");
    assert!(lines[0].starts_with("config ok"), "{human:#?}");
    assert!(lines[0].contains("127.0.0.1:6123"), "{human:#?}");
    assert!(lines[0].contains("relaxed"), "{human:#?}");

    let mut cmd = wharf();
    cmd.args(["--json", "serve", "--check-config", "--config", path]);
    let json = run(cmd, None).json();
    assert_eq!(json["ok"], true);
    assert_eq!(json["config"]["server"]["grpc_listen"], "127.0.0.1:6123");
    assert!(!data.exists(), "checking does not open storage");
}

#[test]
fn second_server_on_same_data_dir_fails_with_locked_error() {
    let first = Server::start();
    let second = run(serve_command(&first.data), None);
    second.assert_error(1, &["locked", &first.data.display().to_string()]);
    // The first server is unaffected.
    first.append("still-up", "x");
}

#[test]
fn sigterm_shuts_down_gracefully_with_exit_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start_in(&data);
    server.append("durable", "kept");
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "{status:?}");

    // The lock is released and the event is still there.
    let again = Server::start_in(&data);
    let read = again.wharf(&w("--json stream read durable")).json();
    assert_eq!(read["events"][0]["data"], "kept");
}

#[test]
fn usage_errors_are_one_line_and_exit_2() {
    wharf_offline(&w("stream read s --bogus")).assert_error(2, &["--bogus"]);
    wharf_offline(&w("stream read s --limit 0")).assert_error(2, &["--limit"]);
    wharf_offline(&w("stream append s --data x --expected-version soon"))
        .assert_error(2, &["soon", "no-stream"]);
}
