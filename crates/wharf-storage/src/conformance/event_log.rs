//! Scenarios of the [`EventLog`] contract.
#![allow(missing_docs)] // each scenario's name is its documentation

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use wharf_core::{
    AppendOutcome, Error, ExpectedVersion, LogFilter, ManualClock, NewEvent, Position,
    ReadDirection, StreamName, StreamStart,
};

use crate::{AppendRequest, EventLog, Subscription, SubscriptionItem};

fn name(s: &str) -> StreamName {
    StreamName::new(s).expect("valid test stream name")
}

fn batch(n: usize, event_type: &str) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent::new(event_type, format!("{event_type}-{i}")))
        .collect()
}

async fn append(
    log: &Arc<dyn EventLog>,
    stream: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> wharf_core::Result<AppendOutcome> {
    log.append(AppendRequest {
        stream: name(stream),
        expected,
        events,
    })
    .await
}

async fn append_ok(log: &Arc<dyn EventLog>, stream: &str, events: Vec<NewEvent>) -> AppendOutcome {
    append(log, stream, ExpectedVersion::Any, events)
        .await
        .expect("append succeeds")
}

async fn read_forwards(log: &Arc<dyn EventLog>, stream: &str) -> Vec<wharf_core::RecordedEvent> {
    log.read_stream(
        &name(stream),
        StreamStart::Edge,
        ReadDirection::Forwards,
        usize::MAX,
    )
    .await
    .expect("stream is readable")
}

async fn read_everything(
    log: &Arc<dyn EventLog>,
    filter: &LogFilter,
) -> Vec<wharf_core::RecordedEvent> {
    let head = *log.watch_head().borrow();
    let mut out = Vec::new();
    let mut from = Position::START;
    while from < head {
        // Small pages, so the paging itself is exercised.
        let page = log
            .read_all(from, filter, 7)
            .await
            .expect("log is readable");
        assert!(page.next > from, "read_all must make progress");
        out.extend(page.events);
        from = page.next;
    }
    out
}

pub async fn append_to_new_stream_assigns_versions_from_zero(
    log: &Arc<dyn EventLog>,
    _: &ManualClock,
) {
    let outcome = append(
        log,
        "orders-1",
        ExpectedVersion::NoStream,
        batch(3, "Placed"),
    )
    .await
    .expect("append to a new stream");
    let AppendOutcome::Appended(r) = outcome else {
        panic!("expected Appended, got {outcome:?}");
    };
    assert_eq!((r.first_version, r.last_version), (0, 2));
    assert_eq!(r.last_position.0 - r.first_position.0, 2);
    let versions: Vec<u64> = read_forwards(log, "orders-1")
        .await
        .iter()
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(versions, vec![0, 1, 2]);
    assert_eq!(
        log.stream_version(&name("orders-1")).await.unwrap(),
        Some(2)
    );
}

pub async fn positions_strictly_increase_across_streams(log: &Arc<dyn EventLog>, _: &ManualClock) {
    let mut last = None;
    for i in 0..10 {
        let r = append_ok(log, &format!("s-{}", i % 3), batch(2, "T"))
            .await
            .result();
        if let Some(prev) = last {
            assert!(
                r.first_position > prev,
                "{:?} after {:?}",
                r.first_position,
                prev
            );
        }
        last = Some(r.last_position);
    }
    let all = read_everything(log, &LogFilter::default()).await;
    assert_eq!(all.len(), 20);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
}

pub async fn expected_no_stream_fails_once_the_stream_exists(
    log: &Arc<dyn EventLog>,
    _: &ManualClock,
) {
    append_ok(log, "a", batch(2, "T")).await;
    let err = append(log, "a", ExpectedVersion::NoStream, batch(1, "T"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::WrongExpectedVersion { actual: Some(1), expected, .. } if expected == "no-stream"),
        "{err:?}"
    );
}

pub async fn expected_stream_exists_fails_on_a_missing_stream(
    log: &Arc<dyn EventLog>,
    _: &ManualClock,
) {
    let err = append(
        log,
        "nothing-here",
        ExpectedVersion::StreamExists,
        batch(1, "T"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::WrongExpectedVersion { actual: None, .. }),
        "{err:?}"
    );
    append_ok(log, "nothing-here", batch(1, "T")).await;
    assert!(
        append(
            log,
            "nothing-here",
            ExpectedVersion::StreamExists,
            batch(1, "T")
        )
        .await
        .is_ok()
    );
}

pub async fn expected_exact_version_must_match_the_last_version(
    log: &Arc<dyn EventLog>,
    _: &ManualClock,
) {
    append_ok(log, "x", batch(3, "T")).await;
    let err = append(log, "x", ExpectedVersion::Exact(1), batch(1, "T"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::WrongExpectedVersion { expected, actual: Some(2), .. } if expected == "1"),
        "{err:?}"
    );
    let r = append(log, "x", ExpectedVersion::Exact(2), batch(1, "T"))
        .await
        .expect("exact match appends")
        .result();
    assert_eq!(r.first_version, 3);
    let err = append(log, "missing", ExpectedVersion::Exact(0), batch(1, "T"))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::WrongExpectedVersion { actual: None, .. }
    ));
}

