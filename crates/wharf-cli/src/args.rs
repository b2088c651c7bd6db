//! The command line, as clap types.
//!
//! The shapes here are the CLI contract of DESIGN.md §7: scripts depend on the
//! flag names and defaults, so they change only with that document.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use uuid::Uuid;
use wharf_core::queue::{MAX_DEQUEUE_BATCH, MAX_VISIBILITY_TIMEOUT, MAX_WAIT};
use wharf_core::{ExpectedVersion, Receipt, Timestamp};

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
    /// Enqueue, dequeue, acknowledge and manage queue messages.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Store, fetch and clean up offloaded payloads (payload_offload at the server).
    #[command(subcommand, name = "payload-store")]
    PayloadStore(PayloadStoreCommand),
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
    /// Delete every event of a stream.
    ///
    /// The name can be appended to again, starting at version 0. Offloaded payloads that
    /// only these events referenced are deleted by the next payload cleanup. Prints
    /// `deleted N events from <stream>`; with --json, {"stream", "deleted"}.
    Delete(DeleteStreamArgs),
}

/// The data of a payload: exactly one of `--data` or `--data-file`.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// The payload, as text.
    #[arg(long, value_name = "TEXT", conflicts_with = "data_file")]
    pub data: Option<String>,
    /// Read the payload from a file, or from stdin when `-`.
    #[arg(long, value_name = "PATH")]
    pub data_file: Option<PathBuf>,
}

/// A payload to write: its data, with its metadata and content type.
#[derive(Debug, Args)]
pub struct PayloadArgs {
    /// The data.
    #[command(flatten)]
    pub data: DataArgs,
    /// Metadata entry; repeat for several.
    #[arg(long, value_name = "KEY=VALUE")]
    pub metadata: Vec<MetadataEntry>,
    /// MIME type of the payload.
    #[arg(long, value_name = "CT", default_value = "application/octet-stream")]
    pub content_type: String,
}

/// `wharf stream append`.
#[derive(Debug, Args)]
pub struct AppendArgs {
    /// The stream to append to.
    pub stream: String,
    /// The payload, its metadata and content type.
    #[command(flatten)]
    pub payload: PayloadArgs,
    /// Event type, e.g. OrderPlaced.
    #[arg(long = "type", value_name = "T", default_value = "event")]
    pub event_type: String,
    /// Only append if the stream is in this state: any, no-stream, exists, or the
    /// version of its last event.
    #[arg(long, value_name = "any|no-stream|exists|N", default_value = "any")]
    pub expected_version: ExpectedVersion,
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
    /// Show offloaded payloads as their reference (`external`) without fetching them.
    #[arg(long)]
    pub payload_references: bool,
}

/// `wharf stream delete`.
#[derive(Debug, Args)]
pub struct DeleteStreamArgs {
    /// The stream to delete.
    pub stream: String,
    /// Only delete if the stream is in this state: any, exists, or the version of its
    /// last event.
    #[arg(long, value_name = "any|exists|N", default_value = "any")]
    pub expected_version: ExpectedVersion,
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
    /// Show offloaded payloads as their reference (`external`) without fetching them.
    #[arg(long)]
    pub payload_references: bool,
}

/// `wharf stream position-at`.
#[derive(Debug, Args)]
pub struct PositionAtArgs {
    /// RFC 3339 time, e.g. 2026-11-21T10:00:00Z.
    #[arg(value_name = "TIMESTAMP", value_parser = timestamp)]
    pub at: Timestamp,
}

