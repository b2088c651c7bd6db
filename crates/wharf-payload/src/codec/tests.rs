//! The framed format: round trips, and every kind of damage is refused.

use super::*;

fn key(byte: u8) -> EncryptionKey {
    EncryptionKey::from_bytes(&[byte; 32])
}

fn codecs() -> Vec<(&'static str, Codec)> {
    vec![
        ("identity", Codec::default()),
        (
            "zstd",
            Codec {
                zstd: true,
                key: None,
            },
        ),
        (
            "aes",
            Codec {
                zstd: false,
                key: Some(key(1)),
            },
        ),
        (
            "zstd+aes",
            Codec {
                zstd: true,
                key: Some(key(1)),
            },
        ),
    ]
}

fn framed_codecs() -> Vec<(&'static str, Codec)> {
    codecs()
        .into_iter()
        .filter(|(_, c)| !c.is_identity())
        .collect()
}

/// Deterministic bytes that compress somewhat, like real payloads.
fn payload(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ len as u64;
    (0..len)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if i % 3 == 0 { b'a' } else { state as u8 }
        })
        .collect()
}

/// The stored object: the payload itself for the identity codec.
fn encode(codec: &Codec, data: &[u8]) -> Vec<u8> {
    if codec.is_identity() {
        return data.to_vec();
    }
    codec.encode_all(data).expect("encodes").concat()
}

fn decode_in(
    codec: &Codec,
    data_len: usize,
    hash: &ContentHash,
    object: &[u8],
    piece: usize,
    form: Form,
) -> Result<Vec<u8>, StoreError> {
    let mut decoder = Decoder::new(codec, data_len as u64, object.len() as u64, form)?;
    for part in object.chunks(piece.max(1)) {
        decoder.push(part)?;
    }
    decoder.finish(hash)
}

fn decode(codec: &Codec, data: &[u8], object: &[u8]) -> Result<Vec<u8>, StoreError> {
    decode_in(
        codec,
        data.len(),
        &content_hash(data),
        object,
        64 * 1024,
        Form::Detect,
    )
}

fn assert_integrity(result: Result<Vec<u8>, StoreError>, needle: &str, what: &str) {
    match result {
        Ok(_) => panic!("{what}: damaged object was accepted"),
        Err(err) => {
            assert_eq!(err.kind, Kind::Integrity, "{what}: {}", err.message);
            assert!(
                err.message.contains(needle),
                "{what}: `{}` lacks `{needle}`",
                err.message
            );
        }
    }
}

/// Splits a framed object into its header and its frames.
fn split_frames(object: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let header_len = header_len(object);
    let (header, mut rest) = object.split_at(header_len);
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        frames.push(rest[..4 + len].to_vec());
        rest = &rest[4 + len..];
    }
    (header.to_vec(), frames)
}

const SIZES: [usize; 7] = [
    0,
    1,
    23,
    100,
    CHUNK_SIZE - 1,
    CHUNK_SIZE,
    2 * CHUNK_SIZE + 17,
];

#[test]
fn every_codec_round_trips_every_size() {
    for (name, codec) in codecs() {
        for size in SIZES {
            let data = payload(size);
            let object = encode(&codec, &data);
            let decoded =
                decode(&codec, &data, &object).unwrap_or_else(|e| panic!("{name} {size}: {e}"));
            assert!(decoded == data, "{name} {size}: bytes differ");
        }
    }
}

#[test]
fn objects_decode_whatever_pieces_they_arrive_in() {
    let data = payload(3000);
    for (name, codec) in codecs() {
        let object = encode(&codec, &data);
        for piece in [1, 3, 4, 5, 23, 24, 25, 63, 64, 65, 1000] {
            let decoded = decode_in(
                &codec,
                data.len(),
                &content_hash(&data),
                &object,
                piece,
                Form::Detect,
            )
            .unwrap_or_else(|e| panic!("{name} piece {piece}: {e}"));
            assert!(decoded == data, "{name} piece {piece}");
        }
    }
}

#[test]
fn framing_compresses_and_encrypts() {
    let data = vec![b'x'; 3 * CHUNK_SIZE];
    let zstd = encode(
        &Codec {
            zstd: true,
            key: None,
        },
        &data,
    );
    assert!(
        zstd.len() < data.len() / 100,
        "zstd shrinks repetitive data"
    );
    assert_eq!(&zstd[..8], &MAGIC);
    let aes = encode(
        &Codec {
            zstd: false,
            key: Some(key(1)),
        },
        &data,
    );
    assert_eq!(aes.len(), BASE_HEADER_LEN + 40 + 3 * (4 + CHUNK_SIZE + 16));
    assert!(
        !aes.windows(64).any(|w| w.iter().all(|b| *b == b'x')),
        "no plaintext run survives"
    );
    let again = encode(
        &Codec {
            zstd: false,
            key: Some(key(1)),
        },
        &data,
    );
    assert_ne!(aes, again, "each object has its own salt");
}

