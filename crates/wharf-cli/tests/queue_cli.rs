//! `wharf queue …` end to end: the real binary against a real server.
//!
//! Each test starts its own `wharf serve` on port 0 in a fresh data
//! directory and learns the address from the server's "serving" line. Every
//! wait is bounded; the two real sleeps (a visibility deadline passing, a
//! long poll being woken) are about a second each.

mod support;

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use support::{NOWHERE, Server, finish, run, spawn, w, wharf_offline};

impl Server {
    /// Enqueues `data` to `queue` and returns the message id.
    fn enqueue(&self, queue: &str, data: &str) -> String {
        let out = self.json(&["queue", "enqueue", queue, "--data", data]);
        out["message_id"]
            .as_str()
            .expect("message_id string")
            .to_owned()
    }

    /// Dequeues with `extra` flags and returns the deliveries.
    fn dequeue(&self, queue: &str, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["queue", "dequeue", queue];
        args.extend_from_slice(extra);
        let out = self.json(&args);
        out["deliveries"]
            .as_array()
            .expect("deliveries array")
            .clone()
    }

    /// The `stats --json` document of `queue`.
    fn stats(&self, queue: &str) -> Value {
        self.json(&["queue", "stats", queue])
    }
}

/// The keys of a JSON object, sorted.
fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string `{key}` in {value}"))
}

#[test]
fn create_reports_the_settings_and_is_idempotent_only_for_the_same_settings() {
    let server = Server::start();
    let args = w("queue create jobs --max-delivery-attempts 3 \
         --dead-letter-queue jobs-dead --visibility-timeout 45s");
    let created = server.json(&args);
    assert_eq!(
        created,
        json!({
            "queue": "jobs",
            "created": true,
            "settings": {
                "max_delivery_attempts": 3,
                "dead_letter_queue": "jobs-dead",
                "visibility_timeout": "45s",
            },
        })
    );
    let again = server.json(&args);
    assert_eq!(again["created"], false, "same settings: nothing changes");

    server
        .wharf(&w("queue create jobs --max-delivery-attempts 4"))
        .assert_error(4, &["queue `jobs` already exists with different settings"]);

    let plain = server.wharf(&w("queue create plain"));
    assert_eq!(
        plain.lines(),
        ["created queue plain: max 5 deliveries, dead letters to dlq, visibility timeout 30s"]
    );
    let keep = server.json(&w("queue create keep --no-dead-letter-queue"));
    assert_eq!(keep["settings"]["dead_letter_queue"], Value::Null);
}

#[test]
fn list_and_stats_show_every_queue_with_its_settings_and_counts() {
    let server = Server::start();
    server.json(&w("queue create b --visibility-timeout 2m"));
    server.enqueue("a", "one");
    server.enqueue("a", "two");

    let list = server.json(&w("queue list"));
    assert_eq!(keys(&list), ["queues"]);
    let queues = list["queues"].as_array().expect("queues array");
    let names: Vec<&str> = queues.iter().map(|q| text(q, "name")).collect();
    assert_eq!(names, ["a", "b"], "sorted by name: {list}");
    assert_eq!(keys(&queues[0]), ["name", "settings", "stats"]);
    assert_eq!(
        keys(&queues[0]["settings"]),
        [
            "dead_letter_queue",
            "max_delivery_attempts",
            "visibility_timeout"
        ]
    );
    assert_eq!(queues[1]["settings"]["visibility_timeout"], "2m");
    assert_eq!(queues[0]["stats"]["visible"], 2);

    let stats = server.stats("a");
    assert_eq!(
        keys(&stats),
        [
            "acks",
            "dead_lettered",
            "dead_letters",
            "delayed",
            "deliveries",
            "depth",
            "in_flight",
            "nacks",
            "oldest_age_seconds",
            "queue",
            "visible",
        ]
    );
    assert_eq!(stats["queue"], "a");
    assert_eq!(
        (stats["visible"].clone(), stats["depth"].clone()),
        (json!(2), json!(2))
    );
    assert!(stats["oldest_age_seconds"].is_f64(), "{stats}");
    let empty = server.stats("b");
    assert_eq!(empty["oldest_age_seconds"], Value::Null);
    let mut stats_keys = keys(&stats);
    stats_keys.retain(|k| *k != "queue");
    assert_eq!(
        keys(&queues[0]["stats"]),
        stats_keys,
        "list and stats agree"
    );

    let human = server.wharf(&w("queue stats a"));
    let lines = human.lines();
    assert_eq!(lines.len(), 2, "{human:#?}");
    assert!(
        lines[0].starts_with("a: 2 visible, 0 in flight, 0 delayed, "),
        "{human:#?}"
    );
    assert!(lines[0].ends_with(", 0 dead letters"), "{human:#?}");
    let list = server.wharf(&w("queue list"));
    assert_eq!(list.lines().len(), 2, "one line per queue: {list:#?}");
    assert!(list.lines()[1].starts_with("b: 0 visible"), "{list:#?}");
}

