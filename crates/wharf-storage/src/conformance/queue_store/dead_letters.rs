//! Dead letters and redrive.

use std::collections::BTreeMap;

use wharf_core::queue::{
    DEAD_LETTERED_AT, DELIVERY_ATTEMPTS, LAST_ERROR, NACKED_WITHOUT_REASON, ORIGINAL_STREAM_NAME,
    VISIBILITY_TIMEOUT_EXPIRED,
};

use super::*;

/// The settings a dead-letter queue gets when its first dead letter creates it.
fn created_dead_letter_queue() -> QueueSettings {
    QueueSettings {
        dead_letter_queue: None,
        ..QueueSettings::default()
    }
}

/// Checks the dead-letter keys and returns the rest of the metadata.
fn split_dead_letter_metadata(
    d: &Delivery,
    from: &str,
    attempts: u32,
    last_error: &str,
    dead_lettered_at: Timestamp,
) -> BTreeMap<String, String> {
    let mut metadata = d.metadata.clone();
    let mut take = |key: &str| {
        metadata
            .remove(key)
            .unwrap_or_else(|| panic!("dead letter lacks `{key}`: {:?}", d.metadata))
    };
    assert_eq!(take(ORIGINAL_STREAM_NAME), from);
    assert_eq!(take(DELIVERY_ATTEMPTS), attempts.to_string());
    assert_eq!(take(LAST_ERROR), last_error);
    let when = take(DEAD_LETTERED_AT);
    assert_eq!(
        when.parse::<Timestamp>().ok(),
        Some(dead_lettered_at),
        "`{DEAD_LETTERED_AT}` is `{when}`"
    );
    metadata
}

/// Delivers the only message of `queue` `times` times, failing each delivery
/// by nack or timeout in turn; returns the attempts seen.
async fn fail_deliveries(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
    queue: &str,
    times: usize,
) -> Vec<u32> {
    let mut attempts = Vec::new();
    for i in 0..times {
        let d = dequeue_one(queues, queue, Duration::from_secs(10)).await;
        attempts.push(d.delivery_attempt);
        if i % 2 == 0 {
            queues
                .nack(&q(queue), &d.receipt, Duration::ZERO, None)
                .await
                .unwrap();
        } else {
            clock.advance(Duration::from_secs(10));
        }
    }
    attempts
}

