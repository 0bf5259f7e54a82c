use super::*;
use crate::testutil::{metadata_xml, TARGET};

const SHA: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

fn sha() -> Sha256 {
    SHA.parse().unwrap()
}

/// A document with `package_attrs` on ExtensionPackage and `libs` as its children.
fn doc(package_attrs: &str, libs: &str) -> String {
    format!(
        "<Entities><ExtensionPackages><ExtensionPackage {package_attrs}>{libs}\
         </ExtensionPackage></ExtensionPackages></Entities>"
    )
}

fn lib(attrs: &str) -> String {
    format!("<NativeLibrary {attrs}/>")
}

fn good_lib() -> String {
    lib(&format!(
        r#"file="lib/{TARGET}/libA.so" sha256="{SHA}" abiVersion="1""#
    ))
}

fn parse_err(xml: &str) -> MetadataError {
    Metadata::parse(xml.as_bytes()).unwrap_err()
}

#[test]
fn parses_the_thingworx_shape_with_a_native_library() {
    let xml = metadata_xml(
        "RemoteAccessExtension",
        "1.2.3",
        "Base:1.0.0, Other:2.1.0",
        &[(TARGET, sha(), 1)],
    );
    let m = Metadata::parse(xml.as_bytes()).unwrap();
    assert_eq!(m.name, "RemoteAccessExtension");
    assert_eq!(m.version, Version::new(1, 2, 3));
    assert_eq!(m.vendor, "Acme");
    assert_eq!(m.description, "test package");
    assert_eq!(m.minimum_thingworx_version.as_deref(), Some("9.0.0"));
    assert_eq!(
        m.depends_on,
        vec![
            Dependency {
                name: "Base".into(),
                version: Version::new(1, 0, 0)
            },
            Dependency {
                name: "Other".into(),
                version: Version::new(2, 1, 0)
            },
        ]
    );
    let l = m.library_for(TARGET).unwrap();
    assert_eq!(l.file, format!("lib/{TARGET}/libRemoteAccessExtension.so"));
    assert_eq!(l.sha256, sha());
    assert_eq!(l.abi_version, 1);
    assert!(m.library_for("aarch64-apple-darwin").is_none());
}

#[test]
fn accepts_native_library_beside_the_package_and_a_target_attribute() {
    let xml = format!(
        r#"<?xml version="1.0"?><Entities><ExtensionPackages>
        <ExtensionPackage name="A" packageVersion="1.0.0"/>
        <NativeLibrary file="native/a.dll" target="x86_64-pc-windows-msvc" sha256="{SHA}" abiVersion="1"/>
        <NativeLibrary file="lib/{TARGET}/libA.so" target="{TARGET}" sha256="{}" abiVersion="2"/>
        </ExtensionPackages><ThingPackages/></Entities>"#,
        SHA.to_uppercase()
    );
    let m = Metadata::parse(xml.as_bytes()).unwrap();
    assert_eq!(m.native_libraries.len(), 2);
    assert_eq!(m.native_libraries[0].target, "x86_64-pc-windows-msvc");
    assert_eq!(m.native_libraries[1].sha256, sha());
    assert_eq!(m.native_libraries[1].abi_version, 2);
    assert!(m.depends_on.is_empty());
    assert_eq!(m.vendor, "");
    assert_eq!(m.minimum_thingworx_version, None);
}

#[test]
fn ignores_unknown_elements_attributes_comments_and_a_bom() {
    let xml = format!(
        "\u{feff}<?xml version=\"1.0\"?><!-- c --><Entities><Things><Thing name=\"x\">text &amp; more</Thing></Things>\
         <ExtensionPackages><ExtensionPackage name=\"A\" packageVersion=\"1.0.0-beta.1+b7\" haCompatible=\"false\" \
         description=\"a &amp; b\">{}</ExtensionPackage></ExtensionPackages></Entities>",
        good_lib()
    );
    let m = Metadata::parse(xml.as_bytes()).unwrap();
    assert_eq!(m.version.to_string(), "1.0.0-beta.1+b7");
    assert_eq!(m.description, "a & b");
}

#[test]
fn missing_metadata_is_refused() {
    let err = Metadata::from_files(&Files::new()).unwrap_err();
    assert_eq!(err, MetadataError::Missing);
    assert_eq!(
        err.to_string(),
        "metadata.xml is missing from the package root"
    );
}

