//! A model-based test of the [`QueueStore`] contract.
//!
//! Each case creates a fresh queue (random attempts limit, dead-letter
//! target and visibility timeout) and runs a random sequence of enqueues
//! (some delayed, some with dedup ids), dequeues, acknowledges, nacks and
//! extends (with receipts seen so far, stale and foreign ones included, and
//! junk), redrives and clock moves, against the store and against an
//! in-memory reference model. After every step the answers must agree — which
//! messages were delivered, in what order, at which attempt, each error's
//! meaning — and so must both queues' stats. proptest shrinks a failing
//! sequence to a short one before reporting it.
//!
//! All cases share one store and one clock, so a backend opens once:
//!
//! ```text
//! #[test]
//! fn queue_model() {
//!     wharf_storage::conformance::queue_model::run_queue_model(make, 10_000);
//! }
//! ```
//!
//! A failure prints its seed; `WHARF_QUEUE_MODEL_SEED=<seed>` replays it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use uuid::Uuid;
use wharf_core::queue::{DEAD_LETTERED_AT, DEDUP_WINDOW};
use wharf_core::{
    Clock, DequeueOptions, Error, ManualClock, NewMessage, QueueCreated, QueueName, QueueSettings,
    Receipt, Timestamp,
};

use super::{TestQueues, test_clock};
use crate::QueueStore;

mod reference;

use reference::{Enqueue, Lease, Outcome, Reference, Which};

/// Runs `cases` random operation sequences against the store `make` opens
/// and against the reference model; panics with the shrunk failing sequence
/// and its seed on the first disagreement.
///
/// `make` must open the store with [`QueueSettings::default`] as its queue
/// defaults and the given clock. It runs on a runtime this function owns, so
/// call this from a plain `#[test]`, not from inside a tokio runtime.
pub fn run_queue_model<F, Fut>(make: F, cases: u32)
where
    F: FnOnce(ManualClock) -> Fut,
    Fut: Future<Output = TestQueues>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let clock = test_clock();
    let fixture = runtime.block_on(make(clock.clone()));
    let seed = std::env::var("WHARF_QUEUE_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&u64::to_le_bytes(seed));
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let numbering = AtomicUsize::new(0);
    let started = Instant::now();
    let result = runner.run(&case_strategy(), |case| {
        let n = numbering.fetch_add(1, Ordering::Relaxed);
        runtime
            .block_on(run_case(&fixture.queues, &clock, n, &case))
            .map_err(TestCaseError::fail)
    });
    eprintln!(
        "queue model: {} sequences (shrinking included) in {:.1?}, seed {seed}",
        numbering.load(Ordering::Relaxed),
        started.elapsed()
    );
    {
        let _inside = runtime.enter();
        drop(fixture);
    }
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, case)) => panic!(
            "the store disagrees with the queue model: {why}\n\
             minimal failing case: {case:#?}\n\
             replay with WHARF_QUEUE_MODEL_SEED={seed}"
        ),
        Err(TestError::Abort(why)) => panic!("queue model aborted: {why} (seed {seed})"),
    }
}

/// A queue's settings and what to do with it.
#[derive(Debug, Clone)]
struct Case {
    max_attempts: u32,
    target: Target,
    visibility_timeout: Duration,
    ops: Vec<Op>,
}

/// The case queue's dead-letter target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A queue of its own, created by the first dead letter.
    DeadLetterQueue,
    None,
    /// The queue itself, which means none.
    Itself,
}

/// Which queue a receipt is used on.
#[derive(Debug, Clone, Copy)]
enum On {
    /// The queue that issued it.
    Own,
    Main,
    Dead,
}

/// A receipt among those seen so far, or junk.
#[derive(Debug, Clone, Copy)]
enum Pick {
    Seen(Index),
    Junk,
}

#[derive(Debug, Clone)]
enum Op {
    /// To the main queue: each message's delay and dedup id.
    Enqueue(Vec<(Duration, Option<u8>)>),
    Dequeue {
        on: Which,
        max: u32,
        vt: Option<Duration>,
    },
    Ack {
        on: On,
        receipts: Vec<Pick>,
    },
    Nack {
        on: On,
        receipt: Pick,
        after: Duration,
        reason: bool,
    },
    Extend {
        on: On,
        receipt: Pick,
        timeout: Duration,
    },
    Advance(Duration),
    Redrive(Which),
}

