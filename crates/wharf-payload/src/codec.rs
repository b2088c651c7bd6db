//! The stored form of a payload.
//!
//! With neither compression nor encryption configured the object *is* the
//! payload, byte for byte, so a `file://` URI or a presigned URL hands out
//! the payload itself. Otherwise the object is framed:
//!
//! ```text
//! header   magic      8 bytes  89 'W' 'P' 'L' 0D 0A 1A 0A
//!          version    1 byte   1
//!          flags      1 byte   bit 0 zstd, bit 1 AES-256-GCM
//!          reserved   2 bytes  0
//!          chunk size 4 bytes  LE, plaintext bytes per chunk (1 MiB)
//!          size       8 bytes  LE, length of the original payload
//!          [salt     32 bytes  random per object      ] when encrypted
//!          [key id    8 bytes  names the master key   ] when encrypted
//! chunks   length     4 bytes  LE, length of the body
//!          body                chunk → zstd (level 3) → AES-256-GCM seal
//! ```
//!
//! There are `max(1, ⌈size / chunk size⌉)` chunks, each of the chunk size but
//! the last. Encryption follows the STREAM construction: every object gets its
//! own AES key, HMAC-SHA256(master key, label ‖ salt), so nonces never repeat
//! across objects; the nonce of chunk *i* is *i* (8 bytes, big-endian), three
//! zero bytes and a last-chunk flag, and the header is the associated data
//! of every chunk. Reordered, dropped, duplicated or appended chunks and a
//! changed header therefore fail to authenticate; a truncated object ends
//! before its last chunk. Without encryption the SHA-256 of the original
//! bytes, checked on every read, catches the same damage.
//!
//! A reader accepts both forms whatever the store is configured to write
//! now, so objects written before compression or encryption was switched on
//! stay readable; the hash decides whether what was read is the payload.

use std::fmt;

use bytes::Bytes;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use wharf_core::ContentHash;

use crate::failure::{Kind, StoreError};

/// The first bytes of every framed object. The leading non-ASCII byte keeps
/// text payloads (JSON, XML) from ever looking like a frame header.
pub(crate) const MAGIC: [u8; 8] = [0x89, b'W', b'P', b'L', 0x0d, 0x0a, 0x1a, 0x0a];
const VERSION: u8 = 1;
const FLAG_ZSTD: u8 = 0b01;
const FLAG_AES_256_GCM: u8 = 0b10;
const KNOWN_FLAGS: u8 = FLAG_ZSTD | FLAG_AES_256_GCM;
/// Plaintext bytes per chunk written by this version.
pub(crate) const CHUNK_SIZE: usize = 1 << 20;
/// The largest chunk size a reader accepts, bounding the memory one chunk takes.
const MAX_CHUNK_SIZE: usize = 16 << 20;
pub(crate) const BASE_HEADER_LEN: usize = 24;
const SALT_LEN: usize = 32;
const KEY_ID_LEN: usize = 8;
const TAG_LEN: usize = 16;
const LENGTH_PREFIX: usize = 4;
const ZSTD_LEVEL: i32 = 3;
const OBJECT_KEY_LABEL: &[u8] = b"wharf-payload/v1/object-key";
const KEY_ID_LABEL: &[u8] = b"wharf-payload/v1/key-id";

/// The SHA-256 of `data`.
pub(crate) fn content_hash(data: &[u8]) -> ContentHash {
    ContentHash(Sha256::digest(data).into())
}

/// The AES-256-GCM master key (`payload_offload.encryption`).
#[derive(Clone)]
pub(crate) struct EncryptionKey {
    master: hmac::Key,
    id: [u8; KEY_ID_LEN],
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey(id {})", hex(&self.id))
    }
}

impl EncryptionKey {
    /// A key from 64 hex digits. The error never repeats the text given.
    pub(crate) fn from_hex(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(format!(
                "must be 64 hex digits (a 256-bit key), not {} characters",
                text.chars().count()
            ));
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = text
                .get(2 * i..2 * i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| {
                    "must be 64 hex digits (a 256-bit key), and is not hex".to_owned()
                })?;
        }
        Ok(Self::from_bytes(&key))
    }

    pub(crate) fn from_bytes(key: &[u8; 32]) -> Self {
        let master = hmac::Key::new(hmac::HMAC_SHA256, key);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&hmac::sign(&master, KEY_ID_LABEL).as_ref()[..KEY_ID_LEN]);
        Self { master, id }
    }

    /// The AES key of the object with `salt`.
    fn object_key(&self, salt: &[u8]) -> Result<LessSafeKey, StoreError> {
        let mut ctx = hmac::Context::with_key(&self.master);
        ctx.update(OBJECT_KEY_LABEL);
        ctx.update(salt);
        let derived = ctx.sign();
        // An HMAC-SHA256 tag is exactly as long as an AES-256 key.
        let unbound = UnboundKey::new(&AES_256_GCM, derived.as_ref()).map_err(|_| {
            StoreError::new(Kind::Unavailable, "cannot derive the object's AES key").permanent()
        })?;
        Ok(LessSafeKey::new(unbound))
    }
}

/// How payloads are written: the configured compression and encryption.
#[derive(Debug, Clone, Default)]
pub(crate) struct Codec {
    pub(crate) zstd: bool,
    pub(crate) key: Option<EncryptionKey>,
}

impl Codec {
    /// Whether objects are written as the raw payload.
    pub(crate) fn is_identity(&self) -> bool {
        !self.zstd && self.key.is_none()
    }

    /// An encoder for one payload of `original_size` bytes.
    pub(crate) fn encoder(&self, original_size: u64) -> Result<Encoder, StoreError> {
        Encoder::new(self, original_size)
    }

