//! How backends store the fields their database has no fitting type for:
//! metadata maps and payload references, as byte strings. Shared so the
//! embedded and PostgreSQL backends write one format (and PostgreSQL's
//! `text` / `jsonb`, which cannot hold NUL, are not needed for them).

use std::collections::BTreeMap;

use wharf_core::{ContentHash, PayloadReference, PayloadStorageType, Timestamp};

/// Encodes metadata as `(u32-le length, bytes)` pairs of key and value.
/// Chosen over JSON to keep the writer free of a serializer and the blob
/// compact; an empty map is an empty blob.
pub fn encode_metadata(metadata: &BTreeMap<String, String>) -> Vec<u8> {
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

/// Decodes [`encode_metadata`]'s format; `None` if the blob is corrupt.
pub fn decode_metadata(mut blob: &[u8]) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let take = |blob: &mut &[u8]| -> Option<String> {
        let (len, rest) = blob.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return None;
        }
        let (text, rest) = rest.split_at(len);
        *blob = rest;
        String::from_utf8(text.to_vec()).ok()
    };
    while !blob.is_empty() {
        let k = take(&mut blob)?;
        let v = take(&mut blob)?;
        out.insert(k, v);
    }
    Some(out)
}

/// Version byte of [`encode_reference`]'s format.
const REFERENCE_V1: u8 = 1;

/// Encodes a payload reference but for its hash (kept in its own, indexed
/// column): version, storage type, original size (u64-le), stored-at
/// microseconds (i64-le), then the URI's bytes.
pub fn encode_reference(reference: &PayloadReference) -> Vec<u8> {
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

/// Decodes [`encode_reference`]'s format with the hash column; `None` if
/// either is corrupt.
pub fn decode_reference(hash: &[u8], blob: &[u8]) -> Option<PayloadReference> {
    let content_hash = ContentHash(hash.try_into().ok()?);
    let (&[version, storage], rest) = blob.split_first_chunk::<2>()?;
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

/// The `(payload_hash, payload_ref)` column values of an optional reference.
pub fn reference_columns(reference: Option<&PayloadReference>) -> (Option<&[u8]>, Option<Vec<u8>>) {
    match reference {
        Some(r) => (Some(&r.content_hash.0[..]), Some(encode_reference(r))),
        None => (None, None),
    }
}

/// Reads the optional reference back from its two columns.
pub fn reference_from_columns(
    hash: Option<Vec<u8>>,
    blob: Option<Vec<u8>>,
) -> Result<Option<PayloadReference>, &'static str> {
    match (hash, blob) {
        (Some(hash), Some(blob)) => decode_reference(&hash, &blob)
            .map(Some)
            .ok_or("payload reference"),
        (None, None) => Ok(None),
        _ => Err("payload reference"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_round_trip_and_corruption_is_detected() {
        let r = PayloadReference {
            storage_type: PayloadStorageType::S3,
            uri: "s3://b/events/ab.bin".into(),
            content_hash: ContentHash([7; 32]),
            original_size: 5 << 20,
            stored_at: Timestamp::from_micros(1_700_000_000_000_000),
        };
        let blob = encode_reference(&r);
        assert_eq!(decode_reference(&[7; 32], &blob), Some(r));
        assert_eq!(decode_reference(&[7; 31], &blob), None);
        assert_eq!(decode_reference(&[7; 32], &blob[..10]), None);
        assert_eq!(
            reference_from_columns(Some(vec![7; 32]), None),
            Err("payload reference")
        );
    }

    #[test]
    fn metadata_round_trips() {
        let m = BTreeMap::from([
            ("a".to_owned(), "".to_owned()),
            ("nul".to_owned(), "x\0y".to_owned()),
            ("ключ".to_owned(), "значение".to_owned()),
        ]);
        assert_eq!(decode_metadata(&encode_metadata(&m)), Some(m));
        assert_eq!(decode_metadata(&[]), Some(BTreeMap::new()));
    }

    #[test]
    fn truncated_metadata_is_detected() {
        let m = BTreeMap::from([("key".to_owned(), "value".to_owned())]);
        let blob = encode_metadata(&m);
        assert_eq!(decode_metadata(&blob[..blob.len() - 1]), None);
    }
}