pub async fn expected_any_appends_whatever_the_state(log: &Arc<dyn EventLog>, _: &ManualClock) {
    let first = append(log, "any", ExpectedVersion::Any, batch(1, "T")).await;
    let second = append(log, "any", ExpectedVersion::Any, batch(1, "T")).await;
    assert_eq!(first.unwrap().result().first_version, 0);
    assert_eq!(second.unwrap().result().first_version, 1);
}

pub async fn wrong_expected_version_writes_nothing(log: &Arc<dyn EventLog>, _: &ManualClock) {
    append_ok(log, "w", batch(1, "T")).await;
    let head = *log.watch_head().borrow();
    let _ = append(log, "w", ExpectedVersion::Exact(5), batch(4, "T"))
        .await
        .unwrap_err();
    let _ = append(log, "w2", ExpectedVersion::StreamExists, batch(4, "T"))
        .await
        .unwrap_err();
    assert_eq!(read_forwards(log, "w").await.len(), 1);
    assert!(matches!(
        log.read_stream(&name("w2"), StreamStart::Edge, ReadDirection::Forwards, 10)
            .await,
        Err(Error::StreamNotFound(_))
    ));
    assert_eq!(*log.watch_head().borrow(), head);
    // The next append gets the next position: a failed append consumed none.
    let r = append_ok(log, "w", batch(1, "T")).await.result();
    assert_eq!(r.first_position, head);
}

pub async fn reappending_the_same_events_is_idempotent(log: &Arc<dyn EventLog>, _: &ManualClock) {
    append_ok(log, "idem", batch(2, "Before")).await;
    let events = batch(3, "Retried");
    let first = append(log, "idem", ExpectedVersion::Exact(1), events.clone())
        .await
        .unwrap();
    let AppendOutcome::Appended(original) = first else {
        panic!("first append must write: {first:?}");
    };
    for expected in [ExpectedVersion::Exact(1), ExpectedVersion::Any] {
        let again = append(log, "idem", expected, events.clone()).await.unwrap();
        assert_eq!(again, AppendOutcome::Duplicate(original), "with {expected}");
    }
    assert_eq!(read_forwards(log, "idem").await.len(), 5);
}

pub async fn reusing_an_event_id_elsewhere_is_a_conflict(log: &Arc<dyn EventLog>, _: &ManualClock) {
    let events = batch(2, "T");
    append_ok(log, "one", events.clone()).await;
    let reused = events[0].clone();
    let err = append(log, "two", ExpectedVersion::Any, vec![reused.clone()])
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::EventIdConflict { id } if id == reused.id),
        "{err:?}"
    );
    // The same id in a batch that only partly matches what was written.
    let partial = vec![events[0].clone(), NewEvent::new("T", "new")];
    let err = append(log, "one", ExpectedVersion::Any, partial)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::EventIdConflict { .. }), "{err:?}");
    assert_eq!(read_forwards(log, "one").await.len(), 2);
}

pub async fn failed_appends_leave_no_trace_and_spare_their_neighbours(
    log: &Arc<dyn EventLog>,
    _: &ManualClock,
) {
    append_ok(log, "base", batch(1, "T")).await;
    // Sixteen appends at once, so backends that commit in groups put good
    // and failing ones in the same group; every odd one fails its check.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                let expected = if i % 2 == 0 {
                    ExpectedVersion::Any
                } else {
                    ExpectedVersion::Exact(1_000)
                };
                let stream = format!("n-{i}");
                (i, append(&log, &stream, expected, batch(3, "T")).await)
            })
        })
        .collect();
    for t in tasks {
        let (i, outcome) = t.await.unwrap();
        assert_eq!(outcome.is_ok(), i % 2 == 0, "append {i}: {outcome:?}");
    }
    let all = read_everything(log, &LogFilter::default()).await;
    assert_eq!(all.len(), 1 + 8 * 3, "only the good appends landed, whole");
    let positions: Vec<u64> = all.iter().map(|e| e.position.0).collect();
    assert_eq!(
        positions,
        (0..25).collect::<Vec<_>>(),
        "no gaps left by failures"
    );
    for e in &all[1..] {
        let n: usize = e.stream.as_str()[2..].parse().unwrap();
        assert_eq!(n % 2, 0, "event of a failed append is visible: {e:?}");
    }
}

