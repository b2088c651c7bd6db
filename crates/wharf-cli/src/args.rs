//! The command line, as clap types.
//!
//! The shapes here are the CLI contract of DESIGN.md §7: scripts depend on the
//! flag names and defaults, so they change only with that document.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand};
use uuid::Uuid;
use wharf_core::{ExpectedVersion, Timestamp};

/// Wharf: an event streaming server, and the tool to talk to it.
#[derive(Debug, Parser)]
#[command(name = "wharf", version)]
pub struct Cli {
    /// Flags every subcommand accepts.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags that mean the same on every subcommand.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// URL of the server's gRPC API (`http://` is assumed without a scheme).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "WHARF_SERVER",
        value_name = "URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// URL of the server's HTTP admin API.
    //  Accepted now so scripts can pass it; the admin verbs will use it.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "WHARF_ADMIN",
        value_name = "URL",
        default_value = "http://127.0.0.1:9099"
    )]
    pub admin: String,
    /// Bearer token for the server.
    //  Accepted now so scripts can pass it; sent once the server authenticates (§8).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "WHARF_TOKEN",
        value_name = "T",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Print one JSON document on stdout instead of text for humans.
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: gRPC API, HTTP admin API and metrics.
    ///
    /// Without --config it uses the defaults: an embedded store in ./wharf-data, gRPC on
    /// 127.0.0.1:50051, HTTP admin on 127.0.0.1:9099. Every key can be overridden by an
    /// environment variable WHARF_<SECTION>__<KEY>, e.g.
    /// WHARF_SERVER__GRPC_LISTEN=127.0.0.1:6000. Logs go to stderr, filtered by RUST_LOG
    /// (default `info`). Stops cleanly on SIGTERM or Ctrl-C; a second signal exits at once.
    /// With --json, prints {"grpc_addr", "http_addr"} once listening.
    Serve(ServeArgs),
    /// Append to, read and follow event streams.
    #[command(subcommand)]
    Stream(StreamCommand),
}

/// `wharf serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// YAML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Load and validate the configuration, print a summary and exit without serving.
    #[arg(long)]
    pub check_config: bool,
}

/// `wharf stream …`.
#[derive(Debug, Subcommand)]
pub enum StreamCommand {
    /// Append one event to a stream.
    ///
    /// The payload comes from exactly one of --data or --data-file (`-` reads stdin).
    /// Giving --id makes a retry safe: appending the same event again reports a duplicate
    /// instead of writing it twice.
    ///
    /// Prints `appended to <stream> at version V (position P)`; with --json,
    /// {"stream", "first_version", "last_version", "first_position", "last_position",
    /// "duplicate"}.
    Append(AppendArgs),
    /// Read the events of one stream.
    Read(ReadArgs),
    /// Follow the global log: the backlog, then live events as they commit.
    ///
    /// It starts at --from-position (default 0, the whole log; `wharf stream position-at`
    /// finds where a time begins) and runs until --limit events were printed, or until Ctrl-C
    /// or SIGTERM (exit 0).
    ///
    /// Because a tail has no end, --json prints one JSON document per event, one per line
    /// (JSON Lines), rather than a single document.
    Tail(TailArgs),
    /// Find the first position committed at or after a time.
    PositionAt(PositionAtArgs),
}

/// `wharf stream append`.
#[derive(Debug, Args)]
pub struct AppendArgs {
    /// The stream to append to.
    pub stream: String,
    /// The payload, as text.
    #[arg(long, value_name = "TEXT", conflicts_with = "data_file")]
    pub data: Option<String>,
    /// Read the payload from a file, or from stdin when `-`.
    #[arg(long, value_name = "PATH")]
    pub data_file: Option<PathBuf>,
    /// Event type, e.g. OrderPlaced.
    #[arg(long = "type", value_name = "T", default_value = "event")]
    pub event_type: String,
    /// Only append if the stream is in this state: any, no-stream, exists, or the
    /// version of its last event.
    #[arg(long, value_name = "any|no-stream|exists|N", default_value = "any")]
    pub expected_version: ExpectedVersion,
    /// Metadata entry; repeat for several.
    #[arg(long, value_name = "KEY=VALUE")]
    pub metadata: Vec<MetadataEntry>,
    /// MIME type of the payload.
    #[arg(long, value_name = "CT", default_value = "application/octet-stream")]
    pub content_type: String,
    /// Event id; a fresh time-ordered UUID when absent.
    #[arg(long, value_name = "UUID")]
    pub id: Option<Uuid>,
}

/// `wharf stream read`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The stream to read.
    pub stream: String,
    /// First version to read (inclusive); default: the first event, or the last
    /// with --backwards.
    #[arg(long, value_name = "N")]
    pub from: Option<u64>,
    /// Read towards older events.
    #[arg(long)]
    pub backwards: bool,
    /// Read at most N events; default: all.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
}

/// `wharf stream tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Global position to start at (inclusive).
    #[arg(long, value_name = "P", default_value_t = 0)]
    pub from_position: u64,
    /// Only streams whose name starts with P.
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,
    /// Only events of this type; repeat for several.
    #[arg(long = "type", value_name = "T")]
    pub event_types: Vec<String>,
    /// Stop after N events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
}

/// `wharf stream position-at`.
#[derive(Debug, Args)]
pub struct PositionAtArgs {
    /// RFC 3339 time, e.g. 2026-11-21T10:00:00Z.
    #[arg(value_name = "TIMESTAMP", value_parser = timestamp)]
    pub at: Timestamp,
}

/// Parses a timestamp argument, naming the expected format when it is wrong.
fn timestamp(text: &str) -> Result<Timestamp, String> {
    text.parse()
        .map_err(|e| format!("{e}; expected an RFC 3339 timestamp such as 2026-11-21T10:00:00Z"))
}

/// One `--metadata KEY=VALUE` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataEntry {
    /// Before the first `=`; never empty.
    pub key: String,
    /// After the first `=`; may be empty and may contain `=`.
    pub value: String,
}

/// Why a `--metadata` argument was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataEntryError(String);

impl fmt::Display for MetadataEntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "expected KEY=VALUE with a non-empty KEY, got `{}`",
            self.0
        )
    }
}

impl std::error::Error for MetadataEntryError {}

impl FromStr for MetadataEntry {
    type Err = MetadataEntryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok(Self {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
            _ => Err(MetadataEntryError(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn metadata_splits_at_the_first_equals_sign() {
        let e: MetadataEntry = "trace=a=b".parse().unwrap();
        assert_eq!((e.key.as_str(), e.value.as_str()), ("trace", "a=b"));
        let empty: MetadataEntry = "k=".parse().unwrap();
        assert_eq!(empty.value, "");
    }

    #[test]
    fn metadata_without_key_or_equals_is_rejected() {
        assert!("novalue".parse::<MetadataEntry>().is_err());
        assert!("=v".parse::<MetadataEntry>().is_err());
    }

    #[test]
    fn malformed_timestamp_names_the_expected_format() {
        let err = timestamp("yesterday").unwrap_err();
        assert!(err.contains("RFC 3339"), "{err}");
        assert_eq!(
            timestamp("2026-11-21T10:00:00Z").unwrap().to_string(),
            "2026-11-21T10:00:00.000000Z"
        );
    }

    #[test]
    fn global_flags_are_accepted_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "wharf",
            "stream",
            "read",
            "s",
            "--json",
            "--server",
            "http://h:1",
        ])
        .unwrap();
        assert!(cli.global.json);
        assert_eq!(cli.global.server, "http://h:1");
    }
}
