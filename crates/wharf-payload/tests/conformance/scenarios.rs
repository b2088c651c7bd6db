//! Scenarios of the [`PayloadStore`] contract, each an `async fn(&Fixture)`.
//!
//! The contract is in the docs of `PayloadStore`; each scenario's name says
//! which guarantee it checks.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use wharf_core::payload::Compression;
use wharf_core::{
    Clock, ContentHash, Error, PayloadFailure, PayloadReference, PayloadRetrievalFailedDetails,
    PayloadStorageType, Timestamp,
};
use wharf_payload::object_store::path::Path;
use wharf_payload::object_store::{ObjectStoreExt, PutPayload};
use wharf_payload::{MULTIPART_THRESHOLD, PayloadStore, StoredPayload};

use crate::fixture::{Fixture, KEY_B, Variant, install_tls_provider, payload};

const MIB: usize = 1 << 20;
/// The first bytes of a framed object.
const MAGIC: [u8; 4] = [0x89, b'W', b'P', b'L'];

fn sha256(data: &[u8]) -> ContentHash {
    ContentHash(Sha256::digest(data).into())
}

fn key_in(f: &Fixture, hash: &ContentHash) -> Path {
    Path::parse(format!("{}{}.bin", f.prefix, hash.to_hex())).expect("valid key")
}

async fn put(store: &PayloadStore, data: &Bytes) -> PayloadReference {
    match store.put(data).await {
        Ok(reference) => reference,
        Err(err) => panic!("put of {} bytes failed: {err}", data.len()),
    }
}

async fn get(store: &PayloadStore, reference: &PayloadReference) -> Bytes {
    match store.get(reference).await {
        Ok(bytes) => bytes,
        Err(err) => panic!("get of {} failed: {err}", reference.uri),
    }
}

fn assert_same(actual: &Bytes, expected: &Bytes, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    assert!(actual == expected, "{what}: the bytes differ");
}

async fn raw_object(f: &Fixture, hash: &ContentHash) -> Bytes {
    let result = f
        .raw
        .get(&key_in(f, hash))
        .await
        .expect("the raw object exists");
    result.bytes().await.expect("the raw object reads")
}

async fn replace_raw_object(f: &Fixture, hash: &ContentHash, bytes: Vec<u8>) {
    f.raw
        .put(&key_in(f, hash), PutPayload::from(bytes))
        .await
        .expect("the raw object is overwritten");
}

fn assert_details(details: &PayloadRetrievalFailedDetails, reference: &PayloadReference) {
    assert_eq!(details.storage_type, reference.storage_type);
    assert_eq!(details.uri, reference.uri);
    assert_eq!(details.content_hash, reference.content_hash);
    assert_eq!(details.original_size, reference.original_size);
    assert!(!details.error.is_empty(), "the details say what went wrong");
}

/// Asserts `result` is an integrity failure of `reference`; returns its message.
fn expect_integrity_failed(
    result: wharf_core::Result<Bytes>,
    reference: &PayloadReference,
    what: &str,
) -> String {
    match result {
        Err(Error::IntegrityFailed { details }) => {
            assert_details(&details, reference);
            details.error
        }
        Err(other) => panic!("{what}: expected IntegrityFailed, got {other:?}"),
        Ok(bytes) => panic!(
            "{what}: a damaged object was handed out ({} bytes)",
            bytes.len()
        ),
    }
}

fn expect_retrieval_failed(
    result: wharf_core::Result<Bytes>,
    failure: PayloadFailure,
    reference: &PayloadReference,
) -> String {
    match result {
        Err(Error::PayloadRetrievalFailed {
            failure: actual,
            details,
        }) => {
            assert_eq!(actual, failure, "{}", details.error);
            assert_details(&details, reference);
            details.error
        }
        other => panic!("expected PayloadRetrievalFailed({failure:?}), got {other:?}"),
    }
}

async fn list_all(store: &PayloadStore) -> Vec<StoredPayload> {
    let mut list: Vec<StoredPayload> = futures::TryStreamExt::try_collect(store.list())
        .await
        .expect("list");
    list.sort_by_key(|p| p.hash);
    list
}

pub async fn payloads_of_every_size_round_trip(f: &Fixture) {
    for (seed, size) in [
        (0, 0),
        (1, 1),
        (2, 100),
        (3, MIB - 1),
        (4, MIB + 1),
        (5, 3 * MIB + 7),
    ] {
        let data = payload(seed, size);
        let reference = put(&f.store, &data).await;
        let hash = sha256(&data);
        assert_eq!(reference.storage_type, f.storage_type);
        assert_eq!(
            reference.content_hash, hash,
            "the hash is of the original bytes"
        );
        assert_eq!(reference.original_size, size as u64);
        assert_eq!(reference.uri, f.store.uri(&hash));
        assert!(
            reference
                .uri
                .ends_with(&format!("{}{}.bin", f.prefix, hash.to_hex())),
            "{}",
            reference.uri
        );
        assert_eq!(reference.stored_at, f.clock.now());
        assert_same(
            &get(&f.store, &reference).await,
            &data,
            &format!("{} {size}", f.variant.name),
        );
        let stored = raw_object(f, &hash).await;
        if f.variant.is_plain() {
            assert!(stored == data, "without a codec the object is the payload");
        } else {
            assert_eq!(&stored[..4], &MAGIC, "with a codec the object is framed");
        }
    }
}

