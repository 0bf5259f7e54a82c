use std::sync::Arc;

use serde_json::{json, Value};
use thingport_extension_abi::{Buf, HostApi, Slice, STATUS_BAD_REQUEST, STATUS_ERROR, STATUS_OK};

use super::host::decode_host_response;
use super::*;
use crate::protocol::Definitions;
use crate::testing::FakeHost;
use crate::{Error, Level};

#[test]
fn the_entry_symbol_returns_the_table() {
    // SAFETY: a null host is allowed.
    let api = unsafe { crate::tests::thingport_extension_entry_v1(std::ptr::null()) };
    assert!(std::ptr::eq(
        api,
        crate::tests::thingport_extension_table().api()
    ));
}

struct BadDefinitions;

impl Extension for BadDefinitions {
    fn definitions() -> Definitions {
        panic!("no definitions today")
    }
    fn create(_: Host, _: Value) -> Result<Self, Error> {
        Ok(BadDefinitions)
    }
}

#[test]
fn a_panic_while_building_the_manifest_returns_null_and_is_logged() {
    let fake = FakeHost::new();
    let host = in_process_host(Arc::new(fake.clone()));
    // SAFETY: `host` lives for the rest of the process.
    let api = unsafe { entry(host, || table::<BadDefinitions>("bad", "0.0.0")) };
    assert!(api.is_null());
    let logs = fake.logs();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].level, Level::Error);
    assert_eq!(
        logs[0].message,
        "building the extension's manifest panicked: no definitions today"
    );
}

fn create_with(host: *const HostApi) -> (u32, Value) {
    let api = crate::tests::thingport_extension_table().api();
    let mut instance = 0;
    let mut error = Buf::EMPTY;
    let status = (api.create)(host, Slice::EMPTY, &mut instance, &mut error);
    // SAFETY: `error` comes from the SDK's own `create`.
    let error = unsafe { take_buf(free_buf, error) };
    let body = if error.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&error).unwrap()
    };
    if status == STATUS_OK {
        (api.destroy)(instance);
    }
    (status, body)
}

#[test]
fn create_refuses_a_missing_or_incompatible_host_table() {
    let (status, body) = create_with(std::ptr::null());
    assert_eq!(status, STATUS_BAD_REQUEST);
    assert_eq!(body["error"], "the host api table is null");

    let good = in_process_host(Arc::new(FakeHost::new()));
    assert_eq!(create_with(good), (STATUS_OK, Value::Null));

    let future = HostApi {
        abi_major: 2,
        ..*copy(good)
    };
    let (status, body) = create_with(&future);
    assert_eq!(status, STATUS_BAD_REQUEST);
    let error = body["error"].as_str().unwrap();
    assert!(error.starts_with("the host api table (abi 2,"), "{error}");

    let truncated = HostApi {
        struct_size: 8,
        ..*copy(good)
    };
    assert_eq!(create_with(&truncated).0, STATUS_BAD_REQUEST);
}

/// A bitwise copy of a host table (`HostApi` is not `Clone`: it is the host's).
fn copy(host: &HostApi) -> Box<HostApi> {
    Box::new(HostApi {
        struct_size: host.struct_size,
        abi_major: host.abi_major,
        abi_minor: host.abi_minor,
        ctx: host.ctx,
        log: host.log,
        host_call: host.host_call,
        free_buf: host.free_buf,
    })
}

#[test]
fn invalid_configuration_json_is_a_bad_request() {
    let api = crate::tests::thingport_extension_table().api();
    let host = in_process_host(Arc::new(FakeHost::new()));
    let mut instance = 0;
    let mut error = Buf::EMPTY;
    let status = (api.create)(host, Slice::from_bytes(b"{"), &mut instance, &mut error);
    assert_eq!(status, STATUS_BAD_REQUEST);
    // SAFETY: `error` comes from the SDK's own `create`.
    let error: ErrorBody = serde_json::from_slice(&unsafe { take_buf(free_buf, error) }).unwrap();
    assert!(error
        .error
        .starts_with("the configuration is not valid json"));
}

#[test]
fn host_responses_are_decoded_by_status() {
    assert_eq!(decode_host_response(STATUS_OK, b""), Ok(Value::Null));
    assert_eq!(decode_host_response(STATUS_OK, b"[1]"), Ok(json!([1])));
    let error = br#"{"error": "thing x not found", "kind": "NotFound"}"#;
    assert_eq!(
        decode_host_response(STATUS_ERROR, error),
        Err(Error::not_found("thing x not found"))
    );
    let other = decode_host_response(STATUS_BAD_REQUEST, error).unwrap_err();
    assert_eq!(other.message(), "host call status 3: thing x not found");
    let garbage = decode_host_response(STATUS_ERROR, b"oops").unwrap_err();
    assert_eq!(
        garbage.message(),
        "the host call failed with status 1: oops"
    );
    assert_eq!(garbage.kind(), ErrorKind::Internal);
}

#[test]
fn freeing_an_empty_buffer_is_harmless() {
    free_buf(Buf::EMPTY);
}
