//! The SDK's calls out to the host: a [`HostBackend`] over the host's C table, and the reverse,
//! a C host table over any [`HostBackend`] (the fake host's, for in-process tests).

use std::ffi::c_void;
use std::mem::size_of;
use std::sync::Arc;

use serde_json::Value;
use thingport_extension_abi::{
    Buf, HostApi, Slice, ABI_MAJOR, ABI_MINOR, STATUS_BAD_REQUEST, STATUS_ERROR, STATUS_OK,
    STATUS_PANICKED,
};

use super::{body, catch, free_buf, json, panicked, write_buf};
use crate::host::{HostBackend, Level};
use crate::protocol::{ErrorBody, ErrorKind, HostRequest};
use crate::Error;

/// The real host behind a [`Host`](crate::Host): its C table, and the instance the calls are made for.
pub(super) struct AbiHost {
    pub(super) api: &'static HostApi,
    pub(super) instance: u64,
}

impl HostBackend for AbiHost {
    fn host_call(&self, request: &HostRequest) -> Result<Value, Error> {
        let request = json(request);
        let mut response = Buf::EMPTY;
        let status = (self.api.host_call)(
            self.api.ctx,
            self.instance,
            Slice::from_bytes(&request),
            &mut response,
        );
        // SAFETY: `response` was filled by the host's `host_call` and is freed by its `free_buf`.
        let body = unsafe { take_buf(self.api.free_buf, response) };
        decode_host_response(status, &body)
    }

    fn log(&self, level: Level, target: &str, message: &str) {
        (self.api.log)(
            self.api.ctx,
            self.instance,
            level.to_abi(),
            Slice::from_bytes(target.as_bytes()),
            Slice::from_bytes(message.as_bytes()),
        );
    }
}

pub(super) fn decode_host_response(status: u32, body: &[u8]) -> Result<Value, Error> {
    let error = || match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) => Error::from(error),
        Err(_) => Error::internal(format!(
            "the host call failed with status {status}: {}",
            String::from_utf8_lossy(body)
        )),
    };
    match status {
        STATUS_OK if body.is_empty() => Ok(Value::Null),
        STATUS_OK => serde_json::from_slice(body)
            .map_err(|e| Error::internal(format!("the host's response is not valid json: {e}"))),
        STATUS_ERROR => Err(error()),
        _ => Err(error().context(format!("host call status {status}"))),
    }
}

/// Checks the host's table and borrows it for the life of the process (the ABI's promise).
///
/// # Safety
/// `host` must be null or point to a host table (of any version) that lives as long as the process.
pub(super) unsafe fn host_table(host: *const HostApi) -> Result<&'static HostApi, ErrorBody> {
    if host.is_null() {
        return Err(body(ErrorKind::Internal, "the host api table is null"));
    }
    // SAFETY: `host` is not null and points to the host's table, valid for the life of the
    // process; its first fields (size and version) exist in every version of the table, so
    // reading them is sound before the size is checked.
    let (size, major) = unsafe { ((*host).struct_size, (*host).abi_major) };
    if major != ABI_MAJOR || (size as usize) < size_of::<HostApi>() {
        let message = format!(
            "the host api table (abi {major}, {size} bytes) is incompatible with this sdk \
             (abi {ABI_MAJOR}, {} bytes)",
            size_of::<HostApi>()
        );
        return Err(body(ErrorKind::Internal, message));
    }
    // SAFETY: checked above: not null, the version this SDK was built for, and at least as large
    // as the table it knows; the host keeps it alive and immutable for the life of the process.
    Ok(unsafe { &*host })
}

/// Copies the bytes of a buffer the other side allocated, then gives it back to `free`.
///
/// # Safety
/// `buf` must be empty (null pointer) or have been allocated by the side whose `free_buf` is
/// `free`, with `len` readable bytes, and not freed yet.
pub(crate) unsafe fn take_buf(free: extern "C" fn(Buf), buf: Buf) -> Vec<u8> {
    if buf.ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: the caller guarantees `buf` holds `len` readable bytes until it is freed below.
    let bytes = unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) }.to_vec();
    free(buf);
    bytes
}

/// A host table that serves any [`HostBackend`] through the C ABI, so an extension loaded
/// in-process runs exactly the code path it runs in the server. Leaked: the ABI wants the host's
/// table to live as long as the process.
pub(crate) fn in_process_host(backend: Arc<dyn HostBackend>) -> &'static HostApi {
    let ctx: &'static Arc<dyn HostBackend> = Box::leak(Box::new(backend));
    Box::leak(Box::new(HostApi {
        struct_size: size_of::<HostApi>() as u32,
        abi_major: ABI_MAJOR,
        abi_minor: ABI_MINOR,
        ctx: (ctx as *const Arc<dyn HostBackend>).cast(),
        log: in_process_log,
        host_call: in_process_host_call,
        free_buf,
    }))
}

/// The backend behind the `ctx` of a table built by `in_process_host`; only the functions of that
/// table call it.
fn backend_of(ctx: *const c_void) -> &'static Arc<dyn HostBackend> {
    // SAFETY: the only table with these functions is built by `in_process_host`, whose `ctx` is a
    // leaked (never freed) `Arc<dyn HostBackend>`.
    unsafe { &*ctx.cast::<Arc<dyn HostBackend>>() }
}

extern "C" fn in_process_log(
    ctx: *const c_void,
    _instance: u64,
    level: u32,
    target: Slice,
    message: Slice,
) {
    let _ = catch(|| {
        // SAFETY: the ABI guarantees both slices are readable for the duration of this call.
        let (target, message) = unsafe { (target.as_bytes(), message.as_bytes()) };
        backend_of(ctx).log(
            Level::from_abi(level).unwrap_or(Level::Info),
            &String::from_utf8_lossy(target),
            &String::from_utf8_lossy(message),
        );
    });
}

extern "C" fn in_process_host_call(
    ctx: *const c_void,
    _instance: u64,
    request: Slice,
    response: *mut Buf,
) -> u32 {
    let (status, body) = catch(|| {
        // SAFETY: the ABI guarantees `request` is readable for the duration of this call.
        let request = unsafe { request.as_bytes() };
        let request: HostRequest = match serde_json::from_slice(request) {
            Ok(request) => request,
            Err(e) => {
                let message = format!("the host request is not a valid message: {e}");
                return (
                    STATUS_BAD_REQUEST,
                    json(&body(ErrorKind::BadRequest, message)),
                );
            }
        };
        match backend_of(ctx).host_call(&request) {
            Ok(value) => (STATUS_OK, json(&value)),
            Err(error) => (STATUS_ERROR, json(&ErrorBody::from(error))),
        }
    })
    .unwrap_or_else(|panic| (STATUS_PANICKED, json(&panicked(panic))));
    write_buf(response, body);
    status
}
