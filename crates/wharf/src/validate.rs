//! Checks every append and enqueue against the limits before anything
//! reaches storage.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::time::Duration;

use wharf_core::queue::{MAX_DEDUP_ID_BYTES, MAX_VISIBILITY_TIMEOUT};
use wharf_core::{Error, Limits, NewEvent, NewMessage, Result};

/// Longest event type and content type, in bytes.
const MAX_TYPE_BYTES: usize = 256;
/// Longest nack reason, in bytes.
const MAX_REASON_BYTES: usize = 4096;

pub(crate) fn batch(events: &[NewEvent], limits: &Limits) -> Result<()> {
    let sizes = events.iter().enumerate().map(|(i, event)| {
        let item = Item::Event(i, event);
        if event.event_type.is_empty() || event.event_type.len() > MAX_TYPE_BYTES {
            return Err(item.error(format_args!(
                "event type must be 1 to {MAX_TYPE_BYTES} bytes"
            )));
        }
        item.check(event.size(), &event.content_type, &event.metadata, limits)
    });
    totals("an append", "event", sizes, limits)
}

pub(crate) fn messages(messages: &[NewMessage], limits: &Limits) -> Result<()> {
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
            message.size(),
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
        size: usize,
        content_type: &str,
        metadata: &BTreeMap<String, String>,
        limits: &Limits,
    ) -> Result<usize> {
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