#[test]
fn a_flipped_bit_anywhere_is_refused() {
    let data = payload(2 * CHUNK_SIZE + 5);
    for (name, codec) in codecs() {
        let object = encode(&codec, &data);
        let header_len = if codec.is_identity() {
            0
        } else {
            header_len(&object)
        };
        // A bit of the header's size field, of a length prefix, and of bodies.
        let mut positions = vec![object.len() / 2, object.len() - 1];
        if header_len > 0 {
            positions.extend([17, header_len - 1, header_len + 1, header_len + 100]);
        }
        for pos in positions {
            let mut damaged = object.clone();
            damaged[pos] ^= 0x10;
            let result = decode(&codec, &data, &damaged);
            assert!(
                matches!(&result, Err(e) if e.kind == Kind::Integrity),
                "{name}: flipping a bit at {pos} of {} went unnoticed",
                object.len()
            );
        }
    }
}

#[test]
fn a_truncated_object_is_refused() {
    let data = payload(2 * CHUNK_SIZE + 5);
    for (name, codec) in framed_codecs() {
        let object = encode(&codec, &data);
        let (header, frames) = split_frames(&object);
        assert_eq!(frames.len(), 3);
        let without_last: Vec<u8> = [header.clone(), frames[0].clone(), frames[1].clone()].concat();
        assert_integrity(decode(&codec, &data, &without_last), "truncated", name);
        let cut = &object[..object.len() - 7];
        assert_integrity(decode(&codec, &data, cut), "truncated", name);
        assert_integrity(decode(&codec, &data, &header), "truncated", name);
        let inside_header = &object[..10];
        assert!(
            decode(&codec, &data, inside_header).is_err(),
            "{name}: a header stub"
        );
    }
    let identity = Codec::default();
    assert_integrity(
        decode(&identity, &data, &data[..data.len() - 1]),
        "has no frame header",
        "identity",
    );
}

#[test]
fn reordered_or_repeated_chunks_are_refused() {
    let data = payload(3 * CHUNK_SIZE);
    for (name, codec) in framed_codecs() {
        let (header, frames) = split_frames(&encode(&codec, &data));
        let swapped = [
            header.clone(),
            frames[1].clone(),
            frames[0].clone(),
            frames[2].clone(),
        ]
        .concat();
        let result = decode(&codec, &data, &swapped);
        let needle = if codec.key.is_some() {
            "does not authenticate"
        } else {
            "hashes to"
        };
        assert_integrity(result, needle, name);
        let repeated = [
            header.clone(),
            frames[0].clone(),
            frames[0].clone(),
            frames[2].clone(),
        ]
        .concat();
        assert!(
            decode(&codec, &data, &repeated).is_err(),
            "{name}: a repeated chunk"
        );
        // The last chunk moved to the end of a shorter object: its flag says
        // "last" but its counter does not match.
        let early_end = [header.clone(), frames[0].clone(), frames[2].clone()].concat();
        assert!(
            decode(&codec, &data, &early_end).is_err(),
            "{name}: an early last chunk"
        );
    }
}

#[test]
fn bytes_after_the_last_chunk_are_refused() {
    let data = payload(1000);
    for (name, codec) in framed_codecs() {
        let mut object = encode(&codec, &data);
        object.extend_from_slice(b"trailing");
        assert_integrity(
            decode(&codec, &data, &object),
            "unexpected bytes after its last chunk",
            name,
        );
    }
}

#[test]
fn a_huge_length_prefix_is_refused_before_allocating() {
    let data = payload(1000);
    let codec = Codec {
        zstd: true,
        key: None,
    };
    let object = encode(&codec, &data);
    let (header, _) = split_frames(&object);
    let mut damaged = header.clone();
    damaged.extend_from_slice(&u32::MAX.to_le_bytes());
    damaged.extend_from_slice(&[0; 64]);
    assert_integrity(
        decode(&codec, &data, &damaged),
        "more than any chunk can take",
        "zstd",
    );
}

