//! Retrieving a payload: stream the object, decode it chunk by chunk into
//! one buffer of the payload's size, hash as it arrives, verify at the end.

use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use object_store::GetOptions;
use object_store::path::Path;
use wharf_core::{Error, PayloadReference, PayloadRetrievalFailedDetails, Result};

use crate::codec::{Decoder, Form};
use crate::failure::{Kind, StoreError};
use crate::local::LocalDir;
use crate::metrics;
use crate::store::{Inner, PayloadStore};

/// Pieces of a body bigger than this are decoded a slice at a time, yielding
/// to the runtime between slices (an in-memory store hands out the whole
/// object as one piece).
const DECODE_SLICE: usize = 1 << 20;

impl PayloadStore {
    /// The payload `reference` names, after checking its size and SHA-256.
    ///
    /// Objects in either stored form are read (raw, or framed with any mix
    /// of zstd and encryption), whatever the store writes now.
    ///
    /// # Errors
    /// [`Error::IntegrityFailed`] when the bytes do not match the reference
    /// (corrupt, truncated, replaced, or sealed with another key — the
    /// message then says decryption failed);
    /// [`Error::PayloadRetrievalFailed`] with
    /// [`NotFound`](wharf_core::PayloadFailure::NotFound),
    /// [`AccessDenied`](wharf_core::PayloadFailure::AccessDenied),
    /// [`Timeout`](wharf_core::PayloadFailure::Timeout) or
    /// [`Unavailable`](wharf_core::PayloadFailure::Unavailable) otherwise
    /// (after retries). Both carry the reference's
    /// [`PayloadRetrievalFailedDetails`].
    pub async fn get(&self, reference: &PayloadReference) -> Result<Bytes> {
        let started = Instant::now();
        let inner = &self.inner;
        let result = inner.fetch(reference).await;
        metrics::record_get(
            inner.storage_type,
            result
                .as_ref()
                .map(|_| started.elapsed())
                .map_err(StoreError::payload_failure),
        );
        result.map(Bytes::from).map_err(|err| {
            let message = format!("{}: {}", inner.backend.describe, err.message);
            Error::payload_retrieval(
                err.payload_failure(),
                PayloadRetrievalFailedDetails::new(reference, message),
            )
        })
    }
}

impl Inner {
    async fn fetch(&self, reference: &PayloadReference) -> Result<Vec<u8>, StoreError> {
        let mut form = Form::Detect;
        loop {
            let result = match &self.backend.local {
                Some(local) => self.fetch_file(local, reference, form).await,
                None => {
                    let key = self.key_of(reference);
                    self.retry
                        .run(|| self.fetch_object(&key, reference, form))
                        .await
                }
            };
            match result {
                Err(err) if err.retry_as_raw && form == Form::Detect => form = Form::Raw,
                other => return other,
            }
        }
    }

    async fn fetch_file(
        &self,
        local: &LocalDir,
        reference: &PayloadReference,
        form: Form,
    ) -> Result<Vec<u8>, StoreError> {
        let path = local.path_of(&reference.content_hash);
        let codec = self.codec.clone();
        let (hash, size) = (reference.content_hash, reference.original_size);
        tokio::task::spawn_blocking(move || LocalDir::get(&path, &codec, &hash, size, form))
            .await
            .map_err(|e| {
                StoreError::new(Kind::Unavailable, format!("a blocking task failed: {e}"))
                    .permanent()
            })?
    }

    /// One attempt: the request and every read of the body are bounded by
    /// `retry.timeout`; a failure midway is retried from the start.
    async fn fetch_object(
        &self,
        key: &Path,
        reference: &PayloadReference,
        form: Form,
    ) -> Result<Vec<u8>, StoreError> {
        let timeout = self.retry.timeout;
        let what = format!("GET {key}");
        let response = self
            .retry
            .bounded(
                &what,
                self.backend.store.get_opts(key, GetOptions::default()),
            )
            .await?;
        let mut decoder = Decoder::new(
            &self.codec,
            reference.original_size,
            response.meta.size,
            form,
        )?;
        let mut body = response.into_stream();
        loop {
            let piece = match tokio::time::timeout(timeout, body.next()).await {
                Err(_) => {
                    return Err(StoreError::timeout(
                        timeout,
                        &format!("reading the body of {what}"),
                    ));
                }
                Ok(None) => break,
                Ok(Some(Err(err))) => return Err(StoreError::from_object_store(&err)),
                Ok(Some(Ok(piece))) => piece,
            };
            if piece.len() <= DECODE_SLICE {
                decoder.push(&piece)?;
            } else {
                for slice in piece.chunks(DECODE_SLICE) {
                    decoder.push(slice)?;
                    tokio::task::yield_now().await;
                }
            }
        }
        decoder.finish(&reference.content_hash)
    }
}
