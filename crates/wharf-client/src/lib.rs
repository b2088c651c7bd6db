//! The Rust client of a Wharf server, over gRPC.
//!
//! Errors are the same [`wharf_core::Error`] an embedded caller sees, decoded
//! from the status detail the server sends; a server that cannot be reached
//! is [`Error::Unavailable`].
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> wharf_core::Result<()> {
//! use wharf_client::Client;
//! use wharf_core::{ExpectedVersion, NewEvent};
//!
//! let client = Client::connect("http://127.0.0.1:50051").await?;
//! let stream = "order-42".parse().unwrap();
//! client
//!     .append(&stream, ExpectedVersion::Any, vec![NewEvent::new("OrderPlaced", "{}")])
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Large payloads: with payload offloading on at the server, data over its
//! threshold is stored in the payload store and every read, subscription
//! and dequeue returns it in full, with [`RecordedEvent::external`] (or
//! [`Delivery::external`](wharf_core::Delivery::external)) naming where it
//! is stored. A client made with [`Client::with_payload_references`] gets
//! the references instead, without the data; [`Client::payload_get`]
//! fetches one. Messages up to [`DEFAULT_MAX_MESSAGE_BYTES`] travel by
//! default; [`ClientBuilder::max_message_bytes`] changes that.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> wharf_core::Result<()> {
//! use wharf_client::Client;
//! use wharf_core::{ExpectedVersion, NewEvent, ReadDirection, StreamStart};
//!
//! let client = Client::builder("http://127.0.0.1:50051")
//!     .max_message_bytes(512 << 20)
//!     .connect()
//!     .await?;
//! let stream = "scans".parse().unwrap();
//! let scan = vec![0u8; 5 << 20];
//! client.append(&stream, ExpectedVersion::Any, vec![NewEvent::new("Scanned", scan)]).await?;
//! let refs = client
//!     .with_payload_references(true)
//!     .read_stream(&stream, StreamStart::Edge, ReadDirection::Forwards, None)
//!     .await?;
//! let reference = refs[0].external.clone().expect("offloaded");
//! let fetched = client.payload_get(reference.into()).await?;
//! assert_eq!(fetched.data.len(), 5 << 20);
//! # Ok(()) }
//! ```
//!
//! Queues: enqueue, then dequeue and acknowledge (see `examples/worker.rs`
//! for a complete worker).
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> wharf_core::Result<()> {
//! use std::time::Duration;
//! use wharf_client::Client;
//! use wharf_core::{DequeueOptions, NewMessage};
//!
//! let client = Client::connect("http://127.0.0.1:50051").await?;
//! let queue = "email-queue".parse().unwrap();
//! client.enqueue(&queue, NewMessage::new("hello")).await?;
//! let options = DequeueOptions {
//!     visibility_timeout: Some(Duration::from_secs(60)),
//!     max_messages: 10,
//!     wait: Duration::from_secs(20),
//! };
//! for delivery in client.dequeue(&queue, options).await? {
//!     // ... process delivery.data ...
//!     client.ack(&queue, &delivery.receipt).await?;
//! }
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod consumer;
mod enqueue_stream;
mod payloads;
mod queues;

pub use consumer::Consumer;
pub use payloads::{CleanupReport, FetchedPayload, PayloadLocator, PayloadStats};

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use self::enqueue_stream::EnqueueStream;
use futures::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};
use wharf_core::{
    AppendOutcome, Error, ExpectedVersion, LogFilter, NewEvent, Position, ReadDirection,
    RecordedEvent, Result, StreamName, StreamStart, Timestamp,
};
use wharf_proto::convert;
use wharf_proto::status::from_status;
use wharf_proto::v1::{
    self, payloads_client::PayloadsClient, queues_client::QueuesClient,
    streams_client::StreamsClient,
};

/// The largest message a client sends or accepts unless
/// [`ClientBuilder::max_message_bytes`] says otherwise: room for a payload
/// at the server's default `limits.max_payload_bytes` (128 MiB) and more.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// What a subscription yields.
// Nearly every item is an event, so boxing it would cost an allocation per
// event to shrink the rare `CaughtUp`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionItem {
    /// The next matching event.
    Event(RecordedEvent),
    /// The backlog is delivered; what follows is live.
    CaughtUp,
}

