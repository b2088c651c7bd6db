//! The suite on S3: a real S3-compatible server on loopback (s3s-fs, which
//! `.ci/run` installs and starts; see docs/payload-store.md), one fresh
//! bucket per test.
//!
//! The server is found through `WHARF_TEST_S3_ENDPOINT` (default
//! `http://127.0.0.1:9000`), `WHARF_TEST_S3_ACCESS_KEY` /
//! `WHARF_TEST_S3_SECRET_KEY` (defaults: the credentials `.ci/run` starts it
//! with) and `WHARF_TEST_S3_REGION` (default `us-east-1`). When it cannot be
//! reached, the tests fail under `CI=true` and are skipped with a notice
//! otherwise.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{FutureExt, StreamExt};
use wharf_core::payload::{RetryConfig, S3StoreConfig};
use wharf_core::{
    Error, PayloadFailure, PayloadOffloadConfig, PayloadReference, PayloadStorageType,
};
use wharf_payload::PayloadStore;
use wharf_payload::object_store::ObjectStoreExt;
use wharf_payload::object_store::aws::{AwsAuthorizer, AwsCredential};
use wharf_payload::object_store::client::{HttpRequest, HttpRequestBody};

use crate::fixture::{Fixture, Opener, Variant, in_ci, install_tls_provider, payload, test_clock};

