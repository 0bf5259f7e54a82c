//! The fake platform's REST side: the read of a Thing's `endpoints` property
//! (`GET /Thingworx/Things/{t}/Properties/endpoints` with `appKey`), answered from the
//! [`Behaviour`], and a stream wrapper that replays a request head already read (so an upgrade
//! can go on to the WebSocket handshake).

use crate::common::{Behaviour, Event};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::http::StatusCode;

/// What to do with a plain HTTP request.
pub enum Answer {
    /// Record the event and write these bytes (then close).
    Respond(Event, Vec<u8>),
    /// Record the event and never answer.
    Hang(Event),
}

/// The answer to the request whose head is `head`.
pub fn answer(head: &[u8], behaviour: &Behaviour) -> Answer {
    let text = String::from_utf8_lossy(head).to_string();
    let mut request_line = text.split("\r\n").next().unwrap_or("").split(' ');
    let method = request_line.next().unwrap_or("").to_string();
    let path = request_line.next().unwrap_or("").to_string();
    let header = |name: &str| {
        text.split("\r\n").skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let (app_key, accept) = (header("appKey"), header("Accept"));
    let thing = path
        .strip_prefix("/Thingworx/Things/")
        .and_then(|rest| rest.strip_suffix("/Properties/endpoints"))
        .map(str::to_string);
    let event = |status| Event::Http {
        method: method.clone(),
        path: path.clone(),
        app_key: app_key.clone(),
        accept: accept.clone(),
        status,
    };
    let (status, body) = if app_key.as_deref() != Some(behaviour.app_key.as_str()) {
        (
            401,
            serde_json::json!({"error": "unknown or expired application key"}),
        )
    } else if method != "GET" || thing.is_none() {
        (404, serde_json::json!({"error": "no such resource"}))
    } else if behaviour.endpoints_hang {
        return Answer::Hang(event(0));
    } else if let Some((status, message)) = &behaviour.endpoints_error {
        (*status, serde_json::json!({ "error": message }))
    } else {
        let thing = thing.unwrap_or_default();
        match behaviour.endpoints.get(&thing) {
            Some(value) => (
                200,
                serde_json::json!({"dataShape": {"fieldDefinitions": {"endpoints":
                    {"name": "endpoints", "baseType": "INFOTABLE"}}},
                    "rows": [{"endpoints": value}]}),
            ),
            None => (
                404,
                serde_json::json!({"error": format!("Property Not Found : [endpoints] in [{thing}]")}),
            ),
        }
    };
    let body = body.to_string();
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Status");
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    Answer::Respond(event(status), response.into_bytes())
}

/// A stream that first yields bytes already read from it.
pub struct Prefixed<S> {
    pub head: Vec<u8>,
    pub at: usize,
    pub inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.at < self.head.len() {
            let n = buf.remaining().min(self.head.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.head[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
