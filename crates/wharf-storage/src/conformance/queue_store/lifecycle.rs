//! Creating, listing, counting, purging and deleting queues.

use super::*;

pub async fn first_enqueue_creates_the_queue_with_the_default_settings(
    queues: &Arc<dyn QueueStore>,
    _: &ManualClock,
) {
    assert_queue_not_found(
        queues.stats(&q("jobs")).await,
        "jobs",
        "stats before any enqueue",
    );
    enqueue_data(queues, "jobs", "first").await;
    let listed = queues.list_queues().await.expect("queues are listed");
    let jobs = listed
        .iter()
        .find(|info| info.name == q("jobs"))
        .expect("the enqueue created `jobs`");
    assert_eq!(jobs.settings, QueueSettings::default());
    assert_eq!(jobs.stats.visible, 1);
    assert_eq!(
        queues
            .create_queue(&q("jobs"), &QueueSettings::default())
            .await,
        Ok(wharf_core::QueueCreated::Existed),
        "creating it with the defaults is a no-op"
    );
}

pub async fn creating_a_queue_again_with_the_same_settings_changes_nothing(
    queues: &Arc<dyn QueueStore>,
    _: &ManualClock,
) {
    let s = settings(3, Some("dead"), Duration::from_secs(45));
    assert_eq!(
        queues.create_queue(&q("jobs"), &s).await,
        Ok(wharf_core::QueueCreated::Created)
    );
    enqueue_data(queues, "jobs", "kept").await;
    assert_eq!(
        queues.create_queue(&q("jobs"), &s).await,
        Ok(wharf_core::QueueCreated::Existed)
    );
    assert_eq!(stats(queues, "jobs").await.visible, 1, "messages are kept");
    let listed = queues.list_queues().await.unwrap();
    let jobs = listed.iter().find(|i| i.name == q("jobs")).unwrap();
    assert_eq!(jobs.settings, s);
}

pub async fn creating_a_queue_again_with_other_settings_is_refused(
    queues: &Arc<dyn QueueStore>,
    _: &ManualClock,
) {
    let s = settings(3, Some("dead"), Duration::from_secs(45));
    create(queues, "jobs", s.clone()).await;
    for other in [
        settings(4, Some("dead"), Duration::from_secs(45)),
        settings(3, None, Duration::from_secs(45)),
        settings(3, Some("elsewhere"), Duration::from_secs(45)),
        settings(3, Some("dead"), Duration::from_secs(46)),
    ] {
        let result = queues.create_queue(&q("jobs"), &other).await;
        assert!(
            matches!(&result, Err(Error::QueueExists { queue }) if *queue == q("jobs")),
            "creating with {other:?}: {result:?}"
        );
    }
    let listed = queues.list_queues().await.unwrap();
    let jobs = listed.iter().find(|i| i.name == q("jobs")).unwrap();
    assert_eq!(jobs.settings, s, "the first settings stay");
}

pub async fn operations_on_a_missing_queue_are_not_found(
    queues: &Arc<dyn QueueStore>,
    _: &ManualClock,
) {
    // A receipt that is real, but for another queue: the missing queue is
    // what the caller must hear about.
    enqueue_data(queues, "real", "m").await;
    let real = dequeue_one(queues, "real", Duration::from_secs(30)).await;
    for receipt in [real.receipt.clone(), Receipt::new("junk")] {
        assert_queue_not_found(
            queues
                .ack(&q("ghost"), std::slice::from_ref(&receipt))
                .await,
            "ghost",
            "ack",
        );
        assert_queue_not_found(
            queues
                .nack(&q("ghost"), &receipt, Duration::ZERO, None)
                .await,
            "ghost",
            "nack",
        );
        assert_queue_not_found(
            queues
                .extend(&q("ghost"), &receipt, Duration::from_secs(5))
                .await,
            "ghost",
            "extend",
        );
    }
    assert_queue_not_found(
        queues.dequeue(&q("ghost"), options(1, MICRO)).await,
        "ghost",
        "dequeue",
    );
    assert_queue_not_found(queues.stats(&q("ghost")).await, "ghost", "stats");
    assert_queue_not_found(queues.purge(&q("ghost")).await, "ghost", "purge");
    assert_queue_not_found(queues.delete_queue(&q("ghost")).await, "ghost", "delete");
    assert_queue_not_found(queues.redrive(&q("ghost"), None).await, "ghost", "redrive");
    let listed = queues.list_queues().await.unwrap();
    assert!(
        listed.iter().all(|i| i.name != q("ghost")),
        "failed operations create nothing: {listed:?}"
    );
}