/// Where the test server is and how to sign for it.
#[derive(Debug, Clone)]
pub struct S3Server {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

fn var(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

impl S3Server {
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

    fn config(&self, bucket: &str) -> PayloadOffloadConfig {
        PayloadOffloadConfig {
            store_type: PayloadStorageType::S3,
            s3: Some(S3StoreConfig {
                bucket: bucket.to_owned(),
                prefix: "events/".to_owned(),
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
    async fn reachable(&self) -> bool {
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

    /// A signed request to the server (bucket operations object_store lacks).
    async fn send(&self, method: http::Method, path: &str) -> reqwest::Response {
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
        let store =
            PayloadStore::from_config(&self.config(bucket), Arc::new(test_clock())).expect("store");
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

/// The server, or `None` after a loud notice when it is down outside CI.
/// Under CI a missing server fails the test.
pub async fn server() -> Option<S3Server> {
    let server = S3Server::from_env();
    if server.reachable().await {
        return Some(server);
    }
    let how = format!(
        "no S3-compatible server answers at {endpoint}. Start one with\n  \
         cargo install s3s-fs --version 0.14.1 --features binary --locked\n  \
         mkdir -p /tmp/wharf-s3 && s3s-fs --host 127.0.0.1 --port 9000 \
         --access-key wharf-test-access --secret-key wharf-test-secret /tmp/wharf-s3 &\n\
         (`.ci/run` does this), or point WHARF_TEST_S3_ENDPOINT/_ACCESS_KEY/_SECRET_KEY at one.",
        endpoint = server.endpoint
    );
    if in_ci() {
        panic!("{how}");
    }
    eprintln!("\n!!!! SKIPPED: S3 payload-store test: {how}\n");
    None
}

pub async fn fixture(variant: Variant) -> Option<Fixture> {
    let server = server().await?;
    let bucket = unique_bucket();
    server.create_bucket(&bucket).await;
    let clock = test_clock();
    let config = server.config(&bucket);
    let opener_clock = clock.clone();
    let opener: Opener = Box::new(move |variant| {
        PayloadStore::from_config(&variant.apply(&config), Arc::new(opener_clock.clone()))
            .expect("s3 store")
    });
    let fixture = Fixture::new(variant, clock, opener, "events/", Box::new(()));
    Some(fixture.with_cleanup(move || async move { server.remove_bucket(&bucket).await }.boxed()))
}

payload_store_conformance!(crate::s3::fixture);

/// A loopback port with nothing listening.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

fn reference_in(store: &PayloadStore, data: &bytes::Bytes) -> PayloadReference {
    use sha2::{Digest, Sha256};
    let hash = wharf_core::ContentHash(Sha256::digest(data).into());
    PayloadReference {
        storage_type: store.storage_type(),
        uri: store.uri(&hash),
        content_hash: hash,
        original_size: data.len() as u64,
        stored_at: wharf_core::Timestamp::EPOCH,
    }
}

#[tokio::test]
async fn uris_name_the_bucket_and_the_prefix() {
    let Some(fixture) = fixture(Variant::plain()).await else {
        return;
    };
    let reference = fixture.store.put(&payload(1, 10)).await.expect("put");
    let bucket = fixture.store.object_key(&reference.content_hash);
    assert!(
        reference.uri.starts_with("s3://wharf-test-"),
        "{}",
        reference.uri
    );
    assert!(
        reference
            .uri
            .ends_with(&format!("/events/{}.bin", reference.content_hash.to_hex()))
    );
    assert_eq!(
        bucket.as_ref(),
        format!("events/{}.bin", reference.content_hash.to_hex())
    );
    fixture.cleanup().await;
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_after_bounded_retries_naming_it() {
    let port = closed_port();
    let mut config = S3Server::from_env().config("unreachable");
    let endpoint = format!("http://127.0.0.1:{port}");
    if let Some(s3) = config.s3.as_mut() {
        s3.endpoint = Some(endpoint.clone());
    }
    config.retry = RetryConfig {
        max_attempts: 3,
        timeout: Duration::from_secs(2),
        backoff: Duration::from_millis(50),
    };
    let store = PayloadStore::from_config(&config, Arc::new(test_clock())).expect("store");
    let data = payload(2, 1000);

    let started = Instant::now();
    let err = store.put(&data).await.expect_err("nothing listens");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3 * 2) + Duration::from_secs(1),
        "took {took:?}"
    );
    let Error::Unavailable(message) = &err else {
        panic!("expected Unavailable, got {err:?}");
    };
    assert!(message.contains(&endpoint), "names the endpoint: {message}");
    assert!(
        message.contains("s3://unreachable/events/"),
        "names the URI: {message}"
    );
    assert!(message.contains("after 3 attempts"), "{message}");

    let reference = reference_in(&store, &data);
    match store.get(&reference).await {
        Err(Error::PayloadRetrievalFailed {
            failure: PayloadFailure::Unavailable,
            details,
        }) => {
            assert_eq!(details.uri, reference.uri);
            assert!(details.error.contains(&endpoint), "{}", details.error);
        }
        other => panic!("expected PayloadRetrievalFailed(Unavailable), got {other:?}"),
    }
}

#[tokio::test]
async fn a_silent_endpoint_times_out_each_attempt() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    // Accepts connections and never answers.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut config = S3Server::from_env().config("silent");
    if let Some(s3) = config.s3.as_mut() {
        s3.endpoint = Some(format!("http://127.0.0.1:{port}"));
    }
    config.retry = RetryConfig {
        max_attempts: 2,
        timeout: Duration::from_millis(300),
        backoff: Duration::from_millis(50),
    };
    let store = PayloadStore::from_config(&config, Arc::new(test_clock())).expect("store");
    let data = payload(3, 1000);
    let reference = reference_in(&store, &data);

    let started = Instant::now();
    let result = store.get(&reference).await;
    let took = started.elapsed();
    match result {
        Err(Error::PayloadRetrievalFailed {
            failure: PayloadFailure::Timeout,
            details,
        }) => {
            assert!(details.error.contains("timed out"), "{}", details.error);
        }
        other => panic!("expected PayloadRetrievalFailed(Timeout), got {other:?}"),
    }
    assert!(
        took >= Duration::from_millis(600),
        "two attempts of 300 ms: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "bounded: {took:?}");
    let err = store.put(&data).await.expect_err("silent");
    assert!(
        matches!(&err, Error::Unavailable(m) if m.contains("timed out")),
        "{err}"
    );
    silent.abort();
}

#[tokio::test]
async fn wrong_credentials_are_refused_as_access_denied() {
    let Some(server) = server().await else {
        return;
    };
    let bucket = unique_bucket();
    server.create_bucket(&bucket).await;
    let good =
        PayloadStore::from_config(&server.config(&bucket), Arc::new(test_clock())).expect("store");
    let data = payload(4, 5000);
    let reference = good
        .put(&data)
        .await
        .expect("put with the right credentials");

    let mut config = server.config(&bucket);
    if let Some(s3) = config.s3.as_mut() {
        s3.secret_access_key = Some("not-the-secret".to_owned());
    }
    let bad = PayloadStore::from_config(&config, Arc::new(test_clock())).expect("store");
    let started = Instant::now();
    match bad.get(&reference).await {
        Err(Error::PayloadRetrievalFailed {
            failure: PayloadFailure::AccessDenied,
            details,
        }) => {
            assert!(details.error.contains("access denied"), "{}", details.error);
        }
        other => panic!("expected PayloadRetrievalFailed(AccessDenied), got {other:?}"),
    }
    let err = bad.put(&payload(5, 5000)).await.expect_err("refused");
    assert!(
        matches!(&err, Error::Storage(m) if m.contains("access denied")),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "access denied is not retried"
    );
    server.remove_bucket(&bucket).await;
}

#[tokio::test]
async fn a_presigned_url_stops_working_when_it_expires() {
    let Some(fixture) = fixture(Variant::plain()).await else {
        return;
    };
    let data = payload(6, 2000);
    let reference = fixture.store.put(&data).await.expect("put");
    let signed_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    let url = fixture
        .store
        .presigned_get_url(&reference, Duration::from_secs(1))
        .await
        .expect("presign");
    install_tls_provider();
    let fresh = reqwest::get(&url).await.expect("GET");
    assert_eq!(fresh.status(), 200);
    // The URL's date has whole seconds; the server refuses it once more than
    // the 1 s expiry has passed since that second.
    let expires = Duration::from_secs(signed_at.as_secs() + 1) + Duration::from_millis(150);
    if let Some(wait) =
        expires.checked_sub(SystemTime::now().duration_since(UNIX_EPOCH).expect("now"))
    {
        tokio::time::sleep(wait).await;
    }
    let stale = reqwest::get(&url).await.expect("GET");
    assert_eq!(stale.status(), 403, "an expired URL is refused");
    fixture.cleanup().await;
}
