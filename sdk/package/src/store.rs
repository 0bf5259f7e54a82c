//! Content-addressed storage of package zips: `<data_dir>/extensions/<sha256 hex>.zip`.
//!
//! A write goes to a temporary file in the same directory, is flushed to disk, renamed into
//! place, and the directory is flushed, so a crash leaves either the whole file or none (and
//! perhaps a `*.tmp` file, which [`PackageStore::remove_temp_files`] clears at start). Writing
//! bytes that are already stored changes nothing. Reads check the content against its name.

use super::digest::Sha256;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The stored packages of one data directory.
#[derive(Debug, Clone)]
pub struct PackageStore {
    dir: PathBuf,
}

/// A storage failure: the server's (disk, permissions), not the uploader's; retrying may help
/// once the cause is fixed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("stored package {path} is corrupt: its content hashes to {actual}")]
    Corrupt { path: PathBuf, actual: Sha256 },
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The result of [`PackageStore::put`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub sha256: Sha256,
    pub path: PathBuf,
    /// False when the same bytes were already stored.
    pub created: bool,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl PackageStore {
    /// The store under `data_dir` (`<data_dir>/extensions`); nothing is created yet.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("extensions"),
        }
    }

    /// The directory holding the packages.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the package with `sha256` is (or would be) stored.
    pub fn path_for(&self, sha256: &Sha256) -> PathBuf {
        self.dir.join(format!("{sha256}.zip"))
    }

    /// Stores `bytes` under their SHA-256, atomically; idempotent.
    pub fn put(&self, bytes: &[u8]) -> Result<Stored, StoreError> {
        let sha256 = Sha256::of(bytes);
        let path = self.path_for(&sha256);
        if self.get(&sha256).is_ok() {
            return Ok(Stored {
                sha256,
                path,
                created: false,
            });
        }
        fs::create_dir_all(&self.dir).map_err(io_error("create", &self.dir))?;
        let temp = self.dir.join(format!(
            ".{sha256}.{}.{}.tmp",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = write_synced(&temp, bytes)
            .and_then(|()| fs::rename(&temp, &path).map_err(io_error("rename", &temp)));
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        sync_dir(&self.dir)?;
        Ok(Stored {
            sha256,
            path,
            created: true,
        })
    }

    /// Reads the package with `sha256`, checking its content.
    pub fn get(&self, sha256: &Sha256) -> Result<Vec<u8>, StoreError> {
        let path = self.path_for(sha256);
        let bytes = fs::read(&path).map_err(io_error("read", &path))?;
        let actual = Sha256::of(&bytes);
        if actual != *sha256 {
            return Err(StoreError::Corrupt { path, actual });
        }
        Ok(bytes)
    }

    /// Whether a file is stored under `sha256` (its content is not checked).
    pub fn contains(&self, sha256: &Sha256) -> bool {
        self.path_for(sha256).is_file()
    }

    /// Deletes the package with `sha256`; returns whether it existed.
    pub fn delete(&self, sha256: &Sha256) -> Result<bool, StoreError> {
        let path = self.path_for(sha256);
        match fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&self.dir)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error("delete", &path)(e)),
        }
    }

    /// Removes temporary files left by an interrupted [`put`](Self::put); returns how many.
    /// Call at start, before any import runs.
    pub fn remove_temp_files(&self) -> Result<usize, StoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_error("list", &self.dir)(e)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(io_error("list", &self.dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let path = entry.path();
                fs::remove_file(&path).map_err(io_error("delete", &path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_error("create", path))?;
    file.write_all(bytes).map_err(io_error("write", path))?;
    file.sync_all().map_err(io_error("flush", path))
}

/// Flushes a directory's entries (a rename or delete) to disk. A no-op where directories cannot
/// be opened as files (Windows).
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("flush", dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A unique directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let dir = std::env::temp_dir().join(format!(
                "thingport-store-{tag}-{}-{n}-{nanos}",
                std::process::id()
            ));
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn put_get_delete_round_trip() {
        let tmp = TempDir::new("round-trip");
        let store = PackageStore::new(&tmp.0);
        assert_eq!(store.dir(), tmp.0.join("extensions"));
        let stored = store.put(b"package bytes").unwrap();
        assert!(stored.created);
        assert_eq!(stored.sha256, Sha256::of(b"package bytes"));
        assert_eq!(
            stored.path,
            tmp.0
                .join("extensions")
                .join(format!("{}.zip", stored.sha256))
        );
        assert!(store.contains(&stored.sha256));
        assert_eq!(store.get(&stored.sha256).unwrap(), b"package bytes");
        assert!(store.delete(&stored.sha256).unwrap());
        assert!(!store.contains(&stored.sha256));
        assert!(!store.delete(&stored.sha256).unwrap());
    }

    #[test]
    fn put_is_idempotent_and_leaves_no_temp_files() {
        let tmp = TempDir::new("idempotent");
        let store = PackageStore::new(&tmp.0);
        let first = store.put(b"same").unwrap();
        let second = store.put(b"same").unwrap();
        assert!(first.created);
        assert!(!second.created);
        assert_eq!(first.path, second.path);
        let names: Vec<String> = fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [format!("{}.zip", first.sha256)]);
    }

    #[test]
    fn a_missing_package_is_a_read_error_naming_the_path() {
        let tmp = TempDir::new("missing");
        let store = PackageStore::new(&tmp.0);
        let sha = Sha256::of(b"never stored");
        let err = store.get(&sha).unwrap_err();
        assert!(err.to_string().starts_with("failed to read "), "{err}");
        assert!(err.to_string().contains(&sha.to_hex()), "{err}");
    }

    #[test]
    fn a_corrupt_package_is_detected_and_replaced_by_put() {
        let tmp = TempDir::new("corrupt");
        let store = PackageStore::new(&tmp.0);
        let stored = store.put(b"original").unwrap();
        fs::write(&stored.path, b"tampered").unwrap();
        let err = store.get(&stored.sha256).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        let again = store.put(b"original").unwrap();
        assert!(again.created);
        assert_eq!(store.get(&stored.sha256).unwrap(), b"original");
    }

    #[test]
    fn temp_files_from_an_interrupted_put_are_removed() {
        let tmp = TempDir::new("temp");
        let store = PackageStore::new(&tmp.0);
        assert_eq!(store.remove_temp_files().unwrap(), 0);
        let kept = store.put(b"kept").unwrap();
        fs::write(store.dir().join(".abc.1.2.tmp"), b"partial").unwrap();
        assert_eq!(store.remove_temp_files().unwrap(), 1);
        assert!(store.contains(&kept.sha256));
    }

    #[cfg(unix)]
    #[test]
    fn an_unwritable_directory_is_an_error_naming_the_path() {
        let tmp = TempDir::new("unwritable");
        // A file where the directory should be.
        fs::write(tmp.0.join("extensions"), b"not a dir").unwrap();
        let store = PackageStore::new(&tmp.0);
        let err = store.put(b"x").unwrap_err();
        assert!(err.to_string().contains("extensions"), "{err}");
    }
}
