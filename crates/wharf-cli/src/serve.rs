//! `wharf serve`: runs the server until SIGTERM or Ctrl-C.
//!
//! Every failure to start — a bad configuration, a locked data directory, a
//! port in use — exits 1 with one line naming the file, key, path or address;
//! a clean stop after a signal exits 0.

use std::io::IsTerminal;

use anyhow::Context;
use serde_json::json;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use wharf_core::{Config, Durability, PayloadStorageType, StorageConfig};
use wharf_server::Server;

use crate::args::ServeArgs;
use crate::output::{self, Format};
use crate::signals::Signals;

/// Runs `wharf serve`.
///
/// # Errors
/// Why the configuration could not be loaded or the server could not start,
/// or a second signal that cut the shutdown short.
pub async fn run(args: ServeArgs, format: Format) -> anyhow::Result<()> {
    let config = wharf_server::load_config(args.config.as_deref(), environment()?)?;
    if args.check_config {
        // Validates the storage too (for PostgreSQL: connects and reads the
        // schema version), changing nothing.
        let storage = wharf_server::check_storage(&config).await?;
        let mut shown = config.clone();
        if let StorageConfig::Postgres(pg) = &mut shown.storage {
            pg.url = redact_url(&pg.url);
        }
        return match format {
            Format::Json => output::json(&json!({
                "ok": true,
                "storage": storage,
                "config": serde_json::to_value(&shown).context("cannot show the configuration")?,
            })),
            Format::Human => output::line(format_args!(
                "config ok: gRPC on {}, HTTP admin on {}, {}; {storage}",
                config.server.grpc_listen,
                config.server.http_listen,
                storage_summary(&config)
            )),
        };
    }

    init_logging()?;
    // Installed before the server starts, so a signal that arrives as soon
    // as the "serving" line is out is already a clean stop.
    let mut signals = Signals::install().context("cannot install signal handlers")?;
    let server = Server::start(&config).await?;
    eprintln!(
        "wharf serving gRPC on {}, HTTP admin on {} ({})",
        server.grpc_addr(),
        server.http_addr(),
        storage_summary(&config)
    );
    if format == Format::Json {
        let ready = json!({
            "grpc_addr": server.grpc_addr().to_string(),
            "http_addr": server.http_addr().to_string(),
        });
        if let Err(e) = output::json(&ready) {
            tracing::warn!(error = %e, "cannot print the listening addresses; serving anyway");
        }
    }

    let signal = signals.next().await;
    tracing::info!(signal, "shutting down");
    tokio::select! {
        () = server.shutdown() => Ok(()),
        again = signals.next() => Err(anyhow::anyhow!(
            "{again} during shutdown; stopped without waiting for in-flight requests"
        )),
    }
}

/// The process environment for configuration overrides. `std::env::vars`
/// would panic on a non-UTF-8 variable anywhere in the environment; only a
/// Wharf variable's value must be UTF-8, and that is reported by name.
fn environment() -> anyhow::Result<Vec<(String, String)>> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Ok(name) = name.into_string() else {
            continue;
        };
        match value.into_string() {
            Ok(value) => vars.push((name, value)),
            Err(_) if name.starts_with("WHARF_") => {
                anyhow::bail!("environment variable {name} is not valid UTF-8")
            }
            Err(_) => {}
        }
    }
    Ok(vars)
}

/// Where the data lives, for the startup and `--check-config` lines.
fn storage_summary(config: &Config) -> String {
    let mut summary = match &config.storage {
        StorageConfig::Embedded { path, durability } => {
            let durability = match durability {
                Durability::Full => "full",
                Durability::Relaxed => "relaxed",
            };
            format!("data: {}, durability {durability}", path.display())
        }
        StorageConfig::Postgres(pg) => format!(
            "PostgreSQL {}, schema {}, pool {}",
            redact_url(&pg.url),
            pg.schema,
            pg.pool_size
        ),
    };
    let offload = &config.payload_offload;
    if offload.enabled {
        let store = match offload.store_type {
            PayloadStorageType::Filesystem => {
                format!("filesystem {}", offload.filesystem.base_path.display())
            }
            PayloadStorageType::S3 => offload.s3.as_ref().map_or_else(
                || "s3".to_owned(),
                |s3| format!("s3://{}/{}", s3.bucket, s3.prefix),
            ),
            PayloadStorageType::Gcs => offload.gcs.as_ref().map_or_else(
                || "gcs".to_owned(),
                |gcs| format!("gs://{}/{}", gcs.bucket, gcs.prefix),
            ),
            PayloadStorageType::Memory => "memory".to_owned(),
        };
        summary.push_str(&format!(
            "; payloads over {} bytes offloaded to {store}",
            offload.threshold_bytes
        ));
    }
    summary
}

/// `url` with any password replaced by `***`, for output and logs.
fn redact_url(url: &str) -> String {
    // postgres://user:password@host/...: the password is between the first
    // `:` after the scheme and the last `@` of the authority.
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); colours only on
/// a terminal so captured logs stay plain text.
fn init_logging() -> anyhow::Result<()> {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}
