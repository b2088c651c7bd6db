//! Configuration checks: every mistake is refused naming its key.

use std::time::Duration;

use wharf_core::payload::{EncryptionConfig, GcsStoreConfig, S3StoreConfig};
use wharf_core::{ManualClock, PayloadStorageType};

use super::*;

fn clock() -> Arc<dyn Clock> {
    Arc::new(ManualClock::default())
}

fn s3_config() -> PayloadOffloadConfig {
    PayloadOffloadConfig {
        store_type: PayloadStorageType::S3,
        s3: Some(S3StoreConfig {
            bucket: "b".into(),
            prefix: "events/".into(),
            region: "us-east-1".into(),
            endpoint: Some("http://127.0.0.1:9".into()),
            access_key_id: Some("id".into()),
            secret_access_key: Some("secret".into()),
        }),
        ..PayloadOffloadConfig::default()
    }
}

fn refused(config: &PayloadOffloadConfig, needle: &str) -> String {
    match PayloadStore::from_config(config, clock()) {
        Err(Error::InvalidArgument(message)) => {
            assert!(
                message.contains(needle),
                "`{message}` does not name `{needle}`"
            );
            message
        }
        Err(other) => panic!("expected InvalidArgument naming {needle}, got {other:?}"),
        Ok(store) => panic!("expected InvalidArgument naming {needle}, got {store:?}"),
    }
}

#[test]
fn a_store_type_without_its_section_is_refused() {
    for (store_type, key) in [
        (PayloadStorageType::S3, "payload_offload.s3"),
        (PayloadStorageType::Gcs, "payload_offload.gcs"),
    ] {
        let config = PayloadOffloadConfig {
            store_type,
            ..PayloadOffloadConfig::default()
        };
        let message = refused(&config, key);
        assert!(message.contains("store_type"), "{message}");
    }
}

#[test]
fn retry_settings_that_cannot_work_are_refused() {
    let mut config = s3_config();
    config.retry.max_attempts = 0;
    refused(&config, "payload_offload.retry.max_attempts");
    let mut config = s3_config();
    config.retry.timeout = Duration::ZERO;
    refused(&config, "payload_offload.retry.timeout");
}

fn s3_with(change: impl FnOnce(&mut S3StoreConfig)) -> PayloadOffloadConfig {
    let mut config = s3_config();
    if let Some(s3) = config.s3.as_mut() {
        change(s3);
    }
    config
}

#[test]
fn s3_mistakes_are_refused_naming_the_key() {
    refused(
        &s3_with(|s3| s3.bucket.clear()),
        "payload_offload.s3.bucket",
    );
    refused(
        &s3_with(|s3| s3.prefix = "a//b".into()),
        "payload_offload.s3.prefix",
    );
    refused(
        &s3_with(|s3| s3.endpoint = Some("127.0.0.1:9000".into())),
        "payload_offload.s3.endpoint",
    );
    refused(
        &s3_with(|s3| s3.endpoint = Some("ftp://127.0.0.1".into())),
        "payload_offload.s3.endpoint",
    );
    refused(
        &s3_with(|s3| s3.secret_access_key = None),
        "access_key_id and secret_access_key",
    );
}

#[test]
fn encryption_mistakes_are_refused_naming_the_key() {
    let mut config = PayloadOffloadConfig {
        store_type: PayloadStorageType::Memory,
        ..PayloadOffloadConfig::default()
    };
    config.encryption = Some(EncryptionConfig {
        key: Some("abc".into()),
        key_env: None,
    });
    refused(
        &config,
        "payload_offload.encryption.key must be 64 hex digits",
    );
    config.encryption = Some(EncryptionConfig {
        key: None,
        key_env: None,
    });
    refused(&config, "payload_offload.encryption");
    config.encryption = Some(EncryptionConfig {
        key: Some("00".repeat(32)),
        key_env: Some("X".into()),
    });
    refused(&config, "not both");
    config.encryption = Some(EncryptionConfig {
        key: None,
        key_env: Some("WHARF_PAYLOAD_TEST_KEY_THAT_IS_NOT_SET".into()),
    });
    refused(&config, "WHARF_PAYLOAD_TEST_KEY_THAT_IS_NOT_SET");
    config.encryption = Some(EncryptionConfig {
        key: None,
        key_env: Some("PATH".into()),
    });
    let message = refused(&config, "payload_offload.encryption.key_env");
    assert!(message.contains("`PATH`"), "{message}");
    config.encryption = Some(EncryptionConfig {
        key: Some("ab".repeat(32)),
        key_env: None,
    });
    assert!(
        PayloadStore::from_config(&config, clock()).is_ok(),
        "a 64-digit key is accepted"
    );
}

