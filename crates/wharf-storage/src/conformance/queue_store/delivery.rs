//! Enqueue, order, visibility, nack, extend, delay and deduplication.

use super::*;

pub async fn message_ids_are_unique_and_time_ordered(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    let mut ids = Vec::new();
    for round in 0..3 {
        let batch: Vec<NewMessage> = (0..5)
            .map(|i| NewMessage::new(format!("{round}-{i}")))
            .collect();
        let enqueued = queues.enqueue(&q("jobs"), batch).await.unwrap();
        assert_eq!(enqueued.len(), 5, "one outcome per message, in order");
        ids.extend(enqueued.iter().map(|e| e.message_id));
        enqueue_data(queues, "other", "interleaved").await;
        if round == 1 {
            clock.advance(Duration::from_millis(3));
        }
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids increase in enqueue order, also within one clock tick: {ids:?}"
    );
    let delivered = dequeue(queues, "jobs", 15, Duration::from_secs(30)).await;
    let delivered_ids: Vec<_> = delivered.iter().map(|d| d.message_id).collect();
    assert_eq!(delivered_ids, ids);
}

pub async fn delivery_carries_the_message_as_enqueued(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    let message = NewMessage::new(vec![0u8, 159, 146, 150, 255])
        .with_metadata("tenant", "acme")
        .with_metadata("trace", "t-1")
        .with_content_type("application/x-binary");
    let enqueued_at = at(clock);
    let id = enqueue(queues, "jobs", message.clone()).await;
    clock.advance(Duration::from_secs(3));
    let d = dequeue_one(queues, "jobs", Duration::from_secs(30)).await;
    assert_eq!(d.message_id, id);
    assert_eq!(d.data, message.data);
    assert_eq!(d.metadata, message.metadata);
    assert_eq!(d.content_type, "application/x-binary");
    assert_eq!(d.delivery_attempt, 1);
    assert_eq!(d.enqueued_at, enqueued_at);
    assert!(!d.receipt.as_str().is_empty());
}

pub async fn a_large_batch_enqueues_every_message_whole_and_in_order(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    // Long enough to span several of a backend's multi-row statements and
    // leave a remainder; every message differs in data, metadata and
    // content type, one in ten is delayed, and one dedup id repeats.
    let batch: Vec<NewMessage> = (0..67u32)
        .map(|i| {
            let m = NewMessage::new(format!("m{i}").repeat(i as usize % 7 + 1))
                .with_metadata("i", i.to_string())
                .with_content_type(format!("text/x-{i}"));
            match i {
                _ if i % 10 == 3 => m.with_delay(Duration::from_secs(5)),
                40 | 41 => m.with_dedup_id("twice"),
                _ => m,
            }
        })
        .collect();
    let enqueued = queues.enqueue(&q("jobs"), batch.clone()).await.unwrap();
    assert_eq!(enqueued.len(), 67, "one outcome per message, in order");
    assert!(enqueued[41].duplicate && enqueued[41].message_id == enqueued[40].message_id);
    assert!(enqueued.iter().filter(|e| e.duplicate).count() == 1);

    let check = |got: &[Delivery], wanted: Vec<u32>| {
        let got: Vec<_> = got
            .iter()
            .map(|d| {
                (
                    d.message_id,
                    d.data.clone(),
                    d.metadata.clone(),
                    d.content_type.clone(),
                )
            })
            .collect();
        let wanted: Vec<_> = wanted
            .into_iter()
            .map(|i| {
                let m = &batch[i as usize];
                let id = enqueued[i as usize].message_id;
                (
                    id,
                    m.data.clone(),
                    m.metadata.clone(),
                    m.content_type.clone(),
                )
            })
            .collect();
        assert_eq!(got, wanted);
    };
    let visible = dequeue(queues, "jobs", 100, Duration::from_secs(30)).await;
    check(
        &visible,
        (0..67).filter(|i| i % 10 != 3 && *i != 41).collect(),
    );
    clock.advance(Duration::from_secs(5));
    let delayed = dequeue(queues, "jobs", 100, Duration::from_secs(30)).await;
    check(&delayed, (0..67).filter(|i| i % 10 == 3).collect());
}

