//! The `stream` suite: append and catch-up read throughput of event streams,
//! in-process and over gRPC, with durable (fsync-per-commit) storage.
//!
//! Workloads, each with 1 KiB events:
//! - `append_batch100x1KiB_*`: batches of 100 events, one client appending
//!   back to back, and four clients at once (group commit merges them);
//! - `append_single_64clients_*`: single-event appends from 64 concurrent
//!   clients, which is what group commit is for;
//! - `catchup_read_1KiB_*`: reading the whole log from position 0.
//!
//! The append workloads also run, in process, on other storage: see
//! [`measure_appends_in_process`], which the `postgres` suite uses.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use futures::StreamExt;
use wharf::{
    Config, Durability, ExpectedVersion, LogFilter, NewEvent, Position, StorageConfig, StreamName,
    Wharf,
};
use wharf_client::Client;
use wharf_server::Server;

use crate::harness::{BenchConfig, BenchResult, Harness, Measurement};

const EVENT_BYTES: usize = 1024;
/// The durability of the embedded store every row of this suite runs on.
pub const DURABILITY: &str = "fdatasync per commit (SQLite WAL)";

/// Where appends and reads go: the engine in this process, or a server.
#[derive(Clone)]
enum Target {
    InProcess(Wharf),
    Grpc(Box<Client>),
}

impl Target {
    async fn append(&self, stream: &StreamName, events: Vec<NewEvent>) -> anyhow::Result<()> {
        match self {
            Self::InProcess(w) => w.append(stream, ExpectedVersion::Any, events).await?,
            Self::Grpc(c) => c.append(stream, ExpectedVersion::Any, events).await?,
        };
        Ok(())
    }

    /// Reads the log from the start to the head; returns how many events.
    async fn read_everything(&self) -> anyhow::Result<u64> {
        let mut n = 0u64;
        match self {
            Self::InProcess(w) => {
                let mut from = Position::START;
                let head = w.head();
                while from < head {
                    let page = w.read_all(from, &LogFilter::default(), 1024).await?;
                    n += page.events.len() as u64;
                    from = page.next;
                }
            }
            Self::Grpc(c) => {
                let mut pages = c
                    .read_all(Position::START, &LogFilter::default(), None)
                    .await?;
                while let Some(page) = pages.next().await {
                    n += page?.len() as u64;
                }
            }
        }
        Ok(n)
    }
}

fn event(payload: &Arc<[u8]>) -> NewEvent {
    NewEvent::new("BenchEvent", bytes::Bytes::copy_from_slice(payload))
}

