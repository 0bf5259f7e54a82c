//! The data RAE keeps and answers: endpoints, session records, states and termination causes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thingport_sdk::{Error, Value};

/// A device endpoint, one row of a Thing's `endpoints` property (data shape `RemoteEndpoint`).
/// `host:port` is seen from the gateway running the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteEndpoint {
    /// The endpoint's name, unique on its Thing (what `StartSession` takes), e.g. `ssh`.
    pub name: String,
    /// SSH, VNC, TELNET, HTTP or TCP.
    pub protocol: Option<String>,
    /// The host the agent dials, as the gateway sees it.
    pub host: Option<String>,
    /// The TCP port the agent dials (1..65535).
    #[schemars(extend("format" = "int32"))]
    pub port: Option<i64>,
    /// What the endpoint is, for people.
    pub description: Option<String>,
    /// Provider-specific settings (free-form JSON).
    pub provider_config: Option<Value>,
}

/// The protocols an endpoint may declare.
pub const PROTOCOLS: [&str; 5] = ["SSH", "VNC", "TELNET", "HTTP", "TCP"];

impl RemoteEndpoint {
    /// The `host:port` to dial, after checking the row makes sense.
    pub fn target(&self, thing: &str) -> Result<(String, u16), Error> {
        let bad = |why: String| {
            Error::unprocessable(format!(
                "endpoint '{}' of Thing '{thing}' is not usable: {why}",
                self.name
            ))
        };
        let host = self.host.as_deref().unwrap_or("").trim();
        if host.is_empty() || host.len() > 253 || host.chars().any(|c| c.is_whitespace()) {
            return Err(bad("its host is missing or invalid".into()));
        }
        let port = match self.port {
            Some(p) if (1..=65_535).contains(&p) => p as u16,
            Some(p) => return Err(bad(format!("port {p} is outside 1..65535"))),
            None => return Err(bad("it has no port".into())),
        };
        if let Some(protocol) = &self.protocol {
            if !PROTOCOLS.contains(&protocol.to_ascii_uppercase().as_str()) {
                return Err(bad(format!(
                    "protocol '{protocol}' is not one of {}",
                    PROTOCOLS.join(", ")
                )));
            }
        }
        Ok((host.to_string(), port))
    }
}

/// Where a session stands (SPEC §5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// The record is written; the agent has not accepted the order yet.
    #[default]
    Initializing,
    /// The agent accepted; the sides are attaching to the GAS.
    Created,
    /// Both sides are attached at the GAS: bytes flow.
    Started,
    Terminated,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Initializing => "INITIALIZING",
            Status::Created => "CREATED",
            Status::Started => "STARTED",
            Status::Terminated => "TERMINATED",
        }
    }
}

/// Why a session ended. The numbers of PTC's causes are kept in the docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Cause {
    /// The user ended it (`EndSession`, the client's Ctrl-C).
    UserShutdown,
    /// The device side went away (the agent closed or lost its tunnel).
    DeviceShutdown,
    /// Inactivity (`inactiveSessionTimeoutMinutes`), or the client vanished.
    Abandoned,
    /// No GAS was enabled, connected, healthy and under capacity.
    NoServers,
    /// The agent refused (remote access disabled, endpoint not allowed).
    SessionDenied,
    /// A side never attached before its credential expired.
    NotStarted,
    /// `maxSessionDurationHours` reached.
    MaxDuration,
    /// The GAS went away.
    ServerLost,
    /// The order could not be delivered or failed (device offline, agent error).
    ErrorStartingRemoteSession,
    /// Remote access is switched off for the device, its template or one of its tags.
    RemoteAccessDisabled,
    /// Browser console: the endpoint refused the stored credentials.
    AuthenticationFailed,
    /// Browser console: the SSH server's host key is not the pinned one.
    HostKeyMismatch,
    /// Browser console: no SSH host key is pinned yet (someone who may edit the endpoint accepts it).
    HostKeyUnknown,
    /// Browser console: the agent could not reach the endpoint.
    EndpointUnreachable,
    /// Browser console: another failure (protocol error, missing settings).
    ConsoleError,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::UserShutdown => "USER_SHUTDOWN",
            Cause::DeviceShutdown => "DEVICE_SHUTDOWN",
            Cause::Abandoned => "ABANDONED",
            Cause::NoServers => "NO_SERVERS",
            Cause::SessionDenied => "SESSION_DENIED",
            Cause::NotStarted => "NOT_STARTED",
            Cause::MaxDuration => "MAX_DURATION",
            Cause::ServerLost => "SERVER_LOST",
            Cause::ErrorStartingRemoteSession => "ERROR_STARTING_REMOTE_SESSION",
            Cause::RemoteAccessDisabled => "REMOTE_ACCESS_DISABLED",
            Cause::AuthenticationFailed => "AUTHENTICATION_FAILED",
            Cause::HostKeyMismatch => "HOST_KEY_MISMATCH",
            Cause::HostKeyUnknown => "HOST_KEY_UNKNOWN",
            Cause::EndpointUnreachable => "ENDPOINT_UNREACHABLE",
            Cause::ConsoleError => "CONSOLE_ERROR",
        }
    }
}

