//! The device control channel, version 1 (`thingport.v1`).
//!
//! Transport: one WebSocket per agent to `/Thingworx/WS` on the platform, authenticated at the
//! upgrade with the HTTP header `appKey: <application key>`, with the subprotocol
//! [`SUBPROTOCOL_V1`] offered in `Sec-WebSocket-Protocol`. Every message is one JSON object in one
//! text frame (at most [`MAX_MESSAGE_BYTES`]), with a `type` field naming its variant.
//!
//! Flow: the agent sends [`AgentMessage::Hello`] first (within [`HELLO_TIMEOUT_MS`]); the platform
//! answers [`PlatformMessage::Welcome`]. The agent then binds Things ([`AgentMessage::Bind`] →
//! [`PlatformMessage::Bound`] or [`PlatformMessage::BindRefused`]). The platform sends requests
//! to a bound Thing ([`PlatformMessage::Request`], answered by [`AgentMessage::Response`] with the
//! same `id`) and one-way messages ([`PlatformMessage::Message`]).
//!
//! Liveness: WebSocket ping/pong frames. Each side pings every [`PING_INTERVAL_MS`] and closes the
//! connection when it has received nothing (no frame of any kind) for [`IDLE_TIMEOUT_MS`]; so a dead
//! link is noticed within 30 s on both sides.
//!
//! Compatibility: within version 1, new optional fields and new message types may appear. A peer
//! ignores fields it does not know; an agent answers a request whose `name` it does not know with
//! the error code [`codes::UNKNOWN_REQUEST`]; the platform answers an unknown agent message type with
//! [`PlatformMessage::Error`] (code [`codes::UNSUPPORTED`]) and keeps the connection open. Anything
//! else needs a new subprotocol (`thingport.v2`), offered alongside v1 for a transition.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The WebSocket subprotocol of this version.
pub const SUBPROTOCOL_V1: &str = "thingport.v1";
/// The path the platform serves the control channel on.
pub const PATH: &str = "/Thingworx/WS";
/// The HTTP header carrying the application key at the upgrade.
pub const APP_KEY_HEADER: &str = "appKey";
/// The largest message either side accepts (bytes of one text frame); larger ones close the
/// connection with WebSocket status 1009.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// How long the platform waits for the first message before closing with status 1008.
pub const HELLO_TIMEOUT_MS: u64 = 10_000;
/// How often each side sends a WebSocket ping.
pub const PING_INTERVAL_MS: u64 = 10_000;
/// How long a side waits without receiving anything before it declares the link dead.
pub const IDLE_TIMEOUT_MS: u64 = 25_000;
/// The most Things one connection may bind (the platform may announce a lower figure in
/// [`PlatformMessage::Welcome`]).
pub const MAX_THINGS_PER_CONNECTION: u32 = 1_000;
/// How long the platform waits for a response to a request unless the caller gave a deadline
/// (`SendMessage`'s `timeoutMs` default; `Ping` waits as long).
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;

/// Request names the platform sends ([`PlatformMessage::Request::name`]).
pub mod requests {
    /// Round trip to the agent: `body` is `{}`; the agent answers
    /// `{"agent": "<name/version>", "time": <ms since the Unix epoch>}`.
    pub const PING: &str = "ping";
    /// A remote session order: `body` is
    /// `{"session", "gasUrl", "credential", "endpoint": {"host", "port", "name"}}`; the agent
    /// checks the endpoint against its allow-list, answers `{"accepted": true}` or the error
    /// `SESSION_DENIED`, then connects to the GAS (`thingport-tunnel.v1`) with the credential and
    /// dials the endpoint for each tunnelled connection.
    pub const START_SESSION: &str = "startSession";
    /// One-way (a `message`, no answer): `body` is `{"session"}`; the platform ended the session
    /// (`EndSession`, inactivity, maximum duration): the agent closes its side of it at the GAS
    /// and every connection it carries.
    pub const END_SESSION: &str = "endSession";
}

/// Error and refusal codes, in [`PlatformMessage::BindRefused`], [`PlatformMessage::Unbound`],
/// [`PlatformMessage::Error`] and [`ErrorInfo`].
pub mod codes {
    /// The Thing does not exist (or the key's user cannot see it).
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// The Thing is disabled.
    pub const DISABLED: &str = "DISABLED";
    /// The Thing does not derive from the template `RemoteThing`.
    pub const NOT_REMOTE_THING: &str = "NOT_REMOTE_THING";
    /// The key's user may not write the Thing's properties.
    pub const FORBIDDEN: &str = "FORBIDDEN";
    /// Another connection bound the Thing; this one no longer serves it.
    pub const REPLACED: &str = "REPLACED";
    /// The connection already binds the most Things it may.
    pub const TOO_MANY_THINGS: &str = "TOO_MANY_THINGS";
    /// The Thing was unbound at the agent's request.
    pub const UNBOUND: &str = "UNBOUND";
    /// The Thing was deleted, disabled or stopped deriving from `RemoteThing` while bound.
    pub const GONE: &str = "GONE";
    /// A message could not be decoded, or came out of order (e.g. before `hello`).
    pub const MALFORMED: &str = "MALFORMED";
    /// A message type this platform does not know (from a newer agent); the connection stays.
    pub const UNSUPPORTED: &str = "UNSUPPORTED";
    /// An agent does not know the request's `name`.
    pub const UNKNOWN_REQUEST: &str = "UNKNOWN_REQUEST";
    /// The request is not bound to a Thing this agent serves.
    pub const NOT_BOUND: &str = "NOT_BOUND";
    /// The handler failed.
    pub const FAILED: &str = "FAILED";
    /// The platform could not do it now (try again).
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
    /// The agent refuses the session: remote access is disabled, or the endpoint is not allowed.
    pub const SESSION_DENIED: &str = "SESSION_DENIED";
}

