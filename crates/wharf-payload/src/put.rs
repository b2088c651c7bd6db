//! Storing a payload: hash once, encode, write once.
//!
//! The caller's `Bytes` is the only full copy of the payload in memory. A raw
//! object is sent as (slices of) it; a framed one is encoded chunk by chunk.
//! Payloads up to [`MULTIPART_THRESHOLD`] go up in one request with
//! `PutMode::Create` (the store refuses to overwrite: a dedup hit); larger
//! ones as a multipart upload of [`PART_SIZE`] parts, at most
//! [`PARTS_IN_FLIGHT`] at a time, after a `HEAD` has found no object
//! (multipart uploads have no create-only mode; rewriting identical
//! content-addressed bytes in a race is harmless).

use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use wharf_core::{ContentHash, PayloadReference, Result};

use crate::codec::{CHUNK_SIZE, Codec, Encoder, content_hash};
use crate::failure::{Kind, StoreError};
use crate::local::{LocalDir, Written};
use crate::metrics;
use crate::store::{Inner, PayloadStore};

/// Payloads larger than this are uploaded in parts.
pub const MULTIPART_THRESHOLD: usize = 16 << 20;
/// The size of each part but the last (S3 wants at least 5 MiB).
pub const PART_SIZE: usize = 8 << 20;
/// Parts uploaded concurrently, bounding the encoded bytes held at once.
pub const PARTS_IN_FLIGHT: usize = 2;
/// Payloads up to this size are hashed on the calling task; larger ones on
/// a blocking thread, so a 100 MiB hash does not stall the runtime.
const INLINE_HASH_LIMIT: usize = 256 << 10;

impl PayloadStore {
    /// Stores `data` unless it is stored already, and returns its reference.
    ///
    /// An object already under the payload's key is a dedup hit, not an
    /// error: the reference is the same as the first put's but for
    /// `stored_at`, which is the clock's now.
    ///
    /// # Errors
    /// [`wharf_core::Error::Unavailable`] when the store cannot be reached or
    /// times out (after retries), naming the store and the URI;
    /// [`wharf_core::Error::Storage`] when it refuses for good, e.g. access
    /// denied (the message says so) or a missing bucket.
    pub async fn put(&self, data: &Bytes) -> Result<PayloadReference> {
        let started = Instant::now();
        let inner = &self.inner;
        let result = match &inner.backend.local {
            Some(local) => inner.put_file(local, data).await,
            None => inner.put_object(data).await,
        };
        match result {
            Ok((hash, written)) => {
                let dedup = written == Written::AlreadyThere;
                metrics::record_put(
                    inner.storage_type,
                    data.len() as u64,
                    dedup,
                    started.elapsed(),
                );
                Ok(PayloadReference {
                    storage_type: inner.storage_type,
                    uri: self.uri(&hash),
                    content_hash: hash,
                    original_size: data.len() as u64,
                    stored_at: inner.clock.now(),
                })
            }
            Err((hash, err)) => {
                metrics::record_put_error(inner.storage_type);
                let target = hash.map_or_else(|| "a payload".to_owned(), |h| self.uri(&h));
                Err(inner.error(&format!("could not store {target}"), err))
            }
        }
    }
}

type PutResult = std::result::Result<(ContentHash, Written), (Option<ContentHash>, StoreError)>;

fn join_error(err: tokio::task::JoinError) -> StoreError {
    StoreError::new(Kind::Unavailable, format!("a blocking task failed: {err}")).permanent()
}

impl Inner {
    async fn put_file(&self, local: &LocalDir, data: &Bytes) -> PutResult {
        let (local, codec, data) = (local.clone(), self.codec.clone(), data.clone());
        tokio::task::spawn_blocking(move || {
            let hash = content_hash(&data);
            local
                .put(&hash, &data, &codec)
                .map(|written| (hash, written))
                .map_err(|e| (Some(hash), e))
        })
        .await
        .map_err(|e| (None, join_error(e)))?
    }

