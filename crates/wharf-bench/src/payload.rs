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
//!   by run. `append_1kib_inline`, an append of an event too small to offload, interleaved
//!   with them, is the engine's other cost: committing the event.
//! - `get_5mib_engine_fs` / `sha256_single_core`: [`wharf::Wharf::read_stream`] of each of
//!   those events, which reads the object and verifies its SHA-256, against single-core
//!   SHA-256 over a 64 MiB buffer, measured right before and after the reads;
//!   `get_5mib_engine_fs_vs_sha256` is their ratio. `read_verify_5mib` reads the same files
//!   directly and hashes them: a verified get without the engine. The objects were just
//!   written, so reads hit a warm page cache.
//! - `put_5mib_engine_s3` / `get_5mib_engine_s3`: the same two through the S3 store, against
//!   the S3-compatible server on loopback (see [`s3`]); these and the filesystem workloads
//!   are in [`local`].
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
mod local;
mod rabbitmq;
mod rows;
mod s3;

use std::time::Duration;

use tokio::runtime::Runtime;

use crate::harness::{BenchConfig, BenchResult, Harness, random_bytes};
use engine::Target;
use rows::{Key, Rows};

/// The payload size of every workload.
const SIZE: usize = 5 * 1024 * 1024;
/// Payloads larger than this are offloaded (DESIGN.md §4's example value).
const THRESHOLD: u64 = 256 * 1024;
/// Decimal megabytes, as in every suite.
const MB: f64 = 1e6;
/// Bytes checked against the expected payload after each read (untimed): the engine
/// verifies the full SHA-256 itself; this catches an answer with the wrong payload.
const CHECKED_PREFIX: usize = 64;

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

/// Runs the payload suite; see the module docs.
pub fn run(config: &BenchConfig) -> anyhow::Result<Vec<BenchResult>> {
    let mut h = Harness::new("payload", config);
    let rt = h.runtime()?;
    let dir = config.dir.as_path();

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
    let opened = rt.block_on(async {
        let fs = engine::open(&dir.join("engine-fs"), engine::filesystem(dir)).await?;
        let s3 = engine::open(&dir.join("engine-s3"), s3_server.offload(&bucket)).await?;
        let server = grpc::start_server(dir).await?;
        let client = grpc::connect(&server).await?;
        anyhow::Ok((fs, s3, server, client))
    });
    let (fs, s3, server, client) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            let _ = rt.block_on(s3_server.remove_bucket(&bucket));
            return Err(e);
        }
    };

    let hash_input = random_bytes(0x5AA5, 64 * 1024 * 1024);
    let (fs_target, s3_target) = (Target::InProcess(fs.clone()), Target::InProcess(s3.clone()));
    let local = local::Local {
        rt,
        fs: &fs_target,
        s3: &s3_target,
        cas_dir: dir,
        objects: config.pick(32, 6),
        hash_for: config.pick(Duration::from_secs(1), Duration::from_millis(300)),
        hash_input: &hash_input,
    };
    let network = Network {
        rt,
        wharf: grpc::target(client),
        rabbit: &rabbit,
        nats: &nats,
        objects: local.objects,
    };
    let mut rows = Rows::new(config.runs);
    let measured = (1..=config.runs).try_for_each(|run| {
        local.measure(&mut rows, run)?;
        network.measure(&mut rows, run)
    });

    drop(network);
    let cleaned = rt.block_on(async {
        server.shutdown().await;
        fs.close().await;
        s3.close().await;
        let removed = s3_server.remove_bucket(&bucket).await;
        let closed = rabbit.close().await;
        removed.and(closed)
    });
    measured?;
    cleaned?;
    rows.record(&mut h)?;
    Ok(h.into_results())
}

/// The workloads over the network: Wharf over gRPC and the peers.
struct Network<'a> {
    rt: &'a Runtime,
    wharf: Target,
    rabbit: &'a rabbitmq::RabbitMq,
    nats: &'a jetstream::JetStream,
    objects: usize,
}

impl Network<'_> {
    /// Run `run` (1-based): appends, then reads back, on each system in turn.
    fn measure(&self, rows: &mut Rows, run: usize) -> anyhow::Result<()> {
        let stream = format!("grpc-{run}");
        let seeds = (0..self.objects).map(|i| seed(3, run, i));
        let (appended, written) = self.rt.block_on(self.wharf.append_each(&stream, seeds))?;
        let read = self.rt.block_on(self.wharf.read_each(&stream, &written))?;
        let workloads = [
            "append_5mib_grpc",
            "read_5mib_grpc",
            "append_read_5mib_grpc",
        ];
        let (system, durability) = (grpc::SYSTEM, grpc::DURABILITY);
        self.add(rows, run, (workloads, system, durability), appended, read);

        let seeds: Vec<u64> = (0..self.objects).map(|i| seed(4, run, i)).collect();
        let (appended, read) = self.rt.block_on(self.rabbit.round_trip(&seeds))?;
        let workloads = [
            "append_5mib_amqp",
            "read_5mib_amqp",
            "append_read_5mib_amqp",
        ];
        let (system, durability) = (rabbitmq::SYSTEM, rabbitmq::DURABILITY);
        self.add(rows, run, (workloads, system, durability), appended, read);

        let refusal = self
            .rt
            .block_on(self.nats.refusal(payload(seed(5, run, 0))))?;
        let key = Key::new(
            jetstream::WORKLOAD,
            jetstream::SYSTEM,
            jetstream::DURABILITY,
            "MB/s",
        );
        rows.add(run, key, 0.0);
        rows.note(key, refusal);
        Ok(())
    }

    /// The append, read and combined rows of one system: payload MB/s of each phase, and
    /// over the time of both.
    fn add(
        &self,
        rows: &mut Rows,
        run: usize,
        (workloads, system, durability): ([&'static str; 3], &'static str, &'static str),
        appended: Duration,
        read: Duration,
    ) {
        let [append, read_back, both] = workloads.map(|w| Key::new(w, system, durability, "MB/s"));
        rows.add(run, append, mb_per_s(self.objects, appended));
        rows.add(run, read_back, mb_per_s(self.objects, read));
        rows.add(run, both, mb_per_s(self.objects, appended + read));
    }
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
        // physical's CAS seeds are `(run << 32) | index` with runs far below 2^24.
        assert!(seeds.iter().all(|s| s >> 56 >= 0xC0));
    }

    #[test]
    fn a_payload_is_checked_by_size_and_content() {
        let data = payload(seed(1, 1, 0));
        assert!(check_payload(&data, seed(1, 1, 0)).is_ok());
        assert!(check_payload(&data, seed(1, 1, 1)).is_err());
        assert!(check_payload(&data[..SIZE - 1], seed(1, 1, 0)).is_err());
    }
}