pub async fn read_stream_forwards_from_a_version(log: &Arc<dyn EventLog>, _: &ManualClock) {
    append_ok(log, "f", batch(10, "T")).await;
    let page = log
        .read_stream(
            &name("f"),
            StreamStart::Version(4),
            ReadDirection::Forwards,
            3,
        )
        .await
        .unwrap();
    let versions: Vec<u64> = page.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, vec![4, 5, 6]);
    let past_end = log
        .read_stream(
            &name("f"),
            StreamStart::Version(10),
            ReadDirection::Forwards,
            3,
        )
        .await
        .unwrap();
    assert!(past_end.is_empty());
}

pub async fn read_stream_backwards_from_the_end(log: &Arc<dyn EventLog>, _: &ManualClock) {
    append_ok(log, "b", batch(5, "T")).await;
    let page = log
        .read_stream(&name("b"), StreamStart::Edge, ReadDirection::Backwards, 2)
        .await
        .unwrap();
    let versions: Vec<u64> = page.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, vec![4, 3]);
    let page = log
        .read_stream(
            &name("b"),
            StreamStart::Version(1),
            ReadDirection::Backwards,
            10,
        )
        .await
        .unwrap();
    let versions: Vec<u64> = page.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, vec![1, 0]);
}

pub async fn reading_a_missing_stream_is_not_found(log: &Arc<dyn EventLog>, _: &ManualClock) {
    let err = log
        .read_stream(
            &name("ghost"),
            StreamStart::Edge,
            ReadDirection::Forwards,
            1,
        )
        .await
        .unwrap_err();
    assert_eq!(err, Error::StreamNotFound(name("ghost")));
    assert_eq!(log.stream_version(&name("ghost")).await.unwrap(), None);
}

pub async fn event_fields_round_trip(log: &Arc<dyn EventLog>, clock: &ManualClock) {
    let event = NewEvent::new("OrderPlaced", vec![0u8, 159, 146, 150, 255])
        .with_metadata("tenant", "acme")
        .with_metadata("trace", "t-1")
        .with_content_type("application/x-binary");
    append_ok(log, "fields", vec![event.clone()]).await;
    let read = &read_forwards(log, "fields").await[0];
    assert_eq!(read.id, event.id);
    assert_eq!(read.stream, name("fields"));
    assert_eq!(read.event_type, "OrderPlaced");
    assert_eq!(read.data, event.data);
    assert_eq!(read.metadata, event.metadata);
    assert_eq!(read.content_type, "application/x-binary");
    assert_eq!(read.created_at, wharf_core::Clock::now(clock));
}

pub async fn read_all_returns_every_stream_in_position_order(
    log: &Arc<dyn EventLog>,
    _: &ManualClock,
) {
    for i in 0..5 {
        append_ok(log, &format!("all-{i}"), batch(3, "T")).await;
    }
    let all = read_everything(log, &LogFilter::default()).await;
    assert_eq!(all.len(), 15);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    let from_middle = log
        .read_all(all[7].position, &LogFilter::default(), 100)
        .await
        .unwrap();
    assert_eq!(from_middle.events.len(), 8);
    assert_eq!(from_middle.events[0], all[7]);
    assert_eq!(from_middle.next, all[14].position.next());
}

pub async fn read_all_filters_by_stream_prefix(log: &Arc<dyn EventLog>, _: &ManualClock) {
    for s in ["order-1", "user-1", "order-2", "orders", "user-2"] {
        append_ok(log, s, batch(2, "T")).await;
    }
    let filter = LogFilter {
        stream_prefix: Some("order-".into()),
        event_types: vec![],
    };
    let streams: BTreeSet<String> = read_everything(log, &filter)
        .await
        .into_iter()
        .map(|e| e.stream.into_string())
        .collect();
    assert_eq!(
        streams,
        BTreeSet::from(["order-1".into(), "order-2".into()])
    );
    // A page that matches nothing still moves the reader past what it scanned.
    let none = LogFilter {
        stream_prefix: Some("zzz".into()),
        event_types: vec![],
    };
    let page = log.read_all(Position::START, &none, 10).await.unwrap();
    assert!(page.events.is_empty());
    assert_eq!(page.next, *log.watch_head().borrow());
}

