//! Property-based tests of the host's decoders of untrusted input (issue 16): `metadata.xml`,
//! the zip checks of an uploaded package, and InfoTable values in JSON. Arbitrary input never
//! panics and is refused with an error; valid input round-trips. Sizes are bounded by the
//! decoders' own limits (the upload's byte limit before anything is read, [`ZipLimits`] for what
//! an archive may expand to), which are exercised here past their edges. proptest's default of
//! 256 cases per property keeps the run short.

use crate::extensions::package::metadata::Metadata;
use crate::extensions::package::zipsafe::{read_zip, ZipLimits};
use crate::model::basetype::{BaseType, FieldDef, ShapeLookup};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::io::Write as _;

const SHA: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

struct NoShapes;
impl ShapeLookup for NoShapes {
    fn data_shape_fields(&self, _: &str) -> Option<&[FieldDef]> {
        None
    }
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9_.-]{0,40}"
}

fn small_zip(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (n, data) in files {
        w.start_file(n.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

proptest! {
    #[test]
    fn any_bytes_are_a_manifest_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Metadata::parse(&bytes);
    }

    #[test]
    fn any_text_in_the_manifest_shape_is_a_manifest_or_an_error(
        n in ".{0,60}", v in ".{0,20}", deps in ".{0,60}", extra in ".{0,60}"
    ) {
        let xml = format!(
            "<Entities><ExtensionPackages><ExtensionPackage name=\"{n}\" packageVersion=\"{v}\" \
             dependsOn=\"{deps}\" {extra}/></ExtensionPackages></Entities>"
        );
        let _ = Metadata::parse(xml.as_bytes());
    }

    #[test]
    fn valid_manifests_round_trip(n in name(), major in 0u64..100, minor in 0u64..100, patch in 0u64..100,
                                  dep in name(), vendor in "[A-Za-z ]{0,30}") {
        prop_assume!(dep != n, "a package cannot depend on itself");
        let xml = format!(
            "<Entities><ExtensionPackages><ExtensionPackage name=\"{n}\" packageVersion=\"{major}.{minor}.{patch}\" \
             vendor=\"{vendor}\" description=\"d\" dependsOn=\"{dep}:1.0.0\"><NativeLibrary \
             file=\"lib/x86_64-unknown-linux-gnu/libA.so\" sha256=\"{SHA}\" abiVersion=\"1\"/>\
             </ExtensionPackage></ExtensionPackages></Entities>"
        );
        let m = Metadata::parse(xml.as_bytes()).expect("a valid manifest parses");
        prop_assert_eq!(m.name, n);
        prop_assert_eq!(m.version.to_string(), format!("{major}.{minor}.{patch}"));
        prop_assert_eq!(m.vendor, vendor.trim(), "the vendor is kept, trimmed");
        prop_assert_eq!(m.depends_on.len(), 1);
        prop_assert_eq!(&m.depends_on[0].name, &dep);
    }

    #[test]
    fn any_bytes_are_a_zip_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = read_zip(&bytes, &ZipLimits::default());
    }

    #[test]
    fn a_zip_with_a_byte_changed_is_read_or_refused(files in proptest::collection::btree_map(name(), proptest::collection::vec(any::<u8>(), 0..512), 1..5),
                                                    at in any::<usize>(), to in any::<u8>()) {
        let files: Vec<(String, Vec<u8>)> = files.into_iter().collect();
        let mut bytes = small_zip(&files);
        let i = at % bytes.len();
        bytes[i] = to;
        let _ = read_zip(&bytes, &ZipLimits::default());
    }

    #[test]
    fn zips_round_trip_within_the_limits(files in proptest::collection::btree_map(name(), proptest::collection::vec(any::<u8>(), 0..512), 1..6)) {
        let list: Vec<(String, Vec<u8>)> = files.clone().into_iter().collect();
        let read = read_zip(&small_zip(&list), &ZipLimits::default()).expect("a plain zip reads");
        for (n, data) in &files {
            prop_assert_eq!(read.get(n).map(|d| d.as_slice()), Some(data.as_slice()));
        }
        // The same archive with fewer entries allowed than it has is refused, not truncated.
        if files.len() > 1 {
            let limits = ZipLimits { max_entries: files.len() - 1, ..ZipLimits::default() };
            prop_assert!(read_zip(&small_zip(&list), &limits).is_err());
        }
    }

    #[test]
    fn any_json_is_an_infotable_or_an_error(v in json_value()) {
        let f = FieldDef::new("t", BaseType::Infotable);
        let _ = f.check("value", v, &NoShapes);
    }

    #[test]
    fn any_json_is_each_base_type_or_an_error(v in json_value()) {
        for t in [BaseType::String, BaseType::Number, BaseType::Integer, BaseType::Long,
                  BaseType::Boolean, BaseType::Datetime, BaseType::Json, BaseType::Thingname, BaseType::Guid] {
            let _ = FieldDef::new("x", t).check("value", v.clone(), &NoShapes);
        }
    }

    #[test]
    fn infotables_of_rows_round_trip(rows in proptest::collection::vec(proptest::collection::btree_map("[a-z]{1,8}", any::<i64>().prop_map(|n| json!(n)), 0..5), 0..10)) {
        let rows: Vec<Value> = rows.into_iter().map(|m| Value::Object(m.into_iter().collect())).collect();
        let f = FieldDef::new("t", BaseType::Infotable);
        let checked = f.check("value", json!({"rows": rows}), &NoShapes).expect("rows of objects are an InfoTable");
        prop_assert_eq!(checked["rows"].as_array().map(|r| r.len()), Some(rows.len()));
    }
}
