//! Opening a data directory: persistence, locking, and refusing bad places.

use std::sync::Arc;

use wharf_core::{
    Durability, Error, ExpectedVersion, NewEvent, ReadDirection, StreamName, StreamStart,
    SystemClock,
};
use wharf_embedded::EmbeddedStore;
use wharf_storage::{AppendRequest, EventLog, QueueStore};

/// The page size of Wharf's databases (`schema::PAGE_SIZE`).
const PAGE: usize = 16 * 1024;

fn open(path: &std::path::Path) -> wharf_core::Result<EmbeddedStore> {
    EmbeddedStore::open(path, Durability::Full, Arc::new(SystemClock))
}

#[tokio::test]
async fn events_survive_close_and_reopen_with_positions_intact() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).unwrap();
    let appended = log
        .append(AppendRequest {
            stream: "keep".parse().unwrap(),
            expected: ExpectedVersion::NoStream,
            events: vec![NewEvent::new("A", "1"), NewEvent::new("B", "2")],
        })
        .await
        .unwrap();
    log.close().await;
    drop(log);

    let log = open(dir.path()).unwrap();
    let events = log
        .read_stream(
            &"keep".parse().unwrap(),
            StreamStart::Edge,
            ReadDirection::Forwards,
            10,
        )
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].position, appended.result().first_position);
    assert_eq!(
        *log.watch_head().borrow(),
        appended.result().last_position.next()
    );
    // The next append continues the log where it was.
    let next = log
        .append(AppendRequest {
            stream: "keep".parse().unwrap(),
            expected: ExpectedVersion::Exact(1),
            events: vec![NewEvent::new("C", "3")],
        })
        .await
        .unwrap();
    assert_eq!(
        next.result().first_position,
        appended.result().last_position.next()
    );
    log.close().await;
}

#[test]
fn a_locked_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path()).unwrap();
    let err = open(dir.path()).err().expect("second open fails");
    assert!(matches!(err, Error::DataDirLocked { .. }), "{err:?}");
    assert!(err.to_string().contains("locked by another Wharf process"));
}

#[test]
fn a_data_directory_path_that_is_a_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"precious").unwrap();
    let err = open(&file).err().expect("a file is not a data directory");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
    assert!(err.to_string().contains("not a directory"), "{err}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"precious",
        "the file is untouched"
    );
}

#[test]
fn a_data_directory_that_cannot_be_created_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let under_file = file.join("data");
    let err = open(&under_file).err().expect("cannot create under a file");
    assert!(
        err.to_string().contains("cannot create data directory"),
        "{err}"
    );
    assert!(err.to_string().contains("plain-file/data"), "{err}");
}

#[test]
fn a_data_directory_on_a_filesystem_that_refuses_writes_is_refused() {
    // procfs refuses new directories even to root, unlike a chmod'ed one.
    let path = std::path::Path::new("/proc/wharf-data-test");
    let err = open(path).err().expect("procfs is not writable");
    assert!(err.to_string().contains("/proc/wharf-data-test"), "{err}");
    assert!(!path.exists());
}

#[test]
fn a_database_from_a_newer_wharf_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).unwrap();
    let db = log.database_path().to_path_buf();
    drop(log);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = open(dir.path()).err().expect("newer schema is refused");
    assert!(err.to_string().contains("schema version 99"), "{err}");
    assert!(err.to_string().contains("upgrade Wharf"), "{err}");
    // The file is healthy: the refusal must not call it damaged.
    assert!(!err.to_string().contains("damaged"), "{err}");
}

/// Closes `store` and checkpoints its WAL into the database file, which
/// then holds everything (a damaged page cannot hide behind a WAL copy);
/// returns the file.
async fn close_into_the_file(store: EmbeddedStore) -> std::path::PathBuf {
    let db = store.database_path().to_path_buf();
    store.close().await;
    drop(store);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    db
}

