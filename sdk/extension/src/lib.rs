//! The SDK for Thingport extensions.
//!
//! An extension is a `cdylib` crate that implements [`Extension`] and exports it with one line,
//! `thingport_sdk::export_extension!(MyExtension);`. The SDK turns that into the C ABI of
//! `thingport-extension-abi` (one entry symbol, `#[repr(C)]` tables, JSON messages), catches every
//! panic at the boundary, and keeps all `unsafe` to itself. [`protocol`] defines the messages that
//! cross the boundary; the host uses the same module, so both sides agree by construction.
//!
//! Extensions are sans-I/O: the host owns sockets, timers, storage and logging, and reaches the
//! extension through calls; the extension reaches the platform through the host API.

#[cfg(panic = "abort")]
compile_error!("Thingport extensions must be built with panic = \"unwind\": a panic must become an error, not abort the server");

pub mod protocol;

pub use protocol::{BaseType, Field, Manifest};
