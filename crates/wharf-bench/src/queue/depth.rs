//! Does queue depth slow Wharf down? DESIGN.md §3 promises dequeue and ack in O(log n):
//! "a queue of 10 million messages dequeues as fast as a queue of 10".
//!
//! Both workloads run on the engine in this process (no gRPC), each on its own data
//! directory with full durability, so the shallow queue does not share a database with the
//! deep one. A cycle is one `dequeue` of 10 and one `ack_batch` of the 10 receipts; only the
//! cycles are timed.
//!
//! - `dequeue_ack_depth_10`: before each cycle, 10 messages are enqueued (untimed).
//! - `dequeue_ack_depth_1m` (`_100k` under `--quick`): the queue is filled once with 1,000,000
//!   (100,000) messages in batches of 1,000 before the runs, then cycles run against it; after
//!   each run the queue is topped up again (untimed).
//!
//! The two depths take turns within a run, [`SLICES`] slices each, the first depth of each
//! slice alternating: each cycle costs about two `fdatasync`s, so a rate is mostly the disk's
//! flush latency, which on a shared machine drifts within seconds (one depth measured
//! after the other gave ratios from 0.83 to 1.22 in five runs of one invocation). Taking turns
//! exposes both to the same drift, so the ratio shows what depth costs.
//!
//! Messages are 100 B rather than the suite's 1 KiB, for both depths: the fill of a million
//! stays around half a minute and a gigabyte less on disk, and both depths move the same
//! bytes. Each run also yields the ratio deep / shallow from that run.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use wharf::{
    Config, DequeueOptions, Durability, NewMessage, QueueName, QueueSettings, StorageConfig, Wharf,
};

use super::wharf_grpc::{DURABILITY, SYSTEM};
use crate::harness::{BenchConfig, Harness, Measurement, random_bytes};

const MESSAGE_BYTES: usize = 100;
const CYCLE: usize = 10;
const FILL_BATCH: usize = 1_000;
const VISIBILITY: Duration = Duration::from_secs(300);
/// Turns each depth takes per run.
const SLICES: usize = 20;

/// What the rows' workload names start with (`--only wharf/dequeue_ack_depth`).
const FAMILY: &str = "dequeue_ack_depth";

/// Measures both depths, their ratio, and closes the engines. Nothing at all, not even
/// the fill, when `--only` selects none of the rows.
pub fn measure(h: &mut Harness<'_>, config: &BenchConfig) -> anyhow::Result<()> {
    if !config.wants(SYSTEM, FAMILY) {
        return Ok(());
    }
    let (deep_depth, deep_name) = config.pick((1_000_000, "1m"), (100_000, "100k"));
    let messages_per_run = config.pick(20_000, 2_000);
    let payload = Bytes::from(random_bytes(0xDE97, MESSAGE_BYTES));
    let queue = QueueName::new("depth")?;

    let (shallow, deep) = h.runtime()?.block_on(async {
        let shallow = open(&config.dir.join("depth-10"), &queue).await?;
        let deep = open(&config.dir.join(format!("depth-{deep_name}")), &queue).await?;
        eprintln!("queue: filling a Wharf queue with {deep_depth} messages of {MESSAGE_BYTES} B");
        let started = Instant::now();
        top_up(&deep, &queue, &payload, deep_depth).await?;
        eprintln!("queue: filled in {:.1} s", started.elapsed().as_secs_f64());
        anyhow::Ok((shallow, deep))
    })?;

    let measured = h.measure_many_async(FAMILY, SYSTEM, DURABILITY, || {
        let (shallow, deep, queue, payload) = (
            shallow.clone(),
            deep.clone(),
            queue.clone(),
            payload.clone(),
        );
        async move {
            let slice = messages_per_run / SLICES;
            let (mut shallow_time, mut deep_time) = (Duration::ZERO, Duration::ZERO);
            for turn in 0..SLICES {
                if turn % 2 == 0 {
                    shallow_time += cycles(&shallow, &queue, slice, Some(&payload)).await?;
                    deep_time += cycles(&deep, &queue, slice, None).await?;
                } else {
                    deep_time += cycles(&deep, &queue, slice, None).await?;
                    shallow_time += cycles(&shallow, &queue, slice, Some(&payload)).await?;
                }
            }
            let consumed = (slice * SLICES) as f64;
            let shallow_rate = consumed / shallow_time.as_secs_f64();
            let deep_rate = consumed / deep_time.as_secs_f64();
            top_up(&deep, &queue, &payload, deep_depth).await?;
            Ok(vec![
                Measurement::new("dequeue_ack_depth_10", "msg/s", shallow_rate),
                Measurement::new(format!("dequeue_ack_depth_{deep_name}"), "msg/s", deep_rate),
                Measurement::new(
                    format!("dequeue_ack_depth_{deep_name}_vs_10"),
                    "ratio",
                    deep_rate / shallow_rate,
                ),
            ])
        }
    });
    h.runtime()?.block_on(async {
        shallow.close().await;
        deep.close().await;
    });
    measured
}

async fn open(dir: &Path, queue: &QueueName) -> anyhow::Result<Wharf> {
    let config = Config {
        storage: StorageConfig::Embedded {
            path: dir.to_path_buf(),
            durability: Durability::Full,
        },
        ..Config::default()
    };
    let wharf = Wharf::open(&config)
        .await
        .with_context(|| format!("opening Wharf on {}", dir.display()))?;
    let settings = QueueSettings {
        dead_letter_queue: None,
        visibility_timeout: VISIBILITY,
        ..QueueSettings::default()
    };
    wharf.create_queue(queue, settings).await?;
    Ok(wharf)
}

/// Enqueues until `queue` holds `depth` messages.
async fn top_up(
    wharf: &Wharf,
    queue: &QueueName,
    payload: &Bytes,
    depth: usize,
) -> anyhow::Result<()> {
    let held = usize::try_from(wharf.queue_stats(queue).await?.depth())?;
    let mut missing = depth.saturating_sub(held);
    while missing > 0 {
        let n = missing.min(FILL_BATCH);
        let batch = (0..n).map(|_| NewMessage::new(payload.clone())).collect();
        wharf.enqueue_batch(queue, batch).await?;
        missing -= n;
    }
    Ok(())
}

/// Runs dequeue-10 + ack cycles until `messages` (a multiple of 10) are consumed; returns
/// the time the cycles alone took. With `refill`, enqueues 10 (untimed) before each cycle.
async fn cycles(
    wharf: &Wharf,
    queue: &QueueName,
    messages: usize,
    refill: Option<&Bytes>,
) -> anyhow::Result<Duration> {
    let options = DequeueOptions {
        visibility_timeout: Some(VISIBILITY),
        max_messages: CYCLE as u32,
        wait: Duration::ZERO,
    };
    let mut timed = Duration::ZERO;
    for _ in 0..messages.div_ceil(CYCLE) {
        if let Some(payload) = refill {
            let batch = (0..CYCLE)
                .map(|_| NewMessage::new(payload.clone()))
                .collect();
            wharf.enqueue_batch(queue, batch).await?;
        }
        let started = Instant::now();
        let deliveries = wharf.dequeue(queue, options).await?;
        ensure!(
            deliveries.len() == CYCLE,
            "a dequeue of {CYCLE} returned {}",
            deliveries.len()
        );
        let receipts: Vec<_> = deliveries.into_iter().map(|d| d.receipt).collect();
        for outcome in wharf.ack_batch(queue, &receipts).await? {
            outcome.context("acknowledging a delivery")?;
        }
        timed += started.elapsed();
    }
    Ok(timed)
}
