//! Integration tests of the agent against an in-process fake platform: the control channel,
//! reconnects, proxies, TLS, and the binary's command line and signals.

mod binary;
mod common;
mod control;
mod proxy;
mod tls;
