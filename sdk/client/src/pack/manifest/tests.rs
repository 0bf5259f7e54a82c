use super::*;
use thingport_package::Metadata;

fn entry() -> LibraryEntry {
    LibraryEntry {
        file: "lib/x86_64-unknown-linux-gnu/libhello.so".to_owned(),
        sha256: Sha256::of(b"library"),
        abi_version: 1,
    }
}

fn rewrite(template: &str) -> String {
    String::from_utf8(with_native_library(template.as_bytes(), &entry()).unwrap()).unwrap()
}

#[test]
fn an_empty_package_element_gets_the_library_as_its_child() {
    let template = r#"<?xml version="1.0" encoding="UTF-8"?>
<Entities>
  <ExtensionPackages>
    <ExtensionPackage name="Hello" packageVersion="1.0.0" vendor="Example"
        description="Things that count clicks" minimumThingWorxVersion="9.0.0"/>
  </ExtensionPackages>
</Entities>
"#;
    let expected = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Entities>
  <ExtensionPackages>
    <ExtensionPackage name="Hello" packageVersion="1.0.0" vendor="Example"
        description="Things that count clicks" minimumThingWorxVersion="9.0.0">
      {}
    </ExtensionPackage>
  </ExtensionPackages>
</Entities>
"#,
        entry().element()
    );
    let out = rewrite(template);
    assert_eq!(out, expected);
    let metadata = Metadata::parse(out.as_bytes()).unwrap();
    assert_eq!(metadata.name, "Hello");
    assert_eq!(metadata.native_libraries.len(), 1);
    let lib = &metadata.native_libraries[0];
    assert_eq!(lib.file, entry().file);
    assert_eq!(lib.target, "x86_64-unknown-linux-gnu");
    assert_eq!(lib.sha256, entry().sha256);
    assert_eq!(lib.abi_version, 1);
}

#[test]
fn existing_libraries_are_replaced_wherever_the_server_reads_them() {
    let template = r#"<Entities>
  <ExtensionPackages>
    <!-- the manifest -->
    <ExtensionPackage name="Hello" packageVersion="1.0.0" description="A &amp; B">
      <NativeLibrary file="lib/old-target/libold.so" sha256="00" abiVersion="0"/>
      <Other keep="yes"/>
      <NativeLibrary file="lib/x86_64-unknown-linux-gnu/libhello.so"
          sha256="11" abiVersion="1"><Nested/></NativeLibrary>
    </ExtensionPackage>
    <NativeLibrary file="lib/sibling/libs.so" sha256="22" abiVersion="1"/>
  </ExtensionPackages>
</Entities>"#;
    let expected = format!(
        r#"<Entities>
  <ExtensionPackages>
    <!-- the manifest -->
    <ExtensionPackage name="Hello" packageVersion="1.0.0" description="A &amp; B">
      <Other keep="yes"/>
      {}
    </ExtensionPackage>
  </ExtensionPackages>
</Entities>"#,
        entry().element()
    );
    let out = rewrite(template);
    assert_eq!(out, expected);
    let metadata = Metadata::parse(out.as_bytes()).unwrap();
    assert_eq!(metadata.description, "A & B");
    assert_eq!(metadata.native_libraries.len(), 1);
}

#[test]
fn rewriting_is_idempotent() {
    let template = r#"<Entities><ExtensionPackages>
  <ExtensionPackage name="Hello" packageVersion="1.0.0">
  </ExtensionPackage>
</ExtensionPackages></Entities>"#;
    let once = rewrite(template);
    assert_eq!(rewrite(&once), once);
    assert_eq!(once.matches("<NativeLibrary").count(), 1);
}

#[test]
fn a_one_line_template_stays_on_one_line() {
    let template = r#"<Entities><ExtensionPackages><ExtensionPackage name="A" packageVersion="1.0.0"/></ExtensionPackages></Entities>"#;
    let expected = format!(
        r#"<Entities><ExtensionPackages><ExtensionPackage name="A" packageVersion="1.0.0">{}</ExtensionPackage></ExtensionPackages></Entities>"#,
        entry().element()
    );
    assert_eq!(rewrite(template), expected);
    let open_close = r#"<Entities><ExtensionPackages><ExtensionPackage name="A" packageVersion="1.0.0"></ExtensionPackage></ExtensionPackages></Entities>"#;
    assert_eq!(rewrite(open_close), expected);
}

#[test]
fn crlf_and_tabs_are_followed() {
    let template = "<Entities>\r\n\t<ExtensionPackages>\r\n\t\t<ExtensionPackage name=\"A\" packageVersion=\"1.0.0\"/>\r\n\t</ExtensionPackages>\r\n</Entities>\r\n";
    let expected = format!(
        "<Entities>\r\n\t<ExtensionPackages>\r\n\t\t<ExtensionPackage name=\"A\" packageVersion=\"1.0.0\">\r\n\t\t\t{}\r\n\t\t</ExtensionPackage>\r\n\t</ExtensionPackages>\r\n</Entities>\r\n",
        entry().element()
    );
    assert_eq!(rewrite(template), expected);
}

#[test]
fn a_byte_order_mark_is_dropped() {
    let template = "\u{feff}<Entities><ExtensionPackages><ExtensionPackage name=\"A\" packageVersion=\"1.0.0\"/></ExtensionPackages></Entities>";
    assert!(rewrite(template).starts_with("<Entities>"));
}

#[test]
fn the_element_escapes_its_attributes() {
    let mut e = entry();
    e.file = "lib/t/a\"&b.so".to_owned();
    assert!(
        e.element().contains(r#"file="lib/t/a&quot;&amp;b.so""#),
        "{}",
        e.element()
    );
}

#[test]
fn templates_without_a_package_or_not_xml_are_refused() {
    let none = with_native_library(b"<Entities><ExtensionPackages/></Entities>", &entry());
    assert_eq!(none, Err(ManifestError::NoPackage));
    let nested = with_native_library(
        b"<Entities><Other><ExtensionPackage name=\"A\"/></Other></Entities>",
        &entry(),
    );
    assert_eq!(nested, Err(ManifestError::NoPackage));
    let broken = with_native_library(b"<Entities><ExtensionPackages></Entities>", &entry());
    assert!(
        matches!(broken, Err(ManifestError::Xml { .. })),
        "{broken:?}"
    );
    let binary = with_native_library(&[0xff, 0xfe, 0x00], &entry());
    assert_eq!(binary, Err(ManifestError::NotUtf8));
}
