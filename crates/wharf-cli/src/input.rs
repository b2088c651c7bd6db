//! Payloads given on the command line, shared by `stream append` and
//! `queue enqueue`: text, a file or stdin, with metadata and content type.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::args::PayloadArgs;
use crate::exit::UsageError;

/// A payload whose flags were checked but whose data is not read yet, so a
/// command can reject its other arguments before it consumes stdin.
pub struct Payload {
    source: Source,
    metadata: BTreeMap<String, String>,
    content_type: String,
}

/// Where the data comes from.
enum Source {
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
        let source = match (args.data, args.data_file) {
            (Some(text), _) => Source::Text(text),
            (None, Some(path)) => Source::File(path),
            (None, None) => {
                return Err(UsageError(
                    "give the payload with --data TEXT or --data-file PATH (`-` for stdin)".into(),
                ));
            }
        };
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

impl Payload {
    /// Reads the data: the text, the file's bytes, or stdin's for `-`.
    ///
    /// # Errors
    /// Why the file or stdin could not be read, naming the file.
    pub async fn read(self) -> anyhow::Result<Body> {
        let data = match self.source {
            Source::Text(text) => Bytes::from(text),
            Source::File(path) => read_file(&path).await?,
        };
        Ok(Body {
            data,
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