pub async fn stats_count_exactly_after_a_scripted_sequence(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    let s = |v, f, d, age: Option<u64>, n: [u64; 5]| QueueStats {
        visible: v,
        in_flight: f,
        delayed: d,
        oldest_age_micros: age.map(|secs| secs * 1_000_000),
        dead_letters: n[0],
        deliveries: n[1],
        acks: n[2],
        nacks: n[3],
        dead_lettered: n[4],
    };
    create(
        queues,
        "jobs",
        settings(2, Some("dead"), Duration::from_secs(30)),
    )
    .await;
    assert_eq!(
        stats(queues, "jobs").await,
        s(0, 0, 0, None, [0; 5]),
        "new queue"
    );
    enqueue_data(queues, "jobs", "a").await;
    clock.advance(Duration::from_secs(1));
    enqueue_data(queues, "jobs", "b").await;
    enqueue_data(queues, "jobs", "c").await;
    enqueue(
        queues,
        "jobs",
        NewMessage::new("d").with_delay(Duration::from_secs(60)),
    )
    .await;
    clock.advance(Duration::from_secs(9));
    assert_eq!(
        stats(queues, "jobs").await,
        s(3, 0, 1, Some(10), [0; 5]),
        "enqueued"
    );

    let ab = dequeue(queues, "jobs", 2, Duration::from_secs(30)).await;
    assert_eq!(datas(&ab), ["a", "b"]);
    ack(queues, "jobs", &ab[0].receipt).await.unwrap();
    queues
        .nack(
            &q("jobs"),
            &ab[1].receipt,
            Duration::from_secs(20),
            Some("later".into()),
        )
        .await
        .unwrap();
    // `a` is gone, so the oldest is `b`, enqueued 9 s ago.
    assert_eq!(
        stats(queues, "jobs").await,
        s(1, 0, 2, Some(9), [0, 2, 1, 1, 0]),
        "acked a, nacked b"
    );

    let c = dequeue_one(queues, "jobs", Duration::from_secs(30)).await;
    assert_eq!(data(&c), "c");
    assert_eq!(
        stats(queues, "jobs").await,
        s(0, 1, 2, Some(9), [0, 3, 1, 1, 0]),
        "c in flight"
    );

    clock.advance(Duration::from_secs(20));
    assert_eq!(
        stats(queues, "jobs").await,
        s(1, 1, 1, Some(29), [0, 3, 1, 1, 0]),
        "b visible again"
    );
    let b = dequeue_one(queues, "jobs", Duration::from_secs(5)).await;
    assert_eq!((data(&b).as_str(), b.delivery_attempt), ("b", 2));
    clock.advance(Duration::from_secs(5));
    // b's last attempt timed out: dead-lettered. c is in flight until
    // 10 + 30 = 40 s, d delayed until 61 s; the clock reads 35 s.
    assert_eq!(
        stats(queues, "jobs").await,
        s(0, 1, 1, Some(34), [1, 4, 1, 1, 1]),
        "b dead-lettered"
    );
    let dead = stats(queues, "dead").await;
    assert_eq!(
        (dead.visible, dead.in_flight, dead.delayed),
        (1, 0, 0),
        "{dead:?}"
    );
    assert_eq!(
        (dead.deliveries, dead.acks, dead.nacks, dead.dead_lettered),
        (0, 0, 0, 0)
    );

    let letter = dequeue_one(queues, "dead", Duration::from_secs(30)).await;
    ack(queues, "dead", &letter.receipt).await.unwrap();
    assert_eq!(
        stats(queues, "jobs").await,
        s(0, 1, 1, Some(34), [0, 4, 1, 1, 1]),
        "the dead letter is gone from `dead`, the count of dead-lettered stays"
    );
    let dead = stats(queues, "dead").await;
    assert_eq!(
        (dead.depth(), dead.deliveries, dead.acks),
        (0, 1, 1),
        "{dead:?}"
    );
}

pub async fn list_queues_returns_every_queue_with_settings_and_stats(
    queues: &Arc<dyn QueueStore>,
    _: &ManualClock,
) {
    assert_eq!(
        queues.list_queues().await.unwrap(),
        vec![],
        "a new store has no queue"
    );
    let custom = settings(2, None, Duration::from_secs(5));
    create(queues, "charlie", custom.clone()).await;
    enqueue_data(queues, "bravo", "1").await;
    enqueue_data(queues, "alpha", "1").await;
    enqueue_data(queues, "alpha", "2").await;
    dequeue_one(queues, "alpha", Duration::from_secs(30)).await;
    let listed = queues.list_queues().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["alpha", "bravo", "charlie"], "by name");
    assert_eq!(listed[0].settings, QueueSettings::default());
    assert_eq!(listed[2].settings, custom);
    for info in &listed {
        assert_eq!(
            info.stats,
            stats(queues, info.name.as_str()).await,
            "{}",
            info.name
        );
    }
    assert_eq!((listed[0].stats.visible, listed[0].stats.in_flight), (1, 1));
}

