//! The two shapes of an uploaded file: one package, or a zip of packages.
//!
//! - **One package**: a zip with `metadata.xml` at its root.
//! - **A zip of packages**: a zip with no `metadata.xml` at its root whose files all end in
//!   `.zip` (any letter case), each one package. Packages are not nested further.
//!
//! Every archive gets the same [`ZipLimits`]; the total uncompressed size is bounded across the
//! outer zip and all the packages in it together.

use super::digest::Sha256;
use super::metadata::{Metadata, MetadataError, METADATA_FILE};
use super::verify::{verify_package, VerifiedLibrary, VerifyError, VerifyOptions};
use super::zipsafe::{read_zip_budgeted, Files, ZipLimits, ZipReadError};

/// One package of an upload, read and parsed but not yet verified.
#[derive(Debug, Clone)]
pub struct Package {
    /// Where it came from: `upload` for a single package, else its entry path in the outer zip.
    pub source: String,
    /// The parsed `metadata.xml`.
    pub metadata: Metadata,
    /// The package's files, in memory.
    pub files: Files,
    /// The package zip's own bytes (what the store keeps).
    pub bytes: Vec<u8>,
    /// SHA-256 of `bytes` (the store's key).
    pub sha256: Sha256,
}

impl Package {
    /// Reads one package zip under `limits` (alone, not part of an upload).
    pub fn read(bytes: Vec<u8>, limits: &ZipLimits) -> Result<Self, UploadError> {
        let mut remaining = limits.max_total_size;
        let files = read_zip_budgeted(&bytes, limits, &mut remaining)?;
        Self::from_files("upload".to_owned(), files, bytes)
    }

    fn from_files(source: String, files: Files, bytes: Vec<u8>) -> Result<Self, UploadError> {
        let metadata = Metadata::from_files(&files)?;
        let sha256 = Sha256::of(&bytes);
        Ok(Self {
            source,
            metadata,
            files,
            bytes,
            sha256,
        })
    }

    /// Verifies the package (see [`verify_package`]).
    pub fn verify(&self, options: &VerifyOptions) -> Result<VerifiedLibrary<'_>, VerifyError> {
        verify_package(&self.files, &self.metadata, options)
    }
}

/// Why an upload was refused. The uploader's fault; the same bytes fail the same way.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Zip(#[from] ZipReadError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("the upload holds no files")]
    Empty,
    #[error(
        "the upload is neither a package (no metadata.xml at its root) nor a zip of packages \
         ({path:?} is not a .zip file)"
    )]
    NotAPackage { path: String },
    #[error("package {entry:?} in the upload: {source}")]
    Nested {
        entry: String,
        #[source]
        source: Box<UploadError>,
    },
}

impl UploadError {
    /// The entry path of the nested package at fault, if the error is about one.
    pub fn entry(&self) -> Option<&str> {
        match self {
            Self::Nested { entry, .. } => Some(entry),
            _ => None,
        }
    }
}

/// Reads an uploaded file (one package or a zip of packages) into its packages, in the order
/// of the outer zip's entry paths. All-or-nothing: the first bad package fails the upload.
pub fn read_upload(bytes: Vec<u8>, limits: &ZipLimits) -> Result<Vec<Package>, UploadError> {
    let mut remaining = limits.max_total_size;
    let files = read_zip_budgeted(&bytes, limits, &mut remaining)?;
    if files.contains_key(METADATA_FILE) {
        return Ok(vec![Package::from_files(
            "upload".to_owned(),
            files,
            bytes,
        )?]);
    }
    if files.is_empty() {
        return Err(UploadError::Empty);
    }
    if let Some(path) = files.keys().find(|p| !is_zip_name(p)) {
        return Err(UploadError::NotAPackage { path: path.clone() });
    }
    drop(bytes);
    let mut packages = Vec::with_capacity(files.len());
    for (entry, inner) in files {
        let nested = |source: UploadError| UploadError::Nested {
            entry: entry.clone(),
            source: Box::new(source),
        };
        let inner_files =
            read_zip_budgeted(&inner, limits, &mut remaining).map_err(|e| nested(e.into()))?;
        let package = Package::from_files(entry.clone(), inner_files, inner).map_err(nested)?;
        packages.push(package);
    }
    Ok(packages)
}

