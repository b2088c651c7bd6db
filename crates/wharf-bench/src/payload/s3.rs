//! The S3-compatible server on loopback the S3 store is measured against: the one `.ci/run`
//! starts for the payload-store tests (s3s-fs on `127.0.0.1:9000`), found through the same
//! variables, `WHARF_TEST_S3_ENDPOINT`, `WHARF_TEST_S3_ACCESS_KEY`,
//! `WHARF_TEST_S3_SECRET_KEY` and `WHARF_TEST_S3_REGION`, with the same defaults.
//!
//! The suite writes into a bucket of its own, created before and deleted (objects first)
//! after. s3s-fs keeps objects as files in a directory and does not fsync them, which the
//! rows' durability says.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use object_store::aws::{AwsAuthorizer, AwsCredential};
use object_store::client::{HttpRequest, HttpRequestBody};
use wharf::{PayloadOffloadConfig, PayloadStorageType, PayloadStore, SystemClock};
use wharf_core::payload::S3StoreConfig;

use super::engine::offloading;

/// Where the server is and how to sign for it.
#[derive(Debug, Clone)]
pub struct S3Server {
    endpoint: reqwest::Url,
    access_key: String,
    secret_key: String,
    region: String,
}

fn var(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// A bucket name no other run or process uses.
pub fn unique_bucket() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("wharf-bench-{}-{nanos}", std::process::id())
}

/// `endpoint` as a URL, if it is plain HTTP on a loopback address.
fn loopback_endpoint(endpoint: &str) -> anyhow::Result<reqwest::Url> {
    let url = reqwest::Url::parse(endpoint.trim_end_matches('/'))
        .with_context(|| format!("WHARF_TEST_S3_ENDPOINT `{endpoint}` is not a URL"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    ensure!(
        url.scheme() == "http" && loopback,
        "WHARF_TEST_S3_ENDPOINT `{endpoint}` must be an http:// URL on this machine \
         (127.0.0.1, ::1 or localhost)"
    );
    Ok(url)
}

impl S3Server {
    /// The server the environment names.
    ///
    /// # Errors
    /// When the endpoint is not an `http://` URL on a loopback address: the benchmark
    /// sends traffic to this machine only.
    pub fn from_env() -> anyhow::Result<Self> {
        let endpoint = var("WHARF_TEST_S3_ENDPOINT", "http://127.0.0.1:9000");
        let url = loopback_endpoint(&endpoint)?;
        Ok(Self {
            endpoint: url,
            access_key: var("WHARF_TEST_S3_ACCESS_KEY", "wharf-test-access"),
            secret_key: var("WHARF_TEST_S3_SECRET_KEY", "wharf-test-secret"),
            region: var("WHARF_TEST_S3_REGION", "us-east-1"),
        })
    }

    fn endpoint(&self) -> &str {
        self.endpoint.as_str().trim_end_matches('/')
    }

    /// Fails, saying how to start the server, when nothing listens at the endpoint.
    pub async fn check_reachable(&self) -> anyhow::Result<()> {
        let host = match self.endpoint.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => IpAddr::from([127, 0, 0, 1]),
        };
        let port = self.endpoint.port_or_known_default().unwrap_or(80);
        let connect = tokio::net::TcpStream::connect((host, port));
        match tokio::time::timeout(Duration::from_secs(2), connect).await {
            Ok(Ok(_)) => Ok(()),
            _ => bail!(
                "no S3-compatible server answers at {}; start one as .ci/run does:\n  \
                 mkdir -p /tmp/wharf-s3s/data && s3s-fs --host 127.0.0.1 --port 9000 \
                 --access-key wharf-test-access --secret-key wharf-test-secret \
                 /tmp/wharf-s3s/data &",
                self.endpoint()
            ),
        }
    }

    /// Offloading to `bucket` on this server, under the prefix `events/`.
    pub fn offload(&self, bucket: &str) -> PayloadOffloadConfig {
        PayloadOffloadConfig {
            s3: Some(S3StoreConfig {
                bucket: bucket.to_owned(),
                prefix: "events/".to_owned(),
                region: self.region.clone(),
                endpoint: Some(self.endpoint().to_owned()),
                access_key_id: Some(self.access_key.clone()),
                secret_access_key: Some(self.secret_key.clone()),
            }),
            ..offloading(PayloadStorageType::S3)
        }
    }

    /// A signed bucket request (object_store has no bucket operations).
    async fn send(&self, method: http::Method, bucket: &str) -> anyhow::Result<()> {
        // reqwest is built without a TLS crypto provider of its own; the request is plain
        // HTTP, but building a client needs one installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = format!("{}/{bucket}", self.endpoint());
        let mut request: HttpRequest = http::Request::builder()
            .method(method.clone())
            .uri(&url)
            .body(HttpRequestBody::empty())
            .context("building a bucket request")?;
        let credential = AwsCredential {
            key_id: self.access_key.clone(),
            secret_key: self.secret_key.clone(),
            token: None,
        };
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .context("signing a bucket request")?;
        let mut builder = reqwest::Client::new().request(method.clone(), &url);
        for (name, value) in request.headers() {
            builder = builder.header(name, value);
        }
        let response = builder
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        ensure!(status.is_success(), "{method} {url}: {status} {body}");
        Ok(())
    }

    /// Creates `bucket`.
    pub async fn create_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        self.send(http::Method::PUT, bucket)
            .await
            .with_context(|| format!("creating the bucket {bucket}"))
    }

    /// Deletes every payload object of `bucket`, then the bucket.
    pub async fn remove_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        let store = PayloadStore::from_config(&self.offload(bucket), Arc::new(SystemClock))
            .context("a store over the benchmark's bucket")?;
        let mut listed = store.list();
        let mut hashes = Vec::new();
        while let Some(object) = listed.next().await {
            hashes.push(object.context("listing the benchmark's bucket")?.hash);
        }
        for hash in hashes {
            store
                .delete(&hash)
                .await
                .context("emptying the benchmark's bucket")?;
        }
        self.send(http::Method::DELETE, bucket)
            .await
            .with_context(|| format!("deleting the bucket {bucket}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_on_loopback_is_accepted() {
        for ok in [
            "http://127.0.0.1:9000",
            "http://127.0.0.1:9000/",
            "http://[::1]:9000",
            "http://localhost:9000",
        ] {
            assert!(loopback_endpoint(ok).is_ok(), "{ok}");
        }
        for refused in [
            "https://127.0.0.1:9000",
            "http://10.0.0.5:9000",
            "http://s3.amazonaws.com",
            "not a url",
        ] {
            assert!(loopback_endpoint(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn bucket_names_are_valid_s3_names() {
        let name = unique_bucket();
        assert!(name.len() <= 63, "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
    }
}
