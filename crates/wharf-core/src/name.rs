//! Validated names of streams and queues.

use std::fmt;
use std::str::FromStr;

/// The longest name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 256;

/// Why a name was rejected; each variant names the rule that was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name has no characters.
    #[error("name must not be empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_BYTES`].
    #[error("name is {len} bytes; the limit is {MAX_NAME_BYTES} bytes of UTF-8")]
    TooLong {
        /// Length of the rejected name in bytes.
        len: usize,
    },
    /// The name contains a control character.
    #[error("name contains a control character at byte {at}")]
    ControlCharacter {
        /// Byte offset of the first control character.
        at: usize,
    },
    /// The name starts with `$`, which is reserved for Wharf's own streams.
    #[error("names starting with `$` are reserved for Wharf itself")]
    Reserved,
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            #[doc = concat!("Validates `name` as a ", $kind, " name.")]
            ///
            /// # Errors
            /// The [`NameError`] naming the rule the name breaks.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                validate(&name)?;
                Ok(Self(name))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Consumes the name, returning the underlying string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// The name of an event stream: 1–256 bytes of UTF-8, no control characters,
    /// not starting with `$`.
    ///
    /// ```
    /// use wharf_core::StreamName;
    /// let name: StreamName = "order-42".parse().unwrap();
    /// assert_eq!(name.as_str(), "order-42");
    /// assert!("$system".parse::<StreamName>().is_err());
    /// ```
    StreamName,
    "stream"
);

name_type!(
    /// The name of a queue: the same rules as a [`StreamName`].
    ///
    /// ```
    /// use wharf_core::QueueName;
    /// let name: QueueName = "email-queue".parse().unwrap();
    /// assert_eq!(name.to_string(), "email-queue");
    /// ```
    #[derive(serde::Serialize, serde::Deserialize)]
    #[serde(try_from = "String", into = "String")]
    QueueName,
    "queue"
);

fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong { len: name.len() });
    }
    if let Some((at, _)) = name.char_indices().find(|(_, c)| c.is_control()) {
        return Err(NameError::ControlCharacter { at });
    }
    if name.starts_with('$') {
        return Err(NameError::Reserved);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_name_is_rejected() {
        assert_eq!(StreamName::new(""), Err(NameError::Empty));
    }

    #[test]
    fn name_of_256_bytes_is_accepted_and_257_rejected() {
        assert!(StreamName::new("a".repeat(256)).is_ok());
        assert_eq!(
            StreamName::new("a".repeat(257)),
            Err(NameError::TooLong { len: 257 })
        );
    }

    #[test]
    fn multibyte_length_is_counted_in_bytes() {
        // 86 three-byte characters = 258 bytes.
        assert!(matches!(
            StreamName::new("€".repeat(86)),
            Err(NameError::TooLong { len: 258 })
        ));
    }

    #[test]
    fn control_characters_are_rejected_with_their_offset() {
        assert_eq!(
            StreamName::new("ab\ncd"),
            Err(NameError::ControlCharacter { at: 2 })
        );
        assert!(StreamName::new("tab\there").is_err());
    }

    #[test]
    fn dollar_prefix_is_reserved() {
        assert_eq!(StreamName::new("$all"), Err(NameError::Reserved));
        assert!(StreamName::new("a$b").is_ok());
    }
}
