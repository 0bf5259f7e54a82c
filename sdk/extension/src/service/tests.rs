use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::*;

#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Inner {
    x: i32,
}

#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Inputs {
    /// A small integer.
    small: i32,
    tiny: u8,
    big: i64,
    unsigned: u32,
    ratio: f64,
    flag: bool,
    text: String,
    maybe: Option<String>,
    list: Vec<String>,
    nested: Inner,
    maybe_nested: Option<Inner>,
    any: Value,
    #[serde(default = "ten")]
    defaulted: i64,
    #[schemars(extend("x-thingport-base-type" = "THINGNAME"))]
    thing: String,
    #[schemars(extend("x-thingport-base-type" = "INFOTABLE", "x-thingport-data-shape" = "Row"))]
    rows: Vec<Value>,
}

fn ten() -> i64 {
    10
}

fn input<'a>(decl: &'a ServiceDecl, name: &str) -> &'a Field {
    decl.inputs
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no input {name} in {decl:?}"))
}

#[test]
fn inputs_map_to_base_types() {
    let decl = service::<Inputs, ()>("All", "every kind of input");
    let expect = [
        ("small", BaseType::Integer, true),
        ("tiny", BaseType::Integer, true),
        ("big", BaseType::Long, true),
        ("unsigned", BaseType::Long, true),
        ("ratio", BaseType::Number, true),
        ("flag", BaseType::Boolean, true),
        ("text", BaseType::String, true),
        ("maybe", BaseType::String, false),
        ("list", BaseType::Json, true),
        ("nested", BaseType::Json, true),
        ("maybe_nested", BaseType::Json, false),
        ("any", BaseType::Json, true),
        ("defaulted", BaseType::Long, false),
        ("thing", BaseType::Thingname, true),
        ("rows", BaseType::Infotable, true),
    ];
    assert_eq!(decl.inputs.len(), expect.len(), "{decl:#?}");
    for (name, base_type, required) in expect {
        let field = input(&decl, name);
        assert_eq!(field.base_type, base_type, "{name}");
        assert_eq!(field.required, required, "{name}");
    }
    assert_eq!(input(&decl, "small").description, "A small integer.");
    assert_eq!(input(&decl, "defaulted").default_value, Some(json!(10)));
    assert_eq!(input(&decl, "rows").data_shape.as_deref(), Some("Row"));
    assert_eq!(decl.result, None);
    assert_eq!(decl.name, "All");
    assert_eq!(decl.description, "every kind of input");
}

#[derive(Serialize, JsonSchema)]
struct Described {
    /// The answer.
    result: i32,
}

#[derive(Serialize, JsonSchema)]
struct Row {
    a: String,
    b: String,
}

#[test]
fn results_map_to_one_field() {
    let result = |decl: ServiceDecl| decl.result.map(|f| (f.name, f.base_type, f.description));
    assert_eq!(result(service::<(), ()>("S", "")), None);
    assert_eq!(
        result(service::<(), String>("S", "")),
        Some(("result".into(), BaseType::String, String::new()))
    );
    assert_eq!(
        result(service::<(), Option<bool>>("S", "")),
        Some(("result".into(), BaseType::Boolean, String::new()))
    );
    assert_eq!(
        result(service::<(), Described>("S", "")),
        Some(("result".into(), BaseType::Integer, "The answer.".into()))
    );
    assert_eq!(
        result(service::<(), Row>("S", "")).map(|r| r.1),
        Some(BaseType::Json)
    );
    assert_eq!(
        result(service::<(), Value>("S", "")).map(|r| r.1),
        Some(BaseType::Json)
    );
    assert!(service::<(), ()>("S", "").inputs.is_empty());
}

#[test]
fn data_shapes_come_from_structs() {
    let shape = data_shape::<Row>("RowShape", "two strings");
    assert_eq!(shape.name, "RowShape");
    let names: Vec<_> = shape.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(shape.fields.iter().all(|f| f.base_type == BaseType::String));
}

#[test]
#[should_panic(expected = "must be a struct with named fields")]
fn a_scalar_input_type_is_a_declaration_bug() {
    service::<String, ()>("Bad", "");
}
