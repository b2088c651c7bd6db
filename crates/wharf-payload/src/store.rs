//! [`PayloadStore`]: construction, addressing and the calls around put and
//! get (head, delete, list, stats, presigned URLs).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::signer::Method;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use wharf_core::payload::{Compression, EncryptionConfig};
use wharf_core::{
    Clock, ContentHash, Error, PayloadOffloadConfig, PayloadReference, PayloadStorageType, Result,
    Timestamp,
};

use crate::backend::{self, Backend};
use crate::codec::{Codec, EncryptionKey};
use crate::failure::{Kind, StoreError, error_chain};
use crate::key::Prefix;
use crate::retry::Retry;

/// The longest a presigned URL may live: S3's limit for SigV4 URLs.
pub const MAX_PRESIGNED_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// A content-addressed store of payloads: the claim-check side of payload
/// offloading (DESIGN.md §4).
///
/// Cheap to clone; clones share one connection pool.
///
/// # Contract
///
/// - A payload is stored once, under `{prefix}{sha256-hex}.bin`, the hash of
///   its original bytes, and never overwritten: putting it again is a dedup
///   hit that returns an equal reference (with a new `stored_at`).
/// - When [`put`](Self::put) returns, the object is stored durably (on the
///   filesystem: fsynced, file and directory).
/// - [`get`](Self::get) hands out the bytes only after checking their size
///   and SHA-256 against the reference; anything else is an error carrying
///   [`wharf_core::PayloadRetrievalFailedDetails`].
/// - Every call to the backend is bounded by `retry.timeout` and tried up to
///   `retry.max_attempts` times when the failure is transient.
#[derive(Clone)]
pub struct PayloadStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) storage_type: PayloadStorageType,
    pub(crate) backend: Backend,
    pub(crate) codec: Codec,
    pub(crate) retry: Retry,
    pub(crate) clock: Arc<dyn Clock>,
}

/// A payload object as the store lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPayload {
    /// The payload's hash, read from the object's key.
    pub hash: ContentHash,
    /// The object's size: the payload's, or its compressed/encrypted form's.
    pub stored_bytes: u64,
    /// When the object was written, by the store's clock.
    pub last_modified: Timestamp,
}

/// Totals over every payload object of a store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PayloadStoreStats {
    /// Payload objects.
    pub objects: u64,
    /// Their stored bytes.
    pub bytes: u64,
}

impl fmt::Debug for PayloadStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PayloadStore")
            .field("store", &self.inner.backend.describe)
            .field("prefix", &self.inner.backend.prefix.as_str())
            .field("zstd", &self.inner.codec.zstd)
            .field("encrypted", &self.inner.codec.key.is_some())
            .finish()
    }
}

impl PayloadStore {
    /// The store `config` describes (`store_type` and its section,
    /// `compression`, `encryption`, `retry`); the filesystem store's
    /// directory is created when missing.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the key for a configuration that
    /// cannot work (a missing `s3`/`gcs` section, an empty bucket, a bad
    /// prefix or endpoint, an encryption key that is not 64 hex digits,
    /// `retry.max_attempts` of 0); [`Error::Storage`] when the filesystem
    /// directory cannot be created.
    pub fn from_config(config: &PayloadOffloadConfig, clock: Arc<dyn Clock>) -> Result<Self> {
        let (codec, retry) = validate(config)?;
        let backend = backend::build(config, retry.timeout)?;
        Ok(Self::assemble(
            config.store_type,
            backend,
            codec,
            retry,
            clock,
        ))
    }

    /// Like [`from_config`](Self::from_config), but doing its I/O through
    /// `object_store` instead of the one the configuration describes; the
    /// configuration still decides the URIs, the prefix, the codec and the
    /// retries. For tests (a shared [`InMemory`], a fault-injecting wrapper)
    /// and for stores object_store supports that Wharf does not configure.
    ///
    /// Such a store has no presigned URLs, and a `filesystem` one writes
    /// through `object_store` without the fsyncs [`from_config`](Self::from_config)
    /// adds.
    ///
    /// # Errors
    /// As [`from_config`](Self::from_config), for the configuration.
    pub fn with_object_store(
        config: &PayloadOffloadConfig,
        object_store: Arc<dyn ObjectStore>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let (codec, retry) = validate(config)?;
        let backend = backend::external(config, object_store)?;
        Ok(Self::assemble(
            config.store_type,
            backend,
            codec,
            retry,
            clock,
        ))
    }

    /// A fresh, empty in-memory store with default settings, for tests.
    pub fn memory(clock: Arc<dyn Clock>) -> Self {
        let config = PayloadOffloadConfig::default();
        Self::assemble(
            PayloadStorageType::Memory,
            backend::memory(Arc::new(InMemory::new()), Prefix::default()),
            Codec::default(),
            Retry::new(&config.retry),
            clock,
        )
    }

