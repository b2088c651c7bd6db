//! What the server's integration tests share: a real server on loopback
//! with the real client, and a bare HTTP GET for the admin endpoints.
#![allow(dead_code)]

use wharf_client::Client;
use wharf_core::{Config, Durability, Limits, StorageConfig};
use wharf_server::Server;

/// A server on a fresh data directory, with a client connected to it.
pub struct Running {
    pub server: Server,
    pub client: Client,
    pub _dir: tempfile::TempDir,
}

pub async fn start_with(limits: Limits) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        storage: StorageConfig::Embedded {
            path: dir.path().join("data"),
            durability: Durability::Relaxed,
        },
        limits,
        ..Config::default()
    };
    config.server.grpc_listen = "127.0.0.1:0".parse().unwrap();
    config.server.http_listen = "127.0.0.1:0".parse().unwrap();
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

pub async fn start() -> Running {
    start_with(Limits::default()).await
}

/// A minimal HTTP/1.0 GET, enough for the admin endpoints.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
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
