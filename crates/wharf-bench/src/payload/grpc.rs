//! Wharf served in this process over gRPC, offloading to a filesystem store in the
//! suite's directory, and reached through [`wharf_client::Client`] like any remote client:
//! each 5 MiB event travels in the append request and in the read's answer, and is
//! offloaded and resolved (SHA-256 verified) by the server.

use std::path::Path;

use anyhow::Context;
use wharf_client::Client;
use wharf_server::Server;

use super::engine::{Target, config, filesystem};

pub const SYSTEM: &str = "wharf";
pub const DURABILITY: &str =
    "gRPC loopback; payload: fdatasync + dir fsync; event: SQLite WAL fdatasync per commit (full)";

/// Starts a server with its data in `dir/grpc`, on free loopback ports.
pub async fn start_server(dir: &Path) -> anyhow::Result<Server> {
    let dir = dir.join("grpc");
    let mut config = config(&dir.join("data"), filesystem(&dir));
    config.server.grpc_listen = "127.0.0.1:0".parse()?;
    config.server.http_listen = "127.0.0.1:0".parse()?;
    Server::start(&config)
        .await
        .with_context(|| format!("starting a Wharf server on {}", dir.display()))
}

/// A client of `server`.
pub async fn connect(server: &Server) -> anyhow::Result<Client> {
    let url = format!("http://{}", server.grpc_addr());
    Client::connect(&url)
        .await
        .with_context(|| format!("the Wharf server at {url} is unreachable"))
}

/// The target of the gRPC workloads.
pub fn target(client: Client) -> Target {
    Target::Grpc(Box::new(client))
}