#[test]
fn each_missing_field_is_named() {
    let cases = [
        (
            doc(r#"packageVersion="1.0.0""#, &good_lib()),
            "ExtensionPackage/@name",
        ),
        (
            doc(r#"name="A""#, &good_lib()),
            "ExtensionPackage/@packageVersion",
        ),
        (
            doc(r#"name="  " packageVersion="1.0.0""#, &good_lib()),
            "ExtensionPackage/@name",
        ),
        (
            doc(r#"name="A" packageVersion="1.0.0""#, ""),
            "ExtensionPackage/NativeLibrary",
        ),
        (
            doc(
                r#"name="A" packageVersion="1.0.0""#,
                &lib(&format!(r#"sha256="{SHA}" abiVersion="1""#)),
            ),
            "NativeLibrary[1]/@file",
        ),
        (
            doc(
                r#"name="A" packageVersion="1.0.0""#,
                &lib(r#"file="lib/t/a.so" abiVersion="1""#),
            ),
            "NativeLibrary[1]/@sha256",
        ),
        (
            doc(
                r#"name="A" packageVersion="1.0.0""#,
                &lib(&format!(r#"file="lib/t/a.so" sha256="{SHA}""#)),
            ),
            "NativeLibrary[1]/@abiVersion",
        ),
    ];
    for (xml, field) in cases {
        let err = parse_err(&xml);
        assert!(
            matches!(err, MetadataError::MissingField { .. }),
            "{field}: {err:?}"
        );
        assert_eq!(err.field(), Some(field));
        assert_eq!(err.to_string(), format!("metadata.xml: {field} is missing"));
    }
}

#[test]
fn each_invalid_field_is_named() {
    let v = r#"name="A" packageVersion="1.0.0""#;
    let libs = |attrs: &str| lib(attrs);
    let cases = [
        (
            doc(r#"name="A" packageVersion="1.x""#, &good_lib()),
            "ExtensionPackage/@packageVersion",
            r#""1.x" is not a semantic version"#,
        ),
        (
            doc(r#"name="A" packageVersion="1.0""#, &good_lib()),
            "ExtensionPackage/@packageVersion",
            "is not a semantic version",
        ),
        (
            doc(r#"name="bad name" packageVersion="1.0.0""#, &good_lib()),
            "ExtensionPackage/@name",
            "is not a valid package name",
        ),
        (
            doc(
                &format!(r#"name="{}" packageVersion="1.0.0""#, "a".repeat(129)),
                &good_lib(),
            ),
            "ExtensionPackage/@name",
            "is not a valid package name",
        ),
        (
            doc(
                r#"name="A" packageVersion="1.0.0" dependsOn="B""#,
                &good_lib(),
            ),
            "ExtensionPackage/@dependsOn",
            r#""B" is not Name:version"#,
        ),
        (
            doc(
                r#"name="A" packageVersion="1.0.0" dependsOn="B:1.x""#,
                &good_lib(),
            ),
            "ExtensionPackage/@dependsOn",
            r#""1.x" is not a semantic version"#,
        ),
        (
            doc(
                r#"name="A" packageVersion="1.0.0" dependsOn="B c:1.0.0""#,
                &good_lib(),
            ),
            "ExtensionPackage/@dependsOn",
            "valid package name",
        ),
        (
            doc(
                r#"name="A" packageVersion="1.0.0" dependsOn="A:1.0.0""#,
                &good_lib(),
            ),
            "ExtensionPackage/@dependsOn",
            "itself",
        ),
        (
            doc(
                r#"name="A" packageVersion="1.0.0" dependsOn="B:1.0.0,B:1.1.0""#,
                &good_lib(),
            ),
            "ExtensionPackage/@dependsOn",
            "twice",
        ),
        (
            doc(
                v,
                &libs(&format!(
                    r#"file="lib/{TARGET}/a.so" sha256="abc" abiVersion="1""#
                )),
            ),
            "NativeLibrary[1]/@sha256",
            r#""abc" is not 64 hexadecimal digits"#,
        ),
        (
            doc(
                v,
                &libs(&format!(
                    r#"file="lib/{TARGET}/a.so" sha256="{}" abiVersion="1""#,
                    "g".repeat(64)
                )),
            ),
            "NativeLibrary[1]/@sha256",
            "hexadecimal",
        ),
        (
            doc(
                v,
                &libs(&format!(
                    r#"file="lib/{TARGET}/a.so" sha256="{SHA}" abiVersion="one""#
                )),
            ),
            "NativeLibrary[1]/@abiVersion",
            r#""one" is not a non-negative integer"#,
        ),
        (
            doc(
                v,
                &libs(&format!(
                    r#"file="lib/{TARGET}/a.so" sha256="{SHA}" abiVersion="-1""#
                )),
            ),
            "NativeLibrary[1]/@abiVersion",
            "integer",
        ),
        (
            doc(
                v,
                &libs(&format!(
                    r#"file="../{TARGET}/a.so" sha256="{SHA}" abiVersion="1""#
                )),
            ),
            "NativeLibrary[1]/@file",
            "safe relative path",
        ),
        (
            doc(
                v,
                &libs(&format!(
                    r#"file="/lib/{TARGET}/a.so" sha256="{SHA}" abiVersion="1""#
                )),
            ),
            "NativeLibrary[1]/@file",
            "safe relative path",
        ),
        (
            doc(
                v,
                &libs(&format!(r#"file="libA.so" sha256="{SHA}" abiVersion="1""#)),
            ),
            "NativeLibrary[1]/@file",
            "does not name a target",
        ),
        (
            doc(
                v,
                &libs(&format!(
                    r#"file="lib/{TARGET}/a.so" target="aarch64-apple-darwin" sha256="{SHA}" abiVersion="1""#
                )),
            ),
            "NativeLibrary[1]/@target",
            "differs from the target",
        ),
        (
            doc(
                v,
                &libs(&format!(
                    r#"file="x/a.so" target="bad target" sha256="{SHA}" abiVersion="1""#
                )),
            ),
            "NativeLibrary[1]/@target",
            "is not a target triple",
        ),
        (
            doc(
                v,
                &format!(
                    "{}{}",
                    good_lib(),
                    libs(&format!(
                        r#"file="lib/{TARGET}/b.so" sha256="{SHA}" abiVersion="1""#
                    ))
                ),
            ),
            "NativeLibrary[2]/@target",
            "is listed twice",
        ),
    ];
    for (xml, field, message) in cases {
        let err = parse_err(&xml);
        assert_eq!(err.field(), Some(field), "{xml}: {err}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("metadata.xml: {field} ")),
            "{text}"
        );
        assert!(text.contains(message), "{text} should contain {message}");
    }
}

#[test]
fn the_error_message_matches_the_documented_form() {
    let err = parse_err(&doc(r#"name="A" packageVersion="1.x""#, &good_lib()));
    assert_eq!(
        err.to_string(),
        r#"metadata.xml: ExtensionPackage/@packageVersion "1.x" is not a semantic version"#
    );
}

#[test]
fn long_values_are_shortened_in_messages() {
    let err = parse_err(&doc(
        &format!(r#"name="A" packageVersion="{}""#, "9".repeat(500)),
        &good_lib(),
    ));
    assert!(err.to_string().len() < 200, "{err}");
}

#[test]
fn structure_errors_are_refused() {
    let cases = [
        ("", "the root element is nothing"),
        ("<Other/>", "the root element is Other"),
        ("<Entities/>", "found 0"),
        ("<Entities><ExtensionPackages/></Entities>", "found 0"),
        (
            "<Entities><ExtensionPackages><ExtensionPackage name=\"A\"/><ExtensionPackage name=\"B\"/></ExtensionPackages></Entities>",
            "found 2",
        ),
        // Not at the documented path: not a package.
        ("<Entities><X><ExtensionPackages><ExtensionPackage name=\"A\"/></ExtensionPackages></X></Entities>", "found 0"),
        ("<Entities><ExtensionPackages>", "not well-formed"),
        ("<Entities></Other>", "not well-formed"),
        (
            "<Entities><ExtensionPackages><ExtensionPackage name=\"A\" name=\"B\"/></ExtensionPackages></Entities>",
            "ExtensionPackage: malformed attribute",
        ),
        ("<Entities/><Entities/>", "root element"),
    ];
    for (xml, message) in cases {
        let err = parse_err(xml);
        assert!(err.to_string().contains(message), "{xml}: {err}");
        assert!(err.to_string().starts_with("metadata.xml"), "{err}");
    }
}

#[test]
fn doctype_and_entities_are_refused() {
    let xxe = format!(
        r#"<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>{}"#,
        doc(r#"name="&x;" packageVersion="1.0.0""#, &good_lib())
    );
    assert_eq!(parse_err(&xxe), MetadataError::DocType);
    let laughs = "<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]><Entities/>";
    assert_eq!(parse_err(laughs), MetadataError::DocType);
    // An undeclared entity in an attribute cannot be expanded either.
    let err = parse_err(&doc(r#"name="&x;" packageVersion="1.0.0""#, &good_lib()));
    assert_eq!(err.field(), Some("ExtensionPackage/@name"), "{err}");
}

#[test]
fn size_encoding_and_depth_are_bounded() {
    let big = format!(
        "<Entities><!--{}--></Entities>",
        "x".repeat(MAX_METADATA_SIZE)
    );
    assert!(matches!(parse_err(&big), MetadataError::TooLarge { .. }));
    let err = Metadata::parse(b"<Entities>\xff</Entities>").unwrap_err();
    assert_eq!(err, MetadataError::NotUtf8);
    let deep = format!("<Entities>{}", "<a>".repeat(MAX_DEPTH + 1));
    assert_eq!(parse_err(&deep), MetadataError::TooDeep);
}