/// `wharf queue …`.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Create a queue with settings.
    ///
    /// Settings not given take the built-in defaults (5 delivery attempts, dead
    /// letters to `dlq`, visibility timeout 30s), not the server's configured ones,
    /// which a client cannot see. Creating a queue that exists with the same settings changes nothing (exit 0);
    /// with other settings it fails with exit 4. A queue also comes into being on its
    /// first enqueue, with the server's configured defaults.
    ///
    /// With --json, prints {"queue", "created", "settings"}.
    Create(CreateQueueArgs),
    /// Enqueue one message.
    ///
    /// The payload comes from exactly one of --data or --data-file (`-` reads stdin).
    /// Prints the message id; with --json, {"message_id", "duplicate"}, where duplicate
    /// is true when --dedup-id matched an enqueue within the last 5 minutes and nothing
    /// was added.
    Enqueue(EnqueueArgs),
    /// Receive up to --max messages, hiding them from other consumers for the
    /// visibility timeout.
    ///
    /// Prints one line per message: `<receipt> <message_id> <delivery_attempt>
    /// <enqueued_at> <payload>`; nothing when no message is visible. With --json,
    /// {"deliveries": [{"message_id", "receipt", "data" or "data_base64", "metadata",
    /// "content_type", "delivery_attempt", "enqueued_at"}]}, plus "external"
    /// ({"storage_type", "uri", "content_hash", "original_size", "stored_at"}) for an
    /// offloaded payload. A message whose payload cannot be retrieved is moved to its
    /// dead-letter queue by the server; dequeued from there it has "external" and no data.
    Dequeue(DequeueArgs),
    /// Acknowledge deliveries: their messages are deleted.
    ///
    /// Each receipt succeeds or fails on its own. When a receipt's lease was lost
    /// (the message was delivered again, acknowledged or dead-lettered) the others are
    /// still acknowledged and the command exits 4 naming the receipts that failed. With
    /// --json, prints {"acknowledged": [receipt…], "failed": [{"receipt", "error"}]}.
    Ack(AckArgs),
    /// Give a delivery back: visible again after --redeliver-after, or dead-lettered
    /// if it was the last attempt.
    ///
    /// A stale receipt exits 4. With --json, prints {"receipt", "redeliver_after"}.
    Nack(NackArgs),
    /// Keep a delivery invisible for TIMEOUT from now.
    ///
    /// A stale receipt exits 4. With --json, prints {"receipt", "visibility_timeout"}.
    Extend(ExtendArgs),
    /// Show what a queue holds and has done.
    ///
    /// With --json, prints {"queue", "visible", "in_flight", "delayed", "depth",
    /// "oldest_age_seconds", "dead_letters", "deliveries", "acks", "nacks",
    /// "dead_lettered"}, the names of the HTTP admin API.
    Stats(QueueArgs),
    /// Move the messages of a dead-letter queue back to the queues they came from,
    /// or all to --to.
    ///
    /// With --json, prints {"queue", "to", "moved"}.
    Redrive(RedriveArgs),
    /// Delete every message of a queue, keeping the queue.
    ///
    /// With --json, prints {"queue", "purged"}.
    Purge(QueueArgs),
    /// Delete a queue and its messages.
    ///
    /// With --json, prints {"queue", "deleted"}.
    Delete(QueueArgs),
    /// List every queue with its settings and statistics, by name.
    ///
    /// With --json, prints {"queues": [{"name", "settings", "stats"}]}, settings and
    /// stats as `queue create` and `queue stats` show them.
    List,
}

/// A verb that takes only the queue.
#[derive(Debug, Args)]
pub struct QueueArgs {
    /// The queue.
    pub queue: String,
}

/// `wharf queue create`.
#[derive(Debug, Args)]
pub struct CreateQueueArgs {
    /// The queue to create.
    pub queue: String,
    /// Most deliveries of one message before it is dead-lettered [default: 5].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_delivery_attempts: Option<u32>,
    /// Where messages go after their last failed delivery [default: dlq].
    #[arg(long, value_name = "Q", conflicts_with = "no_dead_letter_queue")]
    pub dead_letter_queue: Option<String>,
    /// Keep failed messages in the queue, delivering them without limit.
    #[arg(long)]
    pub no_dead_letter_queue: bool,
    /// How long a delivery stays invisible when a dequeue names no timeout, more than
    /// 0 and at most 12h [default: 30s].
    #[arg(long, value_name = "D", value_parser = visibility_timeout)]
    pub visibility_timeout: Option<Duration>,
}

/// `wharf queue enqueue`.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The queue; created with the server's defaults if it does not exist.
    pub queue: String,
    /// The payload, its metadata and content type.
    #[command(flatten)]
    pub payload: PayloadArgs,
    /// Keep the message invisible for this long after the enqueue, at most 12h.
    #[arg(long, value_name = "D", value_parser = delay)]
    pub delay: Option<Duration>,
    /// Makes a retry safe: a second enqueue with the same id within 5 minutes adds
    /// nothing and prints the first message's id.
    #[arg(long, value_name = "ID")]
    pub dedup_id: Option<String>,
}

/// `wharf queue dequeue`.
#[derive(Debug, Args)]
pub struct DequeueArgs {
    /// The queue.
    pub queue: String,
    /// How long the messages stay invisible, more than 0 and at most 12h; default:
    /// the queue's setting.
    #[arg(long, value_name = "D", value_parser = visibility_timeout)]
    pub visibility_timeout: Option<Duration>,
    /// Most messages to receive, 1 to 100.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_DEQUEUE_BATCH))
    )]
    pub max: u32,
    /// When no message is visible, wait up to this long (at most 20s) for one to
    /// become visible.
    #[arg(long, value_name = "D", value_parser = wait, default_value = "0s")]
    pub wait: Duration,
    /// Deliver offloaded payloads as their reference (`external`) without fetching
    /// them; a payload that cannot be retrieved then does not send its message to
    /// the dead-letter queue.
    #[arg(long)]
    pub payload_references: bool,
}