#[test]
fn enqueue_dequeue_ack_round_trips_as_json() {
    let server = Server::start();
    let enqueued = server.json(&w("queue enqueue jobs --data hello \
         --metadata tenant=acme --metadata trace=a=b --content-type text/plain"));
    assert_eq!(keys(&enqueued), ["duplicate", "message_id"]);
    assert_eq!(enqueued["duplicate"], false);
    let id = text(&enqueued, "message_id");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{enqueued}");

    let deliveries = server.dequeue("jobs", &[]);
    assert_eq!(deliveries.len(), 1);
    let d = &deliveries[0];
    assert_eq!(
        keys(d),
        [
            "content_type",
            "data",
            "delivery_attempt",
            "enqueued_at",
            "message_id",
            "metadata",
            "receipt",
        ]
    );
    assert_eq!(d["message_id"], id);
    assert_eq!(d["data"], "hello");
    assert_eq!(d["metadata"], json!({"tenant": "acme", "trace": "a=b"}));
    assert_eq!(d["content_type"], "text/plain");
    assert_eq!(d["delivery_attempt"], 1);
    let enqueued_at = text(d, "enqueued_at");
    assert!(
        enqueued_at.parse::<wharf_core::Timestamp>().is_ok(),
        "enqueued_at is not RFC 3339: {enqueued_at}"
    );
    assert_eq!(server.stats("jobs")["in_flight"], 1);

    let receipt = text(d, "receipt");
    let acked = server.json(&["queue", "ack", "jobs", receipt]);
    assert_eq!(acked, json!({"acknowledged": [receipt], "failed": []}));
    let stats = server.stats("jobs");
    assert_eq!(
        (stats["visible"].clone(), stats["in_flight"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(stats["acks"], 1);
    assert_eq!(
        server.json(&w("queue dequeue jobs")),
        json!({"deliveries": []})
    );
}

#[test]
fn human_output_leads_with_the_id_and_the_receipt() {
    let server = Server::start();
    let out = server.wharf(&["queue", "enqueue", "jobs", "--data", "two\nlines"]);
    let lines = out.lines();
    assert_eq!(lines.len(), 1, "{out:#?}");
    let id = lines[0];
    assert!(uuid::Uuid::parse_str(id).is_ok(), "only the id: {out:#?}");

    let out = server.wharf(&w("queue dequeue jobs"));
    let lines = out.lines();
    assert_eq!(lines.len(), 1, "{out:#?}");
    let fields: Vec<&str> = lines[0].splitn(5, ' ').collect();
    let receipt = fields[0];
    assert_eq!(fields[1], id, "{}", lines[0]);
    assert_eq!(fields[2], "1", "delivery attempt: {}", lines[0]);
    assert!(
        fields[3].parse::<wharf_core::Timestamp>().is_ok(),
        "{}",
        lines[0]
    );
    assert_eq!(fields[4], r"two\nlines", "payload stays on one line");

    let acked = server.wharf(&["queue", "ack", "jobs", receipt]);
    assert_eq!(acked.lines(), ["acknowledged 1 message"]);
    let empty = server.wharf(&w("queue dequeue jobs"));
    assert_eq!(
        empty.lines(),
        Vec::<&str>::new(),
        "nothing visible, nothing printed"
    );
}

#[test]
fn dequeue_returns_up_to_max_oldest_first() {
    let server = Server::start();
    let ids: Vec<String> = (0..4)
        .map(|i| server.enqueue("fifo", &format!("m{i}")))
        .collect();
    let first = server.dequeue("fifo", &w("--max 3"));
    let got: Vec<&str> = first.iter().map(|d| text(d, "message_id")).collect();
    assert_eq!(got, [&ids[0], &ids[1], &ids[2]]);
    let rest = server.dequeue("fifo", &w("--max 100"));
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["data"], "m3");
}

#[test]
fn binary_payload_is_data_base64_and_stdin_is_read_with_a_dash() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("payload.bin");
    std::fs::write(&file, [0xff, 0x00, 0xfe]).expect("write payload");
    let path = file.to_str().expect("utf-8 path");
    server
        .wharf(&["queue", "enqueue", "bin", "--data-file", path])
        .lines();
    let stdin = run(
        server.command(&w("--json queue enqueue bin --data-file -")),
        Some(b"from stdin\n"),
    )
    .json();
    assert!(stdin["message_id"].is_string(), "{stdin}");

    let deliveries = server.dequeue("bin", &w("--max 2"));
    assert_eq!(deliveries[0]["data_base64"], "/wD+");
    assert!(deliveries[0].get("data").is_none(), "{}", deliveries[0]);
    assert_eq!(deliveries[1]["data"], "from stdin\n");
    assert!(
        deliveries[1].get("data_base64").is_none(),
        "{}",
        deliveries[1]
    );
}

#[test]
fn a_dedup_id_makes_a_repeated_enqueue_a_duplicate() {
    let server = Server::start();
    let args = w("--json queue enqueue jobs --data x --dedup-id order-7");
    let first = server.wharf(&args).json();
    let second = server.wharf(&args).json();
    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["message_id"], first["message_id"]);
    assert_eq!(server.stats("jobs")["visible"], 1, "added once");
}

