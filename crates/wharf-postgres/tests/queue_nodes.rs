//! Two nodes on one database: wake-ups, timeouts and deliveries must not
//! depend on which node a client talks to.
//!
//! Both stores share one schema and one manual clock; nothing sleeps on
//! the clock, and real-time bounds only stop a broken backend from hanging.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use wharf_core::{Delivery, DequeueOptions, ManualClock, NewMessage, QueueName, Receipt};
use wharf_postgres::PgStore;
use wharf_postgres::testing::TestSchema;
use wharf_storage::QueueStore;
use wharf_storage::conformance::test_clock;

fn q(name: &str) -> QueueName {
    QueueName::new(name).expect("valid queue name")
}

/// Two stores on one fresh schema, sharing `clock`.
async fn two_nodes(clock: &ManualClock) -> (TestSchema, Arc<PgStore>, Arc<PgStore>) {
    let schema = TestSchema::new();
    let a = Arc::new(schema.open(Arc::new(clock.clone())).await);
    let b = Arc::new(schema.open(Arc::new(clock.clone())).await);
    (schema, a, b)
}

fn options(max_messages: u32, vt: Duration, wait: Duration) -> DequeueOptions {
    DequeueOptions {
        visibility_timeout: Some(vt),
        max_messages,
        wait,
    }
}

/// Starts a long poll on `store` and checks it is waiting.
async fn spawn_long_poll(
    store: &Arc<PgStore>,
    queue: &str,
) -> tokio::task::JoinHandle<Vec<Delivery>> {
    let store = store.clone();
    let queue = q(queue);
    let task = tokio::spawn(async move {
        store
            .dequeue(
                &queue,
                options(10, Duration::from_secs(60), Duration::from_secs(20)),
            )
            .await
            .expect("long poll succeeds")
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!task.is_finished(), "the long poll is waiting");
    task
}

async fn within<T>(task: tokio::task::JoinHandle<T>, what: &str) -> T {
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within 5 real seconds"))
        .expect("task does not panic")
}

fn data(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.data).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_one_node_wakes_for_an_enqueue_on_another() {
    let clock = test_clock();
    let (_schema, a, b) = two_nodes(&clock).await;
    a.create_queue(&q("jobs"), &Default::default())
        .await
        .unwrap();
    let waiting = spawn_long_poll(&b, "jobs").await;
    a.enqueue(&q("jobs"), vec![NewMessage::new("hello")])
        .await
        .unwrap();
    let got = within(waiting, "long poll on B after an enqueue on A").await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (data(&got[0]).as_str(), got[0].delivery_attempt),
        ("hello", 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_never_miss_an_enqueue_racing_them_from_another_node() {
    // An enqueue notifies other nodes only when one of their long polls is
    // registered as waiting; here each enqueue races the poll's
    // registration, and the clock stands still, so a missed wake-up would
    // leave the poll waiting.
    let clock = test_clock();
    let (_schema, a, b) = two_nodes(&clock).await;
    a.create_queue(&q("race"), &Default::default())
        .await
        .unwrap();
    for round in 0..20 {
        let b = b.clone();
        let poll = tokio::spawn(async move {
            b.dequeue(
                &q("race"),
                options(10, Duration::from_secs(60), Duration::from_secs(20)),
            )
            .await
            .expect("long poll succeeds")
        });
        if round % 2 == 1 {
            tokio::task::yield_now().await;
        }
        a.enqueue(&q("race"), vec![NewMessage::new(round.to_string())])
            .await
            .unwrap();
        let got = within(poll, "a long poll racing an enqueue on the other node").await;
        assert_eq!(
            got.iter().map(data).collect::<Vec<_>>(),
            [round.to_string()]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visibility_timeout_set_on_one_node_wakes_a_long_poll_on_another() {
    let clock = test_clock();
    let (_schema, a, b) = two_nodes(&clock).await;
    let id = a
        .enqueue(&q("jobs"), vec![NewMessage::new("m")])
        .await
        .unwrap()[0]
        .message_id;
    let first = a
        .dequeue(
            &q("jobs"),
            options(1, Duration::from_secs(5), Duration::ZERO),
        )
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let waiting = spawn_long_poll(&b, "jobs").await;
    // Less than the ten seconds after which an idle timer looks anyway.
    clock.advance(Duration::from_secs(5) - Duration::from_micros(1));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "1 µs before the timeout B still waits"
    );
    clock.advance(Duration::from_micros(1));
    let got = within(waiting, "long poll on B when A's delivery times out").await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].message_id, got[0].delivery_attempt), (id, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_time_announced_by_a_node_that_stopped_still_wakes_the_others() {
    let clock = test_clock();
    let (_schema, a, b) = two_nodes(&clock).await;
    a.enqueue(
        &q("jobs"),
        vec![NewMessage::new("later").with_delay(Duration::from_secs(5))],
    )
    .await
    .unwrap();
    let waiting = spawn_long_poll(&b, "jobs").await;
    // A announced the delay's end before it stopped; only B's timer is left
    // to make the message visible.
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Less than the ten seconds after which an idle timer looks anyway: B
    // wakes because it heard A's announcement.
    clock.advance(Duration::from_secs(5));
    let got = within(waiting, "long poll on B after A stopped").await;
    assert_eq!(got.iter().map(data).collect::<Vec<_>>(), ["later"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_on_two_nodes_receive_every_message_exactly_once() {
    const MESSAGES: usize = 400;
    let clock = test_clock();
    let (_schema, a, b) = two_nodes(&clock).await;
    for chunk in 0..MESSAGES / 50 {
        let batch = (0..50)
            .map(|i| NewMessage::new((chunk * 50 + i).to_string()))
            .collect();
        let producer = if chunk % 2 == 0 { &a } else { &b };
        producer.enqueue(&q("work"), batch).await.unwrap();
    }
    // The clock stands still, so no visibility timeout expires: a message
    // seen twice would be seen twice within its timeout.
    let consumers: Vec<_> = [&a, &b, &a, &b, &a, &b]
        .into_iter()
        .map(|node| {
            let node = node.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                loop {
                    let got = node
                        .dequeue(
                            &q("work"),
                            options(7, Duration::from_secs(60), Duration::ZERO),
                        )
                        .await
                        .unwrap();
                    if got.is_empty() {
                        return seen;
                    }
                    let receipts: Vec<Receipt> = got.iter().map(|d| d.receipt.clone()).collect();
                    let outcomes = node.ack(&q("work"), &receipts).await.unwrap();
                    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
                    seen.extend(got.iter().map(|d| (data(d), d.delivery_attempt)));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for consumer in consumers {
        all.extend(
            tokio::time::timeout(Duration::from_secs(30), consumer)
                .await
                .expect("consumers finish")
                .expect("consumer does not panic"),
        );
    }
    assert!(
        all.iter().all(|(_, attempt)| *attempt == 1),
        "no message was delivered again"
    );
    let distinct: BTreeSet<&String> = all.iter().map(|(d, _)| d).collect();
    assert_eq!(all.len(), MESSAGES, "every message delivered once");
    assert_eq!(distinct.len(), MESSAGES, "no message delivered twice");
    for node in [&a, &b] {
        let s = node.stats(&q("work")).await.unwrap();
        assert_eq!(
            (s.depth(), s.deliveries, s.acks),
            (0, MESSAGES as u64, MESSAGES as u64),
            "both nodes see the same counts: {s:?}"
        );
    }
}
