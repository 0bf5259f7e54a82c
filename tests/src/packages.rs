//! Builds extension packages from the fixture libraries, as `thingport ext pack` would, and
//! uploads them as a browser or script would (multipart field `file`).

use crate::{Client, Resp};
use reqwest::Method;
use std::io::Write;
use std::path::PathBuf;
use thingport_server::extensions::package::{host_target, Sha256};

/// `target/<profile>/libfixture_<name>.so`, built by `cargo build --workspace`.
pub fn fixture_library(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("profile dir");
    let path = profile_dir.join(format!("libfixture_{name}.so"));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// `target/<profile>/lib<crate>.so` of a first-party extension crate (e.g. `connection_services`).
pub fn extension_library(crate_name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("profile dir");
    let path = profile_dir.join(format!("lib{crate_name}.so"));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// The `ConnectionServicesExtension` 1.0.0 package, from the workspace's build of
/// `extensions/connection-services` and its `metadata.xml`, as `thingport ext pack` makes it.
pub fn connection_services_package() -> Vec<u8> {
    let lib =
        std::fs::read(extension_library("connection_services")).expect("read extension library");
    connection_services_package_of(&lib)
}

/// The same package around a given build of the library (the benchmark's release build).
pub fn connection_services_package_of(lib: &[u8]) -> Vec<u8> {
    first_party_package(
        lib,
        "connection_services",
        include_str!("../../extensions/connection-services/metadata.xml"),
    )
}

/// The `RemoteAccessExtension` 1.0.0 package (depends on CSE), from the workspace's build.
pub fn remote_access_package() -> Vec<u8> {
    let lib = std::fs::read(extension_library("remote_access")).expect("read extension library");
    remote_access_package_of(&lib)
}

/// The same package around a given build of the library (the benchmark's release build).
pub fn remote_access_package_of(lib: &[u8]) -> Vec<u8> {
    first_party_package(
        lib,
        "remote_access",
        include_str!("../../extensions/remote-access/metadata.xml"),
    )
}

fn first_party_package(lib: &[u8], crate_name: &str, metadata_template: &str) -> Vec<u8> {
    let file = format!("lib/{}/lib{crate_name}.so", host_target());
    let native = format!(
        r#"<NativeLibrary file="{file}" sha256="{}" abiVersion="1"/>"#,
        Sha256::of(lib)
    );
    // The template's ExtensionPackage element is self-closing: give it the NativeLibrary child.
    let metadata =
        metadata_template.replacen("/>", &format!(">\n{native}\n</ExtensionPackage>"), 1);
    zip_of(&[("metadata.xml", metadata.as_bytes()), (&file, lib)])
}

/// What goes into a test package.
#[derive(Debug, Clone)]
pub struct PackageSpec {
    pub name: String,
    pub version: String,
    pub depends_on: String,
    /// The fixture whose library the package carries.
    pub fixture: String,
    /// Writes a wrong sha256 into metadata.xml.
    pub wrong_sha256: bool,
}

impl PackageSpec {
    pub fn new(name: &str, fixture: &str) -> Self {
        PackageSpec {
            name: name.into(),
            version: "1.0.0".into(),
            depends_on: String::new(),
            fixture: fixture.into(),
            wrong_sha256: false,
        }
    }
    pub fn version(mut self, v: &str) -> Self {
        self.version = v.into();
        self
    }
    pub fn depends_on(mut self, d: &str) -> Self {
        self.depends_on = d.into();
        self
    }
    pub fn wrong_sha256(mut self) -> Self {
        self.wrong_sha256 = true;
        self
    }

    /// The package zip.
    pub fn build(&self) -> Vec<u8> {
        self.build_signed(|_| None)
    }

    /// The package zip with `signature.ed25519` holding `sign(metadata.xml bytes)`, if any.
    pub fn build_signed(&self, sign: impl Fn(&[u8]) -> Option<String>) -> Vec<u8> {
        let lib = std::fs::read(fixture_library(&self.fixture)).expect("read fixture library");
        let file = format!("lib/{}/libfixture_{}.so", host_target(), self.fixture);
        let sha = if self.wrong_sha256 {
            Sha256::of(b"something else")
        } else {
            Sha256::of(&lib)
        };
        let depends = if self.depends_on.is_empty() {
            String::new()
        } else {
            format!(r#" dependsOn="{}""#, self.depends_on)
        };
        let metadata = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<Entities><ExtensionPackages><ExtensionPackage name="{}" packageVersion="{}" vendor="Thingport tests" description="fixture {}"{depends}>
<NativeLibrary file="{file}" sha256="{sha}" abiVersion="1"/>
</ExtensionPackage></ExtensionPackages></Entities>"#,
            self.name, self.version, self.fixture
        );
        match sign(metadata.as_bytes()) {
            Some(sig) => zip_of(&[
                ("metadata.xml", metadata.as_bytes()),
                (&file, &lib),
                ("signature.ed25519", sig.as_bytes()),
            ]),
            None => zip_of(&[("metadata.xml", metadata.as_bytes()), (&file, &lib)]),
        }
    }
}

/// A zip of the given files (deflated).
pub fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in files {
        w.start_file(*name, opts).expect("zip entry");
        w.write_all(bytes).expect("zip write");
    }
    w.finish().expect("zip finish").into_inner()
}

/// Uploads `bytes` to the package uploader.
pub async fn upload(client: &Client, bytes: Vec<u8>) -> Resp {
    let boundary = "thingport-test-boundary-7d1f";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"package.zip\"\r\nContent-Type: application/zip\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    client
        .send(
            Method::POST,
            "/Thingworx/ExtensionPackageUploader?purpose=import",
            Some(&format!("multipart/form-data; boundary={boundary}")),
            Some(body),
            &[],
        )
        .await
}

/// The `AxedaCompatibilityExtension` 1.0.0 package (depends on CSE and RAE), from the workspace's
/// build.
pub fn axeda_compat_package() -> Vec<u8> {
    let lib = std::fs::read(extension_library("axeda_compat")).expect("read extension library");
    axeda_compat_package_of(&lib)
}

/// The same package around a given build of the library.
pub fn axeda_compat_package_of(lib: &[u8]) -> Vec<u8> {
    first_party_package(
        lib,
        "axeda_compat",
        include_str!("../../extensions/axeda-compat/metadata.xml"),
    )
}