/// `wharf payload-store …`.
#[derive(Debug, Subcommand)]
pub enum PayloadStoreCommand {
    /// Delete stored payloads older than --older-than that no event or message references.
    ///
    /// Shows a progress line on a terminal and prints a summary at the end; with
    /// --json, {"scanned", "deleted", "bytes_freed", "kept_referenced", "dry_run"}.
    /// With --dry-run nothing is deleted: the counts say what would be.
    Cleanup(CleanupArgs),
    /// Store a payload; prints its reference.
    ///
    /// The payload comes from exactly one of --data or --data-file (`-` reads stdin).
    /// With --json, {"uri", "content_hash", "original_size", "storage_type",
    /// "stored_at"}. A payload no event references is deleted by a cleanup once it is
    /// old enough.
    Put(DataArgs),
    /// Fetch a stored payload by URI or SHA-256, verified.
    ///
    /// Writes the raw bytes to stdout, or to --output. With --json, {"data" or
    /// "data_base64", "uri", "content_hash", "original_size", "storage_type",
    /// "stored_at"} ("output" instead of the data with --output). A missing payload
    /// exits 3; one whose bytes do not match its hash exits 1.
    Get(GetPayloadArgs),
    /// Show how many payloads the store holds and their stored size.
    ///
    /// With --json, {"objects", "bytes", "storage_type"}.
    Stats,
}

/// `wharf payload-store cleanup`.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Only delete payloads stored at least this long ago, e.g. 7d, 12h, 0s.
    #[arg(long, value_name = "D", value_parser = duration)]
    pub older_than: Duration,
    /// Count what would be deleted without deleting anything.
    #[arg(long)]
    pub dry_run: bool,
}

/// `wharf payload-store get`.
#[derive(Debug, Args)]
pub struct GetPayloadArgs {
    /// The payload's URI (file://…, s3://…, gs://…) or its SHA-256 (64 hex digits).
    #[arg(value_name = "URI_OR_HASH")]
    pub target: String,
    /// Write the payload to FILE instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `wharf queue ack`.
#[derive(Debug, Args)]
pub struct AckArgs {
    /// The queue.
    pub queue: String,
    /// Receipts of the deliveries, as dequeue printed them; put `--` before
    /// receipts that begin with `-`.
    //  Not `allow_hyphen_values`: on a list it would also swallow the flags
    //  that follow, such as `--json`. Receipts Wharf issues today begin with
    //  `A`, so `--` is a fallback rather than a habit.
    #[arg(required = true, value_name = "RECEIPT")]
    pub receipts: Vec<Receipt>,
}

/// `wharf queue nack`.
#[derive(Debug, Args)]
pub struct NackArgs {
    /// The queue.
    pub queue: String,
    /// Receipt of the delivery.
    #[arg(allow_hyphen_values = true)]
    pub receipt: Receipt,
    /// Keep the message invisible for this long first, at most 12h.
    #[arg(long, value_name = "D", value_parser = delay, default_value = "0s")]
    pub redeliver_after: Duration,
    /// Why the delivery failed; kept as `LastError` if the message is dead-lettered.
    #[arg(long, value_name = "R")]
    pub reason: Option<String>,
}

/// `wharf queue extend`.
#[derive(Debug, Args)]
pub struct ExtendArgs {
    /// The queue.
    pub queue: String,
    /// Receipt of the delivery.
    #[arg(allow_hyphen_values = true)]
    pub receipt: Receipt,
    /// How long from now the message stays invisible, more than 0 and at most 12h.
    #[arg(value_name = "TIMEOUT", value_parser = visibility_timeout)]
    pub timeout: Duration,
}

/// `wharf queue redrive`.
#[derive(Debug, Args)]
pub struct RedriveArgs {
    /// The dead-letter queue to empty.
    pub dead_letter_queue: String,
    /// Move every message to this queue instead of the queue it came from.
    #[arg(long, value_name = "Q")]
    pub to: Option<String>,
}

/// Parses a humantime duration, naming the expected format when it is wrong.
fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{e}; expected a duration such as 500ms, 30s or 7d"))
}

/// A visibility timeout: more than 0 and at most 12h.
fn visibility_timeout(text: &str) -> Result<Duration, String> {
    let value = duration(text)?;
    if value.is_zero() || value > MAX_VISIBILITY_TIMEOUT {
        return Err("must be more than 0 and at most 12h".into());
    }
    Ok(value)
}

