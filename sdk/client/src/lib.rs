//! `thingport`, the Thingport client and admin CLI, as a library: the command line ([`cli`]), the
//! Remote Access Client ([`connect`]: a session's tunnel through a Global Access Server, on a
//! local port or stdin/stdout), the remote access and audit calls ([`remote`]), extension
//! packaging ([`pack`]) and signing keys ([`keys`]), the admin calls of the REST API ([`api`])
//! whose answers [`table`] prints, TLS for both ([`tls`]), and `thingport up`, which runs the demo binary ([`demo`]).
//! The binary's `main.rs` only calls [`cli::main`].
//!
//! Not here (yet): profile files and HTTP proxies. The package format itself (what `metadata.xml` may hold,
//! how a package is verified) belongs to `thingport_package`; this crate
//! writes packages that that code accepts and reuses it to check them.

pub mod api;
pub mod cli;
pub mod connect;
pub mod demo;
pub mod keys;
pub mod pack;
pub mod remote;
pub mod table;
pub mod tls;
