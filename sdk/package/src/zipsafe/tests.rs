use super::*;
use crate::testutil::*;
use std::io::Write as _;

fn small_limits() -> ZipLimits {
    ZipLimits {
        max_entries: 10,
        max_total_size: 64 * 1024,
        max_file_size: 32 * 1024,
        max_ratio: 100,
        ratio_exempt_size: 1024,
    }
}

#[test]
fn reads_files_and_skips_directories() {
    let zip = zip_of(&[
        ("metadata.xml", b"<Entities/>"),
        ("lib/", b""),
        ("lib/x/libA.so", b"elf"),
    ]);
    let files = read_zip(&zip, &ZipLimits::default()).unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files["metadata.xml"], b"<Entities/>");
    assert_eq!(files["lib/x/libA.so"], b"elf");
}

#[test]
fn reads_stored_entries() {
    let zip = stored_zip_of(&[("a.txt", b"hello")]);
    assert_eq!(
        read_zip(&zip, &ZipLimits::default()).unwrap()["a.txt"],
        b"hello"
    );
}

#[test]
fn empty_zip_has_no_files() {
    let zip = zip_of(&[]);
    assert!(read_zip(&zip, &ZipLimits::default()).unwrap().is_empty());
}

#[test]
fn garbage_is_not_a_zip() {
    for garbage in [&b""[..], b"hello world", &[0u8; 4096], b"PK\x03\x04garbage"] {
        let err = read_zip(garbage, &ZipLimits::default()).unwrap_err();
        assert!(matches!(err, ZipReadError::NotAZip(_)), "{err:?}");
        assert!(err.to_string().starts_with("not a zip archive"), "{err}");
    }
}

#[test]
fn truncated_zip_is_refused() {
    let zip = zip_of(&[("a.txt", b"hello")]);
    let err = read_zip(&zip[..zip.len() / 2], &ZipLimits::default()).unwrap_err();
    assert!(matches!(err, ZipReadError::NotAZip(_)), "{err:?}");
}

#[test]
fn data_before_the_archive_is_refused() {
    let mut bytes = b"#!/bin/sh\nexit 0\n".to_vec();
    bytes.extend(zip_of(&[("a.txt", b"hello")]));
    let err = read_zip(&bytes, &ZipLimits::default()).unwrap_err();
    assert!(matches!(err, ZipReadError::PrefixedData), "{err:?}");
}

#[test]
fn zip_slip_paths_are_refused() {
    let cases = [
        ("../evil.so", "'..'"),
        ("lib/../../evil.so", "'..'"),
        ("lib/..", "'..'"),
        ("/etc/passwd", "absolute"),
        ("lib\\evil.so", "backslash"),
        ("C:/Windows/evil.dll", "drive"),
        ("C:evil.dll", "drive"),
        ("./metadata.xml", "'.'"),
        ("lib//evil.so", "empty component"),
        ("lib/\u{1b}[31m.so", "control"),
    ];
    for (path, reason) in cases {
        let zip = zip_of(&[(path, b"x")]);
        let err = read_zip(&zip, &ZipLimits::default()).unwrap_err();
        match &err {
            ZipReadError::UnsafePath { path: p, .. } => assert_eq!(p, path),
            other => panic!("{path}: expected an unsafe path error, got {other:?}"),
        }
        assert!(err.to_string().contains(reason), "{path}: {err}");
    }
}

#[test]
fn nul_in_a_name_is_refused() {
    let mut zip = zip_of(&[("aXb.txt", b"x")]);
    replace_bytes(&mut zip, b"aXb.txt", b"a\0b.txt");
    let err = read_zip(&zip, &ZipLimits::default()).unwrap_err();
    assert!(err.to_string().contains("NUL"), "{err}");
}

#[test]
fn check_path_accepts_ordinary_paths() {
    for p in [
        "metadata.xml",
        "lib/x86_64-unknown-linux-gnu/libA.so",
        "a/b/",
        "a..b/c",
    ] {
        check_path(p, p.as_bytes()).unwrap();
    }
    check_path("", b"").unwrap_err();
}

