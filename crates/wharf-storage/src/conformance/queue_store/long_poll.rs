//! Long polling: a waiting dequeue returns when a message becomes visible,
//! however it becomes visible, or when its wait passes on the clock.

use super::*;

pub async fn long_poll_returns_as_soon_as_a_message_is_enqueued(
    queues: &Arc<dyn QueueStore>,
    _: &ManualClock,
) {
    create(queues, "jobs", QueueSettings::default()).await;
    let waiting = spawn_long_poll(queues, "jobs", Duration::from_secs(20)).await;
    enqueue_data(queues, "jobs", "wake").await;
    let got = within(
        waiting,
        "long poll after an enqueue, the clock standing still",
    )
    .await;
    assert_eq!(datas(&got), ["wake"]);
    assert_eq!(got[0].delivery_attempt, 1);
}

pub async fn long_poll_returns_nothing_when_its_wait_passes_on_the_clock(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    create(queues, "jobs", QueueSettings::default()).await;
    let waiting = spawn_long_poll(queues, "jobs", Duration::from_secs(20)).await;
    clock.advance(Duration::from_secs(20) - MICRO);
    settle().await;
    assert!(!waiting.is_finished(), "the long poll waits its full 20 s");
    clock.advance(MICRO);
    let got = within(waiting, "long poll whose wait passed").await;
    assert!(got.is_empty(), "{got:?}");
    // A message enqueued after the poll gave up waits for the next dequeue.
    enqueue_data(queues, "jobs", "later").await;
    assert_eq!(stats(queues, "jobs").await.visible, 1);
}

pub async fn long_poll_is_woken_by_a_visibility_timeout_expiring(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    let id = enqueue_data(queues, "jobs", "m").await;
    dequeue_one(queues, "jobs", Duration::from_secs(10)).await;
    let waiting = spawn_long_poll(queues, "jobs", Duration::from_secs(20)).await;
    clock.advance(Duration::from_secs(10));
    let got = within(waiting, "long poll over an expiring delivery").await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].message_id, got[0].delivery_attempt), (id, 2));
}

pub async fn long_poll_is_woken_by_a_delay_passing(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    enqueue(
        queues,
        "jobs",
        NewMessage::new("delayed").with_delay(Duration::from_secs(5)),
    )
    .await;
    let waiting = spawn_long_poll(queues, "jobs", Duration::from_secs(20)).await;
    clock.advance(Duration::from_secs(5));
    let got = within(waiting, "long poll over a delayed message").await;
    assert_eq!(datas(&got), ["delayed"]);
}

pub async fn long_poll_is_woken_by_a_nack(queues: &Arc<dyn QueueStore>, _: &ManualClock) {
    enqueue_data(queues, "jobs", "m").await;
    let d = dequeue_one(queues, "jobs", Duration::from_secs(300)).await;
    let waiting = spawn_long_poll(queues, "jobs", Duration::from_secs(20)).await;
    queues
        .nack(&q("jobs"), &d.receipt, Duration::ZERO, None)
        .await
        .unwrap();
    let got = within(waiting, "long poll over a nacked message").await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].delivery_attempt, 2);
}

pub async fn a_long_poll_that_loses_the_race_for_a_message_keeps_waiting(
    queues: &Arc<dyn QueueStore>,
    _: &ManualClock,
) {
    create(queues, "jobs", QueueSettings::default()).await;
    let first = spawn_long_poll(queues, "jobs", Duration::from_secs(20)).await;
    let second = spawn_long_poll(queues, "jobs", Duration::from_secs(20)).await;
    enqueue_data(queues, "jobs", "one").await;
    // Whichever poll took `one`, the other must not give up early: its wait
    // has not passed on the clock.
    let one_returned = async {
        while !first.is_finished() && !second.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), one_returned)
        .await
        .expect("a long poll returns within 5 real seconds of the enqueue");
    let (winner, loser) = if first.is_finished() {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(datas(&within(winner, "the winning poll").await), ["one"]);
    settle().await;
    assert!(
        !loser.is_finished(),
        "the other poll keeps waiting, it does not return empty"
    );
    enqueue_data(queues, "jobs", "two").await;
    let got = within(loser, "the second long poll after a second enqueue").await;
    assert_eq!(datas(&got), ["two"]);
}

pub async fn a_long_poll_whose_caller_went_away_takes_nothing(
    queues: &Arc<dyn QueueStore>,
    _: &ManualClock,
) {
    create(queues, "jobs", QueueSettings::default()).await;
    let abandoned = spawn_long_poll(queues, "jobs", Duration::from_secs(20)).await;
    abandoned.abort();
    let _ = abandoned.await;
    settle().await;
    enqueue_data(queues, "jobs", "m").await;
    // Nothing was leased to the poll that is gone: the message is visible,
    // on its first delivery.
    let got = dequeue_one(queues, "jobs", Duration::from_secs(30)).await;
    assert_eq!((data(&got), got.delivery_attempt), ("m".to_owned(), 1));
    let s = stats(queues, "jobs").await;
    assert_eq!((s.visible, s.in_flight, s.deliveries), (0, 1, 1), "{s:?}");
}

pub async fn a_long_poll_that_gives_up_leaves_the_next_message_visible(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    create(queues, "jobs", QueueSettings::default()).await;
    for round in 0..3 {
        let waiting = spawn_long_poll(queues, "jobs", Duration::from_secs(1)).await;
        clock.advance(Duration::from_secs(1));
        let got = within(waiting, "long poll whose wait passed").await;
        assert!(got.is_empty(), "round {round}: {got:?}");
    }
    enqueue_data(queues, "jobs", "m").await;
    let s = stats(queues, "jobs").await;
    assert_eq!((s.visible, s.in_flight), (1, 0), "{s:?}");
}