/// A stream of events, or of subscription items.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T>> + Send>>;

/// A connection to a Wharf server; cheap to clone, safe to share.
#[derive(Clone)]
pub struct Client {
    streams: StreamsClient<Channel>,
    queues: QueuesClient<Channel>,
    payloads: PayloadsClient<Channel>,
    /// Reads, subscriptions and dequeues ask for references, not data.
    payload_references: bool,
    /// Where [`Client::enqueue`] pipelines small messages; shared by clones.
    enqueue_stream: Arc<EnqueueStream>,
}

/// How to connect: see [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    max_message_bytes: usize,
    connect_timeout: Duration,
}

impl ClientBuilder {
    /// The largest gRPC message the client sends (an append, an enqueue, a
    /// payload put) or accepts (a page of events, a payload get); default
    /// [`DEFAULT_MAX_MESSAGE_BYTES`]. Raise it with the server's
    /// `limits.max_payload_bytes`. A dequeue answer is accepted whatever
    /// its size: the server bounds it.
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// How long connecting may take; default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Connects.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed URL, [`Error::Unavailable`]
    /// when nothing answers.
    pub async fn connect(self) -> Result<Client> {
        let url = &self.url;
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| Error::InvalidArgument(format!("server URL `{url}`: {e}")))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        let channel = endpoint.connect().await.map_err(|e| {
            // tonic's own message is only "transport error"; the reason
            // (refused, unreachable, timed out) is further down the chain.
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                reason = format!("{reason}: {cause}");
                source = cause.source();
            }
            Error::Unavailable(format!("cannot connect to {url}: {reason}"))
        })?;
        Ok(Client::over(channel, self.max_message_bytes))
    }
}

