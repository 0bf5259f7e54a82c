use super::*;
use crate::signature::SignatureFile;
use crate::testutil::*;

fn files_of(entries: Vec<(String, Vec<u8>)>) -> Files {
    entries.into_iter().collect()
}

fn options() -> VerifyOptions {
    VerifyOptions {
        target: TARGET.to_owned(),
        trusted_keys: None,
    }
}

fn package(name: &str) -> (Files, Metadata) {
    let files = files_of(package_files(name, "1.0.0", ""));
    let metadata = Metadata::from_files(&files).unwrap();
    (files, metadata)
}

/// A package whose manifest lists `libs` and whose zip holds `present` files.
fn custom(libs: &[(&str, Sha256, u32)], present: &[(String, Vec<u8>)]) -> (Files, Metadata) {
    let xml = metadata_xml("A", "1.0.0", "", libs);
    let mut files = files_of(present.to_vec());
    files.insert("metadata.xml".into(), xml.into_bytes());
    let metadata = Metadata::from_files(&files).unwrap();
    (files, metadata)
}

#[test]
fn host_target_has_the_usual_shape() {
    let t = host_target();
    assert!(t.starts_with(std::env::consts::ARCH), "{t}");
    assert!(t.split('-').count() >= 3, "{t}");
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    assert_eq!(t, "x86_64-unknown-linux-gnu");
    #[cfg(all(target_arch = "aarch64", target_os = "macos"))]
    assert_eq!(t, "aarch64-apple-darwin");
    assert_eq!(VerifyOptions::default().target, t);
}

#[test]
fn the_abi_crate_major_is_supported() {
    assert_eq!(
        SUPPORTED_ABI_VERSIONS,
        &[u32::from(thingport_extension_abi::ABI_MAJOR)]
    );
}

#[test]
fn a_good_package_verifies() {
    let (files, metadata) = package("A");
    let v = verify_package(&files, &metadata, &options()).unwrap();
    assert_eq!(v.library.target, TARGET);
    assert_eq!(v.bytes, library_bytes("A"));
    assert_eq!(v.signed_by, None);
}

#[test]
fn a_wrong_target_is_refused_with_the_available_ones() {
    let (files, metadata) = package("A");
    let opts = VerifyOptions {
        target: "aarch64-apple-darwin".into(),
        trusted_keys: None,
    };
    let err = verify_package(&files, &metadata, &opts).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("no native library for target aarch64-apple-darwin (available: {TARGET})")
    );
}

#[test]
fn a_missing_library_is_refused() {
    let lib = library_bytes("A");
    let (files, metadata) = custom(&[(TARGET, Sha256::of(&lib), 1)], &[]);
    let err = verify_package(&files, &metadata, &options()).unwrap_err();
    assert!(matches!(err, VerifyError::MissingLibrary { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("library lib/{TARGET}/libA.so named in metadata.xml is missing from the package")
    );
}

#[test]
fn a_sha256_mismatch_is_refused() {
    let lib = library_bytes("A");
    let pinned = Sha256::of(b"something else");
    let (files, metadata) = custom(
        &[(TARGET, pinned, 1)],
        &[(library_path("A", TARGET), lib.clone())],
    );
    let err = verify_package(&files, &metadata, &options()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, VerifyError::Sha256Mismatch { .. }), "{err:?}");
    assert!(text.contains("sha256 mismatch"), "{text}");
    assert!(text.contains(&pinned.short()), "{text}");
    assert!(text.contains(&Sha256::of(&lib).short()), "{text}");
}

#[test]
fn a_wrong_abi_major_is_refused() {
    let lib = library_bytes("A");
    let (files, metadata) = custom(
        &[(TARGET, Sha256::of(&lib), 2)],
        &[(library_path("A", TARGET), lib)],
    );
    let err = verify_package(&files, &metadata, &options()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("library lib/{TARGET}/libA.so uses ABI version 2, which this server does not support (supported: 1)")
    );
}

#[test]
fn the_library_for_the_host_target_is_picked_among_several() {
    let lib = library_bytes("A");
    let (files, metadata) = custom(
        &[
            ("aarch64-apple-darwin", Sha256::of(b"mac"), 1),
            (TARGET, Sha256::of(&lib), 1),
        ],
        &[(library_path("A", TARGET), lib)],
    );
    let v = verify_package(&files, &metadata, &options()).unwrap();
    assert_eq!(v.library.target, TARGET);
}

fn signed_options(seed: u8) -> VerifyOptions {
    let (key, _) = sign(seed, b"");
    VerifyOptions {
        target: TARGET.to_owned(),
        trusted_keys: Some(TrustedKeys::new(vec![key])),
    }
}

fn add_signature(files: &mut Files, seed: u8) {
    let (key, sig) = sign(seed, &files["metadata.xml"]);
    files.insert(
        SIGNATURE_FILE.into(),
        SignatureFile::format(&key, &sig).into_bytes(),
    );
}

#[test]
fn a_signed_package_verifies_when_keys_are_required() {
    let (mut files, metadata) = package("A");
    add_signature(&mut files, 1);
    let v = verify_package(&files, &metadata, &signed_options(1)).unwrap();
    assert_eq!(v.signed_by, Some(sign(1, b"").0));
    // Without trusted keys the signature is not checked.
    verify_package(&files, &metadata, &options()).unwrap();
}

#[test]
fn signature_failures_are_refused_before_anything_else() {
    let (files, metadata) = package("A");
    let err = verify_package(&files, &metadata, &signed_options(1)).unwrap_err();
    assert!(
        matches!(err, VerifyError::Signature(SignatureError::Unsigned)),
        "{err:?}"
    );

    let (mut files, metadata) = package("A");
    add_signature(&mut files, 7);
    let err = verify_package(&files, &metadata, &signed_options(1)).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Signature(SignatureError::UntrustedKey { .. })
        ),
        "{err:?}"
    );

    // The library is swapped and metadata.xml re-pinned after signing: bad signature.
    let (mut files, _) = package("A");
    add_signature(&mut files, 1);
    let evil = b"evil".to_vec();
    let xml = metadata_xml("A", "1.0.0", "", &[(TARGET, Sha256::of(&evil), 1)]);
    files.insert("metadata.xml".into(), xml.into_bytes());
    files.insert(library_path("A", TARGET), evil);
    let metadata = Metadata::from_files(&files).unwrap();
    let err = verify_package(&files, &metadata, &signed_options(1)).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Signature(SignatureError::BadSignature { .. })
        ),
        "{err:?}"
    );
}

#[test]
fn missing_metadata_bytes_are_reported_when_signatures_are_required() {
    let (mut files, metadata) = package("A");
    files.remove("metadata.xml");
    let err = verify_package(&files, &metadata, &signed_options(1)).unwrap_err();
    assert!(matches!(err, VerifyError::MissingMetadata), "{err:?}");
}
