//! Queues: messages, deliveries, receipts, settings and statistics.
//!
//! A queue delivers each message at least once. A dequeue hides the messages
//! it returns for a visibility timeout; an acknowledge deletes a message, a
//! nack makes it visible again, and a message that fails its last allowed
//! delivery moves to the queue's dead-letter queue.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{PayloadReference, QueueName, Timestamp};

/// The longest visibility timeout, nack delay, enqueue delay or extension: 12 hours (as SQS).
pub const MAX_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(12 * 60 * 60);
/// The longest a dequeue may long-poll: 20 seconds (as SQS).
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// The most messages one dequeue returns.
pub const MAX_DEQUEUE_BATCH: u32 = 100;
/// How long a `dedup_id` makes a repeated enqueue a no-op.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(5 * 60);
/// The longest `dedup_id`, in bytes.
pub const MAX_DEDUP_ID_BYTES: usize = 128;

/// Metadata key of a dead letter: the queue it was dead-lettered from.
pub const ORIGINAL_STREAM_NAME: &str = "OriginalStreamName";
/// Metadata key of a dead letter: how many times it had been delivered.
pub const DELIVERY_ATTEMPTS: &str = "DeliveryAttempts";
/// Metadata key of a dead letter: the last nack reason, or
/// [`VISIBILITY_TIMEOUT_EXPIRED`].
pub const LAST_ERROR: &str = "LastError";
/// Metadata key of a dead letter: when it was dead-lettered (RFC 3339).
pub const DEAD_LETTERED_AT: &str = "DeadLetteredAt";
/// `LastError` of a message whose last delivery timed out.
pub const VISIBILITY_TIMEOUT_EXPIRED: &str = "visibility timeout expired";
/// `LastError` of a message whose last delivery was nacked without a reason.
pub const NACKED_WITHOUT_REASON: &str = "nacked";

/// Where a redrive sends the dead letter with `metadata`, and the metadata
/// it arrives with: `to` when given, else the queue it was dead-lettered
/// from; the dead-letter keys (and the payload-failure keys) are removed.
/// `None`, with `metadata` untouched, when `to` is not given and the
/// letter names no valid original queue: it stays where it is.
pub fn redrive_target(
    metadata: &mut BTreeMap<String, String>,
    to: Option<&QueueName>,
) -> Option<QueueName> {
    use crate::payload::dead_letter_keys;
    let target = match to {
        Some(t) => t.clone(),
        None => metadata.get(ORIGINAL_STREAM_NAME)?.parse().ok()?,
    };
    for key in [
        ORIGINAL_STREAM_NAME,
        DELIVERY_ATTEMPTS,
        LAST_ERROR,
        DEAD_LETTERED_AT,
        dead_letter_keys::STORAGE_TYPE,
        dead_letter_keys::URI,
        dead_letter_keys::CONTENT_HASH,
        dead_letter_keys::ORIGINAL_SIZE,
        dead_letter_keys::ERROR,
    ] {
        metadata.remove(key);
    }
    Some(target)
}

/// How a queue treats its messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    /// Most deliveries of one message; the failure of the last one moves the
    /// message to the dead-letter queue. At least 1.
    pub max_delivery_attempts: u32,
    /// Where messages go after their last failed delivery; `None` (or the
    /// queue itself) keeps them, delivering without limit.
    pub dead_letter_queue: Option<QueueName>,
    /// How long a delivery stays invisible when the dequeue names no timeout.
    #[serde(with = "humantime_duration")]
    pub visibility_timeout: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            max_delivery_attempts: 5,
            dead_letter_queue: Some(QueueName::new("dlq").expect("`dlq` is a valid name")),
            visibility_timeout: Duration::from_secs(30),
        }
    }
}

impl QueueSettings {
    /// The queue messages of `queue` are dead-lettered to, if any: never the
    /// queue itself.
    pub fn dead_letter_target<'a>(&'a self, queue: &QueueName) -> Option<&'a QueueName> {
        self.dead_letter_queue.as_ref().filter(|d| *d != queue)
    }

    /// Checks the settings' bounds.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming the setting and its bound.
    pub fn validate(&self) -> crate::Result<()> {
        if self.max_delivery_attempts == 0 {
            return Err(crate::Error::InvalidArgument(
                "max_delivery_attempts must be at least 1".into(),
            ));
        }
        check_timeout("visibility_timeout", self.visibility_timeout)
    }
}