#[test]
fn symlinks_are_refused() {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    w.add_symlink(
        "lib/libA.so",
        "/etc/passwd",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    let zip = w.finish().unwrap().into_inner();
    let err = read_zip(&zip, &ZipLimits::default()).unwrap_err();
    assert!(
        matches!(&err, ZipReadError::Symlink { path } if path == "lib/libA.so"),
        "{err:?}"
    );
    assert!(err.to_string().contains("symbolic link"), "{err}");
}

#[test]
fn special_files_are_refused() {
    let mut zip = stored_zip_of(&[("fifo", b"")]);
    patch_first_entry_mode(&mut zip, 0o010_644);
    let err = read_zip(&zip, &ZipLimits::default()).unwrap_err();
    assert!(matches!(err, ZipReadError::SpecialFile { .. }), "{err:?}");
    // A socket's type bits contain the symlink bits; it must not pass as anything else.
    let mut zip = stored_zip_of(&[("sock", b"")]);
    patch_first_entry_mode(&mut zip, 0o140_644);
    let err = read_zip(&zip, &ZipLimits::default()).unwrap_err();
    assert!(matches!(err, ZipReadError::SpecialFile { .. }), "{err:?}");
}

#[test]
fn duplicate_paths_are_refused() {
    let mut zip = zip_of(&[("a.txt", b"first"), ("b.txt", b"second")]);
    replace_bytes(&mut zip, b"b.txt", b"a.txt");
    let err = read_zip(&zip, &ZipLimits::default()).unwrap_err();
    assert!(
        matches!(&err, ZipReadError::DuplicatePath { path } if path == "a.txt"),
        "{err:?}"
    );
}

#[test]
fn too_many_entries_are_refused() {
    let names: Vec<String> = (0..11).map(|i| format!("f{i}")).collect();
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let err = read_zip(&zip_of(&entries), &small_limits()).unwrap_err();
    assert!(
        matches!(err, ZipReadError::TooManyEntries { max: 10 }),
        "{err:?}"
    );
    read_zip(&zip_of(&entries[..10]), &small_limits()).unwrap();
}

#[test]
fn a_huge_declared_entry_count_is_refused_before_opening() {
    let mut zip = zip_of(&[("a", b"x")]);
    let eocd = zip.len() - 22;
    assert_eq!(zip[eocd..eocd + 4], [0x50, 0x4b, 5, 6]);
    zip[eocd + 8..eocd + 12].copy_from_slice(&[0xfe, 0xff, 0xfe, 0xff]);
    assert_eq!(declared_entry_count(&zip), Some(0xfffe));
    let err = read_zip(&zip, &ZipLimits::default()).unwrap_err();
    assert!(
        matches!(err, ZipReadError::TooManyEntries { max: 1000 }),
        "{err:?}"
    );
    assert_eq!(declared_entry_count(b"short"), None);
    assert_eq!(
        declared_entry_count(&zip_of(&[("a", b"x"), ("b", b"y")])),
        Some(2)
    );
}

#[test]
fn the_zip64_entry_count_is_read() {
    // Insert a zip64 end-of-central-directory record and locator before the EOCD record, and
    // mark the EOCD count as "see zip64".
    let zip = zip_of(&[("a", b"x")]);
    let eocd_at = zip.len() - 22;
    let mut out = zip[..eocd_at].to_vec();
    let record_at = out.len() as u64;
    out.extend([0x50, 0x4b, 6, 6]);
    out.extend(44u64.to_le_bytes()); // size of the rest of the record
    out.extend([45, 0, 45, 0]); // versions
    out.extend([0u8; 8]); // disk numbers
    out.extend(5_000u64.to_le_bytes()); // entries on this disk
    out.extend(5_000u64.to_le_bytes()); // total entries
    out.extend([0u8; 16]); // directory size and offset (unused here)
    out.extend([0x50, 0x4b, 6, 7, 0, 0, 0, 0]);
    out.extend(record_at.to_le_bytes());
    out.extend(1u32.to_le_bytes());
    let mut eocd = zip[eocd_at..].to_vec();
    eocd[10..12].copy_from_slice(&[0xff, 0xff]);
    out.extend(eocd);
    assert_eq!(declared_entry_count(&out), Some(5_000));
    let err = read_zip(&out, &ZipLimits::default()).unwrap_err();
    assert!(
        matches!(err, ZipReadError::TooManyEntries { .. }),
        "{err:?}"
    );
}

#[test]
fn a_file_over_the_size_limit_is_refused_by_its_declared_size() {
    let big = vec![7u8; 40 * 1024];
    let err = read_zip(&stored_zip_of(&[("big", &big)]), &small_limits()).unwrap_err();
    assert!(
        matches!(
            err,
            ZipReadError::FileTooLarge {
                size: 40960,
                max: 32768,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_declared_zip_bomb_is_refused_before_inflating() {
    // A tiny entry whose header claims 4 GiB - 1: refused by the declared size alone.
    let mut zip = zip_of(&[("bomb", b"tiny")]);
    patch_first_entry_sizes(&mut zip, None, u32::MAX);
    let err = read_zip(&zip, &ZipLimits::default()).unwrap_err();
    assert!(matches!(err, ZipReadError::FileTooLarge { .. }), "{err:?}");
}

#[test]
fn a_real_zip_bomb_is_refused_by_its_ratio() {
    // 8 MiB of zeros deflates to a few KiB: ratio ~1000:1, under the size limits.
    let zeros = vec![0u8; 8 * 1024 * 1024];
    let zip = zip_of(&[("bomb", &zeros)]);
    let err = read_zip(&zip, &ZipLimits::default()).unwrap_err();
    assert!(
        matches!(err, ZipReadError::RatioTooHigh { max: 100, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("zip bomb"), "{err}");
}

#[test]
fn small_repetitive_files_are_exempt_from_the_ratio_check() {
    let zeros = vec![0u8; 1024];
    let zip = zip_of(&[("zeros", &zeros)]);
    assert_eq!(read_zip(&zip, &small_limits()).unwrap()["zeros"], zeros);
}

#[test]
fn the_total_size_is_bounded() {
    let chunk = vec![1u8; 30 * 1024];
    let zip = stored_zip_of(&[("a", &chunk), ("b", &chunk), ("c", &chunk)]);
    let err = read_zip(&zip, &small_limits()).unwrap_err();
    assert!(
        matches!(err, ZipReadError::TotalTooLarge { max: 65536 }),
        "{err:?}"
    );
}

#[test]
fn the_budget_is_shared_and_drawn_down() {
    let chunk = vec![1u8; 30 * 1024];
    let zip = stored_zip_of(&[("a", &chunk)]);
    let limits = small_limits();
    let mut remaining = limits.max_total_size;
    read_zip_budgeted(&zip, &limits, &mut remaining).unwrap();
    read_zip_budgeted(&zip, &limits, &mut remaining).unwrap();
    assert_eq!(remaining, 4 * 1024);
    let err = read_zip_budgeted(&zip, &limits, &mut remaining).unwrap_err();
    assert!(matches!(err, ZipReadError::TotalTooLarge { .. }), "{err:?}");
}

#[test]
fn an_entry_larger_than_declared_is_cut_off_at_the_declared_size() {
    // 16 KiB of text deflated, header patched to claim 100 bytes: the reader stops at 101.
    let data: Vec<u8> = (0..16 * 1024).map(|i| b'a' + (i % 23) as u8).collect();
    let mut zip = zip_of(&[("liar", &data)]);
    patch_first_entry_sizes(&mut zip, None, 100);
    let err = read_zip(&zip, &ZipLimits::default()).unwrap_err();
    assert!(
        matches!(&err, ZipReadError::LargerThanDeclared { path, declared: 100 } if path == "liar"),
        "{err:?}"
    );
}

#[test]
fn a_stored_entry_larger_than_declared_is_refused() {
    // For a stored entry the compressed size bounds the data: claim fewer bytes than present.
    let mut zip = stored_zip_of(&[("liar", &[5u8; 200])]);
    patch_first_entry_sizes(&mut zip, None, 50);
    let err = read_zip(&zip, &ZipLimits::default()).unwrap_err();
    assert!(
        matches!(err, ZipReadError::LargerThanDeclared { declared: 50, .. }),
        "{err:?}"
    );
}

#[test]
fn an_entry_smaller_than_declared_is_refused() {
    let data: Vec<u8> = (0..2048).map(|i| (i % 251) as u8).collect();
    let mut zip = zip_of(&[("short", &data)]);
    patch_first_entry_sizes(&mut zip, None, 4096);
    let err = read_zip(&zip, &ZipLimits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            ZipReadError::SmallerThanDeclared {
                declared: 4096,
                actual: 2048,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_corrupt_checksum_is_refused() {
    let mut zip = stored_zip_of(&[("a.txt", b"hello world")]);
    replace_bytes(&mut zip, b"hello world", b"HELLO WORLD");
    let err = read_zip(&zip, &ZipLimits::default()).unwrap_err();
    assert!(matches!(err, ZipReadError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("corrupt"), "{err}");
}

#[test]
fn encrypted_entries_are_refused() {
    let mut zip = stored_zip_of(&[("secret", b"data")]);
    // Set the "encrypted" general purpose flag in the local and central headers.
    let local = zip
        .windows(4)
        .position(|w| w == [0x50, 0x4b, 3, 4])
        .unwrap();
    zip[local + 6] |= 1;
    let central = zip
        .windows(4)
        .position(|w| w == [0x50, 0x4b, 1, 2])
        .unwrap();
    zip[central + 8] |= 1;
    let err = read_zip(&zip, &ZipLimits::default()).unwrap_err();
    assert!(matches!(err, ZipReadError::Encrypted { .. }), "{err:?}");
}

#[test]
fn writer_smoke_check_for_helpers() {
    // The helpers above patch headers of archives the zip crate wrote; make sure the
    // unpatched archive reads back exactly.
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    w.start_file("x", zip::write::SimpleFileOptions::default())
        .unwrap();
    w.write_all(b"123").unwrap();
    let zip = w.finish().unwrap().into_inner();
    assert_eq!(read_zip(&zip, &ZipLimits::default()).unwrap()["x"], b"123");
}
