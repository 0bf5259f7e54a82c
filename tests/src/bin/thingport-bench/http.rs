//! A lean HTTP/1.1 client: one `hyper` client connection per TCP stream, keep-alive, one request
//! in flight per connection. Requests are built from pre-parsed parts so that the load generator
//! spends as little CPU per request as it can.

use anyhow::{bail, Context, Result};
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

pub type Body = Full<Bytes>;

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Credentials sent with every request of a [`Target`].
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    AppKey(String),
    Basic { user: String, password: String },
}

/// Where and as whom requests go; turns (method, path, body) into ready hyper requests.
#[derive(Clone, Debug)]
pub struct Target {
    host: HeaderValue,
    auth: Option<(HeaderName, HeaderValue)>,
}

impl Target {
    pub fn new(addr: SocketAddr, auth: &Auth) -> Result<Self> {
        let auth = match auth {
            Auth::None => None,
            Auth::AppKey(k) => Some((HeaderName::from_static("appkey"), HeaderValue::from_str(k)?)),
            Auth::Basic { user, password } => {
                let b64 =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                Some((
                    AUTHORIZATION,
                    HeaderValue::from_str(&format!("Basic {b64}"))?,
                ))
            }
        };
        Ok(Self {
            host: HeaderValue::from_str(&addr.to_string())?,
            auth,
        })
    }

    /// A `GET` (no body) or, with a body, a JSON `POST`.
    pub fn prepare(&self, path: &str, json_body: Option<&serde_json::Value>) -> Result<Prepared> {
        let uri: Uri = path.parse().with_context(|| format!("bad path {path:?}"))?;
        Ok(Prepared {
            method: if json_body.is_some() {
                Method::POST
            } else {
                Method::GET
            },
            uri,
            body: json_body.map(|v| Bytes::from(v.to_string())),
            target: self.clone(),
        })
    }

    /// A JSON `POST` whose body is given later, per request (e.g. a unique name each time).
    pub fn post_template(&self, path: &str) -> Result<Prepared> {
        self.prepare(path, Some(&serde_json::json!({})))
    }
}

/// A request template: cloned into a hyper request for each send.
#[derive(Clone, Debug)]
pub struct Prepared {
    method: Method,
    uri: Uri,
    body: Option<Bytes>,
    target: Target,
}

impl Prepared {
    pub fn request(&self) -> Request<Body> {
        self.request_with(self.body.clone())
    }

    /// The same request with another JSON body.
    pub fn request_with(&self, body: Option<Bytes>) -> Request<Body> {
        let mut req = Request::new(Full::new(body.clone().unwrap_or_default()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        let h = req.headers_mut();
        h.insert(HOST, self.target.host.clone());
        if let Some((name, value)) = &self.target.auth {
            h.insert(name.clone(), value.clone());
        }
        if body.is_some() {
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        req
    }
}

/// One keep-alive HTTP/1.1 connection.
#[derive(Debug)]
pub struct Conn {
    sender: SendRequest<Body>,
    driver: JoinHandle<()>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .with_context(|| format!("connecting to {addr} timed out"))?
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake failed")?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { sender, driver })
    }

    /// Sends `req` and reads the whole answer, within [`REQUEST_TIMEOUT`].
    pub async fn send(&mut self, req: Request<Body>) -> Result<(StatusCode, Bytes)> {
        let exchange = async {
            self.sender.ready().await.context("connection closed")?;
            let resp = self
                .sender
                .send_request(req)
                .await
                .context("request failed")?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .context("reading the answer failed")?
                .to_bytes();
            anyhow::Ok((status, body))
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => bail!("no answer within {REQUEST_TIMEOUT:?}"),
        }
    }

    /// Sends `req` and returns the answer's head with its whole body (for headers such as
    /// `Set-Cookie`), within [`REQUEST_TIMEOUT`].
    pub async fn send_full(&mut self, req: Request<Body>) -> Result<hyper::Response<Bytes>> {
        let exchange = async {
            self.sender.ready().await.context("connection closed")?;
            let resp = self
                .sender
                .send_request(req)
                .await
                .context("request failed")?;
            let (head, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .context("reading the answer failed")?
                .to_bytes();
            anyhow::Ok(hyper::Response::from_parts(head, body))
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => bail!("no answer within {REQUEST_TIMEOUT:?}"),
        }
    }

    /// Sends a request that must succeed with `200` and a JSON body; returns the body.
    pub async fn call_ok(&mut self, p: &Prepared, what: &str) -> Result<serde_json::Value> {
        let (status, body) = self
            .send(p.request())
            .await
            .with_context(|| what.to_string())?;
        if status != StatusCode::OK {
            bail!("{what}: expected 200, got {status}: {}", snippet(&body));
        }
        serde_json::from_slice(&body)
            .with_context(|| format!("{what}: answer is not JSON: {}", snippet(&body)))
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The start of an answer body, printable, for error messages.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        s.push('…');
    }
    s
}
