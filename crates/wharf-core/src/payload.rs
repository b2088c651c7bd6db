//! Payload offloading (the claim check): references to payloads kept in an
//! external, content-addressed store, and the `payload_offload` configuration.
//!
//! A payload larger than the threshold is stored once, under the SHA-256 of its
//! original bytes; the event or message carries a [`PayloadReference`] instead
//! of the bytes, and every read resolves it back, verifying the hash.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// A SHA-256 digest: the name of a stored payload.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// Lower-case hex, as it appears in object keys.
    pub fn to_hex(&self) -> String {
        use fmt::Write;
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// The digest of a byte slice given as exactly 32 bytes.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] when the slice is not 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> crate::Result<Self> {
        <[u8; 32]>::try_from(bytes).map(Self).map_err(|_| {
            crate::Error::InvalidArgument(format!(
                "a content hash is 32 bytes of SHA-256, not {} bytes",
                bytes.len()
            ))
        })
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.to_hex())
    }
}

impl FromStr for ContentHash {
    type Err = crate::Error;

    /// Parses 64 hex digits.
    fn from_str(s: &str) -> crate::Result<Self> {
        let invalid = || {
            crate::Error::InvalidArgument(format!(
                "`{s}` is not a content hash: expected 64 hex digits of SHA-256"
            ))
        };
        if s.len() != 64 || !s.is_ascii() {
            return Err(invalid());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| invalid())?;
        }
        Ok(Self(out))
    }
}

/// Where an offloaded payload lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadStorageType {
    /// A directory on a local filesystem (`file://`).
    Filesystem,
    /// Google Cloud Storage (`gs://`).
    Gcs,
    /// Amazon S3 or an S3-compatible server (`s3://`).
    S3,
    /// Process memory; for tests (`memory://`).
    Memory,
}

impl PayloadStorageType {
    /// The name used in configuration and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Filesystem => "filesystem",
            Self::Gcs => "gcs",
            Self::S3 => "s3",
            Self::Memory => "memory",
        }
    }
}

impl fmt::Display for PayloadStorageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The claim check an event or message carries in place of a large payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadReference {
    /// The store holding the payload.
    pub storage_type: PayloadStorageType,
    /// Where: `file:///…/{hash}.bin`, `s3://bucket/prefix/{hash}.bin`,
    /// `gs://bucket/prefix/{hash}.bin`.
    pub uri: String,
    /// SHA-256 of the original (uncompressed, unencrypted) bytes.
    pub content_hash: ContentHash,
    /// Length of the original bytes.
    pub original_size: u64,
    /// When the payload was stored (or, on a dedup hit, referenced again).
    pub stored_at: Timestamp,
}

/// Why an offloaded payload could not be handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadFailure {
    /// No object under the reference's key.
    NotFound,
    /// The object's bytes do not hash to the reference's `content_hash` or
    /// have another size.
    IntegrityFailed,
    /// The store refused the credentials.
    AccessDenied,
    /// The store did not answer in time, after retries.
    Timeout,
    /// Any other failure of the store, after retries.
    Unavailable,
}

impl PayloadFailure {
    /// A stable name for logs, metrics and dead-letter metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::IntegrityFailed => "integrity_failed",
            Self::AccessDenied => "access_denied",
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
        }
    }
}

/// What a dead letter or a failed read says about a payload it could not
/// retrieve (the seed's `PayloadRetrievalFailedDetails`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadRetrievalFailedDetails {
    /// The store's kind.
    pub storage_type: PayloadStorageType,
    /// The reference's URI.
    pub uri: String,
    /// The reference's hash.
    pub content_hash: ContentHash,
    /// The reference's size.
    pub original_size: u64,
    /// What went wrong, in words.
    pub error: String,
}

impl PayloadRetrievalFailedDetails {
    /// Details of a failure to retrieve `reference`.
    pub fn new(reference: &PayloadReference, error: impl Into<String>) -> Self {
        Self {
            storage_type: reference.storage_type,
            uri: reference.uri.clone(),
            content_hash: reference.content_hash,
            original_size: reference.original_size,
            error: error.into(),
        }
    }
}

/// Metadata keys of a dead letter whose payload could not be retrieved: the
/// fields of [`PayloadRetrievalFailedDetails`], under their own names.
pub mod dead_letter_keys {
    /// [`super::PayloadRetrievalFailedDetails::storage_type`].
    pub const STORAGE_TYPE: &str = "PayloadStorageType";
    /// [`super::PayloadRetrievalFailedDetails::uri`].
    pub const URI: &str = "PayloadUri";
    /// [`super::PayloadRetrievalFailedDetails::content_hash`], hex.
    pub const CONTENT_HASH: &str = "PayloadContentHash";
    /// [`super::PayloadRetrievalFailedDetails::original_size`].
    pub const ORIGINAL_SIZE: &str = "PayloadOriginalSize";
    /// [`super::PayloadRetrievalFailedDetails::error`].
    pub const ERROR: &str = "PayloadRetrievalError";
}

