//! Writing a package zip deterministically, and writing a file atomically.
//!
//! Same files in, same bytes out: entries are written in path order, each deflated with the
//! same level, dated 1980-01-01 00:00:00 (the zip format's epoch), with mode 0644, no extra
//! fields and no directory entries.

use anyhow::Context as _;
use std::collections::BTreeMap;
use std::io::{Cursor, Write as _};
use std::path::Path;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

/// Files of a package, by path inside the zip.
pub type Entries = BTreeMap<String, Vec<u8>>;

/// The zip of `entries`, byte for byte the same for the same entries.
pub fn zip_entries(entries: &Entries) -> anyhow::Result<Vec<u8>> {
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(6))
        .last_modified_time(DateTime::default())
        .unix_permissions(0o644);
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    for (path, bytes) in entries {
        zip.start_file(path.as_str(), options)
            .with_context(|| format!("failed to add {path} to the package"))?;
        zip.write_all(bytes)
            .with_context(|| format!("failed to add {path} to the package"))?;
    }
    let cursor = zip.finish().context("failed to finish the package zip")?;
    Ok(cursor.into_inner())
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so
/// `path` holds either its old content or all of the new, never a part. The file gets mode 0644.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let fail = || format!("failed to write {}", path.display());
    let mut tmp = tempfile::Builder::new()
        .prefix(".thingport-pack-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(fail)?;
    tmp.write_all(bytes).with_context(fail)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .with_context(fail)?;
    }
    tmp.as_file().sync_all().with_context(fail)?;
    tmp.persist(path).map_err(|e| e.error).with_context(fail)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use thingport_package::{read_zip, ZipLimits};

    fn entries() -> Entries {
        let mut e = Entries::new();
        e.insert("metadata.xml".into(), b"<Entities/>".to_vec());
        e.insert("lib/t/liba.so".into(), vec![7u8; 10_000]);
        e.insert("signature.ed25519".into(), b"signature: x\n".to_vec());
        e
    }

    #[test]
    fn same_entries_give_the_same_bytes() {
        let a = zip_entries(&entries()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let b = zip_entries(&entries()).unwrap();
        assert_eq!(a, b);
        let mut changed = entries();
        changed.insert("metadata.xml".into(), b"<Entities />".to_vec());
        assert_ne!(a, zip_entries(&changed).unwrap());
    }

    #[test]
    fn the_zip_reads_back_under_the_servers_limits_in_path_order() {
        let bytes = zip_entries(&entries()).unwrap();
        let files = read_zip(&bytes, &ZipLimits::default()).unwrap();
        assert_eq!(files, entries());
        let archive = zip::ZipArchive::new(Cursor::new(&bytes)).unwrap();
        let names: Vec<&str> = archive.file_names().collect();
        assert_eq!(names.len(), 3);
        assert_eq!(
            archive.name_for_index(0),
            Some("lib/t/liba.so"),
            "{names:?}"
        );
        assert_eq!(archive.name_for_index(2), Some("signature.ed25519"));
    }

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.zip");
        std::fs::write(&path, b"old").unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.zip")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
        }
    }

    #[test]
    fn atomic_write_into_a_missing_directory_fails_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/out.zip");
        let err = write_atomically(&path, b"x").unwrap_err();
        assert!(format!("{err:#}").contains("missing/out.zip"), "{err:#}");
    }
}
