//! The tunnel protocol, version 1 (`thingport-tunnel.v1`): how the Remote Access Client and the
//! agent carry TCP connections through a Global Access Server.
//!
//! Each side of a session opens one WebSocket to the GAS (`/tunnel`, subprotocol
//! [`SUBPROTOCOL_V1`]) with a credential ([`Grant`], signed by the platform) in the header
//! `Authorization: Bearer <token>`. The GAS pairs the `client` side and the `agent` side of a
//! session and relays binary messages between them unchanged; it never opens a connection itself
//! and never learns a target from the client (the agent dials the endpoint the platform named).
//!
//! Every binary message is one frame: a 5-byte header, `kind: u8` and `stream: u32` (big endian),
//! then the payload. Streams are the TCP connections of the session; the client numbers them
//! (1, 2, 3, ...; never reused within a session).
//!
//! | kind | from | payload | meaning |
//! |---|---|---|---|
//! | `OPEN` 1 | client | empty | a new TCP connection: the agent dials the session's endpoint |
//! | `OPENED` 2 | agent | empty | the endpoint accepted |
//! | `OPEN_FAILED` 3 | agent | UTF-8 reason | the dial failed (refused, timed out, not allowed) |
//! | `DATA` 4 | both | 1 to [`MAX_DATA`] bytes | bytes of the stream |
//! | `CREDIT` 5 | both | `u32` big endian | the receiver consumed that many bytes: the sender may send as many more |
//! | `FIN` 6 | both | empty | the sender will send no more on the stream (TCP half-close) |
//! | `RESET` 7 | both | UTF-8 reason | the stream is aborted in both directions |
//!
//! Flow control is per stream and per direction: a sender may have at most [`INITIAL_WINDOW`]
//! bytes of `DATA` not yet acknowledged by `CREDIT`. So a stalled stream holds at most one window
//! in the relays and never blocks its siblings on the shared WebSocket. A stream is done when
//! both sides sent `FIN` (or either sent `RESET`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// The WebSocket subprotocol of this version.
pub const SUBPROTOCOL_V1: &str = "thingport-tunnel.v1";
/// The path the GAS serves tunnels on.
pub const PATH: &str = "/tunnel";
/// Where browsers open consoles on a GAS (a WebSocket; the first message carries the ticket).
pub const CONSOLE_PATH: &str = "/console";

/// The key console tickets are signed with, derived from the GAS's key: a console ticket is a
/// [`Grant`] (role `client`) signed with this key instead, so it is refused at [`PATH`] (a
/// browser console grant is not a raw tunnel) and a tunnel credential is refused at
/// [`CONSOLE_PATH`].
pub fn console_key(key: &[u8]) -> [u8; 32] {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&k, b"thingport console ticket v1");
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}
/// Bytes of frame header.
pub const HEADER_LEN: usize = 5;
/// The most payload bytes in one `DATA` frame.
pub const MAX_DATA: usize = 64 * 1024;
/// The largest frame (header and payload) either side accepts.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_DATA;
/// Unacknowledged `DATA` bytes a sender may have in flight per stream.
pub const INITIAL_WINDOW: u32 = 256 * 1024;
/// The longest reason carried by `OPEN_FAILED` or `RESET`.
pub const MAX_REASON: usize = 256;

/// What a frame says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Open,
    Opened,
    OpenFailed,
    Data,
    Credit,
    Fin,
    Reset,
}

impl Kind {
    pub fn to_u8(self) -> u8 {
        match self {
            Kind::Open => 1,
            Kind::Opened => 2,
            Kind::OpenFailed => 3,
            Kind::Data => 4,
            Kind::Credit => 5,
            Kind::Fin => 6,
            Kind::Reset => 7,
        }
    }

    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Open,
            2 => Kind::Opened,
            3 => Kind::OpenFailed,
            4 => Kind::Data,
            5 => Kind::Credit,
            6 => Kind::Fin,
            7 => Kind::Reset,
            _ => return None,
        })
    }
}

/// A decoded frame, borrowing its payload from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: Kind,
    pub stream: u32,
    pub payload: &'a [u8],
}

/// Why a frame was refused; the peer is sent `RESET` (for a stream) or the WebSocket is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    Short(usize),
    UnknownKind(u8),
    TooLarge(usize),
    ZeroStream,
    BadPayload(Kind, usize),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Short(n) => write!(f, "a frame of {n} bytes is shorter than its header"),
            FrameError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            FrameError::TooLarge(n) => {
                write!(f, "a frame of {n} bytes exceeds the limit of {MAX_FRAME}")
            }
            FrameError::ZeroStream => write!(f, "stream 0 does not exist"),
            FrameError::BadPayload(k, n) => {
                write!(f, "a {k:?} frame cannot carry {n} payload bytes")
            }
        }
    }
}

impl std::error::Error for FrameError {}

