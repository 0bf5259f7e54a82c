//! Reading an untrusted zip archive into memory, safely.
//!
//! Every entry is checked from the central directory before any byte is decompressed: its path
//! (no absolute paths, `..`, backslashes, NUL or drive prefixes), its type (regular files and
//! directories only: no symlinks), its declared size and compression ratio, and the archive's
//! entry count and total declared size. Then each file is decompressed through a reader bounded
//! at its declared size plus one byte, so an entry whose data is larger than its header says is
//! refused without inflating it further. Nothing is written to disk.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use zip::result::ZipError as RawZipError;
use zip::{CompressionMethod, ZipArchive};

/// The files of an archive: path (always `/`-separated, relative, canonical) to content.
/// Directory entries are checked but not listed.
pub type Files = BTreeMap<String, Vec<u8>>;

const MIB: u64 = 1024 * 1024;

/// Hard limits applied to an archive. The defaults suit extension packages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipLimits {
    /// Most entries (files and directories) in one archive. Default 1,000.
    pub max_entries: usize,
    /// Most uncompressed bytes in total: for an upload, across the outer zip and every nested
    /// package. Default 256 MiB.
    pub max_total_size: u64,
    /// Most uncompressed bytes in one file. Default 128 MiB.
    pub max_file_size: u64,
    /// Highest compression ratio (uncompressed / compressed) allowed. Default 100.
    pub max_ratio: u64,
    /// Files of at most this many uncompressed bytes are exempt from the ratio check (a small
    /// file of repetitive text may compress better than 100:1 and is harmless). Default 1 MiB.
    pub ratio_exempt_size: u64,
}

impl Default for ZipLimits {
    fn default() -> Self {
        Self {
            max_entries: 1_000,
            max_total_size: 256 * MIB,
            max_file_size: 128 * MIB,
            max_ratio: 100,
            ratio_exempt_size: MIB,
        }
    }
}

/// Why an archive was refused. Every case is the uploader's fault; retrying the same bytes fails
/// the same way.
#[derive(Debug, thiserror::Error)]
pub enum ZipReadError {
    #[error("not a zip archive: {0}")]
    NotAZip(#[source] RawZipError),
    #[error("the zip archive has data before its first entry (a self-extracting archive?)")]
    PrefixedData,
    #[error("the zip archive has more than {max} entries")]
    TooManyEntries { max: usize },
    #[error("the zip archive holds the path {path:?} more than once")]
    DuplicatePath { path: String },
    #[error("unsafe path {path:?} in the zip archive: {reason}")]
    UnsafePath { path: String, reason: &'static str },
    #[error("entry {path:?} is a symbolic link; a package holds only regular files")]
    Symlink { path: String },
    #[error("entry {path:?} is not a regular file (unix mode {mode:o})")]
    SpecialFile { path: String, mode: u32 },
    #[error("entry {path:?} is encrypted; packages are not encrypted")]
    Encrypted { path: String },
    #[error("entry {path:?} uses the unsupported compression method {method}")]
    UnsupportedCompression { path: String, method: String },
    #[error("entry {path:?} declares {size} bytes, over the limit of {max} bytes per file")]
    FileTooLarge { path: String, size: u64, max: u64 },
    #[error("the zip archive holds more than {max} uncompressed bytes in total")]
    TotalTooLarge { max: u64 },
    #[error(
        "entry {path:?} declares a compression ratio of {ratio}:1, over the limit of {max}:1 \
         (a zip bomb?)"
    )]
    RatioTooHigh { path: String, ratio: u64, max: u64 },
    #[error("entry {path:?} holds more data than the {declared} bytes its header declares")]
    LargerThanDeclared { path: String, declared: u64 },
    #[error("entry {path:?} holds {actual} bytes, fewer than the {declared} its header declares")]
    SmallerThanDeclared {
        path: String,
        declared: u64,
        actual: u64,
    },
    #[error("entry {path:?} is corrupt: {source}")]
    Corrupt {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("entry {path:?} cannot be read: {source}")]
    Entry {
        path: String,
        #[source]
        source: RawZipError,
    },
}

/// Reads `bytes` as a zip archive into memory under `limits`.
pub fn read_zip(bytes: &[u8], limits: &ZipLimits) -> Result<Files, ZipReadError> {
    let mut remaining = limits.max_total_size;
    read_zip_budgeted(bytes, limits, &mut remaining)
}

