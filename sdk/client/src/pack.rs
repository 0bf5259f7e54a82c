//! `thingport ext pack DIR -o FILE`: an extension package from an extension crate.
//!
//! From `DIR`: `Cargo.toml` (the library's name, see [`locate`]), the author's `metadata.xml`
//! template, and the library the workspace's build left in `<target>/<profile>/`. The package
//! ([`assemble`]) is a deterministic zip of `metadata.xml` (the template with one
//! `NativeLibrary` element for this host's target triple, see [`manifest`]), the library at
//! `lib/<target-triple>/<file>`, and, with a signing key, `signature.ed25519`. Before anything
//! is written it is read back and verified with the server's own code (`Package::read`,
//! `verify_package`), so a package `ext pack` writes is one the server accepts; the file is
//! written atomically.

pub mod archive;
pub mod locate;
pub mod manifest;

use crate::keys::SigningKey;
use anyhow::{bail, Context as _};
use archive::Entries;
use locate::{ExtensionCrate, Profile};
use manifest::LibraryEntry;
use std::path::{Path, PathBuf};
use thingport_package::metadata::METADATA_FILE;
use thingport_package::signature::SIGNATURE_FILE;
use thingport_package::{
    host_target, verify_package, Metadata, MetadataError, Package, PublicKey, Sha256, TrustedKeys,
    VerifyOptions, ZipLimits,
};

/// What to pack, and where to.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// The extension crate's directory.
    pub dir: PathBuf,
    /// The package file to write.
    pub output: PathBuf,
    /// The build profile whose library is packed (`release` by default).
    pub profile: String,
    /// The target directory (`--target-dir`); `None`: `CARGO_TARGET_DIR`, else the
    /// workspace's `target/`.
    pub target_dir: Option<PathBuf>,
    /// A key file to sign the package with.
    pub sign_key: Option<PathBuf>,
}

/// What [`pack`] wrote.
#[derive(Debug, Clone)]
pub struct PackReport {
    pub metadata: Metadata,
    /// The target triple packed.
    pub target: String,
    /// The `NativeLibrary` entry (path in the package, sha256, ABI version).
    pub library: LibraryEntry,
    /// The library file that was packed, and its size in bytes.
    pub library_source: PathBuf,
    pub library_size: u64,
    /// The package file, its size and sha256.
    pub output: PathBuf,
    pub package_size: u64,
    pub package_sha256: Sha256,
    /// The key that signed the package, if any.
    pub signed_by: Option<PublicKey>,
    /// Things the user should know that did not stop the packing (a stale build, a readable key).
    pub warnings: Vec<String>,
}

/// A package built in memory by [`assemble`].
#[derive(Debug, Clone)]
pub struct Assembled {
    /// The zip's bytes.
    pub zip: Vec<u8>,
    /// The package's `metadata.xml`, parsed.
    pub metadata: Metadata,
    /// The `NativeLibrary` entry written.
    pub library: LibraryEntry,
}

/// Packs the crate in `options.dir` into `options.output`.
pub fn pack(options: &PackOptions) -> anyhow::Result<PackReport> {
    let dir = &options.dir;
    let krate = ExtensionCrate::read(dir)?;
    let template_path = dir.join(METADATA_FILE);
    let template = match std::fs::read(&template_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no {METADATA_FILE} in {}: write the package's manifest template there (name, \
             packageVersion, vendor, description, dependsOn; see docs/writing-an-extension.md)",
            dir.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("failed to read {}", template_path.display()))
        }
    };
    check_template(&template).map_err(|e| at_path(&template_path, &e))?;

    let profile = Profile::new(&options.profile)?;
    let target_dir = locate::target_dir(
        options.target_dir.as_deref(),
        std::env::var_os("CARGO_TARGET_DIR"),
        &krate.workspace_root(),
    );
    let library_path = locate::find_library(&krate, &target_dir, &profile)?;
    let mut warnings = Vec::new();
    if let Some(first) = locate::newer_sources(&krate, &library_path).first() {
        warnings.push(format!(
            "warning: {} is newer than {}; the library may be stale (run `{}`)",
            first.display(),
            library_path.display(),
            profile.build_command(&krate.package)
        ));
    }
    let library_bytes = std::fs::read(&library_path)
        .with_context(|| format!("failed to read {}", library_path.display()))?;
    let abi_version = locate::abi_version_of(&library_bytes)
        .with_context(|| format!("cannot pack {}", library_path.display()))?;

    let key = match &options.sign_key {
        Some(path) => {
            warnings.extend(crate::keys::permissions_warning(path));
            Some(SigningKey::load(path)?)
        }
        None => None,
    };
    let target = host_target();
    let assembled = assemble(
        &template,
        &krate.library_file_name(),
        &library_bytes,
        abi_version,
        &target,
        key.as_ref(),
    )?;
    archive::write_atomically(&options.output, &assembled.zip)?;

    Ok(PackReport {
        metadata: assembled.metadata,
        target,
        library: assembled.library,
        library_source: library_path,
        library_size: library_bytes.len() as u64,
        output: options.output.clone(),
        package_size: assembled.zip.len() as u64,
        package_sha256: Sha256::of(&assembled.zip),
        signed_by: key.map(|k| k.public_key()),
        warnings,
    })
}

/// Checks the author's template with the server's rules, except those about `NativeLibrary`
/// (which `ext pack` writes).
pub fn check_template(template: &[u8]) -> Result<(), MetadataError> {
    match Metadata::parse(template) {
        Ok(_) => Ok(()),
        Err(e)
            if e.field().is_some_and(|f| {
                f == "ExtensionPackage/NativeLibrary" || f.starts_with("NativeLibrary[")
            }) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Builds a package in memory: the template with the library's `NativeLibrary` element, the
/// library at `lib/<target>/<library_name>`, and a signature when `key` is given. The result
/// has passed the server's reading and verification for `target` (and `key`).
pub fn assemble(
    template: &[u8],
    library_name: &str,
    library: &[u8],
    abi_version: u32,
    target: &str,
    key: Option<&SigningKey>,
) -> anyhow::Result<Assembled> {
    check_template(template)?;
    let entry = LibraryEntry {
        file: format!("lib/{target}/{library_name}"),
        sha256: Sha256::of(library),
        abi_version,
    };
    let xml = manifest::with_native_library(template, &entry)?;
    let metadata = Metadata::parse(&xml)?;

    let mut entries = Entries::new();
    if let Some(key) = key {
        entries.insert(
            SIGNATURE_FILE.to_owned(),
            key.signature_file(&xml).into_bytes(),
        );
    }
    entries.insert(entry.file.clone(), library.to_vec());
    entries.insert(METADATA_FILE.to_owned(), xml);
    let zip = archive::zip_entries(&entries)?;

    // Read it back as the server will.
    let package = Package::read(zip.clone(), &ZipLimits::default())
        .context("the package would be refused")?;
    let options = VerifyOptions {
        target: target.to_owned(),
        trusted_keys: key.map(|k| TrustedKeys::new(vec![k.public_key()])),
    };
    verify_package(&package.files, &package.metadata, &options)
        .context("the package would be refused")?;

    Ok(Assembled {
        zip,
        metadata,
        library: entry,
    })
}

/// Names the template's path in an error about its content (whose messages start with
/// `metadata.xml: `).
fn at_path(path: &Path, error: &dyn std::fmt::Display) -> anyhow::Error {
    let message = error.to_string();
    let message = message
        .strip_prefix("metadata.xml: ")
        .unwrap_or(&message)
        .to_owned();
    anyhow::anyhow!("{}: {message}", path.display())
}

#[cfg(test)]
mod tests;
