//! The `postgres` suite: Wharf on its PostgreSQL backend, next to the plain `SKIP LOCKED`
//! queue in the style of pgmq on the same database, and next to Wharf's embedded store, all
//! in the same run.
//!
//! Every Wharf here keeps its state in schema `wharf_bench` of database `test` on
//! 127.0.0.1:5432 (user `postgres`), with the backend's default pool of 16 connections per
//! node. The schema is dropped before the suite and after it, also when it failed, and
//! vacuumed before each queue run; a second run of the suite waits for the first (see
//! [`schema`]). Wharf's sessions commit with the
//! server's settings, the same as pgmq's, so both carry the durability label `SHOW` gives
//! (`synchronous_commit`, `fsync`).
//!
//! Queue workloads: those of the `queue` suite ([`crate::queue`]), same sizes, 1 KiB
//! messages, each run on a fresh queue — `enqueue_batch100` (one producer, batches of 100),
//! `enqueue_single_c32` (32 single enqueues in flight), `dequeue_ack_batch100` (4 consumers
//! drain a pre-filled queue 100 at a time, acknowledging each batch) and
//! `latency_2000_p50`/`_p99`/`_p999` (2,000 msg/s open loop, one long-polling consumer).
//! They run on three systems:
//! - `wharf-postgres`: one Wharf server in this process on the PostgreSQL backend, driven
//!   over gRPC by [`wharf_client::Client`] exactly as the `queue` suite drives the embedded
//!   one (see [`crate::queue::wharf_grpc`]): a batch is one `enqueue_batch`, a receive one
//!   `dequeue` of up to 100 with long poll, an ack one `ack_batch` of the batch's receipts.
//! - `wharf-postgres-2nodes`: two such servers on the same schema, each on its own
//!   loopback ports: producer `i` and the `i`-th consumer of a run use node `i mod 2`. So
//!   `dequeue_ack_batch100` drains with two consumers on each node, `enqueue_single_c32`
//!   has 16 enqueues in flight on each, and the latency producer sends half its messages
//!   through node 1 to the consumer on node 0 (which the backend wakes by `NOTIFY`).
//!   `enqueue_batch100` has a single producer, so its figure is one node's with the other
//!   idle. The aggregate figure of two nodes is their total msg/s, against one node's.
//! - `postgres-skip-locked`: the pgmq-style table of [`crate::queue::pgmq`] — an `INSERT`
//!   (`unnest` for a batch), a `FOR UPDATE SKIP LOCKED` update of `vt` to receive, a
//!   `DELETE ... = ANY` to acknowledge; each producer and consumer on its own connection.
//!
//! The latency workload offers 2,000 msg/s whether or not the system keeps up; when a run
//! fails (say, enqueues that waited longer than the backend's connect timeout for a pooled
//! connection), its rows are 0 with the error as their note, and the suite goes on.
//!
//! Stream workloads: the append workloads of the `stream` suite, in process (no gRPC),
//! 1 KiB events, every client on a stream of its own — `append_batch100x1KiB_1client_inproc`,
//! `append_batch100x1KiB_4clients_inproc` (batches of 100) and
//! `append_single_64clients_inproc` — on `wharf` (the embedded store in a scratch directory,
//! fsync per commit) and on `wharf-postgres`, each opened empty.
//!
//! Ratio rows (unit `x`, system `<numerator>/<denominator>`) pair run `i` of one system
//! with run `i` of the other and report the median of those ratios: Wharf on PostgreSQL
//! over pgmq, two nodes over one, and PostgreSQL over embedded for appends.

mod schema;

use anyhow::Context;
use wharf::StorageConfig;
use wharf_core::PostgresConfig;

use crate::harness::{BenchConfig, BenchResult, Harness, median};
use crate::queue::peer::Peer;
use crate::queue::pgmq::{self, Pgmq};
use crate::queue::wharf_grpc;
use crate::queue::workloads::{LATENCY_WORKLOADS, Sizes, measure_latency, measure_throughputs};
use crate::stream;
use schema::Schema;

/// Wharf, one node, on the PostgreSQL backend.
pub const SYSTEM: &str = "wharf-postgres";
/// Two Wharf nodes sharing one schema.
pub const SYSTEM_2NODES: &str = "wharf-postgres-2nodes";
/// Wharf on its embedded store, as the other suites name it.
const SYSTEM_EMBEDDED: &str = "wharf";

const URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const SCHEMA: &str = "wharf_bench";

/// The queue workloads that are throughputs, which the ratio rows compare.
const QUEUE_THROUGHPUTS: [&str; 3] = [
    "enqueue_batch100",
    "enqueue_single_c32",
    "dequeue_ack_batch100",
];
/// The append workloads, in events/s, which the ratio rows compare.
const APPEND_THROUGHPUTS: [&str; 3] = [
    "append_batch100x1KiB_1client_inproc",
    "append_batch100x1KiB_4clients_inproc",
    "append_single_64clients_inproc",
];

