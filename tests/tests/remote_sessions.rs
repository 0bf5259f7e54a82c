//! Remote sessions end to end with the real binaries over real sockets: `thingport-server` with
//! CSE and RAE, `thingport-gas`, `thingport-agent` and the RAC (`thingport connect`). A session
//! carries eight concurrent connections byte-exact; every way a session can fail or end is
//! driven for real (refusals, a closed target port, the GAS, the agent or the client killed, the
//! platform restarted, the GAS restarted, inactivity) and checked in the records, the audit trail
//! and what the client prints.

use futures_util::StreamExt;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use thingport_e2e::fleet::wait_connected;
use thingport_e2e::remote::{connect_local, rac_env, Gas, Proc, Site};
use thingport_e2e::Agent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Sends `data` through `addr` and reads it all back (the far end echoes).
async fn round_trip(addr: SocketAddr, data: Vec<u8>) -> bool {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), r.read_to_end(&mut back)).await;
    writer.await.unwrap();
    read.is_ok() && back == data
}

/// A site with device `gw-1` (endpoint `echo` → a local echo server), GAS `gas-1` running and
/// enabled, and the device's agent connected.
struct Running {
    site: Site,
    gas: Gas,
    agent: Agent,
}

async fn running() -> Running {
    let site = Site::start(&["gw-1"]).await;
    let echo = echo_server().await;
    site.set_endpoints("gw-1", &[("echo", "TCP", "127.0.0.1", echo.port())])
        .await;
    let gas = site.start_gas("gas-1", &[]).await;
    site.enable("gas-1").await;
    let agent = Agent::start(&site.url(), &site.fleet.key, &["gw-1"], &[]);
    wait_connected(&site.admin, "gw-1", true, Duration::from_secs(15)).await;
    Running { site, gas, agent }
}

/// The newest session of `thing`.
async fn newest_session(site: &Site, thing: &str) -> String {
    let r = site
        .admin
        .call("Things", thing, "GetSessions", json!({}))
        .await
        .ok();
    r.rows()[0]["sessionId"].as_str().unwrap().to_string()
}

