//! Builders of zips and packages in memory, shared by the unit tests of this module.

use super::digest::Sha256;
use std::io::{Cursor, Write};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// The target triple the tests build packages for.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// A zip of `entries`, deflated.
pub fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    zip_with(entries, CompressionMethod::Deflated)
}

/// A zip of `entries`, stored (not compressed).
pub fn stored_zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    zip_with(entries, CompressionMethod::Stored)
}

fn zip_with(entries: &[(&str, &[u8])], method: CompressionMethod) -> Vec<u8> {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(method);
    for (name, data) in entries {
        if name.ends_with('/') {
            w.add_directory(*name, options).unwrap();
        } else {
            w.start_file(*name, options).unwrap();
            w.write_all(data).unwrap();
        }
    }
    w.finish().unwrap().into_inner()
}

/// Overwrites the sizes recorded for the first entry (local header and central directory).
pub fn patch_first_entry_sizes(zip: &mut [u8], compressed: Option<u32>, uncompressed: u32) {
    let local = find(zip, &[0x50, 0x4b, 0x03, 0x04]);
    let central = find(zip, &[0x50, 0x4b, 0x01, 0x02]);
    if let Some(c) = compressed {
        zip[local + 18..local + 22].copy_from_slice(&c.to_le_bytes());
        zip[central + 20..central + 24].copy_from_slice(&c.to_le_bytes());
    }
    zip[local + 22..local + 26].copy_from_slice(&uncompressed.to_le_bytes());
    zip[central + 24..central + 28].copy_from_slice(&uncompressed.to_le_bytes());
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("signature present")
}

/// The bytes of a fake native library.
pub fn library_bytes(name: &str) -> Vec<u8> {
    format!("\x7fELF fake library of {name}").into_bytes()
}

/// The conventional library path of `name` for `target`.
pub fn library_path(name: &str, target: &str) -> String {
    format!("lib/{target}/lib{name}.so")
}

/// A `metadata.xml` for `name` `version` depending on `depends_on` (`"A:1.0.0,B:2.0.0"`), with
/// a library entry per `(target, sha256, abi)`.
pub fn metadata_xml(
    name: &str,
    version: &str,
    depends_on: &str,
    libs: &[(&str, Sha256, u32)],
) -> String {
    let mut libraries = String::new();
    for (target, sha, abi) in libs {
        libraries.push_str(&format!(
            "      <NativeLibrary file=\"{}\" sha256=\"{sha}\" abiVersion=\"{abi}\"/>\n",
            library_path(name, target)
        ));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Entities>\n  <ExtensionPackages>\n    \
         <ExtensionPackage name=\"{name}\" packageVersion=\"{version}\" vendor=\"Acme\" \
         description=\"test package\" minimumThingWorxVersion=\"9.0.0\" dependsOn=\"{depends_on}\">\n\
         {libraries}    </ExtensionPackage>\n  </ExtensionPackages>\n</Entities>\n"
    )
}

/// The files of a valid package for [`TARGET`] at ABI 1.
pub fn package_files(name: &str, version: &str, depends_on: &str) -> Vec<(String, Vec<u8>)> {
    let lib = library_bytes(name);
    let xml = metadata_xml(name, version, depends_on, &[(TARGET, Sha256::of(&lib), 1)]);
    vec![
        ("metadata.xml".to_owned(), xml.into_bytes()),
        (library_path(name, TARGET), lib),
    ]
}

/// A valid package zip (see [`package_files`]).
pub fn package_zip(name: &str, version: &str, depends_on: &str) -> Vec<u8> {
    let files = package_files(name, version, depends_on);
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    zip_of(&refs)
}

/// Replaces every occurrence of `from` by `to` (same length), e.g. to rename an entry in both
/// its local header and the central directory.
pub fn replace_bytes(zip: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut i = 0;
    while i + from.len() <= zip.len() {
        if &zip[i..i + from.len()] == from {
            zip[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
}

/// Marks the first entry as made on unix with `mode` as its external attributes.
pub fn patch_first_entry_mode(zip: &mut [u8], mode: u32) {
    let central = find(zip, &[0x50, 0x4b, 0x01, 0x02]);
    zip[central + 5] = 3; // version made by: unix
    zip[central + 38..central + 42].copy_from_slice(&(mode << 16).to_le_bytes());
}

/// A deterministic ed25519 signer: `(public key, signature of message)`.
pub fn sign(seed: u8, message: &[u8]) -> (super::signature::PublicKey, [u8; 64]) {
    use ring::signature::KeyPair as _;
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap();
    let key = super::signature::PublicKey(pair.public_key().as_ref().try_into().unwrap());
    let signature = pair.sign(message).as_ref().try_into().unwrap();
    (key, signature)
}