    async fn put_object(&self, data: &Bytes) -> PutResult {
        let hash = if data.len() <= INLINE_HASH_LIMIT {
            content_hash(data)
        } else {
            let data = data.clone();
            tokio::task::spawn_blocking(move || content_hash(&data))
                .await
                .map_err(|e| (None, join_error(e)))?
        };
        let key = self.backend.prefix.key(&hash);
        let written = if data.len() <= MULTIPART_THRESHOLD {
            self.put_single(&key, data).await
        } else {
            self.put_multipart(&key, data).await
        };
        written.map(|w| (hash, w)).map_err(|e| (Some(hash), e))
    }

    async fn put_single(&self, key: &Path, data: &Bytes) -> Result<Written, StoreError> {
        let payload = if self.codec.is_identity() {
            PutPayload::from(data.clone())
        } else {
            let (codec, data) = (self.codec.clone(), data.clone());
            let pieces = tokio::task::spawn_blocking(move || codec.encode_all(&data))
                .await
                .map_err(join_error)??;
            PutPayload::from_iter(pieces)
        };
        let options = PutOptions::from(PutMode::Create);
        let what = format!("PUT {key}");
        let put = self
            .retry
            .call(&what, || {
                self.backend
                    .store
                    .put_opts(key, payload.clone(), options.clone())
            })
            .await;
        match put {
            Ok(_) => Ok(Written::Created),
            Err(err) if err.kind == Kind::AlreadyExists => Ok(Written::AlreadyThere),
            // A server may refuse a create-only PUT of a key that exists
            // before it reads the body, and close the connection: the
            // client sees a broken pipe, not the refusal (s3s-fs does, when
            // concurrent puts of one payload race). The key is the
            // content's address and a PUT is atomic, so an object there is
            // this payload (and is verified on every read).
            Err(err) if err.kind == Kind::Unavailable && self.exists(key).await => {
                Ok(Written::AlreadyThere)
            }
            Err(err) => Err(err),
        }
    }

    /// Whether one `HEAD` finds an object at `key`.
    async fn exists(&self, key: &Path) -> bool {
        self.retry
            .bounded(&format!("HEAD {key}"), self.backend.store.head(key))
            .await
            .is_ok()
    }

    async fn put_multipart(&self, key: &Path, data: &Bytes) -> Result<Written, StoreError> {
        let what = format!("HEAD {key}");
        match self
            .retry
            .call(&what, || self.backend.store.head(key))
            .await
        {
            Ok(_) => return Ok(Written::AlreadyThere),
            Err(err) if err.kind == Kind::NotFound => {}
            Err(err) => return Err(err),
        }
        self.retry.run(|| self.upload(key, data)).await?;
        Ok(Written::Created)
    }

    /// One attempt at a multipart upload; a failed one is aborted, and the
    /// retry starts a new upload (parts cannot be retried individually
    /// through `MultipartUpload`).
    async fn upload(&self, key: &Path, data: &Bytes) -> Result<(), StoreError> {
        let retry = &self.retry;
        let mut upload = retry
            .bounded(
                &format!("starting a multipart upload of {key}"),
                self.backend.store.put_multipart(key),
            )
            .await?;
        let mut sent = self.upload_parts(upload.as_mut(), key, data).await;
        if sent.is_ok() {
            sent = retry
                .bounded(
                    &format!("completing the multipart upload of {key}"),
                    upload.complete(),
                )
                .await
                .map(drop);
        }
        if sent.is_err() {
            let _ = tokio::time::timeout(retry.timeout, upload.abort()).await;
        }
        sent
    }

    async fn upload_parts(
        &self,
        upload: &mut dyn MultipartUpload,
        key: &Path,
        data: &Bytes,
    ) -> Result<(), StoreError> {
        let what = format!("uploading a part of {key}");
        let mut parts = Parts::new(&self.codec, data.clone())?;
        let mut in_flight = FuturesUnordered::new();
        while let Some(part) = parts.next().await? {
            while in_flight.len() >= PARTS_IN_FLIGHT {
                if let Some(done) = in_flight.next().await {
                    done?;
                }
            }
            in_flight.push(
                self.retry
                    .bounded(&what, upload.put_part(PutPayload::from(part))),
            );
        }
        while let Some(done) = in_flight.next().await {
            done?;
        }
        Ok(())
    }
}

