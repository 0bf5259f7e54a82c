//! Finding what `ext pack` packs: the extension crate's names (from its `Cargo.toml`), the
//! workspace it belongs to, the target directory, and the built library in it.

use anyhow::{bail, Context as _};
use serde::Deserialize;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// An extension crate, as its `Cargo.toml` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionCrate {
    /// The crate's directory.
    pub dir: PathBuf,
    /// `[package] name`: what `cargo build -p` takes.
    pub package: String,
    /// The library's crate name (`[lib] name`, else the package name with `-` as `_`).
    pub lib_name: String,
    /// `[package] workspace`, the explicit path to the workspace root, if set.
    workspace: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Manifest {
    package: Option<PackageSection>,
    lib: Option<LibSection>,
}

#[derive(Deserialize)]
struct PackageSection {
    name: String,
    workspace: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LibSection {
    name: Option<String>,
    crate_type: Option<Vec<String>>,
}

impl ExtensionCrate {
    /// Reads `dir/Cargo.toml`. The crate must have a `[lib]` whose `crate-type` includes
    /// `cdylib`: an extension is a shared library.
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("Cargo.toml");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("{} is not a crate: it has no Cargo.toml", dir.display())
            }
            Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
        };
        let manifest: Manifest =
            toml::from_str(&text).with_context(|| format!("failed to parse {}", path.display()))?;
        let Some(package) = manifest.package else {
            bail!(
                "{} has no [package] section (a workspace root, not an extension crate?)",
                path.display()
            );
        };
        let cdylib = manifest
            .lib
            .as_ref()
            .and_then(|l| l.crate_type.as_ref())
            .is_some_and(|types| types.iter().any(|t| t == "cdylib"));
        if !cdylib {
            bail!(
                "{} is not an extension crate: its [lib] crate-type does not include \"cdylib\"",
                dir.display()
            );
        }
        let lib_name = manifest
            .lib
            .and_then(|l| l.name)
            .unwrap_or_else(|| package.name.replace('-', "_"));
        Ok(Self {
            dir: dir.to_path_buf(),
            package: package.name,
            lib_name,
            workspace: package.workspace,
        })
    }

    /// The library's file name on this platform, e.g. `libhello_counter.so`.
    pub fn library_file_name(&self) -> String {
        format!(
            "{}{}{}",
            std::env::consts::DLL_PREFIX,
            self.lib_name,
            std::env::consts::DLL_SUFFIX
        )
    }

    /// The root of the workspace the crate is built in: `[package] workspace` when set, else
    /// the nearest directory from the crate's upwards whose `Cargo.toml` has a `[workspace]`
    /// table, else the crate's own directory.
    pub fn workspace_root(&self) -> PathBuf {
        if let Some(explicit) = &self.workspace {
            return self.dir.join(explicit);
        }
        let start = std::path::absolute(&self.dir).unwrap_or_else(|_| self.dir.clone());
        start
            .ancestors()
            .find(|dir| has_workspace_table(&dir.join("Cargo.toml")))
            .map_or_else(|| self.dir.clone(), Path::to_path_buf)
    }
}

fn has_workspace_table(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    toml::from_str::<toml::Table>(&text).is_ok_and(|t| t.contains_key("workspace"))
}

/// The target directory: `explicit` (`--target-dir`), else `env` (`CARGO_TARGET_DIR`), else
/// `<workspace root>/target`.
pub fn target_dir(explicit: Option<&Path>, env: Option<OsString>, root: &Path) -> PathBuf {
    match (explicit, env) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, Some(dir)) if !dir.is_empty() => PathBuf::from(dir),
        _ => root.join("target"),
    }
}

/// A cargo build profile, by the name `--profile` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile(String);

impl Profile {
    /// `release`, `debug` (`dev` is the same), or a custom profile name.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("invalid profile {name:?}: expected release, debug or a cargo profile name");
        }
        Ok(Self(if name == "dev" { "debug" } else { name }.to_owned()))
    }

    /// The directory under the target directory that holds its output.
    pub fn dir_name(&self) -> &str {
        &self.0
    }

    /// The command that builds `package` in this profile.
    pub fn build_command(&self, package: &str) -> String {
        match self.0.as_str() {
            "release" => format!("cargo build --release -p {package}"),
            "debug" => format!("cargo build -p {package}"),
            other => format!("cargo build --profile {other} -p {package}"),
        }
    }
}

/// The built library of `krate` in `target_dir` for `profile`, or an error that names the
/// command that builds it.
pub fn find_library(
    krate: &ExtensionCrate,
    target_dir: &Path,
    profile: &Profile,
) -> anyhow::Result<PathBuf> {
    let path = target_dir
        .join(profile.dir_name())
        .join(krate.library_file_name());
    if !path.is_file() {
        bail!(
            "no built library at {}: run `{}` in {} first (or pass --target-dir)",
            path.display(),
            profile.build_command(&krate.package),
            krate.workspace_root().display()
        );
    }
    Ok(path)
}

/// Source files of `krate` (its `Cargo.toml`, and files under `src/`) modified after `library`:
/// the library may be stale. Best effort: unreadable files and times are skipped.
pub fn newer_sources(krate: &ExtensionCrate, library: &Path) -> Vec<PathBuf> {
    let Ok(built) = library.metadata().and_then(|m| m.modified()) else {
        return Vec::new();
    };
    let mut newer = Vec::new();
    let mut stack = vec![krate.dir.join("src")];
    let manifest = krate.dir.join("Cargo.toml");
    let mut check = |path: PathBuf| {
        if path
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t > built)
        {
            newer.push(path);
        }
    };
    check(manifest);
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                check(path);
            }
        }
    }
    newer.sort();
    newer
}

/// The ABI major version of a library, read from the name of the entry symbol it exports
/// (`thingport_extension_entry_v<MAJOR>`, see `thingport_extension_abi::ENTRY_SYMBOL`). The
/// library is scanned as bytes, never loaded.
pub fn abi_version_of(library: &[u8]) -> anyhow::Result<u32> {
    const PREFIX: &[u8] = b"thingport_extension_entry_v";
    let mut found: Vec<u32> = Vec::new();
    let mut rest = library;
    while let Some(at) = find(rest, PREFIX) {
        let tail = &rest[at + PREFIX.len()..];
        let digits = tail.iter().take_while(|b| b.is_ascii_digit()).count();
        // The symbol name is NUL-terminated in the dynamic string table.
        if digits > 0 && tail.get(digits) == Some(&0) {
            let version = std::str::from_utf8(&tail[..digits])
                .ok()
                .and_then(|d| d.parse::<u32>().ok());
            if let Some(v) = version.filter(|v| !found.contains(v)) {
                found.push(v);
            }
        }
        rest = tail;
    }
    match found.as_slice() {
        [one] => Ok(*one),
        [] => bail!(
            "the library exports no thingport_extension_entry_v<N> symbol: is it an extension \
             (does it call thingport_sdk::export_extension!)?"
        ),
        many => bail!("the library names several entry symbols (ABI versions {many:?})"),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests;