/// `thingport connect ...` that is expected to fail: its exit code and stderr.
fn rac_fails(site: &Site, args: &[&str]) -> (Option<i32>, String) {
    let env = rac_env(site);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut p = Proc::spawn("thingport", args, &env, false);
    let status = p.wait_exit(Duration::from_secs(30));
    (status.code(), p.log())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_carries_eight_connections_byte_exact_and_ends_user_shutdown() {
    let r = running().await;
    let site = &r.site;
    let mut rac = connect_local(site, "gw-1", "echo");
    let local = rac.addr.unwrap();
    let id = newest_session(site, "gw-1").await;
    let results: Vec<bool> = futures_util::stream::iter(0..8usize)
        .map(|i| {
            let data: Vec<u8> = (0..512 * 1024 + i * 131)
                .map(|b| (b * 7 + i) as u8)
                .collect();
            round_trip(local, data)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(results.iter().all(|ok| *ok), "{results:?}");
    let total: u64 = (0..8u64).map(|i| 2 * (512 * 1024 + i * 131)).sum();
    let started = site
        .wait_status("gw-1", &id, "STARTED", Duration::from_secs(20))
        .await;
    assert_eq!(started["remoteServer"], json!("gas-1"));
    assert!(started["startTime"].as_i64().is_some(), "{started}");

    // Ctrl-C (SIGINT) ends the session USER_SHUTDOWN and the client exits 0.
    let status = rac.signal_and_wait("-INT", Duration::from_secs(15));
    assert!(status.success(), "{status:?}; log:\n{}", rac.log());
    let ended = site
        .wait_terminated("gw-1", &id, Duration::from_secs(15))
        .await;
    assert_eq!(ended["terminationCause"], json!("USER_SHUTDOWN"), "{ended}");
    // The GAS's final count reaches the record.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let row = site.session("gw-1", &id).await;
        if row["bytesTransferred"].as_u64().unwrap_or(0) >= total {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bytes {row} < {total}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let audit = site.remote_access_audit().await;
    for needle in [
        format!("session {id} created by operator"),
        format!("session {id} terminated (USER_SHUTDOWN): Thing gw-1, endpoint echo, GAS gas-1"),
        "GAS gas-1 registered for the first time".to_string(),
    ] {
        assert!(
            audit.iter().any(|m| m.contains(&needle)),
            "{needle}: {audit:?}"
        );
    }
    drop(r.gas);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_prints_one_line_per_refusal() {
    let site = Site::start(&["gw-1"]).await;
    let echo = echo_server().await;
    site.set_endpoints("gw-1", &[("echo", "TCP", "127.0.0.1", echo.port())])
        .await;
    let connect = ["connect", "gw-1", "echo", "--local", "127.0.0.1:0"];
    let (code, log) = rac_fails(&site, &connect);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("DEVICE_OFFLINE"), "{log}");

    let mut agent = Agent::start(&site.url(), &site.fleet.key, &["gw-1"], &[]);
    wait_connected(&site.admin, "gw-1", true, Duration::from_secs(15)).await;
    let (code, log) = rac_fails(&site, &connect);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("NO_SERVERS"), "{log}");

    let _gas = site.start_gas("gas-1", &[]).await;
    site.enable("gas-1").await;
    let (code, log) = rac_fails(&site, &["connect", "gw-1", "vnc", "--local", "127.0.0.1:0"]);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("no endpoint 'vnc'"), "{log}");

    // The agent refuses: remote access disabled, then an endpoint outside --allow.
    for extra in [
        &["--disable-remote-access"][..],
        &["--allow", "127.0.0.1:1"][..],
    ] {
        agent.kill9();
        wait_connected(&site.admin, "gw-1", false, Duration::from_secs(15)).await;
        agent = Agent::start(&site.url(), &site.fleet.key, &["gw-1"], extra);
        wait_connected(&site.admin, "gw-1", true, Duration::from_secs(15)).await;
        let (code, log) = rac_fails(&site, &connect);
        assert_eq!(code, Some(1), "{extra:?}: {log}");
        assert!(log.contains("SESSION_DENIED"), "{extra:?}: {log}");
    }
    let denied = site
        .admin
        .call(
            "Subsystems",
            "RemoteAccessSubsystem",
            "GetSessions",
            json!({"thingName": "gw-1"}),
        )
        .await
        .ok();
    let causes: Vec<&str> = denied
        .rows()
        .iter()
        .filter_map(|r| r["terminationCause"].as_str())
        .collect();
    assert!(
        causes.iter().filter(|c| **c == "SESSION_DENIED").count() >= 2,
        "{causes:?}"
    );
    assert!(causes.contains(&"NO_SERVERS"), "{causes:?}");

    // A user without the permissions gets the platform's refusal.
    let stranger_pw = thingport_e2e::unique_secret("StrangerPw");
    site.admin.create_user("stranger", &stranger_pw).await.ok();
    let mut p = Proc::spawn(
        "thingport",
        &connect,
        &[
            ("THINGPORT_URL", site.url().as_str()),
            ("THINGPORT_USER", "stranger"),
            ("THINGPORT_PASSWORD", stranger_pw.as_str()),
        ],
        false,
    );
    assert_eq!(p.wait_exit(Duration::from_secs(30)).code(), Some(1));
    assert!(p.log().contains("Not authorized"), "{}", p.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_target_port_fails_that_connection_only() {
    let r = running().await;
    let site = &r.site;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    site.set_endpoints("gw-1", &[("dead", "TCP", "127.0.0.1", closed.port())])
        .await;
    let rac = connect_local(site, "gw-1", "dead");
    let id = newest_session(site, "gw-1").await;
    let mut s = TcpStream::connect(rac.addr.unwrap()).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf))
        .await
        .expect("the failed connection is closed");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    rac.wait_log("refused", Duration::from_secs(10));
    // The session itself goes on.
    let row = site.session("gw-1", &id).await;
    assert_ne!(row["status"], json!("TERMINATED"), "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_killed_mid_session_ends_it_device_shutdown() {
    let mut r = running().await;
    let site = &r.site;
    let mut rac = connect_local(site, "gw-1", "echo");
    let id = newest_session(site, "gw-1").await;
    assert!(round_trip(rac.addr.unwrap(), b"hello".to_vec()).await);
    r.agent.kill9();
    let row = site
        .wait_terminated("gw-1", &id, Duration::from_secs(30))
        .await;
    assert_eq!(row["terminationCause"], json!("DEVICE_SHUTDOWN"), "{row}");
    let status = rac.wait_exit(Duration::from_secs(70));
    assert_eq!(status.code(), Some(1));
    assert!(rac.log().contains("DEVICE_SHUTDOWN"), "{}", rac.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_vanishing_ends_the_session_abandoned() {
    let r = running().await;
    let site = &r.site;
    let mut rac = connect_local(site, "gw-1", "echo");
    let id = newest_session(site, "gw-1").await;
    assert!(round_trip(rac.addr.unwrap(), b"hello".to_vec()).await);
    rac.kill9();
    let row = site
        .wait_terminated("gw-1", &id, Duration::from_secs(70))
        .await;
    assert_eq!(row["terminationCause"], json!("ABANDONED"), "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gas_killed_mid_session_ends_it_server_lost_within_60_s() {
    let mut r = running().await;
    let site = &r.site;
    let mut rac = connect_local(site, "gw-1", "echo");
    let id = newest_session(site, "gw-1").await;
    assert!(round_trip(rac.addr.unwrap(), b"hello".to_vec()).await);
    let killed = std::time::Instant::now();
    r.gas.proc.kill9();
    let row = site
        .wait_terminated("gw-1", &id, Duration::from_secs(60))
        .await;
    assert_eq!(row["terminationCause"], json!("SERVER_LOST"), "{row}");
    assert!(killed.elapsed() < Duration::from_secs(60));
    site.wait_gas_connected("gas-1", false, Duration::from_secs(5))
        .await;
    let status = rac.wait_exit(Duration::from_secs(70));
    assert_eq!(status.code(), Some(1));
    assert!(rac.log().contains("SERVER_LOST"), "{}", rac.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_restart_does_not_cut_live_tunnels() {
    let mut r = running().await;
    let rac = connect_local(&r.site, "gw-1", "echo");
    let local = rac.addr.unwrap();
    let id = newest_session(&r.site, "gw-1").await;
    assert!(round_trip(local, vec![7u8; 100_000]).await);
    r.site
        .wait_status("gw-1", &id, "STARTED", Duration::from_secs(20))
        .await;
    r.site.fleet.server.restart_on_same_port();
    // The tunnel does not go through the platform: it keeps flowing.
    assert!(round_trip(local, vec![9u8; 100_000]).await);
    // The GAS registers again and reports the session: the record stays STARTED beyond the
    // recovery window's first sweeps, then ends normally.
    r.site
        .wait_gas_connected("gas-1", true, Duration::from_secs(30))
        .await;
    r.gas.proc.wait_log("registered", Duration::from_secs(30));
    let row = r.site.session("gw-1", &id).await;
    assert_eq!(row["status"], json!("STARTED"), "{row}");
    r.site
        .operator
        .call("Things", "gw-1", "EndSession", json!({"sessionId": id}))
        .await
        .ok();
    let row = r
        .site
        .wait_terminated("gw-1", &id, Duration::from_secs(10))
        .await;
    assert_eq!(row["terminationCause"], json!("USER_SHUTDOWN"), "{row}");
    // The GAS closes it at its next heartbeat (or the agent at once).
    let mut s = TcpStream::connect(local).await;
    if let Ok(s) = s.as_mut() {
        let mut buf = [0u8; 4];
        let _ = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await;
    }
    drop(rac);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gas_restart_re_registers_and_keeps_its_enabled_flag() {
    let mut r = running().await;
    r.gas.proc.kill9();
    r.site
        .wait_gas_connected("gas-1", false, Duration::from_secs(40))
        .await;
    let _again = r.site.start_gas("gas-1", &[]).await;
    let flag = r
        .site
        .admin
        .get_property("gas-1", "enabledForRemoteSessions")
        .await
        .ok();
    assert_eq!(flag.row()["enabledForRemoteSessions"], json!(true));
    let rac = connect_local(&r.site, "gw-1", "echo");
    assert!(round_trip(rac.addr.unwrap(), b"after a GAS restart".to_vec()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_ends_abandoned_after_the_inactivity_timeout() {
    let r = running().await;
    let site = &r.site;
    site.admin
        .call(
            "Subsystems",
            "RemoteAccessSubsystem",
            "SetConfigurationTable",
            json!({"configurationTable": "Settings",
                   "values": {"rows": [{"inactiveSessionTimeoutMinutes": 1}]}}),
        )
        .await
        .ok();
    let mut rac = connect_local(site, "gw-1", "echo");
    let id = newest_session(site, "gw-1").await;
    let row: Value = site
        .wait_terminated("gw-1", &id, Duration::from_secs(90))
        .await;
    assert_eq!(row["terminationCause"], json!("ABANDONED"), "{row}");
    let status = rac.wait_exit(Duration::from_secs(70));
    assert_eq!(status.code(), Some(1), "{}", rac.log());
}

/// The web console's Connect starts a session; `thingport connect --session ID` attaches the
/// Remote Access Client to that very session (a fresh client credential from `AttachSession`),
/// only for its creator and only once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_attaches_to_a_session_started_elsewhere_with_session() {
    let r = running().await;
    let site = &r.site;
    let row = site.start_session("gw-1", "echo").await.ok();
    let id = row.row()["sessionId"].as_str().unwrap().to_string();
    assert_eq!(row.row()["status"], "CREATED");
    // Another endpoint's name, and another user, are refused with one line each.
    let (code, log) = rac_fails(
        site,
        &["connect", "gw-1", "other", "--session", &id, "--stdio"],
    );
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(&format!("session {id} is for endpoint 'echo', not 'other'")),
        "{log}"
    );
    site.admin.create_user("someone", "Someone-Pw-1").await.ok();
    let someone = site.admin.with_basic("someone", "Someone-Pw-1");
    site.admin
        .grant_runtime(
            "Things",
            "gw-1",
            "ServiceInvoke",
            "AttachSession",
            "someone",
            "User",
            true,
        )
        .await
        .ok();
    someone
        .call("Things", "gw-1", "AttachSession", json!({"sessionId": id}))
        .await
        .expect_error(403, "started by another user");

    let env = rac_env(site);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut rac = Proc::spawn(
        "thingport",
        &[
            "connect",
            "gw-1",
            "echo",
            "--session",
            &id,
            "--local",
            "127.0.0.1:0",
        ],
        &env,
        true,
    );
    let data: Vec<u8> = (0..100_000u32).map(|b| (b % 251) as u8).collect();
    assert!(round_trip(rac.addr.unwrap(), data).await);
    site.wait_status("gw-1", &id, "STARTED", Duration::from_secs(20))
        .await;
    assert_eq!(
        newest_session(site, "gw-1").await,
        id,
        "no second session was started"
    );
    // Started: a second attach is refused.
    let (code, log) = rac_fails(
        site,
        &["connect", "gw-1", "echo", "--session", &id, "--stdio"],
    );
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("only a session waiting for its client (CREATED)"),
        "{log}"
    );
    rac.signal_and_wait("-TERM", Duration::from_secs(20));
    let ended = site
        .wait_terminated("gw-1", &id, Duration::from_secs(20))
        .await;
    assert_eq!(ended["terminationCause"], "USER_SHUTDOWN");
}
