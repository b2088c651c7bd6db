//! Configuration types, with the defaults of `wharf serve`.
//!
//! Loading (the YAML file and `WHARF_<SECTION>__<KEY>` overrides) is I/O and
//! lives in the server crate; this module only describes the shape.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Limits, PayloadOffloadConfig, QueuesConfig};

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listening addresses.
    pub server: ServerConfig,
    /// Where state is kept.
    pub storage: StorageConfig,
    /// Queue defaults.
    pub queues: QueuesConfig,
    /// Request bounds.
    pub limits: Limits,
    /// Offloading of large payloads to an external store.
    pub payload_offload: PayloadOffloadConfig,
}

impl Config {
    /// The embedded store in `path`, every other setting at its default.
    ///
    /// ```
    /// let config = wharf_core::Config::embedded("./my-data");
    /// assert_eq!(config.server, wharf_core::ServerConfig::default());
    /// ```
    pub fn embedded(path: impl Into<PathBuf>) -> Self {
        Self {
            storage: StorageConfig::Embedded {
                path: path.into(),
                durability: Durability::Full,
            },
            ..Self::default()
        }
    }
}

/// Listening addresses of `wharf serve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC API.
    pub grpc_listen: SocketAddr,
    /// HTTP admin API, health checks and `/metrics`.
    pub http_listen: SocketAddr,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 9099)),
        }
    }
}

/// The storage backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StorageConfig {
    /// The single-node engine on SQLite, in a data directory.
    Embedded {
        /// The data directory.
        #[serde(default = "default_data_path")]
        path: PathBuf,
        /// When a commit is acknowledged.
        #[serde(default)]
        durability: Durability,
    },
    /// PostgreSQL, shared by any number of Wharf nodes.
    Postgres(PostgresConfig),
}

/// Where the PostgreSQL backend keeps its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// A libpq-style URL, `postgres://user:password@host:port/database`
    /// (key-value strings such as `host=… user=…` are accepted too).
    pub url: String,
    /// Connections this node keeps open, besides one for notifications.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// The schema holding Wharf's tables; created if missing. Nodes that
    /// share a schema share their streams and queues.
    #[serde(default = "default_schema")]
    pub schema: String,
    /// How long to wait for a connection before a request fails with
    /// `UNAVAILABLE`.
    #[serde(
        default = "default_connect_timeout",
        with = "crate::queue::humantime_duration"
    )]
    pub connect_timeout: std::time::Duration,
}

impl PostgresConfig {
    /// `url` with the other settings at their defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: default_pool_size(),
            schema: default_schema(),
            connect_timeout: default_connect_timeout(),
        }
    }
}

fn default_pool_size() -> usize {
    16
}

fn default_schema() -> String {
    "wharf".to_owned()
}

fn default_connect_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(5)
}

fn default_data_path() -> PathBuf {
    PathBuf::from("./wharf-data")
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self::Embedded {
            path: default_data_path(),
            durability: Durability::Full,
        }
    }
}

/// How durable a commit is when it is acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Every commit is fsynced before it is acknowledged; survives power loss.
    #[default]
    Full,
    /// Commits survive a process crash but the last ones may be lost on
    /// power loss or an OS crash (SQLite `synchronous=NORMAL`).
    Relaxed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_serve_defaults() {
        let c = Config::default();
        assert_eq!(c.server.grpc_listen.to_string(), "127.0.0.1:50051");
        assert_eq!(c.server.http_listen.to_string(), "127.0.0.1:9099");
        assert_eq!(
            c.storage,
            StorageConfig::Embedded {
                path: "./wharf-data".into(),
                durability: Durability::Full
            }
        );
    }
}