fn is_zip_name(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.len() > 4 && bytes[bytes.len() - 4..].eq_ignore_ascii_case(b".zip")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn limits() -> ZipLimits {
        ZipLimits::default()
    }

    #[test]
    fn a_single_package_is_one_package() {
        let zip = package_zip("A", "1.0.0", "");
        let packages = read_upload(zip.clone(), &limits()).unwrap();
        assert_eq!(packages.len(), 1);
        let p = &packages[0];
        assert_eq!(p.source, "upload");
        assert_eq!(p.metadata.name, "A");
        assert_eq!(p.sha256, Sha256::of(&zip));
        assert_eq!(p.bytes, zip);
        assert!(p.files.contains_key("metadata.xml"));
        let opts = VerifyOptions {
            target: TARGET.into(),
            trusted_keys: None,
        };
        p.verify(&opts).unwrap();
        let alone = Package::read(zip, &limits()).unwrap();
        assert_eq!(alone.metadata, p.metadata);
    }

    #[test]
    fn a_zip_of_packages_is_read_in_entry_order() {
        let a = package_zip("A", "1.0.0", "");
        let b = package_zip("B", "2.0.0", "A:1.0.0");
        let outer = stored_zip_of(&[("packages/b.zip", &b), ("a.ZIP", &a)]);
        let packages = read_upload(outer, &limits()).unwrap();
        let names: Vec<(&str, &str)> = packages
            .iter()
            .map(|p| (p.source.as_str(), p.metadata.name.as_str()))
            .collect();
        assert_eq!(names, [("a.ZIP", "A"), ("packages/b.zip", "B")]);
        assert_eq!(packages[1].sha256, Sha256::of(&b));
    }

    #[test]
    fn garbage_uploads_are_refused() {
        let err = read_upload(b"garbage".to_vec(), &limits()).unwrap_err();
        assert!(err.to_string().starts_with("not a zip archive"), "{err}");
        let err = read_upload(zip_of(&[]), &limits()).unwrap_err();
        assert!(matches!(err, UploadError::Empty), "{err:?}");
    }

    #[test]
    fn an_upload_that_is_neither_shape_is_refused() {
        let a = package_zip("A", "1.0.0", "");
        let outer = zip_of(&[("a.zip", &a), ("README.txt", b"hi")]);
        let err = read_upload(outer, &limits()).unwrap_err();
        assert!(
            matches!(&err, UploadError::NotAPackage { path } if path == "README.txt"),
            "{err:?}"
        );
        let err = read_upload(zip_of(&[("caf\u{e9}", b"x")]), &limits()).unwrap_err();
        assert!(matches!(err, UploadError::NotAPackage { .. }), "{err:?}");
        let err = read_upload(zip_of(&[("lib/libA.so", b"x")]), &limits()).unwrap_err();
        assert!(err.to_string().contains("no metadata.xml"), "{err}");
    }

    #[test]
    fn a_bad_nested_package_names_its_entry() {
        let a = package_zip("A", "1.0.0", "");
        let outer = zip_of(&[("a.zip", &a), ("b.zip", b"not a zip")]);
        let err = read_upload(outer, &limits()).unwrap_err();
        assert_eq!(err.entry(), Some("b.zip"));
        assert!(
            err.to_string()
                .starts_with("package \"b.zip\" in the upload: not a zip archive"),
            "{err}"
        );

        let no_meta = zip_of(&[("lib/libA.so", b"x")]);
        let outer = zip_of(&[("a.zip", &no_meta)]);
        let err = read_upload(outer, &limits()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "package \"a.zip\" in the upload: metadata.xml is missing from the package root"
        );

        let slip = zip_of(&[("metadata.xml", b"<Entities/>"), ("../x", b"x")]);
        let outer = zip_of(&[("a.zip", &slip)]);
        let err = read_upload(outer, &limits()).unwrap_err();
        assert!(err.to_string().contains("unsafe path \"../x\""), "{err}");
    }

    #[test]
    fn a_zip_of_zips_of_zips_is_not_unpacked_further() {
        let a = package_zip("A", "1.0.0", "");
        let inner = stored_zip_of(&[("a.zip", &a)]);
        let outer = stored_zip_of(&[("inner.zip", &inner)]);
        let err = read_upload(outer, &limits()).unwrap_err();
        assert!(err.to_string().contains("metadata.xml is missing"), "{err}");
    }

    #[test]
    fn invalid_metadata_in_a_single_package_names_the_field() {
        let zip = zip_of(&[("metadata.xml", br#"<Entities><ExtensionPackages><ExtensionPackage name="A" packageVersion="1.x"/></ExtensionPackages></Entities>"#)]);
        let err = read_upload(zip, &limits()).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"metadata.xml: ExtensionPackage/@packageVersion "1.x" is not a semantic version"#
        );
    }

    #[test]
    fn nested_packages_share_the_total_size_budget() {
        let filler: Vec<u8> = (0..40 * 1024).map(|i| (i * 7 % 251) as u8).collect();
        let pkg = |name: &str| {
            let files = package_files(name, "1.0.0", "");
            let mut entries: Vec<(&str, &[u8])> = files
                .iter()
                .map(|(p, d)| (p.as_str(), d.as_slice()))
                .collect();
            entries.push(("filler.bin", &filler));
            stored_zip_of(&entries)
        };
        let (a, b) = (pkg("A"), pkg("B"));
        let outer = stored_zip_of(&[("a.zip", &a), ("b.zip", &b)]);
        // Each archive alone fits; the outer zip (~80 KiB) plus both packages (~80 KiB) do not.
        let small = ZipLimits {
            max_total_size: 120 * 1024,
            max_file_size: 100 * 1024,
            ..ZipLimits::default()
        };
        read_upload(a.clone(), &small).unwrap();
        let err = read_upload(outer.clone(), &small).unwrap_err();
        assert!(
            err.to_string().contains("uncompressed bytes in total"),
            "{err}"
        );
        read_upload(outer, &ZipLimits::default()).unwrap();
    }

    #[test]
    fn a_zip_bomb_inside_a_zip_of_packages_is_refused() {
        let zeros = vec![0u8; 4 * 1024 * 1024];
        let bomb = zip_of(&[("metadata.xml", b"<Entities/>"), ("bomb", &zeros)]);
        let outer = stored_zip_of(&[("bomb.zip", &bomb)]);
        let err = read_upload(outer, &limits()).unwrap_err();
        assert_eq!(err.entry(), Some("bomb.zip"));
        assert!(err.to_string().contains("zip bomb"), "{err}");
    }
}
