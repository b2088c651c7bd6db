//! How message fields PostgreSQL has no fitting type for are stored.
//!
//! Metadata and payload references are byte strings (`bytea`): PostgreSQL
//! `text` and `jsonb` cannot hold NUL, which Wharf strings may contain.

use std::collections::BTreeMap;

use wharf_core::{ContentHash, PayloadReference, PayloadStorageType, Timestamp};

/// Encodes metadata as `(u32-le length, bytes)` pairs of key and value; an
/// empty map is an empty string.
pub(crate) fn encode_metadata(metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        metadata
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum::<usize>(),
    );
    for (k, v) in metadata {
        for part in [k, v] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part.as_bytes());
        }
    }
    out
}

/// Decodes [`encode_metadata`]'s format; `None` if the bytes are corrupt.
pub(crate) fn decode_metadata(mut bytes: &[u8]) -> Option<BTreeMap<String, String>> {
    let take = |bytes: &mut &[u8]| -> Option<String> {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return None;
        }
        let (text, rest) = rest.split_at(len);
        *bytes = rest;
        String::from_utf8(text.to_vec()).ok()
    };
    let mut out = BTreeMap::new();
    while !bytes.is_empty() {
        let k = take(&mut bytes)?;
        let v = take(&mut bytes)?;
        out.insert(k, v);
    }
    Some(out)
}

/// Version byte of [`encode_reference`]'s format.
const REFERENCE_V1: u8 = 1;

/// Encodes a payload reference but for its hash (kept in `payload_hash`,
/// which the payload reaper searches): version, storage type, original size
/// (u64-le), stored-at microseconds (i64-le), then the URI.
pub(crate) fn encode_reference(reference: &PayloadReference) -> Vec<u8> {
    let mut out = Vec::with_capacity(18 + reference.uri.len());
    out.push(REFERENCE_V1);
    out.push(match reference.storage_type {
        PayloadStorageType::Filesystem => 1,
        PayloadStorageType::Gcs => 2,
        PayloadStorageType::S3 => 3,
        PayloadStorageType::Memory => 4,
    });
    out.extend_from_slice(&reference.original_size.to_le_bytes());
    out.extend_from_slice(&reference.stored_at.as_micros().to_le_bytes());
    out.extend_from_slice(reference.uri.as_bytes());
    out
}

/// Reads a reference back from its hash and [`encode_reference`]'s bytes;
/// `None` if either is corrupt.
pub(crate) fn decode_reference(hash: &[u8], bytes: &[u8]) -> Option<PayloadReference> {
    let content_hash = ContentHash(hash.try_into().ok()?);
    let (&[version, storage], rest) = bytes.split_first_chunk::<2>()?;
    if version != REFERENCE_V1 {
        return None;
    }
    let storage_type = match storage {
        1 => PayloadStorageType::Filesystem,
        2 => PayloadStorageType::Gcs,
        3 => PayloadStorageType::S3,
        4 => PayloadStorageType::Memory,
        _ => return None,
    };
    let (size, rest) = rest.split_first_chunk::<8>()?;
    let (stored_at, uri) = rest.split_first_chunk::<8>()?;
    Some(PayloadReference {
        storage_type,
        uri: String::from_utf8(uri.to_vec()).ok()?,
        content_hash,
        original_size: u64::from_le_bytes(*size),
        stored_at: Timestamp::from_micros(i64::from_le_bytes(*stored_at)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_including_nul_and_empty_values() {
        let m = BTreeMap::from([
            ("a".to_owned(), String::new()),
            ("nul".to_owned(), "x\0y".to_owned()),
            ("ключ".to_owned(), "значение".to_owned()),
        ]);
        assert_eq!(decode_metadata(&encode_metadata(&m)), Some(m));
        assert_eq!(decode_metadata(&[]), Some(BTreeMap::new()));
    }

    #[test]
    fn truncated_metadata_is_detected() {
        let m = BTreeMap::from([("key".to_owned(), "value".to_owned())]);
        let bytes = encode_metadata(&m);
        assert_eq!(decode_metadata(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn references_round_trip_and_corruption_is_detected() {
        let r = PayloadReference {
            storage_type: PayloadStorageType::Gcs,
            uri: "gs://b/queues/ab.bin".into(),
            content_hash: ContentHash([3; 32]),
            original_size: 7 << 20,
            stored_at: Timestamp::from_micros(1_700_000_000_000_001),
        };
        let bytes = encode_reference(&r);
        assert_eq!(decode_reference(&[3; 32], &bytes), Some(r));
        assert_eq!(decode_reference(&[3; 31], &bytes), None);
        assert_eq!(decode_reference(&[3; 32], &bytes[..9]), None);
    }
}
