//! Checks every append and enqueue against the limits before anything
//! reaches storage.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::time::Duration;

use wharf_core::queue::{MAX_DEDUP_ID_BYTES, MAX_VISIBILITY_TIMEOUT};
use wharf_core::{Error, Limits, NewEvent, NewMessage, PayloadOffloadConfig, Result};

/// Longest event type and content type, in bytes.
const MAX_TYPE_BYTES: usize = 256;
/// Longest nack reason, in bytes.
const MAX_REASON_BYTES: usize = 4096;

/// Size counted for an offloaded payload's reference (its URI and fields).
const REFERENCE_BYTES: usize = 256;

/// Checks the `payload_offload` section against the limits.
pub(crate) fn offload(config: &PayloadOffloadConfig, limits: &Limits) -> Result<()> {
    let inline = limits.max_event_bytes as u64;
    if config.threshold_bytes == 0 || config.threshold_bytes > inline {
        return Err(Error::InvalidArgument(format!(
            "payload_offload.threshold_bytes must be more than 0 and at most the inline limit \
             (limits.max_event_bytes = {inline}), not {}",
            config.threshold_bytes
        )));
    }
    Ok(())
}

pub(crate) fn batch(events: &[NewEvent], limits: &Limits, offload: Option<u64>) -> Result<()> {
    let sizes = events.iter().enumerate().map(|(i, event)| {
        let item = Item::Event(i, event);
        if event.event_type.is_empty() || event.event_type.len() > MAX_TYPE_BYTES {
            return Err(item.error(format_args!(
                "event type must be 1 to {MAX_TYPE_BYTES} bytes"
            )));
        }
        item.check(
            Sizes::of(
                event.size(),
                event.data.len(),
                event.external.is_some(),
                offload,
            ),
            &event.content_type,
            &event.metadata,
            limits,
        )
    });
    totals("an append", "event", sizes, limits)
}

pub(crate) fn messages(
    messages: &[NewMessage],
    limits: &Limits,
    offload: Option<u64>,
) -> Result<()> {
    let sizes = messages.iter().enumerate().map(|(i, message)| {
        let item = Item::Message(i);
        if message.delay > MAX_VISIBILITY_TIMEOUT {
            return Err(item.error(format_args!(
                "delay must be at most 12h, not {}",
                humantime::format_duration(message.delay)
            )));
        }
        if let Some(id) = &message.dedup_id
            && (id.is_empty() || id.len() > MAX_DEDUP_ID_BYTES)
        {
            return Err(item.error(format_args!(
                "dedup_id must be 1 to {MAX_DEDUP_ID_BYTES} bytes"
            )));
        }
        item.check(
            Sizes::of(
                message.size(),
                message.data.len(),
                message.external.is_some(),
                offload,
            ),
            &message.content_type,
            &message.metadata,
            limits,
        )
    });
    totals("an enqueue", "message", sizes, limits)
}

pub(crate) fn redeliver_after(delay: Duration) -> Result<()> {
    if delay > MAX_VISIBILITY_TIMEOUT {
        return Err(Error::InvalidArgument(format!(
            "redeliver_after must be at most 12h, not {}",
            humantime::format_duration(delay)
        )));
    }
    Ok(())
}

pub(crate) fn reason(reason: Option<&str>) -> Result<()> {
    match reason {
        Some(r) if r.len() > MAX_REASON_BYTES => Err(Error::InvalidArgument(format!(
            "reason is {} bytes; the limit is {MAX_REASON_BYTES}",
            r.len()
        ))),
        _ => Ok(()),
    }
}

/// How big an item is, given what offloading will do with its data.
struct Sizes {
    /// What it will occupy in storage: its data counted as a reference when
    /// the data will be offloaded.
    stored: usize,
    /// Bytes of data that go to the payload store (0 when inline).
    offloaded: usize,
    /// The caller set `external` itself, which only the engine may.
    external_given: bool,
}

impl Sizes {
    fn of(size: usize, data: usize, external_given: bool, offload: Option<u64>) -> Self {
        match offload {
            Some(threshold) if data as u64 > threshold => Self {
                stored: size - data + REFERENCE_BYTES,
                offloaded: data,
                external_given,
            },
            _ => Self {
                stored: size,
                offloaded: 0,
                external_given,
            },
        }
    }
}

/// One element of a batch, for error messages.
enum Item<'a> {
    Event(usize, &'a NewEvent),
    Message(usize),
}

impl Item<'_> {
    fn error(&self, what: impl Display) -> Error {
        match self {
            Self::Event(i, event) => {
                Error::InvalidArgument(format!("event {i} ({}): {what}", event.id))
            }
            Self::Message(i) => Error::InvalidArgument(format!("message {i}: {what}")),
        }
    }

    /// Checks what events and messages share; returns the size.
    fn check(
        &self,
        sizes: Sizes,
        content_type: &str,
        metadata: &BTreeMap<String, String>,
        limits: &Limits,
    ) -> Result<usize> {
        if sizes.external_given {
            return Err(self.error(
                "`external` is set by the engine when it offloads data; send the data itself",
            ));
        }
        if sizes.offloaded > limits.max_payload_bytes {
            return Err(self.error(format_args!(
                "data is {} bytes; the payload limit is {} bytes",
                sizes.offloaded, limits.max_payload_bytes
            )));
        }
        let size = sizes.stored;
        if size > limits.max_event_bytes {
            return Err(self.error(format_args!(
                "{size} bytes; the inline limit is {} bytes",
                limits.max_event_bytes
            )));
        }
        if content_type.len() > MAX_TYPE_BYTES {
            return Err(self.error(format_args!(
                "content type must be at most {MAX_TYPE_BYTES} bytes"
            )));
        }
        if metadata.keys().any(String::is_empty) {
            return Err(self.error("metadata keys must not be empty"));
        }
        Ok(size)
    }
}

/// Checks the count and total size of a batch whose items passed.
fn totals(
    call: &str,
    item: &str,
    sizes: impl ExactSizeIterator<Item = Result<usize>>,
    limits: &Limits,
) -> Result<()> {
    let count = sizes.len();
    if count == 0 {
        return Err(Error::InvalidArgument(format!(
            "{call} needs at least one {item}"
        )));
    }
    if count > limits.max_batch_events {
        return Err(Error::InvalidArgument(format!(
            "batch has {count} {item}s; the limit is {}",
            limits.max_batch_events
        )));
    }
    let mut total = 0usize;
    for size in sizes {
        total += size?;
    }
    if total > limits.max_batch_bytes {
        return Err(Error::InvalidArgument(format!(
            "batch is {total} bytes; the limit is {} bytes",
            limits.max_batch_bytes
        )));
    }
    Ok(())
}
