//! The C ABI of `thingport-extension-abi`, implemented once for any [`Extension`]: the exported
//! table, the calls into the extension, and the calls out to the host. All of the SDK's `unsafe`
//! lives here; [`export_extension!`](crate::export_extension) only instantiates these generics.
//!
//! Instances cross the boundary as integer handles (never 0) into a registry of `Arc`s, so no
//! pointer to a Rust object is ever handed to the host. Every exported function catches panics: a
//! panic becomes `STATUS_PANICKED` with the panic message as the error body. Buffers returned to
//! the host are `Vec<u8>`s taken apart into a [`Buf`] and rebuilt by [`free_buf`].

#![allow(unsafe_code)]

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::mem::{size_of, ManuallyDrop};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use serde::Serialize;
use serde_json::Value;
use thingport_extension_abi::{
    Buf, ExtensionApi, HostApi, Slice, ABI_MAJOR, ABI_MINOR, LOG_ERROR, MAGIC, STATUS_BAD_REQUEST,
    STATUS_ERROR, STATUS_NO_INSTANCE, STATUS_OK, STATUS_PANICKED,
};

use crate::protocol::{ErrorBody, ErrorKind, InvokeResult, Manifest, Request};
use crate::{Call, Extension, Host};

pub(crate) use host::in_process_host;
use host::{host_table, take_buf, AbiHost};

/// The ABI table of one extension type, as built by [`table`]: the `&'static ExtensionApi` the
/// entry symbol returns, obtainable in-process without `dlopen` (for tests and the fake host).
#[derive(Clone, Copy)]
pub struct Table {
    api: &'static ExtensionApi,
    manifest: &'static [u8],
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("manifest", &String::from_utf8_lossy(self.manifest))
            .finish()
    }
}

impl Table {
    /// The C table, exactly what `thingport_extension_entry_v1` returns.
    pub fn api(self) -> &'static ExtensionApi {
        self.api
    }

    /// The manifest as embedded in the table (JSON).
    pub fn manifest_json(self) -> &'static [u8] {
        self.manifest
    }

    /// The manifest, decoded.
    pub fn manifest(self) -> Manifest {
        serde_json::from_slice(self.manifest).expect("the SDK encodes a valid manifest")
    }

    /// Copies and frees a buffer this table's `create` or `call` returned.
    pub(crate) fn take_buf(self, buf: Buf) -> Vec<u8> {
        // SAFETY: callers pass only buffers returned by this table's functions, which the SDK
        // built (a `Table` cannot be made otherwise): `write_buf` buffers freed by `free_buf`.
        unsafe { take_buf(self.api.free_buf, buf) }
    }
}

/// The table of extension type `T`, built on first use (its manifest from `name`, `version`, the
/// SDK's version and `T::definitions()`) and kept for the life of the process.
/// [`export_extension!`](crate::export_extension) calls it with the crate's
/// `CARGO_PKG_NAME`/`CARGO_PKG_VERSION`; tests that hold several extension types in one binary
/// call it directly.
///
/// # Panics
/// When `T::definitions()` panics (the entry symbol turns that into a null table).
pub fn table<T: Extension>(name: &'static str, version: &'static str) -> Table {
    static TABLES: OnceLock<Mutex<HashMap<TypeId, Table>>> = OnceLock::new();
    let mut tables = lock(TABLES.get_or_init(Default::default));
    if let Some(table) = tables.get(&TypeId::of::<T>()) {
        return *table;
    }
    let manifest = Manifest {
        name: name.into(),
        version: version.into(),
        sdk_version: env!("CARGO_PKG_VERSION").into(),
        definitions: T::definitions(),
    };
    let manifest: &'static [u8] =
        Vec::leak(serde_json::to_vec(&manifest).expect("a manifest always encodes"));
    let api = Box::leak(Box::new(ExtensionApi {
        magic: MAGIC,
        abi_major: ABI_MAJOR,
        abi_minor: ABI_MINOR,
        struct_size: size_of::<ExtensionApi>() as u32,
        manifest: Slice::from_bytes(manifest),
        create: create::<T>,
        call: call::<T>,
        destroy: destroy::<T>,
        free_buf,
    }));
    let table = Table { api, manifest };
    tables.insert(TypeId::of::<T>(), table);
    table
}

