//! The REST conversation between a Global Access Server (`thingport-gas`) and the platform's
//! `RemoteAccessExtension`: registration, heartbeats and session reports.
//!
//! Every call is a service of the Thing [`PROVIDER`], invoked with the GAS's application key as
//! `POST /Thingworx/Things/GASRemoteAccessProvider/Services/<service>` with a JSON body of the
//! service's parameters (the structs below, camelCase). Services with a result answer the host's
//! InfoTable: the result is the field `result` of the first row.
//!
//! - [`REGISTER_SERVER`] with [`RegisterServer`] → [`Registration`]: the first registration of a
//!   name creates its `GASModel` Thing, disabled; later ones update it and keep
//!   `enabledForRemoteSessions`. The answer carries a fresh signing key, held by the platform in
//!   memory only (a platform restart forgets it: the next heartbeat is answered 404 and the GAS
//!   registers again).
//! - [`HEARTBEAT`] with [`Heartbeat`] → [`HeartbeatReply`], every
//!   [`Registration::heartbeat_interval_ms`]: health, load, and the live sessions with their byte
//!   counts (the platform's inactivity clock). The reply names sessions the platform ended
//!   (`EndSession`, inactivity, maximum duration) that the GAS must close.
//! - [`REPORT_SESSION_EVENTS`] with [`SessionReports`]: sides attached, sessions started and
//!   ended (with cause and bytes), in batches, as they happen.
//!
//! An answer `404` to a heartbeat or a report means "unknown registration" (the platform
//! restarted, or the GAS Thing was deleted): register again. `docs/protocol.md` §18 is the readable
//! form.

use serde::{Deserialize, Serialize};

/// The Thing whose services a GAS calls.
pub const PROVIDER: &str = "GASRemoteAccessProvider";
pub const REGISTER_SERVER: &str = "RegisterServer";
pub const HEARTBEAT: &str = "Heartbeat";
pub const REPORT_SESSION_EVENTS: &str = "ReportSessionEvents";
pub const CLAIM_CONSOLE_SESSION: &str = "ClaimConsoleSession";

/// How often a GAS heartbeats unless the registration says otherwise.
pub const HEARTBEAT_INTERVAL_MS: u64 = 10_000;
/// A GAS not heard from for this long is disconnected (`isConnected` false, not selected).
pub const SILENT_AFTER_MS: u64 = 30_000;
/// Sessions of a disconnected GAS end `SERVER_LOST` this long after its last heartbeat.
pub const LOST_AFTER_MS: u64 = 45_000;
/// The most reports in one [`SessionReports`] batch.
pub const MAX_REPORTS: usize = 500;
/// The most sessions one heartbeat lists.
pub const MAX_HEARTBEAT_SESSIONS: usize = 20_000;

/// `RegisterServer`'s parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterServer {
    /// The GAS Thing's name (`--name`).
    pub name: String,
    /// Where clients and agents reach this GAS: an `http://` or `https://` base URL; the tunnel
    /// path [`crate::tunnel::PATH`] is appended.
    pub public_url: String,
    /// The GAS's version, e.g. `thingport-gas 0.1.0`.
    pub version: String,
    /// The most concurrent sessions this GAS takes.
    pub capacity: u32,
}

/// `RegisterServer`'s result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    /// An opaque id of this registration, passed back in every heartbeat and report.
    pub registration: String,
    /// The key credentials for this GAS are signed with: 32 random bytes, base64url without
    /// padding. Replaces any previous key.
    pub key: String,
    /// How often to heartbeat.
    pub heartbeat_interval_ms: u64,
    /// Whether an administrator enabled this GAS for remote sessions (informational).
    pub enabled: bool,
}

/// `Heartbeat`'s parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub name: String,
    pub registration: String,
    /// False when the GAS cannot take sessions (draining, overloaded).
    pub healthy: bool,
    /// The live sessions (paired or waiting for a side), at most [`MAX_HEARTBEAT_SESSIONS`].
    pub sessions: Vec<LiveSession>,
}

/// One live session in a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveSession {
    pub session: String,
    /// Client-to-agent `DATA` bytes so far.
    pub bytes_up: u64,
    /// Agent-to-client `DATA` bytes so far.
    pub bytes_down: u64,
    /// Both sides attached.
    pub paired: bool,
}

/// `Heartbeat`'s result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatReply {
    /// Sessions the platform ended: close both sides.
    #[serde(default)]
    pub end: Vec<String>,
}

/// `ReportSessionEvents`' parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionReports {
    pub name: String,
    pub registration: String,
    /// At most [`MAX_REPORTS`], oldest first.
    pub events: Vec<SessionReport>,
}