pub fn run(config: &BenchConfig) -> anyhow::Result<Vec<BenchResult>> {
    let mut h = Harness::new("postgres", config);
    let sizes = Sizes::of(config);
    let (pgmq, schema, autovacuum) = h.runtime()?.block_on(async {
        let pgmq = Pgmq::connect().await?;
        let schema = Schema::connect(URL, SCHEMA).await?;
        schema.claim().await?;
        schema.remove().await?;
        let autovacuum = schema.autovacuum().await?;
        anyhow::Ok((pgmq, schema, autovacuum))
    })?;
    let durability = pgmq.durability().to_owned();

    let measured = measure(&mut h, config, sizes, &pgmq, &schema, &durability);
    drop(pgmq);
    let dropped = h.runtime()?.block_on(schema.remove());
    measured?;
    dropped?;
    if !autovacuum {
        for system in [SYSTEM, SYSTEM_2NODES] {
            h.note(
                "dequeue_ack_batch100",
                system,
                "autovacuum is off on this server; the schema is vacuumed before each run",
            )?;
        }
    }

    let mut results = h.into_results();
    let mut ratios = Vec::new();
    for workload in QUEUE_THROUGHPUTS {
        ratios.extend(ratio(&results, workload, "msg/s", SYSTEM, pgmq::SYSTEM)?);
        ratios.extend(ratio(&results, workload, "msg/s", SYSTEM_2NODES, SYSTEM)?);
    }
    for workload in APPEND_THROUGHPUTS {
        ratios.extend(ratio(
            &results,
            workload,
            "events/s",
            SYSTEM,
            SYSTEM_EMBEDDED,
        )?);
    }
    results.extend(ratios);
    Ok(results)
}

fn measure(
    h: &mut Harness<'_>,
    config: &BenchConfig,
    sizes: Sizes,
    pgmq: &Pgmq,
    schema: &Schema,
    durability: &str,
) -> anyhow::Result<()> {
    let postgres = StorageConfig::Postgres(PostgresConfig {
        schema: SCHEMA.to_owned(),
        ..PostgresConfig::new(URL)
    });
    wharf_grpc::measure_served(h, std::slice::from_ref(&postgres), |h, wharf| {
        measure_queue(h, sizes, SYSTEM, durability, &schema.vacuumed(wharf))
    })?;
    wharf_grpc::measure_served(h, &[postgres.clone(), postgres.clone()], |h, wharf| {
        measure_queue(h, sizes, SYSTEM_2NODES, durability, &schema.vacuumed(wharf))
    })?;
    measure_queue(h, sizes, pgmq::SYSTEM, durability, pgmq)?;

    let embedded = wharf_grpc::embedded(&config.dir.join("stream-embedded"));
    stream::measure_appends_in_process(h, config, embedded, SYSTEM_EMBEDDED, stream::DURABILITY)?;
    stream::measure_appends_in_process(h, config, postgres, SYSTEM, durability)
}

/// The `queue` suite's workloads on `peer`. A latency run that fails (the workload offers
/// 2,000 msg/s whether or not the system keeps up) gives rows of 0 with the error as
/// their note, so that it does not take the suite's other figures with it.
fn measure_queue<P: Peer>(
    h: &mut Harness<'_>,
    sizes: Sizes,
    system: &str,
    durability: &str,
    peer: &P,
) -> anyhow::Result<()> {
    measure_throughputs(h, sizes, system, durability, peer)?;
    if let Err(e) = measure_latency(h, sizes, system, durability, peer) {
        eprintln!("postgres: the latency workload failed on {system}: {e:#}");
        let note = format!("failed: {e:#}");
        for workload in LATENCY_WORKLOADS {
            h.record(workload, system, durability, "us", vec![0.0])?;
            h.note(workload, system, &note)?;
        }
    }
    Ok(())
}

/// The row `numerator / denominator` of `workload`, run by run; `None` when either
/// system has no such row.
fn ratio(
    results: &[BenchResult],
    workload: &str,
    unit: &str,
    numerator: &str,
    denominator: &str,
) -> anyhow::Result<Option<BenchResult>> {
    let find = |system: &str| {
        results
            .iter()
            .find(|r| r.workload == workload && r.system == system && r.unit == unit)
    };
    let (Some(over), Some(under)) = (find(numerator), find(denominator)) else {
        return Ok(None);
    };
    let runs: Vec<f64> = over
        .runs
        .iter()
        .zip(&under.runs)
        .map(|(a, b)| a / b)
        .collect();
    let median = median(&runs).context("a ratio of workloads without runs")?;
    Ok(Some(BenchResult {
        suite: over.suite.clone(),
        workload: workload.to_owned(),
        system: format!("{numerator}/{denominator}"),
        durability: "n/a (ratio of paired runs)".to_owned(),
        unit: "x".to_owned(),
        median,
        runs,
        note: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(system: &str, runs: Vec<f64>) -> BenchResult {
        BenchResult {
            suite: "postgres".into(),
            workload: "dequeue_ack_batch100".into(),
            system: system.into(),
            durability: "WAL".into(),
            unit: "msg/s".into(),
            median: median(&runs).unwrap(),
            runs,
            note: None,
        }
    }

    #[test]
    fn a_ratio_pairs_runs_in_order_and_takes_their_median() {
        let results = [
            row(SYSTEM, vec![300.0, 200.0, 500.0]),
            row(pgmq::SYSTEM, vec![100.0, 100.0, 100.0]),
        ];
        let r = ratio(
            &results,
            "dequeue_ack_batch100",
            "msg/s",
            SYSTEM,
            pgmq::SYSTEM,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.runs, [3.0, 2.0, 5.0]);
        assert_eq!(r.median, 3.0);
        assert_eq!(r.system, "wharf-postgres/postgres-skip-locked");
        assert_eq!(r.unit, "x");
    }

    #[test]
    fn a_ratio_of_a_missing_row_is_absent() {
        let results = [row(SYSTEM, vec![1.0])];
        let r = ratio(
            &results,
            "dequeue_ack_batch100",
            "msg/s",
            SYSTEM,
            pgmq::SYSTEM,
        );
        assert!(matches!(r, Ok(None)));
    }
}
