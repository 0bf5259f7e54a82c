//! The remote access calls of the REST API (SPEC §5): starting, reading and ending sessions on a
//! `RemoteAccessible` Thing or the `RemoteAccessSubsystem`, listing Things, querying the audit
//! log; and the hints that turn a refusal's cause code into what to do about it.

use crate::api::{Connection, Secret};
use anyhow::Context as _;
use serde::Deserialize;
use serde_json::{json, Value};

/// The states of a session (SPEC §5).
pub const TERMINATED: &str = "TERMINATED";

/// One `RemoteSession` row. Every field is optional: the client prints what it gets and needs only
/// `sessionId` (and, from `StartSession`, `gasUrl` and `credential`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RemoteSession {
    pub session_id: Option<String>,
    pub agent_device: Option<String>,
    pub remote_endpoint: Option<String>,
    pub remote_server: Option<String>,
    pub created_by: Option<String>,
    pub status: Option<String>,
    pub termination_cause: Option<String>,
    /// The Global Access Server's base URL (`http(s)://host:port`), from `StartSession`.
    pub gas_url: Option<String>,
    /// The client side's tunnel credential (single use, short-lived), from `StartSession`.
    pub credential: Option<Secret>,
    /// When the credential expires, ms since the epoch.
    pub credential_expires: Option<Value>,
    /// The endpoint's protocol (SSH, VNC, ...), when the platform includes it.
    pub protocol: Option<String>,
}

impl RemoteSession {
    /// The first row of an InfoTable answer.
    pub fn from_table(call: &str, table: &Value) -> anyhow::Result<RemoteSession> {
        let row = crate::table::rows(table)
            .into_iter()
            .next()
            .with_context(|| format!("{call} failed: the server answered no session row"))?;
        serde_json::from_value(row)
            .with_context(|| format!("{call} failed: the session row is not a RemoteSession"))
    }
}

/// What to do about a refused remote access call, from its status and cause code.
pub fn session_hint(status: u16, message: &str) -> &'static str {
    let cause = message.split(':').next().unwrap_or("").trim();
    match (cause, status) {
        ("NO_SERVERS", _) => {
            " (no Global Access Server is enabled and connected: an administrator starts \
             thingport-gas and runs EnableForRemoteSessions on its Thing)"
        }
        ("SESSION_DENIED", _) => {
            " (the device's agent refused the session: it runs with --disable-remote-access, or \
             the endpoint is not in its --allow list)"
        }
        ("REMOTE_ACCESS_DISABLED", _) => {
            " (remote access is switched off for this device, its template or one of its tags: \
             whoever manages the device switches it on in the web console or with \
             SetRemoteAccessSwitch / the remoteAccessEnabled property)"
        }
        ("DEVICE_OFFLINE", _) => {
            " (the Thing's agent is not connected: check that thingport-agent runs on the \
             device and binds this Thing)"
        }
        (_, 403) => {
            " (your user lacks permission on this Thing: an administrator grants remote access, \
             e.g. with eMessageServices.GrantRemoteAccessPermissionsGASForThing)"
        }
        (_, 404) => {
            " (check the Thing's name with `thingport things` and the endpoint's name in its \
             endpoints property)"
        }
        _ => "",
    }
}

fn thing_service(thing: &str, service: &str) -> String {
    format!(
        "/Thingworx/Things/{}/Services/{service}",
        path_segment(thing)
    )
}

const SUBSYSTEM: &str = "/Thingworx/Subsystems/RemoteAccessSubsystem/Services";

