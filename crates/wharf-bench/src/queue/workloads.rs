//! The four workloads every queueing system runs, written once over [`Peer`].
//!
//! Every run starts from an empty queue (reset, untimed) and deletes it afterwards, even
//! when the run fails, so that no run sees another's leftovers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use super::peer::{Consumer, Peer, Producer};
use crate::harness::{BenchConfig, Harness, Measurement, random_bytes};

/// Payload size of every message of these workloads.
pub const MESSAGE_BYTES: usize = 1024;
/// Messages per enqueue batch, and most messages per dequeue.
pub const BATCH: usize = 100;
/// Single-message enqueues in flight in `enqueue_single_c32`.
pub const SINGLE_IN_FLIGHT: usize = 32;
/// Concurrent consumers draining the queue in `dequeue_ack_batch100`.
pub const DRAIN_CONSUMERS: usize = 4;
/// Producer rate of the latency workload, messages per second.
pub const LATENCY_RATE: u32 = 2_000;
/// What the latency workload's rows are named after (`--only wharf/latency` selects them).
const LATENCY_FAMILY: &str = "latency_2000";
/// The rows of the latency workload, in µs.
pub const LATENCY_WORKLOADS: [&str; 3] =
    ["latency_2000_p50", "latency_2000_p99", "latency_2000_p999"];
/// Producers the latency workload spreads its sends over (connections, for PostgreSQL).
const LATENCY_LANES: usize = 32;
/// How long the latency consumer long-polls.
const LATENCY_WAIT: Duration = Duration::from_secs(1);
/// How long a draining consumer waits for messages before checking whether it is done.
const DRAIN_WAIT: Duration = Duration::from_millis(100);
/// A consumer that receives nothing for this long means messages were lost.
const STALL: Duration = Duration::from_secs(30);
/// How long acknowledgements may take to be applied after the last one was sent (JetStream
/// and AMQP acknowledgements are one-way messages).
const SETTLE: Duration = Duration::from_secs(10);
/// Distinct payloads cycled through, so no system sees one message repeated.
const DISTINCT_PAYLOADS: usize = 1024;

/// How much work each workload does.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Messages of `enqueue_batch100`.
    pub batch_messages: usize,
    /// Messages of `enqueue_single_c32`.
    pub single_messages: usize,
    /// Messages pre-filled and drained by `dequeue_ack_batch100`.
    pub drain_messages: usize,
    /// How long the latency producer sends.
    pub latency_send: Duration,
}

impl Sizes {
    /// The sizes the suite module documents, smaller under `--quick`.
    pub fn of(config: &BenchConfig) -> Self {
        Self {
            batch_messages: config.pick(100_000, 10_000),
            single_messages: config.pick(20_000, 2_000),
            drain_messages: config.pick(100_000, 5_000),
            latency_send: config.pick(Duration::from_secs(10), Duration::from_secs(1)),
        }
    }
}

/// A pool of distinct random payloads, shared by all tasks.
#[derive(Clone)]
struct Payloads(Arc<[Bytes]>);

impl Payloads {
    fn new() -> Self {
        Self(
            (0..DISTINCT_PAYLOADS)
                .map(|i| Bytes::from(random_bytes(0x5155_4555 + i as u64, MESSAGE_BYTES)))
                .collect(),
        )
    }

    fn get(&self, i: usize) -> Bytes {
        self.0[i % self.0.len()].clone()
    }

    fn batch(&self, first: usize, len: usize) -> Vec<Bytes> {
        (first..first + len).map(|i| self.get(i)).collect()
    }
}

/// Measures every workload on `peer`, labelling rows with `system` and `durability`.
pub fn measure_peer<P: Peer>(
    h: &mut Harness<'_>,
    sizes: Sizes,
    system: &str,
    durability: &str,
    peer: &P,
) -> anyhow::Result<()> {
    measure_throughputs(h, sizes, system, durability, peer)?;
    measure_latency(h, sizes, system, durability, peer)
}