/// Checks that `value` lies in (0, 12 h].
///
/// # Errors
/// [`crate::Error::InvalidArgument`] naming `what`.
pub fn check_timeout(what: &str, value: Duration) -> crate::Result<()> {
    if value.is_zero() || value > MAX_VISIBILITY_TIMEOUT {
        return Err(crate::Error::InvalidArgument(format!(
            "{what} must be more than 0 and at most 12h, not {}",
            humantime::format_duration(value)
        )));
    }
    Ok(())
}

/// The `queues` section of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueuesConfig {
    /// Settings of queues created by their first enqueue, and the defaults of
    /// an explicit creation.
    pub defaults: QueueSettings,
}

/// A message to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The payload.
    pub data: Bytes,
    /// Free-form string metadata.
    pub metadata: BTreeMap<String, String>,
    /// MIME type of `data`.
    pub content_type: String,
    /// How long the message stays invisible after the enqueue.
    pub delay: Duration,
    /// Makes the enqueue idempotent for [`DEDUP_WINDOW`]: a second enqueue with
    /// the same id in that window returns the first message's id and adds nothing.
    pub dedup_id: Option<String>,
    /// Set by the engine when `data` was offloaded to the payload store:
    /// `data` is then empty and this names the stored bytes.
    pub external: Option<PayloadReference>,
}

impl NewMessage {
    /// A message carrying `data`, visible at once, content type
    /// `application/octet-stream`.
    pub fn new(data: impl Into<Bytes>) -> Self {
        Self {
            data: data.into(),
            metadata: BTreeMap::new(),
            content_type: "application/octet-stream".to_owned(),
            delay: Duration::ZERO,
            dedup_id: None,
            external: None,
        }
    }

    /// Adds one metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Replaces the content type.
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = content_type.into();
        self
    }

    /// Delays the first delivery.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the deduplication id.
    pub fn with_dedup_id(mut self, dedup_id: impl Into<String>) -> Self {
        self.dedup_id = Some(dedup_id.into());
        self
    }

    /// Bytes this message occupies for the purpose of size limits: data,
    /// content type and metadata.
    pub fn size(&self) -> usize {
        self.data.len()
            + self.external.as_ref().map_or(0, |r| r.uri.len())
            + self.content_type.len()
            + self
                .metadata
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// What an enqueue did with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// The message's id: time-ordered and unique.
    pub message_id: Uuid,
    /// True when the `dedup_id` was seen within the window: nothing was
    /// added and `message_id` is the first message's.
    pub duplicate: bool,
}

/// What a dequeue asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DequeueOptions {
    /// How long delivered messages stay invisible; `None` takes the queue's setting.
    pub visibility_timeout: Option<Duration>,
    /// Most messages to return, 1 to [`MAX_DEQUEUE_BATCH`].
    pub max_messages: u32,
    /// How long to wait for a message when none is visible, up to [`MAX_WAIT`].
    pub wait: Duration,
}

impl Default for DequeueOptions {
    /// One message, the queue's visibility timeout, no waiting.
    fn default() -> Self {
        Self {
            visibility_timeout: None,
            max_messages: 1,
            wait: Duration::ZERO,
        }
    }
}

impl DequeueOptions {
    /// Checks the bounds.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming the option and its bound.
    pub fn validate(&self) -> crate::Result<()> {
        if self.max_messages == 0 || self.max_messages > MAX_DEQUEUE_BATCH {
            return Err(crate::Error::InvalidArgument(format!(
                "max_messages must be 1 to {MAX_DEQUEUE_BATCH}, not {}",
                self.max_messages
            )));
        }
        if self.wait > MAX_WAIT {
            return Err(crate::Error::InvalidArgument(format!(
                "wait must be at most 20s, not {}",
                humantime::format_duration(self.wait)
            )));
        }
        if let Some(timeout) = self.visibility_timeout {
            check_timeout("visibility_timeout", timeout)?;
        }
        Ok(())
    }
}

/// Proof of one delivery of one message, needed to acknowledge, nack or
/// extend it. Opaque to clients: the backend that issued it decodes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Receipt(String);

