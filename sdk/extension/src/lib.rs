//! The SDK for Thingport extensions.
//!
//! An extension is a `cdylib` crate that implements [`Extension`] and exports it with one line,
//! `thingport_sdk::export_extension!(MyExtension);`. The SDK turns that into the C ABI of
//! `thingport-extension-abi` (one entry symbol, `#[repr(C)]` tables, JSON messages), catches every
//! panic at the boundary, and keeps all `unsafe` to itself (in [`ffi`]). [`protocol`] defines the
//! messages that cross the boundary; the host uses the same module, so both sides agree by
//! construction. [`testing`] runs an extension in-process against a fake host.
//!
//! Extensions are sans-I/O: the host owns sockets, timers, storage and logging, and reaches the
//! extension through calls; the extension reaches the platform through its [`Host`]. This crate is
//! not the host's loader (that is `thingport-server`), and it holds no runtime, thread or socket.
//!
//! The walk-through is `docs/writing-an-extension.md`; the boundary's specification is
//! `docs/extension-abi.md`.

#[cfg(panic = "abort")]
compile_error!("Thingport extensions must be built with panic = \"unwind\": a panic must become an error, not abort the server");

mod definitions;
mod error;
mod extension;
pub mod ffi;
mod host;
pub mod protocol;
mod service;
pub mod testing;

pub use error::Error;
pub use extension::{ok, Call, Connection, Extension};
pub use host::{Host, HostBackend, Level};
pub use protocol::{BaseType, Field, Manifest};
pub use service::{
    base_type, data_shape, fields_of, service, BASE_TYPE_KEYWORD, DATA_SHAPE_KEYWORD,
};

/// `serde_json`, re-exported: services take and return [`serde_json::Value`].
pub use serde_json;
pub use serde_json::Value;
/// The ABI crate, re-exported for the macro and for hosts' tests.
pub use thingport_extension_abi as abi;

/// Exports an [`Extension`] type as this library's extension: generates the entry symbol
/// `thingport_extension_entry_v1` and `pub fn thingport_extension_table() ->
/// thingport_sdk::ffi::Table`, the same table in-process (for tests with [`testing::FakeHost`]).
///
/// Use it once, in the crate root of a `cdylib` crate built with `panic = "unwind"`. The manifest
/// takes the name and version of that crate (`CARGO_PKG_NAME`, `CARGO_PKG_VERSION`).
///
/// ```
/// use thingport_sdk::protocol::{Definitions, ThingTemplateDef};
/// use thingport_sdk::{ok, Call, Error, Extension, Host, Value};
///
/// struct Hello;
///
/// impl Extension for Hello {
///     fn definitions() -> Definitions {
///         Definitions::new().template(
///             ThingTemplateDef::new("HelloTemplate")
///                 .service(thingport_sdk::service::<(), String>("Hello", "greets")),
///         )
///     }
///     fn create(_: Host, _: Value) -> Result<Self, Error> {
///         Ok(Hello)
///     }
///     fn invoke(&self, _: &Call) -> Result<Value, Error> {
///         ok("hello")
///     }
/// }
///
/// thingport_sdk::export_extension!(Hello);
///
/// let fake = thingport_sdk::testing::FakeHost::new();
/// let hello = fake.instantiate(thingport_extension_table(), Value::Null).unwrap();
/// let greeting = hello.invoke("Things", "H", "Hello", Value::Null);
/// assert_eq!(greeting, Ok(Value::from("hello")));
/// ```
#[macro_export]
macro_rules! export_extension {
    ($extension:ty) => {
        /// The exported ABI table of this crate's extension, in-process (no `dlopen`): what
        /// `thingport_extension_entry_v1` returns.
        pub fn thingport_extension_table() -> $crate::ffi::Table {
            $crate::ffi::table::<$extension>(
                ::core::env!("CARGO_PKG_NAME"),
                ::core::env!("CARGO_PKG_VERSION"),
            )
        }

        /// The entry symbol the host looks up (`thingport_extension_abi::ENTRY_SYMBOL`).
        ///
        /// # Safety
        /// `host` must be null or point to the host's table, valid for the life of the process.
        #[allow(unsafe_code)]
        #[no_mangle]
        pub unsafe extern "C" fn thingport_extension_entry_v1(
            host: *const $crate::abi::HostApi,
        ) -> *const $crate::abi::ExtensionApi {
            // SAFETY: the caller (the host) passes its table, as required above.
            unsafe { $crate::ffi::entry(host, thingport_extension_table) }
        }
    };
}

#[cfg(test)]
mod tests;
