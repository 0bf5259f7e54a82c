//! Raw HTTP/1.1 over TCP, for what a well-behaved client cannot send: a `Content-Length` without the
//! body behind it, a body that trickles in, chunked bodies.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A parsed raw answer.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawResponse {
    /// The value of a response header (the first, by case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// The body parsed as JSON (`Value::Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Sends `head` (the request line and headers, ending in an empty line), then `body_parts` one by one
/// (write errors after the head are ignored: the server may answer and close early), and reads the
/// answer. Panics if no complete answer head arrives within `timeout`.
pub async fn raw_request(
    addr: SocketAddr,
    head: &str,
    body_parts: &[&[u8]],
    timeout: Duration,
) -> RawResponse {
    let fut = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect to server");
        stream
            .write_all(head.as_bytes())
            .await
            .expect("write request head");
        for part in body_parts {
            if stream.write_all(part).await.is_err() {
                break;
            }
        }
        let _ = stream.flush().await;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(resp) = parse_complete(&buf) {
                return resp;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        parse_complete(&buf).unwrap_or_else(|| {
            let head_end = find(&buf, b"\r\n\r\n");
            match head_end {
                Some(end) => {
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    RawResponse {
                        status: status_of(&head),
                        head,
                        body: String::from_utf8_lossy(&buf[end + 4..]).into_owned(),
                    }
                }
                None => panic!(
                    "connection closed without an HTTP answer; got {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            }
        })
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(resp) => resp,
        Err(_) => panic!("no HTTP answer within {timeout:?}"),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A complete answer when the head and a `Content-Length` body (or a final chunk) are all in `buf`.
fn parse_complete(buf: &[u8]) -> Option<RawResponse> {
    let end = find(buf, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let rest = &buf[end + 4..];
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let body = if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if rest.len() < len {
            return None;
        }
        String::from_utf8_lossy(&rest[..len]).into_owned()
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        decode_chunked(rest)?
    } else {
        return None;
    };
    Some(RawResponse {
        status: status_of(&head),
        head,
        body,
    })
}

fn decode_chunked(mut data: &[u8]) -> Option<String> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
