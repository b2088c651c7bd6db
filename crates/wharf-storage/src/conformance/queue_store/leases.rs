//! Receipts: acknowledge, stale, forged and foreign receipts, concurrency.

use std::collections::BTreeSet;

use super::*;

pub async fn acknowledging_deletes_the_message(queues: &Arc<dyn QueueStore>, clock: &ManualClock) {
    enqueue_data(queues, "jobs", "done").await;
    enqueue_data(queues, "jobs", "next").await;
    let d = dequeue_one(queues, "jobs", Duration::from_secs(10)).await;
    assert_eq!(ack(queues, "jobs", &d.receipt).await, Ok(()));
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        datas(&dequeue(queues, "jobs", 10, Duration::from_secs(10)).await),
        ["next"],
        "the acknowledged message never comes back"
    );
    let s = stats(queues, "jobs").await;
    assert_eq!((s.depth(), s.acks), (1, 1), "{s:?}");
}

pub async fn acknowledging_twice_is_lease_lost_and_changes_nothing(
    queues: &Arc<dyn QueueStore>,
    _: &ManualClock,
) {
    let a = enqueue_data(queues, "jobs", "a").await;
    enqueue_data(queues, "jobs", "b").await;
    let d = dequeue_one(queues, "jobs", Duration::from_secs(30)).await;
    ack(queues, "jobs", &d.receipt).await.unwrap();
    let before = stats(queues, "jobs").await;
    assert_lease_lost(
        ack(queues, "jobs", &d.receipt).await,
        "jobs",
        a,
        "second ack",
    );
    assert_lease_lost(
        queues
            .nack(&q("jobs"), &d.receipt, Duration::ZERO, None)
            .await,
        "jobs",
        a,
        "nack after ack",
    );
    assert_lease_lost(
        queues
            .extend(&q("jobs"), &d.receipt, Duration::from_secs(5))
            .await,
        "jobs",
        a,
        "extend after ack",
    );
    assert_eq!(stats(queues, "jobs").await, before, "nothing changed");
    assert_eq!(
        data(&dequeue_one(queues, "jobs", Duration::from_secs(30)).await),
        "b"
    );
}

pub async fn a_receipt_stays_valid_after_its_timeout_until_the_message_is_delivered_again(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    enqueue_data(queues, "jobs", "slow").await;
    let d = dequeue_one(queues, "jobs", Duration::from_secs(10)).await;
    clock.advance(Duration::from_secs(15));
    assert_eq!(
        stats(queues, "jobs").await.visible,
        1,
        "the timeout expired"
    );
    // Nobody took the message again, so the slow consumer still holds the
    // current delivery (as SQS accepts a late delete).
    assert_eq!(ack(queues, "jobs", &d.receipt).await, Ok(()));
    assert_nothing_visible(queues, "jobs", "after the late acknowledge").await;
    assert_eq!(stats(queues, "jobs").await.depth(), 0);
}

pub async fn a_stale_receipt_cannot_acknowledge_nack_or_extend(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    let id = enqueue_data(queues, "jobs", "m").await;
    let first = dequeue_one(queues, "jobs", Duration::from_secs(10)).await;
    clock.advance(Duration::from_secs(10));
    let second = dequeue_one(queues, "jobs", Duration::from_secs(60)).await;
    assert_eq!(second.delivery_attempt, 2);
    let before = stats(queues, "jobs").await;
    assert_lease_lost(
        ack(queues, "jobs", &first.receipt).await,
        "jobs",
        id,
        "stale ack",
    );
    assert_lease_lost(
        queues
            .nack(&q("jobs"), &first.receipt, Duration::ZERO, None)
            .await,
        "jobs",
        id,
        "stale nack",
    );
    assert_lease_lost(
        queues
            .extend(&q("jobs"), &first.receipt, Duration::from_secs(1))
            .await,
        "jobs",
        id,
        "stale extend",
    );
    assert_eq!(stats(queues, "jobs").await, before, "nothing changed");
    assert_nothing_visible(queues, "jobs", "while the second delivery is in flight").await;
    assert_eq!(
        ack(queues, "jobs", &second.receipt).await,
        Ok(()),
        "the current receipt works"
    );
}

