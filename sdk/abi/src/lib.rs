//! The C ABI between the Thingport host (`thingport-server`) and a native extension (a `cdylib`).
//!
//! This crate is the contract and nothing else: `#[repr(C)]` tables of integers, raw pointers and
//! `extern "C"` function pointers, status codes as `u32` constants, and the name of the one
//! exported entry symbol. It has no dependencies, so host and extension can be built by different
//! compiler versions and still agree. Calls carry serialized messages (JSON, defined in
//! `thingport-sdk::protocol`); this crate never interprets them. Extension authors do not use it
//! directly: the SDK's `export_extension!` macro implements it. The full specification, function by
//! function, is `docs/extension-abi.md`.
//!
//! Ownership rule: a [`Slice`] is borrowed for the duration of one call only; a [`Buf`] is owned,
//! and only the side that allocated it frees it, through that side's `free_buf`.

#![no_std]

use core::ffi::c_void;

/// First field of [`ExtensionApi`]: `"TPEXTv1\0"` as a little-endian `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"TPEXTv1\0");
/// Incompatible changes bump the major version, which is also part of the entry symbol's name.
pub const ABI_MAJOR: u16 = 1;
/// Compatible additions (fields appended to a table) bump the minor version.
pub const ABI_MINOR: u16 = 4;
/// The one symbol an extension exports, NUL-terminated for `dlsym`: an [`EntryFn`].
pub const ENTRY_SYMBOL: &[u8] = b"thingport_extension_entry_v1\0";

/// The call succeeded; the response buffer holds the result message.
pub const STATUS_OK: u32 = 0;
/// The call failed in an expected way; the response buffer holds an error message
/// (`{"error": "...", "kind": "..."}`).
pub const STATUS_ERROR: u32 = 1;
/// The extension panicked during the call. The host poisons the instance: no more calls.
pub const STATUS_PANICKED: u32 = 2;
/// The request could not be decoded (a host or SDK bug, or a version mismatch).
pub const STATUS_BAD_REQUEST: u32 = 3;
/// The instance handle is unknown (never created, or destroyed).
pub const STATUS_NO_INSTANCE: u32 = 4;

/// Log levels of [`HostApi::log`].
pub const LOG_ERROR: u32 = 1;
pub const LOG_WARN: u32 = 2;
pub const LOG_INFO: u32 = 3;
pub const LOG_DEBUG: u32 = 4;
pub const LOG_TRACE: u32 = 5;

/// Borrowed bytes, valid only during the call they are passed to.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Slice {
    pub ptr: *const u8,
    pub len: usize,
}

impl Slice {
    /// An empty slice.
    pub const EMPTY: Slice = Slice {
        ptr: core::ptr::null(),
        len: 0,
    };

    /// Borrows `bytes` for a call.
    pub fn from_bytes(bytes: &[u8]) -> Slice {
        Slice {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// Views the bytes.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes that stay valid for `'a` (the ABI guarantees this
    /// for the duration of the call the slice was passed to), or `len` must be 0.
    pub unsafe fn as_bytes<'a>(self) -> &'a [u8] {
        if self.len == 0 || self.ptr.is_null() {
            &[]
        } else {
            // SAFETY: the caller guarantees `ptr` is valid for `len` bytes for `'a`.
            unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

/// Owned bytes handed across the boundary; freed by the allocating side's `free_buf`.
/// `cap` is the allocation's capacity, needed to rebuild and free it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Buf {
    pub ptr: *mut u8,
    pub len: usize,
    pub cap: usize,
}

impl Buf {
    /// No buffer.
    pub const EMPTY: Buf = Buf {
        ptr: core::ptr::null_mut(),
        len: 0,
        cap: 0,
    };
}

/// The host's side of the boundary, passed to [`EntryFn`] and valid for the life of the process.
#[repr(C)]
pub struct HostApi {
    /// `size_of::<HostApi>()` as built by the host: an extension reads only fields that fit.
    pub struct_size: u32,
    pub abi_major: u16,
    pub abi_minor: u16,
    /// Opaque host context, passed back in every host function.
    pub ctx: *const c_void,
    /// Forwards a log event into the host's `tracing`, attributed to the extension.
    pub log:
        extern "C" fn(ctx: *const c_void, instance: u64, level: u32, target: Slice, message: Slice),
    /// A synchronous platform operation (read or write entities, audit, invoke another service,
    /// timers, sending on a host-owned connection): request and response are JSON messages.
    /// Returns a `STATUS_*`; on return `*response` holds a buffer the extension must give back
    /// with `free_buf` below.
    pub host_call:
        extern "C" fn(ctx: *const c_void, instance: u64, request: Slice, response: *mut Buf) -> u32,
    /// Frees a buffer the host allocated (a `host_call` response).
    pub free_buf: extern "C" fn(buf: Buf),
}

/// The extension's side of the boundary: a static table returned by [`EntryFn`].
#[repr(C)]
pub struct ExtensionApi {
    /// Must equal [`MAGIC`].
    pub magic: u64,
    pub abi_major: u16,
    pub abi_minor: u16,
    /// `size_of::<ExtensionApi>()` as built by the extension: the host reads only the prefix it knows.
    pub struct_size: u32,
    /// The manifest (JSON: name, version, dependencies, entities, services), static for the
    /// library's life.
    pub manifest: Slice,
    /// Creates an instance with its configuration (JSON). On success writes the new instance's
    /// handle to `*instance`; on failure returns `STATUS_ERROR` with an error message in `*error`.
    pub create: extern "C" fn(
        host: *const HostApi,
        config: Slice,
        instance: *mut u64,
        error: *mut Buf,
    ) -> u32,
    /// Delivers one request (JSON) to an instance; the response (JSON) goes to `*response`.
    /// May be called from several host threads at once.
    pub call: extern "C" fn(instance: u64, request: Slice, response: *mut Buf) -> u32,
    /// Drops an instance. No call on it starts afterwards.
    pub destroy: extern "C" fn(instance: u64),
    /// Frees a buffer the extension allocated (a `call` response or a `create` error).
    pub free_buf: extern "C" fn(buf: Buf),
}

/// The type of [`ENTRY_SYMBOL`]. Called once per loaded library; never fails: returns the
/// extension's static table (the host then checks magic, version and size).
pub type EntryFn = unsafe extern "C" fn(host: *const HostApi) -> *const ExtensionApi;

// SAFETY: the tables hold only function pointers and pointers to data that is immutable and lives
// as long as the library (never unloaded) or the host process; they are read from any thread.
unsafe impl Sync for ExtensionApi {}
unsafe impl Send for ExtensionApi {}
unsafe impl Sync for HostApi {}
unsafe impl Send for HostApi {}
