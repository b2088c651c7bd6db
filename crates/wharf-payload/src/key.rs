//! Object keys: `{prefix}{sha256-hex}.bin`.
//!
//! The key is the only index the store has: listing, the reaper and
//! deduplication all read the hash back out of it, so anything under the
//! prefix that is not exactly 64 lower-case hex digits and `.bin` is someone
//! else's object and is left alone.

use object_store::path::Path;
use wharf_core::{ContentHash, Error, Result};

/// What follows the hex digest in every key.
pub(crate) const SUFFIX: &str = ".bin";

/// A key prefix: empty, or `segment/…/` with a trailing slash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Prefix(String);

impl Prefix {
    /// Normalises a configured prefix: surrounding slashes are dropped and one
    /// trailing slash added, so `events`, `events/` and `/events/` all mean
    /// the folder `events/`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `config_key` when a segment is empty,
    /// `.` or `..`, or uses a character outside `A-Z a-z 0-9 - . _ ~ =`
    /// (keys end up in URIs and presigned URLs unescaped).
    pub(crate) fn parse(raw: &str, config_key: &str) -> Result<Self> {
        let trimmed = raw.trim_matches('/');
        if trimmed.is_empty() {
            return Ok(Self(String::new()));
        }
        let invalid = |why: &str| {
            Error::InvalidArgument(format!(
                "`{config_key}` = `{raw}` is not a valid key prefix: {why}"
            ))
        };
        for segment in trimmed.split('/') {
            if segment.is_empty() {
                return Err(invalid("it has an empty segment (`//`)"));
            }
            if segment == "." || segment == ".." {
                return Err(invalid("`.` and `..` segments are not allowed"));
            }
            if let Some(c) = segment
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '=')))
            {
                return Err(invalid(&format!(
                    "character {c:?} is not allowed (use A-Z a-z 0-9 - . _ ~ = and /)"
                )));
            }
        }
        Ok(Self(format!("{trimmed}/")))
    }

    /// The prefix as it precedes a digest: empty or ending in `/`.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The folder to list, `None` for the whole store.
    pub(crate) fn folder(&self) -> Option<Path> {
        let folder = self.0.trim_end_matches('/');
        (!folder.is_empty()).then(|| Path::from_iter(folder.split('/')))
    }

    /// The key of `hash`.
    pub(crate) fn key(&self, hash: &ContentHash) -> Path {
        let name = object_name(hash);
        match self.folder() {
            None => Path::from(name),
            Some(folder) => folder.join(name),
        }
    }

    /// The hash a key under this prefix names, or `None` for a key that is
    /// not a payload object of this prefix (another folder, a nested key, a
    /// temporary file, upper-case hex).
    pub(crate) fn hash_of(&self, key: &Path) -> Option<ContentHash> {
        key.as_ref()
            .strip_prefix(self.0.as_str())
            .and_then(parse_object_name)
    }
}

/// `{hex}.bin`.
pub(crate) fn object_name(hash: &ContentHash) -> String {
    let mut name = hash.to_hex();
    name.push_str(SUFFIX);
    name
}

/// The hash named by exactly 64 lower-case hex digits followed by `.bin`.
pub(crate) fn parse_object_name(name: &str) -> Option<ContentHash> {
    let hex = name.strip_suffix(SUFFIX)?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    hex.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash() -> ContentHash {
        ContentHash([0xab; 32])
    }

    #[test]
    fn prefixes_are_normalised_to_one_trailing_slash() {
        for raw in ["events", "events/", "/events/", "events//"] {
            let prefix = Prefix::parse(raw, "k").expect("valid prefix");
            assert_eq!(prefix.as_str(), "events/", "{raw}");
        }
        assert_eq!(Prefix::parse("", "k").expect("empty").as_str(), "");
        assert_eq!(Prefix::parse("/", "k").expect("slash").as_str(), "");
        assert_eq!(Prefix::parse("a/b", "k").expect("nested").as_str(), "a/b/");
    }

    #[test]
    fn bad_prefixes_are_refused_naming_the_config_key() {
        for raw in ["a//b", "a/../b", "./a", "a b", "ä", "a?b", "a#b"] {
            let err = Prefix::parse(raw, "payload_offload.s3.prefix").expect_err(raw);
            assert!(
                matches!(&err, Error::InvalidArgument(m) if m.contains("payload_offload.s3.prefix")),
                "{raw}: {err}"
            );
        }
    }

    #[test]
    fn keys_put_the_digest_under_the_prefix() {
        let hex = hash().to_hex();
        let none = Prefix::default();
        assert_eq!(none.key(&hash()).as_ref(), format!("{hex}.bin"));
        let nested = Prefix::parse("a/b", "k").expect("valid");
        assert_eq!(nested.key(&hash()).as_ref(), format!("a/b/{hex}.bin"));
        assert_eq!(nested.folder().expect("folder").as_ref(), "a/b");
        assert_eq!(none.folder(), None);
    }

    #[test]
    fn only_payload_keys_of_the_prefix_parse_back() {
        let hex = hash().to_hex();
        let prefix = Prefix::parse("events", "k").expect("valid");
        let parse = |key: &str| prefix.hash_of(&Path::from(key));
        assert_eq!(parse(&format!("events/{hex}.bin")), Some(hash()));
        assert_eq!(parse(&format!("other/{hex}.bin")), None);
        assert_eq!(parse(&format!("events/sub/{hex}.bin")), None);
        assert_eq!(parse(&format!("events/{hex}.bin.tmp")), None);
        assert_eq!(parse(&format!("events/{}.bin", hex.to_uppercase())), None);
        assert_eq!(parse(&format!("events/{}.bin", &hex[..63])), None);
        assert_eq!(parse("events/readme.txt"), None);
        assert_eq!(parse_object_name(&format!("{hex}.bin")), Some(hash()));
        assert_eq!(parse_object_name(&format!("{hex}.BIN")), None);
        assert_eq!(parse_object_name(&format!(".{hex}.bin")), None);
    }
}
