//! Appending and reading back 5 MiB events, in process ([`Wharf`]) or over gRPC
//! ([`Client`]), one operation in flight at a time.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use wharf::{
    Config, Durability, ExpectedVersion, NewEvent, PayloadOffloadConfig, PayloadReference,
    PayloadStorageType, ReadDirection, RecordedEvent, StorageConfig, StreamName, StreamStart,
    Wharf,
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
        let mut timed = Duration::ZERO;
        for w in written {
            timed += self.read_one(stream, w).await?.0;
        }
        Ok(timed)
    }

    /// Reads the event of `written` back from `stream` and checks it carries its payload,
    /// offloaded; returns the time the read took and the payload's reference.
    pub async fn read_one(
        &self,
        stream: &str,
        written: &Written,
    ) -> anyhow::Result<(Duration, PayloadReference)> {
        let stream: StreamName = stream.parse().context("a valid stream name")?;
        let start = StreamStart::Version(written.version);
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
        .with_context(|| format!("reading version {} of {stream}", written.version))?;
        let elapsed = started.elapsed();
        let reference = check_event(events, written)
            .with_context(|| format!("version {} of {stream}", written.version))?;
        Ok((elapsed, reference))
    }

    /// Appends one inline event of `size` bytes (under the threshold) to `stream`; returns
    /// the time it took: the cost of committing an event, without a payload to store.
    pub async fn append_inline(&self, stream: &str, size: usize) -> anyhow::Result<Duration> {
        let stream: StreamName = stream.parse().context("a valid stream name")?;
        let events = vec![NewEvent::new("InlineBench", vec![0x5A; size])];
        let started = Instant::now();
        match self {
            Self::InProcess(w) => w.append(&stream, ExpectedVersion::Any, events).await,
            Self::Grpc(c) => c.append(&stream, ExpectedVersion::Any, events).await,
        }
        .with_context(|| format!("appending an inline event to {stream}"))?;
        Ok(started.elapsed())
    }
}

fn check_event(events: Vec<RecordedEvent>, written: &Written) -> anyhow::Result<PayloadReference> {
    let [event] = <[RecordedEvent; 1]>::try_from(events)
        .map_err(|events| anyhow::anyhow!("expected one event, got {}", events.len()))?;
    ensure!(
        event.stream_version == written.version,
        "got version {}",
        event.stream_version
    );
    let reference = event
        .external
        .context("the payload was stored inline, not offloaded")?;
    check_payload(&event.data, written.seed)?;
    Ok(reference)
}
