//! What the server's integration tests share: a real server on loopback
//! with the real client, and bare HTTP requests for the admin endpoints.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use wharf_client::Client;
use wharf_core::payload::FilesystemStoreConfig;
use wharf_core::{
    Config, ContentHash, Durability, Limits, PayloadOffloadConfig, PayloadStorageType,
    StorageConfig,
};
use wharf_server::Server;

/// Payloads over this are offloaded by [`start_offloading`].
pub const THRESHOLD: u64 = 64 * 1024;

/// A server on a fresh data directory, with a client connected to it.
pub struct Running {
    pub server: Server,
    pub client: Client,
    pub _dir: tempfile::TempDir,
}

impl Running {
    /// Where a filesystem payload store of [`start_offloading`] keeps objects.
    pub fn payload_dir(&self) -> PathBuf {
        self._dir.path().join("payloads")
    }

    /// The object file of the payload with `hash`.
    pub fn payload_file(&self, hash: &ContentHash) -> PathBuf {
        self.payload_dir().join(format!("{hash}.bin"))
    }

    /// How many payload objects the store directory holds.
    pub fn payload_files(&self) -> usize {
        std::fs::read_dir(self.payload_dir())
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".bin"))
                    .count()
            })
            .unwrap_or(0)
    }
}

/// The defaults, with storage in `dir` and both listeners on port 0.
pub fn config_in(dir: &Path) -> Config {
    let mut config = Config {
        storage: StorageConfig::Embedded {
            path: dir.join("data"),
            durability: Durability::Relaxed,
        },
        ..Config::default()
    };
    config.server.grpc_listen = "127.0.0.1:0".parse().unwrap();
    config.server.http_listen = "127.0.0.1:0".parse().unwrap();
    config
}

/// Offloading over [`THRESHOLD`] to a filesystem store in `dir/payloads`,
/// without the periodic reaper.
pub fn offloading_in(dir: &Path) -> PayloadOffloadConfig {
    PayloadOffloadConfig {
        enabled: true,
        threshold_bytes: THRESHOLD,
        store_type: PayloadStorageType::Filesystem,
        filesystem: FilesystemStoreConfig {
            base_path: dir.join("payloads"),
        },
        reaper_interval_hours: 0,
        ..PayloadOffloadConfig::default()
    }
}

/// A server with `config` as changed by `adjust` (given the test's
/// directory).
pub async fn start_configured(adjust: impl FnOnce(&Path, &mut Config)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    adjust(dir.path(), &mut config);
    let server = Server::start(&config).await.expect("server starts");
    let client = Client::connect(&format!("http://{}", server.grpc_addr()))
        .await
        .expect("client connects");
    Running {
        server,
        client,
        _dir: dir,
    }
}

pub async fn start_with(limits: Limits) -> Running {
    start_configured(|_, config| config.limits = limits).await
}

pub async fn start() -> Running {
    start_with(Limits::default()).await
}

/// A server offloading payloads over [`THRESHOLD`] to a filesystem store.
pub async fn start_offloading() -> Running {
    start_configured(|dir, config| config.payload_offload = offloading_in(dir)).await
}

/// A minimal HTTP/1.0 GET, enough for the admin endpoints.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    http(addr, "GET", path).await
}

/// A minimal HTTP/1.0 POST without a body.
pub async fn http_post(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    http(addr, "POST", path).await
}

async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
