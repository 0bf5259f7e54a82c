//! The native extension host: opens an extension library (only after its package was verified:
//! opening runs its code), checks its table, keeps it loaded for the life of the process, creates
//! instances and calls them.
//!
//! - Libraries are never unloaded (unloading a Rust `.so` is unsound in practice: thread-local
//!   destructors would run after its code is unmapped). Deleting an extension stops routing work
//!   to it; a restart reclaims the memory.
//! - Each library gets its own [`abi::HostApi`] whose context names it, so its logs and host calls
//!   are attributed to it even though every SDK copy numbers its instances from 1.
//! - Calls run on blocking threads under a deadline; an extension that overruns is answered with
//!   a deadline error (its thread finishes in the background). A panic poisons the instance: it
//!   gets no more calls, and says why.
//!
//! This module is one of the two places in the server that may use `unsafe` (the other is none
//! yet); every block states why it is sound.

#![allow(unsafe_code)]

use crate::error::ApiError;
use axum::http::StatusCode;
use serde_json::Value;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thingport_extension_abi as abi;
use thingport_sdk::protocol::{ErrorBody, ErrorKind, HostRequest, InvokeResult, Manifest, Request};

mod pool;

/// Why a library could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("failed to open library {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: libloading::Error,
    },
    #[error("library {path} does not export thingport_extension_entry_v1: not a Thingport extension, or built for another ABI major version")]
    NoEntry { path: PathBuf },
    #[error("library {path} returned no extension table")]
    NullTable { path: PathBuf },
    #[error("library {path} has bad magic {found:#018x}: not a Thingport extension table")]
    BadMagic { path: PathBuf, found: u64 },
    #[error(
        "library {path} was built for extension ABI {major}.{minor}; this server supports {}.x",
        abi::ABI_MAJOR
    )]
    WrongAbi {
        path: PathBuf,
        major: u16,
        minor: u16,
    },
    #[error(
        "library {path} has a truncated extension table ({found} bytes, at least {need} expected)"
    )]
    TableTooSmall {
        path: PathBuf,
        found: u32,
        need: usize,
    },
    #[error("library {path} has an invalid manifest: {detail}")]
    Manifest { path: PathBuf, detail: String },
}

/// Why a call into an extension failed. [`CallError::to_api_error`] says what a client sees.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(
        "extension {ext} is disabled after a panic ({reason}): restart the server to load it again"
    )]
    Poisoned { ext: String, reason: String },
    #[error("extension {ext} panicked: {message}")]
    Panicked { ext: String, message: String },
    #[error("extension {ext} did not answer within {deadline:?}")]
    Deadline { ext: String, deadline: Duration },
    #[error("{}", .body.error)]
    Failed { ext: String, body: ErrorBody },
    #[error("extension {ext} broke the call protocol: {detail}")]
    Protocol { ext: String, detail: String },
}