/// An enqueue delay or a nack's redelivery delay: at most 12h.
fn delay(text: &str) -> Result<Duration, String> {
    let value = duration(text)?;
    if value > MAX_VISIBILITY_TIMEOUT {
        return Err("must be at most 12h".into());
    }
    Ok(value)
}

/// A long-poll wait: at most 20s.
fn wait(text: &str) -> Result<Duration, String> {
    let value = duration(text)?;
    if value > MAX_WAIT {
        return Err("must be at most 20s".into());
    }
    Ok(value)
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

    fn queue_command(line: &str) -> Result<QueueCommand, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("wharf").chain(line.split_whitespace()))?;
        match cli.command {
            Command::Queue(command) => Ok(command),
            other => panic!("not a queue command: {other:?}"),
        }
    }

    #[test]
    fn receipts_beginning_with_a_hyphen_are_values_not_flags() {
        let Ok(QueueCommand::Ack(ack)) = queue_command("queue ack q --json -- -hAb --x_y cd")
        else {
            panic!("ack parses");
        };
        let receipts: Vec<&str> = ack.receipts.iter().map(Receipt::as_str).collect();
        assert_eq!(receipts, ["-hAb", "--x_y", "cd"]);
        let cli =
            Cli::try_parse_from(["wharf", "queue", "ack", "q", "r1", "r2", "--json"]).unwrap();
        assert!(cli.global.json, "a flag after the receipts is still a flag");

        let Ok(QueueCommand::Nack(nack)) = queue_command("queue nack q -Zz --reason boom") else {
            panic!("nack parses");
        };
        assert_eq!(nack.receipt.as_str(), "-Zz");
        assert_eq!(nack.reason.as_deref(), Some("boom"));
        let cli = Cli::try_parse_from(["wharf", "queue", "nack", "q", "-Zz", "--json"]).unwrap();
        assert!(
            cli.global.json,
            "a flag after a single receipt is still a flag"
        );
        let Ok(QueueCommand::Extend(extend)) = queue_command("queue extend q -Zz 90s") else {
            panic!("extend parses");
        };
        assert_eq!(
            (extend.receipt.as_str(), extend.timeout),
            ("-Zz", Duration::from_secs(90))
        );
    }

    #[test]
    fn dequeue_defaults_to_one_message_without_waiting() {
        let Ok(QueueCommand::Dequeue(dequeue)) = queue_command("queue dequeue q") else {
            panic!("dequeue parses");
        };
        assert_eq!(dequeue.max, 1);
        assert_eq!(dequeue.wait, Duration::ZERO);
        assert_eq!(dequeue.visibility_timeout, None);
    }

    #[test]
    fn queue_durations_and_counts_out_of_bounds_are_usage_errors() {
        let cases = [
            ("queue dequeue q --max 0", "0 is not in 1..=100"),
            ("queue dequeue q --max 101", "101 is not in 1..=100"),
            ("queue dequeue q --wait 21s", "at most 20s"),
            (
                "queue dequeue q --visibility-timeout 0s",
                "more than 0 and at most 12h",
            ),
            (
                "queue dequeue q --visibility-timeout 13h",
                "more than 0 and at most 12h",
            ),
            (
                "queue dequeue q --wait soon",
                "expected a duration such as 500ms",
            ),
            ("queue enqueue q --data x --delay 13h", "at most 12h"),
            ("queue nack q r --redeliver-after 1y", "at most 12h"),
            ("queue extend q r 0ms", "more than 0 and at most 12h"),
            (
                "queue create q --max-delivery-attempts 0",
                "--max-delivery-attempts",
            ),
            (
                "queue create q --dead-letter-queue d --no-dead-letter-queue",
                "cannot be used",
            ),
        ];
        for (line, expected) in cases {
            let err = queue_command(line).expect_err(line).to_string();
            assert!(err.contains(expected), "{line}: {err}");
        }
        assert!(
            queue_command("queue dequeue q --max 100 --wait 20s --visibility-timeout 12h").is_ok()
        );
    }

    #[test]
    fn payload_store_cleanup_takes_a_humantime_age() {
        let cli = Cli::try_parse_from([
            "wharf",
            "payload-store",
            "cleanup",
            "--older-than",
            "7d",
            "--dry-run",
        ])
        .unwrap();
        let Command::PayloadStore(PayloadStoreCommand::Cleanup(args)) = cli.command else {
            panic!("a cleanup");
        };
        assert_eq!(args.older_than, Duration::from_secs(7 * 86_400));
        assert!(args.dry_run);
        let err = Cli::try_parse_from(["wharf", "payload-store", "cleanup", "--older-than", "7x"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("7x"), "{err}");
        assert!(
            Cli::try_parse_from(["wharf", "payload-store", "cleanup"]).is_err(),
            "--older-than is required"
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
