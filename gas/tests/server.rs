//! The GAS server in-process ([`thingport_gas::Server`]) against a fake platform: registration,
//! heartbeats with live byte counts, session reports, re-registration after a 404, sessions
//! ended by the platform, and a platform that is not there at first.

mod common;
mod platform;

use common::{closed, frame, open, recv, send, session_id, Ws, GAS};
use platform::{FakePlatform, APP_KEY};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thingport_gas::{AppKey, GasConfig, Relay, Role, Server};
use thingport_protocol::gas::{end_causes, SessionReport};
use thingport_protocol::tunnel::{self, Grant, Kind};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A configuration for tests: a free port, quick retries, a short drain.
fn config(platform_url: &str) -> GasConfig {
    let mut c = GasConfig::new(platform_url, AppKey::new(APP_KEY).unwrap(), GAS).unwrap();
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.capacity = 50;
    c.timing.min_backoff = Duration::from_millis(50);
    c.timing.max_backoff = Duration::from_millis(300);
    c.timing.request_timeout = Duration::from_secs(5);
    c.relay.drain = Duration::from_millis(300);
    c.relay.close_timeout = Duration::from_secs(2);
    c
}

/// A GAS server running in this process.
struct Running {
    addr: SocketAddr,
    relay: Arc<Relay>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn start(config: GasConfig) -> Running {
        let server = Server::bind(config).await.expect("bind");
        let addr = server.local_addr();
        let relay = server.relay().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            relay,
            stop: Some(stop),
            task,
        }
    }

    fn tunnel_url(&self) -> String {
        format!("ws://{}{}", self.addr, tunnel::PATH)
    }

    /// Shuts down and waits (with a deadline) for `run` to return.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(platform::DEADLINE, self.task)
            .await
            .expect("the server stops in time")
            .unwrap()
            .expect("run returns Ok");
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A credential for one side, signed with `key`.
fn token(key: &[u8], session: &str, role: Role) -> String {
    let grant = Grant {
        session: session.into(),
        role,
        gas: GAS.into(),
        exp: now_ms() + 60_000,
        nonce: session_id("nonce"),
    };
    tunnel::sign(&grant, key)
}

async fn attach(gas: &Running, key: &[u8], session: &str, role: Role) -> Ws {
    open(&gas.tunnel_url(), Some(&token(key, session, role)), true)
        .await
        .unwrap_or_else(|r| panic!("{role:?} of {session} refused: {r:?}"))
}

/// Both sides of a session, paired (a frame went each way).
async fn pair(gas: &Running, key: &[u8], session: &str) -> (Ws, Ws) {
    let mut client = attach(gas, key, session, Role::Client).await;
    let mut agent = attach(gas, key, session, Role::Agent).await;
    send(&mut client, frame(Kind::Open, 1, b"")).await;
    assert_eq!(recv(&mut agent).await, frame(Kind::Open, 1, b""));
    send(&mut agent, frame(Kind::Opened, 1, b"")).await;
    assert_eq!(recv(&mut client).await, frame(Kind::Opened, 1, b""));
    (client, agent)
}

/// The reports of `session`, in order.
fn reports_of(fake: &FakePlatform, session: &str) -> Vec<SessionReport> {
    fake.with(|r| {
        r.reports
            .iter()
            .filter(|e| match e {
                SessionReport::Attached { session: s, .. }
                | SessionReport::Started { session: s }
                | SessionReport::Ended { session: s, .. } => s == session,
            })
            .cloned()
            .collect()
    })
}

