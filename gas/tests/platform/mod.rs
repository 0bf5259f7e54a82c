//! A fake platform for the GAS's tests: the three services of `GASRemoteAccessProvider` on
//! `127.0.0.1:0` (axum), answering like the RemoteAccessExtension (InfoTable results, `{"error"}`
//! refusals, 404 for an unknown registration) and recording every call. Tests steer it (forget
//! the registration, end sessions in the next heartbeat reply, refuse registrations) and wait on
//! what it recorded with deadlines.

#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use thingport_protocol::gas::{Heartbeat, RegisterServer, SessionReport, SessionReports};
use tokio::task::JoinHandle;

/// The application key the fake accepts.
pub const APP_KEY: &str = "gas-app-key-1";
/// How long any expectation on the fake may take.
pub const DEADLINE: Duration = Duration::from_secs(15);

#[derive(Debug, Default)]
pub struct Recorded {
    pub registrations: Vec<RegisterServer>,
    pub heartbeats: Vec<Heartbeat>,
    pub reports: Vec<SessionReport>,
    /// Calls refused: (service, status).
    pub refused: Vec<(String, u16)>,
    /// Every `appKey` header seen.
    pub app_keys: Vec<String>,
}

#[derive(Debug)]
struct Inner {
    recorded: Recorded,
    /// The key and id of the current registration.
    current: Option<(Vec<u8>, String)>,
    /// Keys issued so far, oldest first.
    keys: Vec<Vec<u8>>,
    /// Sessions to end in the next heartbeat reply.
    end_next: Vec<String>,
    /// Registrations still to refuse with 409.
    refuse_registrations: u32,
    heartbeat_interval_ms: u64,
}

