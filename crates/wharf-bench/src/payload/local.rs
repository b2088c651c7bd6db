//! The in-process workloads: puts and gets through the engine to the filesystem and S3
//! stores, next to the raw machine primitives a put and a get are made of, measured
//! interleaved with them so that both sides of every ratio meet the same conditions.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use sha2::{Digest, Sha256};
use tokio::runtime::Runtime;
use wharf::PayloadReference;

use super::engine::{Target, Written};
use super::rows::{Key, Rows};
use super::{SIZE, mb_per_s, ms_per_object, seed};
use crate::physical::{self, CasShape};

const WHARF: &str = "wharf";
const MACHINE: &str = "machine";
const FS: &str = "payload: fdatasync + dir fsync; event: SQLite WAL fdatasync per commit (full)";
const COMMIT: &str = "SQLite WAL fdatasync per commit (full)";
const CAS: &str = "fdatasync+dir-fsync";
const READ: &str = "n/a (read, warm page cache)";
const S3: &str =
    "payload: s3s-fs on loopback (no fsync); event: SQLite WAL fdatasync per commit (full)";
const S3_READ: &str = "n/a (read from s3s-fs, warm page cache)";

const CAS_MS: Key = Key::new("cas_write_5mib", MACHINE, CAS, "ms");
const CAS_MBPS: Key = Key::new("cas_write_5mib", MACHINE, CAS, "MB/s");
const PUT_FS_MS: Key = Key::new("put_5mib_engine_fs", WHARF, FS, "ms");
const PUT_FS_MBPS: Key = Key::new("put_5mib_engine_fs", WHARF, FS, "MB/s");
const PUT_FS_RATIO: Key = Key::new("put_5mib_engine_fs_vs_raw", WHARF, FS, "%");
const INLINE_MS: Key = Key::new("append_1kib_inline", WHARF, COMMIT, "ms");
const SHA: Key = Key::new("sha256_single_core", MACHINE, "n/a", "MB/s");
const GET_FS_MBPS: Key = Key::new("get_5mib_engine_fs", WHARF, READ, "MB/s");
const GET_FS_MS: Key = Key::new("get_5mib_engine_fs", WHARF, READ, "ms");
const GET_FS_RATIO: Key = Key::new("get_5mib_engine_fs_vs_sha256", WHARF, READ, "%");
const READ_VERIFY: Key = Key::new("read_verify_5mib", MACHINE, READ, "MB/s");
const PUT_S3_MS: Key = Key::new("put_5mib_engine_s3", WHARF, S3, "ms");
const PUT_S3_MBPS: Key = Key::new("put_5mib_engine_s3", WHARF, S3, "MB/s");
const GET_S3_MS: Key = Key::new("get_5mib_engine_s3", WHARF, S3_READ, "ms");
const GET_S3_MBPS: Key = Key::new("get_5mib_engine_s3", WHARF, S3_READ, "MB/s");

/// Size of the inline event whose append measures the cost of committing an event alone.
const INLINE_SIZE: usize = 1024;

/// What one run of the local workloads needs.
pub struct Local<'a> {
    pub rt: &'a Runtime,
    /// The engine offloading to the filesystem store.
    pub fs: &'a Target,
    /// The engine offloading to the S3 store.
    pub s3: &'a Target,
    /// Where raw CAS writes go: the suite's directory, on the same disk as the store.
    pub cas_dir: &'a Path,
    /// Payloads per workload.
    pub objects: usize,
    /// Single-core SHA-256 is measured for this long, half before and half after the gets.
    pub hash_for: Duration,
    /// What SHA-256 is measured on: larger than any cache, like payload bytes arriving.
    pub hash_input: &'a [u8],
}

