//! Reading an object back: raw or framed, in pieces of any size, verified.

use ring::aead::{Aad, LessSafeKey};
use sha2::{Digest, Sha256};
use wharf_core::ContentHash;

use super::{
    BASE_HEADER_LEN, Codec, FLAG_AES_256_GCM, FLAG_ZSTD, KEY_ID_LEN, KNOWN_FLAGS, LENGTH_PREFIX,
    MAGIC, MAX_CHUNK_SIZE, SALT_LEN, TAG_LEN, VERSION, chunk_count, header_len, hex, nonce,
};
use crate::failure::{Kind, StoreError};

/// How a reader takes the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// Framed when it starts with a frame header for this payload, raw otherwise.
    Detect,
    /// As the raw payload, whatever it starts with.
    Raw,
}

/// Reassembles and verifies a payload from its object, fed in pieces of any
/// size: at most one chunk is buffered beside the output, which is
/// allocated once, at the payload's size.
pub(crate) struct Decoder {
    codec: Codec,
    expected_size: u64,
    object_size: u64,
    state: State,
    out: Vec<u8>,
    hasher: Sha256,
}

enum State {
    /// Collecting the first bytes to see whether they are a frame header.
    Start(Vec<u8>),
    Raw,
    Framed(Box<Framed>),
}

struct Framed {
    header: Vec<u8>,
    open: Option<LessSafeKey>,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
    chunk_size: usize,
    chunks: u64,
    next: u64,
    /// The current chunk's length prefix and body, as received so far.
    frame: Vec<u8>,
    max_body: usize,
}

impl Decoder {
    /// A decoder of an `object_size`-byte object holding a payload of
    /// `expected_size` bytes.
    pub(crate) fn new(
        codec: &Codec,
        expected_size: u64,
        object_size: u64,
        form: Form,
    ) -> Result<Self, StoreError> {
        let could_be_raw = object_size == expected_size;
        let mut decoder = Self {
            codec: codec.clone(),
            expected_size,
            object_size,
            state: State::Start(Vec::with_capacity(BASE_HEADER_LEN + SALT_LEN + KEY_ID_LEN)),
            out: Vec::new(),
            hasher: Sha256::new(),
        };
        if form == Form::Raw || (could_be_raw && object_size < BASE_HEADER_LEN as u64) {
            if !could_be_raw {
                return Err(decoder.size_mismatch());
            }
            decoder.begin_raw()?;
        } else if object_size < BASE_HEADER_LEN as u64 {
            return Err(decoder.size_mismatch());
        }
        Ok(decoder)
    }

    fn size_mismatch(&self) -> StoreError {
        StoreError::integrity(format!(
            "the object is {} bytes and has no frame header, but the payload is {} bytes",
            self.object_size, self.expected_size
        ))
    }

    fn allocate(&mut self) -> Result<(), StoreError> {
        let size = usize::try_from(self.expected_size).map_err(|_| {
            StoreError::integrity("the payload is larger than this machine's address space")
        })?;
        self.out.try_reserve_exact(size).map_err(|_| {
            StoreError::new(
                Kind::Unavailable,
                format!("cannot allocate {size} bytes for the payload"),
            )
            .permanent()
        })
    }

    fn begin_raw(&mut self) -> Result<(), StoreError> {
        self.allocate()?;
        self.state = State::Raw;
        Ok(())
    }

    /// Feeds the next bytes of the object.
    pub(crate) fn push(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let result = self.push_inner(data);
        self.mark(result)
    }

    /// Checks the end of the object and the payload's size and hash.
    pub(crate) fn finish(mut self, hash: &ContentHash) -> Result<Vec<u8>, StoreError> {
        let verified = self.verify(hash);
        self.mark(verified)?;
        Ok(self.out)
    }

    fn verify(&mut self, hash: &ContentHash) -> Result<(), StoreError> {
        self.end()?;
        if self.out.len() as u64 != self.expected_size {
            return Err(StoreError::integrity(format!(
                "the stored payload is {} bytes, the reference says {}",
                self.out.len(),
                self.expected_size
            )));
        }
        let digest: [u8; 32] = self.hasher.finalize_reset().into();
        if digest != hash.0 {
            return Err(StoreError::integrity(format!(
                "the stored payload hashes to {}, the reference names {hash}",
                ContentHash(digest)
            )));
        }
        Ok(())
    }

