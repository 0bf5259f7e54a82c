//! Admission: the checks on a WebSocket upgrade request, run inside the handshake before the
//! `101` is sent, so every refusal is a plain HTTP error with a short JSON body. Tokens never
//! reach a log line or a response.

use crate::relay::{Relay, RelayPhase};
use crate::table::{Ends, Limits, ReserveError, Session};
use crate::Role;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thingport_protocol::tunnel::{self, CredentialError};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};

/// An upgrade refused before it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

impl Refusal {
    /// The HTTP answer: `{"error": "..."}`, and the connection closes.
    pub fn response(&self) -> ErrorResponse {
        let body = serde_json::json!({ "error": self.message }).to_string();
        let mut response = Response::builder()
            .status(self.status)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, body.len())
            .header(header::CONNECTION, "close");
        if self.status == StatusCode::UNAUTHORIZED {
            response = response.header(header::WWW_AUTHENTICATE, "Bearer");
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response = response.header(header::RETRY_AFTER, "5");
        }
        match response.body(Some(body)) {
            Ok(r) => r,
            // Unreachable (every header above is valid), but never panic in a handshake.
            Err(_) => {
                let mut r = ErrorResponse::new(None);
                *r.status_mut() = self.status;
                r
            }
        }
    }
}

/// A side admitted by its credential. It holds its role's reservation (and the session's queue
/// ends for it) until it attaches; dropped before that, it gives the reservation back.
pub(crate) struct Admission {
    relay: Arc<Relay>,
    pub session: Arc<Session>,
    pub role: Role,
    ends: Option<Ends>,
    /// The latest moment to wait for the other side: the pairing timeout or the grant's expiry.
    pub wait_until: Instant,
}

impl Admission {
    /// Takes the queue ends out (the side attached).
    pub fn take_ends(&mut self) -> Option<Ends> {
        self.ends.take()
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(ends) = self.ends.take() {
            self.relay.release(&self.session, self.role, ends);
        }
    }
}

/// Milliseconds since the Unix epoch, as grants count them.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().try_into().unwrap_or(i64::MAX))
}

/// Runs every check on an upgrade request, in the order that leaks least: path, size,
/// subprotocol, service state, credential, GAS name, nonce, role.
pub(crate) fn admit(relay: &Arc<Relay>, req: &Request) -> Result<Admission, Refusal> {
    if req.uri().path() != tunnel::PATH {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            format!("not found: tunnels are served on {}", tunnel::PATH),
        ));
    }
    check_headers(relay, req)?;
    if !offers_subprotocol(req, tunnel::SUBPROTOCOL_V1) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "the WebSocket subprotocol {} must be offered",
                tunnel::SUBPROTOCOL_V1
            ),
        ));
    }
    let token = bearer(req).ok_or_else(|| {
        refuse(
            StatusCode::UNAUTHORIZED,
            "a tunnel credential is required (Authorization: Bearer)",
        )
    })?;
    admit_grant(relay, token, Signer::Tunnel)
}

/// Checks a console upgrade request (the ticket comes later, as the first message): path, size,
/// subprotocol, service state.
pub(crate) fn check_console(relay: &Arc<Relay>, req: &Request) -> Result<(), Refusal> {
    check_headers(relay, req)?;
    if !offers_subprotocol(req, crate::console::frame::SUBPROTOCOL) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "the WebSocket subprotocol {} must be offered",
                crate::console::frame::SUBPROTOCOL
            ),
        ));
    }
    if *relay.state.borrow() != RelayPhase::Running {
        return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, "GAS shutting down"));
    }
    Ok(())
}

/// Which key a grant must be signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signer {
    /// The GAS's key: a tunnel side's credential.
    Tunnel,
    /// The console key derived from it: a browser console's ticket (always the client side).
    Console,
}

fn check_headers(relay: &Arc<Relay>, req: &Request) -> Result<(), Refusal> {
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > relay.config.max_header_bytes {
        return Err(refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request headers exceed {} bytes",
                relay.config.max_header_bytes
            ),
        ));
    }
    Ok(())
}