/// The workloads of [`measure_peer`] that measure msg/s.
pub fn measure_throughputs<P: Peer>(
    h: &mut Harness<'_>,
    sizes: Sizes,
    system: &str,
    durability: &str,
    peer: &P,
) -> anyhow::Result<()> {
    let payloads = Payloads::new();
    h.measure_async("enqueue_batch100", system, durability, "msg/s", || {
        let (peer, payloads) = (peer.clone(), payloads.clone());
        async move { fresh(&peer, enqueue_batch(&peer, &payloads, sizes.batch_messages)).await }
    })?;
    h.measure_async("enqueue_single_c32", system, durability, "msg/s", || {
        let (peer, payloads) = (peer.clone(), payloads.clone());
        async move {
            fresh(
                &peer,
                enqueue_single(&peer, &payloads, sizes.single_messages),
            )
            .await
        }
    })?;
    h.measure_async("dequeue_ack_batch100", system, durability, "msg/s", || {
        let (peer, payloads) = (peer.clone(), payloads.clone());
        async move { fresh(&peer, dequeue_ack(&peer, &payloads, sizes.drain_messages)).await }
    })
}

/// The workload of [`measure_peer`] that measures latency: rows [`LATENCY_WORKLOADS`].
pub fn measure_latency<P: Peer>(
    h: &mut Harness<'_>,
    sizes: Sizes,
    system: &str,
    durability: &str,
    peer: &P,
) -> anyhow::Result<()> {
    let payloads = Payloads::new();
    h.measure_many_async(LATENCY_FAMILY, system, durability, || {
        let (peer, payloads) = (peer.clone(), payloads.clone());
        async move {
            let [p50, p99, p999] =
                fresh(&peer, latency(&peer, &payloads, sizes.latency_send)).await?;
            let [w50, w99, w999] = LATENCY_WORKLOADS;
            Ok(vec![
                Measurement::new(w50, "us", p50),
                Measurement::new(w99, "us", p99),
                Measurement::new(w999, "us", p999),
            ])
        }
    })
}

/// Runs `work` on an empty queue, then deletes the queue whether or not `work` succeeded.
async fn fresh<P: Peer, T>(
    peer: &P,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    peer.reset().await.context("creating an empty queue")?;
    let outcome = work.await;
    let removed = peer.remove().await.context("deleting the queue");
    let value = outcome?;
    removed?;
    Ok(value)
}

/// `enqueue_batch100`: one producer, one batch of 100 in flight at a time.
async fn enqueue_batch<P: Peer>(peer: &P, payloads: &Payloads, n: usize) -> anyhow::Result<f64> {
    let producer = one(peer.producers(1).await?)?;
    let batches = n.div_ceil(BATCH);
    let started = Instant::now();
    for b in 0..batches {
        producer
            .enqueue_batch(payloads.batch(b * BATCH, BATCH))
            .await?;
    }
    Ok((batches * BATCH) as f64 / started.elapsed().as_secs_f64())
}

/// `enqueue_single_c32`: 32 tasks, each enqueueing one message at a time.
async fn enqueue_single<P: Peer>(peer: &P, payloads: &Payloads, n: usize) -> anyhow::Result<f64> {
    let producers = peer.producers(SINGLE_IN_FLIGHT).await?;
    let per_task = n.div_ceil(SINGLE_IN_FLIGHT);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for (lane, producer) in producers.into_iter().enumerate() {
        let payloads = payloads.clone();
        tasks.spawn(async move {
            for k in 0..per_task {
                producer.enqueue(payloads.get(lane * per_task + k)).await?;
            }
            anyhow::Ok(())
        });
    }
    join_all(tasks).await?;
    Ok((per_task * SINGLE_IN_FLIGHT) as f64 / started.elapsed().as_secs_f64())
}

