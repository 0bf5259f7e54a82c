//! The host against real fixture libraries (`tests/fixtures/*`, built by `cargo build --workspace`).

use super::*;
use serde_json::json;
use thingport_sdk::protocol::Caller;

/// Records host calls and answers them from a fixed script.
#[derive(Default)]
struct Recording {
    calls: Mutex<Vec<(String, HostRequest)>>,
}

impl HostServices for Recording {
    fn host_call(
        &self,
        extension: &str,
        _load: u64,
        request: HostRequest,
    ) -> Result<Value, ErrorBody> {
        self.calls
            .lock()
            .unwrap()
            .push((extension.to_string(), request));
        Ok(json!({"p": 1}))
    }
}

/// `target/<profile>/libfixture_<name>.so`, next to this test binary's profile directory.
fn fixture(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir.join(format!("libfixture_{name}.so"));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` first",
        path.display()
    );
    path
}

fn open(name: &str) -> Result<Arc<Library>, LoadError> {
    Library::open(
        &fixture(name),
        &format!("Fixture-{name}"),
        Arc::new(Recording::default()),
    )
}

fn invoke(service: &str, params: Value) -> Request {
    Request::Invoke {
        entity_kind: "ThingTemplate".into(),
        entity: "FixtureTemplate".into(),
        service: service.into(),
        params,
        caller: Caller {
            name: "tester".into(),
            admin: false,
            source_ip: "127.0.0.1".into(),
        },
    }
}

#[test]
fn loads_the_noop_fixture_and_calls_its_services() {
    let lib = open("noop").unwrap();
    let m = lib.manifest();
    assert_eq!(m.name, "fixture-noop");
    assert!(
        m.definitions
            .thing_templates
            .iter()
            .any(|t| t.name == "FixtureTemplate"),
        "{m:?}"
    );
    let inst = lib.create(&json!({})).unwrap();
    let r = inst
        .call_blocking(&invoke("Add", json!({"a": 1, "b": 2})))
        .unwrap();
    assert_eq!(r.as_f64(), Some(3.0), "{r}");
    let r = inst
        .call_blocking(&invoke("Echo", json!({"text": "hi"})))
        .unwrap();
    assert_eq!(r, json!("hi"));
    // An unknown service is the extension's NotFound, mapped to 404.
    let e = inst.call_blocking(&invoke("Nope", json!({}))).unwrap_err();
    assert_eq!(e.to_api_error().status, StatusCode::NOT_FOUND, "{e}");
}

#[test]
fn a_panic_becomes_an_error_and_poisons_the_instance() {
    let lib = open("panics").unwrap();
    let inst = lib.create(&json!({})).unwrap();
    let e = inst.call_blocking(&invoke("Boom", json!({}))).unwrap_err();
    assert!(matches!(e, CallError::Panicked { .. }), "{e}");
    assert!(inst.poisoned().is_some());
    let e = inst.call_blocking(&invoke("Boom", json!({}))).unwrap_err();
    assert!(matches!(e, CallError::Poisoned { .. }), "{e}");
    assert_eq!(e.to_api_error().status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_slow_call_is_answered_at_its_deadline() {
    let lib = open("slow").unwrap();
    let inst = Arc::new(lib.create(&json!({})).unwrap());
    let started = std::time::Instant::now();
    let e = inst
        .call(
            invoke("Sleep", json!({"millis": 3000})),
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, CallError::Deadline { .. }), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(e.to_api_error().status, StatusCode::GATEWAY_TIMEOUT);
    // A fast call on the same instance still works.
    let ok = inst
        .call(
            invoke("Sleep", json!({"millis": 1})),
            Duration::from_secs(5),
        )
        .await;
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn a_failing_create_is_reported() {
    let lib = open("initfail").unwrap();
    let e = lib.create(&json!({})).unwrap_err();
    assert!(matches!(e, CallError::Failed { .. }), "{e}");
}

#[test]
fn foreign_libraries_are_refused_with_the_reason() {
    assert!(matches!(open("badmagic"), Err(LoadError::BadMagic { .. })));
    assert!(matches!(
        open("wrongabi"),
        Err(LoadError::WrongAbi { major: 99, .. })
    ));
    assert!(matches!(open("nosymbol"), Err(LoadError::NoEntry { .. })));
    let not_a_library =
        std::env::temp_dir().join(format!("thingport-not-a-lib-{}.so", std::process::id()));
    std::fs::write(&not_a_library, b"garbage").unwrap();
    let r = Library::open(&not_a_library, "garbage", Arc::new(Recording::default()));
    let _ = std::fs::remove_file(&not_a_library);
    assert!(matches!(r, Err(LoadError::Open { .. })));
}