    /// The whole framed object for `data`: the header, then one piece per
    /// chunk, ready to be sent without joining them.
    pub(crate) fn encode_all(&self, data: &[u8]) -> Result<Vec<Bytes>, StoreError> {
        let mut encoder = self.encoder(data.len() as u64)?;
        let mut pieces = Vec::with_capacity(encoder.chunks() as usize + 1);
        pieces.push(Bytes::copy_from_slice(encoder.header()));
        for chunk in chunks_of(data) {
            let mut frame = Vec::with_capacity(encoder.frame_capacity(chunk.len()));
            encoder.encode_chunk(chunk, &mut frame)?;
            pieces.push(Bytes::from(frame));
        }
        Ok(pieces)
    }
}

/// The chunks `data` is framed in; one empty chunk for an empty payload.
pub(crate) fn chunks_of(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let empty: &[u8] = &[];
    let first_empty = data.is_empty().then_some(empty);
    first_empty.into_iter().chain(data.chunks(CHUNK_SIZE))
}

fn chunk_count(size: u64, chunk_size: usize) -> u64 {
    size.div_ceil(chunk_size as u64).max(1)
}

fn nonce(index: u64, last: bool) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&index.to_be_bytes());
    bytes[11] = u8::from(last);
    Nonce::assume_unique_for_key(bytes)
}

/// How many bytes the header at the start of `buf` takes, as far as can be
/// told from what `buf` holds.
fn header_len(buf: &[u8]) -> usize {
    if buf.len() < BASE_HEADER_LEN || buf[..MAGIC.len()] != MAGIC || buf[9] & FLAG_AES_256_GCM == 0
    {
        BASE_HEADER_LEN
    } else {
        BASE_HEADER_LEN + SALT_LEN + KEY_ID_LEN
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Frames one payload, chunk by chunk, in order.
pub(crate) struct Encoder {
    header: Vec<u8>,
    seal: Option<LessSafeKey>,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    chunks: u64,
    next: u64,
}

impl Encoder {
    fn new(codec: &Codec, original_size: u64) -> Result<Self, StoreError> {
        let mut flags = 0;
        if codec.zstd {
            flags |= FLAG_ZSTD;
        }
        if codec.key.is_some() {
            flags |= FLAG_AES_256_GCM;
        }
        let mut header = Vec::with_capacity(BASE_HEADER_LEN + SALT_LEN + KEY_ID_LEN);
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&[VERSION, flags, 0, 0]);
        header.extend_from_slice(&(CHUNK_SIZE as u32).to_le_bytes());
        header.extend_from_slice(&original_size.to_le_bytes());
        let seal = match &codec.key {
            None => None,
            Some(key) => {
                let mut salt = [0u8; SALT_LEN];
                SystemRandom::new().fill(&mut salt).map_err(|_| {
                    StoreError::new(Kind::Unavailable, "the system random generator failed")
                        .permanent()
                })?;
                header.extend_from_slice(&salt);
                header.extend_from_slice(&key.id);
                Some(key.object_key(&salt)?)
            }
        };
        let compressor = if codec.zstd {
            Some(zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(|e| {
                StoreError::new(Kind::Unavailable, format!("zstd: {e}")).permanent()
            })?)
        } else {
            None
        };
        Ok(Self {
            header,
            seal,
            compressor,
            chunks: chunk_count(original_size, CHUNK_SIZE),
            next: 0,
        })
    }

    pub(crate) fn header(&self) -> &[u8] {
        &self.header
    }

    pub(crate) fn chunks(&self) -> u64 {
        self.chunks
    }

    /// The most bytes the frame of a `plain_len`-byte chunk takes.
    pub(crate) fn frame_capacity(&self, plain_len: usize) -> usize {
        let body = if self.compressor.is_some() {
            zstd::compress_bound(plain_len)
        } else {
            plain_len
        };
        LENGTH_PREFIX + body + TAG_LEN
    }

    /// Appends the frame of the next chunk to `out`.
    pub(crate) fn encode_chunk(
        &mut self,
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        let index = self.next;
        if index >= self.chunks {
            return Err(StoreError::new(
                Kind::Unavailable,
                "encoder: more chunks than the payload has",
            )
            .permanent());
        }
        let prefix_at = out.len();
        out.extend_from_slice(&[0; LENGTH_PREFIX]);
        let body_at = out.len();
        match &mut self.compressor {
            Some(compressor) => {
                out.resize(body_at + zstd::compress_bound(plain.len()), 0);
                let written = compressor
                    .compress_to_buffer(plain, &mut out[body_at..])
                    .map_err(|e| {
                        StoreError::new(Kind::Unavailable, format!("zstd: {e}")).permanent()
                    })?;
                out.truncate(body_at + written);
            }
            None => out.extend_from_slice(plain),
        }
        if let Some(seal) = &self.seal {
            let last = index + 1 == self.chunks;
            let tag = seal
                .seal_in_place_separate_tag(
                    nonce(index, last),
                    Aad::from(&self.header),
                    &mut out[body_at..],
                )
                .map_err(|_| {
                    StoreError::new(Kind::Unavailable, "AES-256-GCM seal failed").permanent()
                })?;
            out.extend_from_slice(tag.as_ref());
        }
        let body_len = u32::try_from(out.len() - body_at).map_err(|_| {
            StoreError::new(Kind::Unavailable, "chunk larger than 4 GiB").permanent()
        })?;
        out[prefix_at..body_at].copy_from_slice(&body_len.to_le_bytes());
        self.next += 1;
        Ok(())
    }
}

mod decode;

pub(crate) use decode::{Decoder, Form};

#[cfg(test)]
mod tests;