impl<'a> Frame<'a> {
    /// Decodes one binary message, checking the payload each kind allows.
    pub fn parse(message: &'a [u8]) -> Result<Frame<'a>, FrameError> {
        if message.len() < HEADER_LEN {
            return Err(FrameError::Short(message.len()));
        }
        if message.len() > MAX_FRAME {
            return Err(FrameError::TooLarge(message.len()));
        }
        let kind = Kind::from_u8(message[0]).ok_or(FrameError::UnknownKind(message[0]))?;
        let stream = u32::from_be_bytes([message[1], message[2], message[3], message[4]]);
        if stream == 0 {
            return Err(FrameError::ZeroStream);
        }
        let payload = &message[HEADER_LEN..];
        let ok = match kind {
            Kind::Open | Kind::Opened | Kind::Fin => payload.is_empty(),
            Kind::Data => !payload.is_empty(),
            Kind::Credit => payload.len() == 4,
            Kind::OpenFailed | Kind::Reset => payload.len() <= MAX_REASON,
        };
        if !ok {
            return Err(FrameError::BadPayload(kind, payload.len()));
        }
        Ok(Frame {
            kind,
            stream,
            payload,
        })
    }

    /// The credit a `CREDIT` frame grants (0 for other kinds).
    pub fn credit(&self) -> u32 {
        match (self.kind, self.payload) {
            (Kind::Credit, [a, b, c, d]) => u32::from_be_bytes([*a, *b, *c, *d]),
            _ => 0,
        }
    }

    /// The reason of `OPEN_FAILED` / `RESET`, lossily decoded.
    pub fn reason(&self) -> String {
        String::from_utf8_lossy(self.payload).into_owned()
    }
}

/// The header of a frame, to write in front of a payload already in place (so `DATA` frames are
/// built in one reusable buffer without copying the payload twice).
pub fn header(kind: Kind, stream: u32) -> [u8; HEADER_LEN] {
    let s = stream.to_be_bytes();
    [kind.to_u8(), s[0], s[1], s[2], s[3]]
}

/// Appends a whole frame to `out` (for control frames; `DATA` uses [`header`] in place).
pub fn write_frame(out: &mut Vec<u8>, kind: Kind, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&header(kind, stream));
    out.extend_from_slice(payload);
}

/// A `CREDIT` frame.
pub fn credit_frame(stream: u32, bytes: u32) -> [u8; HEADER_LEN + 4] {
    let h = header(Kind::Credit, stream);
    let b = bytes.to_be_bytes();
    [h[0], h[1], h[2], h[3], h[4], b[0], b[1], b[2], b[3]]
}

/// A frame with a reason (`OPEN_FAILED`, `RESET`), the reason cut to [`MAX_REASON`] bytes.
pub fn reason_frame(kind: Kind, stream: u32, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = Vec::with_capacity(HEADER_LEN + end);
    write_frame(&mut out, kind, stream, &reason.as_bytes()[..end]);
    out
}

/// Which side of a session a credential admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The Remote Access Client (`thingport connect`).
    Client,
    /// The device's agent.
    Agent,
}

/// What a tunnel credential grants: one side of one session on one GAS, until `exp` (ms since
/// the Unix epoch). `nonce` makes every credential unique, so the GAS can refuse a replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub session: String,
    pub role: Role,
    pub gas: String,
    pub exp: i64,
    pub nonce: String,
}

/// Why a credential was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialError {
    Malformed,
    BadSignature,
    Expired,
}

impl std::fmt::Display for CredentialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CredentialError::Malformed => "the tunnel credential is malformed",
            CredentialError::BadSignature => "the tunnel credential's signature is not valid",
            CredentialError::Expired => "the tunnel credential has expired",
        })
    }
}

impl std::error::Error for CredentialError {}

/// The longest credential accepted (a token is about 250 bytes).
pub const MAX_CREDENTIAL: usize = 2048;
/// The longest lifetime a grant may claim: a GAS keeps each nonce until its grant expires, so a
/// far-future `exp` would pin memory. The platform issues grants for 60 s.
pub const MAX_GRANT_LIFETIME_MS: i64 = 10 * 60 * 1000;
/// Clock difference between the platform and a GAS tolerated at expiry checks (keep clocks in
/// sync with NTP; this only absorbs small drift).
pub const CLOCK_SKEW_MS: i64 = 5_000;
/// The longest `session` and `nonce` accepted (they key the GAS's tables).
pub const MAX_ID_LEN: usize = 128;

