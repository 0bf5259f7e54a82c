//! Verifying a package before anything in it is opened (EXTENSION-ABI.md, fact 1).
//!
//! In order: the signature (only when trusted keys are configured), the library for the host's
//! target triple, its ABI version, its presence in the package, and its SHA-256 against the one
//! `metadata.xml` pins. Nothing here loads or writes a library.

use super::digest::Sha256;
use super::metadata::{Metadata, NativeLibrary, METADATA_FILE};
use super::signature::{verify_signature, PublicKey, SignatureError, TrustedKeys, SIGNATURE_FILE};
use super::zipsafe::Files;

/// The ABI major versions this server loads.
pub const SUPPORTED_ABI_VERSIONS: &[u32] = &[thingport_extension_abi::ABI_MAJOR as u32];

/// The target triple of this server's build, e.g. `x86_64-unknown-linux-gnu`.
///
/// Formed from `std::env::consts::{ARCH, OS}` and `cfg(target_env)` (there is no build script
/// to read `TARGET` from): `<arch>-<vendor>-<os>[-<env>]` with vendor `unknown` (`apple` on macOS,
/// whose OS part is `darwin`; `pc` on Windows). It matches the common triples (`x86_64` and
/// `aarch64` on Linux gnu/musl, macOS and Windows msvc) but not those whose arch or ABI part
/// carries more (`armv7-unknown-linux-gnueabihf`, `i686-...`): hosts on such targets pass their
/// triple in [`VerifyOptions::target`].
pub fn host_target() -> String {
    let arch = std::env::consts::ARCH;
    let (vendor, os) = match std::env::consts::OS {
        "macos" => ("apple", "darwin"),
        "ios" => ("apple", "ios"),
        "windows" => ("pc", "windows"),
        other => ("unknown", other),
    };
    let env = if cfg!(target_env = "gnu") {
        "-gnu"
    } else if cfg!(target_env = "musl") {
        "-musl"
    } else if cfg!(target_env = "msvc") {
        "-msvc"
    } else {
        ""
    };
    format!("{arch}-{vendor}-{os}{env}")
}

/// What a package is checked against.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The target triple whose library is used ([`host_target`] by default).
    pub target: String,
    /// When set, packages must be signed by one of these keys (`--trusted-extension-keys`).
    /// When unset, a signature file is ignored.
    pub trusted_keys: Option<TrustedKeys>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            target: host_target(),
            trusted_keys: None,
        }
    }
}

/// A package that passed verification: the library to load, with its bytes.
#[derive(Debug)]
pub struct VerifiedLibrary<'a> {
    /// The manifest's entry for the host's target.
    pub library: &'a NativeLibrary,
    /// The library's bytes, whose SHA-256 equals `library.sha256`.
    pub bytes: &'a [u8],
    /// The trusted key that signed the package, when signatures are required.
    pub signed_by: Option<PublicKey>,
}

/// Why a package was refused. The uploader's fault; retrying the same package fails the same way.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("metadata.xml is missing from the package root")]
    MissingMetadata,
    #[error("no native library for target {target} (available: {})", list_or_none(.available))]
    NoLibraryForTarget {
        target: String,
        available: Vec<String>,
    },
    #[error(
        "library {file} uses ABI version {version}, which this server does not support \
         (supported: {})",
        join(SUPPORTED_ABI_VERSIONS)
    )]
    UnsupportedAbi { file: String, version: u32 },
    #[error("library {file} named in metadata.xml is missing from the package")]
    MissingLibrary { file: String },
    #[error(
        "library {file}: sha256 mismatch (metadata.xml expects {}, the file has {})",
        expected.short(),
        actual.short()
    )]
    Sha256Mismatch {
        file: String,
        expected: Sha256,
        actual: Sha256,
    },
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

fn join(versions: &[u32]) -> String {
    let v: Vec<String> = versions.iter().map(u32::to_string).collect();
    v.join(", ")
}

/// Verifies the files of one package against its parsed `metadata` and `options`.
pub fn verify_package<'a>(
    files: &'a Files,
    metadata: &'a Metadata,
    options: &VerifyOptions,
) -> Result<VerifiedLibrary<'a>, VerifyError> {
    let signed_by = match &options.trusted_keys {
        Some(keys) => {
            let xml = files
                .get(METADATA_FILE)
                .ok_or(VerifyError::MissingMetadata)?;
            let signature = files.get(SIGNATURE_FILE).map(Vec::as_slice);
            Some(verify_signature(xml, signature, keys)?)
        }
        None => None,
    };
    let library =
        metadata
            .library_for(&options.target)
            .ok_or_else(|| VerifyError::NoLibraryForTarget {
                target: options.target.clone(),
                available: metadata
                    .native_libraries
                    .iter()
                    .map(|l| l.target.clone())
                    .collect(),
            })?;
    if !SUPPORTED_ABI_VERSIONS.contains(&library.abi_version) {
        return Err(VerifyError::UnsupportedAbi {
            file: library.file.clone(),
            version: library.abi_version,
        });
    }
    let bytes = files
        .get(&library.file)
        .ok_or_else(|| VerifyError::MissingLibrary {
            file: library.file.clone(),
        })?;
    let actual = Sha256::of(bytes);
    if actual != library.sha256 {
        return Err(VerifyError::Sha256Mismatch {
            file: library.file.clone(),
            expected: library.sha256,
            actual,
        });
    }
    Ok(VerifiedLibrary {
        library,
        bytes,
        signed_by,
    })
}

#[cfg(test)]
mod tests;
