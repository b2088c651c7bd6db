//! The gRPC services over the engine: `wharf.v1.Streams` here,
//! `wharf.v1.Queues` in [`queues`], `wharf.v1.Payloads` in [`payloads`].
//!
//! Reads fetch offloaded payloads themselves, one message at a time (see
//! `outbox`), rather than through the engine's page-at-once reads, so a read
//! of many large events holds a bounded amount of memory. Requests that ask
//! for payload references read the storage port directly and fetch nothing.

mod enqueue_stream;
mod outbox;
pub mod payloads;
pub mod queues;

pub use payloads::PayloadsService;
pub use queues::QueuesService;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use wharf::{
    LogFilter, Position, ReadDirection, RecordedEvent, StreamStart, SubscriptionItem, Wharf,
};
use wharf_proto::convert;
use wharf_proto::status::{invalid_field, to_status};
use wharf_proto::v1::{
    self, AppendRequest, AppendResponse, DeleteStreamRequest, DeleteStreamResponse,
    PositionAtRequest, PositionAtResponse, ReadAllRequest, ReadResponse, ReadStreamRequest,
    SubscribeRequest, streams_server::Streams,
};

use self::outbox::{EventStream, Gone, Outbox, Payloads};

/// Events read from storage per round trip.
const READ_PAGE: usize = 1024;
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

    /// How a read treats offloaded payloads.
    fn payloads(&self, references: bool) -> Payloads {
        if references {
            Payloads::AsTheyAre
        } else {
            Payloads::Fetch(self.wharf.clone())
        }
    }
}

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

fn limit_of(limit: u64) -> usize {
    if limit == 0 {
        usize::MAX
    } else {
        usize::try_from(limit).unwrap_or(usize::MAX)
    }
}

/// A subscription that resolves payloads through the engine (which
/// dead-letters events whose payload cannot be retrieved), or one on the
/// storage port that leaves references as they are.
enum Source {
    Resolved(wharf::Subscription),
    References(wharf_storage::Subscription),
}

impl Source {
    async fn next(&mut self) -> wharf::Result<SubscriptionItem> {
        match self {
            Self::Resolved(s) => s.next().await,
            Self::References(s) => s.next().await,
        }
    }

    async fn drain_buffered(&mut self) -> wharf::Result<Vec<RecordedEvent>> {
        match self {
            Self::Resolved(s) => s.drain_buffered().await,
            Self::References(s) => Ok(s.drain_buffered().collect()),
        }
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
        // Pages come unresolved from the port; the outbox fetches payloads
        // as it sends. The first page is read before answering, so a
        // missing stream is the call's status rather than an error
        // mid-stream.
        let log = self.wharf.event_log();
        let first = log
            .read_stream(&stream, start, direction, remaining.min(READ_PAGE))
            .await
            .map_err(|e| to_status(&e))?;
        let (outbox, events) = Outbox::new(self.payloads(r.payload_references));
        tokio::spawn(async move {
            let mut page = first;
            loop {
                let n = page.len();
                remaining -= n;
                let next = page.last().map(|e| e.stream_version);
                if outbox.send_events(page).await.is_err() || n < READ_PAGE || remaining == 0 {
                    return;
                }
                let start = match (direction, next) {
                    (ReadDirection::Forwards, Some(v)) => StreamStart::Version(v + 1),
                    (ReadDirection::Backwards, Some(0)) | (_, None) => return,
                    (ReadDirection::Backwards, Some(v)) => StreamStart::Version(v - 1),
                };
                page = match log
                    .read_stream(&stream, start, direction, remaining.min(READ_PAGE))
                    .await
                {
                    Ok(page) => page,
                    Err(e) => return outbox.fail(&e).await,
                };
            }
        });
        Ok(Response::new(events))
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
        let log = self.wharf.event_log();
        let (outbox, events) = Outbox::new(self.payloads(r.payload_references));
        tokio::spawn(async move {
            while from < end && remaining > 0 {
                let page = match log.read_all(from, &filter, remaining.min(READ_PAGE)).await {
                    Ok(page) => page,
                    Err(e) => return outbox.fail(&e).await,
                };
                from = page.next;
                let events: Vec<_> = page
                    .events
                    .into_iter()
                    .filter(|e| e.position < end)
                    .collect();
                remaining -= events.len();
                if outbox.send_events(events).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(events))
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let r = request.into_inner();
        let filter = filter(r.stream_prefix, r.event_types)?;
        let from = Position(r.from_position);
        let mut subscription = if r.payload_references {
            Source::References(wharf_storage::Subscription::new(
                self.wharf.event_log(),
                from,
                filter,
            ))
        } else {
            Source::Resolved(self.wharf.subscribe(from, filter))
        };
        // Events come resolved (or as references) already.
        let (outbox, events) = Outbox::new(Payloads::AsTheyAre);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    item = subscription.next() => item,
                    () = outbox.closed() => return,
                    () = shutdown.cancelled() => {
                        let _ = outbox.send(Err(Status::unavailable("server is shutting down"))).await;
                        return;
                    }
                };
                let sent: Result<(), Gone> = match item {
                    Ok(SubscriptionItem::Event(first)) => {
                        let mut page = vec![first];
                        match subscription.drain_buffered().await {
                            Ok(rest) => page.extend(rest),
                            Err(e) => return outbox.fail(&e).await,
                        }
                        outbox.send_events(page).await
                    }
                    Ok(SubscriptionItem::CaughtUp) => {
                        outbox
                            .send(Ok(ReadResponse {
                                events: vec![],
                                caught_up: true,
                            }))
                            .await
                    }
                    Err(e) => return outbox.fail(&e).await,
                };
                if sent.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(events))
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

    async fn delete_stream(
        &self,
        request: Request<DeleteStreamRequest>,
    ) -> Result<Response<DeleteStreamResponse>, Status> {
        let r = request.into_inner();
        let stream = convert::stream_name(r.stream)?;
        let expected = convert::expected_version(r.expected_version);
        let deleted = self
            .wharf
            .delete_stream(&stream, expected)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(DeleteStreamResponse { deleted }))
    }
}