pub async fn purge_deletes_every_message_in_flight_or_not(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    for d in ["a", "b", "c"] {
        enqueue_data(queues, "jobs", d).await;
    }
    enqueue(
        queues,
        "jobs",
        NewMessage::new("later").with_delay(Duration::from_secs(10)),
    )
    .await;
    let a = dequeue_one(queues, "jobs", Duration::from_secs(30)).await;
    let b = dequeue_one(queues, "jobs", Duration::from_secs(30)).await;
    queues
        .nack(&q("jobs"), &b.receipt, Duration::from_secs(5), None)
        .await
        .unwrap();
    enqueue_data(queues, "other", "untouched").await;
    let before = stats(queues, "jobs").await;

    assert_eq!(queues.purge(&q("jobs")).await, Ok(4));
    let after = stats(queues, "jobs").await;
    assert_eq!(
        (after.depth(), after.oldest_age_micros),
        (0, None),
        "{after:?}"
    );
    assert_eq!(
        (after.deliveries, after.acks, after.nacks),
        (before.deliveries, before.acks, before.nacks),
        "purge keeps the counts of what was done"
    );
    assert_lease_lost(
        ack(queues, "jobs", &a.receipt).await,
        "jobs",
        a.message_id,
        "ack after purge",
    );
    clock.advance(Duration::from_secs(60));
    assert_nothing_visible(queues, "jobs", "after a purge, however long").await;
    assert_eq!(
        stats(queues, "other").await.visible,
        1,
        "other queues keep theirs"
    );
    enqueue_data(queues, "jobs", "new").await;
    assert_eq!(
        datas(&dequeue(queues, "jobs", 10, Duration::from_secs(1)).await),
        ["new"]
    );
    assert_eq!(queues.purge(&q("jobs")).await, Ok(1));
    assert_eq!(queues.purge(&q("jobs")).await, Ok(0));
}

pub async fn deleting_a_queue_removes_it_and_its_messages(
    queues: &Arc<dyn QueueStore>,
    _: &ManualClock,
) {
    create(queues, "jobs", settings(2, None, Duration::from_secs(5))).await;
    enqueue_data(queues, "jobs", "a").await;
    enqueue_data(queues, "jobs", "b").await;
    dequeue_one(queues, "jobs", Duration::from_secs(30)).await;
    enqueue_data(queues, "other", "x").await;

    queues
        .delete_queue(&q("jobs"))
        .await
        .expect("delete succeeds");
    assert_queue_not_found(queues.stats(&q("jobs")).await, "jobs", "stats after delete");
    assert_queue_not_found(
        queues.dequeue(&q("jobs"), options(1, MICRO)).await,
        "jobs",
        "dequeue after delete",
    );
    assert_queue_not_found(
        queues.delete_queue(&q("jobs")).await,
        "jobs",
        "second delete",
    );
    let names: Vec<String> = queues
        .list_queues()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name.into_string())
        .collect();
    assert_eq!(names, ["other"]);

    // Its settings went with it: the next enqueue makes a fresh default queue.
    enqueue_data(queues, "jobs", "fresh").await;
    let listed = queues.list_queues().await.unwrap();
    let jobs = listed.iter().find(|i| i.name == q("jobs")).unwrap();
    assert_eq!(jobs.settings, QueueSettings::default());
    assert_eq!(
        jobs.stats,
        QueueStats {
            visible: 1,
            oldest_age_micros: Some(0),
            ..QueueStats::default()
        }
    );
}

pub async fn a_receipt_from_before_a_delete_cannot_touch_the_queue_made_again(
    queues: &Arc<dyn QueueStore>,
    _: &ManualClock,
) {
    enqueue_data(queues, "jobs", "old").await;
    let old = dequeue_one(queues, "jobs", Duration::from_secs(30)).await;
    queues.delete_queue(&q("jobs")).await.unwrap();
    // The same name again, and a message in the same place of the new queue.
    enqueue_data(queues, "jobs", "new").await;
    let new = dequeue_one(queues, "jobs", Duration::from_secs(30)).await;
    assert_eq!(new.delivery_attempt, old.delivery_attempt);
    let before = stats(queues, "jobs").await;
    let refused = |result: wharf_core::Result<()>, what: &str| {
        assert!(
            matches!(
                result,
                Err(Error::LeaseLost { .. } | Error::InvalidArgument(_))
            ),
            "{what} with a receipt of the deleted queue: {result:?}"
        );
    };
    refused(ack(queues, "jobs", &old.receipt).await, "ack");
    refused(
        queues
            .nack(&q("jobs"), &old.receipt, Duration::ZERO, None)
            .await,
        "nack",
    );
    refused(
        queues
            .extend(&q("jobs"), &old.receipt, Duration::from_secs(1))
            .await,
        "extend",
    );
    assert_eq!(stats(queues, "jobs").await, before, "nothing changed");
    assert_eq!(ack(queues, "jobs", &new.receipt).await, Ok(()));
}
