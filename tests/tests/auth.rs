//! Authentication: Basic, application keys (expiry, deletion, header only), browser sessions and XSRF.

use std::time::Duration;

use serde_json::json;
use thingport_e2e::{now_ms, unique_secret, wait_until, Server};

const NO_CREDENTIALS: &str =
    "authentication required: send an appKey header or HTTP Basic credentials";

#[tokio::test]
async fn missing_credentials_are_401_with_the_documented_message() {
    let server = Server::default_started();
    let anon = server.anonymous();
    for path in [
        "/Thingworx/Things",
        "/Thingworx/Things/T",
        "/Thingworx/Users",
        "/Thingworx/AuditLog",
    ] {
        let resp = anon.get(path).await.expect(401);
        assert_eq!(resp.error(), NO_CREDENTIALS, "{path}");
    }
    anon.create_thing("T", "GenericThing")
        .await
        .expect_error(401, NO_CREDENTIALS);
    assert!(server.admin().names("Things").await.is_empty());
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_the_same_401() {
    let server = Server::default_started();
    let anon = server.anonymous();
    let wrong = unique_secret("WrongPw");
    server.secrets().add(wrong.clone());
    let a = anon
        .with_basic("Administrator", &wrong)
        .get("/Thingworx/Things")
        .await
        .expect_error(401, "invalid credentials");
    let b = anon
        .with_basic("nobody", &wrong)
        .get("/Thingworx/Things")
        .await
        .expect_error(401, "invalid credentials");
    assert_eq!(
        a.error(),
        b.error(),
        "the answer must not tell which users exist"
    );
    anon.with_basic("Administrator", "")
        .get("/Thingworx/Things")
        .await
        .expect(401);
    // A malformed Authorization header is a 401 too, not a 400 or a 500.
    for header in ["Basic !!!notbase64", "Basic ", "Bearer abc", "Basic YWJj"] {
        anon.send(
            reqwest::Method::GET,
            "/Thingworx/Things",
            None,
            None,
            &[("Authorization", header)],
        )
        .await
        .expect(401);
    }
}

#[tokio::test]
async fn wrong_app_key_is_401_and_query_string_keys_are_ignored() {
    let server = Server::default_started();
    let admin = server.admin();
    let key = admin.new_app_key("k", "Administrator").await;
    server
        .with_app_key(&key)
        .get("/Thingworx/Things")
        .await
        .expect(200);

    let mut wrong = key.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    server
        .with_app_key(&wrong)
        .get("/Thingworx/Things")
        .await
        .expect(401);
    server
        .with_app_key("nonsense")
        .get("/Thingworx/Things")
        .await
        .expect(401);
    server
        .with_app_key("")
        .get("/Thingworx/Things")
        .await
        .expect(401);
    // Never in the URL (it ends up in logs).
    server
        .anonymous()
        .get(&format!("/Thingworx/Things?appKey={key}"))
        .await
        .expect(401);
}

#[tokio::test]
async fn expired_app_key_is_401_naming_the_key() {
    let server = Server::default_started();
    let admin = server.admin();
    let resp = admin
        .create_app_key("shortlived", "Administrator", Some(now_ms() + 3_000))
        .await
        .expect(200);
    let key = resp.row()["keyId"].as_str().expect("keyId").to_string();
    let by_key = server.with_app_key(&key);
    by_key.get("/Thingworx/Things").await.expect(200);
    let c = &by_key;
    wait_until(
        Duration::from_secs(20),
        "the key has expired",
        || async move { c.get("/Thingworx/Things").await.status == 401 },
    )
    .await;
    by_key
        .get("/Thingworx/Things")
        .await
        .expect_error(401, "application key 'shortlived' has expired");
}

#[tokio::test]
async fn app_key_list_shows_metadata_but_never_the_key() {
    let server = Server::default_started();
    let admin = server.admin();
    let key = admin.new_app_key("k", "Administrator").await;
    let list = admin.get("/Thingworx/ApplicationKeys").await.expect(200);
    let row = list
        .rows()
        .iter()
        .find(|r| r["name"] == json!("k"))
        .unwrap_or_else(|| panic!("key not listed: {}", list.text));
    assert_eq!(row["user"], json!("Administrator"));
    assert!(!list.text.contains(&key), "key value listed: {}", list.text);
    let meta = admin.get_entity("ApplicationKeys", "k").await.expect(200);
    assert!(
        !meta.text.contains(&key),
        "key value in metadata: {}",
        meta.text
    );
}

#[tokio::test]
async fn deleted_app_key_and_deleted_user_stop_working() {
    let server = Server::default_started();
    let admin = server.admin();
    let key = admin.new_app_key("k", "Administrator").await;
    admin
        .entity_service("DeleteApplicationKey", json!({"name": "k"}))
        .await
        .expect(200);
    server
        .with_app_key(&key)
        .get("/Thingworx/Things")
        .await
        .expect(401);

    let alice = admin.new_user("alice").await;
    let alice_key = admin.new_app_key("alice-key", "alice").await;
    alice.get("/Thingworx/ThingTemplates").await.expect(200);
    server
        .with_app_key(&alice_key)
        .get("/Thingworx/ThingTemplates")
        .await
        .expect(200);
    admin
        .entity_service("DeleteUser", json!({"name": "alice"}))
        .await
        .expect(200);
    server
        .with_app_key(&alice_key)
        .get("/Thingworx/ThingTemplates")
        .await
        .expect(401);
    alice.get("/Thingworx/ThingTemplates").await.expect(401);
}

#[tokio::test]
async fn password_change_takes_effect_at_once() {
    let server = Server::default_started();
    let admin = server.admin();
    let old = unique_secret("OldPw");
    let new = unique_secret("NewPw");
    server.secrets().add(new.clone());
    admin.create_user("alice", &old).await.ok();
    let alice = server.with_basic("alice", &old);
    alice.get("/Thingworx/ThingTemplates").await.expect(200);
    alice
        .call(
            "Users",
            "alice",
            "ChangePassword",
            json!({"oldPassword": "wrong-password-1", "newPassword": new}),
        )
        .await
        .expect_status_in(&[400, 401, 403]);
    alice
        .call(
            "Users",
            "alice",
            "ChangePassword",
            json!({"oldPassword": old, "newPassword": new}),
        )
        .await
        .expect(200);
    server
        .with_basic("alice", &new)
        .get("/Thingworx/ThingTemplates")
        .await
        .expect(200);
    alice
        .get("/Thingworx/ThingTemplates")
        .await
        .expect_error(401, "invalid credentials");

    // An administrator resets it.
    let reset = unique_secret("ResetPw");
    server.secrets().add(reset.clone());
    admin
        .call("Users", "alice", "SetPassword", json!({"password": reset}))
        .await
        .expect(200);
    server
        .with_basic("alice", &reset)
        .get("/Thingworx/ThingTemplates")
        .await
        .expect(200);
    server
        .with_basic("alice", &new)
        .get("/Thingworx/ThingTemplates")
        .await
        .expect(401);
}

#[tokio::test]
async fn session_cookie_writes_need_the_xsrf_header() {
    let server = Server::default_started();
    let admin = server.admin();
    let (login, cookie) = admin.login().await;
    let login = login.ok();
    let cookie =
        cookie.unwrap_or_else(|| panic!("no thingport_session cookie: {:?}", login.headers));
    let set_cookie = login
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("thingport_session="))
        .unwrap()
        .to_string();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(
        set_cookie.to_lowercase().contains("samesite=strict"),
        "{set_cookie}"
    );

    let no_xsrf = server.anonymous().with_session(&cookie, false);
    let with_xsrf = server.anonymous().with_session(&cookie, true);
    // Reading needs no header.
    no_xsrf.get("/Thingworx/Things").await.expect(200);
    // Writing does.
    no_xsrf.create_thing("T", "GenericThing").await.expect(403);
    assert!(admin.names("Things").await.is_empty());
    with_xsrf
        .create_thing("T", "GenericThing")
        .await
        .expect(200);
    with_xsrf
        .add_property("Things", "T", "p", "STRING")
        .await
        .expect(200);
    no_xsrf.set_property("T", "p", json!("x")).await.expect(403);
    with_xsrf
        .set_property("T", "p", json!("x"))
        .await
        .expect(200);
    // A wrong token value is no token.
    no_xsrf
        .send(
            reqwest::Method::PUT,
            "/Thingworx/Things/T/Properties/p",
            Some("application/json"),
            Some(br#"{"p":"y"}"#.to_vec()),
            &[("X-XSRF-TOKEN", "something-else")],
        )
        .await
        .expect(403);
    assert_eq!(
        admin.get_property("T", "p").await.expect(200).row()["p"],
        json!("x")
    );

    // Basic-authenticated writes need no XSRF header.
    admin.create_thing("U", "GenericThing").await.expect(200);

    // Logout ends the session.
    with_xsrf
        .send(reqwest::Method::POST, "/Thingworx/Logout", None, None, &[])
        .await
        .ok();
    no_xsrf.get("/Thingworx/Things").await.expect(401);
}

#[tokio::test]
async fn login_with_wrong_password_sets_no_cookie() {
    let server = Server::default_started();
    let wrong = unique_secret("WrongPw");
    server.secrets().add(wrong.clone());
    let (resp, cookie) = server.with_basic("Administrator", &wrong).login().await;
    resp.expect_error(401, "invalid credentials");
    assert!(cookie.is_none());
    server
        .anonymous()
        .with_session("forged-session-value", true)
        .get("/Thingworx/Things")
        .await
        .expect(401);
}