impl CallError {
    /// The client-facing error: the extension's own message for expected failures, a clear
    /// server-side message for the rest (the extension is at fault, not the client).
    pub fn to_api_error(&self) -> ApiError {
        let status = match self {
            CallError::Failed { body, .. } => match body.kind {
                ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
                ErrorKind::Forbidden => StatusCode::FORBIDDEN,
                ErrorKind::NotFound => StatusCode::NOT_FOUND,
                ErrorKind::Conflict => StatusCode::CONFLICT,
                ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
                ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            },
            CallError::Deadline { .. } => StatusCode::GATEWAY_TIMEOUT,
            CallError::Poisoned { .. } => StatusCode::SERVICE_UNAVAILABLE,
            CallError::Panicked { .. } | CallError::Protocol { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let message = match self {
            // The panic's text goes to the server log, not to the client.
            CallError::Panicked { ext, .. } => {
                format!("extension {ext} failed while handling the call (see the server log); it is disabled until restart")
            }
            CallError::Poisoned { ext, .. } => {
                format!("extension {ext} is disabled after an internal failure: restart the server to load it again")
            }
            CallError::Protocol { ext, .. } => {
                format!("extension {ext} answered in a way the host does not understand (see the server log)")
            }
            other => other.to_string(),
        };
        if matches!(
            self,
            CallError::Protocol { .. } | CallError::Panicked { .. }
        ) {
            tracing::error!(error = %self, "extension call failed");
        }
        ApiError::new(status, message)
    }
}

/// What the host offers extensions (`HostApi::host_call`). Runs on the extension's calling
/// thread, which is a blocking thread: implementations may block.
pub trait HostServices: Send + Sync {
    /// `extension` is the package name; `load` identifies this load of its library (unique for
    /// the process), so state such as timers belongs to one instance, not to every version.
    fn host_call(
        &self,
        extension: &str,
        load: u64,
        request: HostRequest,
    ) -> Result<Value, ErrorBody>;
}

/// Identifies each library load (each import attempt, each start).
static NEXT_LOAD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The context behind one library's `HostApi` (leaked: it lives as long as the library).
struct LibContext {
    name: String,
    load: u64,
    services: Arc<dyn HostServices>,
}

/// A loaded extension library.
pub struct Library {
    name: String,
    path: PathBuf,
    api: &'static abi::ExtensionApi,
    host: &'static abi::HostApi,
    manifest: Manifest,
    load: u64,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn take_buf(buf: abi::Buf, free: extern "C" fn(abi::Buf)) -> Vec<u8> {
    if buf.ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: a non-null `Buf` returned by the other side points to `len` initialised bytes that
    // stay valid until we hand it back to that side's `free_buf`, which we do right after copying.
    let bytes = unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) }.to_vec();
    free(buf);
    bytes
}

fn give_buf(bytes: Vec<u8>) -> abi::Buf {
    let mut bytes = std::mem::ManuallyDrop::new(bytes);
    abi::Buf {
        ptr: bytes.as_mut_ptr(),
        len: bytes.len(),
        cap: bytes.capacity(),
    }
}

extern "C" fn host_free_buf(buf: abi::Buf) {
    if !buf.ptr.is_null() {
        // SAFETY: buffers the host gives out are built by `give_buf` from a `Vec<u8>` with exactly
        // these ptr/len/cap, and the ABI lets each be freed once, here.
        drop(unsafe { Vec::from_raw_parts(buf.ptr, buf.len, buf.cap) });
    }
}

fn context<'a>(ctx: *const c_void) -> &'a LibContext {
    // SAFETY: `ctx` is the `LibContext` leaked in `Library::open` for this library's `HostApi`;
    // it is never freed, and the extension passes back the pointer it was given.
    unsafe { &*(ctx as *const LibContext) }
}

extern "C" fn host_log(
    ctx: *const c_void,
    instance: u64,
    level: u32,
    target: abi::Slice,
    message: abi::Slice,
) {
    let _ = catch_unwind(|| {
        let lib = context(ctx);
        // SAFETY: the ABI guarantees both slices are valid for the duration of this call.
        let (target, message) = unsafe { (target.as_bytes(), message.as_bytes()) };
        let target = String::from_utf8_lossy(target);
        let message = String::from_utf8_lossy(message);
        let ext = lib.name.as_str();
        match level {
            abi::LOG_ERROR => {
                tracing::error!(extension = ext, instance, target = %target, "{message}")
            }
            abi::LOG_WARN => {
                tracing::warn!(extension = ext, instance, target = %target, "{message}")
            }
            abi::LOG_INFO => {
                tracing::info!(extension = ext, instance, target = %target, "{message}")
            }
            abi::LOG_DEBUG => {
                tracing::debug!(extension = ext, instance, target = %target, "{message}")
            }
            _ => tracing::trace!(extension = ext, instance, target = %target, "{message}"),
        }
    });
}

extern "C" fn host_call(
    ctx: *const c_void,
    _instance: u64,
    request: abi::Slice,
    response: *mut abi::Buf,
) -> u32 {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let lib = context(ctx);
        // SAFETY: the ABI guarantees the request slice is valid for the duration of this call.
        let bytes = unsafe { request.as_bytes() };
        match serde_json::from_slice::<HostRequest>(bytes) {
            Ok(req) => match lib.services.host_call(&lib.name, lib.load, req) {
                Ok(v) => (abi::STATUS_OK, serde_json::to_vec(&v).unwrap_or_default()),
                Err(e) => (
                    abi::STATUS_ERROR,
                    serde_json::to_vec(&e).unwrap_or_default(),
                ),
            },
            Err(e) => {
                let body = ErrorBody {
                    error: format!("undecodable host request: {e}"),
                    kind: ErrorKind::BadRequest,
                };
                (
                    abi::STATUS_BAD_REQUEST,
                    serde_json::to_vec(&body).unwrap_or_default(),
                )
            }
        }
    }));
    let (status, bytes) = outcome.unwrap_or_else(|_| {
        let body = ErrorBody {
            error: "the host failed while serving this request".into(),
            kind: ErrorKind::Internal,
        };
        (
            abi::STATUS_ERROR,
            serde_json::to_vec(&body).unwrap_or_default(),
        )
    });
    if !response.is_null() {
        // SAFETY: the extension passes a valid, writable `Buf` slot for the response.
        unsafe { response.write(give_buf(bytes)) };
    }
    status
}

