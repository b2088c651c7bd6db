//! The `physical` suite: this machine's raw limits, measured without Wharf.
//!
//! Every durable Wharf operation ends in the same few primitives: append + fdatasync
//! (the event log), larger sequential writes + fdatasync (batches), SHA-256 and
//! write-then-rename (content-addressed payloads). Measuring those primitives directly on
//! the same disk, in the same run, lets later suites state their results as a fraction of
//! what the hardware can do at all ("wharf appends at 80% of raw fdatasync rate") instead
//! of as bare numbers that mean little on a different machine.
//!
//! All rows use system `machine`. Files live in the suite's scratch directory, which the
//! caller places on the disk under test (never tmpfs unless asked to).

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::harness::{BenchConfig, BenchResult, Harness, Measurement, random_bytes};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// Throughput figures use decimal megabytes, as disk vendors and most tools do.
const MB: f64 = 1e6;

/// Runs the physical suite; see the module docs.
pub fn run(config: &BenchConfig) -> anyhow::Result<Vec<BenchResult>> {
    let mut h = Harness::new("physical", config);
    let dir = config.dir.as_path();

    let append_for = config.pick(Duration::from_secs(2), Duration::from_secs(1));
    let mut run_no = 0u64;
    h.measure("append_fsync_4k", "machine", "fdatasync", "ops/s", || {
        run_no += 1;
        append_fsync(dir, run_no, 4 * KIB, append_for)
    })?;

    // Each file has the size the workload is named after, but on a disk with a fast
    // (e.g. host-cached) fdatasync one file takes only milliseconds, far too short to time
    // reliably; files are therefore repeated until `seq_min` of writing has been timed.
    // `seq_cap` bounds a run on a very slow disk, even in the middle of a file.
    let seq_file = config.pick(64 * MIB, 24 * MIB);
    let seq_min = config.pick(Duration::from_millis(1500), Duration::from_millis(500));
    let seq_cap = config.pick(Duration::from_secs(8), Duration::from_secs(3));
    for (workload, chunk) in [
        ("seq_write_fsync_100k", 100 * KIB),
        ("seq_write_fsync_1m", MIB),
    ] {
        let mut run_no = 0u64;
        h.measure(workload, "machine", "fdatasync", "MB/s", || {
            run_no += 1;
            let shape = SeqShape {
                chunk,
                file_size: seq_file,
                min_time: seq_min,
                cap: seq_cap,
            };
            seq_write_fsync(dir, workload, run_no, shape)
        })?;
    }

    let hash_input = random_bytes(0x5AA5, 64 * MIB);
    let hash_for = config.pick(Duration::from_secs(1), Duration::from_millis(300));
    h.measure("sha256_single_core", "machine", "n/a", "MB/s", || {
        Ok(sha256_throughput(&hash_input, hash_for))
    })?;
    drop(hash_input);

    // Same reasoning as for sequential writes: at least `min_objects`, and more until
    // `min_time` of writing has been timed (bounded by `MAX_CAS_OBJECTS`).
    let cas = CasShape {
        size: 5 * MIB,
        min_objects: config.pick(10, 5),
        min_time: config.pick(Duration::from_secs(1), Duration::from_millis(300)),
    };
    let mut run_no = 0u64;
    h.measure_many("machine", "fdatasync+dir-fsync", || {
        run_no += 1;
        cas_write(dir, run_no, &cas)
    })?;

    Ok(h.into_results())
}

/// Appends `block`-sized writes, each followed by `fdatasync`, for `duration`; ops/s.
///
/// Nothing is preallocated: every sync also has to persist the grown file size, exactly
/// like an append-only log segment does.
fn append_fsync(dir: &Path, run_no: u64, block: usize, duration: Duration) -> anyhow::Result<f64> {
    let path = dir.join(format!("append-{run_no}.log"));
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let data = random_bytes(run_no, block);
    let mut ops = 0u64;
    let start = Instant::now();
    let elapsed = loop {
        file.write_all(&data)
            .with_context(|| format!("appending to {}", path.display()))?;
        file.sync_data()
            .with_context(|| format!("fdatasync of {}", path.display()))?;
        ops += 1;
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break elapsed;
        }
    };
    drop(file);
    remove(&path)?;
    Ok(ops as f64 / elapsed.as_secs_f64())
}

/// Parameters of one sequential-write run.
#[derive(Debug, Clone, Copy)]
struct SeqShape {
    /// Bytes per write; each write is followed by `fdatasync`.
    chunk: usize,
    /// Bytes per file before a fresh file is started.
    file_size: usize,
    /// Keep starting new files until this much writing has been timed.
    min_time: Duration,
    /// Stop (even mid-file) once this much writing has been timed.
    cap: Duration,
}