/// Fills the queue with `n` messages (untimed set-up): four producers, batches of 100.
async fn fill<P: Peer>(peer: &P, payloads: &Payloads, n: usize) -> anyhow::Result<()> {
    const FILLERS: usize = 4;
    let batches = n.div_ceil(BATCH);
    let mut tasks = JoinSet::new();
    for (f, producer) in peer.producers(FILLERS).await?.into_iter().enumerate() {
        let payloads = payloads.clone();
        tasks.spawn(async move {
            for b in (f..batches).step_by(FILLERS) {
                producer
                    .enqueue_batch(payloads.batch(b * BATCH, BATCH))
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    join_all(tasks).await.context("filling the queue")
}

/// `dequeue_ack_batch100`: fill `n` (untimed), then four consumers drain them, each
/// receiving up to 100 at a time and acknowledging each batch before the next receive.
///
/// The clock runs from just before the consumers start receiving to the last
/// acknowledgement (for a consumer that keeps acknowledgements in flight, to when the
/// last one was confirmed); the idle waits of consumers that find the queue empty at the end are
/// not counted. Afterwards (untimed) the queue must hold nothing unacknowledged.
async fn dequeue_ack<P: Peer>(peer: &P, payloads: &Payloads, n: usize) -> anyhow::Result<f64> {
    let n = n.div_ceil(BATCH) * BATCH;
    fill(peer, payloads, n).await?;
    let mut consumers = Vec::with_capacity(DRAIN_CONSUMERS);
    for _ in 0..DRAIN_CONSUMERS {
        consumers.push(peer.consumer().await?);
    }
    let received = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for mut consumer in consumers {
        let (received, failed) = (received.clone(), failed.clone());
        tasks.spawn(async move {
            let drained = async {
                let mut last_ack = None;
                let mut last_message = Instant::now();
                while received.load(Ordering::SeqCst) < n && !failed.load(Ordering::SeqCst) {
                    let batch = consumer.receive(BATCH, DRAIN_WAIT).await?;
                    if batch.payloads.is_empty() {
                        ensure!(
                            last_message.elapsed() < STALL,
                            "a consumer received nothing for {STALL:?} with {} of {n} \
                             messages received",
                            received.load(Ordering::SeqCst)
                        );
                        continue;
                    }
                    received.fetch_add(batch.payloads.len(), Ordering::SeqCst);
                    consumer.ack(batch.ack).await?;
                    last_ack = Some(Instant::now());
                    last_message = Instant::now();
                }
                anyhow::Ok(last_ack)
            }
            .await;
            if drained.is_err() {
                failed.store(true, Ordering::SeqCst);
            }
            let settled = consumer.settle().await.context("settling acknowledgements");
            let closed = consumer.close().await.context("closing a consumer");
            let last_ack = drained?.max(settled?);
            closed?;
            anyhow::Ok(last_ack)
        });
    }
    let mut finished = None;
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.context("a consumer task panicked").and_then(|r| r) {
            Ok(last_ack) => finished = finished.max(last_ack),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let finished = finished.context("no consumer acknowledged anything")?;
    let got = received.load(Ordering::SeqCst);
    ensure!(got == n, "drained {got} messages from a queue of {n}");
    expect_empty(peer).await?;
    Ok(n as f64 / finished.duration_since(started).as_secs_f64())
}

/// `latency_2000`: an open-loop producer sends one message every 500 µs by a fixed
/// timetable, each send in its own task so a slow enqueue never delays the next; one
/// consumer long-polls and records, for every message, the time from just before its
/// enqueue call (stamped in the payload) to its arrival. Returns p50, p99, p99.9 in µs.
async fn latency<P: Peer>(
    peer: &P,
    payloads: &Payloads,
    send_for: Duration,
) -> anyhow::Result<[f64; 3]> {
    let total = (f64::from(LATENCY_RATE) * send_for.as_secs_f64()).round() as usize;
    let producers = Arc::new(peer.producers(LATENCY_LANES).await?);
    let mut consumer = peer.consumer().await?;
    // Subscribes before the clock starts, so the first messages do not pay for it. With
    // the options of the measured receives: a consumer that changes options may start
    // over (Wharf's closes its consumer, whose next poll is one call ahead), and an answer
    // in transit when a poll is cancelled stays invisible until its visibility timeout.
    let warm_up = consumer.receive(BATCH, LATENCY_WAIT).await?;
    ensure!(
        warm_up.payloads.is_empty(),
        "a fresh queue delivered a message"
    );

    let base = Instant::now();
    let deadline = base + send_for + STALL;
    let receiving = tokio::spawn(async move {
        let received = async {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut got = 0usize;
            while got < total {
                ensure!(
                    Instant::now() < deadline,
                    "received {got} of {total} messages by the deadline"
                );
                let batch = consumer.receive(BATCH, LATENCY_WAIT).await?;
                let now = nanos_since(base);
                for payload in &batch.payloads {
                    let sent = read_stamp(payload)?;
                    histogram.saturating_record(now.saturating_sub(sent) / 1_000);
                }
                got += batch.payloads.len();
                if !batch.payloads.is_empty() {
                    consumer.ack(batch.ack).await?;
                }
            }
            ensure!(got == total, "received {got} messages, {total} were sent");
            anyhow::Ok(histogram)
        }
        .await;
        let closed = consumer.close().await.context("closing the consumer");
        let histogram = received?;
        closed?;
        anyhow::Ok(histogram)
    });

    let interval = Duration::from_secs(1) / LATENCY_RATE;
    let start = tokio::time::Instant::now();
    let mut sends = JoinSet::new();
    let mut send_error = None;
    for i in 0..total {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let (producers, template) = (producers.clone(), payloads.get(i));
        sends.spawn(async move {
            let payload = stamp(&template, nanos_since(base));
            producers[i % LATENCY_LANES].enqueue(payload).await
        });
        while let Some(done) = sends.try_join_next() {
            if let Err(e) = done.context("a send task panicked").and_then(|r| r) {
                send_error.get_or_insert(e);
            }
        }
        if send_error.is_some() {
            break;
        }
    }
    let sent = join_all(sends).await;
    if let Some(e) = send_error {
        receiving.abort();
        return Err(e);
    }
    if let Err(e) = sent {
        receiving.abort();
        return Err(e);
    }
    let histogram = receiving.await.context("the consumer task panicked")??;
    expect_empty(peer).await?;
    Ok([0.5, 0.99, 0.999].map(|q| histogram.value_at_quantile(q) as f64))
}

fn nanos_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// `template` with its first 8 bytes replaced by `nanos` (little-endian).
fn stamp(template: &Bytes, nanos: u64) -> Bytes {
    let mut payload = BytesMut::from(&template[..]);
    payload[..8].copy_from_slice(&nanos.to_le_bytes());
    payload.freeze()
}

fn read_stamp(payload: &[u8]) -> anyhow::Result<u64> {
    let head = payload
        .get(..8)
        .context("a received message is shorter than its timestamp")?;
    Ok(u64::from_le_bytes(head.try_into()?))
}

/// Waits until every acknowledgement has been applied and the queue holds nothing.
async fn expect_empty<P: Peer>(peer: &P) -> anyhow::Result<()> {
    let since = Instant::now();
    loop {
        let left = peer.remaining().await?;
        if left == 0 {
            return Ok(());
        }
        ensure!(
            since.elapsed() < SETTLE,
            "{left} messages are still unacknowledged after the run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn one<T>(mut items: Vec<T>) -> anyhow::Result<T> {
    ensure!(
        items.len() == 1,
        "asked for one producer, got {}",
        items.len()
    );
    items.pop().context("asked for one producer, got none")
}

async fn join_all(mut tasks: JoinSet<anyhow::Result<()>>) -> anyhow::Result<()> {
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined.context("a task panicked").and_then(|r| r) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_and_keeps_the_rest_of_the_payload() {
        let template = Bytes::from(random_bytes(1, MESSAGE_BYTES));
        let stamped = stamp(&template, 123_456_789);
        assert_eq!(read_stamp(&stamped).unwrap(), 123_456_789);
        assert_eq!(stamped.len(), MESSAGE_BYTES);
        assert_eq!(stamped[8..], template[8..]);
    }

    #[test]
    fn payloads_are_distinct_and_cycle() {
        let payloads = Payloads::new();
        assert_ne!(payloads.get(0), payloads.get(1));
        assert_eq!(payloads.get(3), payloads.get(3 + DISTINCT_PAYLOADS));
        assert_eq!(payloads.batch(5, BATCH).len(), BATCH);
    }
}