pub async fn read_all_filters_by_event_type(log: &Arc<dyn EventLog>, _: &ManualClock) {
    append_ok(log, "t", batch(3, "Created")).await;
    append_ok(log, "t", batch(2, "Deleted")).await;
    append_ok(log, "u", batch(4, "Renamed")).await;
    let filter = LogFilter {
        stream_prefix: None,
        event_types: vec!["Deleted".into(), "Renamed".into()],
    };
    let types: Vec<String> = read_everything(log, &filter)
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(types.len(), 6);
    assert!(types.iter().all(|t| t != "Created"));
}

pub async fn position_at_finds_first_event_at_or_after_a_time(
    log: &Arc<dyn EventLog>,
    clock: &ManualClock,
) {
    use wharf_core::Clock;
    let t0 = clock.now();
    assert_eq!(log.position_at(t0).await.unwrap(), None);
    let mut marks = Vec::new();
    for _ in 0..5 {
        let r = append_ok(log, "time", batch(2, "T")).await.result();
        marks.push((clock.now(), r.first_position));
        clock.advance(Duration::from_secs(60));
    }
    for (at, first) in &marks {
        assert_eq!(log.position_at(*at).await.unwrap(), Some(*first));
        // A moment after a batch's commit time finds the next batch.
        let just_after = at.saturating_add(Duration::from_micros(1));
        let next = marks.iter().find(|(t, _)| t > at).map(|(_, p)| *p);
        assert_eq!(log.position_at(just_after).await.unwrap(), next);
    }
    assert_eq!(
        log.position_at(wharf_core::Timestamp::EPOCH).await.unwrap(),
        Some(marks[0].1)
    );
}

pub async fn head_watch_advances_on_commit(log: &Arc<dyn EventLog>, _: &ManualClock) {
    let mut head = log.watch_head();
    let before = *head.borrow_and_update();
    let r = append_ok(log, "h", batch(3, "T")).await.result();
    tokio::time::timeout(Duration::from_secs(5), head.changed())
        .await
        .expect("head watch fires after a commit")
        .expect("log is open");
    assert_eq!(*head.borrow(), r.last_position.next());
    assert!(before <= r.first_position);
}

pub async fn subscription_catches_up_then_receives_live_events(
    log: &Arc<dyn EventLog>,
    _: &ManualClock,
) {
    append_ok(log, "sub", batch(5, "Old")).await;
    let mut sub = Subscription::new(log.clone(), Position::START, LogFilter::default());
    for v in 0..5 {
        match next(&mut sub).await {
            SubscriptionItem::Event(e) => assert_eq!(e.stream_version, v),
            other => panic!("expected backlog event {v}, got {other:?}"),
        }
    }
    assert_eq!(next(&mut sub).await, SubscriptionItem::CaughtUp);
    let waiting = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < 3 {
            if let SubscriptionItem::Event(e) = next(&mut sub).await {
                got.push(e.event_type);
            }
        }
        got
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    append_ok(log, "sub", batch(3, "New")).await;
    let live = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("live events are pushed to the subscriber")
        .unwrap();
    assert_eq!(live, vec!["New", "New", "New"]);
}

pub async fn subscription_applies_its_filter_live(log: &Arc<dyn EventLog>, _: &ManualClock) {
    let filter = LogFilter {
        stream_prefix: Some("keep-".into()),
        event_types: vec![],
    };
    let mut sub = Subscription::new(log.clone(), Position::START, filter);
    assert_eq!(next(&mut sub).await, SubscriptionItem::CaughtUp);
    append_ok(log, "drop-1", batch(2, "T")).await;
    append_ok(log, "keep-1", batch(1, "T")).await;
    match next(&mut sub).await {
        SubscriptionItem::Event(e) => assert_eq!(e.stream, name("keep-1")),
        other => panic!("expected the kept event, got {other:?}"),
    }
}