impl Library {
    /// Opens `path` and checks its extension table. The caller must have verified the package
    /// (sha256, ABI version, target, signature) first: opening a library runs its initialisers.
    pub fn open(
        path: &Path,
        name: &str,
        services: Arc<dyn HostServices>,
    ) -> Result<Arc<Library>, LoadError> {
        let p = || path.to_path_buf();
        // SAFETY: loading runs the library's initialisers; the package was verified before this
        // call (see above), and only administrators can install packages.
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|source| LoadError::Open { path: p(), source })?;
        // Never unloaded: see the module documentation.
        let lib: &'static libloading::Library = Box::leak(Box::new(lib));
        // SAFETY: the symbol's type is fixed by the ABI (`abi::EntryFn`); a library exporting the
        // name with another type would be lying about the ABI it implements.
        let entry: libloading::Symbol<'static, abi::EntryFn> =
            unsafe { lib.get(abi::ENTRY_SYMBOL) }.map_err(|_| LoadError::NoEntry { path: p() })?;
        let load = NEXT_LOAD.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ctx: &'static LibContext = Box::leak(Box::new(LibContext {
            name: name.to_string(),
            load,
            services,
        }));
        let host: &'static abi::HostApi = Box::leak(Box::new(abi::HostApi {
            struct_size: std::mem::size_of::<abi::HostApi>() as u32,
            abi_major: abi::ABI_MAJOR,
            abi_minor: abi::ABI_MINOR,
            ctx: ctx as *const LibContext as *const c_void,
            log: host_log,
            host_call,
            free_buf: host_free_buf,
        }));
        // SAFETY: calling the entry point with a host table valid for the process's life, as the
        // ABI specifies; it returns a pointer to a static table or null.
        let table = unsafe { entry(host) };
        if table.is_null() {
            return Err(LoadError::NullTable { path: p() });
        }
        // Read the fixed header first, through raw pointers: a foreign or older table may be
        // shorter than ours, so no reference to a whole `ExtensionApi` is formed before its size
        // is known.
        // SAFETY: every version of the table starts with magic, versions and size (16 bytes), and
        // `table` is non-null and points into the library's static data.
        let (magic, major, minor, size) = unsafe {
            (
                std::ptr::addr_of!((*table).magic).read_unaligned(),
                std::ptr::addr_of!((*table).abi_major).read_unaligned(),
                std::ptr::addr_of!((*table).abi_minor).read_unaligned(),
                std::ptr::addr_of!((*table).struct_size).read_unaligned(),
            )
        };
        if magic != abi::MAGIC {
            return Err(LoadError::BadMagic {
                path: p(),
                found: magic,
            });
        }
        if major != abi::ABI_MAJOR {
            return Err(LoadError::WrongAbi {
                path: p(),
                major,
                minor,
            });
        }
        let need = std::mem::size_of::<abi::ExtensionApi>();
        if (size as usize) < need {
            return Err(LoadError::TableTooSmall {
                path: p(),
                found: size,
                need,
            });
        }
        // SAFETY: magic, major version and size say this is a complete v1 table, static in a
        // library that is never unloaded.
        let api: &'static abi::ExtensionApi = unsafe { &*table };
        // SAFETY: the manifest slice points into the library's static data.
        let manifest_bytes = unsafe { api.manifest.as_bytes() };
        let manifest: Manifest =
            serde_json::from_slice(manifest_bytes).map_err(|e| LoadError::Manifest {
                path: p(),
                detail: e.to_string(),
            })?;
        tracing::info!(extension = name, library = %path.display(), crate_name = %manifest.name, version = %manifest.version, "extension library loaded");
        Ok(Arc::new(Library {
            name: name.to_string(),
            path: path.to_path_buf(),
            api,
            host,
            manifest,
            load,
        }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// This load's id (see [`HostServices::host_call`]).
    pub fn load_id(&self) -> u64 {
        self.load
    }

    /// Creates an instance (blocking: call it from a blocking thread).
    pub fn create(self: &Arc<Self>, config: &Value) -> Result<Instance, CallError> {
        let bytes = serde_json::to_vec(config).unwrap_or_default();
        let mut handle = 0u64;
        let mut err = abi::Buf::EMPTY;
        let status = (self.api.create)(
            self.host,
            abi::Slice::from_bytes(&bytes),
            &mut handle,
            &mut err,
        );
        let err = take_buf(err, self.api.free_buf);
        match status {
            abi::STATUS_OK => Ok(Instance {
                lib: self.clone(),
                handle,
                poisoned: Mutex::new(None),
            }),
            abi::STATUS_PANICKED => Err(CallError::Panicked {
                ext: self.name.clone(),
                message: error_text(&err),
            }),
            _ => Err(decode_error(&self.name, &err)),
        }
    }
}

fn error_text(bytes: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(bytes)
        .map(|b| b.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(bytes).chars().take(500).collect())
}

fn decode_error(ext: &str, bytes: &[u8]) -> CallError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => CallError::Failed {
            ext: ext.to_string(),
            body,
        },
        Err(e) => CallError::Protocol {
            ext: ext.to_string(),
            detail: format!("undecodable error body: {e}"),
        },
    }
}