    /// A framed reading of an object exactly as long as the payload may
    /// have been a raw payload that only looks framed: say so on failure.
    fn mark(&self, result: Result<(), StoreError>) -> Result<(), StoreError> {
        result.map_err(|mut err| {
            if matches!(self.state, State::Framed(_)) && self.object_size == self.expected_size {
                err.retry_as_raw = true;
            }
            err
        })
    }

    fn end(&mut self) -> Result<(), StoreError> {
        match &mut self.state {
            State::Start(buf) => {
                let buf = std::mem::take(buf);
                if buf.len() as u64 == self.expected_size {
                    self.begin_raw()?;
                    self.push_raw(&buf)
                } else {
                    Err(StoreError::integrity(format!(
                        "the object ends after {} bytes, inside what would be its header",
                        buf.len()
                    )))
                }
            }
            State::Raw => Ok(()),
            State::Framed(f) => {
                if f.next < f.chunks || !f.frame.is_empty() {
                    Err(StoreError::integrity(format!(
                        "the object is truncated: it ends in or before chunk {} of {}",
                        f.next + 1,
                        f.chunks
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }

    fn push_inner(&mut self, mut data: &[u8]) -> Result<(), StoreError> {
        while !data.is_empty() {
            match &mut self.state {
                State::Raw => return self.push_raw(data),
                State::Framed(_) => return self.push_frames(data),
                State::Start(buf) => {
                    let want = header_len(buf);
                    let take = want.saturating_sub(buf.len()).min(data.len());
                    buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if buf.len() >= BASE_HEADER_LEN && header_len(buf) == buf.len() {
                        self.decide()?;
                    }
                }
            }
        }
        Ok(())
    }

    /// With the whole header (or what would be one) collected: framed or raw.
    fn decide(&mut self) -> Result<(), StoreError> {
        let State::Start(buf) = &mut self.state else {
            return Ok(());
        };
        let buf = std::mem::take(buf);
        let could_be_raw = self.object_size == self.expected_size;
        if buf[..MAGIC.len()] != MAGIC {
            if !could_be_raw {
                return Err(self.size_mismatch());
            }
            self.begin_raw()?;
            return self.push_raw(&buf);
        }
        match self.parse_header(buf.clone()) {
            Ok(framed) => {
                self.allocate()?;
                self.state = State::Framed(Box::new(framed));
                Ok(())
            }
            Err(_) if could_be_raw => {
                self.begin_raw()?;
                self.push_raw(&buf)
            }
            Err(err) => Err(err),
        }
    }

    fn parse_header(&self, header: Vec<u8>) -> Result<Framed, StoreError> {
        let version = header[8];
        if version != VERSION {
            return Err(StoreError::integrity(format!(
                "the object's frame version is {version}; this Wharf reads version {VERSION}"
            )));
        }
        let flags = header[9];
        if flags & !KNOWN_FLAGS != 0 || header[10..12] != [0, 0] {
            return Err(StoreError::integrity(format!(
                "the object's frame header has unknown flags {flags:#04x}"
            )));
        }
        let chunk_size =
            u32::from_le_bytes([header[12], header[13], header[14], header[15]]) as usize;
        if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
            return Err(StoreError::integrity(format!(
                "the object's chunk size {chunk_size} is outside 1..={MAX_CHUNK_SIZE}"
            )));
        }
        let mut size = [0u8; 8];
        size.copy_from_slice(&header[16..24]);
        let size = u64::from_le_bytes(size);
        if size != self.expected_size {
            return Err(StoreError::integrity(format!(
                "the object's header says the payload is {size} bytes, the reference says {}",
                self.expected_size
            )));
        }
        let open = if flags & FLAG_AES_256_GCM != 0 {
            let Some(key) = &self.codec.key else {
                return Err(StoreError::integrity(
                    "decryption failed: the object is encrypted (AES-256-GCM) and no key is configured (payload_offload.encryption)",
                ));
            };
            let salt = &header[BASE_HEADER_LEN..BASE_HEADER_LEN + SALT_LEN];
            let id = &header[BASE_HEADER_LEN + SALT_LEN..BASE_HEADER_LEN + SALT_LEN + KEY_ID_LEN];
            if id != key.id {
                return Err(StoreError::integrity(format!(
                    "decryption failed: the object was encrypted with another key (key id {}; the configured key's id is {})",
                    hex(id),
                    hex(&key.id)
                )));
            }
            Some(key.object_key(salt)?)
        } else {
            None
        };
        let decompressor = if flags & FLAG_ZSTD != 0 {
            Some(zstd::bulk::Decompressor::new().map_err(|e| {
                StoreError::new(Kind::Unavailable, format!("zstd: {e}")).permanent()
            })?)
        } else {
            None
        };
        let mut max_body = chunk_size;
        if decompressor.is_some() {
            max_body = zstd::compress_bound(chunk_size);
        }
        if open.is_some() {
            max_body += TAG_LEN;
        }
        Ok(Framed {
            header,
            open,
            decompressor,
            chunk_size,
            chunks: chunk_count(size, chunk_size),
            next: 0,
            frame: Vec::new(),
            max_body,
        })
    }

    fn push_raw(&mut self, data: &[u8]) -> Result<(), StoreError> {
        if (self.out.len() + data.len()) as u64 > self.expected_size {
            return Err(StoreError::integrity(format!(
                "the object is longer than the payload's {} bytes",
                self.expected_size
            )));
        }
        self.out.extend_from_slice(data);
        self.hasher.update(data);
        Ok(())
    }

    fn push_frames(&mut self, mut data: &[u8]) -> Result<(), StoreError> {
        let Self {
            state: State::Framed(f),
            out,
            hasher,
            expected_size,
            ..
        } = self
        else {
            return Ok(());
        };
        while !data.is_empty() {
            if f.next >= f.chunks {
                return Err(StoreError::integrity(format!(
                    "the object has {} unexpected bytes after its last chunk",
                    data.len()
                )));
            }
            if f.frame.len() < LENGTH_PREFIX {
                let take = (LENGTH_PREFIX - f.frame.len()).min(data.len());
                f.frame.extend_from_slice(&data[..take]);
                data = &data[take..];
                if f.frame.len() < LENGTH_PREFIX {
                    return Ok(());
                }
                let body_len = f.body_len();
                if body_len > f.max_body {
                    return Err(StoreError::integrity(format!(
                        "chunk {} of {} claims {body_len} bytes, more than any chunk can take",
                        f.next + 1,
                        f.chunks
                    )));
                }
                f.frame.reserve_exact(body_len);
            }
            let want = LENGTH_PREFIX + f.body_len() - f.frame.len();
            let take = want.min(data.len());
            f.frame.extend_from_slice(&data[..take]);
            data = &data[take..];
            if take == want {
                f.decode_chunk(out, hasher, *expected_size)?;
            }
        }
        Ok(())
    }
}

impl Framed {
    fn body_len(&self) -> usize {
        u32::from_le_bytes([self.frame[0], self.frame[1], self.frame[2], self.frame[3]]) as usize
    }

    fn decode_chunk(
        &mut self,
        out: &mut Vec<u8>,
        hasher: &mut Sha256,
        expected_size: u64,
    ) -> Result<(), StoreError> {
        let index = self.next;
        let number = index + 1;
        let plain_len =
            (expected_size - index * self.chunk_size as u64).min(self.chunk_size as u64) as usize;
        let body = &mut self.frame[LENGTH_PREFIX..];
        let body: &[u8] = match &self.open {
            None => body,
            Some(key) => key
                .open_in_place(nonce(index, number == self.chunks), Aad::from(&self.header), body)
                .map_err(|_| {
                    StoreError::integrity(format!(
                        "decryption failed: chunk {number} of {} does not authenticate (wrong key, or the object was modified)",
                        self.chunks
                    ))
                })?,
        };
        let start = out.len();
        match &mut self.decompressor {
            Some(decompressor) => {
                out.resize(start + plain_len, 0);
                let written = decompressor
                    .decompress_to_buffer(body, &mut out[start..])
                    .map_err(|e| {
                        StoreError::integrity(format!(
                            "chunk {number} of {} does not decompress: {e}",
                            self.chunks
                        ))
                    })?;
                if written != plain_len {
                    return Err(StoreError::integrity(format!(
                        "chunk {number} of {} decompresses to {written} bytes, not {plain_len}",
                        self.chunks
                    )));
                }
            }
            None => {
                if body.len() != plain_len {
                    return Err(StoreError::integrity(format!(
                        "chunk {number} of {} is {} bytes, not {plain_len}",
                        self.chunks,
                        body.len()
                    )));
                }
                out.extend_from_slice(body);
            }
        }
        hasher.update(&out[start..]);
        self.frame.clear();
        self.next += 1;
        Ok(())
    }
}