#[test]
fn a_wrong_key_fails_with_decryption_failed() {
    let data = payload(5000);
    let object = encode(
        &Codec {
            zstd: true,
            key: Some(key(1)),
        },
        &data,
    );
    let wrong = Codec {
        zstd: true,
        key: Some(key(2)),
    };
    assert_integrity(
        decode(&wrong, &data, &object),
        "decryption failed: the object was encrypted with another key",
        "wrong key",
    );
    let none = Codec::default();
    assert_integrity(
        decode(&none, &data, &object),
        "no key is configured",
        "no key",
    );
    // The key id is right but the key is not (the id field was forged).
    let mut forged = object.clone();
    let right_id = key(1).id;
    let wrong_id = key(2).id;
    let at = BASE_HEADER_LEN + SALT_LEN;
    assert_eq!(&forged[at..at + KEY_ID_LEN], &right_id);
    forged[at..at + KEY_ID_LEN].copy_from_slice(&wrong_id);
    assert_integrity(
        decode(&wrong, &data, &forged),
        "decryption failed: chunk 1 of 1 does not authenticate",
        "forged id",
    );
}

#[test]
fn a_header_for_another_size_is_refused() {
    let data = payload(1000);
    let codec = Codec {
        zstd: true,
        key: None,
    };
    let object = encode(&codec, &data);
    let other = payload(999);
    let result = decode_in(
        &codec,
        other.len(),
        &content_hash(&other),
        &object,
        100,
        Form::Detect,
    );
    assert_integrity(result, "header says the payload is 1000 bytes", "size");
}

#[test]
fn raw_objects_read_under_any_codec() {
    let data = payload(CHUNK_SIZE + 3);
    for (name, codec) in codecs() {
        let decoded = decode(&codec, &data, &data).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(decoded == data, "{name}");
    }
}

#[test]
fn a_raw_payload_that_starts_like_a_frame_header_still_reads() {
    let mut data = payload(500);
    data[..8].copy_from_slice(&MAGIC);
    let codec = Codec {
        zstd: true,
        key: None,
    };
    let decoded = decode(&codec, &data, &data).expect("raw bytes with the magic read as raw");
    assert!(decoded == data);

    // Worse: a raw payload whose first bytes are a complete, valid header of
    // its own size. Detection takes it as framed and fails asking for a raw
    // reading, which succeeds.
    let mut forged = codec.encode_all(&payload(500)).expect("encodes").concat();
    forged.resize(500, 7);
    let hash = content_hash(&forged);
    let detected = decode_in(&codec, forged.len(), &hash, &forged, 4096, Form::Detect);
    let err = detected.expect_err("garbage frames do not decode");
    assert!(err.retry_as_raw, "{}", err.message);
    let raw =
        decode_in(&codec, forged.len(), &hash, &forged, 4096, Form::Raw).expect("raw reading");
    assert!(raw == forged);
}

#[test]
fn a_raw_object_of_the_wrong_size_or_hash_is_refused() {
    let data = payload(100);
    let identity = Codec::default();
    let mut longer = data.clone();
    longer.push(0);
    assert_integrity(
        decode(&identity, &data, &longer),
        "has no frame header",
        "longer",
    );
    let mut flipped = data.clone();
    flipped[0] ^= 1;
    assert_integrity(decode(&identity, &data, &flipped), "hashes to", "flipped");
    // The object shrank after the size was read: more bytes than promised.
    let mut decoder = Decoder::new(&identity, 100, 100, Form::Detect).expect("decoder");
    decoder.push(&data).expect("whole payload");
    let err = decoder.push(b"x").expect_err("one byte too many");
    assert!(
        err.message.contains("longer than the payload"),
        "{}",
        err.message
    );
}

#[test]
fn encryption_keys_parse_from_hex_and_errors_never_echo_them() {
    let hexkey = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
    let parsed = EncryptionKey::from_hex(hexkey).expect("64 hex digits");
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = [
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ][i % 16];
    }
    assert_eq!(parsed.id, EncryptionKey::from_bytes(&bytes).id);
    let short = EncryptionKey::from_hex("abcd").expect_err("too short");
    assert!(
        short.contains("64 hex digits") && short.contains("not 4 characters"),
        "{short}"
    );
    let secretish = format!("{}zz", &hexkey[..62]);
    let not_hex = EncryptionKey::from_hex(&secretish).expect_err("not hex");
    assert!(
        !not_hex.contains(&secretish[..10]),
        "the error repeats the key: {not_hex}"
    );
    assert!(
        !format!("{parsed:?}").contains("0011"),
        "Debug shows only the key id"
    );
}
