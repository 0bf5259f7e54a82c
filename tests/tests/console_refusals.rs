//! Browser consoles refusing bad input (SPEC §11), at the WebSocket level against the real
//! server, GAS and agent, with this test playing the browser (no Chromium): tickets used twice,
//! at the wrong GAS or as raw tunnel credentials (and the reverse), upgrades without the
//! subprotocol, first messages that are no hello (or none within 10 s), control messages that
//! are too big or make no sense on a live console, a browser that leaves, an endpoint nobody
//! listens on, and who may start which kind of session.
//!
//! The live target is an in-test Telnet-ish server on 127.0.0.1:0: it swallows Telnet option
//! negotiation, prints a banner and echoes what it is sent (the GAS's Telnet layer passes data
//! bytes through).

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use thingport_e2e::clients::{running, Running};
use thingport_e2e::consoles::T;
use thingport_e2e::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const CONSOLE_PROTOCOL: &str = "thingport-console.v1";
const BANNER: &str = "echo-ready";

/// A Telnet-ish server on 127.0.0.1:0: prints [`BANNER`], then echoes data bytes and drops
/// Telnet commands (`IAC x`, `IAC WILL/WONT/DO/DONT opt`, `IAC SB ... IAC SE`).
async fn echo_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("echo address");
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if s.write_all(format!("{BANNER}\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                let mut buf = [0u8; 4096];
                // 0: data, 1: after IAC, 2: option byte, 3: in SB, 4: IAC in SB.
                let mut state = 0u8;
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let mut out = Vec::with_capacity(n);
                    for &b in &buf[..n] {
                        state = match (state, b) {
                            (0, 255) => 1,
                            (0, b) => {
                                out.push(b);
                                0
                            }
                            (1, 255) => {
                                out.push(255);
                                0
                            }
                            (1, 251..=254) => 2,
                            (1, 250) => 3,
                            (1, _) | (2, _) => 0,
                            (3, 255) => 4,
                            (3, _) => 3,
                            (4, 240) => 0,
                            (4, _) => 3,
                            _ => 0,
                        };
                    }
                    if !out.is_empty() && s.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// A port nobody listens on: one that was bound and released.
async fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("address").port()
}

/// An upgrade that did not happen: its HTTP status and body.
#[derive(Debug)]
struct Refused {
    status: u16,
    body: String,
}

/// Opens a WebSocket to `url` offering `subprotocol` (if any), with extra headers.
async fn ws(url: &str, subprotocol: Option<&str>, headers: &[(&str, &str)]) -> Result<Ws, Refused> {
    let mut req = url.into_client_request().expect("request");
    if let Some(p) = subprotocol {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).unwrap());
    }
    for (k, v) in headers {
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let connected = tokio::time::timeout(T, tokio_tungstenite::connect_async(req))
        .await
        .expect("the upgrade did not finish in time");
    match connected {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(resp)) => Err(Refused {
            status: resp.status().as_u16(),
            body: resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        }),
        Err(e) => panic!("WebSocket connect to {url} failed: {e}"),
    }
}

async fn console(url: &str) -> Ws {
    ws(url, Some(CONSOLE_PROTOCOL), &[])
        .await
        .unwrap_or_else(|r| panic!("console upgrade refused: {r:?}"))
}

fn hello(ticket: &str) -> Message {
    Message::text(json!({"ticket": ticket, "cols": 80, "rows": 24}).to_string())
}

/// What the GAS says next: a text message parsed as JSON, or the close code (with `Value::Null`).
#[derive(Debug)]
enum Said {
    Json(Value),
    Bytes(Vec<u8>),
    Closed(Option<u16>),
}

