//! Checks every append against the limits before anything reaches storage.

use wharf_core::{Error, Limits, NewEvent, Result};

/// Longest event type and content type, in bytes.
const MAX_TYPE_BYTES: usize = 256;

pub(crate) fn batch(events: &[NewEvent], limits: &Limits) -> Result<()> {
    if events.is_empty() {
        return Err(Error::InvalidArgument(
            "an append needs at least one event".into(),
        ));
    }
    if events.len() > limits.max_batch_events {
        return Err(Error::InvalidArgument(format!(
            "batch has {} events; the limit is {}",
            events.len(),
            limits.max_batch_events
        )));
    }
    let mut total = 0usize;
    for (i, event) in events.iter().enumerate() {
        let size = event.size();
        if size > limits.max_event_bytes {
            return Err(Error::InvalidArgument(format!(
                "event {i} ({}) is {size} bytes; the inline limit is {} bytes",
                event.id, limits.max_event_bytes
            )));
        }
        if event.event_type.is_empty() || event.event_type.len() > MAX_TYPE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "event {i} ({}): event type must be 1 to {MAX_TYPE_BYTES} bytes",
                event.id
            )));
        }
        if event.content_type.len() > MAX_TYPE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "event {i} ({}): content type must be at most {MAX_TYPE_BYTES} bytes",
                event.id
            )));
        }
        if event.metadata.keys().any(String::is_empty) {
            return Err(Error::InvalidArgument(format!(
                "event {i} ({}): metadata keys must not be empty",
                event.id
            )));
        }
        total += size;
    }
    if total > limits.max_batch_bytes {
        return Err(Error::InvalidArgument(format!(
            "batch is {total} bytes; the limit is {} bytes",
            limits.max_batch_bytes
        )));
    }
    Ok(())
}
