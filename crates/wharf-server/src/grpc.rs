//! The gRPC services over the engine: `wharf.v1.Streams` here,
//! `wharf.v1.Queues` in [`queues`].

pub mod queues;

pub use queues::QueuesService;

use std::pin::Pin;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use wharf::{
    LogFilter, Position, ReadDirection, RecordedEvent, StreamStart, SubscriptionItem, Wharf,
};
use wharf_proto::convert;
use wharf_proto::status::{invalid_field, to_status};
use wharf_proto::v1::{
    self, AppendRequest, AppendResponse, PositionAtRequest, PositionAtResponse, ReadAllRequest,
    ReadResponse, ReadStreamRequest, SubscribeRequest, streams_server::Streams,
};

/// Events read from storage per round trip.
const READ_PAGE: usize = 1024;
/// Upper bound on one response message's event bytes; a single larger event
/// still goes out alone.
const MESSAGE_BYTES: usize = 1024 * 1024;
/// Response messages buffered ahead of a slow reader, so storage reads and
/// network writes overlap without unbounded memory.
const AHEAD: usize = 4;
/// Most filter event types one request may name.
const MAX_EVENT_TYPES: usize = 64;

/// The service; one per server, shared by every connection.
#[derive(Clone)]
pub struct StreamsService {
    wharf: Wharf,
    shutdown: CancellationToken,
}

impl StreamsService {
    /// A service over `wharf` whose long-lived streams end when `shutdown` fires.
    pub fn new(wharf: Wharf, shutdown: CancellationToken) -> Self {
        Self { wharf, shutdown }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ReadResponse, Status>> + Send>>;

fn filter(prefix: String, event_types: Vec<String>) -> Result<LogFilter, Status> {
    if event_types.len() > MAX_EVENT_TYPES {
        return Err(invalid_field(
            "event_types",
            format!("at most {MAX_EVENT_TYPES} types, got {}", event_types.len()),
        ));
    }
    Ok(LogFilter {
        stream_prefix: (!prefix.is_empty()).then_some(prefix),
        event_types,
    })
}

/// Packs events into messages of at most [`MESSAGE_BYTES`] and sends them.
/// Returns `false` once the client is gone.
async fn send_events(
    tx: &mpsc::Sender<Result<ReadResponse, Status>>,
    events: impl IntoIterator<Item = RecordedEvent>,
) -> bool {
    let mut message = ReadResponse::default();
    let mut bytes = 0;
    for event in events {
        let size = event.data.len() + 128;
        if bytes + size > MESSAGE_BYTES && !message.events.is_empty() {
            if tx.send(Ok(std::mem::take(&mut message))).await.is_err() {
                return false;
            }
            bytes = 0;
        }
        bytes += size;
        message.events.push(event.into());
    }
    message.events.is_empty() || tx.send(Ok(message)).await.is_ok()
}

fn limit_of(limit: u64) -> usize {
    if limit == 0 {
        usize::MAX
    } else {
        usize::try_from(limit).unwrap_or(usize::MAX)
    }
}

#[tonic::async_trait]
impl Streams for StreamsService {
    async fn append(
        &self,
        request: Request<AppendRequest>,
    ) -> Result<Response<AppendResponse>, Status> {
        let r = request.into_inner();
        let stream = convert::stream_name(r.stream)?;
        let expected = convert::expected_version(r.expected_version);
        let events = r
            .events
            .into_iter()
            .enumerate()
            .map(|(i, e)| convert::new_event(i, e))
            .collect::<Result<Vec<_>, _>>()?;
        let outcome = self
            .wharf
            .append(&stream, expected, events)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(outcome.into()))
    }

    type ReadStreamStream = EventStream;

    async fn read_stream(
        &self,
        request: Request<ReadStreamRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let r = request.into_inner();
        let stream = convert::stream_name(r.stream)?;
        let direction = if r.backwards {
            ReadDirection::Backwards
        } else {
            ReadDirection::Forwards
        };
        let mut remaining = limit_of(r.limit);
        let start = r
            .from_version
            .map_or(StreamStart::Edge, StreamStart::Version);
        // The first page is read before answering, so a missing stream is
        // the call's status rather than an error mid-stream.
        let first = self
            .wharf
            .read_stream(&stream, start, direction, remaining.min(READ_PAGE))
            .await
            .map_err(|e| to_status(&e))?;
        let (tx, rx) = mpsc::channel(AHEAD);
        let wharf = self.wharf.clone();
        tokio::spawn(async move {
            let mut page = first;
            loop {
                let n = page.len();
                remaining -= n;
                let next = page.last().map(|e| e.stream_version);
                if !send_events(&tx, page).await || n < READ_PAGE || remaining == 0 {
                    return;
                }
                let start = match (direction, next) {
                    (ReadDirection::Forwards, Some(v)) => StreamStart::Version(v + 1),
                    (ReadDirection::Backwards, Some(0)) | (_, None) => return,
                    (ReadDirection::Backwards, Some(v)) => StreamStart::Version(v - 1),
                };
                page = match wharf
                    .read_stream(&stream, start, direction, remaining.min(READ_PAGE))
                    .await
                {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(to_status(&e))).await;
                        return;
                    }
                };
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ReadAllStream = EventStream;

    async fn read_all(
        &self,
        request: Request<ReadAllRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let r = request.into_inner();
        let filter = filter(r.stream_prefix, r.event_types)?;
        let mut remaining = limit_of(r.limit);
        let mut from = Position(r.from_position);
        // Reads to the head as it was when the call arrived.
        let end = self.wharf.head();
        let (tx, rx) = mpsc::channel(AHEAD);
        let wharf = self.wharf.clone();
        tokio::spawn(async move {
            while from < end && remaining > 0 {
                let page = match wharf
                    .read_all(from, &filter, remaining.min(READ_PAGE))
                    .await
                {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(to_status(&e))).await;
                        return;
                    }
                };
                from = page.next;
                let events: Vec<_> = page
                    .events
                    .into_iter()
                    .filter(|e| e.position < end)
                    .collect();
                remaining -= events.len();
                if !send_events(&tx, events).await {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let r = request.into_inner();
        let filter = filter(r.stream_prefix, r.event_types)?;
        let mut subscription = self.wharf.subscribe(Position(r.from_position), filter);
        let (tx, rx) = mpsc::channel(AHEAD);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    item = subscription.next() => item,
                    () = tx.closed() => return,
                    () = shutdown.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("server is shutting down"))).await;
                        return;
                    }
                };
                let sent = match item {
                    Ok(SubscriptionItem::Event(first)) => {
                        let mut page = vec![first];
                        match subscription.drain_buffered().await {
                            Ok(rest) => page.extend(rest),
                            Err(e) => {
                                let _ = tx.send(Err(to_status(&e))).await;
                                return;
                            }
                        }
                        send_events(&tx, page).await
                    }
                    Ok(SubscriptionItem::CaughtUp) => tx
                        .send(Ok(ReadResponse {
                            events: vec![],
                            caught_up: true,
                        }))
                        .await
                        .is_ok(),
                    Err(e) => {
                        let _ = tx.send(Err(to_status(&e))).await;
                        return;
                    }
                };
                if !sent {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn position_at(
        &self,
        request: Request<PositionAtRequest>,
    ) -> Result<Response<PositionAtResponse>, Status> {
        let at = wharf::Timestamp::from_micros(request.into_inner().timestamp_micros);
        let position = self
            .wharf
            .position_at(at)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(v1::PositionAtResponse {
            position: position.map(|p| p.0),
        }))
    }
}
