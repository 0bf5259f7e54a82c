//! The extension system: packages (verified before anything is opened), the native host that
//! loads extension libraries through the C ABI of `thingport-extension-abi`, and the registry of
//! what each extension contributes.

pub mod bridge;
pub mod connections;
pub mod definitions;
pub mod host;
/// The package format lives in its own crate (`sdk/package`), shared with `thingport ext pack`.
pub use thingport_package as package;
pub mod registry;
