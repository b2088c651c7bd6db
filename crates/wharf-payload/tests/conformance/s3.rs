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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use wharf_core::payload::RetryConfig;
use wharf_core::{Error, PayloadFailure, PayloadReference};
use wharf_payload::PayloadStore;
use wharf_payload::testing::{S3TestServer, unique_bucket};

use crate::fixture::{Fixture, Opener, Variant, in_ci, install_tls_provider, payload, test_clock};

/// The test server (see `wharf_payload::testing`).
pub type S3Server = S3TestServer;

/// The server, or `None` after a loud notice when it is down outside CI.
/// Under CI a missing server fails the test.
pub async fn server() -> Option<S3Server> {
    let server = S3Server::from_env();
    if server.reachable().await {
        return Some(server);
    }
    let how = server.how_to_start();
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
    let config = server.config(&bucket, "events/");
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
    let mut config = S3Server::from_env().config("unreachable", "events/");
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
    let mut config = S3Server::from_env().config("silent", "events/");
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
        PayloadStore::from_config(&server.config(&bucket, "events/"), Arc::new(test_clock()))
            .expect("store");
    let data = payload(4, 5000);
    let reference = good
        .put(&data)
        .await
        .expect("put with the right credentials");

    let mut config = server.config(&bucket, "events/");
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
    // The URL's date has whole seconds, and the server refuses it once the
    // expiry has passed since that second: signed late in a second, a URL
    // valid for 1 s had a few milliseconds left, and a loaded machine's
    // first GET came too late (CI saw 403). So sign just after a second
    // begins, valid for 2 s.
    let unix_now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
    };
    let now = unix_now();
    tokio::time::sleep(Duration::from_secs(now.as_secs() + 1) + Duration::from_millis(10) - now)
        .await;
    let signed_at = unix_now();
    let url = fixture
        .store
        .presigned_get_url(&reference, Duration::from_secs(2))
        .await
        .expect("presign");
    install_tls_provider();
    let fresh = reqwest::get(&url).await.expect("GET");
    assert_eq!(fresh.status(), 200, "a URL within its expiry is served");
    let expires = Duration::from_secs(signed_at.as_secs() + 2) + Duration::from_millis(150);
    if let Some(wait) = expires.checked_sub(unix_now()) {
        tokio::time::sleep(wait).await;
    }
    let stale = reqwest::get(&url).await.expect("GET");
    assert_eq!(stale.status(), 403, "an expired URL is refused");
    fixture.cleanup().await;
}