impl Receipt {
    /// Wraps a receipt's text.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The receipt's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Receipt {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// One delivery of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The message's id.
    pub message_id: Uuid,
    /// Identifies this delivery; acknowledge, nack and extend take it.
    pub receipt: Receipt,
    /// The payload.
    pub data: Bytes,
    /// The message's metadata (a dead letter's carries the dead-letter keys).
    pub metadata: BTreeMap<String, String>,
    /// MIME type of `data`.
    pub content_type: String,
    /// 1 for the first delivery, increasing by one with each.
    pub delivery_attempt: u32,
    /// When the message was enqueued.
    pub enqueued_at: Timestamp,
    /// Where `data` is stored when it was offloaded. Dequeues through the
    /// engine fill `data` from the store and keep this for callers that want
    /// it; a dead letter whose payload could not be retrieved has empty
    /// `data`, this reference, and the failure in its metadata.
    pub external: Option<PayloadReference>,
}

/// What a queue holds and has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Messages a dequeue would return now.
    pub visible: u64,
    /// Delivered messages whose visibility timeout has not expired.
    pub in_flight: u64,
    /// Messages not yet delivered whose enqueue delay has not passed, and
    /// nacked messages waiting out their `redeliver_after`.
    pub delayed: u64,
    /// Age of the oldest message in the queue, in microseconds.
    pub oldest_age_micros: Option<u64>,
    /// Messages in this queue's dead-letter queue that came from this queue.
    pub dead_letters: u64,
    /// Deliveries made, ever.
    pub deliveries: u64,
    /// Acknowledgements, ever.
    pub acks: u64,
    /// Nacks, ever.
    pub nacks: u64,
    /// Messages moved to the dead-letter queue, ever.
    pub dead_lettered: u64,
}

impl QueueStats {
    /// Every message in the queue: visible, in flight and delayed.
    pub fn depth(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }

    /// Age of the oldest message.
    pub fn oldest_age(&self) -> Option<Duration> {
        self.oldest_age_micros.map(Duration::from_micros)
    }
}

/// A queue, its settings and its statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    /// The queue.
    pub name: QueueName,
    /// Its settings.
    pub settings: QueueSettings,
    /// What it holds and has done.
    pub stats: QueueStats,
}

/// What an explicit queue creation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueCreated {
    /// The queue is new.
    Created,
    /// The queue existed with the same settings; nothing changed.
    Existed,
}

/// Serde for durations written in humantime (`30s`, `5m`, `1h 30m`).
pub mod humantime_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` as humantime.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    /// Reads a humantime duration.
    ///
    /// # Errors
    /// A message naming the malformed text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a duration: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_those_of_the_design() {
        let s = QueueSettings::default();
        assert_eq!(s.max_delivery_attempts, 5);
        assert_eq!(s.dead_letter_queue.unwrap().as_str(), "dlq");
        assert_eq!(s.visibility_timeout, Duration::from_secs(30));
    }

    #[test]
    fn a_queue_never_dead_letters_into_itself() {
        let dlq: QueueName = "dlq".parse().unwrap();
        let s = QueueSettings::default();
        assert_eq!(s.dead_letter_target(&dlq), None);
        assert_eq!(s.dead_letter_target(&"jobs".parse().unwrap()), Some(&dlq));
    }

    #[test]
    fn dequeue_bounds_are_checked() {
        let ok = DequeueOptions::default();
        assert!(ok.validate().is_ok());
        for bad in [
            DequeueOptions {
                max_messages: 0,
                ..ok
            },
            DequeueOptions {
                max_messages: 101,
                ..ok
            },
            DequeueOptions {
                wait: Duration::from_secs(21),
                ..ok
            },
            DequeueOptions {
                visibility_timeout: Some(Duration::ZERO),
                ..ok
            },
            DequeueOptions {
                visibility_timeout: Some(MAX_VISIBILITY_TIMEOUT + Duration::from_secs(1)),
                ..ok
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn settings_read_humantime_durations() {
        let s: QueueSettings =
            serde_json::from_str(r#"{"visibility_timeout":"2m","dead_letter_queue":"dead"}"#)
                .unwrap();
        assert_eq!(s.visibility_timeout, Duration::from_secs(120));
        assert_eq!(s.dead_letter_queue.unwrap().as_str(), "dead");
        assert_eq!(s.max_delivery_attempts, 5);
    }
}
