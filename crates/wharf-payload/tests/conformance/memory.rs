//! The suite on the in-memory store.

use std::sync::Arc;

use wharf_core::{PayloadOffloadConfig, PayloadStorageType};
use wharf_payload::PayloadStore;
use wharf_payload::object_store::ObjectStoreExt;
use wharf_payload::object_store::memory::InMemory;

use crate::fixture::{Fixture, Opener, Variant, payload, test_clock};

/// Stores opened over one shared [`InMemory`], so a second codec sees the
/// first one's objects.
pub async fn fixture(variant: Variant) -> Option<Fixture> {
    let clock = test_clock();
    let objects = Arc::new(InMemory::new());
    let config = PayloadOffloadConfig {
        store_type: PayloadStorageType::Memory,
        ..PayloadOffloadConfig::default()
    };
    let opener_clock = clock.clone();
    let opener: Opener = Box::new(move |variant| {
        PayloadStore::with_object_store(
            &variant.apply(&config),
            objects.clone(),
            Arc::new(opener_clock.clone()),
        )
        .expect("memory store")
    });
    Some(Fixture::new(variant, clock, opener, "", Box::new(())))
}

payload_store_conformance!(crate::memory::fixture);

#[tokio::test]
async fn memory_uris_name_the_hash() {
    let store = PayloadStore::memory(Arc::new(test_clock()));
    assert_eq!(store.storage_type(), PayloadStorageType::Memory);
    let reference = store.put(&payload(1, 10)).await.expect("put");
    assert_eq!(
        reference.uri,
        format!("memory:///{}.bin", reference.content_hash.to_hex())
    );
}

#[tokio::test]
async fn from_config_builds_a_memory_store_with_the_configured_codec() {
    let mut config = Variant::zstd_aes().apply(&PayloadOffloadConfig::default());
    config.store_type = PayloadStorageType::Memory;
    let store = PayloadStore::from_config(&config, Arc::new(test_clock())).expect("memory store");
    let data = payload(2, 100_000);
    let reference = store.put(&data).await.expect("put");
    assert_eq!(store.get(&reference).await.expect("get"), data);
    let key = store.object_key(&reference.content_hash);
    let stored = store
        .object_store()
        .get(&key)
        .await
        .expect("raw")
        .bytes()
        .await
        .expect("bytes");
    assert_ne!(stored, data, "stored framed, not raw");
}