/// The parts of one upload, made as they are needed.
enum Parts {
    /// Slices of the caller's bytes: no copy.
    Raw { data: Bytes, offset: usize },
    /// Frames, encoded on a blocking thread a part at a time.
    Framed {
        encoder: Option<Box<Encoder>>,
        data: Bytes,
        next_chunk: usize,
        chunks: usize,
    },
}

impl Parts {
    fn new(codec: &Codec, data: Bytes) -> Result<Self, StoreError> {
        if codec.is_identity() {
            return Ok(Self::Raw { data, offset: 0 });
        }
        let encoder = codec.encoder(data.len() as u64)?;
        let chunks = encoder.chunks() as usize;
        Ok(Self::Framed {
            encoder: Some(Box::new(encoder)),
            data,
            next_chunk: 0,
            chunks,
        })
    }

    async fn next(&mut self) -> Result<Option<Bytes>, StoreError> {
        match self {
            Self::Raw { data, offset } => {
                if *offset >= data.len() {
                    return Ok(None);
                }
                let end = (*offset + PART_SIZE).min(data.len());
                let part = data.slice(*offset..end);
                *offset = end;
                Ok(Some(part))
            }
            Self::Framed {
                encoder,
                data,
                next_chunk,
                chunks,
            } => {
                if *next_chunk >= *chunks {
                    return Ok(None);
                }
                let Some(mut enc) = encoder.take() else {
                    return Err(StoreError::new(
                        Kind::Unavailable,
                        "encoder lost after a failed part",
                    )
                    .permanent());
                };
                let (data, first, chunks_total) = (data.clone(), *next_chunk, *chunks);
                let (enc, part, next) = tokio::task::spawn_blocking(move || {
                    let mut part = Vec::with_capacity(PART_SIZE + enc.frame_capacity(CHUNK_SIZE));
                    if first == 0 {
                        part.extend_from_slice(enc.header());
                    }
                    let mut next = first;
                    while next < chunks_total && part.len() < PART_SIZE {
                        let start = next * CHUNK_SIZE;
                        let end = (start + CHUNK_SIZE).min(data.len());
                        enc.encode_chunk(&data[start..end], &mut part)?;
                        next += 1;
                    }
                    Ok::<_, StoreError>((enc, Bytes::from(part), next))
                })
                .await
                .map_err(join_error)??;
                *encoder = Some(enc);
                *next_chunk = next;
                Ok(Some(part))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn framed_parts_hold_the_same_bytes_as_one_piece() {
        let codec = Codec {
            zstd: true,
            key: None,
        };
        let data: Vec<u8> = (0..(3 * CHUNK_SIZE + 11))
            .map(|i| (i % 251) as u8)
            .collect();
        let data = Bytes::from(data);
        let mut parts = Parts::new(&codec, data.clone()).expect("parts");
        let mut joined = Vec::new();
        while let Some(part) = parts.next().await.expect("part") {
            joined.extend_from_slice(&part);
        }
        let mut decoder = crate::codec::Decoder::new(
            &codec,
            data.len() as u64,
            joined.len() as u64,
            crate::codec::Form::Detect,
        )
        .expect("decoder");
        decoder.push(&joined).expect("push");
        assert_eq!(
            decoder.finish(&content_hash(&data)).expect("decodes"),
            data.to_vec()
        );
    }

    #[tokio::test]
    async fn raw_parts_are_slices_of_part_size() {
        let data = Bytes::from(vec![7u8; 2 * PART_SIZE + 1]);
        let mut parts = Parts::new(&Codec::default(), data.clone()).expect("parts");
        let mut sizes = Vec::new();
        while let Some(part) = parts.next().await.expect("part") {
            sizes.push(part.len());
        }
        assert_eq!(sizes, vec![PART_SIZE, PART_SIZE, 1]);
    }
}