/// `clients` tasks each append `batches` batches of `size` events to their
/// own stream; returns events per second.
async fn append_load(
    target: &Target,
    run: &str,
    clients: usize,
    batches: usize,
    size: usize,
) -> anyhow::Result<f64> {
    let payload: Arc<[u8]> = crate::harness::random_bytes(7, EVENT_BYTES).into();
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let target = target.clone();
            let payload = payload.clone();
            let stream: StreamName = format!("bench-{run}-{c}").parse().expect("valid name");
            tokio::spawn(async move {
                for _ in 0..batches {
                    let events = (0..size).map(|_| event(&payload)).collect();
                    target.append(&stream, events).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await.context("append task panicked")??;
    }
    let events = (clients * batches * size) as f64;
    Ok(events / started.elapsed().as_secs_f64())
}

fn mb_per_s(events_per_s: f64) -> f64 {
    events_per_s * EVENT_BYTES as f64 / 1e6
}

/// Measures every workload against `target`, naming rows with `via`.
fn measure_target(
    h: &mut Harness<'_>,
    config: &BenchConfig,
    target: &Target,
    via: &str,
) -> anyhow::Result<()> {
    measure_appends(h, config, target, via, "wharf", DURABILITY)?;
    h.measure_async(
        &format!("catchup_read_1KiB_{via}"),
        "wharf",
        "n/a (read)",
        "events/s",
        || {
            let target = target.clone();
            async move {
                let started = Instant::now();
                let n = target.read_everything().await?;
                Ok(n as f64 / started.elapsed().as_secs_f64())
            }
        },
    )
}

/// Opens `storage` in this process, measures the append workloads on it (rows named
/// `*_inproc`, labelled `system` and `durability`), and closes it, also on failure.
pub fn measure_appends_in_process(
    h: &mut Harness<'_>,
    config: &BenchConfig,
    storage: StorageConfig,
    system: &str,
    durability: &str,
) -> anyhow::Result<()> {
    let config_of_storage = Config {
        storage,
        ..Config::default()
    };
    let wharf = h
        .runtime()?
        .block_on(Wharf::open(&config_of_storage))
        .context("opening the storage to append to")?;
    let target = Target::InProcess(wharf.clone());
    let measured = measure_appends(h, config, &target, "inproc", system, durability);
    h.runtime()?.block_on(wharf.close());
    measured
}

/// Measures the append workloads against `target`, naming rows with `via`.
fn measure_appends(
    h: &mut Harness<'_>,
    config: &BenchConfig,
    target: &Target,
    via: &str,
    system: &str,
    durability: &str,
) -> anyhow::Result<()> {
    let batches = config.pick(600, 200);
    let mut run_no = 0usize;
    let workload = format!("append_batch100x1KiB_1client_{via}");
    h.measure_many_async(&workload, system, durability, || {
        run_no += 1;
        let (target, workload) = (target.clone(), workload.clone());
        let run = format!("{via}-b1-{run_no}");
        async move {
            let eps = append_load(&target, &run, 1, batches, 100).await?;
            Ok(vec![
                Measurement::new(workload.clone(), "events/s", eps),
                Measurement::new(workload, "MB/s", mb_per_s(eps)),
            ])
        }
    })?;
    let workload = format!("append_batch100x1KiB_4clients_{via}");
    h.measure_many_async(&workload, system, durability, || {
        run_no += 1;
        let (target, workload) = (target.clone(), workload.clone());
        let run = format!("{via}-b4-{run_no}");
        async move {
            let eps = append_load(&target, &run, 4, batches / 4, 100).await?;
            Ok(vec![
                Measurement::new(workload.clone(), "events/s", eps),
                Measurement::new(workload, "MB/s", mb_per_s(eps)),
            ])
        }
    })?;
    let per_client = config.pick(300, 100);
    h.measure_async(
        &format!("append_single_64clients_{via}"),
        system,
        durability,
        "events/s",
        || {
            run_no += 1;
            let target = target.clone();
            let run = format!("{via}-s64-{run_no}");
            async move { append_load(&target, &run, 64, per_client, 1).await }
        },
    )
}

/// Fills the log so catch-up reads have a realistic amount to read.
async fn fill(wharf: &Wharf, events: usize) -> anyhow::Result<()> {
    let have = wharf.head().0 as usize;
    if have >= events {
        return Ok(());
    }
    let batches = (events - have).div_ceil(100);
    append_load(
        &Target::InProcess(wharf.clone()),
        "fill",
        4,
        batches.div_ceil(4),
        100,
    )
    .await?;
    Ok(())
}

pub fn run(config: &BenchConfig) -> anyhow::Result<Vec<BenchResult>> {
    let mut h = Harness::new("stream", config);
    let read_size = config.pick(300_000, 100_000);

    let local_dir = config.dir.join("stream-in-process");
    let storage = |path| StorageConfig::Embedded {
        path,
        durability: Durability::Full,
    };
    let local_config = Config {
        storage: storage(local_dir),
        ..Config::default()
    };
    let wharf = h.runtime()?.block_on(async {
        let wharf = Wharf::open(&local_config).await?;
        eprintln!("stream: filling the in-process log with {read_size} events");
        fill(&wharf, read_size).await?;
        anyhow::Ok(wharf)
    })?;
    measure_target(&mut h, config, &Target::InProcess(wharf.clone()), "inproc")?;
    h.runtime()?.block_on(wharf.close());

    let mut server_config = Config {
        storage: storage(config.dir.join("stream-grpc")),
        ..Config::default()
    };
    server_config.server.grpc_listen = "127.0.0.1:0".parse()?;
    server_config.server.http_listen = "127.0.0.1:0".parse()?;
    let (server, client) = h.runtime()?.block_on(async {
        let server = Server::start(&server_config).await?;
        eprintln!("stream: filling the served log with {read_size} events");
        fill(server.wharf(), read_size).await?;
        let client = Client::connect(&format!("http://{}", server.grpc_addr())).await?;
        anyhow::Ok((server, client))
    })?;
    measure_target(&mut h, config, &Target::Grpc(Box::new(client)), "grpc")?;
    h.runtime()?.block_on(server.shutdown());
    Ok(h.into_results())
}
