//! Payloads given on the command line, shared by `stream append`,
//! `queue enqueue` and `payload-store put`: text, a file or stdin, with
//! metadata and content type.
//!
//! A file is read with one allocation of its size (so a 100 MiB payload is
//! one 100 MiB buffer, handed on without copying).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::args::{DataArgs, PayloadArgs};
use crate::exit::UsageError;

/// A payload whose flags were checked but whose data is not read yet, so a
/// command can reject its other arguments before it consumes stdin.
pub struct Payload {
    source: Source,
    metadata: BTreeMap<String, String>,
    content_type: String,
}

/// Where the data comes from.
pub enum Source {
    /// `--data TEXT`.
    Text(String),
    /// `--data-file PATH`, stdin when `-`.
    File(PathBuf),
}

/// A payload read in full.
pub struct Body {
    /// The data.
    pub data: Bytes,
    /// The `--metadata` entries.
    pub metadata: BTreeMap<String, String>,
    /// The `--content-type`.
    pub content_type: String,
}

impl TryFrom<PayloadArgs> for Payload {
    type Error = UsageError;

    /// Checks that exactly one source is given and no metadata key repeats.
    fn try_from(args: PayloadArgs) -> Result<Self, UsageError> {
        let source = Source::try_from(args.data)?;
        let mut metadata = BTreeMap::new();
        for entry in args.metadata {
            if metadata.contains_key(&entry.key) {
                return Err(UsageError(format!(
                    "metadata key `{}` is given twice",
                    entry.key
                )));
            }
            metadata.insert(entry.key, entry.value);
        }
        Ok(Self {
            source,
            metadata,
            content_type: args.content_type,
        })
    }
}

impl TryFrom<DataArgs> for Source {
    type Error = UsageError;

    /// Checks that exactly one source is given.
    fn try_from(args: DataArgs) -> Result<Self, UsageError> {
        match (args.data, args.data_file) {
            (Some(text), _) => Ok(Self::Text(text)),
            (None, Some(path)) => Ok(Self::File(path)),
            (None, None) => Err(UsageError(
                "give the payload with --data TEXT or --data-file PATH (`-` for stdin)".into(),
            )),
        }
    }
}

impl Source {
    /// Reads the data: the text, the file's bytes, or stdin's for `-`.
    ///
    /// # Errors
    /// Why the file or stdin could not be read, naming the file.
    pub async fn read(self) -> anyhow::Result<Bytes> {
        match self {
            Self::Text(text) => Ok(Bytes::from(text)),
            Self::File(path) => read_file(&path).await,
        }
    }
}

impl Payload {
    /// Reads the data: the text, the file's bytes, or stdin's for `-`.
    ///
    /// # Errors
    /// Why the file or stdin could not be read, naming the file.
    pub async fn read(self) -> anyhow::Result<Body> {
        Ok(Body {
            data: self.source.read().await?,
            metadata: self.metadata,
            content_type: self.content_type,
        })
    }
}

async fn read_file(path: &Path) -> anyhow::Result<Bytes> {
    if path == Path::new("-") {
        let mut data = Vec::new();
        tokio::io::stdin()
            .read_to_end(&mut data)
            .await
            .context("cannot read the payload from stdin")?;
        Ok(data.into())
    } else {
        let data = tokio::fs::read(path)
            .await
            .with_context(|| format!("cannot read data file {}", path.display()))?;
        Ok(data.into())
    }
}
