//! Test support: the S3-compatible server the tests run against (s3s-fs on
//! loopback, which `.ci/run` installs and starts), with the bucket
//! operations object_store lacks. Not part of the API.
//!
//! The server is found through `WHARF_TEST_S3_ENDPOINT` (default
//! `http://127.0.0.1:9000`), `WHARF_TEST_S3_ACCESS_KEY` /
//! `WHARF_TEST_S3_SECRET_KEY` (defaults: the credentials `.ci/run` starts
//! it with) and `WHARF_TEST_S3_REGION` (default `us-east-1`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::aws::{AwsAuthorizer, AwsCredential};
use object_store::client::{HttpRequest, HttpRequestBody};
use wharf_core::payload::{RetryConfig, S3StoreConfig};
use wharf_core::{PayloadOffloadConfig, PayloadStorageType, SystemClock};

use crate::PayloadStore;

/// Where the test server is and how to sign for it.
#[derive(Debug, Clone)]
pub struct S3TestServer {
    /// `http://host:port`, without a trailing slash.
    pub endpoint: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// Region to sign for.
    pub region: String,
}

fn var(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Whether the tests run under CI (`CI` set to anything but `0`/`false`),
/// where a missing service fails a test instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// A bucket name no other test, run or process uses.
pub fn unique_bucket() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "wharf-test-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// reqwest is built without a bundled rustls provider; install ring's.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl S3TestServer {
    /// The server the `WHARF_TEST_S3_*` variables name.
    pub fn from_env() -> Self {
        Self {
            endpoint: var("WHARF_TEST_S3_ENDPOINT", "http://127.0.0.1:9000")
                .trim_end_matches('/')
                .to_owned(),
            access_key: var("WHARF_TEST_S3_ACCESS_KEY", "wharf-test-access"),
            secret_key: var("WHARF_TEST_S3_SECRET_KEY", "wharf-test-secret"),
            region: var("WHARF_TEST_S3_REGION", "us-east-1"),
        }
    }

    /// An S3 payload store configuration for `bucket` under `prefix`.
    pub fn config(&self, bucket: &str, prefix: &str) -> PayloadOffloadConfig {
        PayloadOffloadConfig {
            store_type: PayloadStorageType::S3,
            s3: Some(S3StoreConfig {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
                region: self.region.clone(),
                endpoint: Some(self.endpoint.clone()),
                access_key_id: Some(self.access_key.clone()),
                secret_access_key: Some(self.secret_key.clone()),
            }),
            retry: RetryConfig {
                max_attempts: 3,
                timeout: Duration::from_secs(10),
                backoff: Duration::from_millis(50),
            },
            ..PayloadOffloadConfig::default()
        }
    }

    /// Whether anything accepts connections at the endpoint.
    pub async fn reachable(&self) -> bool {
        let Ok(url) = url::Url::parse(&self.endpoint) else {
            return false;
        };
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return false;
        };
        let connect = tokio::net::TcpStream::connect((host, port));
        matches!(
            tokio::time::timeout(Duration::from_secs(2), connect).await,
            Ok(Ok(_))
        )
    }

    /// How to start a server, for the message of a test that found none.
    pub fn how_to_start(&self) -> String {
        format!(
            "no S3-compatible server answers at {endpoint}. Start one with\n  \
             cargo install s3s-fs --version 0.14.1 --features binary --locked\n  \
             mkdir -p /tmp/wharf-s3 && s3s-fs --host 127.0.0.1 --port 9000 \
             --access-key wharf-test-access --secret-key wharf-test-secret /tmp/wharf-s3 &\n\
             (`.ci/run` does this), or point WHARF_TEST_S3_ENDPOINT/_ACCESS_KEY/_SECRET_KEY at one.",
            endpoint = self.endpoint
        )
    }

    /// A signed request to the server (bucket operations object_store lacks).
    ///
    /// # Panics
    /// When the request cannot be signed or sent.
    pub async fn send(&self, method: http::Method, path: &str) -> reqwest::Response {
        install_tls_provider();
        let url = format!("{}/{path}", self.endpoint);
        let mut request: HttpRequest = http::Request::builder()
            .method(method.clone())
            .uri(&url)
            .body(HttpRequestBody::empty())
            .expect("a request");
        let credential = AwsCredential {
            key_id: self.access_key.clone(),
            secret_key: self.secret_key.clone(),
            token: None,
        };
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .expect("sign the request");
        let mut builder = reqwest::Client::new().request(method, &url);
        for (name, value) in request.headers() {
            builder = builder.header(name, value);
        }
        builder
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    /// Creates `bucket`.
    ///
    /// # Panics
    /// When the server refuses.
    pub async fn create_bucket(&self, bucket: &str) {
        let response = self.send(http::Method::PUT, bucket).await;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "creating bucket {bucket} at {}: {status} {body}",
            self.endpoint
        );
    }

    /// Deletes every object of `bucket`, then the bucket.
    pub async fn remove_bucket(&self, bucket: &str) {
        let Ok(store) = PayloadStore::from_config(&self.config(bucket, ""), Arc::new(SystemClock))
        else {
            return;
        };
        let raw = store.object_store();
        let keys: Vec<_> = raw
            .list(None)
            .filter_map(|meta| async move { meta.ok().map(|m| m.location) })
            .collect()
            .await;
        for key in keys {
            let _ = raw.delete(&key).await;
        }
        let _ = self.send(http::Method::DELETE, bucket).await;
    }
}
