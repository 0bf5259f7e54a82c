//! Reaching the platform through an HTTP CONNECT proxy (a tiny one written here), with and
//! without Basic authentication.

use crate::common::*;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use thingport_agent::ProxyConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A CONNECT proxy that records each request head and, when `auth` is set, demands
/// `Proxy-Authorization: Basic <auth>`.
pub struct Proxy {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub async fn start(auth: Option<&'static str>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            let mut tunnels = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                tunnels.spawn(tunnel(client, auth, seen.clone()));
            }
        });
        Proxy {
            addr,
            requests,
            task,
        }
    }

    pub fn url(&self, userinfo: &str) -> ProxyConfig {
        ProxyConfig::parse(&format!("http://{userinfo}{}", self.addr), "test").unwrap()
    }
}

async fn tunnel(mut client: TcpStream, auth: Option<&str>, seen: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    seen.lock().unwrap().push(head.clone());
    if let Some(token) = auth {
        let expected = format!("\r\nProxy-Authorization: Basic {token}\r\n");
        if !head.contains(&expected) {
            let _ = client
                .write_all(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                      Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n",
                )
                .await;
            return;
        }
    }
    let target = head
        .strip_prefix("CONNECT ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_default()
        .to_string();
    let Ok(mut upstream) = TcpStream::connect(target.as_str()).await else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_ok()
    {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}

#[tokio::test]
async fn connects_through_a_proxy_without_authentication() {
    let platform = FakePlatform::start(Behaviour::default()).await;
    let proxy = Proxy::start(None).await;
    let mut cfg = config(&platform.http_url(), &["gw"]);
    cfg.proxy = Some(proxy.url(""));
    let agent = Agent::start(cfg);
    let conn = platform.connected(1).await;
    platform.binds(conn, "gw", 1).await;
    let requests = proxy.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let expected = format!(
        "CONNECT {} HTTP/1.1\r\nHost: {}\r\n",
        platform.addr, platform.addr
    );
    assert!(requests[0].starts_with(&expected), "{requests:?}");
    assert!(!requests[0].contains("Proxy-Authorization"));
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn connects_through_a_proxy_with_basic_authentication() {
    let platform = FakePlatform::start(Behaviour::default()).await;
    // base64("agent:s3cr t@x")
    let proxy = Proxy::start(Some("YWdlbnQ6czNjciB0QHg=")).await;
    let mut cfg = config(&platform.http_url(), &["gw"]);
    cfg.proxy = Some(proxy.url("agent:s3cr%20t%40x@"));
    let agent = Agent::start(cfg);
    let conn = platform.connected(1).await;
    platform.binds(conn, "gw", 1).await;
    assert!(
        !agent.logs.text().contains("s3cr"),
        "the proxy password was logged"
    );
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_refusing_proxy_is_reported_with_its_status_line_and_retried() {
    let platform = FakePlatform::start(Behaviour::default()).await;
    let proxy = Proxy::start(Some("YWdlbnQ6cmlnaHQ=")).await;
    let mut cfg = config(&platform.http_url(), &["gw"]);
    cfg.proxy = Some(proxy.url("agent:wrong@"));
    let agent = Agent::start(cfg);
    let line = agent
        .logs
        .wait_for_line(&[
            "WARN",
            "connection failed",
            "HTTP/1.1 407 Proxy Authentication Required",
        ])
        .await;
    assert!(!line.contains("wrong"), "{line}");
    agent
        .logs
        .wait_for_line(&["connection{attempt=2", "407"])
        .await;
    assert!(
        platform.events().is_empty(),
        "nothing may reach the platform"
    );
    agent.stop().await.unwrap();
}