pub async fn concurrent_appends_keep_stream_versions_gapless(
    log: &Arc<dyn EventLog>,
    _: &ManualClock,
) {
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let log = log.clone();
            tokio::spawn(async move {
                for _ in 0..5 {
                    append_ok(&log, "busy", batch(2, "T")).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let events = read_forwards(log, "busy").await;
    assert_eq!(events.len(), 160);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.stream_version, i as u64);
    }
    assert!(events.windows(2).all(|w| w[0].position < w[1].position));
}

pub async fn concurrent_exact_appends_admit_exactly_one_winner(
    log: &Arc<dyn EventLog>,
    _: &ManualClock,
) {
    append_ok(log, "race", batch(1, "T")).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let log = log.clone();
            tokio::spawn(async move {
                append(&log, "race", ExpectedVersion::Exact(0), batch(1, "T")).await
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(AppendOutcome::Appended(_)) => won += 1,
            Err(Error::WrongExpectedVersion {
                actual: Some(1), ..
            }) => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(read_forwards(log, "race").await.len(), 2);
}

pub async fn close_commits_what_was_accepted_and_refuses_later_appends(
    log: &Arc<dyn EventLog>,
    _: &ManualClock,
) {
    let accepted = append_ok(log, "closing", batch(2, "T")).await;
    log.close().await;
    let err = append(log, "closing", ExpectedVersion::Any, batch(1, "T"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert_eq!(
        *log.watch_head().borrow(),
        accepted.result().last_position.next()
    );
}

async fn next(sub: &mut Subscription) -> SubscriptionItem {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("subscription yields within 5 s")
        .expect("subscription reads")
}

pub async fn deleting_a_stream_removes_its_events_and_the_name_starts_over(
    log: &Arc<dyn EventLog>,
    _clock: &ManualClock,
) {
    append_ok(log, "doomed", batch(3, "A")).await;
    append_ok(log, "kept", batch(2, "B")).await;
    let deleted = log
        .delete_stream(&name("doomed"), ExpectedVersion::Any)
        .await
        .expect("delete succeeds");
    assert_eq!(deleted, 3);
    let err = log
        .read_stream(
            &name("doomed"),
            StreamStart::Edge,
            ReadDirection::Forwards,
            10,
        )
        .await
        .expect_err("a deleted stream has no events");
    assert!(matches!(err, Error::StreamNotFound(_)), "{err:?}");
    assert_eq!(log.stream_version(&name("doomed")).await.unwrap(), None);
    let everything = read_everything(log, &LogFilter::default()).await;
    assert_eq!(
        everything
            .iter()
            .map(|e| e.stream.as_str())
            .collect::<Vec<_>>(),
        ["kept", "kept"],
        "the global log no longer holds the deleted events"
    );
    let again = append(log, "doomed", ExpectedVersion::NoStream, batch(1, "C"))
        .await
        .expect("the name can be used again");
    assert_eq!(again.result().first_version, 0);
    assert!(
        again.result().first_position > everything[1].position,
        "positions are never reused"
    );
    assert_eq!(read_forwards(log, "kept").await.len(), 2);
}

pub async fn deleting_a_stream_checks_its_expectation(
    log: &Arc<dyn EventLog>,
    _clock: &ManualClock,
) {
    append_ok(log, "s", batch(2, "A")).await;
    let err = log
        .delete_stream(&name("s"), ExpectedVersion::Exact(0))
        .await
        .expect_err("the stream is at version 1");
    assert!(
        matches!(
            err,
            Error::WrongExpectedVersion {
                actual: Some(1),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        read_forwards(log, "s").await.len(),
        2,
        "nothing was deleted"
    );
    assert_eq!(
        log.delete_stream(&name("s"), ExpectedVersion::Exact(1))
            .await
            .unwrap(),
        2
    );
}

pub async fn deleting_a_missing_stream_is_not_found(log: &Arc<dyn EventLog>, _clock: &ManualClock) {
    let err = log
        .delete_stream(&name("never"), ExpectedVersion::Any)
        .await
        .expect_err("nothing to delete");
    assert!(matches!(err, Error::StreamNotFound(_)), "{err:?}");
    append_ok(log, "once", batch(1, "A")).await;
    log.delete_stream(&name("once"), ExpectedVersion::Any)
        .await
        .unwrap();
    let err = log
        .delete_stream(&name("once"), ExpectedVersion::Any)
        .await
        .expect_err("already deleted");
    assert!(matches!(err, Error::StreamNotFound(_)), "{err:?}");
}

pub async fn offloaded_references_round_trip(log: &Arc<dyn EventLog>, _clock: &ManualClock) {
    let reference = wharf_core::PayloadReference {
        storage_type: wharf_core::PayloadStorageType::Filesystem,
        uri: "file:///var/wharf/payloads/ab.bin".into(),
        content_hash: wharf_core::ContentHash([0xab; 32]),
        original_size: 5 << 20,
        stored_at: wharf_core::Timestamp::from_micros(1_767_225_600_000_123),
    };
    let event = NewEvent {
        external: Some(reference.clone()),
        ..NewEvent::new("Big", bytes::Bytes::new())
    };
    append_ok(log, "big", vec![event, NewEvent::new("Small", "x")]).await;
    let events = read_forwards(log, "big").await;
    assert_eq!(events[0].external, Some(reference));
    assert!(events[0].data.is_empty());
    assert_eq!(events[1].external, None);
    assert_eq!(&events[1].data[..], b"x");
}