/// The body of the entry symbol: the table from `table`, or null when building it panicked (the
/// panic is logged through `host`'s `log` with instance 0, if `host` is usable).
///
/// # Safety
/// `host` must be null or point to a host table that lives as long as the process.
pub unsafe fn entry(host: *const HostApi, table: fn() -> Table) -> *const ExtensionApi {
    match catch(table) {
        Ok(table) => {
            // SAFETY: the caller passes null or the host's table, as this function requires.
            if let Ok(host) = unsafe { host_table(host) } {
                install_panic_hook(host);
            }
            table.api
        }
        Err(panic) => {
            // SAFETY: the caller passes null or the host's table, as this function requires.
            if let Ok(host) = unsafe { host_table(host) } {
                let message = format!("building the extension's manifest panicked: {panic}");
                let _ = catch(|| {
                    (host.log)(
                        host.ctx,
                        0,
                        LOG_ERROR,
                        Slice::EMPTY,
                        Slice::from_bytes(message.as_bytes()),
                    )
                });
            }
            std::ptr::null()
        }
    }
}

/// Routes this library's panic messages (with their location) into the host's log instead of
/// the default hook's stderr output and backtrace. This library has its own copy of `std`, so
/// the hook applies to panics in the extension only, never to the host's.
fn install_panic_hook(host: &'static HostApi) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(move |info| {
            let payload = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                .unwrap_or("non-string panic payload");
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let message = format!("panicked at {location}: {payload}");
            (host.log)(
                host.ctx,
                0,
                LOG_ERROR,
                Slice::from_bytes(b"panic"),
                Slice::from_bytes(message.as_bytes()),
            );
        }));
    });
}

// ---- the instance registry ----

type Instances = Mutex<HashMap<u64, Arc<dyn Any + Send + Sync>>>;

/// Instances of every extension type in this library, by handle.
fn instances() -> &'static Instances {
    static INSTANCES: OnceLock<Instances> = OnceLock::new();
    INSTANCES.get_or_init(Default::default)
}

/// Handles start at 1: 0 means "no instance" (e.g. a log line from the entry point).
static NEXT_HANDLE: AtomicU64 = AtomicU64::new(1);

fn lookup<T: Extension>(handle: u64) -> Option<Arc<T>> {
    let instance = lock(instances()).get(&handle).cloned()?;
    instance.downcast::<T>().ok()
}

/// Locks a mutex whose data stays consistent even if a holder panicked (we never run extension
/// code while holding one).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---- the functions of `ExtensionApi` ----

extern "C" fn create<T: Extension>(
    host: *const HostApi,
    config: Slice,
    instance: *mut u64,
    error: *mut Buf,
) -> u32 {
    let created = catch(|| create_instance::<T>(host, config, instance))
        .unwrap_or_else(|panic| Err((STATUS_PANICKED, panicked(panic))));
    match created {
        Ok(handle) => {
            // SAFETY: `create_instance` succeeds only if `instance` is not null, and the host
            // passes a pointer to a writable `u64` for the duration of the call.
            unsafe { instance.write(handle) };
            write_buf(error, Vec::new());
            STATUS_OK
        }
        Err((status, body)) => {
            write_buf(error, json(&body));
            status
        }
    }
}

fn create_instance<T: Extension>(
    host: *const HostApi,
    config: Slice,
    instance: *mut u64,
) -> Result<u64, (u32, ErrorBody)> {
    // SAFETY: the ABI says `create` receives null or the host's table, valid for the process.
    let host = unsafe { host_table(host) }.map_err(|error| (STATUS_BAD_REQUEST, error))?;
    if instance.is_null() {
        return Err((
            STATUS_BAD_REQUEST,
            body(ErrorKind::Internal, "the instance out-pointer is null"),
        ));
    }
    // SAFETY: the ABI guarantees `config` is readable for the duration of this call.
    let config = unsafe { config.as_bytes() };
    let config = if config.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(config).map_err(|e| {
            let message = format!("the configuration is not valid json: {e}");
            (STATUS_BAD_REQUEST, body(ErrorKind::BadRequest, message))
        })?
    };
    let handle = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed);
    let host = Host::new(Arc::new(AbiHost {
        api: host,
        instance: handle,
    }));
    let extension = T::create(host, config).map_err(|e| (STATUS_ERROR, e.into()))?;
    lock(instances()).insert(handle, Arc::new(extension));
    Ok(handle)
}

extern "C" fn call<T: Extension>(instance: u64, request: Slice, response: *mut Buf) -> u32 {
    let (status, body) = catch(|| call_instance::<T>(instance, request))
        .unwrap_or_else(|panic| (STATUS_PANICKED, json(&panicked(panic))));
    write_buf(response, body);
    status
}