pub async fn putting_the_same_payload_twice_stores_one_object(f: &Fixture) {
    let data = payload(10, 300_000);
    let first = put(&f.store, &data).await;
    f.clock.advance(Duration::from_secs(60));
    let second = put(&f.store, &data).await;
    assert_eq!(second.uri, first.uri);
    assert_eq!(second.content_hash, first.content_hash);
    assert_eq!(second.original_size, first.original_size);
    assert_eq!(
        second.stored_at,
        first.stored_at.saturating_add(Duration::from_secs(60)),
        "a dedup hit is stamped now"
    );
    assert_eq!(list_all(&f.store).await.len(), 1);
    assert_eq!(f.store.stats().await.expect("stats").objects, 1);
    assert_same(&get(&f.store, &second).await, &data, "after the dedup hit");
}

pub async fn an_object_stored_by_someone_else_is_a_dedup_hit(f: &Fixture) {
    let data = payload(11, 70_000);
    let hash = sha256(&data);
    replace_raw_object(f, &hash, data.to_vec()).await;
    let reference = f
        .store
        .put(&data)
        .await
        .expect("an existing object is not an error");
    assert_eq!(reference.uri, f.store.uri(&hash));
    assert_same(
        &get(&f.store, &reference).await,
        &data,
        "the planted object",
    );
    assert_eq!(f.store.stats().await.expect("stats").objects, 1);
}

pub async fn concurrent_puts_of_one_payload_store_one_object(f: &Fixture) {
    let data = payload(12, 2 * MIB);
    let puts = (0..8).map(|_| {
        let (store, data) = (f.store.clone(), data.clone());
        tokio::spawn(async move { store.put(&data).await })
    });
    let mut uris = BTreeSet::new();
    for done in futures::future::join_all(puts).await {
        uris.insert(
            done.expect("task")
                .expect("every concurrent put succeeds")
                .uri,
        );
    }
    assert_eq!(uris.len(), 1, "one URI: {uris:?}");
    assert_eq!(f.store.stats().await.expect("stats").objects, 1);
    let reference = put(&f.store, &data).await;
    assert_same(
        &get(&f.store, &reference).await,
        &data,
        "after concurrent puts",
    );
}

pub async fn a_missing_object_is_not_found_with_the_reference_details(f: &Fixture) {
    let data = payload(13, 5000);
    let hash = sha256(&data);
    let reference = PayloadReference {
        storage_type: f.storage_type,
        uri: f.store.uri(&hash),
        content_hash: hash,
        original_size: data.len() as u64,
        stored_at: f.clock.now(),
    };
    let result = f.store.get(&reference).await;
    let err = result.as_ref().expect_err("nothing is stored").clone();
    let message = expect_retrieval_failed(result, PayloadFailure::NotFound, &reference);
    assert!(
        err.payload_details()
            .is_some_and(|(failure, _)| failure == PayloadFailure::NotFound)
    );
    assert!(
        err.to_string().contains(&reference.uri),
        "the error names the URI: {err}"
    );
    assert!(!message.is_empty());
}

pub async fn a_corrupted_object_fails_its_integrity_check(f: &Fixture) {
    let data = payload(14, 2 * MIB + 100);
    let reference = put(&f.store, &data).await;
    let stored = raw_object(f, &reference.content_hash).await;
    for at in [stored.len() / 2, stored.len() - 1] {
        let mut damaged = stored.to_vec();
        damaged[at] ^= 0x01;
        replace_raw_object(f, &reference.content_hash, damaged).await;
        let what = format!("{}: a bit flipped at {at}", f.variant.name);
        expect_integrity_failed(f.store.get(&reference).await, &reference, &what);
    }
    let other = payload(15, data.len());
    let replaced = if f.variant.is_plain() {
        other.to_vec()
    } else {
        raw_bytes_of(f, &other).await
    };
    replace_raw_object(f, &reference.content_hash, replaced).await;
    expect_integrity_failed(
        f.store.get(&reference).await,
        &reference,
        "another payload's object",
    );
}

