//! The wire protocols of Thingport, shared by both ends of each link so they cannot drift apart.
//!
//! - [`control`]: the device control channel between `thingport-agent` (or any device) and the
//!   platform's `ConnectionServicesExtension`, over a WebSocket at `/Thingworx/WS` with the
//!   subprotocol `thingport.v1`.
//! - [`tunnel`]: the tunnel frames and credentials between the Remote Access Client, the Global
//!   Access Server and the agent (`thingport-tunnel.v1`).
//! - [`gas`]: the REST conversation of a Global Access Server with the platform's
//!   `RemoteAccessExtension` (registration, heartbeats, session reports).
//!
//! `docs/protocol.md` is the readable specification of the same messages, written so that a third
//! party can implement a device from it alone; this crate is the reference implementation.

pub mod control;
pub mod gas;
pub mod tunnel;

#[cfg(test)]
mod proptests;