/// Something that happened to a session at the GAS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum SessionReport {
    /// A side was admitted (`role`: `client` or `agent`).
    #[serde(rename_all = "camelCase")]
    Attached { session: String, role: String },
    /// Both sides are attached; frames flow.
    #[serde(rename_all = "camelCase")]
    Started { session: String },
    /// The session is over at the GAS.
    #[serde(rename_all = "camelCase")]
    Ended {
        session: String,
        /// One of [`end_causes`].
        cause: String,
        /// `client` or `agent` when the cause lies with one side.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
        /// Human-readable detail (e.g. the protocol error).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        detail: String,
        bytes_up: u64,
        bytes_down: u64,
        /// From both sides attached to the end (0 if never paired).
        duration_ms: u64,
    },
}

/// The causes in [`SessionReport::Ended`].
pub mod end_causes {
    /// The side (`role`) closed its WebSocket.
    pub const CLOSED: &str = "CLOSED";
    /// The side's connection failed or fell silent.
    pub const LOST: &str = "LOST";
    /// The side broke the tunnel protocol.
    pub const PROTOCOL: &str = "PROTOCOL";
    /// The other side never attached.
    pub const NOT_PAIRED: &str = "NOT_PAIRED";
    /// The GAS shut down.
    pub const SHUTDOWN: &str = "SHUTDOWN";
    /// The platform ended it (a heartbeat reply's `end`).
    pub const ENDED_BY_PLATFORM: &str = "ENDED_BY_PLATFORM";
    /// Browser console: the endpoint refused the stored credentials (SSH or VNC).
    pub const CONSOLE_AUTH_FAILED: &str = "CONSOLE_AUTH_FAILED";
    /// Browser console: the SSH server presented another host key than the pinned one.
    pub const CONSOLE_HOST_KEY_MISMATCH: &str = "CONSOLE_HOST_KEY_MISMATCH";
    /// Browser console: no SSH host key is pinned yet; the presented one awaits acceptance.
    pub const CONSOLE_HOST_KEY_UNKNOWN: &str = "CONSOLE_HOST_KEY_UNKNOWN";
    /// Browser console: the agent could not reach the endpoint.
    pub const CONSOLE_UNREACHABLE: &str = "CONSOLE_UNREACHABLE";
    /// Browser console: any other failure of the console (a protocol error, missing settings).
    pub const CONSOLE_FAILED: &str = "CONSOLE_FAILED";
}

/// `ClaimConsoleSession`'s parameters: a GAS that admitted a browser with a console ticket asks
/// for what it needs to be the session's client side. Answered once per session, only to the GAS
/// holding it, only for sessions of kind `console`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimConsoleSession {
    pub name: String,
    pub registration: String,
    pub session: String,
}

/// `ClaimConsoleSession`'s result: the endpoint's protocol and stored credentials, in clear.
/// The GAS keeps them in memory for the handshake only and never forwards them; `Debug` does not
/// print them.
#[derive(Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleClaim {
    pub session: String,
    pub thing: String,
    pub endpoint: String,
    /// `VNC`, `SSH` or `TELNET`.
    pub protocol: String,
    /// `none`, `password`, `userPassword` or `privateKey`.
    pub authentication: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<String>,
    /// The pinned SSH host key (an OpenSSH public key line); not a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
}

impl std::fmt::Debug for ConsoleClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleClaim")
            .field("session", &self.session)
            .field("thing", &self.thing)
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field("authentication", &self.authentication)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("private_key", &self.private_key.as_ref().map(|_| "<set>"))
            .field("passphrase", &self.passphrase.as_ref().map(|_| "<set>"))
            .field("host_key", &self.host_key)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_tagged_camel_case() {
        let ended = SessionReport::Ended {
            session: "s1".into(),
            cause: end_causes::CLOSED.into(),
            role: Some("client".into()),
            detail: String::new(),
            bytes_up: 3,
            bytes_down: 4,
            duration_ms: 5,
        };
        let json = serde_json::to_value(&ended).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"event": "ended", "session": "s1", "cause": "CLOSED", "role": "client",
                "bytesUp": 3, "bytesDown": 4, "durationMs": 5})
        );
        let back: SessionReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, ended);
        let attached: SessionReport =
            serde_json::from_str(r#"{"event":"attached","session":"s","role":"agent"}"#).unwrap();
        assert_eq!(
            attached,
            SessionReport::Attached {
                session: "s".into(),
                role: "agent".into()
            }
        );
    }
}