/// The object `data` is stored as, via a second key-path: store it, read it
/// raw, delete it.
async fn raw_bytes_of(f: &Fixture, data: &Bytes) -> Vec<u8> {
    let reference = put(&f.store, data).await;
    let bytes = raw_object(f, &reference.content_hash).await.to_vec();
    assert!(
        f.store
            .delete(&reference.content_hash)
            .await
            .expect("delete")
    );
    bytes
}

pub async fn a_truncated_object_fails_its_integrity_check(f: &Fixture) {
    let data = payload(16, 2 * MIB + 5);
    let reference = put(&f.store, &data).await;
    let stored = raw_object(f, &reference.content_hash).await;
    for keep in [stored.len() - 1, stored.len() / 2, 30, 0] {
        replace_raw_object(f, &reference.content_hash, stored[..keep].to_vec()).await;
        let what = format!(
            "{}: truncated to {keep} of {} bytes",
            f.variant.name,
            stored.len()
        );
        expect_integrity_failed(f.store.get(&reference).await, &reference, &what);
    }
}

pub async fn a_reference_with_the_wrong_size_fails_its_integrity_check(f: &Fixture) {
    let data = payload(17, 10_000);
    let reference = put(&f.store, &data).await;
    for size in [reference.original_size + 1, reference.original_size - 1, 0] {
        let wrong = PayloadReference {
            original_size: size,
            ..reference.clone()
        };
        expect_integrity_failed(f.store.get(&wrong).await, &wrong, &format!("size {size}"));
    }
    assert_same(
        &get(&f.store, &reference).await,
        &data,
        "the right reference still reads",
    );
}

pub async fn delete_reports_whether_the_object_existed(f: &Fixture) {
    let data = payload(18, 4000);
    let reference = put(&f.store, &data).await;
    assert!(
        f.store
            .head(&reference.content_hash)
            .await
            .expect("head")
            .is_some()
    );
    assert!(
        f.store
            .delete(&reference.content_hash)
            .await
            .expect("delete"),
        "it existed"
    );
    assert_eq!(
        f.store.head(&reference.content_hash).await.expect("head"),
        None
    );
    expect_retrieval_failed(
        f.store.get(&reference).await,
        PayloadFailure::NotFound,
        &reference,
    );
    assert!(
        !f.store
            .delete(&reference.content_hash)
            .await
            .expect("delete again"),
        "it is gone"
    );
    let again = put(&f.store, &data).await;
    assert_same(
        &get(&f.store, &again).await,
        &data,
        "stored anew after the delete",
    );
}

pub async fn list_stats_and_head_describe_the_stored_objects(f: &Fixture) {
    assert!(list_all(&f.store).await.is_empty());
    let stats = f.store.stats().await.expect("stats");
    assert_eq!((stats.objects, stats.bytes), (0, 0));
    let before = SystemTime::now() - Duration::from_secs(600);
    let mut references = Vec::new();
    for (seed, size) in [(20, 1000), (21, 200_000), (22, 1_500_000)] {
        references.push(put(&f.store, &payload(seed, size)).await);
    }
    let after = SystemTime::now() + Duration::from_secs(600);
    let listed = list_all(&f.store).await;
    let hashes: BTreeSet<_> = references.iter().map(|r| r.content_hash).collect();
    assert_eq!(
        listed.iter().map(|p| p.hash).collect::<BTreeSet<_>>(),
        hashes
    );
    let mut total = 0;
    for item in &listed {
        let raw = f.raw.head(&key_in(f, &item.hash)).await.expect("raw head");
        assert_eq!(
            item.stored_bytes, raw.size,
            "listed size is the stored size"
        );
        total += item.stored_bytes;
        let head = f
            .store
            .head(&item.hash)
            .await
            .expect("head")
            .expect("present");
        assert_eq!(head.hash, item.hash);
        assert_eq!(head.stored_bytes, item.stored_bytes);
        let written = head.last_modified.to_system_time();
        assert!(
            written > before && written < after,
            "last_modified {} is now-ish",
            head.last_modified
        );
        assert!(item.last_modified > Timestamp::EPOCH);
    }
    if f.variant.is_plain() {
        assert_eq!(total, 1000 + 200_000 + 1_500_000);
    }
    let stats = f.store.stats().await.expect("stats");
    assert_eq!((stats.objects, stats.bytes), (3, total));
    assert_eq!(
        f.store.head(&sha256(b"never stored")).await.expect("head"),
        None
    );
}

