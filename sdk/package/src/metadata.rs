//! `metadata.xml`: the ThingWorx package manifest plus Thingport's native part.
//!
//! ```xml
//! <Entities>
//!   <ExtensionPackages>
//!     <ExtensionPackage name="RemoteAccessExtension" packageVersion="1.2.3" vendor="Acme"
//!         description="..." minimumThingWorxVersion="9.0.0" dependsOn="Name:1.0.0,Other:2.1.0">
//!       <NativeLibrary file="lib/x86_64-unknown-linux-gnu/libremote_access.so"
//!           sha256="<64 hex digits>" abiVersion="1"/>
//!     </ExtensionPackage>
//!   </ExtensionPackages>
//! </Entities>
//! ```
//!
//! Canonical placement: `NativeLibrary` elements are children of `ExtensionPackage` (one per
//! target triple). They are also accepted as siblings of `ExtensionPackage` under
//! `ExtensionPackages`, since a package holds exactly one `ExtensionPackage`. The target triple is
//! the optional `target` attribute, else the path segment after `lib/` in `file`. Other
//! elements and attributes (ThingWorx entity exports, `haCompatible`, ...) are ignored.
//!
//! The document is bounded ([`MAX_METADATA_SIZE`]), must be UTF-8, and may not contain a
//! DOCTYPE: no DTD, so no external entities and no entity expansion.

use super::digest::Sha256;
use super::zipsafe::{check_path, Files};
use quick_xml::events::{BytesStart, Event};
use semver::Version;
use std::collections::BTreeMap;

/// The manifest's path at the root of a package.
pub const METADATA_FILE: &str = "metadata.xml";
/// Largest accepted `metadata.xml`: 1 MiB.
pub const MAX_METADATA_SIZE: usize = 1024 * 1024;
const MAX_DEPTH: usize = 32;
const MAX_NAME_LEN: usize = 128;

/// A parsed and validated `metadata.xml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// `ExtensionPackage/@name`: 1 to 128 letters, digits, `_`, `-` or `.`.
    pub name: String,
    /// `ExtensionPackage/@packageVersion`, a semantic version.
    pub version: Version,
    /// `ExtensionPackage/@vendor` (empty when absent).
    pub vendor: String,
    /// `ExtensionPackage/@description` (empty when absent).
    pub description: String,
    /// `ExtensionPackage/@minimumThingWorxVersion`, kept as written, not enforced.
    pub minimum_thingworx_version: Option<String>,
    /// `ExtensionPackage/@dependsOn`, in the order written.
    pub depends_on: Vec<Dependency>,
    /// The `NativeLibrary` elements, at least one, one per target.
    pub native_libraries: Vec<NativeLibrary>,
}

/// One `dependsOn` entry: `Name:X.Y.Z`, satisfied by the same major version at or above X.Y.Z.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub name: String,
    pub version: Version,
}

/// One `NativeLibrary` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeLibrary {
    /// Path of the library inside the package (a safe relative path).
    pub file: String,
    /// Target triple, e.g. `x86_64-unknown-linux-gnu`.
    pub target: String,
    /// SHA-256 of the library file.
    pub sha256: Sha256,
    /// The ABI major version the library implements.
    pub abi_version: u32,
}

/// Why `metadata.xml` was refused. Each message starts with `metadata.xml:` and names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata.xml is missing from the package root")]
    Missing,
    #[error("metadata.xml: the file is {size} bytes, over the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("metadata.xml: the file is not UTF-8")]
    NotUtf8,
    #[error("metadata.xml: not well-formed XML at byte {position}: {message}")]
    Xml { position: u64, message: String },
    #[error("metadata.xml: a DOCTYPE is not allowed (no DTDs or entity declarations)")]
    DocType,
    #[error("metadata.xml: elements are nested more than {MAX_DEPTH} deep")]
    TooDeep,
    #[error("metadata.xml: the root element is {found}, expected Entities")]
    WrongRoot { found: String },
    #[error("metadata.xml: expected exactly one Entities/ExtensionPackages/ExtensionPackage, found {found}")]
    PackageCount { found: usize },
    #[error("metadata.xml: {field} is missing")]
    MissingField { field: String },
    #[error("metadata.xml: {field}: {message}")]
    Malformed { field: String, message: String },
    #[error("metadata.xml: {field} {value:?} {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
}

impl MetadataError {
    /// The field the error names, e.g. `ExtensionPackage/@packageVersion`.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::MissingField { field }
            | Self::Invalid { field, .. }
            | Self::Malformed { field, .. } => Some(field),
            _ => None,
        }
    }

    fn invalid(field: impl Into<String>, value: &str, reason: impl Into<String>) -> Self {
        let mut value = value.to_owned();
        if value.chars().count() > 80 {
            value = value.chars().take(80).collect::<String>() + "…";
        }
        Self::Invalid {
            field: field.into(),
            value,
            reason: reason.into(),
        }
    }
}