fn call_instance<T: Extension>(instance: u64, request: Slice) -> (u32, Vec<u8>) {
    let Some(extension) = lookup::<T>(instance) else {
        let message = format!("no instance {instance}");
        return (
            STATUS_NO_INSTANCE,
            json(&body(ErrorKind::NotFound, message)),
        );
    };
    // SAFETY: the ABI guarantees `request` is readable for the duration of this call.
    let request = unsafe { request.as_bytes() };
    let request: Request = match serde_json::from_slice(request) {
        Ok(request) => request,
        Err(e) => {
            let message = format!("the request is not a valid message: {e}");
            return (
                STATUS_BAD_REQUEST,
                json(&body(ErrorKind::BadRequest, message)),
            );
        }
    };
    let result = match request {
        Request::Invoke {
            entity_kind,
            entity,
            service,
            params,
            caller,
        } => extension.invoke(&Call {
            entity_kind,
            entity,
            service,
            params,
            caller,
        }),
        Request::Timer { name } => extension.on_timer(&name).map(|()| Value::Null),
        Request::Configure { config } => extension.on_configure(&config).map(|()| Value::Null),
        Request::ConnectionOpen {
            connection,
            route,
            subprotocol,
            principal,
        } => extension
            .on_connection_open(&crate::Connection {
                id: connection,
                route,
                subprotocol,
                principal,
            })
            .map(|()| Value::Null),
        Request::ConnectionMessage { connection, text } => extension
            .on_connection_message(connection, &text)
            .map(|()| Value::Null),
        Request::ConnectionClosed { connection, reason } => extension
            .on_connection_closed(connection, &reason)
            .map(|()| Value::Null),
        Request::Shutdown => extension.on_shutdown().map(|()| Value::Null),
    };
    match result {
        Ok(result) => (STATUS_OK, json(&InvokeResult { result })),
        Err(error) => (STATUS_ERROR, json(&ErrorBody::from(error))),
    }
}

extern "C" fn destroy<T: Extension>(instance: u64) {
    let _ = catch(|| {
        let removed = {
            let mut instances = lock(instances());
            match instances.get(&instance) {
                Some(existing) if existing.is::<T>() => instances.remove(&instance),
                _ => None,
            }
        };
        // Dropped outside the lock: the extension's `Drop` runs here, or when the last call in
        // flight on it returns.
        drop(removed);
    });
}

/// Frees a buffer the SDK allocated (a `call` response, a `create` error): the `free_buf` of the
/// extension's table, and of the in-process host table of [`crate::testing`].
extern "C" fn free_buf(buf: Buf) {
    let _ = catch(|| {
        if !buf.ptr.is_null() {
            // SAFETY: a non-null `Buf` given to this function was made by `write_buf` from a
            // `Vec<u8>` of this allocator, and the ABI says it is freed exactly once.
            drop(unsafe { Vec::from_raw_parts(buf.ptr, buf.len, buf.cap) });
        }
    });
}

// ---- helpers ----

/// Runs `f`, turning a panic into its message.
fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = if let Some(message) = payload.downcast_ref::<&str>() {
            (*message).to_owned()
        } else if let Some(message) = payload.downcast_ref::<String>() {
            message.clone()
        } else {
            "a panic without a message".to_owned()
        };
        // Dropping the payload runs foreign code that could panic too: contain it.
        let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
        message
    })
}

fn panicked(message: String) -> ErrorBody {
    body(
        ErrorKind::Internal,
        format!("extension panicked: {message}"),
    )
}

fn body(kind: ErrorKind, error: impl Into<String>) -> ErrorBody {
    ErrorBody {
        error: error.into(),
        kind,
    }
}

fn json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("protocol messages always encode")
}

/// Hands `bytes` to the other side through the out-pointer `out` (dropped if `out` is null).
fn write_buf(out: *mut Buf, bytes: Vec<u8>) {
    if out.is_null() {
        return;
    }
    let buf = if bytes.is_empty() {
        Buf::EMPTY
    } else {
        let mut bytes = ManuallyDrop::new(bytes);
        Buf {
            ptr: bytes.as_mut_ptr(),
            len: bytes.len(),
            cap: bytes.capacity(),
        }
    };
    // SAFETY: `out` is not null and the ABI says it points to a writable `Buf` for the duration
    // of the call; `write` does not read or drop whatever it held.
    unsafe { out.write(buf) };
}

mod host;
#[cfg(test)]
mod tests;