pub async fn objects_land_under_the_prefix_and_foreign_keys_are_ignored(f: &Fixture) {
    let data = payload(23, 5000);
    let reference = put(&f.store, &data).await;
    let hex = reference.content_hash.to_hex();
    let key = format!("{}{hex}.bin", f.prefix);
    assert!(
        reference.uri.ends_with(&key),
        "{} ends with {key}",
        reference.uri
    );
    f.raw
        .head(&Path::parse(&key).expect("key"))
        .await
        .expect("the object is under the prefix");
    assert_eq!(f.store.object_key(&reference.content_hash).as_ref(), key);

    let other = sha256(b"someone else's object").to_hex();
    let foreign = [
        format!("{}notes.txt", f.prefix),
        format!("{}nested/{other}.bin", f.prefix),
        format!("{}{}.bin", f.prefix, other.to_uppercase()),
        format!("{}{other}.bin.tmp", f.prefix),
        format!("{}{}.bin", f.prefix, &other[..63]),
        format!("elsewhere/{other}.bin"),
    ];
    for key in &foreign {
        f.raw
            .put(
                &Path::parse(key).expect("foreign key"),
                PutPayload::from_static(b"not a payload"),
            )
            .await
            .expect("plant a foreign object");
    }
    let listed = list_all(&f.store).await;
    assert_eq!(
        listed.iter().map(|p| p.hash).collect::<Vec<_>>(),
        vec![reference.content_hash]
    );
    assert_eq!(f.store.stats().await.expect("stats").objects, 1);
    let other_hash: ContentHash = other.parse().expect("hex");
    assert_eq!(f.store.head(&other_hash).await.expect("head"), None);
}

pub async fn a_large_payload_round_trips_through_the_multipart_path(f: &Fixture) {
    let data = payload(24, 40 * MIB);
    assert!(data.len() > MULTIPART_THRESHOLD);
    let reference = put(&f.store, &data).await;
    assert_eq!(reference.original_size, data.len() as u64);
    assert_same(&get(&f.store, &reference).await, &data, "40 MiB");
    let stored = f
        .raw
        .head(&key_in(f, &reference.content_hash))
        .await
        .expect("raw head");
    if f.variant.is_plain() {
        assert_eq!(stored.size, data.len() as u64);
    }
    let again = put(&f.store, &data).await;
    assert_eq!(again.uri, reference.uri, "a large dedup hit");
    assert_eq!(f.store.stats().await.expect("stats").objects, 1);
}

pub async fn objects_written_before_the_codec_changed_still_read(f: &Fixture) {
    let plain = f.open(&Variant::plain());
    let old = payload(25, MIB + 3);
    let written_plain = put(&plain, &old).await;
    assert_same(
        &get(&f.store, &written_plain).await,
        &old,
        "a raw object read with the codec",
    );

    let toggled = Variant {
        compression: match f.variant.compression {
            Compression::None => Compression::Zstd,
            Compression::Zstd => Compression::None,
        },
        ..f.variant.clone()
    };
    let new = payload(26, MIB + 5);
    let written_now = put(&f.store, &new).await;
    let reader = f.open(&toggled);
    assert_same(
        &get(&reader, &written_now).await,
        &new,
        "read with compression toggled",
    );
}

pub async fn a_wrong_encryption_key_fails_with_decryption_failed(f: &Fixture) {
    assert!(f.variant.key.is_some(), "an encrypted variant");
    let data = payload(27, MIB + 9);
    let reference = put(&f.store, &data).await;
    let wrong = f.open(&f.variant.with_key(Some(KEY_B)));
    let message = expect_integrity_failed(wrong.get(&reference).await, &reference, "wrong key");
    assert!(message.contains("decryption failed"), "{message}");
    let keyless = f.open(&f.variant.with_key(None));
    let message = expect_integrity_failed(keyless.get(&reference).await, &reference, "no key");
    assert!(message.contains("decryption failed"), "{message}");
    assert_same(
        &get(&f.store, &reference).await,
        &data,
        "the right key still reads",
    );
}

pub async fn presigned_urls_serve_the_stored_object_where_the_store_signs(f: &Fixture) {
    let data = payload(28, 100_000);
    let reference = put(&f.store, &data).await;
    match f.storage_type {
        PayloadStorageType::Memory | PayloadStorageType::Filesystem => {
            let err = f
                .store
                .presigned_get_url(&reference, Duration::from_secs(60))
                .await
                .expect_err("no signer");
            assert!(
                matches!(&err, Error::InvalidArgument(m) if m.contains("s3 or gcs")),
                "{err}"
            );
        }
        PayloadStorageType::S3 | PayloadStorageType::Gcs => {
            let url = f
                .store
                .presigned_get_url(&reference, Duration::from_secs(60))
                .await
                .expect("presigned URL");
            install_tls_provider();
            let response = reqwest::get(&url).await.expect("GET the presigned URL");
            assert_eq!(response.status(), 200, "{url}");
            let body = response.bytes().await.expect("body");
            assert!(
                body == data,
                "a presigned URL of a raw object serves the payload"
            );
            for bad in [Duration::ZERO, Duration::from_secs(8 * 24 * 3600)] {
                let err = f
                    .store
                    .presigned_get_url(&reference, bad)
                    .await
                    .expect_err("out of bounds");
                assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
            }
        }
    }
}