impl Metadata {
    /// Reads and parses `metadata.xml` from the root of a package's files.
    pub fn from_files(files: &Files) -> Result<Self, MetadataError> {
        let xml = files.get(METADATA_FILE).ok_or(MetadataError::Missing)?;
        Self::parse(xml)
    }

    /// Parses and validates a `metadata.xml` document.
    pub fn parse(xml: &[u8]) -> Result<Self, MetadataError> {
        let raw = read_raw(xml)?;
        validate(raw)
    }

    /// The library for `target`, if the package has one.
    pub fn library_for(&self, target: &str) -> Option<&NativeLibrary> {
        self.native_libraries.iter().find(|l| l.target == target)
    }
}

type Attrs = BTreeMap<String, String>;

/// The elements of interest, with their attributes, before validation.
struct Raw {
    packages: Vec<Attrs>,
    libraries: Vec<Attrs>,
}

fn read_raw(xml: &[u8]) -> Result<Raw, MetadataError> {
    if xml.len() > MAX_METADATA_SIZE {
        return Err(MetadataError::TooLarge {
            size: xml.len(),
            max: MAX_METADATA_SIZE,
        });
    }
    let text = std::str::from_utf8(xml).map_err(|_| MetadataError::NotUtf8)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let xml_error =
        |reader: &quick_xml::Reader<&[u8]>, e: &dyn std::fmt::Display| MetadataError::Xml {
            position: reader.error_position(),
            message: e.to_string(),
        };

    let mut stack: Vec<String> = Vec::new();
    let mut saw_root = false;
    let mut raw = Raw {
        packages: Vec::new(),
        libraries: Vec::new(),
    };
    loop {
        let event = reader.read_event().map_err(|e| xml_error(&reader, &e))?;
        let (start, is_empty) = match event {
            Event::Eof if stack.is_empty() => break,
            Event::Eof => {
                let open = stack.last().cloned().unwrap_or_default();
                return Err(xml_error(&reader, &format!("element {open} is not closed")));
            }
            Event::DocType(_) => return Err(MetadataError::DocType),
            Event::End(_) => {
                stack.pop();
                continue;
            }
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            // Text, comments, CDATA, references, declarations and processing instructions
            // carry nothing we read.
            _ => continue,
        };
        let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
        if stack.is_empty() {
            if saw_root || name != "Entities" {
                return Err(MetadataError::WrongRoot { found: name });
            }
            saw_root = true;
        }
        let path: Vec<&str> = stack.iter().map(String::as_str).collect();
        match (name.as_str(), path.as_slice()) {
            ("ExtensionPackage", ["Entities", "ExtensionPackages"]) => {
                raw.packages.push(attributes(&start, "ExtensionPackage")?);
            }
            ("NativeLibrary", ["Entities", "ExtensionPackages", "ExtensionPackage"])
            | ("NativeLibrary", ["Entities", "ExtensionPackages"]) => {
                let label = format!("NativeLibrary[{}]", raw.libraries.len() + 1);
                raw.libraries.push(attributes(&start, &label)?);
            }
            _ => {}
        }
        if !is_empty {
            if stack.len() >= MAX_DEPTH {
                return Err(MetadataError::TooDeep);
            }
            stack.push(name);
        }
    }
    if !saw_root {
        return Err(MetadataError::WrongRoot {
            found: "nothing".to_owned(),
        });
    }
    Ok(raw)
}

fn attributes(start: &BytesStart<'_>, element: &str) -> Result<Attrs, MetadataError> {
    let mut attrs = Attrs::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| MetadataError::Malformed {
            field: element.to_owned(),
            message: format!("malformed attribute: {e}"),
        })?;
        let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
        let field = format!("{element}/@{key}");
        let value = attr
            .unescape_value()
            .map_err(|e| MetadataError::Malformed {
                field: field.clone(),
                message: format!("cannot be read: {e}"),
            })?;
        attrs.insert(key, value.into_owned());
    }
    Ok(attrs)
}

