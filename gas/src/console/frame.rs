//! The text messages of the console WebSocket (subprotocol [`SUBPROTOCOL`]) between the browser
//! and the GAS: the browser's first message ([`Hello`]: the ticket and the initial terminal size),
//! its later control messages ([`Control`]), and what the GAS tells the browser
//! ([`ServerMessage`]). Terminal and framebuffer bytes travel in binary messages and never pass
//! through here.
//!
//! Everything from the browser is untrusted: each parser bounds the message size before parsing,
//! refuses anything it does not understand with a [`FrameError`] that says what was wrong, and
//! never repeats the ticket (a bearer secret) in an error.

use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;

/// The WebSocket subprotocol a console connection must ask for; bumped when a message changes
/// incompatibly so an old page fails at the upgrade instead of misreading messages.
pub const SUBPROTOCOL: &str = "thingport-console.v1";

/// The largest first message accepted, in bytes: a ticket (at most [`MAX_TICKET`]) and two
/// numbers fit easily; anything larger is not a browser console talking.
pub const MAX_HELLO: usize = 4096;

/// The largest control message accepted, in bytes.
pub const MAX_CONTROL: usize = 1024;

/// The longest ticket accepted, in bytes. Tickets the platform issues are far shorter; the bound
/// keeps a hostile page from making the GAS forward megabytes to the platform.
const MAX_TICKET: usize = 2048;

/// The accepted terminal widths: a 1-column terminal breaks most full-screen programs, and 500
/// columns is beyond any real screen.
const COLS: (u16, u16) = (2, 500);
/// The accepted terminal heights.
const ROWS: (u16, u16) = (1, 300);

/// A terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub cols: u16,
    pub rows: u16,
}

impl Default for Size {
    /// 80×24, the size a console starts with when the browser does not say.
    fn default() -> Size {
        Size { cols: 80, rows: 24 }
    }
}

/// The browser's first message: which session to attach (by ticket) and the terminal size.
#[derive(Clone, PartialEq, Eq)]
pub struct Hello {
    /// The one-time ticket the platform issued for this console; a secret until redeemed.
    pub ticket: String,
    pub size: Size,
}

impl fmt::Debug for Hello {
    /// Redacts the ticket, so that logging a `Hello` never leaks it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hello")
            .field("ticket", &"<redacted>")
            .field("size", &self.size)
            .finish()
    }
}

/// A control message from the browser after the first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// The terminal was resized.
    Resize(Size),
    /// Stop sending output (the page is hidden or its buffer is full).
    Pause,
    /// Send output again.
    Resume,
}

/// Why a browser message was refused. The messages are meant for the browser's user and the log;
/// none of them contains the ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the {what} is {len} bytes; at most {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("the console's first message must be JSON with a ticket")]
    HelloNotJson,
    #[error("the console's first message has no ticket")]
    MissingTicket,
    #[error("the console's ticket must be a string")]
    TicketNotString,
    #[error("the console's ticket is empty")]
    EmptyTicket,
    #[error("the console's ticket is {0} bytes; at most {MAX_TICKET}")]
    TicketTooLong(usize),
    #[error("a control message must be a JSON object with a type")]
    ControlNotJson,
    #[error("the control message has no type")]
    MissingType,
    #[error("unknown control message type {0:?}")]
    UnknownType(String),
    #[error("the {0} message has no {1}")]
    MissingField(&'static str, &'static str),
    #[error("{field} must be a whole number, not {value}")]
    NotInteger { field: &'static str, value: String },
    #[error("{field} {value} is outside {min}..{max}")]
    OutOfRange {
        field: &'static str,
        value: String,
        min: u16,
        max: u16,
    },
}

/// Parses the browser's first message: `{"ticket": "...", "cols": 80, "rows": 24}`, with `cols`
/// and `rows` optional (80×24 when absent) and unknown fields ignored (a newer page may send
/// more).
pub fn parse_hello(text: &str) -> Result<Hello, FrameError> {
    if text.len() > MAX_HELLO {
        return Err(FrameError::TooLarge {
            what: "console's first message",
            len: text.len(),
            max: MAX_HELLO,
        });
    }
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) else {
        return Err(FrameError::HelloNotJson);
    };
    let ticket = match object.get("ticket") {
        None | Some(Value::Null) => return Err(FrameError::MissingTicket),
        Some(Value::String(ticket)) => ticket,
        Some(_) => return Err(FrameError::TicketNotString),
    };
    if ticket.is_empty() {
        return Err(FrameError::EmptyTicket);
    }
    if ticket.len() > MAX_TICKET {
        return Err(FrameError::TicketTooLong(ticket.len()));
    }
    let default = Size::default();
    let size = Size {
        cols: dimension(&object, "cols", COLS)?.unwrap_or(default.cols),
        rows: dimension(&object, "rows", ROWS)?.unwrap_or(default.rows),
    };
    Ok(Hello {
        ticket: ticket.clone(),
        size,
    })
}

