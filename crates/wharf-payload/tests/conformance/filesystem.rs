//! The suite on the filesystem store, in a temporary directory.

use std::sync::Arc;

use wharf_core::{Error, PayloadOffloadConfig, PayloadStorageType};
use wharf_payload::PayloadStore;

use crate::fixture::{Fixture, Opener, Variant, payload, test_clock};

fn config(dir: &std::path::Path) -> PayloadOffloadConfig {
    let mut config = PayloadOffloadConfig {
        store_type: PayloadStorageType::Filesystem,
        ..PayloadOffloadConfig::default()
    };
    // Not created yet: `from_config` makes it.
    config.filesystem.base_path = dir.join("payloads");
    config
}

pub async fn fixture(variant: Variant) -> Option<Fixture> {
    let clock = test_clock();
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = config(dir.path());
    let opener_clock = clock.clone();
    let opener: Opener = Box::new(move |variant| {
        PayloadStore::from_config(&variant.apply(&config), Arc::new(opener_clock.clone()))
            .expect("filesystem store")
    });
    Some(Fixture::new(variant, clock, opener, "", Box::new(dir)))
}

payload_store_conformance!(crate::filesystem::fixture);

fn file_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read the store's directory")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_uri_is_the_absolute_file_uri_of_a_file_holding_the_payload() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store =
        PayloadStore::from_config(&config(dir.path()), Arc::new(test_clock())).expect("store");
    let data = payload(1, 300_000);
    let reference = store.put(&data).await.expect("put");
    let root = std::fs::canonicalize(dir.path().join("payloads")).expect("created");
    let path = root.join(format!("{}.bin", reference.content_hash.to_hex()));
    let expected = url_of(&path);
    assert_eq!(reference.uri, expected);
    assert!(reference.uri.starts_with("file:///"));
    assert_eq!(
        std::fs::read(&path).expect("the file named by the URI"),
        data
    );
}

fn url_of(path: &std::path::Path) -> String {
    format!("file://{}", path.display())
}

#[tokio::test]
async fn puts_leave_only_payload_files_behind() {
    let dir = tempfile::tempdir().expect("temporary directory");
    for (variant, seed) in [(Variant::plain(), 1), (Variant::zstd_aes(), 2)] {
        let config = variant.apply(&config(dir.path()));
        let store = PayloadStore::from_config(&config, Arc::new(test_clock())).expect("store");
        for size in [100, 5000, 3 << 20] {
            store.put(&payload(seed, size)).await.expect("put");
        }
    }
    let names = file_names(&dir.path().join("payloads"));
    assert_eq!(names.len(), 6, "{names:?}");
    assert!(
        names.iter().all(|n| n.len() == 68 && n.ends_with(".bin")),
        "{names:?}"
    );
}

#[tokio::test]
async fn a_base_path_that_cannot_be_created_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").expect("file");
    let mut config = config(dir.path());
    config.filesystem.base_path = file.join("payloads");
    let err = PayloadStore::from_config(&config, Arc::new(test_clock())).expect_err("under a file");
    assert!(
        matches!(&err, Error::Storage(m) if m.contains("payload_offload.filesystem.base_path")),
        "{err}"
    );
}

#[tokio::test]
async fn a_relative_base_path_gives_absolute_uris() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let relative = pathdiff(dir.path());
    let mut config = config(dir.path());
    config.filesystem.base_path = relative.join("payloads");
    let store = PayloadStore::from_config(&config, Arc::new(test_clock())).expect("store");
    let reference = store.put(&payload(4, 10)).await.expect("put");
    let root = std::fs::canonicalize(dir.path().join("payloads")).expect("created");
    assert!(
        reference.uri.starts_with(&url_of(&root)),
        "{} is absolute",
        reference.uri
    );
}

/// `dir` relative to the current directory, by `..` steps.
fn pathdiff(dir: &std::path::Path) -> std::path::PathBuf {
    let cwd = std::env::current_dir().expect("cwd");
    let mut up = std::path::PathBuf::new();
    for _ in cwd.components().skip(1) {
        up.push("..");
    }
    up.join(dir.strip_prefix("/").expect("absolute temporary directory"))
}
