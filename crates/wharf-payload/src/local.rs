//! Durable writes and direct reads of the filesystem store.
//!
//! object_store's `LocalFileSystem` renames a finished temporary file into
//! place but never calls `fsync`: after a power failure the object may be
//! gone or empty while the event that references it was committed. Worse, a
//! later put of the same payload would find the (empty) file and count it as
//! a dedup hit. So puts to the filesystem store take this path instead:
//!
//! 1. hash the payload, and if `{hex}.bin` exists, fsync the directory (the
//!    entry may have been created by a concurrent put that has not synced it
//!    yet) and report a dedup hit;
//! 2. write the object to a temporary file in the same directory and
//!    `fdatasync` it;
//! 3. rename it into place without replacing anything (`renameat2` with
//!    `RENAME_NOREPLACE`; link + unlink where that is unsupported);
//! 4. fsync the directory.
//!
//! A name that exists therefore always has its bytes on disk, and a put that
//! returned survives power loss. Reads, listing and deletion go through
//! `LocalFileSystem`, except `get`, which reads the file directly into the
//! payload's buffer, hashing as it goes, on a blocking thread.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use wharf_core::ContentHash;

use crate::codec::{self, Codec, Decoder, Form};
use crate::failure::{Kind, StoreError};
use crate::key;

/// Bytes read from a file per call, and hashed while still in cache.
const READ_BLOCK: usize = 1 << 20;

/// The directory of a filesystem store.
#[derive(Debug, Clone)]
pub(crate) struct LocalDir {
    root: PathBuf,
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    Created,
    AlreadyThere,
}

impl LocalDir {
    /// The store in `root`, which must exist and be absolute.
    pub(crate) fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// The file of `hash`.
    pub(crate) fn path_of(&self, hash: &ContentHash) -> PathBuf {
        self.root.join(key::object_name(hash))
    }

    /// Stores `data` under `hash` durably; see the module docs.
    pub(crate) fn put(
        &self,
        hash: &ContentHash,
        data: &[u8],
        codec: &Codec,
    ) -> Result<Written, StoreError> {
        let target = self.path_of(hash);
        match std::fs::symlink_metadata(&target) {
            Ok(_) => {
                self.sync_dir()?;
                return Ok(Written::AlreadyThere);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StoreError::from_io(
                    &e,
                    format_args!("checking {}", target.display()),
                ));
            }
        }
        let temp = self.temp_path(hash)?;
        let written = self.write_temp(&temp, data, codec).and_then(|()| {
            rename_noreplace(&temp, &target).map_err(|e| {
                StoreError::from_io(
                    &e,
                    format_args!("moving {} to {}", temp.display(), target.display()),
                )
            })
        });
        let outcome = match written {
            Ok(()) => Written::Created,
            Err(err) if err.kind == Kind::AlreadyExists => Written::AlreadyThere,
            Err(err) => {
                let _ = std::fs::remove_file(&temp);
                return Err(err);
            }
        };
        if outcome == Written::AlreadyThere {
            let _ = std::fs::remove_file(&temp);
        }
        self.sync_dir()?;
        Ok(outcome)
    }

    fn temp_path(&self, hash: &ContentHash) -> Result<PathBuf, StoreError> {
        let mut nonce = [0u8; 8];
        SystemRandom::new().fill(&mut nonce).map_err(|_| {
            StoreError::new(Kind::Unavailable, "the system random generator failed").permanent()
        })?;
        // Leading dot and trailing `.tmp`: never a payload name, so listing
        // and the reaper skip it.
        Ok(self.root.join(format!(
            ".{}.{:016x}.tmp",
            key::object_name(hash),
            u64::from_le_bytes(nonce)
        )))
    }

    fn write_temp(&self, temp: &Path, data: &[u8], codec: &Codec) -> Result<(), StoreError> {
        let io_err =
            |e: io::Error| StoreError::from_io(&e, format_args!("writing {}", temp.display()));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(temp)
            .map_err(io_err)?;
        if codec.is_identity() {
            file.write_all(data).map_err(io_err)?;
        } else {
            let mut encoder = codec.encoder(data.len() as u64)?;
            file.write_all(encoder.header()).map_err(io_err)?;
            let mut frame = Vec::with_capacity(encoder.frame_capacity(codec::CHUNK_SIZE));
            for chunk in codec::chunks_of(data) {
                frame.clear();
                encoder.encode_chunk(chunk, &mut frame)?;
                file.write_all(&frame).map_err(io_err)?;
            }
        }
        file.sync_data().map_err(io_err)
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        File::open(&self.root)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| {
                StoreError::from_io(
                    &e,
                    format_args!("fsync of directory {}", self.root.display()),
                )
            })
    }

    /// Reads and verifies the payload in `path`.
    pub(crate) fn get(
        path: &Path,
        codec: &Codec,
        hash: &ContentHash,
        size: u64,
        form: Form,
    ) -> Result<Vec<u8>, StoreError> {
        let io_err =
            |e: io::Error| StoreError::from_io(&e, format_args!("reading {}", path.display()));
        let mut file = File::open(path).map_err(io_err)?;
        let object_size = file.metadata().map_err(io_err)?.len();
        let mut decoder = Decoder::new(codec, size, object_size, form)?;
        let mut block = vec![0u8; READ_BLOCK.min(object_size as usize).max(1)];
        loop {
            let n = match file.read(&mut block) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(e)),
            };
            decoder.push(&block[..n])?;
        }
        decoder.finish(hash)
    }
}

/// Renames `from` to `to` unless `to` exists (then `AlreadyExists`).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
        let (from_c, to_c) = (c(from)?, c(to)?);
        // SAFETY: both are valid NUL-terminated paths, and AT_FDCWD is
        // ignored for absolute paths; renameat2 only reads them.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                from_c.as_ptr(),
                libc::AT_FDCWD,
                to_c.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // The filesystem does not support the flag: fall back below.
            Some(libc::EINVAL) | Some(libc::ENOSYS) => {}
            _ => return Err(err),
        }
    }
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::content_hash;

    #[test]
    fn a_put_leaves_exactly_the_object_and_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = LocalDir::new(dir.path().to_path_buf());
        let data = b"hello payload".to_vec();
        let hash = content_hash(&data);
        assert_eq!(
            local.put(&hash, &data, &Codec::default()).expect("put"),
            Written::Created
        );
        assert_eq!(
            local.put(&hash, &data, &Codec::default()).expect("again"),
            Written::AlreadyThere
        );
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![key::object_name(&hash)]);
        assert_eq!(std::fs::read(local.path_of(&hash)).expect("read"), data);
        let read = LocalDir::get(
            &local.path_of(&hash),
            &Codec::default(),
            &hash,
            data.len() as u64,
            Form::Detect,
        )
        .expect("get");
        assert_eq!(read, data);
    }

    #[test]
    fn renaming_onto_an_existing_name_is_already_exists_and_keeps_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"new").expect("a");
        std::fs::write(&b, b"old").expect("b");
        let err = rename_noreplace(&a, &b).expect_err("b exists");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&b).expect("b"), b"old");
        let c = dir.path().join("c");
        rename_noreplace(&a, &c).expect("c is free");
        assert!(!a.exists());
        assert_eq!(std::fs::read(&c).expect("c"), b"new");
    }
}
