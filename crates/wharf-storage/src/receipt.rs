//! Receipts as backends issue them: which message, which attempt, and a
//! keyed tag so a receipt cannot be forged or used on another queue.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use wharf_core::{Error, QueueName, Receipt, Result};

/// Bytes of a receipt before encoding: seq 8, id 16, attempt 4, tag 8.
const RECEIPT_BYTES: usize = 36;

/// What a receipt names: one delivery attempt of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptParts {
    /// The backend's key of the message (its place in the queue).
    pub seq: u64,
    /// The message's id.
    pub message_id: Uuid,
    /// The delivery attempt, from 1.
    pub attempt: u32,
}

/// Issues and checks receipts with a store's secret key.
#[derive(Clone)]
pub struct ReceiptKey([u8; 32]);

impl std::fmt::Debug for ReceiptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReceiptKey(..)")
    }
}

impl ReceiptKey {
    /// A key from 32 secret bytes the store keeps with its data.
    pub fn new(secret: [u8; 32]) -> Self {
        Self(secret)
    }

    fn tag(&self, queue: &QueueName, body: &[u8]) -> [u8; 8] {
        let mut hasher = Sha256::new();
        hasher.update(self.0);
        hasher.update((queue.as_str().len() as u32).to_be_bytes());
        hasher.update(queue.as_str());
        hasher.update(body);
        let digest = hasher.finalize();
        let mut tag = [0; 8];
        tag.copy_from_slice(&digest[..8]);
        tag
    }

    /// The receipt of `parts` for `queue`.
    pub fn issue(&self, queue: &QueueName, parts: ReceiptParts) -> Receipt {
        let mut bytes = [0u8; RECEIPT_BYTES];
        bytes[..8].copy_from_slice(&parts.seq.to_be_bytes());
        bytes[8..24].copy_from_slice(parts.message_id.as_bytes());
        bytes[24..28].copy_from_slice(&parts.attempt.to_be_bytes());
        let tag = self.tag(queue, &bytes[..28]);
        bytes[28..].copy_from_slice(&tag);
        Receipt::new(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// What `receipt` names, if this key issued it for `queue`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for text that is not a receipt, or one not
    /// issued for `queue` by this store.
    pub fn check(&self, queue: &QueueName, receipt: &Receipt) -> Result<ReceiptParts> {
        let malformed = || {
            Error::InvalidArgument(format!(
                "malformed receipt `{}`: not a receipt Wharf issued",
                shorten(receipt.as_str())
            ))
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(receipt.as_str())
            .map_err(|_| malformed())?;
        let bytes: [u8; RECEIPT_BYTES] = bytes.try_into().map_err(|_| malformed())?;
        if self.tag(queue, &bytes[..28]) != bytes[28..] {
            return Err(Error::InvalidArgument(format!(
                "receipt `{}` was not issued by queue `{queue}`",
                shorten(receipt.as_str())
            )));
        }
        let seq = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        let message_id = Uuid::from_bytes(bytes[8..24].try_into().expect("16 bytes"));
        let attempt = u32::from_be_bytes(bytes[24..28].try_into().expect("4 bytes"));
        Ok(ReceiptParts {
            seq,
            message_id,
            attempt,
        })
    }
}

/// The first characters of untrusted text, for an error message.
fn shorten(text: &str) -> String {
    const SHOWN: usize = 64;
    match text.char_indices().nth(SHOWN) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> ReceiptParts {
        ReceiptParts {
            seq: 42,
            message_id: Uuid::now_v7(),
            attempt: 3,
        }
    }

    #[test]
    fn an_issued_receipt_checks_out() {
        let key = ReceiptKey::new([7; 32]);
        let q: QueueName = "jobs".parse().unwrap();
        let p = parts();
        assert_eq!(key.check(&q, &key.issue(&q, p)).unwrap(), p);
    }

    #[test]
    fn forged_foreign_and_malformed_receipts_are_refused() {
        let key = ReceiptKey::new([7; 32]);
        let q: QueueName = "jobs".parse().unwrap();
        let other: QueueName = "other".parse().unwrap();
        let issued = key.issue(&q, parts());
        let err = key.check(&other, &issued).unwrap_err().to_string();
        assert!(err.contains("not issued by queue `other`"), "{err}");
        let forged = ReceiptKey::new([8; 32]).issue(&q, parts());
        assert!(key.check(&q, &forged).is_err());
        for junk in ["", "not a receipt!", "AAAA", &"A".repeat(500)] {
            let err = key.check(&q, &Receipt::new(junk)).unwrap_err().to_string();
            assert!(err.starts_with("malformed receipt"), "{err}");
        }
    }
}
