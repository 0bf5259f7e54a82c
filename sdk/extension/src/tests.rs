//! The SDK end to end: an extension exported with the macro, driven through its C table by the
//! fake host.

use std::sync::atomic::{AtomicUsize, Ordering};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use thingport_extension_abi::{
    Buf, Slice, ABI_MAJOR, MAGIC, STATUS_BAD_REQUEST, STATUS_NO_INSTANCE, STATUS_PANICKED,
};

use crate::protocol::{
    BaseType, ConfigField, ConfigTableDef, Definitions, ErrorKind, Field, InfoTable, SubsystemDef,
    ThingTemplateDef,
};
use crate::testing::FakeHost;
use crate::{ok, service, Call, Error, Extension, Host, Level};

#[derive(Deserialize, JsonSchema)]
struct AddInput {
    /// The first term.
    a: f64,
    b: f64,
}

#[derive(Serialize, JsonSchema)]
struct Sum {
    /// The sum.
    result: f64,
}

#[derive(Deserialize, JsonSchema)]
struct EchoInput {
    text: String,
}

#[derive(Deserialize, JsonSchema)]
struct TouchInput {
    thing: String,
}

pub(crate) struct Calc {
    host: Host,
    ticks: AtomicUsize,
}

impl Extension for Calc {
    fn definitions() -> Definitions {
        Definitions::new()
            .template(
                ThingTemplateDef::new("CalcTemplate")
                    .service(service::<AddInput, Sum>("Add", "adds two numbers"))
                    .service(service::<EchoInput, String>("Echo", "returns its text"))
                    .service(service::<(), ()>("Boom", "panics"))
                    .service(service::<TouchInput, Value>("Touch", "uses the host")),
            )
            .subsystem(SubsystemDef::new("CalcSubsystem").configuration(
                ConfigTableDef::new("Settings").field(
                    ConfigField::new(Field::new("limit", BaseType::Integer)).range(1.0, 10.0),
                ),
            ))
    }

    fn create(host: Host, config: Value) -> Result<Self, Error> {
        if config["fail"] == true {
            return Err(Error::unavailable("configured to fail"));
        }
        if config["panic"] == true {
            panic!("create exploded");
        }
        host.info(format_args!("created with {config}"));
        Ok(Calc {
            host,
            ticks: AtomicUsize::new(0),
        })
    }

    fn invoke(&self, call: &Call) -> Result<Value, Error> {
        match call.service.as_str() {
            "Add" => {
                let input: AddInput = call.params()?;
                ok(input.a + input.b)
            }
            "Echo" => ok(call.params::<EchoInput>()?.text),
            "Boom" => panic!("boom"),
            "Touch" => self.touch(&call.params::<TouchInput>()?.thing),
            other => Err(Error::not_found(format!("service {other} not found"))),
        }
    }