    fn assemble(
        storage_type: PayloadStorageType,
        backend: Backend,
        codec: Codec,
        retry: Retry,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                storage_type,
                backend,
                codec,
                retry,
                clock,
            }),
        }
    }

    /// The kind of store.
    pub fn storage_type(&self) -> PayloadStorageType {
        self.inner.storage_type
    }

    /// The URI of the payload with `hash`: `file:///dir/{hex}.bin`,
    /// `s3://bucket/prefix/{hex}.bin`, `gs://bucket/prefix/{hex}.bin` or
    /// `memory:///{hex}.bin`.
    pub fn uri(&self, hash: &ContentHash) -> String {
        let backend = &self.inner.backend;
        let mut uri =
            String::with_capacity(backend.uri_base.len() + backend.prefix.as_str().len() + 68);
        uri.push_str(&backend.uri_base);
        uri.push_str(backend.prefix.as_str());
        uri.push_str(&crate::key::object_name(hash));
        uri
    }

    /// The key of the payload with `hash` in [`object_store`](Self::object_store).
    pub fn object_key(&self, hash: &ContentHash) -> Path {
        self.inner.backend.prefix.key(hash)
    }

    /// The object store underneath, for tools and tests that need the stored
    /// objects as they are. Writing through it bypasses write-once,
    /// durability and the codec.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.inner.backend.store.clone()
    }

    /// The stored object of `hash`, if there is one.
    ///
    /// # Errors
    /// [`Error::Unavailable`] or [`Error::Storage`] when the store cannot
    /// answer (after retries).
    pub async fn head(&self, hash: &ContentHash) -> Result<Option<StoredPayload>> {
        let key = self.object_key(hash);
        let what = format!("HEAD {}", self.uri(hash));
        match self
            .inner
            .retry
            .call(&what, || self.inner.backend.store.head(&key))
            .await
        {
            Ok(meta) => Ok(Some(stored(*hash, &meta))),
            Err(err) if err.kind == Kind::NotFound => Ok(None),
            Err(err) => Err(self
                .inner
                .error(&format!("checking {}", self.uri(hash)), err)),
        }
    }

    /// Deletes the payload with `hash`; `false` when there was none.
    ///
    /// # Errors
    /// [`Error::Unavailable`] or [`Error::Storage`] when the store cannot
    /// answer (after retries).
    pub async fn delete(&self, hash: &ContentHash) -> Result<bool> {
        // S3 and GCS answer a delete of a missing object with success, so
        // whether it existed is asked first.
        if self.head(hash).await?.is_none() {
            return Ok(false);
        }
        let key = self.object_key(hash);
        let what = format!("DELETE {}", self.uri(hash));
        match self
            .inner
            .retry
            .call(&what, || self.inner.backend.store.delete(&key))
            .await
        {
            Ok(()) => Ok(true),
            Err(err) if err.kind == Kind::NotFound => Ok(false),
            Err(err) => Err(self
                .inner
                .error(&format!("deleting {}", self.uri(hash)), err)),
        }
    }

    /// Every payload object under the prefix, in no promised order; keys
    /// that are not `{64 lower-case hex}.bin` directly under the prefix are
    /// skipped. A transient failure midway resumes after the last key seen
    /// (within `retry.max_attempts`); a lasting one ends the stream with
    /// the error.
    pub fn list(&self) -> BoxStream<'static, Result<StoredPayload>> {
        let state = Listing {
            inner: self.inner.clone(),
            pages: None,
            after: None,
            failures: 0,
            done: false,
        };
        futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        })
        .boxed()
    }

    /// The number and stored size of the payload objects.
    ///
    /// # Errors
    /// As [`list`](Self::list).
    pub async fn stats(&self) -> Result<PayloadStoreStats> {
        let mut stats = PayloadStoreStats::default();
        let mut list = self.list();
        while let Some(payload) = list.next().await {
            let payload = payload?;
            stats.objects += 1;
            stats.bytes += payload.stored_bytes;
        }
        Ok(stats)
    }

    /// A URL that fetches the stored object with a plain HTTP GET until
    /// `expires_in` passes. The object is the payload itself when it was
    /// written without compression and encryption; otherwise it is the
    /// framed form (see the crate docs).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a filesystem or memory store, or for an
    /// `expires_in` outside 1 s ..= 7 days; [`Error::Storage`] when the
    /// store's credentials cannot sign.
    pub async fn presigned_get_url(
        &self,
        reference: &PayloadReference,
        expires_in: Duration,
    ) -> Result<String> {
        let Some(signer) = &self.inner.backend.signer else {
            return Err(Error::InvalidArgument(format!(
                "presigned URLs need an s3 or gcs payload store; this one is {}",
                self.inner.storage_type
            )));
        };
        if expires_in < Duration::from_secs(1) || expires_in > MAX_PRESIGNED_EXPIRY {
            return Err(Error::InvalidArgument(format!(
                "a presigned URL expires after 1 s to 7 days, not {expires_in:?}"
            )));
        }
        let key = self.inner.key_of(reference);
        signer
            .signed_url(Method::GET, &key, expires_in)
            .await
            .map(String::from)
            .map_err(|e| {
                Error::Storage(format!(
                    "could not presign {} in {}: {}",
                    reference.uri,
                    self.inner.backend.describe,
                    error_chain(&e)
                ))
            })
    }
}

