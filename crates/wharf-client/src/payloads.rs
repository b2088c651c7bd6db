//! The payload-store calls of [`Client`]: put, get, stats and cleanup.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tonic::Status;
use wharf_core::{ContentHash, Error, PayloadReference, PayloadStorageType, Result};
use wharf_proto::convert::{self, micros};
use wharf_proto::status::from_status;
use wharf_proto::v1::{self, cleanup_payloads_response::Kind, get_payload_request::Target};

use crate::Client;

fn error(status: Status) -> Error {
    from_status(&status)
}

/// Which stored payload to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadLocator {
    /// A reference, as a put, a read or a dead letter gave it; checked
    /// against its size and hash.
    Reference(PayloadReference),
    /// The payload's SHA-256.
    Hash(ContentHash),
    /// A payload URI, ending in `{64 hex digits}.bin`.
    Uri(String),
}

impl From<PayloadReference> for PayloadLocator {
    fn from(reference: PayloadReference) -> Self {
        Self::Reference(reference)
    }
}

impl FromStr for PayloadLocator {
    type Err = Error;

    /// 64 hex digits are a hash; anything with `://` a URI.
    fn from_str(s: &str) -> Result<Self> {
        if s.contains("://") {
            return Ok(Self::Uri(s.to_owned()));
        }
        s.parse().map(Self::Hash).map_err(|_| {
            Error::InvalidArgument(format!(
                "`{s}` is neither a payload URI (file://, s3://, gs://…) nor a SHA-256 \
                 of 64 hex digits"
            ))
        })
    }
}

impl fmt::Display for PayloadLocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reference(r) => f.write_str(&r.uri),
            Self::Hash(h) => write!(f, "{h}"),
            Self::Uri(u) => f.write_str(u),
        }
    }
}

/// A payload fetched from the store, and the reference it was checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPayload {
    /// The verified bytes.
    pub data: Bytes,
    /// Where they are stored, their hash and size.
    pub reference: PayloadReference,
}

/// What the payload store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadStats {
    /// Payload objects.
    pub objects: u64,
    /// Their stored (compressed, encrypted) bytes.
    pub bytes: u64,
    /// The kind of store.
    pub storage_type: PayloadStorageType,
}

/// What a payload cleanup did, or has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Payload objects looked at.
    pub scanned: u64,
    /// Objects deleted (with `dry_run`: that would have been deleted).
    pub deleted: u64,
    /// Stored bytes those objects held.
    pub bytes_freed: u64,
    /// Objects old enough but kept because a live event or message
    /// references them.
    pub kept_referenced: u64,
    /// Nothing was deleted: only counted.
    pub dry_run: bool,
}

impl From<v1::CleanupReport> for CleanupReport {
    fn from(r: v1::CleanupReport) -> Self {
        Self {
            scanned: r.scanned,
            deleted: r.deleted,
            bytes_freed: r.bytes_freed,
            kept_referenced: r.kept_referenced,
            dry_run: r.dry_run,
        }
    }
}

/// The server's answer lacked a field it always sends.
fn missing(call: &str, field: &str) -> Error {
    Error::Storage(format!("the server answered {call} without `{field}`"))
}

impl Client {
    /// Stores `data` in the server's payload store (a dedup hit when it is
    /// stored already) and returns its reference.
    ///
    /// A payload stored this way is referenced by no event or message, so a
    /// cleanup or the reaper deletes it once it is old enough.
    ///
    /// # Errors
    /// `InvalidArgument` when payload offloading is off at the server or
    /// `data` is over its `limits.max_payload_bytes`; `Unavailable`.
    pub async fn payload_put(&self, data: Bytes) -> Result<PayloadReference> {
        let response = self
            .payloads
            .clone()
            .put(v1::PutPayloadRequest { data })
            .await
            .map_err(error)?;
        let reference = response
            .into_inner()
            .reference
            .ok_or_else(|| missing("a put", "reference"))?;
        convert::payload_reference("reference", reference).map_err(error)
    }

    /// The payload `locator` names, after the server checked its size and
    /// SHA-256.
    ///
    /// # Errors
    /// [`Error::IntegrityFailed`] when the stored bytes do not match;
    /// [`Error::PayloadRetrievalFailed`] when the payload is missing or the
    /// store cannot be read; `InvalidArgument` when offloading is off at the
    /// server or the locator is malformed; `Unavailable`.
    pub async fn payload_get(&self, locator: PayloadLocator) -> Result<FetchedPayload> {
        let target = match locator {
            PayloadLocator::Reference(r) => Target::Reference(r.into()),
            PayloadLocator::Hash(h) => Target::ContentHash(h.0.to_vec().into()),
            PayloadLocator::Uri(u) => Target::Uri(u),
        };
        let response = self
            .payloads
            .clone()
            .get(v1::GetPayloadRequest {
                target: Some(target),
            })
            .await
            .map_err(error)?
            .into_inner();
        let reference = response
            .reference
            .ok_or_else(|| missing("a get", "reference"))?;
        Ok(FetchedPayload {
            data: response.data,
            reference: convert::payload_reference("reference", reference).map_err(error)?,
        })
    }

    /// How many payload objects the server's store holds, and their bytes.
    ///
    /// # Errors
    /// `InvalidArgument` when offloading is off at the server; `Unavailable`.
    pub async fn payload_stats(&self) -> Result<PayloadStats> {
        let response = self
            .payloads
            .clone()
            .stats(v1::PayloadStatsRequest {})
            .await
            .map_err(error)?
            .into_inner();
        Ok(PayloadStats {
            objects: response.objects,
            bytes: response.bytes,
            storage_type: convert::storage_type("storage_type", response.storage_type)
                .map_err(error)?,
        })
    }

    /// Deletes the stored payloads at least `older_than` old that no live
    /// event or message references (with `dry_run`, only counts them),
    /// calling `progress` with the counts so far a few times a second.
    /// Dropping the future stops the cleanup at the server.
    ///
    /// # Errors
    /// `InvalidArgument` when offloading is off at the server; the store's
    /// errors; `Unavailable` when the server stops first.
    pub async fn payload_cleanup(
        &self,
        older_than: Duration,
        dry_run: bool,
        mut progress: impl FnMut(&CleanupReport),
    ) -> Result<CleanupReport> {
        let request = v1::CleanupPayloadsRequest {
            older_than_micros: micros(older_than),
            dry_run,
        };
        let mut messages = self
            .payloads
            .clone()
            .cleanup(request)
            .await
            .map_err(error)?
            .into_inner();
        while let Some(message) = messages.next().await {
            match message.map_err(error)?.kind {
                Some(Kind::Progress(r)) => progress(&r.into()),
                Some(Kind::Done(r)) => return Ok(r.into()),
                None => {}
            }
        }
        Err(Error::Unavailable(
            "the server ended the cleanup without a summary".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locators_parse_hashes_and_uris() {
        let hex = "0f".repeat(32);
        assert_eq!(
            hex.parse::<PayloadLocator>().unwrap(),
            PayloadLocator::Hash(ContentHash([0x0f; 32]))
        );
        let uri = format!("s3://b/events/{hex}.bin");
        assert_eq!(
            uri.parse::<PayloadLocator>().unwrap(),
            PayloadLocator::Uri(uri.clone())
        );
        let err = "nope".parse::<PayloadLocator>().unwrap_err().to_string();
        assert!(err.contains("`nope`") && err.contains("64 hex"), "{err}");
    }
}