    fn on_timer(&self, name: &str) -> Result<(), Error> {
        match name {
            "tick" => {
                self.ticks.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            _ => Err(Error::not_found(format!("no timer {name}"))),
        }
    }
}

impl Calc {
    fn touch(&self, thing: &str) -> Result<Value, Error> {
        let count = self
            .host
            .get_property(thing, "count")?
            .as_i64()
            .unwrap_or(0)
            + 1;
        self.host.set_property(thing, "count", json!(count))?;
        self.host.audit("FIXTURE", thing, "touched")?;
        self.host.warn(format_args!("touched {thing}"));
        let things = self.host.things_of_template("CalcTemplate")?;
        let remote = self
            .host
            .invoke("Things", "Other", "Ping", json!({"x": 1}))?;
        let remote = remote.result().cloned().unwrap_or_default();
        ok(json!({"count": count, "things": things, "remote": remote}))
    }
}

crate::export_extension!(Calc);

/// An extension with every default.
struct Quiet;

impl Extension for Quiet {
    fn definitions() -> Definitions {
        Definitions::new()
    }
    fn create(_: Host, _: Value) -> Result<Self, Error> {
        Ok(Quiet)
    }
}

fn calc() -> crate::testing::FakeInstance {
    FakeHost::new()
        .instantiate(thingport_extension_table(), Value::Null)
        .unwrap()
}

#[test]
fn the_table_and_manifest_describe_the_extension() {
    let table = thingport_extension_table();
    let api = table.api();
    assert_eq!(api.magic, MAGIC);
    assert_eq!(api.abi_major, ABI_MAJOR);
    assert_eq!(api.struct_size as usize, std::mem::size_of_val(api));

    let manifest = table.manifest();
    assert_eq!(manifest.name, "thingport-sdk");
    assert_eq!(manifest.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(manifest.sdk_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(manifest.definitions, Calc::definitions());

    let template = &manifest.definitions.thing_templates[0];
    let add = &template.services[0];
    assert_eq!(add.name, "Add");
    let inputs: Vec<_> = add
        .inputs
        .iter()
        .map(|f| (f.name.as_str(), f.base_type, f.required))
        .collect();
    assert_eq!(
        inputs,
        [("a", BaseType::Number, true), ("b", BaseType::Number, true)]
    );
    assert_eq!(add.inputs[0].description, "The first term.");
    let result = add.result.as_ref().unwrap();
    assert_eq!(
        (result.name.as_str(), result.base_type),
        ("result", BaseType::Number)
    );
    assert_eq!(result.description, "The sum.");
    assert_eq!(template.services[2].result, None);

    let raw: Value = serde_json::from_slice(table.manifest_json()).unwrap();
    let settings = &raw["definitions"]["subsystems"][0]["configuration"][0];
    assert_eq!(settings["name"], "Settings");
    assert_eq!(settings["fields"][0]["baseType"], "INTEGER");
    assert_eq!(settings["fields"][0]["max"], 10.0);
}

#[test]
fn a_service_round_trips() {
    let calc = calc();
    let sum = calc.invoke("Things", "C", "Add", json!({"a": 2, "b": 3.5}));
    assert_eq!(sum, Ok(json!(5.5)));
    let echo = calc.invoke("Things", "C", "Echo", json!({"text": "hi"}));
    assert_eq!(echo, Ok(json!("hi")));
    let missing = calc.invoke("Things", "C", "Nope", json!({})).unwrap_err();
    assert_eq!(missing.kind, ErrorKind::NotFound);
    assert_eq!(missing.error, "service Nope not found");
}

#[test]
fn parameters_are_decoded_with_a_clear_error() {
    let calc = calc();
    let missing = calc
        .invoke("Things", "C", "Add", json!({"a": 1}))
        .unwrap_err();
    assert_eq!(missing.kind, ErrorKind::BadRequest);
    assert_eq!(
        missing.error,
        "invalid parameters for Add: missing field `b`"
    );
    let mistyped = calc
        .invoke("Things", "C", "Add", json!({"a": "one", "b": 1}))
        .unwrap_err();
    assert_eq!(mistyped.kind, ErrorKind::BadRequest);
    assert!(
        mistyped
            .error
            .starts_with("invalid parameters for Add: invalid type: string \"one\""),
        "{}",
        mistyped.error
    );
    let absent = calc.invoke("Things", "C", "Add", Value::Null).unwrap_err();
    assert_eq!(
        absent.error,
        "invalid parameters for Add: missing field `a`"
    );
}

#[test]
fn a_panic_becomes_an_error_and_does_not_abort() {
    let calc = calc();
    let response = calc.request(&crate::protocol::Request::Invoke {
        entity_kind: "Things".into(),
        entity: "C".into(),
        service: "Boom".into(),
        params: json!({}),
        caller: crate::protocol::Caller {
            name: "someone".into(),
            admin: false,
            source_ip: String::new(),
        },
    });
    assert_eq!(response.status, STATUS_PANICKED);
    assert_eq!(
        response.body,
        json!({"error": "extension panicked: boom", "kind": "Internal"})
    );
    // The process and the library go on; poisoning the instance is the host's decision.
    assert_eq!(
        calc.invoke("Things", "C", "Add", json!({"a": 1, "b": 1})),
        Ok(json!(2.0))
    );
}

#[test]
fn create_failures_are_reported() {
    let fake = FakeHost::new();
    let table = thingport_extension_table();
    let failed = fake.instantiate(table, json!({"fail": true})).unwrap_err();
    assert_eq!(failed.kind, ErrorKind::Unavailable);
    assert_eq!(failed.error, "configured to fail");
    let panicked = fake.instantiate(table, json!({"panic": true})).unwrap_err();
    assert_eq!(panicked.error, "extension panicked: create exploded");
}

#[test]
fn host_calls_reach_the_fake_host() {
    let fake = FakeHost::new();
    fake.add_thing("Pump", "CalcTemplate", json!({"count": 41}))
        .add_thing("Valve", "OtherTemplate", json!({}))
        .on_invoke("Things", "Other", "Ping", |params| {
            Ok(InfoTable::scalar(json!({"pong": params["x"]})))
        });
    let calc = fake
        .instantiate(thingport_extension_table(), json!({"limit": 3}))
        .unwrap();

    let touched = calc.invoke("Things", "Pump", "Touch", json!({"thing": "Pump"}));
    assert_eq!(
        touched,
        Ok(json!({"count": 42, "things": ["Pump"], "remote": {"pong": 1}}))
    );
    assert_eq!(fake.properties("Pump").unwrap()["count"], 42);
    let audit = fake.audit_entries();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].category.as_str(), audit[0].entity.as_str()),
        ("FIXTURE", "Pump")
    );
    let logs: Vec<_> = fake
        .logs()
        .into_iter()
        .map(|l| (l.level, l.message))
        .collect();
    assert_eq!(
        logs,
        [
            (Level::Info, r#"created with {"limit":3}"#.to_owned()),
            (Level::Warn, "touched Pump".to_owned())
        ]
    );

    // A host error comes back as the extension's error, kind preserved.
    let unknown = calc
        .invoke("Things", "Nope", "Touch", json!({"thing": "Nope"}))
        .unwrap_err();
    assert_eq!(unknown.kind, ErrorKind::NotFound);
    assert_eq!(unknown.error, "thing Nope not found");
}

#[test]
fn the_fake_host_also_serves_a_directly_created_extension() {
    let fake = FakeHost::new();
    fake.add_thing("Pump", "CalcTemplate", json!({}));
    let calc = Calc::create(fake.host(), Value::Null).unwrap();
    let call = Call {
        entity_kind: "Things".into(),
        entity: "Pump".into(),
        service: "Touch".into(),
        params: json!({"thing": "Pump"}),
        caller: crate::protocol::Caller {
            name: "a".into(),
            admin: false,
            source_ip: String::new(),
        },
    };
    let error = calc.invoke(&call).unwrap_err();
    assert_eq!(error.message(), "service Ping not found on Things Other");
    assert_eq!(fake.properties("Pump").unwrap()["count"], 1);
}

#[test]
fn timers_and_defaults() {
    let calc = calc();
    assert_eq!(calc.timer("tick"), Ok(()));
    assert_eq!(calc.timer("tock").unwrap_err().error, "no timer tock");

    let quiet = FakeHost::new()
        .instantiate(crate::ffi::table::<Quiet>("quiet", "0.0.1"), Value::Null)
        .unwrap();
    let missing = quiet
        .invoke("Things", "Q", "Anything", json!({}))
        .unwrap_err();
    assert_eq!(missing.kind, ErrorKind::NotFound);
    assert_eq!(
        missing.error,
        "service Anything is not implemented on Things Q"
    );
    assert_eq!(quiet.timer("t"), Ok(()));
}

#[test]
fn malformed_requests_and_unknown_instances_are_refused() {
    let calc = calc();
    for bad in [&b"not json"[..], br#"{"type": "explode"}"#, b""] {
        let response = calc.request_bytes(bad);
        assert_eq!(response.status, STATUS_BAD_REQUEST);
        assert_eq!(response.body["kind"], "BadRequest");
    }

    let table = thingport_extension_table();
    let handle = calc.handle();
    drop(calc); // destroys the instance
    let mut response = Buf::EMPTY;
    let request = br#"{"type": "timer", "name": "tick"}"#;
    let status = (table.api().call)(handle, Slice::from_bytes(request), &mut response);
    assert_eq!(status, STATUS_NO_INSTANCE);
    let body: Value = serde_json::from_slice(&table.take_buf(response)).unwrap();
    assert_eq!(body["error"], format!("no instance {handle}"));
    let mut response = Buf::EMPTY;
    let status = (table.api().call)(0, Slice::from_bytes(request), &mut response);
    assert_eq!(status, STATUS_NO_INSTANCE);
    table.take_buf(response);
}

#[test]
fn an_instance_serves_calls_from_many_threads() {
    let calc = calc();
    std::thread::scope(|scope| {
        for i in 0..8 {
            let calc = &calc;
            scope.spawn(move || {
                for j in 0..50 {
                    let sum = calc.invoke("Things", "C", "Add", json!({"a": i, "b": j}));
                    assert_eq!(sum, Ok(json!(f64::from(i + j))));
                    calc.timer("tick").unwrap();
                }
            });
        }
    });
}

/// A backend answering every host call with the same body.
struct Canned(Value);

impl crate::HostBackend for Canned {
    fn host_call(&self, _: &crate::protocol::HostRequest) -> Result<Value, Error> {
        Ok(self.0.clone())
    }
    fn log(&self, _: Level, _: &str, _: &str) {}
}

#[test]
fn host_invoke_reads_the_hosts_infotable() {
    let host = Host::new(std::sync::Arc::new(Canned(json!({
        "dataShape": {"fieldDefinitions": {"result": {"name": "result", "baseType": "NUMBER"}}},
        "rows": [{"result": 3}]
    }))));
    let table = host.invoke("Things", "T", "Add", json!({})).unwrap();
    assert_eq!(table.result(), Some(&json!(3)));
    assert_eq!(table, InfoTable::scalar(json!(3)));

    let host = Host::new(std::sync::Arc::new(Canned(json!(3))));
    let error = host.invoke("Things", "T", "Add", json!({})).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Internal);
    assert!(error
        .message()
        .starts_with("the host's response to Invoke is malformed"));
}
