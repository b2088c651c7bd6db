//! `EnqueueStream`: the client's single enqueues pipelined on one stream.

use std::collections::HashSet;
use std::time::Duration;

use tonic::Code;
use wharf_core::{DequeueOptions, Error, Limits, NewMessage};
use wharf_proto::v1::{self, enqueue_stream_response::Outcome};

use super::support::{Running, start, start_with};
use super::{invalid_argument, q, take};

/// Every message of `queue`, dequeued 100 at a time until it is empty.
async fn drain(client: &wharf_client::Client, queue: &wharf_core::QueueName) -> Vec<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        let batch = client.dequeue(queue, take(100)).await.unwrap();
        if batch.is_empty() {
            return data;
        }
        data.extend(batch.into_iter().map(|d| d.data.to_vec()));
    }
}

/// Sends `requests` on one raw `EnqueueStream` call; its answers.
async fn raw_stream(
    r: &Running,
    requests: Vec<v1::EnqueueStreamRequest>,
) -> tonic::Streaming<v1::EnqueueStreamResponse> {
    r.raw()
        .await
        .enqueue_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn concurrent_single_enqueues_from_clones_all_arrive_with_distinct_ids() {
    let r = start().await;
    let jobs = q("jobs");
    let mut tasks = Vec::new();
    for producer in 0..32 {
        let client = r.client.clone();
        let jobs = jobs.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..20 {
                let message = NewMessage::new(format!("{producer}-{i}"));
                ids.push(client.enqueue(&jobs, message).await.unwrap().message_id);
            }
            ids
        }));
    }
    let mut ids = HashSet::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    assert_eq!(ids.len(), 640, "every enqueue has an id of its own");
    let data: HashSet<_> = drain(&r.client, &jobs).await.into_iter().collect();
    let sent: HashSet<_> = (0..32)
        .flat_map(|p| (0..20).map(move |i| format!("{p}-{i}").into_bytes()))
        .collect();
    assert_eq!(data, sent);
}

#[tokio::test]
async fn single_enqueues_one_after_another_keep_their_order() {
    let r = start().await;
    let jobs = q("jobs");
    for i in 0..50 {
        r.client
            .enqueue(&jobs, NewMessage::new(format!("{i:02}")))
            .await
            .unwrap();
    }
    let expected: Vec<_> = (0..50).map(|i| format!("{i:02}").into_bytes()).collect();
    assert_eq!(drain(&r.client, &jobs).await, expected);
}

#[tokio::test]
async fn a_refused_message_on_the_stream_fails_alone() {
    let r = start_with(Limits {
        max_event_bytes: 1024,
        ..Limits::default()
    })
    .await;
    let jobs = q("jobs");
    let too_late = NewMessage {
        delay: Duration::from_secs(13 * 3600),
        ..NewMessage::new("late")
    };
    let too_big = NewMessage::new(vec![b'x'; 2048]);
    let (before, late, big, after) = tokio::join!(
        r.client.enqueue(&jobs, NewMessage::new("before")),
        r.client.enqueue(&jobs, too_late),
        r.client.enqueue(&jobs, too_big),
        r.client.enqueue(&jobs, NewMessage::new("after")),
    );
    before.unwrap();
    after.unwrap();
    let late = late.unwrap_err();
    assert!(invalid_argument(&late, "delay"), "{late:?}");
    let big = big.unwrap_err();
    assert!(
        invalid_argument(&big, "the inline limit is 1024 bytes"),
        "{big:?}"
    );
    let mut data = drain(&r.client, &jobs).await;
    data.sort();
    assert_eq!(data, vec![b"after".to_vec(), b"before".to_vec()]);
}

#[tokio::test]
async fn a_message_over_64_kib_goes_as_a_call_of_its_own() {
    let r = start().await;
    let jobs = q("jobs");
    let data = vec![7u8; 100 * 1024];
    let (small, large) = tokio::join!(
        r.client.enqueue(&jobs, NewMessage::new("small")),
        r.client.enqueue(&jobs, NewMessage::new(data.clone())),
    );
    small.unwrap();
    large.unwrap();
    let mut got = drain(&r.client, &jobs).await;
    got.sort_by_key(Vec::len);
    assert_eq!(got, vec![b"small".to_vec(), data]);
}