fn validate(raw: Raw) -> Result<Metadata, MetadataError> {
    let [package] = <[Attrs; 1]>::try_from(raw.packages)
        .map_err(|v| MetadataError::PackageCount { found: v.len() })?;
    let field = |attr: &str| format!("ExtensionPackage/@{attr}");
    let required = |attr: &str| {
        package
            .get(attr)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| MetadataError::MissingField { field: field(attr) })
    };
    let optional = |attr: &str| {
        package
            .get(attr)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };

    let name = required("name")?;
    check_name(&field("name"), name)?;
    let version_text = required("packageVersion")?;
    let version = Version::parse(version_text).map_err(|_| {
        MetadataError::invalid(
            field("packageVersion"),
            version_text,
            "is not a semantic version",
        )
    })?;
    let depends_on = parse_depends_on(name, optional("dependsOn").as_deref().unwrap_or(""))?;

    if raw.libraries.is_empty() {
        return Err(MetadataError::MissingField {
            field: "ExtensionPackage/NativeLibrary".to_owned(),
        });
    }
    let mut native_libraries: Vec<NativeLibrary> = Vec::with_capacity(raw.libraries.len());
    for (i, attrs) in raw.libraries.iter().enumerate() {
        let library = parse_library(&format!("NativeLibrary[{}]", i + 1), attrs)?;
        if native_libraries.iter().any(|l| l.target == library.target) {
            return Err(MetadataError::invalid(
                format!("NativeLibrary[{}]/@target", i + 1),
                &library.target,
                "is listed twice (one NativeLibrary per target)",
            ));
        }
        native_libraries.push(library);
    }

    Ok(Metadata {
        name: name.to_owned(),
        version,
        vendor: optional("vendor").unwrap_or_default(),
        description: optional("description").unwrap_or_default(),
        minimum_thingworx_version: optional("minimumThingWorxVersion"),
        depends_on,
        native_libraries,
    })
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

fn check_name(field: &str, name: &str) -> Result<(), MetadataError> {
    if name.len() > MAX_NAME_LEN || !name.chars().all(is_name_char) {
        return Err(MetadataError::invalid(
            field,
            name,
            "is not a valid package name (1 to 128 letters, digits, '_', '-' or '.')",
        ));
    }
    Ok(())
}

fn parse_depends_on(own_name: &str, text: &str) -> Result<Vec<Dependency>, MetadataError> {
    const FIELD: &str = "ExtensionPackage/@dependsOn";
    let mut deps: Vec<Dependency> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, version)) = entry.split_once(':') else {
            return Err(MetadataError::invalid(FIELD, entry, "is not Name:version"));
        };
        let (name, version) = (name.trim(), version.trim());
        if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(is_name_char) {
            return Err(MetadataError::invalid(
                FIELD,
                entry,
                "does not start with a valid package name",
            ));
        }
        let version = Version::parse(version).map_err(|_| {
            MetadataError::invalid(
                FIELD,
                entry,
                format!("{version:?} is not a semantic version"),
            )
        })?;
        if name == own_name {
            return Err(MetadataError::invalid(
                FIELD,
                entry,
                "names the package itself",
            ));
        }
        if deps.iter().any(|d| d.name == name) {
            return Err(MetadataError::invalid(
                FIELD,
                entry,
                "names a package twice",
            ));
        }
        deps.push(Dependency {
            name: name.to_owned(),
            version,
        });
    }
    Ok(deps)
}

fn parse_library(label: &str, attrs: &Attrs) -> Result<NativeLibrary, MetadataError> {
    let field = |attr: &str| format!("{label}/@{attr}");
    let required = |attr: &str| {
        attrs
            .get(attr)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| MetadataError::MissingField { field: field(attr) })
    };

    let file = required("file")?;
    if check_path(file, file.as_bytes()).is_err() || file.ends_with('/') {
        return Err(MetadataError::invalid(
            field("file"),
            file,
            "is not a safe relative path to a file",
        ));
    }
    let path_target = file
        .strip_prefix("lib/")
        .and_then(|rest| rest.split_once('/'))
        .map(|(target, _)| target);
    let target = match (attrs.get("target").map(|t| t.trim()), path_target) {
        (Some(t), Some(p)) if !t.is_empty() && t != p => {
            return Err(MetadataError::invalid(
                field("target"),
                t,
                format!("differs from the target {p:?} in the file path"),
            ))
        }
        (Some(t), _) if !t.is_empty() => t,
        (_, Some(p)) => p,
        _ => return Err(MetadataError::invalid(
            field("file"),
            file,
            "does not name a target (expected lib/<target-triple>/<file>, or a target attribute)",
        )),
    };
    if !target.chars().all(is_name_char) {
        return Err(MetadataError::invalid(
            field("target"),
            target,
            "is not a target triple",
        ));
    }
    let sha_text = required("sha256")?;
    let sha256 = sha_text.parse::<Sha256>().map_err(|_| {
        MetadataError::invalid(field("sha256"), sha_text, "is not 64 hexadecimal digits")
    })?;
    let abi_text = required("abiVersion")?;
    let abi_version = abi_text.parse::<u32>().map_err(|_| {
        MetadataError::invalid(
            field("abiVersion"),
            abi_text,
            "is not a non-negative integer",
        )
    })?;
    Ok(NativeLibrary {
        file: file.to_owned(),
        target: target.to_owned(),
        sha256,
        abi_version,
    })
}

#[cfg(test)]
mod tests;
