//! Times 5 MiB puts and gets of the filesystem store against the floor the
//! hardware sets: SHA-256 + write + fdatasync + rename + directory fsync for
//! a put, single-core SHA-256 for a verified get. With
//! `WHARF_TEST_S3_ENDPOINT` reachable (see the README), S3 is timed too.
//!
//! ```sh
//! cargo run --release -p wharf-payload --example put_get_timing [-- DIR [OBJECTS]]
//! ```
//!
//! `DIR` (default: a temporary directory under the current one) must be on
//! the disk being measured; `OBJECTS` (default 20) per figure.

use std::error::Error;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use wharf_core::payload::S3StoreConfig;
use wharf_core::{PayloadOffloadConfig, PayloadStorageType, SystemClock};
use wharf_payload::PayloadStore;
use wharf_payload::object_store::local::LocalFileSystem;
use wharf_payload::object_store::path::Path as ObjectPath;
use wharf_payload::object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};

const SIZE: usize = 5 << 20;

fn random(seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(SIZE);
    while out.len() < SIZE {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.into()
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The floor of a durable content-addressed put.
fn raw_put(dir: &Path, data: &[u8], n: usize) -> std::io::Result<()> {
    let name = hex(&Sha256::digest(data));
    let temp = dir.join(format!(".tmp-{n}"));
    let mut file = File::create_new(&temp)?;
    file.write_all(data)?;
    file.sync_data()?;
    drop(file);
    std::fs::rename(&temp, dir.join(format!("{name}.bin")))?;
    File::open(dir)?.sync_all()
}

fn ms(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e3 / n as f64
}

fn report(what: &str, per_op_ms: f64, floor_ms: f64) {
    println!(
        "{what:<44} {per_op_ms:>8.2} ms  {:>7.0} MB/s  {:>5.0}% of floor",
        SIZE as f64 / 1e6 / (per_op_ms / 1e3),
        floor_ms / per_op_ms * 100.0
    );
}

async fn time_store(
    store: &PayloadStore,
    objects: usize,
    seed: u64,
    floor_put: f64,
    floor_get: f64,
) -> Result<(), Box<dyn Error>> {
    let payloads: Vec<Bytes> = (0..objects as u64).map(|i| random(seed + i)).collect();
    let mut references = Vec::new();
    let started = Instant::now();
    for data in &payloads {
        references.push(store.put(data).await?);
    }
    let put = ms(started.elapsed(), objects);
    let started = Instant::now();
    for reference in &references {
        let bytes = store.get(reference).await?;
        assert_eq!(bytes.len(), SIZE);
    }
    let get = ms(started.elapsed(), objects);
    let started = Instant::now();
    for reference in &references {
        let key = store.object_key(&reference.content_hash);
        let bytes = store.object_store().get(&key).await?.bytes().await?;
        assert_eq!(bytes.len(), SIZE);
    }
    let raw_get = ms(started.elapsed(), objects);
    let name = store.storage_type();
    report(
        &format!("({name} object_store get, no verify)"),
        raw_get,
        floor_get,
    );
    report(&format!("{name} put (hash, write once)"), put, floor_put);
    report(
        &format!("{name} get (read, verify SHA-256)"),
        get,
        floor_get,
    );
    Ok(())
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .map_or_else(std::env::current_dir, |d| Ok(d.into()))?;
    let objects: usize = args.next().map_or(Ok(20), |n| n.parse())?;
    let scratch = tempfile::tempdir_in(&base)?;
    println!(
        "{objects} objects of 5 MiB in {}; medians of interleaved runs",
        scratch.path().display()
    );

    let raw_dir = scratch.path().join("raw");
    std::fs::create_dir(&raw_dir)?;
    let mut config = PayloadOffloadConfig {
        store_type: PayloadStorageType::Filesystem,
        ..PayloadOffloadConfig::default()
    };
    config.filesystem.base_path = scratch.path().join("store");
    let store = PayloadStore::from_config(&config, Arc::new(SystemClock))?;

    // Interleaved, so both see the same disk and page-cache weather.
    // For comparison: object_store's own durable local writes.
    let lfs_dir = scratch.path().join("lfs");
    std::fs::create_dir(&lfs_dir)?;
    let lfs = LocalFileSystem::new_with_prefix(&lfs_dir)?.with_fsync(true);

    let (mut floor_put, mut floor_get, mut put, mut get, mut read) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut lfs_put = vec![];
    for n in 0..objects {
        let a = random(2 * n as u64);
        let started = Instant::now();
        raw_put(&raw_dir, &a, n)?;
        floor_put.push(started.elapsed());
        let b = random(2 * n as u64 + 1);
        let started = Instant::now();
        let reference = store.put(&b).await?;
        put.push(started.elapsed());

        let c = random(u64::MAX - n as u64);
        let started = Instant::now();
        let name = format!("{}.bin", hex(&Sha256::digest(&c)));
        lfs.put_opts(
            &ObjectPath::from(name),
            PutPayload::from(c),
            PutMode::Create.into(),
        )
        .await?;
        lfs_put.push(started.elapsed());

        let started = Instant::now();
        std::hint::black_box(Sha256::digest(&a));
        floor_get.push(started.elapsed());
        let started = Instant::now();
        let bytes = store.get(&reference).await?;
        get.push(started.elapsed());
        assert_eq!(bytes.len(), SIZE);
        let started = Instant::now();
        std::hint::black_box(std::fs::read(
            raw_dir.join(format!("{}.bin", hex(&Sha256::digest(&a)))),
        )?);
        read.push(started.elapsed());
    }
    let (floor_put, floor_get) = (median(floor_put), median(floor_get));
    report(
        "floor: hash + write + fdatasync + rename + dir",
        floor_put,
        floor_put,
    );
    report(
        "filesystem put (hash, write once, durable)",
        median(put),
        floor_put,
    );
    report(
        "(LocalFileSystem::with_fsync put, hash first)",
        median(lfs_put),
        floor_put,
    );
    report("floor: SHA-256 on one core", floor_get, floor_get);
    report(
        "filesystem get (read, verify SHA-256)",
        median(get),
        floor_get,
    );
    report(
        "(for scale: std::fs::read of 5 MiB, no hash)",
        median(read),
        floor_get,
    );

    if let Ok(bucket) = std::env::var("WHARF_TIMING_S3_BUCKET") {
        let endpoint = std::env::var("WHARF_TEST_S3_ENDPOINT")
            .unwrap_or_else(|_| "http://127.0.0.1:9000".into());
        let config = PayloadOffloadConfig {
            store_type: PayloadStorageType::S3,
            s3: Some(S3StoreConfig {
                bucket,
                prefix: "timing/".into(),
                region: "us-east-1".into(),
                endpoint: Some(endpoint),
                access_key_id: Some(
                    std::env::var("WHARF_TEST_S3_ACCESS_KEY")
                        .unwrap_or_else(|_| "wharf-test-access".into()),
                ),
                secret_access_key: Some(
                    std::env::var("WHARF_TEST_S3_SECRET_KEY")
                        .unwrap_or_else(|_| "wharf-test-secret".into()),
                ),
            }),
            ..PayloadOffloadConfig::default()
        };
        let store = PayloadStore::from_config(&config, Arc::new(SystemClock))?;
        let seed = u64::from(std::process::id()) << 20;
        time_store(&store, objects, seed, floor_put, floor_get).await?;
    } else {
        println!("(set WHARF_TIMING_S3_BUCKET to an existing bucket to time S3 too)");
    }
    Ok(())
}