/// A session, as stored (collection [`SESSIONS`], key = session id) and answered (data shape
/// `RemoteSession`). Times are milliseconds since the Unix epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteSession {
    /// The session's id (32 hex digits, in creation order).
    pub session_id: String,
    /// The device Thing.
    #[schemars(extend("x-thingport-base-type" = "THINGNAME"))]
    pub agent_device: String,
    /// The endpoint's name on the device.
    pub remote_endpoint: String,
    /// The GAS Thing carrying the session (empty when none was selected).
    #[schemars(extend("x-thingport-base-type" = "THINGNAME"))]
    pub remote_server: String,
    /// The user who started it.
    pub created_by: String,
    #[schemars(extend("x-thingport-base-type" = "DATETIME"))]
    pub created_time: i64,
    /// When both sides were attached.
    #[schemars(extend("x-thingport-base-type" = "DATETIME"))]
    pub start_time: Option<i64>,
    #[schemars(extend("x-thingport-base-type" = "DATETIME"))]
    pub end_time: Option<i64>,
    /// When bytes last moved (as the GAS's heartbeats tell).
    #[schemars(extend("x-thingport-base-type" = "DATETIME"))]
    pub last_activity_time: i64,
    /// INITIALIZING, CREATED, STARTED or TERMINATED.
    #[schemars(with = "String")]
    pub status: Status,
    /// Why it ended (TERMINATED only).
    #[schemars(with = "Option<String>")]
    pub termination_cause: Option<Cause>,
    /// Tunnelled payload bytes, both directions.
    pub bytes_transferred: u64,
    /// The address the session was started from.
    #[serde(rename = "userIP")]
    pub user_ip: String,
    /// The device agent's address, as the platform saw its control channel.
    #[serde(rename = "agentIP")]
    pub agent_ip: String,
    /// Why it ended, for people (the GAS's detail, the agent's refusal).
    pub detail: Option<String>,
    /// `tunnel` (a client such as `thingport connect` attaches) or `console` (the GAS is the
    /// client side and a browser shows the console).
    #[serde(default = "tunnel_kind")]
    pub kind: String,
}

/// Session kinds.
pub const KIND_TUNNEL: &str = "tunnel";
pub const KIND_CONSOLE: &str = "console";

fn tunnel_kind() -> String {
    KIND_TUNNEL.to_string()
}

/// What `StartSession` answers: the session, plus what the client needs to attach (never stored).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StartedSession {
    #[serde(flatten)]
    pub session: RemoteSession,
    /// The GAS's base URL (`http(s)://...`); the client attaches at its tunnel path.
    pub gas_url: Option<String>,
    /// The client's tunnel credential: single use, for this session only.
    pub credential: Option<String>,
    /// When the credential expires (ms since the epoch).
    #[schemars(extend("x-thingport-base-type" = "DATETIME"))]
    pub credential_expires: Option<i64>,
    /// StartConsoleSession only: the GAS's console WebSocket URL (`ws[s]://.../console`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_url: Option<String>,
    /// StartConsoleSession only: the single-use ticket the browser sends as its first message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// StartConsoleSession only: the endpoint's protocol (VNC, SSH or TELNET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// The record collection of sessions (key: session id).
pub const SESSIONS: &str = "sessions";
/// The index of sessions by device (key: `<thing>/<session id>`, value `null`).
pub const BY_DEVICE: &str = "device-sessions";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
