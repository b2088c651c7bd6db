//! Appending and reading back 5 MiB events, in process ([`Wharf`]) or over gRPC
//! ([`Client`]), one operation in flight at a time.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use wharf::{
    Config, Durability, ExpectedVersion, NewEvent, PayloadOffloadConfig, PayloadStorageType,
    ReadDirection, RecordedEvent, StorageConfig, StreamName, StreamStart, Wharf,
};
use wharf_client::Client;

use super::{THRESHOLD, check_payload, payload};

/// Offloading to a filesystem store in `dir/payloads`.
///
/// The reaper is off: it is no part of a put or a get, and a pass of it would list the
/// store in the middle of a measurement.
pub fn filesystem(dir: &Path) -> PayloadOffloadConfig {
    let mut offload = offloading(PayloadStorageType::Filesystem);
    offload.filesystem.base_path = dir.join("payloads");
    offload
}

/// Offloading on, over the threshold, to a store of `store_type` whose own section the
/// caller fills in.
pub fn offloading(store_type: PayloadStorageType) -> PayloadOffloadConfig {
    PayloadOffloadConfig {
        enabled: true,
        threshold_bytes: THRESHOLD,
        store_type,
        reaper_interval_hours: 0,
        ..PayloadOffloadConfig::default()
    }
}

/// Engine configuration: embedded storage in `dir` with full durability, `offload`.
pub fn config(dir: &Path, offload: PayloadOffloadConfig) -> Config {
    Config {
        storage: StorageConfig::Embedded {
            path: dir.to_path_buf(),
            durability: Durability::Full,
        },
        payload_offload: offload,
        ..Config::default()
    }
}

/// Opens an engine storing events in `dir` and offloading as `offload` says.
pub async fn open(dir: &Path, offload: PayloadOffloadConfig) -> anyhow::Result<Wharf> {
    let wharf = Wharf::open(&config(dir, offload))
        .await
        .with_context(|| format!("opening a Wharf engine in {}", dir.display()))?;
    ensure!(
        wharf.payload_store().is_some(),
        "the engine in {} has no payload store although offloading is on",
        dir.display()
    );
    Ok(wharf)
}

/// An appended event and the seed of its payload.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub version: u64,
    pub seed: u64,
}

/// Where appends and reads go.
pub enum Target {
    InProcess(Wharf),
    Grpc(Box<Client>),
}

impl Target {
    /// Appends one event per seed to `stream`, one append at a time; returns the time the
    /// appends took (making each payload is not timed) and what was written.
    pub async fn append_each(
        &self,
        stream: &str,
        seeds: impl Iterator<Item = u64>,
    ) -> anyhow::Result<(Duration, Vec<Written>)> {
        let stream: StreamName = stream.parse().context("a valid stream name")?;
        let mut timed = Duration::ZERO;
        let mut written = Vec::new();
        for seed in seeds {
            let events = vec![NewEvent::new("PayloadBench", payload(seed))];
            let started = Instant::now();
            let outcome = match self {
                Self::InProcess(w) => w.append(&stream, ExpectedVersion::Any, events).await,
                Self::Grpc(c) => c.append(&stream, ExpectedVersion::Any, events).await,
            }
            .with_context(|| format!("appending a 5 MiB event to {stream}"))?;
            timed += started.elapsed();
            written.push(Written {
                version: outcome.result().first_version,
                seed,
            });
        }
        Ok((timed, written))
    }

    /// Reads each event of `written` back from `stream`, one read at a time, and checks it
    /// carries its payload, offloaded; returns the time the reads took.
    pub async fn read_each(&self, stream: &str, written: &[Written]) -> anyhow::Result<Duration> {
        let stream: StreamName = stream.parse().context("a valid stream name")?;
        let mut timed = Duration::ZERO;
        for w in written {
            let start = StreamStart::Version(w.version);
            let started = Instant::now();
            let events = match self {
                Self::InProcess(wharf) => {
                    wharf
                        .read_stream(&stream, start, ReadDirection::Forwards, 1)
                        .await
                }
                Self::Grpc(c) => {
                    c.read_stream(&stream, start, ReadDirection::Forwards, Some(1))
                        .await
                }
            }
            .with_context(|| format!("reading version {} of {stream}", w.version))?;
            timed += started.elapsed();
            check_event(&events, w)
                .with_context(|| format!("version {} of {stream}", w.version))?;
        }
        Ok(timed)
    }
}

fn check_event(events: &[RecordedEvent], written: &Written) -> anyhow::Result<()> {
    let [event] = events else {
        anyhow::bail!("expected one event, got {}", events.len());
    };
    ensure!(
        event.stream_version == written.version,
        "got version {}",
        event.stream_version
    );
    ensure!(
        event.external.is_some(),
        "the payload was stored inline, not offloaded"
    );
    check_payload(&event.data, written.seed)
}