/// [`read_zip`], drawing the uncompressed size from `remaining` (shared by nested archives).
pub(super) fn read_zip_budgeted(
    bytes: &[u8],
    limits: &ZipLimits,
    remaining: &mut u64,
) -> Result<Files, ZipReadError> {
    // The zip crate allocates a record per declared entry while opening: refuse a huge
    // declared count before that.
    if declared_entry_count(bytes).is_some_and(|n| n > limits.max_entries as u64) {
        return Err(ZipReadError::TooManyEntries {
            max: limits.max_entries,
        });
    }
    let mut archive = ZipArchive::new(Cursor::new(bytes)).map_err(ZipReadError::NotAZip)?;
    if archive.offset() != 0 {
        return Err(ZipReadError::PrefixedData);
    }
    if archive.len() > limits.max_entries {
        return Err(ZipReadError::TooManyEntries {
            max: limits.max_entries,
        });
    }
    check_no_duplicates(bytes, &archive, limits)?;

    // Pass 1: check every entry from the central directory, decompressing nothing.
    let mut planned = Vec::with_capacity(archive.len());
    let mut total: u64 = 0;
    for index in 0..archive.len() {
        let name = archive.name_for_index(index).unwrap_or_default().to_owned();
        let entry = archive
            .by_index_raw(index)
            .map_err(|source| ZipReadError::Entry { path: name, source })?;
        let path = entry.name().to_owned();
        check_path(&path, entry.name_raw())?;
        check_file_type(&path, entry.unix_mode())?;
        if entry.encrypted() {
            return Err(ZipReadError::Encrypted { path });
        }
        if path.ends_with('/') {
            continue;
        }
        let method = entry.compression();
        if !matches!(
            method,
            CompressionMethod::Stored | CompressionMethod::Deflated
        ) {
            return Err(ZipReadError::UnsupportedCompression {
                path,
                method: method.to_string(),
            });
        }
        let size = entry.size();
        if size > limits.max_file_size {
            return Err(ZipReadError::FileTooLarge {
                path,
                size,
                max: limits.max_file_size,
            });
        }
        if size > limits.ratio_exempt_size {
            let ratio = size / entry.compressed_size().max(1);
            if ratio > limits.max_ratio {
                return Err(ZipReadError::RatioTooHigh {
                    path,
                    ratio,
                    max: limits.max_ratio,
                });
            }
        }
        total = total.saturating_add(size);
        if total > *remaining {
            return Err(ZipReadError::TotalTooLarge {
                max: limits.max_total_size,
            });
        }
        planned.push((index, path, size));
    }

    // Pass 2: decompress each file through a reader bounded at its declared size + 1.
    let mut files = Files::new();
    for (index, path, declared) in planned {
        let entry = archive
            .by_index(index)
            .map_err(|source| ZipReadError::Entry {
                path: path.clone(),
                source,
            })?;
        let mut data = Vec::with_capacity(usize::try_from(declared.min(8 * MIB)).unwrap_or(0));
        entry
            .take(declared.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|source| ZipReadError::Corrupt {
                path: path.clone(),
                source,
            })?;
        let actual = data.len() as u64;
        if actual > declared {
            return Err(ZipReadError::LargerThanDeclared { path, declared });
        }
        if actual < declared {
            return Err(ZipReadError::SmallerThanDeclared {
                path,
                declared,
                actual,
            });
        }
        files.insert(path, data);
    }
    *remaining -= total;
    Ok(files)
}