#[tokio::test]
async fn registers_heartbeats_and_reports_a_relayed_session() {
    let fake = FakePlatform::start().await;
    let gas = Running::start(config(&fake.url())).await;
    fake.until("registered", |r| !r.registrations.is_empty())
        .await;
    let reg = fake.with(|r| r.registrations[0].clone());
    assert_eq!(reg.name, GAS);
    assert_eq!(reg.public_url, format!("http://{}", gas.addr));
    assert!(reg.version.starts_with("thingport-gas "), "{}", reg.version);
    assert_eq!(reg.capacity, 50);
    assert!(fake.with(|r| r.app_keys.iter().all(|k| k == APP_KEY)));
    let key = fake.key().unwrap();

    let session = session_id("relayed");
    let (mut client, mut agent) = pair(&gas, &key, &session).await;
    let up = vec![7u8; 3000];
    let down = vec![9u8; 1200];
    send(&mut client, frame(Kind::Data, 1, &up)).await;
    assert_eq!(recv(&mut agent).await, frame(Kind::Data, 1, &up));
    send(&mut agent, frame(Kind::Data, 1, &down)).await;
    assert_eq!(recv(&mut client).await, frame(Kind::Data, 1, &down));

    // Heartbeats list the live session with its byte counts so far.
    fake.until("a heartbeat shows the live bytes", |r| {
        r.heartbeats.iter().any(|h| {
            h.healthy
                && h.name == GAS
                && h.sessions.iter().any(|s| {
                    s.session == session && s.paired && s.bytes_up == 3000 && s.bytes_down == 1200
                })
        })
    })
    .await;

    client.close(None).await.unwrap();
    match fake.ended(&session).await {
        SessionReport::Ended {
            cause,
            role,
            detail,
            bytes_up,
            bytes_down,
            ..
        } => {
            assert_eq!(cause, end_causes::CLOSED);
            assert_eq!(role.as_deref(), Some("client"));
            assert_eq!(detail, "");
            assert_eq!((bytes_up, bytes_down), (3000, 1200));
        }
        other => panic!("{other:?}"),
    }
    let reports = reports_of(&fake, &session);
    assert_eq!(
        reports[..3],
        [
            SessionReport::Attached {
                session: session.clone(),
                role: "client".into()
            },
            SessionReport::Attached {
                session: session.clone(),
                role: "agent".into()
            },
            SessionReport::Started {
                session: session.clone()
            },
        ]
    );
    assert_eq!(reports.len(), 4);
    let frame = closed(&mut agent).await;
    assert_eq!(frame.code, CloseCode::Normal);
    // The session is gone from the heartbeats.
    fake.until("a heartbeat without the session", |r| {
        r.heartbeats.last().is_some_and(|h| h.sessions.is_empty())
    })
    .await;
    gas.stop().await;
}

#[tokio::test]
async fn an_unknown_registration_registers_again_with_a_new_key() {
    let fake = FakePlatform::start().await;
    let gas = Running::start(config(&fake.url())).await;
    fake.until("registered", |r| !r.registrations.is_empty())
        .await;
    let old = fake.key().unwrap();
    // A session paired under the old key keeps flowing across the re-registration.
    let session = session_id("across");
    let (mut client, mut agent) = pair(&gas, &old, &session).await;

    fake.forget();
    fake.until("registered again", |r| r.registrations.len() >= 2)
        .await;
    assert!(fake.with(|r| r
        .refused
        .iter()
        .any(|(s, code)| s == "Heartbeat" && *code == 404)));
    let new = fake.key().unwrap();
    assert_ne!(old, new);
    // The relay may still hold the old key for a moment after the platform issued the new one.
    fake.until("heartbeats under the new registration", |r| {
        r.heartbeats.iter().any(|h| h.registration == "reg-2")
    })
    .await;

    let refused = open(
        &gas.tunnel_url(),
        Some(&token(&old, &session_id("old"), Role::Client)),
        true,
    )
    .await
    .expect_err("a credential signed with the old key is refused");
    assert_eq!(refused.status, 401, "{}", refused.error);
    let (_c, _a) = pair(&gas, &new, &session_id("new")).await;

    send(&mut client, frame(Kind::Data, 1, b"still here")).await;
    assert_eq!(recv(&mut agent).await, frame(Kind::Data, 1, b"still here"));
    // The live session is in the heartbeats of the new registration.
    fake.until("the old session in a new heartbeat", |r| {
        r.heartbeats
            .iter()
            .any(|h| h.registration == "reg-2" && h.sessions.iter().any(|s| s.session == session))
    })
    .await;
    gas.stop().await;
}

