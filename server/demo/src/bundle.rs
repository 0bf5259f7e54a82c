//! The bundled extensions `thingport up` imports, in order, and where it finds them: each
//! library next to the running executable (`target/<profile>/lib*.so` after a workspace build)
//! or in `--extensions-dir`, and each package's `metadata.xml` template (built into this binary
//! for the extensions it was built with, else read from `<extensions-dir>/<crate>/metadata.xml`
//! or the source tree this binary was built from). Packages are assembled in memory with the
//! code of `thingport ext pack` (`thingport_client::pack::assemble`).

use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use thingport_client::pack::manifest::{with_native_library, LibraryEntry};
use thingport_package::{host_target, Metadata, Sha256};

/// The command that builds the bundled extensions next to `thingport`.
pub const BUILD_COMMAND: &str = "cargo build --release --workspace";

/// One bundled extension.
#[derive(Debug, Clone, Copy)]
pub struct Bundled {
    /// The package's name, as `metadata.xml` gives it.
    pub name: &'static str,
    /// The crate's directory under `extensions/`.
    pub crate_dir: &'static str,
    /// The library's crate name (`libNAME.so`).
    pub lib_name: &'static str,
    /// The template built into this binary, if the crate existed when it was built.
    pub template: Option<&'static [u8]>,
    /// The demo cannot run without it.
    pub required: bool,
}

/// What the demo imports, in this order (each depends on the ones before).
pub const BUNDLED: [Bundled; 3] = [
    Bundled {
        name: "ConnectionServicesExtension",
        crate_dir: "connection-services",
        lib_name: "connection_services",
        template: Some(include_bytes!(
            "../../../extensions/connection-services/metadata.xml"
        )),
        required: true,
    },
    Bundled {
        name: "RemoteAccessExtension",
        crate_dir: "remote-access",
        lib_name: "remote_access",
        template: Some(include_bytes!(
            "../../../extensions/remote-access/metadata.xml"
        )),
        required: true,
    },
    Bundled {
        name: "AxedaCompatibilityExtension",
        crate_dir: "axeda-compat",
        lib_name: "axeda_compat",
        template: Some(include_bytes!(
            "../../../extensions/axeda-compat/metadata.xml"
        )),
        required: true,
    },
];

impl Bundled {
    /// `libNAME.so` (this platform's prefix and suffix).
    pub fn library_file_name(&self) -> String {
        format!(
            "{}{}{}",
            std::env::consts::DLL_PREFIX,
            self.lib_name,
            std::env::consts::DLL_SUFFIX
        )
    }

    /// The library's path in `dir`.
    pub fn library_path(&self, dir: &Path) -> PathBuf {
        dir.join(self.library_file_name())
    }

    /// The `metadata.xml` template and where it came from: `<dir>/<crate>/metadata.xml`, the
    /// copy built into this binary, or the source tree's; `None` if none exists.
    pub fn template(&self, dir: &Path) -> anyhow::Result<Option<(Vec<u8>, String)>> {
        let beside = dir.join(self.crate_dir).join("metadata.xml");
        if let Some(bytes) = read_if_exists(&beside)? {
            return Ok(Some((bytes, beside.display().to_string())));
        }
        if let Some(bytes) = self.template {
            return Ok(Some((bytes.to_vec(), "built in".to_owned())));
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let root = root.canonicalize().unwrap_or(root);
        let source = root
            .join("extensions")
            .join(self.crate_dir)
            .join("metadata.xml");
        Ok(read_if_exists(&source)?.map(|bytes| (bytes, source.display().to_string())))
    }
}

fn read_if_exists(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
    }
}

/// Where the libraries are: `explicit` (`--extensions-dir`, `THINGPORT_EXTENSIONS_DIR`), else
/// the directory of the running executable.
pub fn extensions_dir(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    let exe = std::env::current_exe().context("cannot tell where this executable is")?;
    let exe = exe.canonicalize().unwrap_or(exe);
    exe.parent()
        .map(Path::to_path_buf)
        .context("the executable has no parent directory")
}

/// The package name and version a template declares (read with the server's rules, with a
/// placeholder library entry, before any library is read).
pub fn identity(bundled: &Bundled, template: &[u8]) -> anyhow::Result<(String, String)> {
    let entry = LibraryEntry {
        file: format!("lib/{}/{}", host_target(), bundled.library_file_name()),
        sha256: Sha256::of(b""),
        abi_version: 1,
    };
    let xml = with_native_library(template, &entry)
        .with_context(|| format!("the metadata.xml of {} is unreadable", bundled.name))?;
    let metadata = Metadata::parse(&xml)
        .with_context(|| format!("the metadata.xml of {} is invalid", bundled.name))?;
    Ok((metadata.name, metadata.version.to_string()))
}

/// The package of `bundled`, assembled in memory from `template` and the library at `library`
/// and verified as the server will.
pub fn pack(bundled: &Bundled, template: &[u8], library: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = match std::fs::read(library) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "extension library missing: {} (build the bundled extensions with `{BUILD_COMMAND}`, \
             or point --extensions-dir / THINGPORT_EXTENSIONS_DIR at the directory holding them)",
            library.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", library.display())),
    };
    let abi_version = thingport_client::pack::locate::abi_version_of(&bytes)
        .with_context(|| format!("cannot pack {}", library.display()))?;
    let assembled = thingport_client::pack::assemble(
        template,
        &bundled.library_file_name(),
        &bytes,
        abi_version,
        &host_target(),
        None,
    )
    .with_context(|| format!("cannot pack {}", bundled.name))?;
    Ok(assembled.zip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_templates_name_their_packages_in_dependency_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut names = Vec::new();
        for b in BUNDLED.iter().filter(|b| b.required) {
            let (template, source) = b.template(dir.path()).unwrap().unwrap();
            assert_eq!(source, "built in");
            let (name, version) = identity(b, &template).unwrap();
            assert_eq!(name, b.name);
            assert!(!version.is_empty());
            names.push(name);
        }
        assert_eq!(
            names,
            [
                "ConnectionServicesExtension",
                "RemoteAccessExtension",
                "AxedaCompatibilityExtension"
            ]
        );
    }

    #[test]
    fn a_template_beside_the_libraries_wins() {
        let dir = tempfile::tempdir().unwrap();
        let b = BUNDLED[0];
        std::fs::create_dir(dir.path().join(b.crate_dir)).unwrap();
        let custom = format!(
            r#"<Entities><ExtensionPackages><ExtensionPackage name="{}" packageVersion="1.0.7"/></ExtensionPackages></Entities>"#,
            b.name
        );
        std::fs::write(dir.path().join(b.crate_dir).join("metadata.xml"), &custom).unwrap();
        let (template, source) = b.template(dir.path()).unwrap().unwrap();
        assert!(source.ends_with("metadata.xml"), "{source}");
        assert_eq!(identity(&b, &template).unwrap().1, "1.0.7");
    }

    #[test]
    fn a_missing_library_names_the_build_command() {
        let dir = tempfile::tempdir().unwrap();
        let b = BUNDLED[1];
        let e = pack(&b, b.template.unwrap(), &b.library_path(dir.path())).unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains(BUILD_COMMAND), "{text}");
        assert!(text.contains("libremote_access"), "{text}");
    }
}