impl Inner {
    /// The public error of a failed call other than a retrieval.
    pub(crate) fn error(&self, doing: &str, err: StoreError) -> Error {
        let message = format!("{doing} in {}: {}", self.backend.describe, err.message);
        if err.transient || err.kind == Kind::Timeout {
            Error::Unavailable(message)
        } else {
            Error::Storage(message)
        }
    }

    /// The key a reference names: its URI's, when the URI is in this store
    /// (so a changed prefix still finds old objects), else the key of its
    /// hash under the current prefix (a moved directory, a renamed bucket).
    pub(crate) fn key_of(&self, reference: &PayloadReference) -> Path {
        reference
            .uri
            .strip_prefix(self.backend.uri_base.as_str())
            .filter(|_| self.backend.local.is_none())
            .and_then(|key| Path::parse(key).ok())
            .filter(|key| key.filename().is_some())
            .unwrap_or_else(|| self.backend.prefix.key(&reference.content_hash))
    }
}

fn stored(hash: ContentHash, meta: &ObjectMeta) -> StoredPayload {
    StoredPayload {
        hash,
        stored_bytes: meta.size,
        last_modified: Timestamp::from_micros(meta.last_modified.timestamp_micros()),
    }
}

fn validate(config: &PayloadOffloadConfig) -> Result<(Codec, Retry)> {
    if config.retry.max_attempts == 0 {
        return Err(Error::InvalidArgument(
            "payload_offload.retry.max_attempts must be at least 1".into(),
        ));
    }
    if config.retry.timeout.is_zero() {
        return Err(Error::InvalidArgument(
            "payload_offload.retry.timeout must be more than 0".into(),
        ));
    }
    let key = config.encryption.as_ref().map(encryption_key).transpose()?;
    let codec = Codec {
        zstd: config.compression == Compression::Zstd,
        key,
    };
    Ok((codec, Retry::new(&config.retry)))
}

fn encryption_key(config: &EncryptionConfig) -> Result<EncryptionKey> {
    let invalid = |m: String| Error::InvalidArgument(m);
    match (&config.key, &config.key_env) {
        (Some(key), None) => EncryptionKey::from_hex(key)
            .map_err(|why| invalid(format!("payload_offload.encryption.key {why}"))),
        (None, Some(var)) => {
            let value = std::env::var(var).map_err(|_| {
                invalid(format!(
                    "payload_offload.encryption.key_env names `{var}`, which is not set"
                ))
            })?;
            EncryptionKey::from_hex(&value).map_err(|why| {
                invalid(format!(
                    "payload_offload.encryption.key_env: the value of `{var}` {why}"
                ))
            })
        }
        (Some(_), Some(_)) => Err(invalid(
            "payload_offload.encryption: give `key` or `key_env`, not both".into(),
        )),
        (None, None) => Err(invalid(
            "payload_offload.encryption: give `key` (64 hex digits) or `key_env` (the environment variable holding them)".into(),
        )),
    }
}

/// The state of a [`PayloadStore::list`] stream.
struct Listing {
    inner: Arc<Inner>,
    pages: Option<BoxStream<'static, object_store::Result<ObjectMeta>>>,
    /// The last key seen, to resume after.
    after: Option<Path>,
    failures: u32,
    done: bool,
}

impl Listing {
    async fn next(&mut self) -> Option<Result<StoredPayload>> {
        loop {
            if self.done {
                return None;
            }
            let backend = &self.inner.backend;
            let folder = backend.prefix.folder();
            let pages = self.pages.get_or_insert_with(|| match &self.after {
                None => backend.store.list(folder.as_ref()),
                Some(after) => backend.store.list_with_offset(folder.as_ref(), after),
            });
            let retry = &self.inner.retry;
            let failure = match tokio::time::timeout(retry.timeout, pages.next()).await {
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Ok(Some(Ok(meta))) => {
                    self.failures = 0;
                    let hash = backend.prefix.hash_of(&meta.location);
                    self.after = Some(meta.location.clone());
                    match hash {
                        Some(hash) => return Some(Ok(stored(hash, &meta))),
                        None => continue,
                    }
                }
                Ok(Some(Err(err))) => StoreError::from_object_store(&err),
                Err(_) => StoreError::timeout(retry.timeout, "listing"),
            };
            self.pages = None;
            self.failures += 1;
            // Resuming needs the listing in key order, which a local
            // directory walk does not give; local failures are permanent.
            if failure.transient && self.failures < retry.max_attempts && backend.local.is_none() {
                tokio::time::sleep(retry.delay_after(self.failures)).await;
                continue;
            }
            self.done = true;
            let failure = failure.after_attempts(self.failures);
            let doing = format!("listing {}{}", backend.uri_base, backend.prefix.as_str());
            return Some(Err(self.inner.error(&doing, failure)));
        }
    }
}

#[cfg(test)]
mod tests;
