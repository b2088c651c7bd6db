//! The `payload` suite: 5 MiB payloads through payload offloading (DESIGN.md §4), next to
//! the raw machine primitives they are built on and the peers that move large messages.
//!
//! Every payload is 5 MiB of random bytes, distinct in every run and iteration, so content
//! addressing never finds a duplicate and every put really writes. Workloads, each run
//! doing `objects` payloads (32; 6 under `--quick`), one operation in flight at a time:
//!
//! - `put_5mib_engine_fs` / `cas_write_5mib`: [`wharf::Wharf::append`] of one event whose
//!   data is offloaded to the filesystem store (threshold 256 KiB, full durability), against
//!   the raw content-addressed write of `physical` (SHA-256, write, fdatasync, rename,
//!   directory fsync) on the same disk, object by object in alternating order;
//!   `put_5mib_engine_fs_vs_raw` is the engine's throughput as a share of the raw one, run
//!   by run.
//! - `get_5mib_engine_fs` / `sha256_single_core`: [`wharf::Wharf::read_stream`] of each of
//!   those events, which reads the object and verifies its SHA-256, against single-core
//!   SHA-256 over a 64 MiB buffer, measured right before and after the reads;
//!   `get_5mib_engine_fs_vs_sha256` is their ratio. The objects were just written, so reads
//!   hit a warm page cache.
//! - `put_5mib_engine_s3` / `get_5mib_engine_s3`: the same two through the S3 store, against
//!   the S3-compatible server on loopback (see [`s3`]).
//! - `append_5mib_grpc`, `read_5mib_grpc`, `append_read_5mib_grpc`: a Wharf server in this
//!   process (offloading to the filesystem store) reached through [`wharf_client::Client`];
//!   appends one by one, then reads each back. The combined figure is the payload bytes
//!   over the time of both phases.
//! - `append_5mib_amqp`, `read_5mib_amqp`, `append_read_5mib_amqp`: RabbitMQ doing the same
//!   (see [`rabbitmq`]).
//! - `append_5mib_nats`: NATS JetStream refuses the message (1 MiB `max_payload` by default);
//!   the row is 0 with the refusal as its note (see [`jetstream`]).
//!
//! Throughput is decimal MB/s of payload bytes; only the operations themselves are timed,
//! never making the random payloads or checking what was read back.

mod engine;
mod grpc;
mod jetstream;
mod rabbitmq;
mod s3;

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use tokio::runtime::Runtime;

use crate::harness::{BenchConfig, BenchResult, Harness, format_value, random_bytes};
use crate::physical::{self, CasShape};
use engine::Target;

/// The payload size of every workload.
const SIZE: usize = 5 * 1024 * 1024;
/// Payloads larger than this are offloaded (DESIGN.md §4's example value).
const THRESHOLD: u64 = 256 * 1024;
/// Decimal megabytes, as in every suite.
const MB: f64 = 1e6;
/// Bytes checked against the expected payload after each read (untimed): the engine
/// verifies the full SHA-256 itself; this catches an answer with the wrong payload.
const CHECKED_PREFIX: usize = 64;

const WHARF: &str = "wharf";
const MACHINE: &str = "machine";
const FS_DURABILITY: &str =
    "payload: fdatasync + dir fsync; event: SQLite WAL fsync per commit (full)";
const CAS_DURABILITY: &str = "fdatasync+dir-fsync";
const READ_DURABILITY: &str = "n/a (read, warm page cache)";
const S3_DURABILITY: &str =
    "payload: s3s-fs on loopback (no fsync); event: SQLite WAL fsync per commit (full)";
const S3_READ_DURABILITY: &str = "n/a (read from s3s-fs, warm page cache)";

/// The seed of payload `index` of run `run` in workload family `family`: distinct across
/// families, runs and indices, and distinct from the seeds `physical` uses for its CAS
/// objects, so no two payloads of one invocation are equal.
fn seed(family: u8, run: usize, index: usize) -> u64 {
    (0xC0 | u64::from(family)) << 56 | (run as u64) << 32 | index as u64
}

/// One payload: random, incompressible, identified by its seed.
fn payload(seed: u64) -> bytes::Bytes {
    bytes::Bytes::from(random_bytes(seed, SIZE))
}

/// Checks that `data` is the payload of `seed`: its size and first bytes.
fn check_payload(data: &[u8], seed: u64) -> anyhow::Result<()> {
    anyhow::ensure!(
        data.len() == SIZE,
        "read back {} bytes, expected {SIZE}",
        data.len()
    );
    anyhow::ensure!(
        data[..CHECKED_PREFIX] == random_bytes(seed, CHECKED_PREFIX)[..],
        "read back another payload than the one written (seed {seed:#x})"
    );
    Ok(())
}