/// Writes `chunk`-sized pieces sequentially into fresh files, `fdatasync` after each
/// piece; MB/s over the timed writing only (creating and deleting files is not timed).
fn seq_write_fsync(
    dir: &Path,
    workload: &str,
    run_no: u64,
    shape: SeqShape,
) -> anyhow::Result<f64> {
    let data = random_bytes(run_no, shape.chunk);
    let mut written = 0usize;
    let mut timed = Duration::ZERO;
    for file_no in 0u64.. {
        let path = dir.join(format!("{workload}-{run_no}-{file_no}.dat"));
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let start = Instant::now();
        let mut in_file = 0usize;
        while in_file < shape.file_size && timed + start.elapsed() < shape.cap {
            file.write_all(&data)
                .with_context(|| format!("writing to {}", path.display()))?;
            file.sync_data()
                .with_context(|| format!("fdatasync of {}", path.display()))?;
            in_file += shape.chunk;
        }
        timed += start.elapsed();
        written += in_file;
        drop(file);
        remove(&path)?;
        if timed >= shape.min_time || timed >= shape.cap {
            break;
        }
    }
    Ok(written as f64 / MB / timed.as_secs_f64())
}

/// Hashes `input` whole, repeatedly, on this thread for at least `duration`; MB/s.
///
/// A single pass over 64 MiB takes only tens of milliseconds with SHA-NI, too short to
/// time reliably, so passes repeat. The buffer is larger than any CPU cache, so this is
/// the rate for data streaming from memory, as payload bytes would be. sha2 picks
/// SHA-NI/AVX implementations at runtime when the CPU has them.
pub(crate) fn sha256_throughput(input: &[u8], duration: Duration) -> f64 {
    let mut hashed = 0usize;
    let start = Instant::now();
    let elapsed = loop {
        black_box(Sha256::digest(black_box(input)));
        hashed += input.len();
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break elapsed;
        }
    };
    hashed as f64 / MB / elapsed.as_secs_f64()
}

/// Upper bound on objects per CAS run, so a very fast disk cannot fill the scratch
/// directory (100 × 5 MiB = 500 MiB).
const MAX_CAS_OBJECTS: usize = 100;

/// Parameters of one content-addressed-write run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CasShape {
    /// Bytes per object.
    pub(crate) size: usize,
    /// Objects written at least.
    pub(crate) min_objects: usize,
    /// Keep writing objects until this much time has been timed.
    pub(crate) min_time: Duration,
}

/// Content-addressed writes of distinct random objects.
///
/// Per object: SHA-256, write to a temp file, fdatasync, rename to `{hex}.bin`, fsync
/// the directory (so the rename itself is durable). This is the floor for a filesystem
/// payload-offload `put`. Only those steps are timed (generating the random object is
/// not). Reports mean milliseconds per object and the matching MB/s.
pub(crate) fn cas_write(
    dir: &Path,
    run_no: u64,
    shape: &CasShape,
) -> anyhow::Result<Vec<Measurement>> {
    let run_dir = dir.join(format!("cas-{run_no}"));
    std::fs::create_dir(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;

    let mut timed = Duration::ZERO;
    let mut objects = 0usize;
    while objects < MAX_CAS_OBJECTS && (objects < shape.min_objects || timed < shape.min_time) {
        // Distinct seeds across runs and objects: no name collides with an earlier one,
        // which would turn a write into an overwrite of an existing object.
        let buffer = random_bytes((run_no << 32) | objects as u64, shape.size);
        let start = Instant::now();
        let hex = to_hex(&Sha256::digest(&buffer));
        let tmp = run_dir.join(format!(".tmp-{objects}"));
        let mut file =
            File::create_new(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(&buffer)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.sync_data()
            .with_context(|| format!("fdatasync of {}", tmp.display()))?;
        drop(file);
        let target = run_dir.join(format!("{hex}.bin"));
        std::fs::rename(&tmp, &target)
            .with_context(|| format!("renaming {} to {}", tmp.display(), target.display()))?;
        sync_dir(&run_dir)?;
        timed += start.elapsed();
        objects += 1;
    }

    std::fs::remove_dir_all(&run_dir).with_context(|| format!("removing {}", run_dir.display()))?;
    let elapsed = timed.as_secs_f64();
    let ms_per_object = elapsed * 1e3 / objects as f64;
    let mb_per_s = (shape.size * objects) as f64 / MB / elapsed;
    Ok(vec![
        Measurement::new("cas_write_5mib", "ms", ms_per_object),
        Measurement::new("cas_write_5mib_throughput", "MB/s", mb_per_s),
    ])
}

/// fsync of a directory: makes the entries created/renamed in it durable.
fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync of directory {}", dir.display()))
}

fn remove(path: &Path) -> anyhow::Result<()> {
    std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))
}

fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_write_stops_at_the_cap_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let shape = SeqShape {
            chunk: 4096,
            file_size: 64 * 1024,
            min_time: Duration::from_secs(60),
            cap: Duration::from_millis(50),
        };
        let started = Instant::now();
        let mb_per_s = seq_write_fsync(dir.path(), "t", 1, shape).unwrap();
        assert!(mb_per_s > 0.0);
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn hex_is_lowercase_and_zero_padded() {
        assert_eq!(to_hex(&[0x00, 0x0f, 0xab]), "000fab");
    }

    #[test]
    fn cas_write_reports_time_and_throughput_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let shape = CasShape {
            size: 4096,
            min_objects: 2,
            min_time: Duration::ZERO,
        };
        let rows = cas_write(dir.path(), 1, &shape).unwrap();
        assert_eq!(rows[0].workload, "cas_write_5mib");
        assert!(rows.iter().all(|m| m.value > 0.0));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
