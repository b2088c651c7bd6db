//! What a scenario gets: the store under test, the same objects without the
//! store in between, and a way to open the store with another codec.

use std::any::Any;
use std::sync::Arc;

use futures::future::BoxFuture;
use wharf_core::payload::{Compression, EncryptionConfig};
use wharf_core::{ManualClock, PayloadOffloadConfig, PayloadStorageType, Timestamp};
use wharf_payload::PayloadStore;
use wharf_payload::object_store::ObjectStore;

/// The key every encrypted variant writes with.
pub const KEY_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// Another key, for reading with the wrong one.
pub const KEY_B: &str = "f0e0d0c0b0a090807060504030201000f0e0d0c0b0a0908070605040302010ff";

/// The clock every scenario starts from: 2026-01-01T00:00:00Z.
pub fn test_clock() -> ManualClock {
    ManualClock::new(Timestamp::from_micros(1_767_225_600_000_000))
}

pub use wharf_payload::testing::{in_ci, install_tls_provider};

/// A codec configuration.
#[derive(Debug, Clone)]
pub struct Variant {
    pub name: &'static str,
    pub compression: Compression,
    pub key: Option<&'static str>,
}

impl Variant {
    pub fn plain() -> Self {
        Self {
            name: "plain",
            compression: Compression::None,
            key: None,
        }
    }
    pub fn zstd() -> Self {
        Self {
            name: "zstd",
            compression: Compression::Zstd,
            key: None,
        }
    }
    pub fn aes() -> Self {
        Self {
            name: "aes",
            compression: Compression::None,
            key: Some(KEY_A),
        }
    }
    pub fn zstd_aes() -> Self {
        Self {
            name: "zstd+aes",
            compression: Compression::Zstd,
            key: Some(KEY_A),
        }
    }

    pub fn is_plain(&self) -> bool {
        self.compression == Compression::None && self.key.is_none()
    }

    /// This variant with another key (or none).
    pub fn with_key(&self, key: Option<&'static str>) -> Self {
        Self {
            key,
            ..self.clone()
        }
    }

    /// Sets `compression` and `encryption` of `config` to this variant's.
    pub fn apply(&self, config: &PayloadOffloadConfig) -> PayloadOffloadConfig {
        let mut config = config.clone();
        config.compression = self.compression;
        config.encryption = self.key.map(|key| EncryptionConfig {
            key: Some(key.to_owned()),
            key_env: None,
        });
        config
    }
}

/// Opens a store over a fixture's objects with a given codec.
pub type Opener = Box<dyn Fn(&Variant) -> PayloadStore + Send + Sync>;

/// A backend under test.
pub struct Fixture {
    /// The store under test, with [`Fixture::variant`]'s codec.
    pub store: PayloadStore,
    pub variant: Variant,
    pub clock: ManualClock,
    pub storage_type: PayloadStorageType,
    /// The same objects as the store, reached directly: for corrupting,
    /// planting and inspecting them.
    pub raw: Arc<dyn ObjectStore>,
    /// What precedes `{hex}.bin` in `raw`'s keys of payload objects.
    pub prefix: String,
    opener: Opener,
    cleanup: Option<Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send + Sync>>,
    _guard: Box<dyn Any + Send + Sync>,
}

impl Fixture {
    pub fn new(
        variant: Variant,
        clock: ManualClock,
        opener: Opener,
        prefix: &str,
        guard: Box<dyn Any + Send + Sync>,
    ) -> Self {
        let store = opener(&variant);
        let raw = store.object_store();
        Self {
            storage_type: store.storage_type(),
            store,
            variant,
            clock,
            raw,
            prefix: prefix.to_owned(),
            opener,
            cleanup: None,
            _guard: guard,
        }
    }

    /// Runs `cleanup` after a scenario that passed.
    pub fn with_cleanup(
        mut self,
        cleanup: impl FnOnce() -> BoxFuture<'static, ()> + Send + Sync + 'static,
    ) -> Self {
        self.cleanup = Some(Box::new(cleanup));
        self
    }

    /// Another store over the same objects, with `variant`'s codec.
    pub fn open(&self, variant: &Variant) -> PayloadStore {
        (self.opener)(variant)
    }

    pub async fn cleanup(mut self) {
        if let Some(cleanup) = self.cleanup.take() {
            cleanup().await;
        }
    }
}

/// Deterministic bytes that compress somewhat, like real payloads; distinct
/// for distinct seeds.
pub fn payload(seed: u64, len: usize) -> bytes::Bytes {
    let mut state =
        0x9E37_79B9_7F4A_7C15u64 ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ len as u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Every other word is text-like, so zstd has something to do.
        let word = if out.len() % 16 == 0 {
            0x2020_2020_2020_2020
        } else {
            state
        };
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.truncate(len);
    out.into()
}