pub async fn nacking_the_last_attempt_dead_letters_the_message_with_its_history(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    create(
        queues,
        "jobs",
        settings(2, Some("dead"), Duration::from_secs(30)),
    )
    .await;
    let message = NewMessage::new(r#"{"x":1}"#)
        .with_metadata("tenant", "acme")
        .with_content_type("application/json");
    let id = enqueue(queues, "jobs", message.clone()).await;
    let first = dequeue_one(queues, "jobs", Duration::from_secs(30)).await;
    queues
        .nack(
            &q("jobs"),
            &first.receipt,
            Duration::ZERO,
            Some("first".into()),
        )
        .await
        .unwrap();
    let last = dequeue_one(queues, "jobs", Duration::from_secs(30)).await;
    assert_eq!(last.delivery_attempt, 2);
    clock.advance(Duration::from_secs(7));
    let nacked_at = at(clock);
    queues
        .nack(
            &q("jobs"),
            &last.receipt,
            Duration::ZERO,
            Some("boom".into()),
        )
        .await
        .unwrap();

    clock.advance(Duration::from_secs(60));
    assert_nothing_visible(queues, "jobs", "after the last attempt was nacked").await;
    let s = stats(queues, "jobs").await;
    assert_eq!(
        (s.depth(), s.nacks, s.dead_lettered, s.dead_letters),
        (0, 2, 1, 1),
        "{s:?}"
    );
    assert_lease_lost(
        ack(queues, "jobs", &last.receipt).await,
        "jobs",
        id,
        "ack of a dead letter",
    );

    let listed = queues.list_queues().await.unwrap();
    let dead = listed
        .iter()
        .find(|i| i.name == q("dead"))
        .expect("`dead` was created");
    assert_eq!(dead.settings, created_dead_letter_queue());
    let letter = dequeue_one(queues, "dead", Duration::from_secs(30)).await;
    assert_eq!(
        letter.delivery_attempt, 1,
        "a new message in the dead-letter queue"
    );
    assert_eq!(letter.data, message.data);
    assert_eq!(letter.content_type, "application/json");
    let rest = split_dead_letter_metadata(&letter, "jobs", 2, "boom", nacked_at);
    assert_eq!(rest, message.metadata, "the original metadata is kept");
}

pub async fn nacking_the_last_attempt_without_a_reason_records_nacked(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    create(queues, "dead", created_dead_letter_queue()).await;
    create(
        queues,
        "jobs",
        settings(1, Some("dead"), Duration::from_secs(30)),
    )
    .await;
    enqueue_data(queues, "jobs", "m").await;
    let d = dequeue_one(queues, "jobs", Duration::from_secs(30)).await;
    // A dead letter is an enqueue to the dead-letter queue: it wakes a poll there.
    let waiting = spawn_long_poll(queues, "dead", Duration::from_secs(20)).await;
    queues
        .nack(&q("jobs"), &d.receipt, Duration::from_secs(5), None)
        .await
        .unwrap();
    let got = within(waiting, "long poll on the dead-letter queue").await;
    assert_eq!(got.len(), 1, "{got:?}");
    let rest = split_dead_letter_metadata(&got[0], "jobs", 1, NACKED_WITHOUT_REASON, at(clock));
    assert!(rest.is_empty(), "{rest:?}");
}

pub async fn a_timed_out_last_attempt_is_dead_lettered_without_any_client_call(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    create(queues, "dead", created_dead_letter_queue()).await;
    create(
        queues,
        "jobs",
        settings(1, Some("dead"), Duration::from_secs(30)),
    )
    .await;
    enqueue(
        queues,
        "jobs",
        NewMessage::new("slow").with_metadata("k", "v"),
    )
    .await;
    dequeue_one(queues, "jobs", Duration::from_secs(10)).await;
    let deadline = at(clock).saturating_add(Duration::from_secs(10));
    // Only this long poll on the dead-letter queue is running when the
    // timeout passes: nothing touches `jobs`.
    let waiting = spawn_long_poll(queues, "dead", Duration::from_secs(20)).await;
    clock.advance(Duration::from_secs(10));
    let got = within(waiting, "long poll on the dead-letter queue").await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(data(&got[0]), "slow");
    let rest = split_dead_letter_metadata(&got[0], "jobs", 1, VISIBILITY_TIMEOUT_EXPIRED, deadline);
    assert_eq!(rest, BTreeMap::from([("k".to_owned(), "v".to_owned())]));
    let s = stats(queues, "jobs").await;
    assert_eq!(
        (s.depth(), s.dead_lettered, s.dead_letters),
        (0, 1, 1),
        "{s:?}"
    );
}

pub async fn a_message_is_never_delivered_more_than_max_delivery_attempts_times(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    create(
        queues,
        "jobs",
        settings(3, Some("dead"), Duration::from_secs(30)),
    )
    .await;
    enqueue_data(queues, "jobs", "m").await;
    assert_eq!(fail_deliveries(queues, clock, "jobs", 3).await, [1, 2, 3]);
    for _ in 0..3 {
        assert_nothing_visible(queues, "jobs", "after the last attempt").await;
        clock.advance(Duration::from_secs(3600));
    }
    let s = stats(queues, "jobs").await;
    assert_eq!(
        (s.depth(), s.deliveries, s.dead_lettered),
        (0, 3, 1),
        "{s:?}"
    );
    let letter = dequeue_one(queues, "dead", Duration::from_secs(30)).await;
    assert_eq!(letter.metadata[DELIVERY_ATTEMPTS], "3");
    assert_eq!(
        letter.metadata[LAST_ERROR], NACKED_WITHOUT_REASON,
        "the third failure was a nack"
    );
}

pub async fn a_dead_letter_queue_never_dead_letters_its_messages(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    create(
        queues,
        "jobs",
        settings(1, Some("dead"), Duration::from_secs(30)),
    )
    .await;
    enqueue_data(queues, "jobs", "m").await;
    let d = dequeue_one(queues, "jobs", Duration::from_secs(30)).await;
    queues
        .nack(&q("jobs"), &d.receipt, Duration::ZERO, None)
        .await
        .unwrap();
    // More failures than the default five attempts the queue was created with.
    let attempts = fail_deliveries(queues, clock, "dead", 7).await;
    assert_eq!(attempts, [1, 2, 3, 4, 5, 6, 7]);
    let s = stats(queues, "dead").await;
    assert_eq!((s.visible, s.dead_lettered), (1, 0), "{s:?}");
}

pub async fn a_queue_without_a_dead_letter_target_redelivers_without_limit(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    create(queues, "free", settings(1, None, Duration::from_secs(30))).await;
    enqueue_data(queues, "free", "m").await;
    assert_eq!(
        fail_deliveries(queues, clock, "free", 4).await,
        [1, 2, 3, 4]
    );
    let s = stats(queues, "free").await;
    assert_eq!(
        (s.visible, s.dead_lettered, s.dead_letters),
        (1, 0, 0),
        "{s:?}"
    );
}

pub async fn a_queue_naming_itself_as_dead_letter_queue_never_dead_letters(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    create(
        queues,
        "loop",
        settings(1, Some("loop"), Duration::from_secs(30)),
    )
    .await;
    enqueue_data(queues, "loop", "m").await;
    assert_eq!(fail_deliveries(queues, clock, "loop", 3).await, [1, 2, 3]);
    // The default target is `dlq`, so `dlq` made by its first enqueue names itself.
    enqueue_data(queues, "dlq", "m").await;
    assert_eq!(
        fail_deliveries(queues, clock, "dlq", 6).await,
        [1, 2, 3, 4, 5, 6]
    );
    for queue in ["loop", "dlq"] {
        let s = stats(queues, queue).await;
        assert_eq!((s.visible, s.dead_lettered), (1, 0), "{queue}: {s:?}");
    }
}

/// `jobs` and `mail` dead-letter into `dead` on their first failure; fails
/// `j1`, then `m1`, then `j2` (in that order), then enqueues `j3` to `jobs`.
async fn dead_letter_three(queues: &Arc<dyn QueueStore>) {
    for queue in ["jobs", "mail"] {
        create(
            queues,
            queue,
            settings(1, Some("dead"), Duration::from_secs(30)),
        )
        .await;
    }
    for (queue, data) in [("jobs", "j1"), ("mail", "m1"), ("jobs", "j2")] {
        enqueue(
            queues,
            queue,
            NewMessage::new(data).with_metadata("n", data),
        )
        .await;
        let d = dequeue_one(queues, queue, Duration::from_secs(30)).await;
        queues
            .nack(&q(queue), &d.receipt, Duration::ZERO, Some("bad".into()))
            .await
            .unwrap();
    }
    enqueue_data(queues, "jobs", "j3").await;
    assert_eq!(stats(queues, "dead").await.visible, 3);
    assert_eq!(stats(queues, "jobs").await.dead_letters, 2);
}

pub async fn redrive_moves_dead_letters_back_to_the_end_of_their_original_queues(
    queues: &Arc<dyn QueueStore>,
    _: &ManualClock,
) {
    dead_letter_three(queues).await;
    assert_eq!(queues.redrive(&q("dead"), None).await, Ok(3));
    let jobs = dequeue(queues, "jobs", 10, Duration::from_secs(30)).await;
    assert_eq!(
        datas(&jobs),
        ["j3", "j1", "j2"],
        "redriven messages join at the end"
    );
    let mail = dequeue(queues, "mail", 10, Duration::from_secs(30)).await;
    assert_eq!(datas(&mail), ["m1"]);
    for d in jobs[1..].iter().chain(&mail) {
        assert_eq!(d.delivery_attempt, 1, "attempts start again: {d:?}");
        let expected = BTreeMap::from([("n".to_owned(), data(d))]);
        assert_eq!(d.metadata, expected, "the dead-letter keys are removed");
    }
    assert_eq!(stats(queues, "dead").await.depth(), 0);
    assert_eq!(stats(queues, "jobs").await.dead_letters, 0);
}

pub async fn redrive_to_a_named_queue_moves_every_dead_letter_there(
    queues: &Arc<dyn QueueStore>,
    _: &ManualClock,
) {
    dead_letter_three(queues).await;
    enqueue_data(queues, "retry", "r0").await;
    assert_eq!(queues.redrive(&q("dead"), Some(&q("retry"))).await, Ok(3));
    let retry = dequeue(queues, "retry", 10, Duration::from_secs(30)).await;
    assert_eq!(
        datas(&retry),
        ["r0", "j1", "m1", "j2"],
        "in dead-letter order, at the end"
    );
    assert!(
        retry[1..]
            .iter()
            .all(|d| !d.metadata.contains_key(ORIGINAL_STREAM_NAME))
    );
    assert_eq!(
        datas(&dequeue(queues, "jobs", 10, Duration::from_secs(30)).await),
        ["j3"]
    );
    assert_nothing_visible(queues, "mail", "after redriving elsewhere").await;
    assert_eq!(stats(queues, "dead").await.depth(), 0);
}

pub async fn redrive_leaves_dead_letters_in_flight(queues: &Arc<dyn QueueStore>, _: &ManualClock) {
    dead_letter_three(queues).await;
    let held = dequeue_one(queues, "dead", Duration::from_secs(30)).await;
    assert_eq!(data(&held), "j1");
    assert_eq!(queues.redrive(&q("dead"), None).await, Ok(2));
    assert_eq!(
        datas(&dequeue(queues, "jobs", 10, Duration::from_secs(30)).await),
        ["j3", "j2"]
    );
    assert_eq!(
        datas(&dequeue(queues, "mail", 10, Duration::from_secs(30)).await),
        ["m1"]
    );
    let s = stats(queues, "dead").await;
    assert_eq!((s.in_flight, s.visible), (1, 0), "{s:?}");
    assert_eq!(
        ack(queues, "dead", &held.receipt).await,
        Ok(()),
        "its lease is intact"
    );
}

pub async fn redriving_a_queue_that_is_not_a_dead_letter_queue_is_invalid_and_changes_nothing(
    queues: &Arc<dyn QueueStore>,
    _: &ManualClock,
) {
    enqueue_data(queues, "plain", "p").await;
    enqueue_data(queues, "other", "o").await;
    let before = stats(queues, "plain").await;
    assert_invalid_argument(
        queues.redrive(&q("plain"), None).await,
        "redrive of `plain`",
    );
    assert_invalid_argument(
        queues.redrive(&q("plain"), Some(&q("other"))).await,
        "redrive of `plain` to `other`",
    );
    assert_eq!(stats(queues, "plain").await, before, "nothing changed");
    assert_eq!(stats(queues, "other").await.visible, 1);
    assert_eq!(
        datas(&dequeue(queues, "plain", 10, Duration::from_secs(30)).await),
        ["p"]
    );

    // A queue that some queue names as its target is a dead-letter queue,
    // even while it holds no dead letter.
    create(queues, "dead", created_dead_letter_queue()).await;
    create(
        queues,
        "jobs",
        settings(1, Some("dead"), Duration::from_secs(30)),
    )
    .await;
    assert_eq!(queues.redrive(&q("dead"), None).await, Ok(0));
}