/// Compression applied to a payload before it is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Stored as given.
    #[default]
    None,
    /// Zstandard at its default level.
    Zstd,
}

/// The `payload_offload` section of the configuration (DESIGN.md §4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PayloadOffloadConfig {
    /// Whether large payloads are offloaded at all.
    pub enabled: bool,
    /// Payloads larger than this many bytes are offloaded. More than 0 and at
    /// most the inline limit (`limits.max_event_bytes`).
    pub threshold_bytes: u64,
    /// Which store.
    pub store_type: PayloadStorageType,
    /// Settings of the filesystem store.
    pub filesystem: FilesystemStoreConfig,
    /// Settings of the S3 store.
    pub s3: Option<S3StoreConfig>,
    /// Settings of the GCS store.
    pub gcs: Option<GcsStoreConfig>,
    /// Compression of stored payloads.
    pub compression: Compression,
    /// Unreferenced payloads older than this many days are deleted by the reaper.
    pub ttl_days: u32,
    /// How often the reaper runs, in hours; 0 turns it off.
    pub reaper_interval_hours: u32,
    /// AES-256-GCM encryption at rest; off when absent.
    pub encryption: Option<EncryptionConfig>,
    /// How a retrieval or store call is retried before it fails.
    pub retry: RetryConfig,
}

impl Default for PayloadOffloadConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            threshold_bytes: 256 * 1024,
            store_type: PayloadStorageType::Filesystem,
            filesystem: FilesystemStoreConfig::default(),
            s3: None,
            gcs: None,
            compression: Compression::None,
            ttl_days: 30,
            reaper_interval_hours: 24,
            encryption: None,
            retry: RetryConfig::default(),
        }
    }
}

/// `payload_offload.filesystem`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesystemStoreConfig {
    /// The directory payloads are written to; created when missing.
    pub base_path: PathBuf,
}

impl Default for FilesystemStoreConfig {
    fn default() -> Self {
        Self {
            base_path: PathBuf::from("./wharf-data/payloads"),
        }
    }
}

/// `payload_offload.s3`. Credentials come from these keys or, when absent,
/// from the usual `AWS_*` environment variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3StoreConfig {
    /// The bucket.
    pub bucket: String,
    /// Prepended to every key (e.g. `events/`).
    #[serde(default)]
    pub prefix: String,
    /// The region.
    #[serde(default = "default_region")]
    pub region: String,
    /// A custom endpoint (an S3-compatible server), e.g. `http://127.0.0.1:9000`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Access key id.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret access key.
    #[serde(default)]
    pub secret_access_key: Option<String>,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

/// `payload_offload.gcs`. Credentials come from `service_account_path` or,
/// when absent, from `GOOGLE_APPLICATION_CREDENTIALS` / `GOOGLE_SERVICE_ACCOUNT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcsStoreConfig {
    /// The bucket.
    pub bucket: String,
    /// Prepended to every key.
    #[serde(default)]
    pub prefix: String,
    /// A service-account JSON key file.
    #[serde(default)]
    pub service_account_path: Option<PathBuf>,
}

/// `payload_offload.encryption`: the 256-bit key, as 64 hex digits, given
/// inline or (better) named by an environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// The key itself.
    #[serde(default)]
    pub key: Option<String>,
    /// The environment variable holding the key.
    #[serde(default)]
    pub key_env: Option<String>,
}

/// `payload_offload.retry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per call, at least 1.
    pub max_attempts: u32,
    /// Time limit of one attempt.
    #[serde(with = "crate::queue::humantime_duration")]
    pub timeout: std::time::Duration,
    /// Wait before the first retry; doubled for each further one.
    #[serde(with = "crate::queue::humantime_duration")]
    pub backoff: std::time::Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            timeout: std::time::Duration::from_secs(30),
            backoff: std::time::Duration::from_millis(100),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hash_round_trips_through_hex() {
        let hash = ContentHash([0xab; 32]);
        let hex = hash.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex.parse::<ContentHash>().unwrap(), hash);
        assert!("xyz".parse::<ContentHash>().is_err());
        assert!("g".repeat(64).parse::<ContentHash>().is_err());
    }

    #[test]
    fn config_reads_the_seed_keys() {
        let c: PayloadOffloadConfig = serde_json::from_str(
            r#"{"enabled":true,"threshold_bytes":1000,"store_type":"s3",
                "s3":{"bucket":"b","prefix":"events/","endpoint":"http://127.0.0.1:9000"},
                "compression":"zstd","ttl_days":7,"reaper_interval_hours":1}"#,
        )
        .unwrap();
        assert_eq!(c.store_type, PayloadStorageType::S3);
        assert_eq!(c.s3.unwrap().region, "us-east-1");
        assert_eq!(c.compression, Compression::Zstd);
        assert_eq!(c.retry.max_attempts, 3);
    }
}