pub async fn dequeue_returns_visible_messages_in_enqueue_order(
    queues: &Arc<dyn QueueStore>,
    _: &ManualClock,
) {
    let batch: Vec<NewMessage> = ["a", "b", "c"].into_iter().map(NewMessage::new).collect();
    queues.enqueue(&q("jobs"), batch).await.unwrap();
    for d in ["d", "e"] {
        enqueue_data(queues, "jobs", d).await;
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(data(
            &dequeue_one(queues, "jobs", Duration::from_secs(30)).await,
        ));
    }
    assert_eq!(got, ["a", "b", "c", "d", "e"]);
}

pub async fn a_redelivered_message_goes_before_newer_ones(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    enqueue_data(queues, "jobs", "old").await;
    enqueue_data(queues, "jobs", "nacked").await;
    let old = dequeue_one(queues, "jobs", Duration::from_secs(10)).await;
    let nacked = dequeue_one(queues, "jobs", Duration::from_secs(60)).await;
    for d in ["new-1", "new-2"] {
        enqueue_data(queues, "jobs", d).await;
    }
    queues
        .nack(&q("jobs"), &nacked.receipt, Duration::ZERO, None)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(10));
    let got = dequeue(queues, "jobs", 10, Duration::from_secs(30)).await;
    assert_eq!(datas(&got), ["old", "nacked", "new-1", "new-2"]);
    let attempts: Vec<u32> = got.iter().map(|d| d.delivery_attempt).collect();
    assert_eq!(attempts, [2, 2, 1, 1]);
    assert_eq!(got[0].message_id, old.message_id);
}

pub async fn batch_dequeue_returns_at_most_max_messages(
    queues: &Arc<dyn QueueStore>,
    _: &ManualClock,
) {
    for i in 0..5 {
        enqueue_data(queues, "jobs", &i.to_string()).await;
    }
    assert_eq!(
        datas(&dequeue(queues, "jobs", 3, Duration::from_secs(30)).await),
        ["0", "1", "2"]
    );
    assert_eq!(
        datas(&dequeue(queues, "jobs", 3, Duration::from_secs(30)).await),
        ["3", "4"]
    );
    assert!(
        dequeue(queues, "jobs", 3, Duration::from_secs(30))
            .await
            .is_empty()
    );
    let s = stats(queues, "jobs").await;
    assert_eq!((s.visible, s.in_flight, s.deliveries), (0, 5, 5));
}

pub async fn dequeue_of_an_empty_queue_without_wait_returns_nothing_at_once(
    queues: &Arc<dyn QueueStore>,
    _: &ManualClock,
) {
    create(queues, "empty", QueueSettings::default()).await;
    let queues = queues.clone();
    let task = tokio::spawn(async move { queues.dequeue(&q("empty"), options(10, MICRO)).await });
    assert_eq!(within(task, "dequeue with wait 0").await, Ok(vec![]));
}

pub async fn a_delivered_message_is_invisible_until_exactly_its_visibility_timeout(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    let id = enqueue_data(queues, "jobs", "m").await;
    let first = dequeue_one(queues, "jobs", Duration::from_secs(30)).await;
    assert_eq!(first.delivery_attempt, 1);
    assert_nothing_visible(queues, "jobs", "right after the delivery").await;
    clock.advance(Duration::from_secs(30) - MICRO);
    assert_nothing_visible(queues, "jobs", "1 µs before the timeout").await;
    let s = stats(queues, "jobs").await;
    assert_eq!((s.visible, s.in_flight), (0, 1), "{s:?}");
    clock.advance(MICRO);
    let s = stats(queues, "jobs").await;
    assert_eq!((s.visible, s.in_flight), (1, 0), "at the timeout: {s:?}");
    let second = dequeue_one(queues, "jobs", Duration::from_secs(30)).await;
    assert_eq!(second.message_id, id);
    assert_eq!(second.delivery_attempt, 2);
    assert_ne!(
        second.receipt, first.receipt,
        "each delivery has its own receipt"
    );
    assert_eq!(second.data, first.data);
}