/// Admits a side by its signed grant: service state, signature, expiry, GAS name, nonce, role.
pub(crate) fn admit_grant(
    relay: &Arc<Relay>,
    token: &str,
    signer: Signer,
) -> Result<Admission, Refusal> {
    if *relay.state.borrow() != RelayPhase::Running {
        return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, "GAS shutting down"));
    }
    let Some(key) = relay.keys.key() else {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "this GAS is not registered with the platform yet; retry later",
        ));
    };
    let key = match signer {
        Signer::Tunnel => key,
        Signer::Console => Arc::from(&tunnel::console_key(&key)[..]),
    };
    let what = match signer {
        Signer::Tunnel => "tunnel credential",
        Signer::Console => "console ticket",
    };
    let now = now_ms();
    let grant = tunnel::verify(token, &key, now).map_err(|e| {
        refuse(
            StatusCode::UNAUTHORIZED,
            match e {
                CredentialError::Malformed => format!("the {what} is malformed"),
                CredentialError::BadSignature => format!("the {what}'s signature is not valid"),
                CredentialError::Expired => format!("the {what} has expired"),
            },
        )
    })?;
    if signer == Signer::Console && grant.role != Role::Client {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "the console ticket is not for a console",
        ));
    }
    if grant.gas != relay.keys.name() {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            format!("the {what} is for another GAS"),
        ));
    }
    let reserved = relay.table().reserve(
        &grant.session,
        grant.role,
        &grant.nonce,
        grant.exp,
        now,
        Limits {
            queue: relay.config.queue,
            max_sessions: relay.config.max_sessions,
        },
    );
    let (session, ends) = reserved.map_err(|e| match e {
        ReserveError::Replayed => refuse(
            StatusCode::UNAUTHORIZED,
            format!("the {what} was already used"),
        ),
        ReserveError::RoleTaken => refuse(
            StatusCode::CONFLICT,
            format!(
                "the {} side of this session is already attached",
                crate::role_name(grant.role)
            ),
        ),
        ReserveError::TooManyNonces => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many tunnel credentials in use; retry later",
        ),
        ReserveError::Closing => refuse(StatusCode::SERVICE_UNAVAILABLE, "GAS shutting down"),
        ReserveError::Full => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "this GAS is at capacity; retry later",
        ),
    })?;
    let left = Duration::from_millis(u64::try_from(grant.exp - now).unwrap_or(0));
    Ok(Admission {
        relay: relay.clone(),
        session,
        role: grant.role,
        ends: Some(ends),
        wait_until: Instant::now() + left.min(relay.config.pairing_timeout),
    })
}

/// Whether `Sec-WebSocket-Protocol` (one header or several, comma-separated) offers `ours`.
fn offers_subprotocol(req: &Request, ours: &str) -> bool {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == ours)
}

