//! The payload store of Wharf: payloads too large to travel inside events
//! and messages are stored once, content-addressed by SHA-256, in a
//! filesystem directory, S3 (or an S3-compatible server), Google Cloud
//! Storage or memory; events carry a [`wharf_core::PayloadReference`]
//! instead — the *claim check* (DESIGN.md §4).
//!
//! ```
//! use std::sync::Arc;
//!
//! use bytes::Bytes;
//! use wharf_core::SystemClock;
//! use wharf_payload::PayloadStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> wharf_core::Result<()> {
//! let store = PayloadStore::memory(Arc::new(SystemClock));
//! let payload = Bytes::from(vec![42u8; 300_000]);
//!
//! let reference = store.put(&payload).await?;
//! assert_eq!(reference.uri, format!("memory:///{}.bin", reference.content_hash));
//! assert_eq!(reference.original_size, 300_000);
//!
//! // Storing the same bytes again is a dedup hit: same object, same URI.
//! assert_eq!(store.put(&payload).await?.uri, reference.uri);
//! assert_eq!(store.stats().await?.objects, 1);
//!
//! // Every retrieval checks the size and the hash.
//! assert_eq!(store.get(&reference).await?, payload);
//! # Ok(())
//! # }
//! ```
//!
//! A real store comes from the `payload_offload` configuration with
//! [`PayloadStore::from_config`].
//!
//! # Stored form
//!
//! Without compression and encryption an object is the payload's bytes, so
//! its `file://` URI or a presigned URL serves the payload itself. With
//! `compression: zstd` and/or `encryption`, objects are framed: a header,
//! then 1 MiB chunks, each compressed and/or sealed with AES-256-GCM in
//! the STREAM construction, so that damage, truncation and reordering are
//! detected. Reads accept both forms; the hash of the original bytes,
//! checked on every read, decides. See `docs/payload-store.md` for the
//! byte layout and the reasons.
//!
//! # Failures
//!
//! Each call to the backend is bounded by `retry.timeout` and retried, for
//! transient failures only, up to `retry.max_attempts` times with doubling
//! backoff; object_store's own retries are off. Retrieval failures come back
//! as [`wharf_core::Error::IntegrityFailed`] or
//! [`wharf_core::Error::PayloadRetrievalFailed`] with the reference's
//! details, ready for a dead letter.
#![warn(missing_docs)]

mod backend;
mod codec;
mod failure;
mod get;
mod key;
mod local;
pub mod metrics;
mod put;
mod retry;
mod store;
#[doc(hidden)]
pub mod testing;

pub use object_store;
pub use put::{MULTIPART_THRESHOLD, PART_SIZE, PARTS_IN_FLIGHT};
pub use store::{MAX_PRESIGNED_EXPIRY, PayloadStore, PayloadStoreStats, StoredPayload};
