use super::*;
use thingport_package::{read_zip, TrustedKeys};

const TEMPLATE: &str = r#"<Entities>
  <ExtensionPackages>
    <ExtensionPackage name="HelloExtension" packageVersion="1.2.3" vendor="Example"
        description="hello" dependsOn="Base:1.0.0"/>
  </ExtensionPackages>
</Entities>
"#;
const TARGET: &str = "x86_64-unknown-linux-gnu";
const LIBRARY: &[u8] = b"\x7fELF fake library thingport_extension_entry_v1\0 end";

fn assembled(key: Option<&SigningKey>) -> Assembled {
    assemble(TEMPLATE.as_bytes(), "libhello.so", LIBRARY, 1, TARGET, key).unwrap()
}

#[test]
fn the_package_holds_the_manifest_and_the_library_and_passes_verification() {
    let a = assembled(None);
    assert_eq!(a.metadata.name, "HelloExtension");
    assert_eq!(a.metadata.version.to_string(), "1.2.3");
    assert_eq!(a.metadata.depends_on[0].name, "Base");
    assert_eq!(a.library.file, format!("lib/{TARGET}/libhello.so"));
    assert_eq!(a.library.sha256, Sha256::of(LIBRARY));

    let files = read_zip(&a.zip, &ZipLimits::default()).unwrap();
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(names, [&a.library.file, "metadata.xml"]);
    assert_eq!(files[&a.library.file], LIBRARY);
    let metadata = Metadata::parse(&files["metadata.xml"]).unwrap();
    assert_eq!(metadata, a.metadata);
    let options = VerifyOptions {
        target: TARGET.to_owned(),
        trusted_keys: None,
    };
    verify_package(&files, &metadata, &options).unwrap();
}

#[test]
fn the_same_inputs_give_the_same_bytes() {
    let first = assembled(None).zip;
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(assembled(None).zip, first);
    let other = assemble(
        TEMPLATE.as_bytes(),
        "libhello.so",
        b"other",
        1,
        TARGET,
        None,
    )
    .unwrap();
    assert_ne!(other.zip, first);
}

#[test]
fn a_signed_package_verifies_against_the_signing_key_only() {
    let (key, _) = SigningKey::generate().unwrap();
    let a = assembled(Some(&key));
    let package = Package::read(a.zip.clone(), &ZipLimits::default()).unwrap();
    assert!(package.files.contains_key(SIGNATURE_FILE));
    let trusted = |k: &SigningKey| VerifyOptions {
        target: TARGET.to_owned(),
        trusted_keys: Some(TrustedKeys::new(vec![k.public_key()])),
    };
    let verified = package.verify(&trusted(&key)).unwrap();
    assert_eq!(verified.signed_by, Some(key.public_key()));
    let (stranger, _) = SigningKey::generate().unwrap();
    assert!(package.verify(&trusted(&stranger)).is_err());
    // Ed25519 signatures are deterministic: signing is reproducible too.
    assert_eq!(assembled(Some(&key)).zip, a.zip);
}

#[test]
fn template_errors_name_the_field_as_the_server_does() {
    let bad_version = TEMPLATE.replace("1.2.3", "1.x");
    let err = format!(
        "{:#}",
        assemble(bad_version.as_bytes(), "l.so", LIBRARY, 1, TARGET, None).unwrap_err()
    );
    assert!(
        err.contains("ExtensionPackage/@packageVersion \"1.x\" is not a semantic version"),
        "{err}"
    );

    let no_name = TEMPLATE.replace("name=\"HelloExtension\"", "");
    let err = check_template(no_name.as_bytes()).unwrap_err();
    assert_eq!(err.field(), Some("ExtensionPackage/@name"));

    let doctype = format!("<!DOCTYPE x>{TEMPLATE}");
    assert_eq!(
        check_template(doctype.as_bytes()),
        Err(MetadataError::DocType)
    );

    // What ext pack writes itself is not the author's problem.
    let stale = TEMPLATE.replace(
        "dependsOn=\"Base:1.0.0\"/>",
        "dependsOn=\"Base:1.0.0\"><NativeLibrary file=\"x\"/></ExtensionPackage>",
    );
    assert_eq!(check_template(stale.as_bytes()), Ok(()));
    let a = assemble(stale.as_bytes(), "libhello.so", LIBRARY, 1, TARGET, None).unwrap();
    assert_eq!(a.metadata.native_libraries.len(), 1);
}

#[test]
fn an_unsupported_abi_version_is_refused_before_writing() {
    let err = format!(
        "{:#}",
        assemble(TEMPLATE.as_bytes(), "l.so", LIBRARY, 99, TARGET, None).unwrap_err()
    );
    assert!(err.contains("ABI version 99"), "{err}");
}

/// A crate directory with a Cargo.toml, a metadata.xml and a built (fake) library.
fn crate_dir(template: Option<&str>, built: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Cargo.toml"),
        "[package]\nname = \"hello-ext\"\n[lib]\ncrate-type = [\"cdylib\"]\n",
    )
    .unwrap();
    if let Some(t) = template {
        std::fs::write(dir.path().join("metadata.xml"), t).unwrap();
    }
    if built {
        let release = dir.path().join("target/release");
        std::fs::create_dir_all(&release).unwrap();
        let name = format!(
            "{}hello_ext{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        );
        std::fs::write(release.join(name), LIBRARY).unwrap();
    }
    dir
}

fn options(dir: &Path) -> PackOptions {
    PackOptions {
        dir: dir.to_path_buf(),
        output: dir.join("out.zip"),
        profile: "release".to_owned(),
        target_dir: Some(dir.join("target")),
        sign_key: None,
    }
}

#[test]
fn pack_writes_the_package_and_reports_it() {
    let dir = crate_dir(Some(TEMPLATE), true);
    let report = pack(&options(dir.path())).unwrap();
    let bytes = std::fs::read(dir.path().join("out.zip")).unwrap();
    assert_eq!(report.package_size, bytes.len() as u64);
    assert_eq!(report.package_sha256, Sha256::of(&bytes));
    assert_eq!(report.library_size, LIBRARY.len() as u64);
    assert_eq!(report.target, host_target());
    assert_eq!(report.library.abi_version, 1);
    assert!(report.signed_by.is_none());
    let package = Package::read(bytes, &ZipLimits::default()).unwrap();
    package.verify(&VerifyOptions::default()).unwrap();
}

#[test]
fn pack_failures_say_what_to_do_and_write_nothing() {
    let dir = crate_dir(None, true);
    let err = format!("{:#}", pack(&options(dir.path())).unwrap_err());
    assert!(err.starts_with("no metadata.xml in "), "{err}");

    let dir = crate_dir(Some(TEMPLATE), false);
    let err = format!("{:#}", pack(&options(dir.path())).unwrap_err());
    assert!(
        err.contains("run `cargo build --release -p hello-ext`"),
        "{err}"
    );

    let dir = crate_dir(Some(&TEMPLATE.replace("1.2.3", "one")), true);
    let err = format!("{:#}", pack(&options(dir.path())).unwrap_err());
    let expected = format!(
        "{}: ExtensionPackage/@packageVersion \"one\" is not a semantic version",
        dir.path().join("metadata.xml").display()
    );
    assert_eq!(err, expected);
    assert!(!dir.path().join("out.zip").exists());
}