/// Parses a control message: `{"type":"resize","cols":C,"rows":R}`, `{"type":"pause"}` or
/// `{"type":"resume"}`. Unknown fields are ignored; an unknown type is refused (by name), since
/// silently dropping it would hide a page/GAS version mismatch.
pub fn parse_control(text: &str) -> Result<Control, FrameError> {
    if text.len() > MAX_CONTROL {
        return Err(FrameError::TooLarge {
            what: "control message",
            len: text.len(),
            max: MAX_CONTROL,
        });
    }
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) else {
        return Err(FrameError::ControlNotJson);
    };
    let kind = match object.get("type") {
        None | Some(Value::Null) => return Err(FrameError::MissingType),
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(FrameError::ControlNotJson),
    };
    match kind {
        "resize" => {
            let cols = dimension(&object, "cols", COLS)?
                .ok_or(FrameError::MissingField("resize", "cols"))?;
            let rows = dimension(&object, "rows", ROWS)?
                .ok_or(FrameError::MissingField("resize", "rows"))?;
            Ok(Control::Resize(Size { cols, rows }))
        }
        "pause" => Ok(Control::Pause),
        "resume" => Ok(Control::Resume),
        other => Err(FrameError::UnknownType(other.chars().take(40).collect())),
    }
}

/// Reads the optional whole-number field `field` of `object` and checks it is within `range`
/// (inclusive). `Ok(None)` when the field is absent or null.
fn dimension(
    object: &Map<String, Value>,
    field: &'static str,
    (min, max): (u16, u16),
) -> Result<Option<u16>, FrameError> {
    let number = match object.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(number)) => number,
        Some(other) => {
            return Err(FrameError::NotInteger {
                field,
                value: describe(other),
            })
        }
    };
    // A float such as 80.0 or 1e3 is refused too: the page sends integers, and accepting
    // fractions would only hide a bug there.
    if number.as_i64().is_none() && number.as_u64().is_none() {
        return Err(FrameError::NotInteger {
            field,
            value: number.to_string(),
        });
    }
    match number.as_u64().and_then(|n| u16::try_from(n).ok()) {
        Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(FrameError::OutOfRange {
            field,
            value: number.to_string(),
            min,
            max,
        }),
    }
}

/// A short description of a JSON value that is not a number, for an error message (never the
/// value itself, which may be long).
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
    .to_string()
}

/// A message from the GAS to the browser, sent as a text WebSocket message in JSON with a `type`
/// field (`ready`, `error`, `hostKey`, `exit`, `closed`) and camelCase fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ServerMessage {
    /// The console is connected to the endpoint; binary messages carry its bytes from now on.
    Ready {
        /// `vnc`, `telnet` or `ssh`: which client the page runs.
        protocol: String,
        /// The remote session's id, for the page to show and for support.
        session: String,
        /// The endpoint's display name.
        endpoint: String,
    },
    /// The console could not be set up or failed; `code` is stable for the page to act on
    /// (e.g. `VNC_AUTH_FAILED`), `message` is for the user.
    Error { code: String, message: String },
    /// The SSH server's host key needs the user's decision: `code` is `HOST_KEY_UNKNOWN` (first
    /// connection) or `HOST_KEY_MISMATCH` (`expected` then holds the fingerprint on record).
    /// `expected` is always present, `null` when there is none.
    HostKey {
        code: String,
        fingerprint: String,
        key: String,
        expected: Option<String>,
    },
    /// The remote program exited with `status`.
    Exit { status: u32 },
    /// The console ended; `reason` is for the user.
    Closed { reason: String },
}

impl ServerMessage {
    /// The message as the JSON text to send.
    pub fn to_json(&self) -> String {
        // Serializing strings and integers into a String cannot fail; the fallback only keeps
        // this free of panics should serde ever disagree.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"INTERNAL","message":"the GAS could not encode its message"}"#
                .to_string()
        })
    }
}

#[cfg(test)]
mod tests;