/// Percent-encodes a path segment (names may hold spaces or slashes).
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Connection {
    async fn remote_call(&self, call: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send_with(call, self.post(path).json(&body), session_hint)
            .await
    }

    /// `StartSession {remoteEndpoint}` on `thing`: the new session, with the client's
    /// credential and the GAS to attach to.
    pub async fn start_session(
        &self,
        thing: &str,
        endpoint: &str,
    ) -> anyhow::Result<RemoteSession> {
        const CALL: &str = "StartSession";
        let table = self
            .remote_call(
                CALL,
                &thing_service(thing, CALL),
                json!({ "remoteEndpoint": endpoint }),
            )
            .await?;
        RemoteSession::from_table(CALL, &table)
    }

    /// `AttachSession {sessionId}` on `thing`: a fresh client credential for a session the
    /// caller started elsewhere that waits for its client.
    pub async fn attach_session(
        &self,
        thing: &str,
        session: &str,
    ) -> anyhow::Result<RemoteSession> {
        const CALL: &str = "AttachSession";
        let table = self
            .remote_call(
                CALL,
                &thing_service(thing, CALL),
                json!({ "sessionId": session }),
            )
            .await?;
        RemoteSession::from_table(CALL, &table)
    }

    /// `EndSession {sessionId}` on `thing`.
    pub async fn end_thing_session(&self, thing: &str, session: &str) -> anyhow::Result<()> {
        const CALL: &str = "EndSession";
        self.remote_call(
            CALL,
            &thing_service(thing, CALL),
            json!({ "sessionId": session }),
        )
        .await
        .map(drop)
    }

    /// `GetSession {sessionId}` on `thing`.
    pub async fn get_session(&self, thing: &str, session: &str) -> anyhow::Result<RemoteSession> {
        const CALL: &str = "GetSession";
        let table = self
            .remote_call(
                CALL,
                &thing_service(thing, CALL),
                json!({ "sessionId": session }),
            )
            .await?;
        RemoteSession::from_table(CALL, &table)
    }

    /// `GetSessions` of one Thing, or of the whole `RemoteAccessSubsystem`: an InfoTable of
    /// `RemoteSession` rows.
    pub async fn sessions(&self, thing: Option<&str>) -> anyhow::Result<Value> {
        const CALL: &str = "GetSessions";
        let path = match thing {
            Some(thing) => thing_service(thing, CALL),
            None => format!("{SUBSYSTEM}/{CALL}"),
        };
        self.remote_call(CALL, &path, json!({})).await
    }

    /// `RemoteAccessSubsystem.EndSession {sessionId}`: ends any session (administrators).
    pub async fn end_session(&self, session: &str) -> anyhow::Result<()> {
        const CALL: &str = "EndSession";
        self.remote_call(
            CALL,
            &format!("{SUBSYSTEM}/{CALL}"),
            json!({ "sessionId": session }),
        )
        .await
        .map(drop)
    }

    /// `GET /Thingworx/Things`: the Things the caller may see, an InfoTable.
    pub async fn things(&self) -> anyhow::Result<Value> {
        self.send_with("Things", self.get("/Thingworx/Things"), |_, _| "")
            .await
    }

    /// `AuditSubsystem.QueryAuditHistory` with the given parameters (category, principal,
    /// entity, since, until, limit; absent ones are left out).
    pub async fn audit(&self, params: Value) -> anyhow::Result<Value> {
        const CALL: &str = "QueryAuditHistory";
        let request = self
            .post("/Thingworx/Subsystems/AuditSubsystem/Services/QueryAuditHistory")
            .json(&params);
        self.send_with(CALL, request, |status, _| match status {
            403 => " (reading the audit log needs run-time permission on AuditSubsystem)",
            _ => "",
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_map_to_hints() {
        assert!(session_hint(503, "NO_SERVERS: none").contains("EnableForRemoteSessions"));
        assert!(session_hint(403, "REMOTE_ACCESS_DISABLED: off").contains("switched off"));
        assert!(session_hint(403, "SESSION_DENIED: refused").contains("--allow"));
        assert!(session_hint(503, "DEVICE_OFFLINE: gw-1").contains("thingport-agent"));
        assert!(session_hint(403, "not permitted").contains("Grant"));
        assert!(session_hint(404, "Thing x not found").contains("thingport things"));
        assert_eq!(session_hint(500, "boom"), "");
    }

    #[test]
    fn session_rows_parse_with_nulls_and_missing_fields() {
        let t = json!({"rows": [{"sessionId": "s-1", "status": "STARTED",
            "terminationCause": null, "credential": "v1.a.b", "bytesTransferred": 5}]});
        let s = RemoteSession::from_table("GetSession", &t).unwrap();
        assert_eq!(s.session_id.as_deref(), Some("s-1"));
        assert_eq!(s.termination_cause, None);
        assert!(!format!("{s:?}").contains("v1.a.b"));
        let e = RemoteSession::from_table("GetSession", &json!({"rows": []})).unwrap_err();
        assert!(e.to_string().contains("no session row"));
        assert!(RemoteSession::from_table("X", &json!({"rows": [{"status": 3}]})).is_err());
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(path_segment("gw-1"), "gw-1");
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
    }
}