fn secs(range: std::ops::RangeInclusive<u64>) -> impl Strategy<Value = Duration> {
    range.prop_map(Duration::from_secs)
}

fn which() -> impl Strategy<Value = Which> {
    prop_oneof![4 => Just(Which::Main), 1 => Just(Which::Dead)]
}

fn on() -> impl Strategy<Value = On> {
    prop_oneof![8 => Just(On::Own), 1 => Just(On::Main), 1 => Just(On::Dead)]
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![9 => any::<Index>().prop_map(Pick::Seen), 1 => Just(Pick::Junk)]
}

fn op() -> impl Strategy<Value = Op> {
    // Whole seconds, so deadlines often fall exactly on the clock's reading.
    let delay = prop_oneof![3 => Just(Duration::ZERO), 1 => secs(1..=10)];
    let dedup = proptest::option::weighted(0.3, 0..3u8);
    let advance = prop_oneof![
        5 => secs(1..=5),
        2 => secs(6..=30),
        1 => (1..1_000u64).prop_map(Duration::from_millis),
        1 => Just(Duration::from_micros(1)),
        1 => Just(DEDUP_WINDOW),
    ];
    prop_oneof![
        4 => proptest::collection::vec((delay, dedup), 1..=3).prop_map(Op::Enqueue),
        4 => (which(), 1..=3u32, proptest::option::weighted(0.7, secs(1..=20)))
            .prop_map(|(on, max, vt)| Op::Dequeue { on, max, vt }),
        2 => (on(), proptest::collection::vec(pick(), 1..=3))
            .prop_map(|(on, receipts)| Op::Ack { on, receipts }),
        2 => (on(), pick(), prop_oneof![3 => Just(Duration::ZERO), 1 => secs(1..=10)], any::<bool>())
            .prop_map(|(on, receipt, after, reason)| Op::Nack { on, receipt, after, reason }),
        1 => (on(), pick(), secs(1..=20))
            .prop_map(|(on, receipt, timeout)| Op::Extend { on, receipt, timeout }),
        4 => advance.prop_map(Op::Advance),
        1 => prop_oneof![1 => Just(Which::Main), 3 => Just(Which::Dead)].prop_map(Op::Redrive),
    ]
}

fn case_strategy() -> impl Strategy<Value = Case> {
    let target = prop_oneof![
        6 => Just(Target::DeadLetterQueue),
        1 => Just(Target::None),
        1 => Just(Target::Itself),
    ];
    (
        1..=3u32,
        target,
        secs(1..=20),
        proptest::collection::vec(op(), 1..=32),
    )
        .prop_map(|(max_attempts, target, visibility_timeout, ops)| Case {
            max_attempts,
            target,
            visibility_timeout,
            ops,
        })
}

async fn run_case(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
    n: usize,
    case: &Case,
) -> Result<(), String> {
    let main = QueueName::new(format!("model-{n}")).expect("valid name");
    let dead = QueueName::new(format!("model-{n}-dead")).expect("valid name");
    let settings = QueueSettings {
        max_delivery_attempts: case.max_attempts,
        dead_letter_queue: match case.target {
            Target::DeadLetterQueue => Some(dead.clone()),
            Target::None => None,
            Target::Itself => Some(main.clone()),
        },
        visibility_timeout: case.visibility_timeout,
    };
    let created = queues.create_queue(&main, &settings).await;
    if created != Ok(QueueCreated::Created) {
        return Err(format!("create_queue({main}) answered {created:?}"));
    }
    let limit = (case.target == Target::DeadLetterQueue).then_some(case.max_attempts);
    let mut run = Run {
        queues: queues.as_ref(),
        clock,
        target: case.target,
        names: [main, dead],
        model: Reference::new(
            clock.now(),
            limit,
            case.visibility_timeout,
            &QueueSettings::default(),
        ),
        leases: Vec::new(),
        next_key: 0,
        last_id: None,
    };
    for (step, op) in case.ops.iter().enumerate() {
        let checked = async {
            run.step(op).await?;
            run.check_stats(Which::Main).await?;
            // While the model has no dead-letter queue, asking the store for
            // its stats every step only slows the run down: the delete at
            // the end checks that the store has none either.
            if run.model.dead.exists {
                run.check_stats(Which::Dead).await?;
            }
            Ok::<_, String>(())
        };
        checked
            .await
            .map_err(|e| format!("step {step}, {op:?}: {e}"))?;
    }
    // Deleting both queues keeps the one store small across thousands of cases.
    let [main, dead] = &run.names;
    let deleted = queues.delete_queue(main).await;
    if deleted.is_err() {
        return Err(format!("delete_queue({main}) answered {deleted:?}"));
    }
    let deleted = queues.delete_queue(dead).await;
    match (&deleted, run.model.dead.exists) {
        (Ok(()), true) => Ok(()),
        (Err(Error::QueueNotFound(q)), false) if q == dead => Ok(()),
        _ => Err(format!("delete_queue({dead}) answered {deleted:?}")),
    }
}

