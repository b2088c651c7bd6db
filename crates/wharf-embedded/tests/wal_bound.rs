//! The write-ahead log stays bounded under a steady write load.
//!
//! SQLite starts its WAL over only at a write transaction that begins when
//! every frame has been checkpointed; with commits landing while the
//! checkpoint thread copies, that never happens by itself and the WAL grows
//! by everything written. The writer closes that gap (see `checkpoint.rs`);
//! without it this test's WAL reaches about the 256 MiB it writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use wharf_core::{Durability, NewMessage, QueueName, SystemClock};
use wharf_embedded::EmbeddedStore;
use wharf_storage::QueueStore;

const WRITERS: usize = 4;
const BATCH: usize = 16;
const MESSAGE_BYTES: usize = 4096;
const TOTAL_BYTES: u64 = 256 * 1024 * 1024;
/// A quarter of what the load writes. The writer checkpoints by itself
/// once 32 MiB of WAL frames were written since its last checkpoint,
/// waiting for one of the checkpoint thread to end if it must, so the WAL
/// stays near that however far the checkpoint thread falls behind (CI runs
/// this beside other tests on two cores).
const WAL_LIMIT: u64 = 64 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_write_load_keeps_the_wal_bounded() {
    let dir = tempfile::tempdir().expect("temporary directory");
    // Relaxed: commits as fast as the writer goes, so the load never pauses.
    let store = Arc::new(
        EmbeddedStore::open(dir.path(), Durability::Relaxed, Arc::new(SystemClock))
            .expect("open embedded store"),
    );
    let wal = store.database_path().with_extension("db-wal");
    let written = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));

    let watcher = {
        let (wal, done) = (wal.clone(), done.clone());
        tokio::spawn(async move {
            let mut largest = 0;
            while !done.load(Ordering::Relaxed) {
                let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
                largest = largest.max(size);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            largest
        })
    };

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, written) = (store.clone(), written.clone());
        writers.push(tokio::spawn(async move {
            let queue = QueueName::new(format!("load-{w}")).unwrap();
            let data = Bytes::from(vec![w as u8; MESSAGE_BYTES]);
            while written.load(Ordering::Relaxed) < TOTAL_BYTES {
                let batch = vec![NewMessage::new(data.clone()); BATCH];
                store.enqueue(&queue, batch).await.expect("enqueue");
                written.fetch_add((BATCH * MESSAGE_BYTES) as u64, Ordering::Relaxed);
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer task");
    }
    done.store(true, Ordering::Relaxed);
    let largest = watcher.await.expect("watcher task");
    assert!(
        largest <= WAL_LIMIT,
        "the WAL reached {} MiB while {} MiB were written; it should restart \
         and stay under {} MiB",
        largest >> 20,
        written.load(Ordering::Relaxed) >> 20,
        WAL_LIMIT >> 20
    );
}