#[test]
fn delay_and_redeliver_after_keep_messages_invisible() {
    let server = Server::start();
    server.json(&w("queue enqueue later --data x --delay 1h"));
    assert_eq!(server.dequeue("later", &[]), Vec::<Value>::new());
    assert_eq!(server.stats("later")["delayed"], 1);

    server.enqueue("later", "y");
    let d = &server.dequeue("later", &[])[0];
    let nacked = server.json(&[
        "queue",
        "nack",
        "later",
        text(d, "receipt"),
        "--redeliver-after",
        "1h",
    ]);
    assert_eq!(
        nacked,
        json!({"receipt": d["receipt"], "redeliver_after": "1h"})
    );
    let stats = server.stats("later");
    assert_eq!(
        (stats["delayed"].clone(), stats["visible"].clone()),
        (json!(2), json!(0))
    );
    assert_eq!(stats["nacks"], 1);
}

#[test]
fn a_stale_receipt_cannot_acknowledge_nack_or_extend_and_exits_4() {
    let server = Server::start();
    let a = server.enqueue("jobs", "a");
    let b = server.enqueue("jobs", "b");
    let first = server.dequeue("jobs", &w("--max 2"));
    let (a1, b1) = (text(&first[0], "receipt"), text(&first[1], "receipt"));

    // Nacked and delivered again: the first receipt is stale.
    let nacked = server.wharf(&["queue", "nack", "jobs", a1, "--reason", "retry"]);
    assert_eq!(
        nacked.lines(),
        ["nacked: redelivered now, or dead-lettered if that was its last attempt"]
    );
    let again = server.dequeue("jobs", &[]);
    assert_eq!(
        (text(&again[0], "message_id"), &again[0]["delivery_attempt"]),
        (a.as_str(), &json!(2))
    );
    let a2 = text(&again[0], "receipt");

    // One stale and one live receipt: the live one is acknowledged anyway.
    let out = server.wharf(&["--json", "queue", "ack", "jobs", a1, b1]);
    out.assert_error_line(
        4,
        &["1 of 2 receipts not acknowledged", a1, "lease lost", &a],
    );
    let doc = out.document();
    assert_eq!(doc["acknowledged"], json!([b1]));
    let failed = doc["failed"].as_array().expect("failed array");
    assert_eq!(failed.len(), 1, "{doc}");
    assert_eq!(keys(&failed[0]), ["error", "receipt"]);
    assert_eq!(failed[0]["receipt"], a1);
    assert!(text(&failed[0], "error").contains("lease lost"), "{doc}");
    let human = server.wharf(&["queue", "ack", "jobs", a1, a2]);
    human.assert_error_line(4, &[a1]);
    assert_eq!(human.stdout, "acknowledged 1 of 2 messages\n");

    // Acknowledged: every use of either receipt is now a lost lease.
    server
        .wharf(&["queue", "ack", "jobs", a2])
        .assert_error(4, &["lease lost", &a]);
    server
        .wharf(&["queue", "nack", "jobs", a2])
        .assert_error(4, &["lease lost", &a]);
    server
        .wharf(&["queue", "extend", "jobs", b1, "1m"])
        .assert_error(4, &["lease lost", &b]);
    let stats = server.stats("jobs");
    assert_eq!(
        (stats["visible"].clone(), stats["in_flight"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(stats["acks"], 2);
}

#[test]
fn extend_sets_a_new_deadline_and_a_timed_out_receipt_loses_its_lease() {
    let server = Server::start();
    let short = server.enqueue("jobs", "short");
    let long = server.enqueue("jobs", "long");
    // Both start with a long lease, so a slow machine cannot race the test;
    // extend then sets one deadline to 1 s from now.
    let first = server.dequeue("jobs", &w("--max 2 --visibility-timeout 1h"));
    assert_eq!(first[0]["message_id"], short.as_str());
    assert_eq!(first[1]["message_id"], long.as_str());
    let (short1, long1) = (text(&first[0], "receipt"), text(&first[1], "receipt"));
    let extended = server.json(&["queue", "extend", "jobs", short1, "1s"]);
    assert_eq!(
        extended,
        json!({"receipt": short1, "visibility_timeout": "1s"})
    );

    // The one real wait of this file: let the 1 s deadline pass.
    thread::sleep(Duration::from_millis(1300));
    let again = server.dequeue("jobs", &w("--max 10"));
    assert_eq!(
        again.len(),
        1,
        "only the message whose deadline passed: {again:?}"
    );
    assert_eq!(again[0]["message_id"], short.as_str());
    assert_eq!(again[0]["delivery_attempt"], 2);
    server
        .wharf(&["queue", "ack", "jobs", short1])
        .assert_error(4, &["lease lost", &short]);
    server
        .wharf(&["queue", "extend", "jobs", short1, "1m"])
        .assert_error(4, &["lease lost", &short]);
    assert_eq!(
        server.wharf(&["queue", "ack", "jobs", long1]).lines(),
        ["acknowledged 1 message"],
        "the untouched lease still holds"
    );
    let human = server.wharf(&["queue", "extend", "jobs", text(&again[0], "receipt"), "90s"]);
    assert_eq!(human.lines(), ["extended: invisible for 1m 30s from now"]);
}

#[test]
fn last_failed_attempt_dead_letters_and_redrive_brings_it_back() {
    let server = Server::start();
    server.json(&w(
        "queue create jobs --max-delivery-attempts 1 --dead-letter-queue dead",
    ));
    let id = server.enqueue("jobs", "poison");
    let d = &server.dequeue("jobs", &[])[0];
    server
        .wharf(&[
            "queue",
            "nack",
            "jobs",
            text(d, "receipt"),
            "--reason",
            "boom",
        ])
        .lines();
    assert_eq!(server.stats("jobs")["dead_letters"], 1);

    let dead = &server.dequeue("dead", &w("--visibility-timeout 1s"))[0];
    assert_eq!(dead["message_id"], id.as_str());
    assert_eq!(dead["data"], "poison");
    assert_eq!(dead["metadata"]["OriginalStreamName"], "jobs");
    assert_eq!(dead["metadata"]["LastError"], "boom");
    assert_eq!(dead["metadata"]["DeliveryAttempts"], "1");
    server
        .wharf(&["queue", "nack", "dead", text(dead, "receipt")])
        .lines();

    let moved = server.json(&w("queue redrive dead"));
    assert_eq!(moved, json!({"queue": "dead", "to": null, "moved": 1}));
    let back = server.dequeue("jobs", &[]);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0]["data"], "poison");
    server
        .wharf(&["queue", "nack", "jobs", text(&back[0], "receipt")])
        .lines();

    let human = server.wharf(&w("queue redrive dead --to elsewhere"));
    assert_eq!(human.lines(), ["moved 1 message from dead to elsewhere"]);
    assert_eq!(server.dequeue("elsewhere", &[])[0]["data"], "poison");
}

#[test]
fn purge_empties_a_queue_and_delete_removes_it() {
    let server = Server::start();
    for data in ["a", "b", "c"] {
        server.enqueue("gone", data);
    }
    assert_eq!(
        server.json(&w("queue purge gone")),
        json!({"queue": "gone", "purged": 3})
    );
    assert_eq!(server.stats("gone")["visible"], 0);
    server.enqueue("gone", "d");
    assert_eq!(
        server.wharf(&w("queue purge gone")).lines(),
        ["purged 1 message from gone"]
    );

    assert_eq!(
        server.json(&w("queue delete gone")),
        json!({"queue": "gone", "deleted": true})
    );
    server
        .wharf(&w("queue stats gone"))
        .assert_error(3, &["queue `gone` not found"]);
    server
        .wharf(&w("queue delete gone"))
        .assert_error(3, &["gone"]);
    let names: BTreeSet<String> = server.json(&w("queue list"))["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .map(|q| text(q, "name").to_owned())
        .collect();
    assert!(!names.contains("gone"), "{names:?}");
}

#[test]
fn unknown_queue_exits_3() {
    let server = Server::start();
    for line in [
        "queue stats missing",
        "queue dequeue missing",
        "queue purge missing",
        "queue delete missing",
        "queue redrive missing",
        "--json queue stats missing",
    ] {
        server
            .wharf(&w(line))
            .assert_error(3, &["queue `missing` not found"]);
    }
}

#[test]
fn out_of_bounds_arguments_are_refused_and_change_nothing() {
    let server = Server::start();
    server.enqueue("jobs", "x");
    let cases = [
        ("queue dequeue jobs --max 0", "--max"),
        ("queue dequeue jobs --max 101", "1..=100"),
        ("queue dequeue jobs --wait 21s", "at most 20s"),
        (
            "queue dequeue jobs --visibility-timeout 0s",
            "more than 0 and at most 12h",
        ),
        (
            "queue dequeue jobs --visibility-timeout 13h",
            "--visibility-timeout",
        ),
        ("queue dequeue jobs --wait soon", "500ms"),
        ("queue enqueue jobs --data y --delay 13h", "--delay"),
        (
            "queue create other --visibility-timeout 0s",
            "--visibility-timeout",
        ),
        (
            "queue create other --max-delivery-attempts 0",
            "--max-delivery-attempts",
        ),
    ];
    for (line, part) in cases {
        server.wharf(&w(line)).assert_error(2, &[part]);
    }
    let long_dedup = "d".repeat(129);
    server
        .wharf(&[
            "queue",
            "enqueue",
            "jobs",
            "--data",
            "y",
            "--dedup-id",
            &long_dedup,
        ])
        .assert_error(1, &["dedup_id"]);

    let stats = server.stats("jobs");
    assert_eq!(
        (stats["visible"].clone(), stats["deliveries"].clone()),
        (json!(1), json!(0))
    );
    let names: Vec<String> = server.json(&w("queue list"))["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .map(|q| text(q, "name").to_owned())
        .collect();
    assert_eq!(names, ["jobs"], "no queue was created");
}

#[test]
fn bad_names_and_invocations_are_refused_before_connecting() {
    // Exit 1 or 2 rather than 5 shows nothing tried to reach the server.
    wharf_offline(&["queue", "enqueue", "$reserved", "--data", "x"])
        .assert_error(1, &["invalid queue name", "reserved"]);
    wharf_offline(&["queue", "stats", ""]).assert_error(1, &["must not be empty"]);
    wharf_offline(&w("queue create q --dead-letter-queue $dlq"))
        .assert_error(1, &["invalid queue name"]);
    wharf_offline(&w("queue enqueue q")).assert_error(2, &["--data", "--data-file"]);
    wharf_offline(&w("queue enqueue q --data x --metadata k=1 --metadata k=2"))
        .assert_error(2, &["`k`", "twice"]);
    wharf_offline(&w("queue ack q")).assert_error(2, &["RECEIPT"]);
    wharf_offline(&w("queue extend q r")).assert_error(2, &["TIMEOUT"]);
    wharf_offline(&w("queue extend q r 13h")).assert_error(2, &["12h"]);
    wharf_offline(&w("queue nack q r --redeliver-after 1d")).assert_error(2, &["12h"]);
}

#[test]
fn a_malformed_receipt_exits_1_naming_it() {
    let server = Server::start();
    server.enqueue("jobs", "x");
    server
        .wharf(&w("queue ack jobs not-a-receipt"))
        .assert_error_line(1, &["not-a-receipt", "receipt"]);
    server
        .wharf(&w("queue extend jobs not-a-receipt 1m"))
        .assert_error(1, &["receipt"]);
}

#[test]
fn unreachable_server_exits_5() {
    wharf_offline(&w("queue list")).assert_error(5, &["unavailable", NOWHERE]);
    wharf_offline(&w("--json queue enqueue q --data x")).assert_error(5, &[NOWHERE]);
}

#[test]
fn long_poll_returns_as_soon_as_a_message_is_enqueued() {
    let server = Server::start();
    server.json(&w("queue create waiting"));
    let started = Instant::now();
    let (child, stdout, stderr) = spawn(
        server.command(&w("--json queue dequeue waiting --wait 5s")),
        None,
    );
    // Give the dequeue time to reach the server and start waiting, so the
    // enqueue below is what wakes it.
    thread::sleep(Duration::from_millis(700));
    let id = server.enqueue("waiting", "wake up");
    let out = finish(child, stdout, stderr);
    let elapsed = started.elapsed();
    let doc = out.json();
    assert_eq!(doc["deliveries"][0]["message_id"], id.as_str(), "{doc}");
    assert!(
        elapsed < Duration::from_millis(4000),
        "returned after {elapsed:?}, not as soon as the message came"
    );

    let started = Instant::now();
    let empty = server.json(&w("queue dequeue waiting --wait 300ms"));
    assert_eq!(empty, json!({"deliveries": []}));
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "an empty long poll waits its full time"
    );
}