/// One case in progress: the store, the model, and the receipts seen.
struct Run<'a> {
    queues: &'a dyn QueueStore,
    clock: &'a ManualClock,
    target: Target,
    names: [QueueName; 2],
    model: Reference,
    leases: Vec<(Receipt, Lease)>,
    next_key: usize,
    last_id: Option<Uuid>,
}

impl Run<'_> {
    fn name(&self, which: Which) -> &QueueName {
        match which {
            Which::Main => &self.names[0],
            Which::Dead => &self.names[1],
        }
    }

    fn pick(&self, pick: Pick) -> (Receipt, Option<Lease>) {
        match pick {
            Pick::Seen(index) if !self.leases.is_empty() => {
                let (receipt, lease) = index.get(&self.leases);
                (receipt.clone(), Some(*lease))
            }
            _ => (Receipt::new("junk-receipt"), None),
        }
    }

    fn target_of(on: On, lease: Option<&Lease>) -> Which {
        match on {
            On::Own => lease.map_or(Which::Main, |l| l.queue),
            On::Main => Which::Main,
            On::Dead => Which::Dead,
        }
    }

    /// The meaning of a store's answer, in the model's terms.
    fn outcome(&self, got: &wharf_core::Result<()>) -> Result<Outcome, String> {
        let which = |q: &QueueName| {
            if q == self.name(Which::Main) {
                Ok(Which::Main)
            } else if q == self.name(Which::Dead) {
                Ok(Which::Dead)
            } else {
                Err(format!("an error names queue `{q}`: {got:?}"))
            }
        };
        match got {
            Ok(()) => Ok(Outcome::Ok),
            Err(Error::QueueNotFound(q)) => Ok(Outcome::NotFound(which(q)?)),
            Err(Error::LeaseLost {
                queue, message_id, ..
            }) => Ok(Outcome::LeaseLost(which(queue)?, *message_id)),
            Err(Error::InvalidArgument(_)) => Ok(Outcome::InvalidArgument),
            Err(other) => Err(format!("unexpected error {other:?}")),
        }
    }

    fn compare(
        &self,
        what: &str,
        expected: &Outcome,
        got: &wharf_core::Result<()>,
    ) -> Result<(), String> {
        let meaning = self.outcome(got)?;
        if meaning == *expected {
            Ok(())
        } else {
            Err(format!("{what}: expected {expected:?}, got {got:?}"))
        }
    }

    async fn step(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Enqueue(messages) => self.enqueue(messages).await,
            Op::Dequeue { on, max, vt } => self.dequeue(*on, *max, *vt).await,
            Op::Ack { on, receipts } => {
                let picked: Vec<_> = receipts.iter().map(|p| self.pick(*p)).collect();
                let queue = Self::target_of(*on, picked[0].1.as_ref());
                let receipts: Vec<Receipt> = picked.iter().map(|(r, _)| r.clone()).collect();
                let got = self.queues.ack(self.name(queue), &receipts).await;
                if !self.model.queue(queue).exists {
                    let got = got.map(|_| ());
                    return self.compare("ack", &Outcome::NotFound(queue), &got);
                }
                let outcomes = got.map_err(|e| format!("ack failed as a whole: {e:?}"))?;
                if outcomes.len() != picked.len() {
                    return Err(format!(
                        "{} receipts, {} outcomes",
                        picked.len(),
                        outcomes.len()
                    ));
                }
                for (i, ((_, lease), got)) in picked.iter().zip(&outcomes).enumerate() {
                    let expected = self.model.ack(queue, lease.as_ref());
                    self.compare(&format!("receipt {i}"), &expected, got)?;
                }
                Ok(())
            }
            Op::Nack {
                on,
                receipt,
                after,
                reason,
            } => {
                let (receipt, lease) = self.pick(*receipt);
                let queue = Self::target_of(*on, lease.as_ref());
                let reason = reason.then(|| "model says no".to_owned());
                let expected = self
                    .model
                    .nack(queue, lease.as_ref(), *after, reason.as_deref());
                let got = self
                    .queues
                    .nack(self.name(queue), &receipt, *after, reason)
                    .await;
                self.compare("nack", &expected, &got)
            }
            Op::Extend {
                on,
                receipt,
                timeout,
            } => {
                let (receipt, lease) = self.pick(*receipt);
                let queue = Self::target_of(*on, lease.as_ref());
                let expected = self.model.extend(queue, lease.as_ref(), *timeout);
                let got = self
                    .queues
                    .extend(self.name(queue), &receipt, *timeout)
                    .await;
                self.compare("extend", &expected, &got)
            }
            Op::Advance(by) => {
                self.clock.advance(*by);
                self.model.advance(*by);
                Ok(())
            }
            Op::Redrive(from) => {
                if *from == Which::Main && self.target == Target::Itself {
                    // Whether naming itself makes a queue a dead-letter queue
                    // is not the contract's to say; skip it.
                    return Ok(());
                }
                let expected = self.model.redrive(*from);
                let got = self.queues.redrive(self.name(*from), None).await;
                match (&expected, &got) {
                    (Ok(n), Ok(m)) if n == m => Ok(()),
                    (Err(outcome), Err(_)) => self.compare("redrive", outcome, &got.map(|_| ())),
                    _ => Err(format!("redrive: expected {expected:?}, got {got:?}")),
                }
            }
        }
    }

    async fn enqueue(&mut self, messages: &[(Duration, Option<u8>)]) -> Result<(), String> {
        let specs: Vec<(usize, Duration, Option<String>)> = messages
            .iter()
            .map(|(delay, dedup)| {
                self.next_key += 1;
                (self.next_key, *delay, dedup.map(|d| format!("dedup-{d}")))
            })
            .collect();
        let expected = self.model.enqueue(&specs);
        let batch = specs
            .iter()
            .map(|(key, delay, dedup)| {
                let m = NewMessage::new(key.to_string())
                    .with_metadata("key", key.to_string())
                    .with_content_type("text/plain")
                    .with_delay(*delay);
                match dedup {
                    Some(d) => m.with_dedup_id(d.clone()),
                    None => m,
                }
            })
            .collect();
        let got = self
            .queues
            .enqueue(self.name(Which::Main), batch)
            .await
            .map_err(|e| format!("enqueue failed: {e:?}"))?;
        if got.len() != expected.len() {
            return Err(format!(
                "{} messages, {} outcomes: {got:?}",
                expected.len(),
                got.len()
            ));
        }
        for ((spec, expected), got) in specs.iter().zip(&expected).zip(&got) {
            match expected {
                Enqueue::New(seq) => {
                    if got.duplicate {
                        return Err(format!(
                            "message {} is new, not a duplicate: {got:?}",
                            spec.0
                        ));
                    }
                    if self.last_id.is_some_and(|last| got.message_id <= last) {
                        return Err(format!(
                            "message id {} is not after {:?}",
                            got.message_id, self.last_id
                        ));
                    }
                    self.last_id = Some(got.message_id);
                    self.model
                        .main
                        .messages
                        .get_mut(seq)
                        .expect("just enqueued")
                        .id = Some(got.message_id);
                    if let Some(dedup) = &spec.2 {
                        self.model.dedup.get_mut(dedup).expect("recorded").0 = Some(got.message_id);
                    }
                }
                Enqueue::Duplicate(dedup) => {
                    let first = self.model.dedup[dedup].0;
                    if !got.duplicate || Some(got.message_id) != first {
                        return Err(format!(
                            "message {} repeats `{dedup}` of {first:?} within the window, got {got:?}",
                            spec.0
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    async fn dequeue(&mut self, on: Which, max: u32, vt: Option<Duration>) -> Result<(), String> {
        let expected = self.model.dequeue(on, max, vt);
        let options = DequeueOptions {
            visibility_timeout: vt,
            max_messages: max,
            wait: Duration::ZERO,
        };
        let got = self.queues.dequeue(self.name(on), options).await;
        let (places, deliveries) = match (expected, got) {
            (None, Err(Error::QueueNotFound(q))) if q == *self.name(on) => return Ok(()),
            (Some(places), Ok(deliveries)) if places.len() == deliveries.len() => {
                (places, deliveries)
            }
            (expected, got) => {
                let keys = expected.map(|places| {
                    places
                        .iter()
                        .map(|p| self.model.queue(on).messages[p].key)
                        .collect::<Vec<_>>()
                });
                return Err(format!(
                    "expected the messages with keys {keys:?}, got {got:?}"
                ));
            }
        };
        let main_name = self.names[0].as_str().to_owned();
        for (seq, d) in places.into_iter().zip(deliveries) {
            let m = self.model.queue(on).messages[&seq].clone();
            let mut metadata = d.metadata.clone();
            let dead_lettered_at = metadata.remove(DEAD_LETTERED_AT);
            let wrong = |what: &str| Err(format!("delivery of key {}: {what}: {d:#?}", m.key));
            if String::from_utf8_lossy(&d.data) != m.key.to_string() {
                return wrong("not the message expected");
            }
            if d.delivery_attempt != m.attempts {
                return wrong(&format!("attempt should be {}", m.attempts));
            }
            if metadata != m.metadata(&main_name) || d.content_type != "text/plain" {
                return wrong(&format!("metadata should be {:?}", m.metadata(&main_name)));
            }
            let in_range = |t: Timestamp, (lo, hi): (Timestamp, Timestamp)| lo <= t && t <= hi;
            if !in_range(d.enqueued_at, m.enqueued) {
                return wrong(&format!("enqueued_at should be in {:?}", m.enqueued));
            }
            match (&m.dead, dead_lettered_at) {
                (None, None) => {}
                (Some(dead), Some(at))
                    if at.parse::<Timestamp>().is_ok_and(|t| in_range(t, dead.at)) => {}
                (dead, at) => {
                    return wrong(&format!(
                        "`{DEAD_LETTERED_AT}` is {at:?}, the model says {dead:?}"
                    ));
                }
            }
            match m.id {
                Some(id) if id != d.message_id => {
                    return wrong(&format!("message id should be {id}"));
                }
                Some(_) => {}
                None => {
                    self.model
                        .queue_mut(on)
                        .messages
                        .get_mut(&seq)
                        .expect("delivered")
                        .id = Some(d.message_id)
                }
            }
            if self.leases.iter().any(|(r, _)| *r == d.receipt) {
                return wrong("the receipt was issued before");
            }
            let lease = Lease {
                queue: on,
                seq,
                attempt: d.delivery_attempt,
                message_id: d.message_id,
            };
            self.leases.push((d.receipt, lease));
        }
        Ok(())
    }

    async fn check_stats(&self, which: Which) -> Result<(), String> {
        let expected = self.model.stats(which);
        let got = self.queues.stats(self.name(which)).await;
        match (expected, got) {
            (None, Err(Error::QueueNotFound(q))) if q == *self.name(which) => Ok(()),
            (Some((expected, age)), Ok(mut got)) => {
                let got_age = got.oldest_age_micros.take();
                let age_ok = match (age, got_age) {
                    (None, None) => true,
                    (Some((lo, hi)), Some(a)) => lo <= a && a <= hi,
                    _ => false,
                };
                if got == expected && age_ok {
                    Ok(())
                } else {
                    Err(format!(
                        "stats of {which:?}: expected {expected:?} with oldest age in {age:?} µs, \
                         got {got:?} with oldest age {got_age:?}"
                    ))
                }
            }
            (expected, got) => Err(format!(
                "stats of {which:?}: expected {expected:?}, got {got:?}"
            )),
        }
    }
}
