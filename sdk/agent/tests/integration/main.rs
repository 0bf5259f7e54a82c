//! Integration tests of the agent against an in-process fake platform: the control channel,
//! reconnects, proxies, TLS, remote sessions (with the real GAS relay), and the binary's command
//! line and signals.

mod binary;
mod common;
mod control;
mod proxy;
mod rest;
mod sessions;
mod tls;