pub async fn the_queue_visibility_timeout_applies_when_a_dequeue_names_none(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    create(queues, "jobs", settings(5, None, Duration::from_secs(10))).await;
    enqueue_data(queues, "jobs", "m").await;
    let default_options = DequeueOptions {
        max_messages: 1,
        ..DequeueOptions::default()
    };
    let first = queues.dequeue(&q("jobs"), default_options).await.unwrap();
    assert_eq!(first.len(), 1);
    clock.advance(Duration::from_secs(10) - MICRO);
    assert_nothing_visible(queues, "jobs", "1 µs before the queue's timeout").await;
    clock.advance(MICRO);
    assert_eq!(
        dequeue_one(queues, "jobs", Duration::from_secs(1))
            .await
            .delivery_attempt,
        2
    );
}

pub async fn nack_makes_the_message_visible_again_at_once(
    queues: &Arc<dyn QueueStore>,
    _: &ManualClock,
) {
    let id = enqueue_data(queues, "jobs", "m").await;
    let first = dequeue_one(queues, "jobs", Duration::from_secs(300)).await;
    queues
        .nack(
            &q("jobs"),
            &first.receipt,
            Duration::ZERO,
            Some("try again".into()),
        )
        .await
        .expect("nack succeeds");
    let second = dequeue_one(queues, "jobs", Duration::from_secs(300)).await;
    assert_eq!((second.message_id, second.delivery_attempt), (id, 2));
    let s = stats(queues, "jobs").await;
    assert_eq!((s.nacks, s.deliveries, s.in_flight), (1, 2, 1), "{s:?}");
}

pub async fn nack_with_redeliver_after_delays_the_redelivery(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    enqueue_data(queues, "jobs", "m").await;
    let first = dequeue_one(queues, "jobs", Duration::from_secs(300)).await;
    queues
        .nack(&q("jobs"), &first.receipt, Duration::from_secs(10), None)
        .await
        .unwrap();
    let s = stats(queues, "jobs").await;
    assert_eq!(
        (s.visible, s.in_flight, s.delayed),
        (0, 0, 1),
        "waiting out the nack: {s:?}"
    );
    clock.advance(Duration::from_secs(10) - MICRO);
    assert_nothing_visible(queues, "jobs", "1 µs before redeliver_after").await;
    clock.advance(MICRO);
    assert_eq!(
        dequeue_one(queues, "jobs", Duration::from_secs(30))
            .await
            .delivery_attempt,
        2
    );
}

pub async fn extending_keeps_a_message_invisible_and_a_stale_extend_fails(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    let id = enqueue_data(queues, "jobs", "m").await;
    let first = dequeue_one(queues, "jobs", Duration::from_secs(10)).await;
    clock.advance(Duration::from_secs(5));
    queues
        .extend(&q("jobs"), &first.receipt, Duration::from_secs(20))
        .await
        .expect("extend");
    // Now invisible until 5 + 20 = 25 s, well past the original 10 s.
    clock.advance(Duration::from_secs(20) - MICRO);
    assert_nothing_visible(queues, "jobs", "1 µs before the extended timeout").await;
    assert_eq!(stats(queues, "jobs").await.in_flight, 1);
    // Extending can also shorten: the timeout counts from now.
    queues
        .extend(&q("jobs"), &first.receipt, Duration::from_secs(1))
        .await
        .expect("extend");
    clock.advance(Duration::from_secs(1));
    let second = dequeue_one(queues, "jobs", Duration::from_secs(10)).await;
    assert_eq!((second.message_id, second.delivery_attempt), (id, 2));
    let stale = queues
        .extend(&q("jobs"), &first.receipt, Duration::from_secs(60))
        .await;
    assert_lease_lost(
        stale,
        "jobs",
        id,
        "extend with the first delivery's receipt",
    );
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        dequeue_one(queues, "jobs", Duration::from_secs(10))
            .await
            .delivery_attempt,
        3,
        "the stale extend changed nothing"
    );
}