impl Local<'_> {
    /// Run `run` (1-based) of every local workload.
    pub fn measure(&self, rows: &mut Rows, run: usize) -> anyhow::Result<()> {
        let written = self.put_fs(rows, run)?;
        self.get_fs(rows, run, &written)?;
        self.s3(rows, run)
    }

    /// Engine puts to the filesystem store against raw CAS writes, and the commit of an
    /// inline event (the engine's other cost), object by object.
    fn put_fs(&self, rows: &mut Rows, run: usize) -> anyhow::Result<Vec<Written>> {
        let stream = format!("put-fs-{run}");
        let inline_stream = format!("inline-{run}");
        let (mut raw, mut engine, mut inline) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let mut written = Vec::with_capacity(self.objects);
        for i in 0..self.objects {
            // Which of the pair goes first alternates, so that neither always meets the
            // disk right after the other's writes.
            let raw_first = (run + i).is_multiple_of(2);
            if raw_first {
                raw += cas_put(self.cas_dir, run, i)?;
            }
            let (elapsed, mut one) = self.rt.block_on(
                self.fs
                    .append_each(&stream, std::iter::once(seed(1, run, i))),
            )?;
            engine += elapsed;
            written.append(&mut one);
            if !raw_first {
                raw += cas_put(self.cas_dir, run, i)?;
            }
            inline += self
                .rt
                .block_on(self.fs.append_inline(&inline_stream, INLINE_SIZE))?;
        }
        let n = self.objects;
        rows.add(run, CAS_MS, ms_per_object(n, raw));
        rows.add(run, CAS_MBPS, mb_per_s(n, raw));
        rows.add(run, PUT_FS_MS, ms_per_object(n, engine));
        rows.add(run, PUT_FS_MBPS, mb_per_s(n, engine));
        rows.add(
            run,
            PUT_FS_RATIO,
            raw.as_secs_f64() / engine.as_secs_f64() * 100.0,
        );
        rows.add(run, INLINE_MS, ms_per_object(n, inline));
        Ok(written)
    }

    /// Engine gets of what [`Local::put_fs`] wrote against single-core SHA-256 (measured
    /// around them) and against reading and hashing the same files directly.
    fn get_fs(&self, rows: &mut Rows, run: usize, written: &[Written]) -> anyhow::Result<()> {
        let stream = format!("put-fs-{run}");
        let half = self.hash_for / 2;
        let before = physical::sha256_throughput(self.hash_input, half);
        let mut engine = Duration::ZERO;
        let mut references = Vec::with_capacity(written.len());
        for w in written {
            let (elapsed, reference) = self.rt.block_on(self.fs.read_one(&stream, w))?;
            engine += elapsed;
            references.push(reference);
        }
        // After all gets rather than after each, so that no object is still in the CPU's
        // cache from its get.
        let mut raw = Duration::ZERO;
        for reference in &references {
            raw += read_verify(reference)?;
        }
        let after = physical::sha256_throughput(self.hash_input, half);
        let sha = (before + after) / 2.0;

        let n = written.len();
        let get = mb_per_s(n, engine);
        rows.add(run, SHA, sha);
        rows.add(run, GET_FS_MBPS, get);
        rows.add(run, GET_FS_MS, ms_per_object(n, engine));
        rows.add(run, GET_FS_RATIO, get / sha * 100.0);
        rows.add(run, READ_VERIFY, mb_per_s(n, raw));
        Ok(())
    }

    /// Engine puts, then gets, through the S3 store.
    fn s3(&self, rows: &mut Rows, run: usize) -> anyhow::Result<()> {
        let stream = format!("put-s3-{run}");
        let seeds = (0..self.objects).map(|i| seed(2, run, i));
        let (put, written) = self.rt.block_on(self.s3.append_each(&stream, seeds))?;
        let get = self.rt.block_on(self.s3.read_each(&stream, &written))?;
        let n = self.objects;
        rows.add(run, PUT_S3_MS, ms_per_object(n, put));
        rows.add(run, PUT_S3_MBPS, mb_per_s(n, put));
        rows.add(run, GET_S3_MS, ms_per_object(n, get));
        rows.add(run, GET_S3_MBPS, mb_per_s(n, get));
        Ok(())
    }
}

/// One raw content-addressed write of a 5 MiB object (`physical`'s primitive); its time.
fn cas_put(dir: &Path, run: usize, index: usize) -> anyhow::Result<Duration> {
    let shape = CasShape {
        size: SIZE,
        min_objects: 1,
        min_time: Duration::ZERO,
    };
    // `physical` derives the object's seed and directory from its run number; one number
    // per object keeps both distinct.
    let call = (run * 1_000_000 + index) as u64;
    let measured = physical::cas_write(dir, call, &shape)?;
    let ms = measured
        .iter()
        .find(|m| m.unit == "ms")
        .context("the CAS write reported no time")?
        .value;
    Ok(Duration::from_secs_f64(ms / 1e3))
}

/// Reads the file of a filesystem-store reference and checks its SHA-256: a verified get
/// without the engine and the store around it; its time.
fn read_verify(reference: &PayloadReference) -> anyhow::Result<Duration> {
    let path = url::Url::parse(&reference.uri)
        .ok()
        .and_then(|uri| uri.to_file_path().ok())
        .ok_or_else(|| anyhow!("`{}` is not a file:// URI", reference.uri))?;
    let started = Instant::now();
    let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let verified = Sha256::digest(&data)[..] == reference.content_hash.0[..];
    let elapsed = started.elapsed();
    ensure!(verified, "{} does not hash to its name", path.display());
    Ok(elapsed)
}
