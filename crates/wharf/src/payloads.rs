//! Payload offloading in the engine (the claim check, DESIGN.md §4).
//!
//! Appends and enqueues store data over the threshold in the payload store
//! and keep a [`PayloadReference`] in its place; reads, subscriptions and
//! dequeues put the verified bytes back. A delivery whose payload cannot be
//! retrieved goes to the dead-letter queue with the failure's details
//! instead of reaching a consumer as a bare reference.
//!
//! Reuse is safe against the reaper by the protocol of [`PayloadRefs`]:
//! store, pin, check the object is still there (store again if not), commit
//! the reference, unpin.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use wharf_core::payload::dead_letter_keys;
use wharf_core::queue::{DEAD_LETTERED_AT, LAST_ERROR, ORIGINAL_STREAM_NAME};
use wharf_core::{
    Delivery, Error, NewMessage, PayloadFailure, PayloadReference, PayloadRetrievalFailedDetails,
    QueueName, RecordedEvent, Result,
};
use wharf_payload::PayloadStore;
use wharf_storage::{PayloadGuard, PayloadRefs, SubscriptionItem};

use crate::Wharf;

/// Metadata key of an event's dead letter: the event's global position.
pub const EVENT_POSITION: &str = "EventPosition";
/// Metadata key of an event's dead letter: the event's id.
pub const EVENT_ID: &str = "EventId";
/// Metadata key of an event's dead letter: the event's type.
pub const EVENT_TYPE: &str = "EventType";

/// The engine's view of the payload store.
pub(crate) struct Offload {
    pub(crate) store: PayloadStore,
    pub(crate) refs: Arc<dyn PayloadRefs>,
    /// Data longer than this is offloaded; `None` when offloading of new
    /// data is off (stored references still resolve).
    pub(crate) threshold: Option<u64>,
}

impl Offload {
    /// Moves `data` to the store when it is over the threshold, leaving the
    /// reference in `external` and the pin that keeps the reaper off it in
    /// `pins` (hold it until the reference is committed).
    async fn offload(
        &self,
        data: &mut Bytes,
        external: &mut Option<PayloadReference>,
        pins: &mut Vec<PayloadGuard>,
    ) -> Result<()> {
        let Some(threshold) = self.threshold else {
            return Ok(());
        };
        if data.len() as u64 <= threshold {
            return Ok(());
        }
        let reference = self.store.put(data).await?;
        let pin = self.refs.pin(&reference.content_hash).await?;
        if self.store.head(&reference.content_hash).await?.is_none() {
            // The reaper deleted it between our put (a dedup hit) and the
            // pin; it cannot any more, so store it again.
            self.store.put(data).await?;
        }
        pins.push(pin);
        *data = Bytes::new();
        *external = Some(reference);
        Ok(())
    }
}

/// The dead-letter metadata of a payload that could not be retrieved.
fn failure_metadata(details: &PayloadRetrievalFailedDetails) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            dead_letter_keys::STORAGE_TYPE.to_owned(),
            details.storage_type.to_string(),
        ),
        (dead_letter_keys::URI.to_owned(), details.uri.clone()),
        (
            dead_letter_keys::CONTENT_HASH.to_owned(),
            details.content_hash.to_hex(),
        ),
        (
            dead_letter_keys::ORIGINAL_SIZE.to_owned(),
            details.original_size.to_string(),
        ),
        (dead_letter_keys::ERROR.to_owned(), details.error.clone()),
    ])
}

/// The error a read returns for an offloaded payload while no store is configured.
fn no_store(reference: &PayloadReference) -> Error {
    Error::payload_retrieval(
        PayloadFailure::Unavailable,
        PayloadRetrievalFailedDetails::new(
            reference,
            "payload offloading is not configured on this node (payload_offload.enabled)",
        ),
    )
}

