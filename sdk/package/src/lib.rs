//! `thingport-package`: the extension package format (SPEC §4), shared by the server's import and
//! `thingport ext pack` so that a package is checked by one set of rules wherever it is made or
//! taken. Reading an upload safely, `metadata.xml`, verification before
//! anything is opened, the version and `dependsOn` rules with the import report, and
//! content-addressed storage. A pure library: no HTTP, no database, no `dlopen`; nothing here
//! executes or writes out a library (the host does, after [`verify_package`] passed).
//!
//! # Flow of an import
//!
//! ```text
//! bytes ──read_upload──▶ Vec<Package>            (safe unzip in memory, metadata.xml parsed)
//!       ──Package::verify(&VerifyOptions)──▶ VerifiedLibrary   (signature, target, ABI, sha256)
//!       ──plan_import(&[&Metadata], &installed)──▶ ImportPlan  (report rows + ordered steps)
//!       ──PackageStore::put(&package.bytes)──▶ <data_dir>/extensions/<sha256>.zip
//! ```
//!
//! # API
//!
//! - [`zipsafe`]: [`read_zip`]`(&[u8], &ZipLimits) -> Result<Files, ZipReadError>` reads an
//!   untrusted zip into memory under [`ZipLimits`] (entries, per-file and total size,
//!   compression ratio), refusing zip-slip paths, symlinks and special files, duplicates,
//!   encryption, and data larger or smaller than declared. [`Files`] maps path to bytes.
//! - [`metadata`]: [`Metadata::parse`]`(&[u8])` / [`Metadata::from_files`]`(&Files)` parse and
//!   validate `metadata.xml` into [`Metadata`] (name, version, [`Dependency`]s,
//!   [`NativeLibrary`]s); every [`MetadataError`] names its field.
//! - [`signature`]: [`TrustedKeys::load`]`(&Path)` / [`TrustedKeys::parse`]`(&str)` read the
//!   `--trusted-extension-keys` file; [`verify_signature`]`(metadata_xml, signature_file,
//!   &TrustedKeys) -> Result<PublicKey, SignatureError>`; [`SignatureFile`] parses and formats
//!   `signature.ed25519`.
//! - [`verify`]: [`verify_package`]`(&Files, &Metadata, &VerifyOptions) ->
//!   Result<VerifiedLibrary, VerifyError>`; [`host_target`]`()` is this build's target triple;
//!   [`SUPPORTED_ABI_VERSIONS`].
//! - [`upload`]: [`read_upload`]`(Vec<u8>, &ZipLimits) -> Result<Vec<Package>, UploadError>`
//!   accepts one package or a zip of packages; [`Package::read`] reads one package alone.
//! - [`order`]: [`plan_import`]`(&[&Metadata], &BTreeMap<String, Version>) -> ImportPlan` applies
//!   the version and dependency rules and orders the import ([`ImportPlan::refuse`] turns a later
//!   failure into a refusal); [`ReportRow`] serializes as the ThingWorx report row;
//!   [`load_order`] orders installed packages at start; [`dependents`] serves the delete rules;
//!   [`satisfies`] is the `dependsOn` version rule.
//! - [`store`]: [`PackageStore`] (`put`, `get`, `delete`, `contains`, `remove_temp_files`) keeps
//!   package zips as `<data_dir>/extensions/<sha256 hex>.zip`, written atomically.
//! - [`Sha256`]: a digest that displays and parses as 64 hex digits.
//!
//! # Formats
//!
//! - `metadata.xml`: see [`metadata`]; canonical `NativeLibrary` placement is inside
//!   `ExtensionPackage`, also accepted beside it.
//! - `signature.ed25519` and the trusted keys file: see [`signature`].
//!
//! [`Dependency`]: metadata::Dependency
//! [`NativeLibrary`]: metadata::NativeLibrary

pub mod digest;
pub mod metadata;
pub mod order;
pub mod signature;
pub mod store;
pub mod upload;
pub mod verify;
pub mod zipsafe;

#[cfg(test)]
mod testutil;

pub use digest::Sha256;
pub use metadata::{Metadata, MetadataError};
pub use order::{
    dependents, load_order, plan_import, satisfies, Action, ImportPlan, ReportRow, ReportStatus,
    Step,
};
pub use signature::{verify_signature, PublicKey, SignatureError, SignatureFile, TrustedKeys};
pub use store::{PackageStore, StoreError};
pub use upload::{read_upload, Package, UploadError};
pub use verify::{
    host_target, verify_package, VerifiedLibrary, VerifyError, VerifyOptions,
    SUPPORTED_ABI_VERSIONS,
};
pub use zipsafe::{read_zip, Files, ZipLimits, ZipReadError};
