//! Upgrades the relay refuses before the WebSocket exists: each one an HTTP error with a JSON
//! body, and none of them disturbs the sessions that are admitted.

mod common;

use common::*;
use thingport_gas::{EventKind, Role};
use thingport_protocol::tunnel::{self, Grant, Kind};

async fn refused(gas: &Gas, token: Option<&str>) -> Refused {
    match open(&gas.url(tunnel::PATH), token, true).await {
        Ok(_) => panic!("the upgrade was admitted"),
        Err(r) => r,
    }
}

#[tokio::test]
async fn bad_credentials_are_refused_with_401() {
    let gas = Gas::start(quick()).await;
    let s = session_id("creds");

    let r = refused(&gas, None).await;
    assert_eq!(r.status, 401);
    assert!(r.error.contains("credential is required"), "{}", r.error);

    let forged = tunnel::sign(&grant(&s, Role::Client), b"not the GAS key");
    let r = refused(&gas, Some(&forged)).await;
    assert_eq!(
        (r.status, r.error.as_str()),
        (401, "the tunnel credential's signature is not valid")
    );

    let expired = tunnel::sign(
        &Grant {
            exp: 1_000,
            ..grant(&s, Role::Client)
        },
        KEY,
    );
    let r = refused(&gas, Some(&expired)).await;
    assert_eq!(
        (r.status, r.error.as_str()),
        (401, "the tunnel credential has expired")
    );

    let r = refused(&gas, Some("v1.garbage")).await;
    assert_eq!(
        (r.status, r.error.as_str()),
        (401, "the tunnel credential is malformed")
    );
    let r = refused(&gas, Some(&"a".repeat(tunnel::MAX_CREDENTIAL + 1))).await;
    assert_eq!(r.status, 401);
    assert_eq!(gas.relay.waiting(), 0);
}

#[tokio::test]
async fn a_replayed_credential_is_refused() {
    let gas = Gas::start(quick()).await;
    let s = session_id("replay");
    let token = token(&s, Role::Client);
    let _first = open(&gas.url(tunnel::PATH), Some(&token), true)
        .await
        .unwrap();
    let r = refused(&gas, Some(&token)).await;
    assert_eq!(
        (r.status, r.error.as_str()),
        (401, "the tunnel credential was already used")
    );
    // Also once the first side is gone.
    drop(_first);
    let r = refused(&gas, Some(&token)).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn a_credential_for_another_gas_is_refused_with_403() {
    let gas = Gas::start(quick()).await;
    let other = tunnel::sign(
        &Grant {
            gas: "gas-elsewhere".into(),
            ..grant(&session_id("other"), Role::Agent)
        },
        KEY,
    );
    let r = refused(&gas, Some(&other)).await;
    assert_eq!(
        (r.status, r.error.as_str()),
        (403, "the tunnel credential is for another GAS")
    );
}

#[tokio::test]
async fn a_role_attached_twice_is_refused_with_409_and_the_session_goes_on() {
    let gas = Gas::start(quick()).await;
    let s = session_id("twice");
    let (mut client, mut agent) = pair(&gas, &s).await;
    let r = refused(&gas, Some(&token(&s, Role::Client))).await;
    assert_eq!(
        (r.status, r.error.as_str()),
        (409, "the client side of this session is already attached")
    );
    let r = refused(&gas, Some(&token(&s, Role::Agent))).await;
    assert_eq!(r.status, 409);
    // While one side waits, a second one of its role is refused too.
    let lone = session_id("twice-lone");
    let _waiting = attach(&gas, &lone, Role::Agent).await;
    assert_eq!(
        refused(&gas, Some(&token(&lone, Role::Agent))).await.status,
        409
    );

    let f = frame(Kind::Data, 1, b"unharmed");
    send(&mut client, f.clone()).await;
    assert_eq!(recv(&mut agent).await, f);
}

#[tokio::test]
async fn the_subprotocol_and_the_path_are_required() {
    let gas = Gas::start(quick()).await;
    let token = token(&session_id("proto"), Role::Client);
    let r = open(&gas.url(tunnel::PATH), Some(&token), false)
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.error.contains(tunnel::SUBPROTOCOL_V1), "{}", r.error);
    let r = open(&gas.url("/elsewhere"), Some(&token), true)
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 404);
    // Neither refusal used the credential up.
    open(&gas.url(tunnel::PATH), Some(&token), true)
        .await
        .unwrap();
}

#[tokio::test]
async fn without_a_key_every_upgrade_is_refused_with_503_until_registration() {
    let gas = Gas::start_without_key(quick()).await;
    let mut events = gas.relay.events();
    let s = session_id("nokey");
    let token = token(&s, Role::Client);
    let r = refused(&gas, Some(&token)).await;
    assert_eq!(r.status, 503);
    assert!(r.error.contains("not registered"), "{}", r.error);
    // The refusal did not use the credential up: it works once the key is there.
    gas.keys.set(KEY);
    open(&gas.url(tunnel::PATH), Some(&token), true)
        .await
        .unwrap();
    assert_eq!(
        wait_event(&mut events, &s, |_| true).await,
        EventKind::SideAttached(Role::Client)
    );
}

#[tokio::test]
async fn oversized_headers_are_refused_with_431() {
    let gas = Gas::start(quick()).await;
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            gas.url(tunnel::PATH),
        )
        .unwrap();
    request
        .headers_mut()
        .insert("x-padding", "p".repeat(9 * 1024).parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 431),
        other => panic!("expected 431, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_connection_that_never_completes_its_handshake_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gas = Gas::start(thingport_gas::RelayConfig {
        handshake_timeout: std::time::Duration::from_millis(200),
        ..quick()
    })
    .await;
    let mut tcp = tokio::net::TcpStream::connect(gas.addr).await.unwrap();
    tcp.write_all(b"GET /tunnel HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(DEADLINE, tcp.read(&mut buf))
        .await
        .expect("the relay hangs up");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn a_new_session_beyond_max_sessions_is_refused_with_503_without_using_its_credential() {
    let gas = Gas::start(thingport_gas::RelayConfig {
        max_sessions: 1,
        ..quick()
    })
    .await;
    let first = session_id("first");
    let client = attach(&gas, &first, Role::Client).await;
    let second = session_id("second");
    let token = token(&second, Role::Client);
    let r = refused(&gas, Some(&token)).await;
    assert_eq!(r.status, 503);
    assert!(r.error.contains("at capacity"), "{}", r.error);
    // The second side of a live session is still admitted, and listed live.
    let _agent = attach(&gas, &first, Role::Agent).await;
    until("the session is paired", || gas.relay.sessions() == 1).await;
    let live = gas.relay.live_sessions(10);
    assert_eq!(live.len(), 1);
    assert!(live[0].paired && *live[0].session == first);
    // Once the first session is gone, the refused credential is admitted (it was not used).
    drop(client);
    until("the first session ended", || {
        gas.relay.live_sessions(10).is_empty()
    })
    .await;
    let _second = open(&gas.url(tunnel::PATH), Some(&token), true)
        .await
        .expect("admitted once there is room");
}