#[test]
fn a_gcs_bucket_must_be_named() {
    let config = PayloadOffloadConfig {
        store_type: PayloadStorageType::Gcs,
        gcs: Some(GcsStoreConfig {
            bucket: String::new(),
            prefix: String::new(),
            service_account_path: None,
        }),
        ..PayloadOffloadConfig::default()
    };
    refused(&config, "payload_offload.gcs.bucket");
}

#[tokio::test]
async fn presigning_needs_a_cloud_store_and_a_sane_expiry() {
    let store = PayloadStore::memory(clock());
    let reference = store
        .put(&bytes::Bytes::from_static(b"x"))
        .await
        .expect("put");
    let err = store
        .presigned_get_url(&reference, Duration::from_secs(60))
        .await
        .expect_err("memory");
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("s3 or gcs")),
        "{err}"
    );
    let s3 = PayloadStore::from_config(&s3_config(), clock()).expect("s3 store");
    for bad in [
        Duration::from_millis(999),
        MAX_PRESIGNED_EXPIRY + Duration::from_secs(1),
    ] {
        let err = s3
            .presigned_get_url(&reference, bad)
            .await
            .expect_err("bad expiry");
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("7 days")),
            "{err}"
        );
    }
    let url = s3
        .presigned_get_url(&reference, Duration::from_secs(60))
        .await
        .expect("signed offline");
    assert!(url.starts_with("http://127.0.0.1:9/b/"), "{url}");
    assert!(url.contains("X-Amz-Expires=60"), "{url}");
}

#[test]
fn uris_follow_the_store_and_the_prefix() {
    let hash = ContentHash([0x11; 32]);
    let hex = hash.to_hex();
    let s3 = PayloadStore::from_config(&s3_config(), clock()).expect("s3 store");
    assert_eq!(s3.uri(&hash), format!("s3://b/events/{hex}.bin"));
    assert_eq!(s3.object_key(&hash).as_ref(), format!("events/{hex}.bin"));
    let memory = PayloadStore::memory(clock());
    assert_eq!(memory.uri(&hash), format!("memory:///{hex}.bin"));
}

#[test]
fn a_reference_is_read_from_its_uri_when_it_is_in_this_store() {
    let s3 = PayloadStore::from_config(&s3_config(), clock()).expect("s3 store");
    let hash = ContentHash([0x22; 32]);
    let hex = hash.to_hex();
    let mut reference = PayloadReference {
        storage_type: PayloadStorageType::S3,
        uri: format!("s3://b/old-prefix/{hex}.bin"),
        content_hash: hash,
        original_size: 1,
        stored_at: Timestamp::EPOCH,
    };
    assert_eq!(
        s3.inner.key_of(&reference).as_ref(),
        format!("old-prefix/{hex}.bin")
    );
    reference.uri = format!("s3://another-bucket/events/{hex}.bin");
    assert_eq!(
        s3.inner.key_of(&reference).as_ref(),
        format!("events/{hex}.bin")
    );
    reference.uri = "s3://b/".into();
    assert_eq!(
        s3.inner.key_of(&reference).as_ref(),
        format!("events/{hex}.bin")
    );
}

#[test]
fn the_store_and_its_futures_can_cross_threads() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    let store = PayloadStore::memory(clock());
    send_sync(&store);
    let data = bytes::Bytes::new();
    let hash = ContentHash([0; 32]);
    let reference = PayloadReference {
        storage_type: PayloadStorageType::Memory,
        uri: store.uri(&hash),
        content_hash: hash,
        original_size: 0,
        stored_at: Timestamp::EPOCH,
    };
    send(store.put(&data));
    send(store.get(&reference));
    send(store.head(&hash));
    send(store.delete(&hash));
    send(store.stats());
    send(store.list());
    send(store.presigned_get_url(&reference, Duration::from_secs(1)));
}
