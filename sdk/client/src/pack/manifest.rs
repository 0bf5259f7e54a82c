//! Turning the author's `metadata.xml` template into the package's `metadata.xml`.
//!
//! The template is the ThingWorx manifest an author keeps next to `Cargo.toml` (name,
//! `packageVersion`, vendor, description, `dependsOn`). [`with_native_library`] removes every
//! `NativeLibrary` element it may hold (children of `ExtensionPackage`, or siblings under
//! `ExtensionPackages`, the two placements the server reads) and inserts one for the packed
//! library as the last child of `ExtensionPackage`. Everything else is kept byte for byte:
//! the edit is a splice of the original text, not a re-serialization.

use quick_xml::escape::escape;
use quick_xml::events::Event;
use std::ops::Range;
use thingport_package::Sha256;

/// The `NativeLibrary` element to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryEntry {
    /// Path of the library inside the package: `lib/<target>/<file name>`.
    pub file: String,
    /// SHA-256 of the library's bytes.
    pub sha256: Sha256,
    /// The ABI major version the library implements.
    pub abi_version: u32,
}

impl LibraryEntry {
    /// The element, e.g. `<NativeLibrary file="lib/…/libx.so" sha256="…" abiVersion="1"/>`.
    pub fn element(&self) -> String {
        format!(
            r#"<NativeLibrary file="{}" sha256="{}" abiVersion="{}"/>"#,
            escape(self.file.as_str()),
            self.sha256,
            self.abi_version
        )
    }
}

/// Why the template could not be rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("not UTF-8")]
    NotUtf8,
    #[error("not well-formed XML at byte {position}: {message}")]
    Xml { position: u64, message: String },
    #[error("no Entities/ExtensionPackages/ExtensionPackage element")]
    NoPackage,
}

/// Returns `template` with its `NativeLibrary` elements replaced by `library`'s.
pub fn with_native_library(
    template: &[u8],
    library: &LibraryEntry,
) -> Result<Vec<u8>, ManifestError> {
    let text = std::str::from_utf8(template).map_err(|_| ManifestError::NotUtf8)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().check_end_names = true;

    // (range of `text` to replace, replacement), in document order, never overlapping.
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    // The whitespace-only text right before the current event, if any.
    let mut last_ws: Option<Range<usize>> = None;
    // Start of a `NativeLibrary` being removed, and the depth to close it at.
    let mut removing: Option<(usize, usize)> = None;
    // Layout of `ExtensionPackage`: the newline and indentation of its line (None: one line).
    let mut layout: Option<(String, String)> = None;
    let mut inserted = false;

    loop {
        let before = position(reader.buffer_position());
        let event = reader.read_event().map_err(|e| ManifestError::Xml {
            position: reader.error_position(),
            message: e.to_string(),
        })?;
        let after = position(reader.buffer_position());
        if let Some((start, depth)) = removing {
            match event {
                Event::Start(e) => stack.push(name_of(e.name().as_ref())),
                Event::End(_) => {
                    stack.pop();
                    if stack.len() == depth {
                        edits.push((start..after, String::new()));
                        removing = None;
                        last_ws = None;
                    }
                }
                Event::Eof => break,
                _ => {}
            }
            continue;
        }
        let ws = last_ws.take();
        let path: Vec<&str> = stack.iter().map(String::as_str).collect();
        match &event {
            Event::Eof => break,
            Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => {
                last_ws = Some(ws.map_or(before, |w| w.start)..after);
                continue;
            }
            Event::Start(e) | Event::Empty(e)
                if e.name().as_ref() == b"NativeLibrary"
                    && matches!(
                        path.as_slice(),
                        ["Entities", "ExtensionPackages"]
                            | ["Entities", "ExtensionPackages", "ExtensionPackage"]
                    ) =>
            {
                let start = ws.map_or(before, |w| w.start);
                if matches!(event, Event::Start(_)) {
                    removing = Some((start, stack.len()));
                    stack.push("NativeLibrary".to_owned());
                } else {
                    edits.push((start..after, String::new()));
                }
                continue;
            }
            Event::Start(e) | Event::Empty(e)
                if e.name().as_ref() == b"ExtensionPackage"
                    && path.as_slice() == ["Entities", "ExtensionPackages"]
                    && !inserted =>
            {
                layout = ws.map(|w| indentation(&text[w])).unwrap_or_default();
                if matches!(event, Event::Empty(_)) {
                    // `<ExtensionPackage …/>` becomes `<ExtensionPackage …>…</ExtensionPackage>`.
                    let slash = after
                        .checked_sub(2)
                        .filter(|&at| text.get(at..after) == Some("/>"))
                        .ok_or(ManifestError::NoPackage)?;
                    let (open, close) = surround(&layout, &library.element());
                    edits.push((slash..after, format!(">{open}{close}</ExtensionPackage>")));
                    inserted = true;
                }
            }
            Event::End(e)
                if e.name().as_ref() == b"ExtensionPackage"
                    && path.as_slice() == ["Entities", "ExtensionPackages", "ExtensionPackage"]
                    && !inserted =>
            {
                // Insert before the whitespace that precedes `</ExtensionPackage>`, so the
                // closing tag keeps its own line and indentation.
                let (open, close) = surround(&layout, &library.element());
                match ws {
                    Some(w) => edits.push((w.start..w.start, open)),
                    None => edits.push((before..before, format!("{open}{close}"))),
                }
                inserted = true;
            }
            _ => {}
        }
        match event {
            Event::Start(e) => stack.push(name_of(e.name().as_ref())),
            Event::End(_) => {
                stack.pop();
            }
            _ => {}
        }
    }
    if !inserted {
        return Err(ManifestError::NoPackage);
    }

    let mut out = String::with_capacity(text.len() + 200);
    let mut at = 0;
    for (range, replacement) in edits {
        out.push_str(&text[at..range.start]);
        out.push_str(&replacement);
        at = range.end;
    }
    out.push_str(&text[at..]);
    Ok(out.into_bytes())
}

fn position(p: u64) -> usize {
    usize::try_from(p).unwrap_or(usize::MAX)
}

fn name_of(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// The newline (`\n` or `\r\n`) and the indentation after the last newline of `ws`, when it
/// holds a newline.
fn indentation(ws: &str) -> Option<(String, String)> {
    let (head, indent) = ws.rsplit_once('\n')?;
    let newline = if head.ends_with('\r') { "\r\n" } else { "\n" };
    Some((newline.to_owned(), indent.to_owned()))
}

/// The text before the closing tag of `ExtensionPackage`: the element on its own line one level
/// deeper (`open`), then the closing tag's own line break (`close`).
fn surround(layout: &Option<(String, String)>, element: &str) -> (String, String) {
    match layout {
        Some((newline, indent)) => {
            let step = if indent.contains('\t') { "\t" } else { "  " };
            (
                format!("{newline}{indent}{step}{element}"),
                format!("{newline}{indent}"),
            )
        }
        None => (element.to_owned(), String::new()),
    }
}

#[cfg(test)]
mod tests;
