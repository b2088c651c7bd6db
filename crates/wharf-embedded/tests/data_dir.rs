//! Opening a data directory: persistence, locking, and refusing bad places.

use std::sync::Arc;

use wharf_core::{
    Durability, Error, ExpectedVersion, NewEvent, ReadDirection, StreamStart, SystemClock,
};
use wharf_embedded::EmbeddedStore;
use wharf_storage::{AppendRequest, EventLog};

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
}