pub async fn forged_malformed_and_foreign_receipts_are_invalid_arguments(
    queues: &Arc<dyn QueueStore>,
    _: &ManualClock,
) {
    enqueue_data(queues, "jobs", "m").await;
    enqueue_data(queues, "other", "o").await;
    let mine = dequeue_one(queues, "jobs", Duration::from_secs(30)).await;
    let foreign = dequeue_one(queues, "other", Duration::from_secs(30)).await;
    let text = mine.receipt.as_str();
    let chars: Vec<char> = text.chars().collect();
    let mut bad = vec![
        Receipt::new(""),
        Receipt::new("not a receipt"),
        Receipt::new(format!("{text}AAAA")),
        Receipt::new(chars[..chars.len() / 2].iter().collect::<String>()),
        foreign.receipt.clone(),
    ];
    // Change one character at each end of the receipt's text: a tampered
    // receipt that still decodes must fail its check, never name a message.
    for index in [0, chars.len() - 1] {
        let mut tampered = chars.clone();
        tampered[index] = if tampered[index] == 'A' { 'B' } else { 'A' };
        bad.push(Receipt::new(tampered.into_iter().collect::<String>()));
    }
    let before = stats(queues, "jobs").await;
    for receipt in &bad {
        assert_invalid_argument(
            ack(queues, "jobs", receipt).await,
            &format!("ack {receipt}"),
        );
        assert_invalid_argument(
            queues.nack(&q("jobs"), receipt, Duration::ZERO, None).await,
            &format!("nack {receipt}"),
        );
        assert_invalid_argument(
            queues
                .extend(&q("jobs"), receipt, Duration::from_secs(1))
                .await,
            &format!("extend {receipt}"),
        );
    }
    assert_eq!(stats(queues, "jobs").await, before, "nothing changed");
    assert_eq!(ack(queues, "jobs", &mine.receipt).await, Ok(()));
    assert_eq!(
        ack(queues, "other", &foreign.receipt).await,
        Ok(()),
        "valid on its own queue"
    );
}

pub async fn batch_acknowledge_reports_each_receipt_and_acknowledges_the_valid_ones(
    queues: &Arc<dyn QueueStore>,
    clock: &ManualClock,
) {
    let mut ids = Vec::new();
    for d in ["a", "b", "c"] {
        ids.push(enqueue_data(queues, "jobs", d).await);
    }
    let a1 = dequeue_one(queues, "jobs", Duration::from_secs(10)).await;
    let bc = dequeue(queues, "jobs", 2, Duration::from_secs(60)).await;
    assert_eq!(datas(&bc), ["b", "c"]);
    clock.advance(Duration::from_secs(10));
    let a2 = dequeue_one(queues, "jobs", Duration::from_secs(60)).await;
    assert_eq!(a2.delivery_attempt, 2);

    let receipts = [
        a1.receipt.clone(),
        bc[0].receipt.clone(),
        Receipt::new("junk"),
        bc[1].receipt.clone(),
        bc[0].receipt.clone(),
    ];
    let outcomes = queues
        .ack(&q("jobs"), &receipts)
        .await
        .expect("the call succeeds");
    assert_eq!(outcomes.len(), 5, "one outcome per receipt: {outcomes:?}");
    assert_lease_lost(outcomes[0].clone(), "jobs", ids[0], "stale receipt of a");
    assert_eq!(outcomes[1], Ok(()), "b");
    assert_invalid_argument(outcomes[2].clone(), "junk");
    assert_eq!(outcomes[3], Ok(()), "c");
    assert_lease_lost(
        outcomes[4].clone(),
        "jobs",
        ids[1],
        "b again in the same batch",
    );
    let s = stats(queues, "jobs").await;
    assert_eq!(
        (s.depth(), s.in_flight, s.acks),
        (1, 1, 2),
        "only a is left: {s:?}"
    );
    assert_eq!(ack(queues, "jobs", &a2.receipt).await, Ok(()));
}

pub async fn concurrent_consumers_receive_each_message_exactly_once(
    queues: &Arc<dyn QueueStore>,
    _: &ManualClock,
) {
    const MESSAGES: usize = 200;
    for chunk in 0..MESSAGES / 20 {
        let batch = (0..20)
            .map(|i| NewMessage::new((chunk * 20 + i).to_string()))
            .collect();
        queues.enqueue(&q("work"), batch).await.unwrap();
    }
    // The clock stands still, so no visibility timeout expires: a message
    // seen twice would be a double delivery.
    let consumers: Vec<_> = (0..4)
        .map(|_| {
            let queues = queues.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                loop {
                    let got = queues
                        .dequeue(&q("work"), options(7, Duration::from_secs(60)))
                        .await
                        .unwrap();
                    if got.is_empty() {
                        return seen;
                    }
                    let receipts: Vec<Receipt> = got.iter().map(|d| d.receipt.clone()).collect();
                    let outcomes = queues.ack(&q("work"), &receipts).await.unwrap();
                    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
                    seen.extend(got.iter().map(|d| (data(d), d.delivery_attempt)));
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for consumer in consumers {
        all.extend(within(consumer, "consumer").await);
    }
    assert!(
        all.iter().all(|(_, attempt)| *attempt == 1),
        "no redelivery happened"
    );
    let distinct: BTreeSet<&String> = all.iter().map(|(d, _)| d).collect();
    assert_eq!(all.len(), MESSAGES, "every message delivered once");
    assert_eq!(distinct.len(), MESSAGES, "no message delivered twice");
    let s = stats(queues, "work").await;
    assert_eq!(
        (s.depth(), s.deliveries, s.acks),
        (0, MESSAGES as u64, MESSAGES as u64)
    );
}