/// Refuses a path that could escape the directory it is extracted to, or that names the same
/// file in two ways. Accepted: `a/b/c.txt` and directories `a/b/`.
pub(super) fn check_path(path: &str, raw: &[u8]) -> Result<(), ZipReadError> {
    let unsafe_path = |reason| ZipReadError::UnsafePath {
        path: path.to_owned(),
        reason,
    };
    if raw.contains(&0) || path.contains('\0') {
        return Err(unsafe_path("it contains a NUL byte"));
    }
    if path.is_empty() {
        return Err(unsafe_path("it is empty"));
    }
    if path.chars().any(char::is_control) {
        return Err(unsafe_path("it contains a control character"));
    }
    if path.contains('\\') {
        return Err(unsafe_path("it contains a backslash"));
    }
    if path.starts_with('/') {
        return Err(unsafe_path("it is absolute"));
    }
    if path.contains(':') {
        return Err(unsafe_path("it contains ':' (a drive prefix?)"));
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    for component in trimmed.split('/') {
        match component {
            ".." => return Err(unsafe_path("it contains '..'")),
            "." => return Err(unsafe_path("it contains '.' as a component")),
            "" => return Err(unsafe_path("it contains an empty component")),
            _ => {}
        }
    }
    Ok(())
}

const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

/// Refuses symlinks and special files. Regular files and directories pass whatever the entry's
/// name says (a writer may mark a directory entry as a file or the reverse; both are harmless
/// in memory, where directory entries are skipped by their trailing `/`).
fn check_file_type(path: &str, mode: Option<u32>) -> Result<(), ZipReadError> {
    let Some(mode) = mode else { return Ok(()) };
    match mode & S_IFMT {
        // No type bits: some writers store only permissions.
        0 | S_IFREG | S_IFDIR => Ok(()),
        S_IFLNK => Err(ZipReadError::Symlink {
            path: path.to_owned(),
        }),
        _ => Err(ZipReadError::SpecialFile {
            path: path.to_owned(),
            mode,
        }),
    }
}

const EOCD_SIGNATURE: [u8; 4] = [0x50, 0x4b, 0x05, 0x06];
const EOCD_LEN: usize = 22;
const ZIP64_LOCATOR_SIGNATURE: [u8; 4] = [0x50, 0x4b, 0x06, 0x07];
const ZIP64_LOCATOR_LEN: usize = 20;
const ZIP64_EOCD_SIGNATURE: [u8; 4] = [0x50, 0x4b, 0x06, 0x06];

/// The total entry count declared by the last end-of-central-directory record (or its zip64
/// record), if one is found. A best-effort early check; the count is checked again after the
/// archive is opened.
fn declared_entry_count(bytes: &[u8]) -> Option<u64> {
    let last = bytes.len().checked_sub(EOCD_LEN)?;
    let lowest = last.saturating_sub(usize::from(u16::MAX));
    let eocd = (lowest..=last)
        .rev()
        .find(|&at| bytes[at..at + 4] == EOCD_SIGNATURE)?;
    let total = u16::from_le_bytes([bytes[eocd + 10], bytes[eocd + 11]]);
    if total != u16::MAX {
        return Some(u64::from(total));
    }
    let locator = bytes.get(eocd.checked_sub(ZIP64_LOCATOR_LEN)?..eocd)?;
    if locator[..4] != ZIP64_LOCATOR_SIGNATURE {
        return Some(u64::from(total));
    }
    let offset = usize::try_from(u64::from_le_bytes(locator[8..16].try_into().ok()?)).ok()?;
    let record = bytes.get(offset..offset.checked_add(40)?)?;
    if record[..4] != ZIP64_EOCD_SIGNATURE {
        return None;
    }
    Some(u64::from_le_bytes(record[32..40].try_into().ok()?))
}

const CENTRAL_HEADER_SIGNATURE: [u8; 4] = [0x50, 0x4b, 0x01, 0x02];
const CENTRAL_HEADER_LEN: usize = 46;

/// The zip crate keys entries by name, so a name that appears twice in the central directory is
/// silently collapsed (and a scanner and an extractor could disagree on its content). Count the
/// central directory records ourselves and refuse when there are more records than names.
fn check_no_duplicates(
    bytes: &[u8],
    archive: &ZipArchive<Cursor<&[u8]>>,
    limits: &ZipLimits,
) -> Result<(), ZipReadError> {
    let mut pos = usize::try_from(archive.central_directory_start()).unwrap_or(usize::MAX);
    let mut seen = std::collections::HashSet::new();
    let mut records = 0usize;
    while let Some(header) = bytes.get(pos..pos.saturating_add(CENTRAL_HEADER_LEN)) {
        if header[..4] != CENTRAL_HEADER_SIGNATURE {
            break;
        }
        let le16 = |at: usize| usize::from(u16::from_le_bytes([header[at], header[at + 1]]));
        let (name_len, extra_len, comment_len) = (le16(28), le16(30), le16(32));
        let name_start = pos + CENTRAL_HEADER_LEN;
        let raw_name = bytes
            .get(name_start..name_start + name_len)
            .unwrap_or_default();
        records += 1;
        if records > limits.max_entries {
            return Err(ZipReadError::TooManyEntries {
                max: limits.max_entries,
            });
        }
        if !seen.insert(raw_name) {
            return Err(ZipReadError::DuplicatePath {
                path: String::from_utf8_lossy(raw_name).into_owned(),
            });
        }
        pos = name_start + name_len + extra_len + comment_len;
    }
    if records > archive.len() {
        // Two raw names decoded to the same text (e.g. UTF-8 and CP437 spellings).
        let path = archive.file_names().next().unwrap_or_default().to_owned();
        return Err(ZipReadError::DuplicatePath { path });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