/// Signs a grant with the GAS's key: `v1.<base64url(JSON)>.<base64url(HMAC-SHA256)>`.
pub fn sign(grant: &Grant, key: &[u8]) -> String {
    let json = serde_json::to_vec(grant).expect("a grant of strings and integers always encodes");
    let body = URL_SAFE_NO_PAD.encode(json);
    let signed = format!("v1.{body}");
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&k, signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// Checks a credential's signature (in constant time), expiry (with [`CLOCK_SKEW_MS`] of leeway),
/// lifetime (at most [`MAX_GRANT_LIFETIME_MS`] ahead) and field sizes; returns its grant. The
/// grant's role says which side it admits; the caller still checks the GAS name and that the
/// nonce was not used before.
pub fn verify(token: &str, key: &[u8], now_ms: i64) -> Result<Grant, CredentialError> {
    if token.len() > MAX_CREDENTIAL {
        return Err(CredentialError::Malformed);
    }
    let (signed, tag) = token.rsplit_once('.').ok_or(CredentialError::Malformed)?;
    let body = signed
        .strip_prefix("v1.")
        .ok_or(CredentialError::Malformed)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| CredentialError::Malformed)?;
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::verify(&k, signed.as_bytes(), &tag).map_err(|_| CredentialError::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| CredentialError::Malformed)?;
    let grant: Grant = serde_json::from_slice(&json).map_err(|_| CredentialError::Malformed)?;
    if grant.session.is_empty()
        || grant.session.len() > MAX_ID_LEN
        || grant.nonce.is_empty()
        || grant.nonce.len() > MAX_ID_LEN
        || grant.exp > now_ms + MAX_GRANT_LIFETIME_MS + CLOCK_SKEW_MS
    {
        return Err(CredentialError::Malformed);
    }
    if grant.exp + CLOCK_SKEW_MS <= now_ms {
        return Err(CredentialError::Expired);
    }
    Ok(grant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_named() {
        let mut out = Vec::new();
        write_frame(&mut out, Kind::Data, 7, b"hello");
        let f = Frame::parse(&out).unwrap();
        assert_eq!(
            (f.kind, f.stream, f.payload),
            (Kind::Data, 7, &b"hello"[..])
        );
        let c = credit_frame(9, 65_536);
        let f = Frame::parse(&c).unwrap();
        assert_eq!((f.kind, f.stream, f.credit()), (Kind::Credit, 9, 65_536));
        let r = reason_frame(Kind::Reset, 3, &"é".repeat(300));
        let f = Frame::parse(&r).unwrap();
        assert!(f.reason().len() <= MAX_REASON && f.reason().chars().all(|c| c == 'é'));

        assert_eq!(Frame::parse(&[4, 0, 0]), Err(FrameError::Short(3)));
        assert_eq!(
            Frame::parse(&[9, 0, 0, 0, 1]),
            Err(FrameError::UnknownKind(9))
        );
        assert_eq!(Frame::parse(&[1, 0, 0, 0, 0]), Err(FrameError::ZeroStream));
        assert_eq!(
            Frame::parse(&[4, 0, 0, 0, 1]),
            Err(FrameError::BadPayload(Kind::Data, 0))
        );
        assert_eq!(
            Frame::parse(&[5, 0, 0, 0, 1, 1]),
            Err(FrameError::BadPayload(Kind::Credit, 1))
        );
        let big = vec![4u8; MAX_FRAME + 1];
        assert_eq!(Frame::parse(&big), Err(FrameError::TooLarge(MAX_FRAME + 1)));
        let mut max = vec![0u8; MAX_FRAME];
        max[..HEADER_LEN].copy_from_slice(&header(Kind::Data, 1));
        assert_eq!(Frame::parse(&max).unwrap().payload.len(), MAX_DATA);
    }

    fn grant(exp: i64) -> Grant {
        Grant {
            session: "s-1".into(),
            role: Role::Client,
            gas: "gas-1".into(),
            exp,
            nonce: "n-1".into(),
        }
    }

    #[test]
    fn credentials_verify_and_refuse_forgery_tampering_and_expiry() {
        let key = b"0123456789abcdef0123456789abcdef";
        let token = sign(&grant(2_000), key);
        assert_eq!(verify(&token, key, 1_000).unwrap(), grant(2_000));
        // Within the clock skew it still passes; beyond it, it has expired.
        assert!(verify(&token, key, 2_000 + CLOCK_SKEW_MS - 1).is_ok());
        assert_eq!(
            verify(&token, key, 2_000 + CLOCK_SKEW_MS),
            Err(CredentialError::Expired)
        );
        // A grant claiming a far-future expiry is refused (it would pin the GAS's memory).
        let far = sign(
            &grant(1_000 + MAX_GRANT_LIFETIME_MS + CLOCK_SKEW_MS + 1),
            key,
        );
        assert_eq!(verify(&far, key, 1_000), Err(CredentialError::Malformed));
        let long = sign(
            &Grant {
                nonce: "n".repeat(MAX_ID_LEN + 1),
                ..grant(2_000)
            },
            key,
        );
        assert_eq!(verify(&long, key, 1_000), Err(CredentialError::Malformed));
        assert_eq!(
            verify(&token, b"another key", 1_000),
            Err(CredentialError::BadSignature)
        );
        // Changing the body (say, the role) breaks the signature.
        let forged_body = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Grant {
                role: Role::Agent,
                ..grant(2_000)
            })
            .unwrap(),
        );
        let tag = token.rsplit_once('.').unwrap().1;
        let forged = format!("v1.{forged_body}.{tag}");
        assert_eq!(
            verify(&forged, key, 1_000),
            Err(CredentialError::BadSignature)
        );
        for junk in ["", "v1", "v1.x", "v2.a.b", "v1.!!.!!", &"a".repeat(5000)] {
            assert!(verify(junk, key, 1_000).is_err(), "{junk:?}");
        }
    }
}
