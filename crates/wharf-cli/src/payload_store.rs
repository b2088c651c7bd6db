//! `wharf payload-store …`: the server's payload store (payload offloading),
//! over the gRPC client.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use wharf_client::{CleanupReport, PayloadLocator};

use crate::args::{CleanupArgs, DataArgs, GetPayloadArgs, GlobalArgs, PayloadStoreCommand};
use crate::connect::connect;
use crate::input::Source;
use crate::output::{self, Format};

/// Runs one payload-store verb.
///
/// # Errors
/// The domain error of the call (which decides the exit code), or why the
/// arguments, the payload or the output file could not be used.
pub async fn run(command: PayloadStoreCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let format = Format::from_json_flag(global.json);
    let server = global.server.as_str();
    match command {
        PayloadStoreCommand::Cleanup(args) => cleanup(args, server, format).await,
        PayloadStoreCommand::Put(args) => put(args, server, format).await,
        PayloadStoreCommand::Get(args) => get(args, server, format).await,
        PayloadStoreCommand::Stats => stats(server, format).await,
    }
}

/// A spinner with the counts so far, on stderr when it is a terminal (so
/// scripts and logs see only the summary).
fn progress_bar() -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{spinner} cleaning up payloads: {msg} [{elapsed}]")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(100));
    Some(bar)
}

/// The counts of a cleanup for people.
fn counts(r: &CleanupReport) -> String {
    let (verb, freed) = if r.dry_run {
        ("would delete", "")
    } else {
        ("deleted", " freed")
    };
    format!(
        "{verb} {} of {} scanned ({}{freed}), kept {} still referenced",
        r.deleted,
        r.scanned,
        HumanBytes(r.bytes_freed),
        r.kept_referenced
    )
}

async fn cleanup(args: CleanupArgs, server: &str, format: Format) -> anyhow::Result<()> {
    let client = connect(server).await?;
    let bar = progress_bar();
    let report = client
        .payload_cleanup(args.older_than, args.dry_run, |r| {
            if let Some(bar) = &bar {
                bar.set_message(counts(r));
            }
        })
        .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let r = report?;
    match format {
        Format::Json => output::json(&json!({
            "scanned": r.scanned,
            "deleted": r.deleted,
            "bytes_freed": r.bytes_freed,
            "kept_referenced": r.kept_referenced,
            "dry_run": r.dry_run,
        })),
        Format::Human if r.dry_run => {
            output::line(format_args!("dry run, nothing deleted: {}", counts(&r)))
        }
        Format::Human => output::line(counts(&r)),
    }
}

async fn put(args: DataArgs, server: &str, format: Format) -> anyhow::Result<()> {
    let source = Source::try_from(args)?;
    let data = source.read().await?;
    let size = data.len() as u64;
    let client = connect(server).await?;
    let reference = client.payload_put(data).await?;
    match format {
        Format::Json => output::json(&output::reference_json(&reference)),
        Format::Human => output::line(format_args!(
            "stored {} ({}, sha256 {})",
            reference.uri,
            HumanBytes(size),
            reference.content_hash
        )),
    }
}

async fn get(args: GetPayloadArgs, server: &str, format: Format) -> anyhow::Result<()> {
    let locator: PayloadLocator = args.target.parse()?;
    let client = connect(server).await?;
    let fetched = client.payload_get(locator).await?;
    if let Some(path) = &args.output {
        tokio::fs::write(path, &fetched.data)
            .await
            .with_context(|| format!("cannot write the payload to {}", path.display()))?;
    }
    match (format, &args.output) {
        (Format::Json, output) => {
            let mut value = output::reference_json(&fetched.reference);
            if let Value::Object(object) = &mut value {
                match output {
                    Some(path) => {
                        object.insert("output".into(), json!(path.display().to_string()));
                    }
                    None => output::insert_data(object, &fetched.data),
                }
            }
            output::json(&value)
        }
        (Format::Human, Some(path)) => output::line(format_args!(
            "wrote {} to {} from {}",
            HumanBytes(fetched.data.len() as u64),
            path.display(),
            fetched.reference.uri
        )),
        (Format::Human, None) => output::raw(&fetched.data),
    }
}

async fn stats(server: &str, format: Format) -> anyhow::Result<()> {
    let client = connect(server).await?;
    let stats = client.payload_stats().await?;
    match format {
        Format::Json => output::json(&json!({
            "objects": stats.objects,
            "bytes": stats.bytes,
            "storage_type": stats.storage_type.as_str(),
        })),
        Format::Human => output::line(format_args!(
            "{} payload store: {} object{}, {}",
            stats.storage_type,
            stats.objects,
            if stats.objects == 1 { "" } else { "s" },
            HumanBytes(stats.bytes)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_say_what_was_and_would_be_deleted() {
        let mut r = CleanupReport {
            scanned: 10,
            deleted: 3,
            bytes_freed: 5 << 20,
            kept_referenced: 2,
            dry_run: false,
        };
        assert_eq!(
            counts(&r),
            "deleted 3 of 10 scanned (5.00 MiB freed), kept 2 still referenced"
        );
        r.dry_run = true;
        assert_eq!(
            counts(&r),
            "would delete 3 of 10 scanned (5.00 MiB), kept 2 still referenced"
        );
    }
}