async fn next(ws: &mut Ws) -> Said {
    loop {
        let m = tokio::time::timeout(T, ws.next())
            .await
            .expect("the GAS said nothing in time");
        match m {
            Some(Ok(Message::Text(t))) => {
                return Said::Json(serde_json::from_str(t.as_str()).unwrap_or_else(|e| {
                    panic!("the GAS's text message is not JSON ({e}): {}", t.as_str())
                }))
            }
            Some(Ok(Message::Binary(b))) => return Said::Bytes(b.to_vec()),
            Some(Ok(Message::Close(f))) => return Said::Closed(f.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Said::Closed(None),
        }
    }
}

/// The next JSON text message (binary terminal output before it is skipped).
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match next(ws).await {
            Said::Json(v) => return v,
            Said::Bytes(_) => continue,
            Said::Closed(code) => panic!("closed ({code:?}) before a text message"),
        }
    }
}

/// Reads to the close frame; answers its code (text and binary messages before it skipped).
async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        if let Said::Closed(code) = next(ws).await {
            return code;
        }
    }
}

/// Expects `{"type":"error","code":code}` whose message contains `needle`, then close `close`.
async fn expect_refusal(ws: &mut Ws, code: &str, needle: &str, close: u16) -> Value {
    let said = next_json(ws).await;
    assert_eq!(said["type"], "error", "{said}");
    assert_eq!(said["code"], code, "{said}");
    let message = said["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains(needle), "{needle:?} not in {said}");
    assert_eq!(close_code(ws).await, Some(close), "after {said}");
    said
}

/// Terminal output until it contains `needle`.
async fn expect_output(ws: &mut Ws, needle: &str) -> String {
    let mut seen = Vec::new();
    let deadline = Instant::now() + T;
    while !String::from_utf8_lossy(&seen).contains(needle) {
        assert!(Instant::now() < deadline, "no {needle:?} in {seen:?}");
        match next(ws).await {
            Said::Bytes(b) => seen.extend(b),
            Said::Json(v) => panic!("{v} while waiting for {needle:?}"),
            Said::Closed(c) => panic!("closed ({c:?}) while waiting for {needle:?}: {seen:?}"),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// A started console: its session, URL and ticket.
struct Started {
    session: String,
    url: String,
    ticket: String,
}

async fn start_console(c: &Client, endpoint: &str) -> Started {
    let r = c
        .call(
            "Things",
            "gw-1",
            "StartConsoleSession",
            json!({"remoteEndpoint": endpoint}),
        )
        .await
        .ok();
    let row = r.row();
    assert_eq!(row["kind"], "console", "{row}");
    let s = |f: &str| {
        row[f]
            .as_str()
            .unwrap_or_else(|| panic!("no {f} in {row}"))
            .to_string()
    };
    Started {
        session: s("sessionId"),
        url: s("consoleUrl"),
        ticket: s("ticket"),
    }
}

/// A console that is `ready`.
async fn ready_console(r: &Running, endpoint: &str) -> (Started, Ws) {
    let started = start_console(&r.site.admin, endpoint).await;
    let mut ws = console(&started.url).await;
    ws.send(hello(&started.ticket)).await.unwrap();
    let ready = next_json(&mut ws).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    (started, ws)
}

async fn wait_cause(r: &Running, id: &str, cause: &str) -> Value {
    let ended = r.site.wait_terminated("gw-1", id, T).await;
    assert_eq!(ended["terminationCause"], cause, "{ended}");
    ended
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_are_single_use_bound_to_their_gas_and_no_tunnel_credentials() {
    let (echo, _task) = echo_server().await;
    let r = running("tel", "TELNET", echo.port()).await;
    let gas2 = r.site.start_gas("gas-2", &[]).await;
    r.site.enable("gas-2").await;
    let console_url = |addr: SocketAddr| format!("ws://{addr}/console");
    let gases = [r.gas.addr(), gas2.addr()];

    // A browser that upgrades and says nothing is refused after 10 s (watched meanwhile).
    let silent = {
        let mut c = console(&console_url(gases[0])).await;
        let t0 = Instant::now();
        tokio::spawn(async move {
            expect_refusal(&mut c, "TICKET_REQUIRED", "no ticket within 10 s", 4401).await;
            t0.elapsed()
        })
    };

    // No subprotocol: a plain HTTP 400 before the upgrade.
    let refused = ws(&console_url(gases[0]), None, &[]).await.unwrap_err();
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.body.contains(CONSOLE_PROTOCOL), "{refused:?}");
    let refused = ws(&console_url(gases[0]), Some("thingport-tunnel.v1"), &[])
        .await
        .unwrap_err();
    assert_eq!(refused.status, 400, "{refused:?}");

    // First messages that are no hello: BAD_MESSAGE, close 4400.
    let started = start_console(&r.site.admin, "tel").await;
    let too_big =
        json!({"ticket": started.ticket, "cols": 80, "rows": 24, "pad": "x".repeat(4096)});
    let bad: [(&str, Message); 5] = [
        ("not JSON", Message::text("hello, GAS")),
        (
            "binary",
            Message::binary(started.ticket.clone().into_bytes()),
        ),
        ("over 4096 bytes", Message::text(too_big.to_string())),
        ("no ticket", Message::text(r#"{"cols":80,"rows":24}"#)),
        ("a number", Message::text("42")),
    ];
    for (what, message) in bad {
        let mut c = console(&started.url).await;
        c.send(message).await.unwrap();
        let said = next_json(&mut c).await;
        assert_eq!(said["code"], "BAD_MESSAGE", "{what}: {said}");
        assert_eq!(said["type"], "error", "{what}: {said}");
        assert_eq!(close_code(&mut c).await, Some(4400), "{what}");
    }

    // The ticket sent to the other GAS is refused there (and stays good where it belongs).
    let own = gases
        .iter()
        .position(|a| started.url == console_url(*a))
        .unwrap_or_else(|| panic!("{} is neither GAS ({gases:?})", started.url));
    let mut other = console(&console_url(gases[1 - own])).await;
    other.send(hello(&started.ticket)).await.unwrap();
    let said = expect_refusal(&mut other, "TICKET_REFUSED", "", 4401).await;
    let why = said["message"].as_str().unwrap();
    assert!(
        why.contains("another GAS") || why.contains("signature is not valid"),
        "{said}"
    );

    // Used once: the console opens. Used twice: refused, "already used".
    let mut first = console(&started.url).await;
    first.send(hello(&started.ticket)).await.unwrap();
    let ready = next_json(&mut first).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    assert_eq!(ready["protocol"], "TELNET", "{ready}");
    expect_output(&mut first, BANNER).await;
    let mut second = console(&started.url).await;
    second.send(hello(&started.ticket)).await.unwrap();
    expect_refusal(&mut second, "TICKET_REFUSED", "already used", 4401).await;
    // The first console is unaffected by the replay.
    first
        .send(Message::binary(b"still-here\r\n".to_vec()))
        .await
        .unwrap();
    expect_output(&mut first, "still-here").await;
    first.close(None).await.unwrap();
    wait_cause(&r, &started.session, "USER_SHUTDOWN").await;

    // A raw tunnel's client credential (StartSession) opens no console.
    let raw = r
        .site
        .admin
        .call(
            "Things",
            "gw-1",
            "StartSession",
            json!({"remoteEndpoint": "tel"}),
        )
        .await
        .ok();
    let raw = raw.row().clone();
    let credential = raw["credential"].as_str().expect("credential").to_string();
    let gas_url = raw["gasUrl"].as_str().expect("gasUrl").to_string();
    let raw_console = format!("{}/console", gas_url.replacen("http", "ws", 1));
    let mut c = console(&raw_console).await;
    c.send(hello(&credential)).await.unwrap();
    expect_refusal(&mut c, "TICKET_REFUSED", "console ticket", 4401).await;

    // A console ticket is no tunnel credential: /tunnel answers 401.
    let fresh = start_console(&r.site.admin, "tel").await;
    let tunnel_url = fresh.url.replace("/console", "/tunnel");
    let bearer = format!("Bearer {}", fresh.ticket);
    let refused = ws(
        &tunnel_url,
        Some("thingport-tunnel.v1"),
        &[("Authorization", bearer.as_str())],
    )
    .await
    .unwrap_err();
    assert_eq!(refused.status, 401, "{refused:?}");
    assert!(refused.body.contains("tunnel credential"), "{refused:?}");
    assert!(!refused.body.contains(&fresh.ticket), "{refused:?}");

    let waited = silent.await.expect("the silent browser's watch");
    assert!(
        waited >= Duration::from_millis(9_500),
        "refused after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_consoles_end_on_bad_control_messages_a_leaving_browser_and_dead_endpoints() {
    let (echo, _task) = echo_server().await;
    let r = running("tel", "TELNET", echo.port()).await;
    let dead = dead_port().await;
    r.site
        .set_endpoints(
            "gw-1",
            &[
                ("tel", "TELNET", "127.0.0.1", echo.port()),
                ("gone-ssh", "SSH", "127.0.0.1", dead),
                ("gone-tel", "TELNET", "127.0.0.1", dead),
            ],
        )
        .await;

    // A live console: data both ways, a resize and pause/resume are taken.
    let (live, mut c) = ready_console(&r, "tel").await;
    expect_output(&mut c, BANNER).await;
    for control in [
        json!({"type": "resize", "cols": 100, "rows": 30}),
        json!({"type": "pause"}),
        json!({"type": "resume"}),
    ] {
        c.send(Message::text(control.to_string())).await.unwrap();
    }
    c.send(Message::binary(b"ping-1\r\n".to_vec()))
        .await
        .unwrap();
    expect_output(&mut c, "ping-1").await;

    // AttachSession on a console session: 409 (only its GAS is its client side).
    r.site
        .admin
        .call(
            "Things",
            "gw-1",
            "AttachSession",
            json!({"sessionId": live.session}),
        )
        .await
        .expect(409);

    // A control message over 1024 bytes: BAD_MESSAGE, close 4400, CONSOLE_ERROR.
    let big = json!({"type": "resize", "cols": 100, "rows": 30, "pad": "x".repeat(1100)});
    c.send(Message::text(big.to_string())).await.unwrap();
    expect_refusal(&mut c, "BAD_MESSAGE", "", 4400).await;
    wait_cause(&r, &live.session, "CONSOLE_ERROR").await;

    // Malformed control messages, each on its own live console.
    for bad in [
        "{not json",
        r#"{"type":"dance"}"#,
        r#"{"type":"resize","cols":"wide","rows":30}"#,
    ] {
        let (s, mut c) = ready_console(&r, "tel").await;
        c.send(Message::text(bad)).await.unwrap();
        expect_refusal(&mut c, "BAD_MESSAGE", "", 4400).await;
        let ended = wait_cause(&r, &s.session, "CONSOLE_ERROR").await;
        assert_eq!(ended["kind"], "console", "{ended}");
    }

    // The browser leaves mid-session (a close frame, or the TCP connection dropped): the
    // session ends as the user's shutdown.
    let (s, mut c) = ready_console(&r, "tel").await;
    expect_output(&mut c, BANNER).await;
    let t0 = Instant::now();
    c.close(None).await.unwrap();
    wait_cause(&r, &s.session, "USER_SHUTDOWN").await;
    eprintln!("closed console ended in {:?}", t0.elapsed());
    let (s, mut c) = ready_console(&r, "tel").await;
    expect_output(&mut c, BANNER).await;
    let t0 = Instant::now();
    drop(c);
    wait_cause(&r, &s.session, "USER_SHUTDOWN").await;
    eprintln!("dropped console ended in {:?}", t0.elapsed());

    // Nobody listens at the endpoint: the browser is told ENDPOINT_UNREACHABLE and the session
    // records it.
    let s = start_console(&r.site.admin, "gone-ssh").await;
    let mut c = console(&s.url).await;
    c.send(hello(&s.ticket)).await.unwrap();
    let said = next_json(&mut c).await;
    assert_eq!(said["type"], "error", "{said}");
    assert_eq!(said["code"], "ENDPOINT_UNREACHABLE", "{said}");
    assert_eq!(close_code(&mut c).await, Some(4500));
    wait_cause(&r, &s.session, "ENDPOINT_UNREACHABLE").await;

    // The same for Telnet, which says `ready` before its stream opens: the browser is told why,
    // the console closes as failed, and the session records ENDPOINT_UNREACHABLE.
    let s = start_console(&r.site.admin, "gone-tel").await;
    let mut c = console(&s.url).await;
    c.send(hello(&s.ticket)).await.unwrap();
    let mut told = Vec::new();
    let code = loop {
        match next(&mut c).await {
            Said::Json(v) => told.push(v),
            Said::Bytes(_) => {}
            Said::Closed(code) => break code,
        }
        assert!(told.len() < 10, "{told:?}");
    };
    assert!(
        told.iter()
            .any(|v| v.to_string().contains("could not reach the endpoint")),
        "{told:?} (close {code:?})"
    );
    assert_eq!(code, Some(4500), "{told:?}");
    wait_cause(&r, &s.session, "ENDPOINT_UNREACHABLE").await;
}

/// A user with visibility, design Read, PropertyRead and ServiceInvoke on `service` of gw-1.
async fn user_invoking(r: &Running, name: &str, service: &str) -> (Client, String) {
    let password = thingport_e2e::unique_secret("ConsolePw");
    let admin = &r.site.admin;
    admin.create_user(name, &password).await.ok();
    admin
        .grant_runtime(
            "Things",
            "gw-1",
            "ServiceInvoke",
            service,
            name,
            "User",
            true,
        )
        .await
        .ok();
    admin
        .grant_runtime("Things", "gw-1", "PropertyRead", "*", name, "User", true)
        .await
        .ok();
    admin
        .grant_design("Things", "gw-1", "Read", name, "User", true)
        .await
        .ok();
    (admin.with_basic(name, &password), password)
}

/// The console page as a signed-in user (cookie session from `/Thingworx/Login`).
async fn console_page(user: &Client, endpoint: &str) -> (u16, String) {
    let (login, cookie) = user.login().await;
    let cookie = cookie.unwrap_or_else(|| panic!("no session cookie: {}", login.text));
    let page = user
        .with_session(&cookie, false)
        .get(&format!("/devices/gw-1/console/{endpoint}"))
        .await;
    (page.status, page.text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_consoles_and_raw_tunnels_are_granted_separately() {
    let (echo, _task) = echo_server().await;
    let r = running("tel", "TELNET", echo.port()).await;

    // May open raw tunnels only: no console, and no console page.
    let (tunnels, _) = user_invoking(&r, "tunnel-user", "StartSession").await;
    tunnels
        .call(
            "Things",
            "gw-1",
            "StartConsoleSession",
            json!({"remoteEndpoint": "tel"}),
        )
        .await
        .expect_error(403, "StartConsoleSession");
    let (status, page) = console_page(&tunnels, "tel").await;
    assert_eq!(status, 403, "{page}");
    let raw = tunnels
        .call(
            "Things",
            "gw-1",
            "StartSession",
            json!({"remoteEndpoint": "tel"}),
        )
        .await
        .ok();
    assert_ne!(raw.row()["kind"], "console", "{}", raw.text);

    // May open consoles only: the console works, StartSession is refused.
    let (consoles, _) = user_invoking(&r, "console-user", "StartConsoleSession").await;
    consoles
        .call(
            "Things",
            "gw-1",
            "StartSession",
            json!({"remoteEndpoint": "tel"}),
        )
        .await
        .expect_error(403, "StartSession");
    let (status, page) = console_page(&consoles, "tel").await;
    assert_eq!(status, 200, "{page}");
    let s = start_console(&consoles, "tel").await;
    let mut c = console(&s.url).await;
    c.send(hello(&s.ticket)).await.unwrap();
    let ready = next_json(&mut c).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    expect_output(&mut c, BANNER).await;
    c.close(None).await.unwrap();
    wait_cause(&r, &s.session, "USER_SHUTDOWN").await;
}
