//! Large payloads through the `wharf` binary: offloaded events and messages
//! from `--data-file`, `payload-store put|get|stats|cleanup`, and what a
//! corrupted payload does to reads and dequeues. Real processes against a
//! real server whose payload offloading is configured by environment.

mod support;

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use support::{Server, THRESHOLD, w, wharf_offline};

/// `size` bytes that differ with `seed` and do not compress.
fn payload(size: usize, seed: u64) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15_u64 ^ seed.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size);
    out
}

/// Writes `data` to `name` in a fresh directory; returns the directory
/// (kept alive by the caller) and the file's path as a string.
fn data_file(name: &str, data: &[u8]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, data).expect("write the data file");
    let path = path.to_str().expect("UTF-8 path").to_owned();
    (dir, path)
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

fn decoded(value: &Value) -> Vec<u8> {
    let text = value["data_base64"]
        .as_str()
        .unwrap_or_else(|| panic!("no data_base64 in {value}"));
    BASE64.decode(text).expect("valid base64")
}

/// Overwrites a few bytes in the middle of a file, keeping its size.
fn corrupt(path: &Path) {
    let mut bytes = std::fs::read(path).expect("the payload object exists");
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 4] {
        *b ^= 0xff;
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_5_mib_event_and_message_round_trip_from_a_data_file_and_are_stored_once() {
    let server = Server::start_offloading();
    let data = payload(5 << 20, 1);
    let (_dir, file) = data_file("scan.bin", &data);
    for _ in 0..2 {
        server.json(&["stream", "append", "scans", "--data-file", &file]);
    }
    let read = server.json(&w("stream read scans"));
    let events = read["events"].as_array().expect("events");
    assert_eq!(events.len(), 2, "{}", events.len());
    let external = events[0]["external"].clone();
    assert_eq!(
        keys(&external),
        [
            "content_hash",
            "original_size",
            "storage_type",
            "stored_at",
            "uri"
        ]
    );
    assert_eq!(external["original_size"], 5 << 20);
    assert_eq!(external["storage_type"], "filesystem");
    let hash = external["content_hash"].as_str().unwrap().to_owned();
    assert!(
        external["uri"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/{hash}.bin")),
        "{external}"
    );
    for e in events {
        assert!(decoded(e) == data, "the event is byte-identical");
    }

    let enqueued = server.json(&["queue", "enqueue", "jobs", "--data-file", &file]);
    assert_eq!(enqueued["duplicate"], false);
    let dequeued = server.json(&w("queue dequeue jobs"));
    let delivery = &dequeued["deliveries"][0];
    assert!(decoded(delivery) == data, "the message is byte-identical");
    assert_eq!(delivery["external"]["content_hash"], hash.as_str());

    assert_eq!(
        server.payload_files(),
        [format!("{hash}.bin")],
        "stored once"
    );
    let out = tempfile::tempdir().unwrap();
    let out = out.path().join("got.bin");
    let out = out.to_str().unwrap();
    server.json(&["payload-store", "get", &hash, "--output", out]);
    assert!(
        std::fs::read(out).unwrap() == data,
        "get --output is byte-identical"
    );

    let refs = server.json(&w("stream read scans --limit 1 --payload-references"));
    let event = &refs["events"][0];
    assert!(
        event.get("data").is_none() && event.get("data_base64").is_none(),
        "{event}"
    );
    assert_eq!(event["external"]["content_hash"], hash.as_str());
}

#[test]
fn put_get_and_stats_print_the_reference_and_the_bytes() {
    let server = Server::start_offloading();
    let binary = payload(100_000, 2);
    let (_dir, file) = data_file("blob.bin", &binary);
    let put = server.json(&["payload-store", "put", "--data-file", &file]);
    assert_eq!(
        keys(&put),
        [
            "content_hash",
            "original_size",
            "storage_type",
            "stored_at",
            "uri"
        ]
    );
    assert_eq!(put["original_size"], 100_000);
    let uri = put["uri"].as_str().unwrap();
    let hash = put["content_hash"].as_str().unwrap();

    // By URI and by hash; binary comes as `data_base64`.
    for target in [uri, hash] {
        let got = server.json(&["payload-store", "get", target]);
        assert!(decoded(&got) == binary, "{target}");
        assert_eq!(
            (&got["uri"], &got["content_hash"]),
            (&put["uri"], &put["content_hash"])
        );
    }

    // Text from stdin comes back as `data`.
    let text = "ü".repeat(THRESHOLD);
    let out = server.wharf_with_stdin(
        &["--json", "payload-store", "put", "--data-file", "-"],
        text.as_bytes(),
    );
    let put_text = out.json();
    let got = server.json(&[
        "payload-store",
        "get",
        put_text["content_hash"].as_str().unwrap(),
    ]);
    assert_eq!(got["data"], text.as_str());

    let stats = server.json(&w("payload-store stats"));
    assert_eq!(
        stats,
        json!({"objects": 2, "bytes": 100_000 + text.len(), "storage_type": "filesystem"})
    );
    let human = server.wharf(&w("payload-store stats"));
    assert_eq!(
        human.lines(),
        [format!(
            "filesystem payload store: 2 objects, {}",
            indicatif::HumanBytes((100_000 + text.len()) as u64)
        )]
    );
}

#[test]
fn get_writes_the_exact_bytes_to_stdout() {
    let server = Server::start_offloading();
    let text = "x".repeat(THRESHOLD + 1);
    let put = server.json(&["payload-store", "put", "--data", &text]);
    let out = server.wharf(&["payload-store", "get", put["uri"].as_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(out.stdout, text, "nothing added, nothing missing");
}

#[test]
fn a_corrupted_payload_is_a_one_line_error_and_its_message_is_dead_lettered() {
    let server = Server::start_offloading();
    let data = payload(200_000, 3);
    let (_dir, file) = data_file("doc.bin", &data);
    server.json(&["stream", "append", "docs", "--data-file", &file]);
    server.json(&["queue", "enqueue", "work", "--data-file", &file]);
    let put = server.json(&["payload-store", "put", "--data-file", &file]);
    let (uri, hash) = (
        put["uri"].as_str().unwrap().to_owned(),
        put["content_hash"].as_str().unwrap().to_owned(),
    );
    let object = server.payload_dir().join(format!("{hash}.bin"));
    corrupt(&object);

    server
        .wharf(&w("stream read docs"))
        .assert_error(1, &[&uri, "integrity"]);
    server
        .wharf(&["payload-store", "get", &hash])
        .assert_error(1, &[&uri, "integrity"]);

    // The consumer gets nothing; the dead letter keeps the reference.
    assert_eq!(
        server.json(&w("queue dequeue work")),
        json!({"deliveries": []})
    );
    let dead = server.json(&w("queue dequeue dlq"));
    let letter = &dead["deliveries"][0];
    assert!(
        letter.get("data").is_none() && letter.get("data_base64").is_none(),
        "{letter}"
    );
    assert_eq!(letter["external"]["uri"], uri.as_str());
    assert_eq!(letter["metadata"]["PayloadUri"], uri.as_str());
    assert_eq!(letter["metadata"]["PayloadContentHash"], hash.as_str());
    assert_eq!(letter["metadata"]["PayloadOriginalSize"], "200000");
    assert_eq!(letter["metadata"]["PayloadStorageType"], "filesystem");
    assert_eq!(letter["metadata"]["OriginalStreamName"], "work");

    // A missing object is "not found": exit 3.
    std::fs::remove_file(&object).unwrap();
    server
        .wharf(&w("stream read docs"))
        .assert_error(3, &[&uri, "not_found"]);
    server
        .wharf(&["payload-store", "get", &hash])
        .assert_error(3, &[&hash]);
}

#[test]
fn cleanup_deletes_only_unreferenced_payloads_and_a_dry_run_only_counts() {
    let server = Server::start_offloading();
    let size = 70_000;
    for seed in [10, 11] {
        let (_dir, file) = data_file("p.bin", &payload(size, seed));
        server.json(&["payload-store", "put", "--data-file", &file]);
    }
    let (_dir, file) = data_file("kept.bin", &payload(size, 12));
    server.json(&["stream", "append", "kept", "--data-file", &file]);
    assert_eq!(server.payload_files().len(), 3);

    let dry = server.json(&w("payload-store cleanup --older-than 0s --dry-run"));
    assert_eq!(
        dry,
        json!({"scanned": 3, "deleted": 2, "bytes_freed": 2 * size, "kept_referenced": 1, "dry_run": true})
    );
    assert_eq!(server.payload_files().len(), 3, "a dry run deletes nothing");
    let human = server.wharf(&w("payload-store cleanup --older-than 0s --dry-run"));
    assert_eq!(
        human.lines(),
        [
            "dry run, nothing deleted: would delete 2 of 3 scanned (136.72 KiB), kept 1 still referenced"
        ]
    );
    assert_eq!(human.stderr, "", "no progress bar off a terminal");

    let done = server.json(&w("payload-store cleanup --older-than 0s"));
    assert_eq!(
        done,
        json!({"scanned": 3, "deleted": 2, "bytes_freed": 2 * size, "kept_referenced": 1, "dry_run": false})
    );
    assert_eq!(server.payload_files().len(), 1);

    // Deleting the stream releases the last one.
    assert_eq!(
        server.json(&w("stream delete kept")),
        json!({"stream": "kept", "deleted": 1})
    );
    let human = server.wharf(&w("payload-store cleanup --older-than 0s"));
    assert_eq!(
        human.lines(),
        ["deleted 1 of 1 scanned (68.36 KiB freed), kept 0 still referenced"]
    );
    assert!(server.payload_files().is_empty());
    server
        .wharf(&w("stream read kept"))
        .assert_error(3, &["kept"]);
}

#[test]
fn a_malformed_older_than_is_a_usage_error_naming_the_value() {
    wharf_offline(&w("payload-store cleanup --older-than 7x")).assert_error(2, &["7x"]);
    wharf_offline(&w("payload-store cleanup")).assert_error(2, &["--older-than"]);
    wharf_offline(&w("payload-store get not-a-hash")).assert_error(1, &["not-a-hash"]);
    wharf_offline(&w("payload-store put")).assert_error(2, &["--data"]);
}

#[test]
fn payload_store_verbs_say_when_offloading_is_off() {
    let server = Server::start();
    server
        .wharf(&w("payload-store stats"))
        .assert_error(1, &["payload_offload.enabled"]);
    server
        .wharf(&w("payload-store cleanup --older-than 1d"))
        .assert_error(1, &["payload_offload.enabled"]);
}