/// Overwrites the header and cell pointers of each table leaf page (type
/// byte 13) that holds `marker`, so reading a row there fails while the
/// rest of the file reads; interior pages, whose free space may still hold
/// stale copies of rows, are left alone.
fn damage_leaves_holding(db: &std::path::Path, marker: &[u8]) {
    const TABLE_LEAF: u8 = 13;
    let mut bytes = std::fs::read(db).unwrap();
    let mut damaged = 0;
    // Page 1 starts with the file header; no row of ours is there.
    for start in (PAGE..bytes.len()).step_by(PAGE) {
        let end = (start + PAGE).min(bytes.len());
        let leaf = bytes[start] == TABLE_LEAF;
        if leaf && bytes[start..end].windows(64).any(|w| w == &marker[..64]) {
            bytes[start..start + 64].fill(0xa5);
            damaged += 1;
        }
    }
    assert!(damaged > 0, "no leaf page holds the marker");
    std::fs::write(db, bytes).unwrap();
}

/// Overwrites the start of every page after the first (the header and the
/// schema stay readable) with garbage, as a failing disk might.
fn damage(db: &std::path::Path) {
    use std::io::{Seek, SeekFrom, Write};
    let len = std::fs::metadata(db).unwrap().len();
    let mut file = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    let page = PAGE as u64;
    let mut at = 2 * page;
    while at < len {
        file.seek(SeekFrom::Start(at + 8)).unwrap();
        file.write_all(&[0xa5; 200]).unwrap();
        at += page;
    }
    file.sync_all().unwrap();
}

#[tokio::test]
async fn a_damaged_database_is_refused_saying_it_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let queue = "jobs".parse().unwrap();
    let messages = (0..200)
        .map(|i| wharf_core::NewMessage::new(format!("message {i}")))
        .collect();
    store.enqueue(&queue, messages).await.unwrap();
    let db = close_into_the_file(store).await;
    damage(&db);
    let before = std::fs::read(&db).unwrap();

    let err = open(dir.path())
        .err()
        .expect("a damaged database is refused");
    let said = err.to_string();
    assert!(said.contains("is damaged"), "{said}");
    assert!(said.contains("SQLite's integrity check: "), "{said}");
    assert!(
        said.contains("restore the data directory from a backup"),
        "{said}"
    );
    assert!(said.contains(&db.display().to_string()), "{said}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "the file is untouched");
}

#[tokio::test]
async fn a_damaged_page_met_after_the_open_fails_the_request_as_damage_not_as_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let queue = "jobs".parse().unwrap();
    // Payloads no other row holds, so the pages holding them are known.
    let marker = vec![b'Z'; 4000];
    for _ in 0..50 {
        let message = wharf_core::NewMessage::new(marker.clone());
        store.enqueue(&queue, vec![message]).await.unwrap();
    }
    let db = close_into_the_file(store).await;
    // The queue's state loads, its content cannot be read.
    damage_leaves_holding(&db, &marker);

    let store = open(dir.path()).unwrap();
    let options = wharf_core::DequeueOptions {
        max_messages: 100,
        ..Default::default()
    };
    let err = store.dequeue(&queue, options).await.unwrap_err();
    assert!(matches!(err, Error::Storage(_)), "{err:?}");
    let said = err.to_string();
    assert!(said.contains("is damaged"), "{said}");
    assert!(
        said.contains("restore the data directory from a backup"),
        "{said}"
    );
    assert!(said.contains(&db.display().to_string()), "{said}");
    store.close().await;
}

#[tokio::test]
async fn a_read_that_meets_a_damaged_page_says_the_file_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).unwrap();
    let marker = vec![b'Q'; 4000];
    let (old, newer) = ("old".parse().unwrap(), "newer".parse().unwrap());
    let append = |stream: &StreamName, data: Vec<u8>| AppendRequest {
        stream: stream.clone(),
        expected: ExpectedVersion::Any,
        events: vec![NewEvent::new("E", data)],
    };
    log.append(append(&old, marker.clone())).await.unwrap();
    // Later events fill later pages, so the log's head stays readable.
    for _ in 0..20 {
        log.append(append(&newer, vec![b'R'; 4000])).await.unwrap();
    }
    let db = close_into_the_file(log).await;
    damage_leaves_holding(&db, &marker);

    let log = open(dir.path()).unwrap();
    let err = log
        .read_stream(&old, StreamStart::Edge, ReadDirection::Forwards, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Storage(_)), "{err:?}");
    assert!(
        err.to_string().contains("database file is damaged"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("restore the data directory from a backup"),
        "{err}"
    );
    log.close().await;
}