fn mb_per_s(objects: usize, elapsed: Duration) -> f64 {
    (objects * SIZE) as f64 / MB / elapsed.as_secs_f64()
}

fn ms_per_object(objects: usize, elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1e3 / objects as f64
}

/// Rows measured run by run by this suite, recorded into the harness at the end.
///
/// Ratios need both of their figures from the same run, and those figures come from
/// different systems (`wharf`, `machine`), which one [`Harness::measure_many`] call
/// cannot produce; so runs are driven here and handed over with [`Harness::record`].
#[derive(Default)]
struct Rows {
    rows: Vec<Row>,
    runs: usize,
}

struct Row {
    workload: &'static str,
    system: &'static str,
    durability: &'static str,
    unit: &'static str,
    runs: Vec<f64>,
    note: Option<String>,
}

impl Rows {
    fn new(runs: usize) -> Self {
        Self {
            rows: Vec::new(),
            runs,
        }
    }

    /// Adds the value of the current run (`run`, 1-based) to the row, creating it on first use.
    fn add(
        &mut self,
        run: usize,
        workload: &'static str,
        system: &'static str,
        durability: &'static str,
        unit: &'static str,
        value: f64,
    ) {
        eprintln!(
            "[payload] {workload} ({system}, {durability}) run {run}/{}: {} {unit}",
            self.runs,
            format_value(value)
        );
        let existing = self
            .rows
            .iter_mut()
            .find(|r| r.workload == workload && r.system == system && r.unit == unit);
        match existing {
            Some(row) => row.runs.push(value),
            None => self.rows.push(Row {
                workload,
                system,
                durability,
                unit,
                runs: vec![value],
                note: None,
            }),
        }
    }

    /// Sets the note of a row added earlier (the last value wins).
    fn note(&mut self, workload: &str, system: &str, note: String) {
        if let Some(row) = self
            .rows
            .iter_mut()
            .find(|r| r.workload == workload && r.system == system)
        {
            row.note = Some(note);
        }
    }

    fn record(self, h: &mut Harness<'_>) -> anyhow::Result<()> {
        for row in self.rows {
            h.record(row.workload, row.system, row.durability, row.unit, row.runs)?;
            if let Some(note) = &row.note {
                h.note(row.workload, row.system, note)?;
            }
        }
        Ok(())
    }
}

/// Runs the payload suite; see the module docs.
pub fn run(config: &BenchConfig) -> anyhow::Result<Vec<BenchResult>> {
    let mut h = Harness::new("payload", config);
    let objects = config.pick(32, 6);
    let hash_for = config.pick(Duration::from_secs(1), Duration::from_millis(300));
    let dir = config.dir.as_path();
    let rt = h.runtime()?;

    // Every server is reached before anything is measured: one that is down fails the
    // suite at once, naming it, rather than after the others were measured.
    let s3_server = s3::S3Server::from_env()?;
    let (rabbit, nats) = rt.block_on(async {
        s3_server.check_reachable().await?;
        anyhow::Ok((
            rabbitmq::RabbitMq::connect().await?,
            jetstream::JetStream::connect().await?,
        ))
    })?;

    let bucket = s3::unique_bucket();
    rt.block_on(s3_server.create_bucket(&bucket))?;
    let measured = rt.block_on(async {
        let fs = engine::open(&dir.join("engine-fs"), engine::filesystem(dir)).await?;
        let s3 = engine::open(&dir.join("engine-s3"), s3_server.offload(&bucket)).await?;
        let server = grpc::start_server(dir).await?;
        let client = grpc::connect(&server).await?;
        anyhow::Ok((fs, s3, server, client))
    });
    let (fs, s3_engine, server, client) = match measured {
        Ok(opened) => opened,
        Err(e) => {
            let _ = rt.block_on(s3_server.remove_bucket(&bucket));
            return Err(e);
        }
    };

    let mut rows = Rows::new(config.runs);
    let hash_input = random_bytes(0x5AA5, 64 * 1024 * 1024);
    let targets = Targets {
        fs: Target::InProcess(fs.clone()),
        s3: Target::InProcess(s3_engine.clone()),
        grpc: grpc::target(client),
    };
    let measured = (1..=config.runs).try_for_each(|run| {
        let shape = RunShape {
            run,
            objects,
            hash_for,
            hash_input: &hash_input,
            cas_dir: dir,
        };
        measure_run(rt, &mut rows, &targets, &rabbit, &nats, shape)
    });

    drop(targets);
    let cleaned = rt.block_on(async {
        server.shutdown().await;
        fs.close().await;
        s3_engine.close().await;
        let removed = s3_server.remove_bucket(&bucket).await;
        let closed = rabbit.close().await;
        removed.and(closed)
    });
    measured?;
    cleaned?;
    rows.record(&mut h)?;
    Ok(h.into_results())
}