pub async fn a_delayed_message_becomes_visible_exactly_when_its_delay_passes(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    enqueue(
        queues,
        "jobs",
        NewMessage::new("delayed").with_delay(Duration::from_secs(10)),
    )
    .await;
    enqueue_data(queues, "jobs", "now").await;
    let s = stats(queues, "jobs").await;
    assert_eq!((s.visible, s.delayed), (1, 1), "{s:?}");
    assert_eq!(
        datas(&dequeue(queues, "jobs", 10, Duration::from_secs(60)).await),
        ["now"]
    );
    clock.advance(Duration::from_secs(10) - MICRO);
    assert_nothing_visible(queues, "jobs", "1 µs before the delay passes").await;
    clock.advance(MICRO);
    let d = dequeue_one(queues, "jobs", Duration::from_secs(60)).await;
    assert_eq!((data(&d).as_str(), d.delivery_attempt), ("delayed", 1));
}

pub async fn a_dedup_id_within_the_window_returns_the_first_message(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    let first = queues
        .enqueue(
            &q("jobs"),
            vec![NewMessage::new("one").with_dedup_id("order-7")],
        )
        .await
        .unwrap();
    assert!(!first[0].duplicate);
    clock.advance(Duration::from_secs(4 * 60));
    let again = queues
        .enqueue(
            &q("jobs"),
            vec![NewMessage::new("retry").with_dedup_id("order-7")],
        )
        .await
        .unwrap();
    assert_eq!(again[0].message_id, first[0].message_id);
    assert!(again[0].duplicate);
    assert_eq!(
        stats(queues, "jobs").await.depth(),
        1,
        "the retry added nothing"
    );

    // Still a duplicate once the first message is acknowledged (as SQS).
    let d = dequeue_one(queues, "jobs", Duration::from_secs(30)).await;
    assert_eq!(data(&d), "one");
    ack(queues, "jobs", &d.receipt).await.unwrap();
    clock.advance(Duration::from_secs(59));
    let after_ack = queues
        .enqueue(
            &q("jobs"),
            vec![NewMessage::new("late retry").with_dedup_id("order-7")],
        )
        .await
        .unwrap();
    assert_eq!(
        after_ack[0],
        wharf_core::Enqueued {
            message_id: first[0].message_id,
            duplicate: true
        }
    );
    assert_eq!(stats(queues, "jobs").await.depth(), 0);
}

pub async fn a_dedup_id_after_the_window_enqueues_anew(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    let first = queues
        .enqueue(
            &q("jobs"),
            vec![NewMessage::new("one").with_dedup_id("order-7")],
        )
        .await
        .unwrap();
    clock.advance(wharf_core::queue::DEDUP_WINDOW);
    let later = queues
        .enqueue(
            &q("jobs"),
            vec![NewMessage::new("two").with_dedup_id("order-7")],
        )
        .await
        .unwrap();
    assert!(!later[0].duplicate, "{later:?}");
    assert_ne!(later[0].message_id, first[0].message_id);
    let got = dequeue(queues, "jobs", 10, Duration::from_secs(30)).await;
    assert_eq!(datas(&got), ["one", "two"]);
}

pub async fn dedup_ids_are_scoped_to_their_queue(queues: &Arc<dyn QueueStore>, _: &ManualClock) {
    let one = queues
        .enqueue(&q("jobs"), vec![NewMessage::new("a").with_dedup_id("same")])
        .await
        .unwrap();
    let other = queues
        .enqueue(&q("mail"), vec![NewMessage::new("b").with_dedup_id("same")])
        .await
        .unwrap();
    assert!(!other[0].duplicate);
    assert_ne!(one[0].message_id, other[0].message_id);
    assert_eq!(stats(queues, "mail").await.visible, 1);
}
