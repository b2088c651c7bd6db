//! The data directory: created on first open, locked while a process uses it.

use std::fs::{self, File, TryLockError};
use std::path::Path;

use wharf_core::{Error, Result};

/// Holds the exclusive lock on a data directory; released on drop.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

/// Creates `path` if needed and takes its lock, so two servers can never
/// write one database (SQLite's own locking would let them interleave).
pub(crate) fn lock(path: &Path) -> Result<DirLock> {
    let shown = path.display();
    if path.exists() && !path.is_dir() {
        return Err(Error::Storage(format!(
            "data directory {shown} exists and is not a directory"
        )));
    }
    fs::create_dir_all(path)
        .map_err(|e| Error::Storage(format!("cannot create data directory {shown}: {e}")))?;
    let lock_path = path.join("LOCK");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            Error::Storage(format!(
                "data directory {shown} is not writable ({}: {e})",
                lock_path.display()
            ))
        })?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: file }),
        Err(TryLockError::WouldBlock) => Err(Error::DataDirLocked {
            path: shown.to_string(),
        }),
        Err(TryLockError::Error(e)) => Err(Error::Storage(format!(
            "cannot lock data directory {shown}: {e}"
        ))),
    }
}