/// A message from the agent to the platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum AgentMessage {
    /// The first message of a connection. `agent` is a free-form product name and version for
    /// the platform's logs (the platform keeps at most 200 bytes).
    #[serde(rename_all = "camelCase")]
    Hello { agent: String },
    /// Asks to serve the Thing `thing`. `id` is chosen by the agent and echoed in the answer.
    #[serde(rename_all = "camelCase")]
    Bind { id: u64, thing: String },
    /// Stops serving `thing`; answered by [`PlatformMessage::Unbound`] with code `UNBOUND`.
    #[serde(rename_all = "camelCase")]
    Unbind { id: u64, thing: String },
    /// The answer to [`PlatformMessage::Request`] `id`: exactly one of `result` and `error`.
    #[serde(rename_all = "camelCase")]
    Response {
        id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorInfo>,
    },
}

/// A message from the platform to the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum PlatformMessage {
    /// The answer to [`AgentMessage::Hello`].
    #[serde(rename_all = "camelCase")]
    Welcome {
        /// The platform's product name and version.
        server: String,
        /// The most Things this connection may bind.
        max_things: u32,
        /// How often the platform pings; the agent should ping at the same rate.
        ping_interval_ms: u64,
    },
    /// The bind `id` succeeded: requests for `thing` now come to this connection.
    #[serde(rename_all = "camelCase")]
    Bound { id: u64, thing: String },
    /// The bind `id` was refused; `code` is one of [`codes`], `reason` a sentence for the log.
    #[serde(rename_all = "camelCase")]
    BindRefused {
        id: u64,
        thing: String,
        code: String,
        reason: String,
    },
    /// This connection no longer serves `thing` (`code`: `UNBOUND`, `REPLACED` or `GONE`). `id`
    /// is the agent's `unbind` id when it asked.
    #[serde(rename_all = "camelCase")]
    Unbound {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        thing: String,
        code: String,
        reason: String,
    },
    /// A request to the agent for the bound Thing `thing`; answer with [`AgentMessage::Response`]
    /// carrying the same `id` (ids are unique per connection).
    #[serde(rename_all = "camelCase")]
    Request {
        id: u64,
        thing: String,
        name: String,
        #[serde(default)]
        body: Value,
    },
    /// A one-way message to the agent for the bound Thing `thing`; no answer.
    #[serde(rename_all = "camelCase")]
    Message {
        thing: String,
        name: String,
        #[serde(default)]
        body: Value,
    },
    /// The platform could not process a message (`code` `MALFORMED` ...). The connection stays
    /// open unless a WebSocket close follows.
    #[serde(rename_all = "camelCase")]
    Error { code: String, message: String },
}

/// An error answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
}

impl ErrorInfo {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ErrorInfo {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl AgentMessage {
    /// Decodes one text frame; the error names what is wrong, for an `error` answer.
    pub fn decode(text: &str) -> Result<AgentMessage, String> {
        serde_json::from_str(text).map_err(|e| format!("not a thingport.v1 agent message: {e}"))
    }
}

impl PlatformMessage {
    /// Decodes one text frame.
    pub fn decode(text: &str) -> Result<PlatformMessage, String> {
        serde_json::from_str(text).map_err(|e| format!("not a thingport.v1 platform message: {e}"))
    }
}

/// Encodes any message as the text of one frame.
pub fn encode<T: Serialize>(message: &T) -> String {
    // Serializing these types cannot fail: every field is a string, integer or JSON value.
    serde_json::to_string(message).unwrap_or_else(|_| String::from("{}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_have_the_documented_shape() {
        let m = AgentMessage::Bind {
            id: 7,
            thing: "pump-1".into(),
        };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"type": "bind", "id": 7, "thing": "pump-1"})
        );
        let r = PlatformMessage::BindRefused {
            id: 7,
            thing: "pump-1".into(),
            code: codes::DISABLED.into(),
            reason: "Thing 'pump-1' is disabled".into(),
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"type": "bindRefused", "id": 7, "thing": "pump-1", "code": "DISABLED",
                   "reason": "Thing 'pump-1' is disabled"})
        );
        let w = PlatformMessage::Welcome {
            server: "thingport".into(),
            max_things: 10,
            ping_interval_ms: 10_000,
        };
        assert_eq!(
            serde_json::to_value(&w).unwrap(),
            json!({"type": "welcome", "server": "thingport", "maxThings": 10, "pingIntervalMs": 10000})
        );
    }

    #[test]
    fn responses_round_trip_and_unknown_fields_are_ignored() {
        let text = r#"{"type":"response","id":3,"result":{"ok":true},"future":1}"#;
        assert_eq!(
            AgentMessage::decode(text).unwrap(),
            AgentMessage::Response {
                id: 3,
                result: Some(json!({"ok": true})),
                error: None
            }
        );
        let e = AgentMessage::Response {
            id: 4,
            result: None,
            error: Some(ErrorInfo::new(codes::UNKNOWN_REQUEST, "no such request")),
        };
        assert_eq!(AgentMessage::decode(&encode(&e)).unwrap(), e);
    }

    #[test]
    fn malformed_messages_are_named() {
        let err = AgentMessage::decode(r#"{"type":"bind"}"#).unwrap_err();
        assert!(err.contains("missing field"), "{err}");
        let err = AgentMessage::decode("not json").unwrap_err();
        assert!(err.contains("thingport.v1"), "{err}");
        assert!(PlatformMessage::decode(r#"{"type":"launchMissiles"}"#).is_err());
    }
}
