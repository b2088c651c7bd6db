//! Sending events to a reader: packed into messages of about
//! [`MESSAGE_BYTES`], with offloaded payloads fetched only as they are sent.
//!
//! A read pulls pages of up to a thousand events from storage; fetching all
//! their offloaded payloads up front could hold gigabytes. Instead each
//! payload is fetched just before its message goes out, and only once the
//! read holds less than [`FETCHED_BYTES_AHEAD`] of fetched bytes the client
//! has not taken yet. A payload larger than that waits until it would be
//! the only one, so a 100 MiB event is never held twice by one read.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use wharf::{Error, PayloadReference, RecordedEvent, Wharf};
use wharf_proto::status::to_status;
use wharf_proto::v1::ReadResponse;

/// Upper bound on one response message's event bytes; a single larger event
/// still goes out alone.
pub(crate) const MESSAGE_BYTES: usize = 1024 * 1024;
/// Response messages buffered ahead of a slow reader, so storage reads and
/// network writes overlap without unbounded memory.
const AHEAD: usize = 4;
/// Fetched payload bytes one read may hold that its client has not taken.
const FETCHED_BYTES_AHEAD: usize = 32 * 1024 * 1024;
/// Wire bytes of an event beyond its data and its reference's URI.
const EVENT_FRAMING_BYTES: usize = 128;

/// A response message, with the share of the fetch budget its payloads hold
/// until the transport takes it.
type Outgoing = (Result<ReadResponse, Status>, Vec<OwnedSemaphorePermit>);

/// The response stream of a read or subscription.
pub(crate) type EventStream = Pin<Box<dyn Stream<Item = Result<ReadResponse, Status>> + Send>>;

/// What to do with an event whose payload was offloaded and not fetched.
pub(crate) enum Payloads {
    /// Send it as its reference (the caller asked for references, or the
    /// events were fetched already).
    AsTheyAre,
    /// Fetch and verify the payload through the engine (which fails with
    /// the details when offloading is off on this node).
    Fetch(Wharf),
}

/// The sending side of a read's response stream.
pub(crate) struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    budget: Arc<Semaphore>,
    payloads: Payloads,
}

/// The client went away; stop reading.
pub(crate) struct Gone;

impl Outbox {
    /// An outbox and the stream tonic sends from.
    pub(crate) fn new(payloads: Payloads) -> (Self, EventStream) {
        let (tx, rx) = mpsc::channel(AHEAD);
        let outbox = Self {
            tx,
            budget: Arc::new(Semaphore::new(FETCHED_BYTES_AHEAD)),
            payloads,
        };
        // The budget share is released as the transport takes the message.
        let stream = ReceiverStream::new(rx).map(|(message, _permits)| message);
        (outbox, Box::pin(stream))
    }

    /// Ends the stream with `error`.
    pub(crate) async fn fail(&self, error: &Error) {
        let _ = self.tx.send((Err(to_status(error)), Vec::new())).await;
    }

    /// Sends a message of its own (a subscription's `caught_up`, a shutdown).
    pub(crate) async fn send(&self, message: Result<ReadResponse, Status>) -> Result<(), Gone> {
        self.tx.send((message, Vec::new())).await.map_err(|_| Gone)
    }

    /// Resolves when the client has gone away.
    pub(crate) async fn closed(&self) {
        self.tx.closed().await;
    }

    /// Packs `events` into messages and sends them, fetching offloaded
    /// payloads as it goes. A payload that cannot be fetched ends the
    /// stream with its error after the events before it.
    pub(crate) async fn send_events(
        &self,
        events: impl IntoIterator<Item = RecordedEvent>,
    ) -> Result<(), Gone> {
        let mut message = ReadResponse::default();
        let mut permits = Vec::new();
        let mut bytes = 0;
        for mut event in events {
            let fetch = self.unfetched(&event);
            let data = fetch.map_or(event.data.len(), |r| {
                usize::try_from(r.original_size).unwrap_or(usize::MAX)
            });
            let uri = event.external.as_ref().map_or(0, |r| r.uri.len());
            let size = data.saturating_add(uri + EVENT_FRAMING_BYTES);
            if bytes + size > MESSAGE_BYTES && !message.events.is_empty() {
                self.flush(&mut message, &mut permits).await?;
                bytes = 0;
            }
            if let (Some(reference), Payloads::Fetch(wharf)) = (fetch, &self.payloads) {
                // What this message holds already is at most MESSAGE_BYTES,
                // so asking for no more than the rest cannot wait on itself.
                let share = data.min(FETCHED_BYTES_AHEAD - MESSAGE_BYTES);
                let permit = Arc::clone(&self.budget)
                    .acquire_many_owned(u32::try_from(share).unwrap_or(u32::MAX))
                    .await
                    .map_err(|_| Gone)?;
                permits.push(permit);
                match wharf.fetch_payload(reference).await {
                    Ok(data) => event.data = data,
                    Err(e) => {
                        self.flush(&mut message, &mut permits).await?;
                        self.fail(&e).await;
                        return Err(Gone);
                    }
                }
            }
            bytes += size;
            message.events.push(event.into());
        }
        self.flush(&mut message, &mut permits).await
    }

    /// The reference to fetch, when `event`'s payload is offloaded, not
    /// fetched yet, and this read fetches.
    fn unfetched<'e>(&self, event: &'e RecordedEvent) -> Option<&'e PayloadReference> {
        match (&self.payloads, &event.external) {
            (Payloads::Fetch(_), Some(reference)) if event.data.is_empty() => Some(reference),
            _ => None,
        }
    }

    async fn flush(
        &self,
        message: &mut ReadResponse,
        permits: &mut Vec<OwnedSemaphorePermit>,
    ) -> Result<(), Gone> {
        if message.events.is_empty() {
            return Ok(());
        }
        let outgoing = (Ok(std::mem::take(message)), std::mem::take(permits));
        self.tx.send(outgoing).await.map_err(|_| Gone)
    }
}
