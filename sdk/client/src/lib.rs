//! `thingport`, the Thingport client and admin CLI, as a library: the command line ([`cli`]),
//! extension packaging ([`pack`]) and signing keys ([`keys`]), and the admin calls of the REST
//! API ([`api`]) whose answers [`table`] prints. The binary's `main.rs` only calls [`cli::main`].
//!
//! Not here (yet): the Remote Access Client (`thingport connect`), the session and audit
//! commands, profile files and TLS. The package format itself (what `metadata.xml` may hold,
//! how a package is verified) belongs to `thingport_server::extensions::package`; this crate
//! writes packages that that code accepts and reuses it to check them.

pub mod api;
pub mod cli;
pub mod keys;
pub mod pack;
pub mod table;