impl Client {
    /// Connects to `url` (e.g. `http://127.0.0.1:50051`) with the default
    /// settings.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed URL, [`Error::Unavailable`]
    /// when nothing answers.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::builder(url).connect().await
    }

    /// A client of `url` with settings to choose before connecting.
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            url: url.to_owned(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// A client over an existing channel, with the default message limit.
    pub fn from_channel(channel: Channel) -> Self {
        Self::over(channel, DEFAULT_MAX_MESSAGE_BYTES)
    }

    fn over(channel: Channel, max_message: usize) -> Self {
        Self {
            streams: StreamsClient::new(channel.clone())
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
            // A dequeue answer is up to 100 messages of the server's largest
            // data, which the client does not know: the server bounds it.
            queues: QueuesClient::new(channel.clone())
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(max_message),
            payloads: PayloadsClient::new(channel)
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
            payload_references: false,
            enqueue_stream: Arc::default(),
        }
    }

    /// This client, asking for offloaded payloads as references (`true`) or
    /// in full (`false`, the default) in reads, subscriptions and dequeues.
    ///
    /// With references, an offloaded event or delivery comes with empty
    /// `data` and its reference in `external`, and nothing is fetched. So a
    /// dequeue does not notice a payload that cannot be retrieved: the
    /// message is delivered with its reference instead of being moved to
    /// the dead-letter queue.
    pub fn with_payload_references(&self, references: bool) -> Self {
        Self {
            payload_references: references,
            ..self.clone()
        }
    }

    /// Appends `events` to `stream` atomically if `expected` holds.
    ///
    /// # Errors
    /// As [`wharf`'s append](https://docs.rs/wharf): `WrongExpectedVersion`,
    /// `EventIdConflict`, `InvalidArgument`, `Unavailable`.
    pub async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome> {
        let request = v1::AppendRequest {
            stream: stream.to_string(),
            expected_version: Some(expected.into()),
            events: events.into_iter().map(Into::into).collect(),
        };
        let response = self
            .streams
            .clone()
            .append(request)
            .await
            .map_err(|s| from_status(&s))?;
        Ok(response.into_inner().into())
    }

    /// Reads `stream` from `start` in `direction`, at most `limit` events
    /// (`None`: all).
    ///
    /// # Errors
    /// `StreamNotFound`, `Unavailable`.
    pub async fn read_stream(
        &self,
        stream: &StreamName,
        start: StreamStart,
        direction: ReadDirection,
        limit: Option<u64>,
    ) -> Result<Vec<RecordedEvent>> {
        let request = v1::ReadStreamRequest {
            stream: stream.to_string(),
            from_version: match start {
                StreamStart::Edge => None,
                StreamStart::Version(v) => Some(v),
            },
            backwards: direction == ReadDirection::Backwards,
            limit: limit.unwrap_or(0),
            payload_references: self.payload_references,
        };
        let response = self
            .streams
            .clone()
            .read_stream(request)
            .await
            .map_err(|s| from_status(&s))?;
        let mut events = Vec::new();
        let mut pages = response.into_inner();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|s| from_status(&s))?;
            for e in page.events {
                events.push(convert::recorded_event(e).map_err(|s| from_status(&s))?);
            }
        }
        Ok(events)
    }

    /// Reads the log from `from` up to the head as of the call, as a stream
    /// of pages of events (each page one response message).
    ///
    /// # Errors
    /// `Unavailable`; stream items carry errors met mid-read.
    pub async fn read_all(
        &self,
        from: Position,
        filter: &LogFilter,
        limit: Option<u64>,
    ) -> Result<BoxStream<Vec<RecordedEvent>>> {
        let request = v1::ReadAllRequest {
            from_position: from.0,
            stream_prefix: filter.stream_prefix.clone().unwrap_or_default(),
            event_types: filter.event_types.clone(),
            limit: limit.unwrap_or(0),
            payload_references: self.payload_references,
        };
        let response = self
            .streams
            .clone()
            .read_all(request)
            .await
            .map_err(|s| from_status(&s))?;
        Ok(Box::pin(response.into_inner().map(|page| {
            let page = page.map_err(|s| from_status(&s))?;
            page.events
                .into_iter()
                .map(|e| convert::recorded_event(e).map_err(|s| from_status(&s)))
                .collect()
        })))
    }

    /// Subscribes to the log from `from`: the backlog, then
    /// [`SubscriptionItem::CaughtUp`], then live events as they commit.
    ///
    /// # Errors
    /// `Unavailable`; stream items carry errors met later.
    pub async fn subscribe(
        &self,
        from: Position,
        filter: &LogFilter,
    ) -> Result<BoxStream<SubscriptionItem>> {
        let request = v1::SubscribeRequest {
            from_position: from.0,
            stream_prefix: filter.stream_prefix.clone().unwrap_or_default(),
            event_types: filter.event_types.clone(),
            payload_references: self.payload_references,
        };
        let response = self
            .streams
            .clone()
            .subscribe(request)
            .await
            .map_err(|s| from_status(&s))?;
        let items = response.into_inner().flat_map(|page| {
            let items: Vec<Result<SubscriptionItem>> = match page {
                Err(s) => vec![Err(from_status(&s))],
                Ok(page) => {
                    let mut items: Vec<_> = page
                        .events
                        .into_iter()
                        .map(|e| {
                            convert::recorded_event(e)
                                .map(SubscriptionItem::Event)
                                .map_err(|s| from_status(&s))
                        })
                        .collect();
                    if page.caught_up {
                        items.push(Ok(SubscriptionItem::CaughtUp));
                    }
                    items
                }
            };
            futures::stream::iter(items)
        });
        Ok(Box::pin(items))
    }

    /// Deletes every event of `stream` if `expected` holds; returns how
    /// many. The name may be appended to again, from version 0; payloads
    /// only these events referenced become the payload cleanup's to delete.
    ///
    /// # Errors
    /// `StreamNotFound`, `WrongExpectedVersion`, `Unavailable`.
    pub async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
    ) -> Result<u64> {
        let request = v1::DeleteStreamRequest {
            stream: stream.to_string(),
            expected_version: Some(expected.into()),
        };
        let response = self
            .streams
            .clone()
            .delete_stream(request)
            .await
            .map_err(|s| from_status(&s))?;
        Ok(response.into_inner().deleted)
    }

    /// The first position committed at or after `at`.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn position_at(&self, at: Timestamp) -> Result<Option<Position>> {
        let response = self
            .streams
            .clone()
            .position_at(v1::PositionAtRequest {
                timestamp_micros: at.as_micros(),
            })
            .await
            .map_err(|s| from_status(&s))?;
        Ok(response.into_inner().position.map(Position))
    }
}