#[tokio::test]
async fn the_raw_stream_answers_each_request_in_order_with_its_outcome() {
    let r = start().await;
    let requests = vec![
        v1::EnqueueStreamRequest {
            queue: "jobs".into(),
            message: None,
        },
        v1::EnqueueStreamRequest {
            queue: "$jobs".into(),
            message: Some(v1::NewMessage::default()),
        },
        v1::EnqueueStreamRequest {
            queue: "jobs".into(),
            message: Some(v1::NewMessage {
                data: "kept".into(),
                ..v1::NewMessage::default()
            }),
        },
    ];
    let mut answers = raw_stream(&r, requests).await;
    let mut outcomes = Vec::new();
    while let Some(answer) = answers.message().await.unwrap() {
        outcomes.push(answer.outcome.expect("every answer has an outcome"));
    }
    let [missing, bad_name, kept] = <[Outcome; 3]>::try_from(outcomes).unwrap();
    let Outcome::Error(missing) = missing else {
        panic!("a request without a message is refused: {missing:?}")
    };
    assert_eq!(missing.code, Code::InvalidArgument as i32);
    assert!(missing.message.contains("`message`"), "{}", missing.message);
    let Outcome::Error(bad_name) = bad_name else {
        panic!("an invalid queue name is refused: {bad_name:?}")
    };
    assert_eq!(bad_name.code, Code::InvalidArgument as i32);
    assert!(
        bad_name.message.starts_with("invalid queue name"),
        "{}",
        bad_name.message
    );
    assert!(matches!(kept, Outcome::Enqueued(e) if e.message_id.len() == 16));
    assert_eq!(drain(&r.client, &q("jobs")).await, vec![b"kept".to_vec()]);
}

#[tokio::test]
async fn shutdown_ends_an_open_stream_and_later_enqueues_fail_unavailable() {
    let r = start().await;
    let jobs = q("jobs");
    r.client.enqueue(&jobs, NewMessage::new("m")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), r.server.shutdown())
        .await
        .expect("shutdown does not wait for the client's open enqueue stream");
    let after = tokio::time::timeout(
        Duration::from_secs(10),
        r.client.enqueue(&jobs, NewMessage::new("n")),
    )
    .await
    .expect("an enqueue after shutdown answers");
    assert!(matches!(after, Err(Error::Unavailable(_))), "{after:?}");
}

#[tokio::test]
async fn a_client_opens_a_new_stream_when_the_server_comes_back() {
    let r = start().await;
    let addr = r.server.grpc_addr();
    let dir = r._dir;
    let client = r.client;
    let jobs = q("jobs");
    client
        .enqueue(&jobs, NewMessage::new("first"))
        .await
        .unwrap();
    r.server.shutdown().await;
    let mut config = super::support::config_in(dir.path());
    config.server.grpc_listen = addr;
    let server = wharf_server::Server::start(&config).await.unwrap();
    // The first call after the restart may still meet the old stream's end.
    let mut second = client.enqueue(&jobs, NewMessage::new("second")).await;
    if matches!(second, Err(Error::Unavailable(_))) {
        second = client.enqueue(&jobs, NewMessage::new("second")).await;
    }
    second.unwrap();
    let options = DequeueOptions {
        max_messages: 10,
        ..DequeueOptions::default()
    };
    let data: Vec<_> = client
        .dequeue(&jobs, options)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.data.to_vec())
        .collect();
    assert_eq!(data, vec![b"first".to_vec(), b"second".to_vec()]);
    server.shutdown().await;
}

#[tokio::test]
async fn an_oversized_frame_ends_the_stream_after_answering_what_came_before() {
    let r = start().await;
    let request = |data: Vec<u8>| v1::EnqueueStreamRequest {
        queue: "jobs".into(),
        message: Some(v1::NewMessage {
            data: data.into(),
            ..v1::NewMessage::default()
        }),
    };
    let requests = vec![
        request(b"first".to_vec()),
        request(vec![b'x'; 40 * 1024 * 1024]),
        request(b"third".to_vec()),
    ];
    let mut answers = raw_stream(&r, requests).await;
    let first = answers.message().await.unwrap().unwrap().outcome;
    assert!(matches!(first, Some(Outcome::Enqueued(_))), "{first:?}");
    let broken = answers.message().await.unwrap_err();
    assert_eq!(broken.code(), Code::OutOfRange, "{broken:?}");
    assert!(broken.message().contains("too large"), "{broken:?}");
    // Nothing after the oversized frame was read, so nothing was enqueued.
    assert_eq!(drain(&r.client, &q("jobs")).await, vec![b"first".to_vec()]);
}