/// A live instance of an extension.
pub struct Instance {
    lib: Arc<Library>,
    handle: u64,
    poisoned: Mutex<Option<String>>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("extension", &self.lib.name)
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl Instance {
    pub fn extension(&self) -> &str {
        &self.lib.name
    }

    /// The id of the library load this instance belongs to.
    pub fn load_id(&self) -> u64 {
        self.lib.load
    }

    /// Why the instance takes no more calls, if it was poisoned.
    pub fn poisoned(&self) -> Option<String> {
        self.poisoned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes one call on the current (blocking) thread.
    pub fn call_blocking(&self, request: &Request) -> Result<Value, CallError> {
        let ext = || self.lib.name.clone();
        if let Some(reason) = self.poisoned() {
            return Err(CallError::Poisoned { ext: ext(), reason });
        }
        let bytes = serde_json::to_vec(request).map_err(|e| CallError::Protocol {
            ext: ext(),
            detail: format!("request not encodable: {e}"),
        })?;
        let mut out = abi::Buf::EMPTY;
        let status = (self.lib.api.call)(self.handle, abi::Slice::from_bytes(&bytes), &mut out);
        let out = take_buf(out, self.lib.api.free_buf);
        match status {
            abi::STATUS_OK => serde_json::from_slice::<InvokeResult>(&out)
                .map(|r| r.result)
                .map_err(|e| CallError::Protocol {
                    ext: ext(),
                    detail: format!("undecodable result: {e}"),
                }),
            abi::STATUS_ERROR => Err(decode_error(&self.lib.name, &out)),
            abi::STATUS_PANICKED => {
                let message = error_text(&out);
                tracing::error!(extension = %self.lib.name, %message, "extension panicked; its instance is disabled until restart");
                *self.poisoned.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(format!("panicked: {message}"));
                Err(CallError::Panicked {
                    ext: ext(),
                    message,
                })
            }
            other => Err(CallError::Protocol {
                ext: ext(),
                detail: format!("status {other}: {}", error_text(&out)),
            }),
        }
    }

    /// Makes one call on an extension-call thread (see [`pool`]), answering a deadline error if
    /// it takes too long.
    pub async fn call(
        self: &Arc<Self>,
        request: Request,
        deadline: Duration,
    ) -> Result<Value, CallError> {
        let me = self.clone();
        let task = pool::run(move || me.call_blocking(&request));
        match tokio::time::timeout(deadline, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(panic)) => Err(CallError::Protocol {
                ext: self.lib.name.clone(),
                detail: format!("call task failed: {panic}"),
            }),
            Err(_) => {
                tracing::warn!(extension = %self.lib.name, ?deadline, "extension call overran its deadline");
                Err(CallError::Deadline {
                    ext: self.lib.name.clone(),
                    deadline,
                })
            }
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // The extension's `destroy` runs its `Drop`, which may take time or make host calls: never
        // on an async worker (the ABI promises blocking threads) and never under a caller's lock.
        let (destroy, handle) = (self.lib.api.destroy, self.handle);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || destroy(handle))),
            Err(_) => destroy(handle),
        }
    }
}

#[cfg(test)]
mod tests;
