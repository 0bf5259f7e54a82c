//! The real `thingport-agent` against the real server and ConnectionServicesExtension: binding,
//! Ping, refusals it logs, two agents on one Thing, SIGTERM, kill -9, a server restart and a
//! network cut (a black-hole relay between agent and server).

use serde_json::json;
use std::time::{Duration, Instant};
use thingport_e2e::fleet::{wait_connected, Fleet};
use thingport_e2e::relay::Relay;
use thingport_e2e::{wait_until, wait_until_blocking, Agent};

#[tokio::test]
async fn an_agent_binds_answers_ping_and_stops_cleanly_on_sigterm() {
    let f = Fleet::start(&["gw-1", "gw-2"]).await;
    let mut agent = Agent::start(&f.url(), &f.key, &["gw-1", "gw-2", "ghost"], &[]);
    wait_connected(&f.admin, "gw-1", true, Duration::from_secs(15)).await;
    wait_connected(&f.admin, "gw-2", true, Duration::from_secs(5)).await;
    let r = f.admin.call("Things", "gw-1", "Ping", json!({})).await.ok();
    let answer = &r.row()["result"];
    assert!(
        answer["agent"]
            .as_str()
            .unwrap_or("")
            .starts_with("thingport-agent/"),
        "{}",
        r.text
    );
    assert!(answer["agentTime"].as_i64().unwrap() > 0, "{}", r.text);
    // The refused Thing is logged with its code and reason.
    agent.wait_log("NOT_FOUND", Duration::from_secs(5));
    assert!(agent.log().contains("ghost"), "{}", agent.log());
    // The key never appears in the agent's log.
    assert!(!agent.log().contains(&f.key));
    let status = agent.terminate();
    assert!(status.success(), "exit {status:?}; log:\n{}", agent.log());
    wait_connected(&f.admin, "gw-1", false, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_unknown_key_is_logged_and_retried_not_fatal() {
    let f = Fleet::start(&["gw-1"]).await;
    let mut agent = Agent::start(
        &f.url(),
        "00000000-0000-0000-0000-000000000000",
        &["gw-1"],
        &[],
    );
    // Refused, and refused again: it retries instead of giving up.
    wait_until_blocking(Duration::from_secs(15), "two refused attempts", || {
        agent.log().matches("401").count() >= 2
    });
    assert!(agent.is_running(), "log:\n{}", agent.log());
}

#[tokio::test]
async fn the_newer_agent_wins_and_the_older_logs_why() {
    let f = Fleet::start(&["gw-1"]).await;
    let old = Agent::start(&f.url(), &f.key, &["gw-1"], &[]);
    wait_connected(&f.admin, "gw-1", true, Duration::from_secs(15)).await;
    let _new = Agent::start(&f.url(), &f.key, &["gw-1"], &[]);
    old.wait_log("REPLACED", Duration::from_secs(15));
    // The older agent does not take the Thing back: the serving connection stays the newer one.
    let serving = || async {
        let r = f
            .admin
            .call(
                "Subsystems",
                "ConnectionServicesSubsystem",
                "GetConnectedThings",
                json!({}),
            )
            .await
            .ok();
        r.row()["result"][0]["connection"].clone()
    };
    let first = serving().await;
    let stable_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < stable_until {
        assert_eq!(serving().await, first, "the Thing changed hands again");
    }
    f.admin.call("Things", "gw-1", "Ping", json!({})).await.ok();
}

#[tokio::test]
async fn a_killed_agent_is_marked_disconnected() {
    let f = Fleet::start(&["gw-1"]).await;
    let mut agent = Agent::start(&f.url(), &f.key, &["gw-1"], &[]);
    wait_connected(&f.admin, "gw-1", true, Duration::from_secs(15)).await;
    let killed = Instant::now();
    agent.kill9();
    wait_connected(&f.admin, "gw-1", false, Duration::from_secs(30)).await;
    assert!(killed.elapsed() < Duration::from_secs(30));
    f.admin
        .call("Things", "gw-1", "Ping", json!({}))
        .await
        .expect_error(503, "not connected");
}

#[tokio::test]
async fn agents_come_back_within_30s_after_a_server_restart() {
    let mut f = Fleet::start(&["gw-1", "gw-2", "gw-3"]).await;
    // Default backoff (1 s .. 15 s), as shipped.
    let _agents: Vec<Agent> = ["gw-1", "gw-2", "gw-3"]
        .iter()
        .map(|t| {
            Agent::start(
                &f.url(),
                &f.key,
                &[t],
                &["--min-backoff", "1s", "--max-backoff", "15s"],
            )
        })
        .collect();
    for t in ["gw-1", "gw-2", "gw-3"] {
        wait_connected(&f.admin, t, true, Duration::from_secs(15)).await;
    }
    f.server.restart_on_same_port();
    let restarted = Instant::now();
    let admin = f.server.admin();
    for t in ["gw-1", "gw-2", "gw-3"] {
        wait_connected(&admin, t, true, Duration::from_secs(30)).await;
    }
    assert!(restarted.elapsed() < Duration::from_secs(30));
    admin.call("Things", "gw-2", "Ping", json!({})).await.ok();
    // The graceful stop wrote every disconnect before closing the store: the new instance found
    // no stale flag to clear, and nothing failed on the way out.
    let log = f.server.log();
    assert!(
        !log.contains("were connected when the platform last stopped"),
        "stale isConnected flags after a graceful stop:\n{log}"
    );
    assert!(!log.contains("ERROR"), "errors in the server log:\n{log}");
    f.admin = admin;
}

#[tokio::test]
async fn a_network_cut_is_noticed_within_30s_and_the_agent_recovers() {
    let f = Fleet::start(&["gw-1"]).await;
    let relay = Relay::start(f.server.addr()).await;
    let agent = Agent::start(&format!("http://{}", relay.addr()), &f.key, &["gw-1"], &[]);
    wait_connected(&f.admin, "gw-1", true, Duration::from_secs(15)).await;
    relay.cut();
    let cut = Instant::now();
    wait_connected(&f.admin, "gw-1", false, Duration::from_secs(32)).await;
    let noticed = cut.elapsed();
    assert!(
        noticed <= Duration::from_secs(30),
        "noticed after {noticed:?}"
    );
    // The route comes back: the agent notices its dead link and reconnects by itself.
    relay.restore();
    wait_connected(&f.admin, "gw-1", true, Duration::from_secs(45)).await;
    let admin = f.admin.clone();
    wait_until(
        Duration::from_secs(10),
        "Ping answered after the cut",
        || async { admin.call("Things", "gw-1", "Ping", json!({})).await.status == 200 },
    )
    .await;
    drop(agent);
}