#[derive(Clone)]
struct Shared(Arc<Mutex<Inner>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct FakePlatform {
    pub addr: SocketAddr,
    /// Serving `https`.
    tls: bool,
    /// TLS handshakes that failed (e.g. the GAS did not trust the certificate).
    tls_failures: Arc<AtomicU64>,
    shared: Shared,
    task: JoinHandle<()>,
}

impl Drop for FakePlatform {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakePlatform {
    /// A fake on a free loopback port.
    pub async fn start() -> FakePlatform {
        FakePlatform::start_on("127.0.0.1:0".parse().unwrap(), 0).await
    }

    /// A fake on `addr` (with `SO_REUSEADDR`, so a port just used can be taken again) that
    /// refuses the first `refuse_registrations` registrations with 409 (maxServers reached).
    pub async fn start_on(addr: SocketAddr, refuse_registrations: u32) -> FakePlatform {
        FakePlatform::serve(addr, refuse_registrations, None).await
    }

    /// A fake serving `https` with `acceptor` on a free loopback port.
    pub async fn start_tls(acceptor: tokio_rustls::TlsAcceptor) -> FakePlatform {
        FakePlatform::serve("127.0.0.1:0".parse().unwrap(), 0, Some(acceptor)).await
    }

    async fn serve(
        addr: SocketAddr,
        refuse_registrations: u32,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> FakePlatform {
        let shared = Shared(Arc::new(Mutex::new(Inner {
            recorded: Recorded::default(),
            current: None,
            keys: Vec::new(),
            end_next: Vec::new(),
            refuse_registrations,
            heartbeat_interval_ms: 100,
        })));
        let app = Router::new()
            .route(
                "/Thingworx/Things/GASRemoteAccessProvider/Services/{service}",
                post(service),
            )
            .with_state(shared.clone());
        let listener = thingport_gas::bind(addr).expect("bind the fake platform");
        let addr = listener.local_addr().unwrap();
        let tls_failures = Arc::new(AtomicU64::new(0));
        let is_tls = tls.is_some();
        let task = match tls {
            None => tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }),
            Some(acceptor) => {
                let listener = TlsListener {
                    tcp: listener,
                    acceptor,
                    failures: tls_failures.clone(),
                };
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                })
            }
        };
        FakePlatform {
            addr,
            tls: is_tls,
            tls_failures,
            shared,
            task,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn tls_failures(&self) -> u64 {
        self.tls_failures.load(Ordering::Relaxed)
    }

    /// A look at what was recorded.
    pub fn with<T>(&self, f: impl FnOnce(&Recorded) -> T) -> T {
        f(&self.shared.lock().recorded)
    }

    /// The key of the current registration.
    pub fn key(&self) -> Option<Vec<u8>> {
        self.shared.lock().current.as_ref().map(|(k, _)| k.clone())
    }

    /// Every key issued, oldest first.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.shared.lock().keys.clone()
    }

    /// Forgets the registration, as a platform restart does: heartbeats and reports get 404.
    pub fn forget(&self) {
        self.shared.lock().current = None;
    }

    /// The next heartbeat reply ends `session`.
    pub fn end_next(&self, session: &str) {
        self.shared.lock().end_next.push(session.into());
    }

    /// Waits until `cond` holds on what was recorded; panics with `what` after the deadline.
    pub async fn until(&self, what: &str, cond: impl Fn(&Recorded) -> bool) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !self.with(&cond) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {what}; recorded: {:#?}",
                self.shared.lock().recorded
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for the `Ended` report of `session` and returns it.
    pub async fn ended(&self, session: &str) -> SessionReport {
        let find = |r: &Recorded| {
            r.reports
                .iter()
                .find(|e| matches!(e, SessionReport::Ended { session: s, .. } if s == session))
                .cloned()
        };
        self.until(&format!("{session} is reported ended"), |r| {
            find(r).is_some()
        })
        .await;
        self.with(find).unwrap()
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The host's InfoTable answer with one row `{result}`.
fn info_table(result: Value) -> Response {
    Json(json!({
        "dataShape": {"fieldDefinitions": {"result": {"name": "result", "baseType": "JSON"}}},
        "rows": [{"result": result}],
    }))
    .into_response()
}

async fn service(
    State(shared): State<Shared>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = headers
        .get("appKey")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut inner = shared.lock();
    inner.recorded.app_keys.push(key.clone());
    let refuse = |inner: &mut Inner, status: StatusCode, message: &str| {
        inner
            .recorded
            .refused
            .push((service.clone(), status.as_u16()));
        error(status, message)
    };
    if key != APP_KEY {
        return refuse(&mut inner, StatusCode::FORBIDDEN, "invalid application key");
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
        return refuse(&mut inner, StatusCode::UNSUPPORTED_MEDIA_TYPE, "JSON only");
    }
    match service.as_str() {
        "RegisterServer" => {
            let Ok(params) = serde_json::from_slice::<RegisterServer>(&body) else {
                return refuse(&mut inner, StatusCode::BAD_REQUEST, "bad RegisterServer");
            };
            if inner.refuse_registrations > 0 {
                inner.refuse_registrations -= 1;
                return refuse(
                    &mut inner,
                    StatusCode::CONFLICT,
                    "maxServers (50) reached: no more GAS Things",
                );
            }
            let mut key = vec![0u8; 32];
            rand::thread_rng().fill_bytes(&mut key);
            let id = format!("reg-{}", inner.keys.len() + 1);
            inner.keys.push(key.clone());
            inner.current = Some((key.clone(), id.clone()));
            inner.recorded.registrations.push(params);
            info_table(json!({
                "registration": id,
                "key": URL_SAFE_NO_PAD.encode(&key),
                "heartbeatIntervalMs": inner.heartbeat_interval_ms,
                "enabled": true,
            }))
        }
        "Heartbeat" => {
            let Ok(beat) = serde_json::from_slice::<Heartbeat>(&body) else {
                return refuse(&mut inner, StatusCode::BAD_REQUEST, "bad Heartbeat");
            };
            if inner.current.as_ref().map(|(_, id)| id) != Some(&beat.registration) {
                return refuse(&mut inner, StatusCode::NOT_FOUND, "unknown registration");
            }
            inner.recorded.heartbeats.push(beat);
            let end = std::mem::take(&mut inner.end_next);
            info_table(json!({ "end": end }))
        }
        "ReportSessionEvents" => {
            let Ok(reports) = serde_json::from_slice::<SessionReports>(&body) else {
                return refuse(
                    &mut inner,
                    StatusCode::BAD_REQUEST,
                    "bad ReportSessionEvents",
                );
            };
            if inner.current.as_ref().map(|(_, id)| id) != Some(&reports.registration) {
                return refuse(&mut inner, StatusCode::NOT_FOUND, "unknown registration");
            }
            assert!(reports.events.len() <= thingport_protocol::gas::MAX_REPORTS);
            inner.recorded.reports.extend(reports.events);
            StatusCode::OK.into_response()
        }
        _ => refuse(&mut inner, StatusCode::NOT_FOUND, "no such service"),
    }
}

/// A TLS listener for axum: the handshake runs in `accept` (one at a time, enough for tests).
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    failures: Arc<AtomicU64>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, peer)) = self.tcp.accept().await else {
                continue;
            };
            let handshake = self.acceptor.accept(tcp);
            match tokio::time::timeout(Duration::from_secs(5), handshake).await {
                Ok(Ok(tls)) => return (tls, peer),
                _ => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