/// Where the engine workloads go.
struct Targets {
    fs: Target,
    s3: Target,
    grpc: Target,
}

#[derive(Clone, Copy)]
struct RunShape<'a> {
    /// 1-based.
    run: usize,
    objects: usize,
    hash_for: Duration,
    hash_input: &'a [u8],
    /// Where raw CAS writes go: next to the engine's payloads, on the same disk.
    cas_dir: &'a Path,
}

/// One run of every workload.
fn measure_run(
    rt: &Runtime,
    rows: &mut Rows,
    targets: &Targets,
    rabbit: &rabbitmq::RabbitMq,
    nats: &jetstream::JetStream,
    shape: RunShape<'_>,
) -> anyhow::Result<()> {
    let RunShape { run, objects, .. } = shape;

    // Raw and engine puts alternate object by object, and which of a pair goes first
    // alternates too, so that both meet the same disk state and the same background load
    // (other processes, writeback of earlier objects): their ratio is a fair pairing.
    let fs_stream = format!("put-fs-{run}");
    let mut raw = Duration::ZERO;
    let mut engine = Duration::ZERO;
    let mut written = Vec::with_capacity(objects);
    for i in 0..objects {
        let raw_first = (run + i) % 2 == 0;
        if raw_first {
            raw += cas_put(shape.cas_dir, run, i)?;
        }
        let (elapsed, mut one) = rt.block_on(
            targets
                .fs
                .append_each(&fs_stream, std::iter::once(seed(1, run, i))),
        )?;
        engine += elapsed;
        written.append(&mut one);
        if !raw_first {
            raw += cas_put(shape.cas_dir, run, i)?;
        }
    }
    rows.add(
        run,
        "cas_write_5mib",
        MACHINE,
        CAS_DURABILITY,
        "ms",
        ms_per_object(objects, raw),
    );
    rows.add(
        run,
        "cas_write_5mib",
        MACHINE,
        CAS_DURABILITY,
        "MB/s",
        mb_per_s(objects, raw),
    );
    rows.add(
        run,
        "put_5mib_engine_fs",
        WHARF,
        FS_DURABILITY,
        "ms",
        ms_per_object(objects, engine),
    );
    rows.add(
        run,
        "put_5mib_engine_fs",
        WHARF,
        FS_DURABILITY,
        "MB/s",
        mb_per_s(objects, engine),
    );
    rows.add(
        run,
        "put_5mib_engine_fs_vs_raw",
        WHARF,
        FS_DURABILITY,
        "%",
        raw.as_secs_f64() / engine.as_secs_f64() * 100.0,
    );

    // Hashing is measured for half its time before the reads and half after, so that it
    // sees the same background load as the reads it is compared with.
    let half = shape.hash_for / 2;
    let before = physical::sha256_throughput(shape.hash_input, half);
    let elapsed = rt.block_on(targets.fs.read_each(&fs_stream, &written))?;
    let after = physical::sha256_throughput(shape.hash_input, half);
    let sha = (before + after) / 2.0;
    rows.add(run, "sha256_single_core", MACHINE, "n/a", "MB/s", sha);
    let get = mb_per_s(objects, elapsed);
    rows.add(
        run,
        "get_5mib_engine_fs",
        WHARF,
        READ_DURABILITY,
        "MB/s",
        get,
    );
    rows.add(
        run,
        "get_5mib_engine_fs",
        WHARF,
        READ_DURABILITY,
        "ms",
        ms_per_object(objects, elapsed),
    );
    rows.add(
        run,
        "get_5mib_engine_fs_vs_sha256",
        WHARF,
        READ_DURABILITY,
        "%",
        get / sha * 100.0,
    );

    let s3_stream = format!("put-s3-{run}");
    let seeds = (0..objects).map(|i| seed(2, run, i));
    let (elapsed, written) = rt.block_on(targets.s3.append_each(&s3_stream, seeds))?;
    rows.add(
        run,
        "put_5mib_engine_s3",
        WHARF,
        S3_DURABILITY,
        "ms",
        ms_per_object(objects, elapsed),
    );
    rows.add(
        run,
        "put_5mib_engine_s3",
        WHARF,
        S3_DURABILITY,
        "MB/s",
        mb_per_s(objects, elapsed),
    );
    let elapsed = rt.block_on(targets.s3.read_each(&s3_stream, &written))?;
    rows.add(
        run,
        "get_5mib_engine_s3",
        WHARF,
        S3_READ_DURABILITY,
        "ms",
        ms_per_object(objects, elapsed),
    );
    rows.add(
        run,
        "get_5mib_engine_s3",
        WHARF,
        S3_READ_DURABILITY,
        "MB/s",
        mb_per_s(objects, elapsed),
    );

    let grpc_stream = format!("grpc-{run}");
    let seeds = (0..objects).map(|i| seed(3, run, i));
    let (appended, written) = rt.block_on(targets.grpc.append_each(&grpc_stream, seeds))?;
    let read = rt.block_on(targets.grpc.read_each(&grpc_stream, &written))?;
    add_round_trip(
        rows,
        run,
        objects,
        RoundTrip {
            names: [
                "append_5mib_grpc",
                "read_5mib_grpc",
                "append_read_5mib_grpc",
            ],
            system: grpc::SYSTEM,
            durability: grpc::DURABILITY,
            appended,
            read,
        },
    );

    let seeds: Vec<u64> = (0..objects).map(|i| seed(4, run, i)).collect();
    let (appended, read) = rt.block_on(rabbit.round_trip(&seeds))?;
    add_round_trip(
        rows,
        run,
        objects,
        RoundTrip {
            names: [
                "append_5mib_amqp",
                "read_5mib_amqp",
                "append_read_5mib_amqp",
            ],
            system: rabbitmq::SYSTEM,
            durability: rabbitmq::DURABILITY,
            appended,
            read,
        },
    );

    let refusal = rt.block_on(nats.refusal(payload(seed(5, run, 0))))?;
    rows.add(
        run,
        jetstream::WORKLOAD,
        jetstream::SYSTEM,
        jetstream::DURABILITY,
        "MB/s",
        0.0,
    );
    rows.note(jetstream::WORKLOAD, jetstream::SYSTEM, refusal);
    Ok(())
}