/// The token of `Authorization: Bearer <token>` (the scheme is case-insensitive).
fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Adds a subprotocol to the `101` answer.
pub(crate) fn accept_response(mut response: Response, subprotocol: &'static str) -> Response {
    response.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(subprotocol),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder().uri("/tunnel");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn bearer_and_subprotocol_parsing() {
        let r = request(&[
            ("authorization", "bearer  abc "),
            ("sec-websocket-protocol", "other, thingport-tunnel.v1"),
        ]);
        assert_eq!(bearer(&r), Some("abc"));
        assert!(offers_subprotocol(&r, tunnel::SUBPROTOCOL_V1));
        let r = request(&[
            ("authorization", "Basic abc"),
            ("sec-websocket-protocol", "thingport-tunnel.v2"),
        ]);
        assert_eq!(bearer(&r), None);
        assert!(!offers_subprotocol(&r, tunnel::SUBPROTOCOL_V1));
        assert_eq!(bearer(&request(&[("authorization", "Bearer ")])), None);
    }

    #[test]
    fn refusals_are_json_with_a_length() {
        let r = refuse(StatusCode::CONFLICT, "taken \"x\"").response();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        let body = r.body().clone().unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "taken \"x\"");
        assert_eq!(
            r.headers()[header::CONTENT_LENGTH],
            body.len().to_string().as_str()
        );
    }

    /// A relay named `gas-1` with `key`, for the ticket checks.
    fn relay(key: &[u8]) -> Arc<Relay> {
        let keys = Arc::new(crate::KeyCell::new("gas-1"));
        keys.set(key);
        Relay::new(keys, crate::RelayConfig::default(), None).unwrap()
    }

    fn grant(session: &str, role: Role, gas: &str, exp: i64, nonce: &str) -> tunnel::Grant {
        tunnel::Grant {
            session: session.into(),
            role,
            gas: gas.into(),
            exp,
            nonce: nonce.into(),
        }
    }

    fn refused(r: Result<Admission, Refusal>) -> Refusal {
        match r {
            Ok(_) => panic!("admitted"),
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn console_tickets_and_tunnel_credentials_do_not_open_each_other() {
        let key = [9u8; 32];
        let relay = relay(&key);
        let later = now_ms() + 30_000;
        let console = tunnel::console_key(&key);
        // A console ticket: admitted at /console once, then "already used".
        let ticket = tunnel::sign(&grant("s1", Role::Client, "gas-1", later, "n1"), &console);
        let admitted = admit_grant(&relay, &ticket, Signer::Console).unwrap();
        assert_eq!(admitted.role, Role::Client);
        drop(admitted);
        let again = refused(admit_grant(&relay, &ticket, Signer::Console));
        assert_eq!(again.status, StatusCode::UNAUTHORIZED);
        assert_eq!(again.message, "the console ticket was already used");
        // The same ticket as a tunnel credential: a bad signature (other key).
        let ticket = tunnel::sign(&grant("s2", Role::Client, "gas-1", later, "n2"), &console);
        let as_tunnel = refused(admit_grant(&relay, &ticket, Signer::Tunnel));
        assert_eq!(
            as_tunnel.message,
            "the tunnel credential's signature is not valid"
        );
        // A tunnel credential at /console: refused the same way.
        let credential = tunnel::sign(&grant("s3", Role::Client, "gas-1", later, "n3"), &key);
        let as_console = refused(admit_grant(&relay, &credential, Signer::Console));
        assert_eq!(
            as_console.message,
            "the console ticket's signature is not valid"
        );
        // An agent grant signed with the console key is no console.
        let agent = tunnel::sign(&grant("s4", Role::Agent, "gas-1", later, "n4"), &console);
        let not_console = refused(admit_grant(&relay, &agent, Signer::Console));
        assert_eq!(
            not_console.message,
            "the console ticket is not for a console"
        );
        // Another GAS's name, an expired ticket, garbage.
        let foreign = tunnel::sign(&grant("s5", Role::Client, "gas-2", later, "n5"), &console);
        let foreign = refused(admit_grant(&relay, &foreign, Signer::Console));
        assert_eq!(foreign.status, StatusCode::FORBIDDEN);
        assert_eq!(foreign.message, "the console ticket is for another GAS");
        let old = now_ms() - 60_000;
        let expired = tunnel::sign(&grant("s6", Role::Client, "gas-1", old, "n6"), &console);
        let expired = refused(admit_grant(&relay, &expired, Signer::Console));
        assert_eq!(expired.message, "the console ticket has expired");
        for junk in ["", "v1", "v1.x.y", "a.b.c.d", &"v1.".repeat(2000)] {
            let e = refused(admit_grant(&relay, junk, Signer::Console));
            assert_eq!(e.status, StatusCode::UNAUTHORIZED, "{junk:.20}");
            assert!(!e.message.contains(junk) || junk.is_empty(), "{e:?}");
        }
    }
}
