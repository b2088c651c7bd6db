//! The `queue` suite: Wharf's queues side by side with the peers of DESIGN.md §10, every
//! system doing the same work on this machine in the same run, each row labelled with the
//! durability setting it ran with.
//!
//! Workloads, with 1 KiB random messages, each run on a fresh, empty queue:
//! - `enqueue_batch100`: one producer enqueues batches of 100, one batch in flight
//!   (100,000 messages; 10,000 under `--quick`);
//! - `enqueue_single_c32`: 32 tasks enqueue one message at a time, so 32 enqueues are in
//!   flight (20,000 messages; 2,000);
//! - `dequeue_ack_batch100`: the queue is filled (untimed), then 4 consumers, each on its own
//!   connection, drain it receiving up to 100 at a time and acknowledging each batch
//!   (100,000 messages; 5,000);
//! - `latency_2000_p50` / `_p99` / `_p999`: an open-loop producer sends 2,000 messages a
//!   second by a fixed timetable for 10 s (1 s), one consumer long-polls; end-to-end latency
//!   from just before the enqueue call to the consumer receiving the message;
//! - `dequeue_ack_depth_*`: Wharf alone, in process: does depth slow dequeue + ack down
//!   (see [`depth`]).
//!
//! Each system module says how it maps enqueue, receive and ack onto its API. Enqueues count
//! only once the system confirmed them; each drain and latency run ends by checking that the
//! queue holds nothing unacknowledged. Every system cleans up after itself: queues, streams
//! and tables are deleted after each run, and Redis gets its persistence settings back.

mod depth;
mod jetstream;
pub(crate) mod peer;
pub(crate) mod pgmq;
mod rabbitmq;
mod redis_streams;
pub(crate) mod wharf_grpc;
pub(crate) mod workloads;

use crate::harness::{BenchConfig, BenchResult, Harness};
use jetstream::JetStream;
use pgmq::Pgmq;
use rabbitmq::RabbitMq;
use redis_streams::{AofGuard, RedisStreams};
use workloads::{Sizes, measure_peer};

pub fn run(config: &BenchConfig) -> anyhow::Result<Vec<BenchResult>> {
    let mut h = Harness::new("queue", config);
    let sizes = Sizes::of(config);

    // Every peer is reached before anything is measured: one that is down fails the suite
    // at once, naming it, rather than after minutes of measuring the others.
    let (nats, rabbit, redis, postgres) = h.runtime()?.block_on(async {
        anyhow::Ok((
            JetStream::connect().await?,
            RabbitMq::connect().await?,
            RedisStreams::connect().await?,
            Pgmq::connect().await?,
        ))
    })?;

    wharf_grpc::measure_served(
        &mut h,
        &[wharf_grpc::embedded(&config.dir.join("wharf-grpc"))],
        |h, wharf| measure_peer(h, sizes, wharf_grpc::SYSTEM, wharf_grpc::DURABILITY, &wharf),
    )?;

    measure_peer(
        &mut h,
        sizes,
        jetstream::SYSTEM,
        jetstream::DURABILITY,
        &nats,
    )?;
    measure_peer(
        &mut h,
        sizes,
        rabbitmq::SYSTEM,
        rabbitmq::DURABILITY,
        &rabbit,
    )?;
    for (fsync, system, durability) in [
        (
            "everysec",
            redis_streams::SYSTEM_EVERYSEC,
            redis_streams::DURABILITY_EVERYSEC,
        ),
        (
            "always",
            redis_streams::SYSTEM_ALWAYS,
            redis_streams::DURABILITY_ALWAYS,
        ),
    ] {
        let aof = AofGuard::enable(fsync)?;
        let measured = measure_peer(&mut h, sizes, system, durability, &redis);
        let restored = aof.restore();
        measured?;
        restored?;
    }
    let durability = postgres.durability().to_owned();
    measure_peer(&mut h, sizes, pgmq::SYSTEM, &durability, &postgres)?;

    depth::measure(&mut h, config)?;
    Ok(h.into_results())
}