#[tokio::test]
async fn sessions_the_platform_ended_are_closed_and_reported() {
    let fake = FakePlatform::start().await;
    let gas = Running::start(config(&fake.url())).await;
    fake.until("registered", |r| !r.registrations.is_empty())
        .await;
    let key = fake.key().unwrap();
    let session = session_id("ended");
    let (mut client, mut agent) = pair(&gas, &key, &session).await;
    send(&mut client, frame(Kind::Data, 1, b"abc")).await;
    assert_eq!(recv(&mut agent).await, frame(Kind::Data, 1, b"abc"));

    fake.end_next(&session);
    fake.end_next("not-a-session-here");
    for ws in [&mut client, &mut agent] {
        let f = closed(ws).await;
        assert_eq!(f.code, CloseCode::Normal);
        assert_eq!(f.reason.as_str(), "the platform ended the session");
    }
    match fake.ended(&session).await {
        SessionReport::Ended {
            cause,
            role,
            bytes_up,
            ..
        } => {
            assert_eq!(cause, end_causes::ENDED_BY_PLATFORM);
            assert_eq!(role, None);
            assert_eq!(bytes_up, 3);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(gas.relay.sessions(), 0);
    gas.stop().await;
}

#[tokio::test]
async fn an_absent_platform_is_retried_until_it_appears() {
    // At first, the platform's port takes connections and drops them at once: every attempt
    // fails, and we count them.
    let dropper = thingport_gas::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = dropper.local_addr().unwrap();
    let gas = Running::start(config(&format!("http://{addr}"))).await;
    for attempt in 1..=3 {
        let accepted = tokio::time::timeout(platform::DEADLINE, dropper.accept()).await;
        let (conn, _) = accepted
            .unwrap_or_else(|_| panic!("attempt {attempt} in time"))
            .unwrap();
        drop(conn);
    }
    // Meanwhile the GAS serves, but admits no side: it has no key.
    let refused = open(
        &gas.tunnel_url(),
        Some(&token(&[1; 32], "s", Role::Client)),
        true,
    )
    .await
    .expect_err("refused before registration");
    assert_eq!(refused.status, 503);
    assert!(
        refused.error.contains("not registered"),
        "{}",
        refused.error
    );
    drop(dropper);

    // The platform comes up, first refusing (maxServers), then accepting.
    let fake = FakePlatform::start_on(addr, 2).await;
    fake.until("registered", |r| r.registrations.len() == 1)
        .await;
    assert_eq!(
        fake.with(|r| r.refused.clone()),
        [
            ("RegisterServer".to_string(), 409),
            ("RegisterServer".to_string(), 409)
        ]
    );
    let key = fake.key().unwrap();
    let session = session_id("late");
    let (_client, _agent) = pair(&gas, &key, &session).await;
    fake.until("the session is reported started", |r| {
        r.reports
            .iter()
            .any(|e| matches!(e, SessionReport::Started { session: s } if *s == session))
    })
    .await;
    gas.stop().await;
}

#[tokio::test]
async fn reports_wait_for_the_platform_and_are_not_lost() {
    let fake = FakePlatform::start().await;
    let gas = Running::start(config(&fake.url())).await;
    fake.until("registered", |r| !r.registrations.is_empty())
        .await;
    let key = fake.key().unwrap();
    let mut ids = Vec::new();
    let mut clients = Vec::new();
    let mut agents = Vec::new();
    for _ in 0..3 {
        let session = session_id("queued");
        let (client, agent) = pair(&gas, &key, &session).await;
        clients.push(client);
        agents.push(agent);
        ids.push(session);
    }
    // Sessions end while the platform has forgotten the GAS: their reports are kept, and
    // delivered under the new registration. (The clients' connections just go: LOST.)
    fake.forget();
    drop(clients);
    for session in &ids {
        assert!(matches!(
            fake.ended(session).await,
            SessionReport::Ended { cause, .. } if cause == end_causes::LOST
        ));
        assert_eq!(reports_of(&fake, session).len(), 4, "{session}");
    }
    gas.stop().await;
}

#[tokio::test]
async fn an_https_platform_is_verified_and_tunnels_can_be_wss() {
    let dir = tempfile::tempdir().unwrap();
    common::make_certs(dir.path());
    let acceptor = || {
        thingport_gas::tls::acceptor(&dir.path().join("gas.pem"), &dir.path().join("gas.key"))
            .unwrap()
    };
    let fake = FakePlatform::start_tls(acceptor()).await;

    // Without the CA the platform's certificate is not trusted: registration fails, is retried.
    let untrusting = Running::start(config(&fake.url())).await;
    let deadline = tokio::time::Instant::now() + platform::DEADLINE;
    while fake.tls_failures() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no TLS attempts");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(fake.with(|r| r.registrations.is_empty()));
    untrusting.stop().await;

    // With --ca-file it registers; serving TLS, its public URL is https.
    let mut c = config(&fake.url());
    c.platform_tls.extra_roots =
        thingport_gas::platform::load_ca_file(&dir.path().join("ca.pem")).unwrap();
    c.tls = Some(acceptor());
    let gas = Running::start(c).await;
    fake.until("registered over https", |r| r.registrations.len() == 1)
        .await;
    assert_eq!(
        fake.with(|r| r.registrations[0].public_url.clone()),
        format!("https://{}", gas.addr)
    );
    fake.until("a heartbeat over https", |r| !r.heartbeats.is_empty())
        .await;
    gas.stop().await;

    // --insecure trusts any certificate.
    let mut c = config(&fake.url());
    c.platform_tls.insecure = true;
    let gas = Running::start(c).await;
    fake.until("registered with --insecure", |r| r.registrations.len() == 2)
        .await;
    gas.stop().await;
}
