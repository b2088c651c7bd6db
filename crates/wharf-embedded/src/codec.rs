//! How event fields that SQLite has no type for are stored.

use std::collections::BTreeMap;

/// Encodes metadata as `(u32-le length, bytes)` pairs of key and value.
/// Chosen over JSON to keep the writer free of a serializer and the blob
/// compact; an empty map is an empty blob.
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

/// Decodes [`encode_metadata`]'s format; `None` if the blob is corrupt.
pub(crate) fn decode_metadata(mut blob: &[u8]) -> Option<BTreeMap<String, String>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips() {
        let m = BTreeMap::from([
            ("a".to_owned(), "".to_owned()),
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