impl Wharf {
    /// Offloads what is over the threshold in a batch of `(data, external)`
    /// pairs; returns the pins to hold until the batch is committed.
    pub(crate) async fn offload_all<'a>(
        &self,
        items: impl Iterator<Item = (&'a mut Bytes, &'a mut Option<PayloadReference>)>,
    ) -> Result<Vec<PayloadGuard>> {
        let mut pins = Vec::new();
        if let Some(offload) = &self.offload {
            for (data, external) in items {
                offload.offload(data, external, &mut pins).await?;
            }
        }
        Ok(pins)
    }

    /// Fills in the data of an offloaded event.
    ///
    /// # Errors
    /// [`Error::IntegrityFailed`] or [`Error::PayloadRetrievalFailed`] with the details.
    pub(crate) async fn resolve_event(&self, event: &mut RecordedEvent) -> Result<()> {
        if let Some(reference) = &event.external {
            event.data = self.fetch_payload(reference).await?;
        }
        Ok(())
    }

    /// The verified bytes of an offloaded payload.
    ///
    /// # Errors
    /// [`Error::IntegrityFailed`] or [`Error::PayloadRetrievalFailed`] with the
    /// details; the latter (unavailable) when offloading is not configured.
    pub async fn fetch_payload(&self, reference: &PayloadReference) -> Result<Bytes> {
        match &self.offload {
            Some(offload) => offload.store.get(reference).await,
            None => Err(no_store(reference)),
        }
    }

    /// Fills in the data of offloaded events, in place.
    pub(crate) async fn resolve_events(&self, events: &mut [RecordedEvent]) -> Result<()> {
        for event in events {
            self.resolve_event(event).await?;
        }
        Ok(())
    }

    /// Fills in the data of offloaded deliveries. A delivery whose payload
    /// cannot be retrieved is moved to the dead-letter queue with the
    /// details, and left out; a dead letter that already carries such
    /// details is handed out as it is (no data), for an operator to inspect.
    pub(crate) async fn resolve_deliveries(
        &self,
        queue: &QueueName,
        deliveries: Vec<Delivery>,
    ) -> Result<Vec<Delivery>> {
        let mut out = Vec::with_capacity(deliveries.len());
        for mut delivery in deliveries {
            let Some(reference) = delivery.external.clone() else {
                out.push(delivery);
                continue;
            };
            if delivery.metadata.contains_key(dead_letter_keys::ERROR) {
                out.push(delivery);
                continue;
            }
            match self.fetch_payload(&reference).await {
                Ok(data) => {
                    delivery.data = data;
                    out.push(delivery);
                }
                Err(e) => {
                    let Some((failure, details)) = e.payload_details() else {
                        return Err(e);
                    };
                    tracing::warn!(
                        %queue, message_id = %delivery.message_id, uri = %details.uri,
                        failure = failure.as_str(), error = %details.error,
                        "payload retrieval failed; dead-lettering the message"
                    );
                    metrics::counter!("wharf_payload_dead_lettered_total", "source" => "queue")
                        .increment(1);
                    self.queues
                        .reject(
                            queue,
                            &delivery.receipt,
                            format!("payload retrieval failed: {e}"),
                            failure_metadata(details),
                        )
                        .await?;
                }
            }
        }
        Ok(out)
    }

    /// Sends an event whose payload cannot be retrieved to the default
    /// dead-letter queue, as a message carrying the event's reference and
    /// the failure.
    async fn dead_letter_event(
        &self,
        event: &RecordedEvent,
        details: &PayloadRetrievalFailedDetails,
    ) -> Result<()> {
        let dlq = self
            .queue_defaults
            .dead_letter_queue
            .clone()
            .unwrap_or_else(|| QueueName::new("dlq").expect("`dlq` is a valid name"));
        let mut metadata = event.metadata.clone();
        metadata.extend(failure_metadata(details));
        metadata.insert(ORIGINAL_STREAM_NAME.into(), event.stream.to_string());
        metadata.insert(EVENT_POSITION.into(), event.position.0.to_string());
        metadata.insert(EVENT_ID.into(), event.id.to_string());
        metadata.insert(EVENT_TYPE.into(), event.event_type.clone());
        metadata.insert(
            LAST_ERROR.into(),
            format!("payload retrieval failed: {}", details.error),
        );
        metadata.insert(DEAD_LETTERED_AT.into(), self.clock.now().to_string());
        let message = NewMessage {
            metadata,
            content_type: event.content_type.clone(),
            external: event.external.clone(),
            ..NewMessage::new(Bytes::new())
        };
        metrics::counter!("wharf_payload_dead_lettered_total", "source" => "subscription")
            .increment(1);
        self.queues.enqueue(&dlq, vec![message]).await.map(drop)
    }
}

/// A subscription through the engine: offloaded payloads are filled in; an
/// event whose payload cannot be retrieved goes to the default dead-letter
/// queue (with the failure's details and its reference) and is skipped.
pub struct Subscription {
    inner: wharf_storage::Subscription,
    engine: Wharf,
}

impl Subscription {
    pub(crate) fn new(inner: wharf_storage::Subscription, engine: Wharf) -> Self {
        Self { inner, engine }
    }

    /// The next event, or [`SubscriptionItem::CaughtUp`] when the backlog is
    /// delivered. Waits for commits when there is nothing to deliver.
    ///
    /// # Errors
    /// A storage error; the subscription can be retried from the position
    /// of the last event it delivered.
    pub async fn next(&mut self) -> Result<SubscriptionItem> {
        loop {
            match self.inner.next().await? {
                SubscriptionItem::Event(mut event) => {
                    if self.deliverable(&mut event).await? {
                        return Ok(SubscriptionItem::Event(event));
                    }
                }
                caught_up => return Ok(caught_up),
            }
        }
    }

    /// Every event already read from storage, resolved, without waiting; lets
    /// a sender forward a whole page at once.
    ///
    /// # Errors
    /// As [`Subscription::next`].
    pub async fn drain_buffered(&mut self) -> Result<Vec<RecordedEvent>> {
        let events: Vec<RecordedEvent> = self.inner.drain_buffered().collect();
        let mut out = Vec::with_capacity(events.len());
        for mut event in events {
            if self.deliverable(&mut event).await? {
                out.push(event);
            }
        }
        Ok(out)
    }

    /// Resolves `event`; false when its payload failed and it was dead-lettered.
    async fn deliverable(&self, event: &mut RecordedEvent) -> Result<bool> {
        match self.engine.resolve_event(event).await {
            Ok(()) => Ok(true),
            Err(e) => {
                let Some((failure, details)) = e.payload_details() else {
                    return Err(e);
                };
                tracing::warn!(
                    stream = %event.stream, position = event.position.0, uri = %details.uri,
                    failure = failure.as_str(), error = %details.error,
                    "payload retrieval failed; dead-lettering the event's delivery"
                );
                self.engine.dead_letter_event(event, details).await?;
                Ok(false)
            }
        }
    }
}