/// One raw content-addressed write of a 5 MiB object (`physical`'s primitive); its time.
fn cas_put(dir: &Path, run: usize, index: usize) -> anyhow::Result<Duration> {
    let shape = CasShape {
        size: SIZE,
        min_objects: 1,
        min_time: Duration::ZERO,
    };
    // `physical` names the object's seed and directory after its run number; one per
    // object keeps both distinct.
    let call = (run * 1_000_000 + index) as u64;
    let measured = physical::cas_write(dir, call, &shape)?;
    let ms = measured
        .iter()
        .find(|m| m.unit == "ms")
        .context("the CAS write reported no time")?
        .value;
    Ok(Duration::from_secs_f64(ms / 1e3))
}

/// The timings of one append-then-read-back run on a networked system.
struct RoundTrip {
    /// The append, read and combined workload names.
    names: [&'static str; 3],
    system: &'static str,
    durability: &'static str,
    appended: Duration,
    read: Duration,
}

fn add_round_trip(rows: &mut Rows, run: usize, objects: usize, t: RoundTrip) {
    let [append, read, both] = t.names;
    rows.add(
        run,
        append,
        t.system,
        t.durability,
        "MB/s",
        mb_per_s(objects, t.appended),
    );
    rows.add(
        run,
        read,
        t.system,
        t.durability,
        "MB/s",
        mb_per_s(objects, t.read),
    );
    rows.add(
        run,
        both,
        t.system,
        t.durability,
        "MB/s",
        mb_per_s(objects, t.appended + t.read),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_across_families_runs_and_indices() {
        let mut seeds: Vec<u64> = (1..=5)
            .flat_map(|f| (1..=3).flat_map(move |r| (0..4).map(move |i| seed(f, r, i))))
            .collect();
        let n = seeds.len();
        seeds.sort_unstable();
        seeds.dedup();
        assert_eq!(seeds.len(), n);
        // physical's CAS seeds are `(run << 32) | index` with small runs.
        assert!(seeds.iter().all(|s| s >> 56 >= 0xC0));
    }

    #[test]
    fn a_payload_is_checked_by_size_and_content() {
        let data = payload(seed(1, 1, 0));
        assert!(check_payload(&data, seed(1, 1, 0)).is_ok());
        assert!(check_payload(&data, seed(1, 1, 1)).is_err());
        assert!(check_payload(&data[..SIZE - 1], seed(1, 1, 0)).is_err());
    }

    #[test]
    fn rows_keep_runs_in_order_and_carry_notes() {
        let config = BenchConfig {
            runs: 2,
            quick: true,
            dir: std::path::PathBuf::from("."),
        };
        let mut rows = Rows::new(2);
        rows.add(1, "w", "s", "d", "%", 1.0);
        rows.add(2, "w", "s", "d", "%", 3.0);
        rows.add(1, "r", "s", "d", "MB/s", 0.0);
        rows.note("r", "s", "refused".into());
        let mut h = Harness::new("payload", &config);
        rows.record(&mut h).unwrap();
        let results = h.into_results();
        assert_eq!(results[0].runs, [1.0, 3.0]);
        assert_eq!(results[0].median, 2.0);
        assert_eq!(results[1].note.as_deref(), Some("refused"));
    }
}
