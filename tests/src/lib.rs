//! End-to-end harness for Thingport: starts the real `thingport-server` binary on port 0 with a fresh
//! data directory, talks to it over HTTP like a user would, and stops or kills it.
//!
//! Every integration test in `tests/tests/` owns its own [`Server`] (own process, own temporary data
//! directory, own port), so the tests run in parallel without sharing state. Conditions are awaited with
//! [`wait_until`] under a deadline, never with bare sleeps.
//!
//! The harness also watches for leaks: every error answer checked with [`Resp::expect`] must be a JSON
//! `{"error": ...}` body without SQL text, panic text or any secret the harness knows of (the admin
//! password, user passwords and application keys created through it), and a [`Server`] that is dropped at
//! the end of a passing test checks that its log holds none of those secrets either.
//!
//! Run with `cargo build --workspace && cargo test -p thingport-e2e` (the tests run the built
//! binary, they do not build it; `THINGPORT_SERVER_BIN` points them at another one).
//!
//! This crate is not a client library for Thingport: it panics with a descriptive message as soon as
//! something is not as a test expects.

mod agent;
mod api;
pub mod browser;
pub mod certs;
mod client;
pub mod clients;
pub mod consoles;
pub mod control;
mod fixtures;
pub mod fleet;
pub mod packages;
mod raw;
pub mod relay;
pub mod remote;
mod server;
mod wait;

pub use agent::{agent_binary, Agent};
pub use client::{encode_segment, Auth, Client, Resp, XSRF_TOKEN};
pub use raw::{raw_request, RawResponse};
pub use server::{run_binary, server_binary, Finished, Secrets, Server, ServerOptions};
pub use wait::{now_ms, unique_secret, wait_until, wait_until_blocking};

/// Substrings that must never appear in an error answer or a log line the harness checks.
pub const FORBIDDEN_IN_ERRORS: &[&str] = &[
    "SELECT ",
    "INSERT ",
    "UPDATE ",
    "DELETE FROM",
    "sqlx",
    "panicked",
    "stack backtrace",
    "RUST_BACKTRACE",
];

/// Default request-body limit of the server (`--max-body-bytes`), per docs/api.md.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1_048_576;
