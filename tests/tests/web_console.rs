//! The web console end to end in a real headless Chromium (Debian's chromium and chromedriver,
//! over WebDriver) against the real server, GAS and agent: sign-in (and a wrong password), the
//! device list, an endpoint added after an inline validation error, Connect showing the client
//! lines and the session, End, the remote access switch refusing with REMOTE_ACCESS_DISABLED,
//! a grant to a group making the device appear for its member (and a revoke taking it away on
//! the next request), a non-administrator seeing no administration and a forged request refused,
//! the XSRF rule, hostile text shown as text, sign-out. Each step saves a PNG of the page
//! (`target/screenshots/`, shown in docs/web-console.md).

use serde_json::json;
use std::time::Duration;
use thingport_e2e::browser::Browser;
use thingport_e2e::fleet::wait_connected;
use thingport_e2e::remote::Site;
use thingport_e2e::{raw_request, Agent, RawResponse};

const T: Duration = Duration::from_secs(15);

/// One request written by hand (headers the HTTP client would not send as given).
async fn raw(addr: std::net::SocketAddr, request: &str) -> RawResponse {
    raw_request(addr, request, &[], T).await
}

/// A site with a GAS enabled and `gw-1` connected, with an `ssh` endpoint.
async fn site() -> (Site, thingport_e2e::remote::Gas, Agent) {
    let site = Site::start(&["gw-1"]).await;
    site.set_endpoints("gw-1", &[("ssh", "SSH", "127.0.0.1", 22)])
        .await;
    let gas = site.start_gas("gas-1", &[]).await;
    site.enable("gas-1").await;
    let agent = Agent::start(&site.url(), &site.fleet.key, &["gw-1"], &[]);
    wait_connected(&site.admin, "gw-1", true, T).await;
    (site, gas, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_edits_endpoints_connects_ends_and_switches_remote_access_off() {
    let (site, _gas, _agent) = site().await;
    let admin_pw = site.fleet.server.admin_password().to_string();
    let b = Browser::start(&site.url()).await;

    // Not signed in: the console sends the browser to the sign-in page, and back afterwards.
    b.goto("/devices/gw-1").await;
    b.wait_path("/login?next=", T).await;
    b.shot("01-sign-in").await;

    // A wrong password: the form says so (and the audit records it).
    b.fill("#user", "Administrator").await;
    b.fill("#password", "not-the-password").await;
    b.click("form[action='/login'] button[type=submit]").await;
    b.wait_text("#signin-error", "wrong user name or password", T)
        .await;
    b.shot("02-wrong-password").await;
    let audit = site
        .admin
        .audit_log("category=AUTHENTICATION&limit=20")
        .await
        .ok();
    assert!(
        audit
            .text
            .contains("wrong user name or password (web console)"),
        "{}",
        audit.text
    );

    // The right one: back to the page first asked for.
    b.fill("#password", &admin_pw).await;
    b.click("form[action='/login'] button[type=submit]").await;
    b.wait_path("/devices/gw-1", T).await;
    let (cookie, http_only, same_site) = b.session_cookie().await.expect("a session cookie");
    assert!(http_only, "the session cookie is HttpOnly");
    assert_eq!(same_site, "Strict");
    assert_eq!(cookie.len(), 64);

    // The device list: gw-1 connected.
    b.goto("/devices").await;
    b.wait_text("#device-rows", "gw-1", T).await;
    b.wait_text("#device-rows", "connected", T).await;
    b.shot("03-devices").await;

    // The device's Remote access tab; an endpoint with a port out of range is refused inline
    // and nothing is written.
    b.click("#device-rows a[href='/devices/gw-1']").await;
    b.wait_text("#endpoints", "ssh", T).await;
    b.fill("#new-name", "panel").await;
    b.select("#new-protocol", "VNC").await;
    b.fill("#new-host", "10.0.0.7").await;
    b.fill("#new-port", "70000").await;
    b.click("#add-endpoint button[type=submit]").await;
    b.wait_text("#endpoint-error", "port 70000 is outside 1..65535", T)
        .await;
    b.shot("04-endpoint-validation").await;
    let stored = site.admin.get_property("gw-1", "endpoints").await.ok();
    assert!(!stored.text.contains("panel"), "{}", stored.text);
    // A duplicate name is refused too.
    b.fill("#new-name", "ssh").await;
    b.fill("#new-port", "5900").await;
    b.click("#add-endpoint button[type=submit]").await;
    b.wait_text("#endpoint-error", "name 'ssh' is taken", T)
        .await;
    // Fixed: added, and stored through the API's property path.
    b.fill("#new-name", "panel").await;
    b.fill("#new-port", "5900").await;
    b.click("#add-endpoint button[type=submit]").await;
    b.wait_text("#endpoints", "endpoint panel added", T).await;
    let stored = site.admin.get_property("gw-1", "endpoints").await.ok();
    assert!(stored.text.contains("\"panel\""), "{}", stored.text);
    assert!(stored.text.contains("5900"), "{}", stored.text);

    // Connect: a session, its state, and the exact client lines with copy buttons.
    b.click("button[aria-label='Connect to ssh']").await;
    let shown = b.wait_text("#connect-result", "--session", T).await;
    assert!(shown.contains("CREATED"), "{shown}");
    let local = b.find("#cmd-local").await.text().await.unwrap();
    assert!(
        local.starts_with(&format!(
            "thingport --url {} connect gw-1 ssh --session ",
            site.url()
        )),
        "{local}"
    );
    let ssh = b.find("#cmd-ssh").await.text().await.unwrap();
    assert!(
        ssh.starts_with("ssh -o 'ProxyCommand=thingport --url"),
        "{ssh}"
    );
    assert!(ssh.contains("--stdio"), "{ssh}");
    let id = local
        .split("--session ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    assert_eq!(b.count("button[data-copy='cmd-local']").await, 1);
    // The device's sessions refresh themselves and list it.
    b.wait_text("#device-sessions", &id[..12], T).await;
    b.shot("05-connect").await;

    // End: the session ends USER_SHUTDOWN, as the API records it.
    b.click("#connect-result form[action='/sessions/end'] button")
        .await;
    b.wait_text("#connect-result", "USER_SHUTDOWN", T).await;
    let s = site
        .admin
        .call("Things", "gw-1", "GetSession", json!({"sessionId": id}))
        .await
        .ok();
    assert_eq!(s.row()["status"], "TERMINATED");
    assert_eq!(s.row()["terminationCause"], "USER_SHUTDOWN");

    // The remote access switch: off, then Connect is refused with the new cause, on the page
    // and in the REST API.
    b.goto("/devices/gw-1").await;
    b.click("#switch button[type=submit]").await;
    b.wait_text("#switch", "REMOTE_ACCESS_DISABLED", T).await;
    b.click("button[aria-label='Connect to ssh']").await;
    b.wait_text(
        "#connect-result",
        "REMOTE_ACCESS_DISABLED: remote access is switched off on Thing 'gw-1'",
        T,
    )
    .await;
    b.shot("06-remote-access-disabled").await;
    site.start_session("gw-1", "ssh")
        .await
        .expect_error(403, "REMOTE_ACCESS_DISABLED");
    let refused = site
        .admin
        .call(
            "Subsystems",
            "RemoteAccessSubsystem",
            "GetSessions",
            json!({"thingName": "gw-1"}),
        )
        .await
        .ok();
    assert!(
        refused
            .rows()
            .iter()
            .any(|r| r["terminationCause"] == "REMOTE_ACCESS_DISABLED"),
        "the refusal is a recorded session: {}",
        refused.text
    );
    b.click("#switch button[type=submit]").await;
    b.wait_text("#switch", "Sessions may start", T).await;
    site.start_session("gw-1", "ssh").await.ok();

    // The other pages, as an administrator sees them.
    b.goto("/sessions").await;
    b.wait_text("#sessions-table", "USER_SHUTDOWN", T).await;
    b.shot("07-sessions").await;
    b.goto("/servers").await;
    b.wait_text("main", "gas-1", T).await;
    b.shot("08-servers").await;
    // Disable and enable the GAS from the page.
    b.click("form[action='/servers/enable'] button").await;
    b.wait_text("main table", "disabled", T).await;
    let enabled = site
        .admin
        .get_property("gas-1", "enabledForRemoteSessions")
        .await
        .ok();
    assert_eq!(enabled.row()["enabledForRemoteSessions"], false);
    b.click("form[action='/servers/enable'] button").await;
    b.wait_text("main table", "enabled", T).await;
    b.goto("/audit?category=REMOTE_ACCESS").await;
    b.wait_text("main table", "REMOTE_ACCESS", T).await;
    b.shot("09-audit").await;
    b.goto("/admin").await;
    b.wait_text("#admin-body", "RemoteAccessExtension", T).await;
    b.shot("10-administration").await;

    // A narrow window (a phone or a small tablet) still shows the list.
    b.client.set_window_size(800, 1000).await.unwrap();
    b.goto("/devices/gw-1").await;
    b.wait_text("#endpoints", "panel", T).await;
    b.shot("11-device-narrow").await;
    b.client.set_window_size(1280, 800).await.unwrap();

    // Sign out: back to the sign-in page; the old cookie no longer works.
    b.goto("/devices").await;
    b.sign_out().await;
    let r = raw(
        site.fleet.server.addr(),
        &format!(
            "GET /devices HTTP/1.1\r\nHost: x\r\nCookie: thingport_session={cookie}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(r
        .header("location")
        .unwrap_or_default()
        .starts_with("/login"));
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_reach_group_members_at_once_and_non_administrators_are_refused() {
    let (site, _gas, _agent) = site().await;
    let admin_pw = site.fleet.server.admin_password().to_string();
    let a = &site.admin;
    a.create_user("field-tech", "Field-Tech-Pw-1").await.ok();
    a.create_group("field-ops").await.ok();
    a.add_member("Groups", "field-ops", "field-tech", "User")
        .await
        .ok();
    // gw-1 visible to nobody but administrators, until the grant below.
    a.call(
        "Things",
        "gw-1",
        "DeleteVisibilityPermission",
        json!({"organization": "Everyone"}),
    )
    .await
    .ok();

    let b = Browser::start(&site.url()).await;
    // Without a grant the member sees no device, and no administration.
    b.sign_in("field-tech", "Field-Tech-Pw-1").await;
    b.wait_text("#device-rows", "No devices you may see", T)
        .await;
    assert_eq!(b.count("a[href='/admin']").await, 0);
    b.goto("/admin").await;
    b.wait_text("main", "administration is for members of Administrators", T)
        .await;
    // A forged administrative request (with the XSRF header) is refused by the service itself,
    // and one without the header by the XSRF rule.
    let (status, body) = b
        .fetch(
            "POST",
            "/admin/users",
            "name=mallory&password=Mallory-Pw-1",
            true,
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        !body.contains("gas-service"),
        "no user list in a refusal: {body}"
    );
    let (status, body) = b.fetch("POST", "/admin/keys/delete", "name=x", true).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        !body.contains("gas-key"),
        "no key list in a refusal: {body}"
    );
    let (status, body) = b.fetch("POST", "/admin/groups", "name=evil", false).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("X-XSRF-TOKEN: TWX-XSRF-TOKEN-VALUE"),
        "{body}"
    );
    assert!(a.names("Users").await.iter().all(|u| u != "mallory"));
    assert!(a.names("Groups").await.iter().all(|g| g != "evil"));
    b.sign_out().await;

    // The administrator grants the remote-access set to the group on the Access page.
    b.sign_in("Administrator", &admin_pw).await;
    b.goto("/access?kind=Thing&name=gw-1").await;
    b.fill("#g-principal", "field-ops").await;
    b.select("#g-type", "Group").await;
    b.click("#grant-form button[type=submit]:not([formaction])")
        .await;
    b.wait_text(
        "#access-body",
        "Group field-ops may now connect to Thing gw-1",
        T,
    )
    .await;
    b.wait_text("#access-body", "StartSession", T).await;
    b.shot("12-access").await;
    // A Deny is shown as a Deny.
    a.grant_runtime(
        "Things",
        "gw-1",
        "ServiceInvoke",
        "GetSessions",
        "field-tech",
        "User",
        false,
    )
    .await
    .ok();
    b.goto("/access?kind=Thing&name=gw-1").await;
    b.wait_text("#access-body", "Deny", T).await;
    b.sign_out().await;

    // The member now sees the device, may connect, and the session starts as them.
    b.sign_in("field-tech", "Field-Tech-Pw-1").await;
    b.wait_text("#device-rows", "gw-1", T).await;
    b.goto("/devices/gw-1").await;
    b.click("button[aria-label='Connect to ssh']").await;
    b.wait_text("#connect-result", "CREATED", T).await;
    // The explicit Deny on GetSessions wins: the sessions panel says so in the API's words.
    b.wait_text(
        "#device-sessions",
        "Not authorized for ServiceInvoke on GetSessions",
        T,
    )
    .await;
    // No edit controls without PropertyWrite; the switch is not offered either.
    assert_eq!(b.count("#add-endpoint").await, 0);
    assert_eq!(b.count("#switch form").await, 0);
    // A forged endpoint write is refused as in the API.
    let (status, body) = b
        .fetch(
            "POST",
            "/devices/gw-1/endpoints",
            "name=x&protocol=SSH&host=h&port=22",
            true,
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Not authorized for PropertyWrite"), "{body}");

    // Revoked while signed in: the next request no longer shows the device.
    a.call(
        "Things",
        "gw-1",
        "DeleteRunTimePermission",
        json!({"type": "ServiceInvoke", "resource": "StartSession", "principal": "field-ops", "principalType": "Group"}),
    )
    .await
    .ok();
    a.call(
        "Things",
        "gw-1",
        "DeleteDesignTimePermission",
        json!({"type": "Read", "principal": "field-ops", "principalType": "Group"}),
    )
    .await
    .ok();
    b.goto("/devices/gw-1").await;
    b.wait_text("#endpoints", "ssh", T).await;
    assert_eq!(
        b.count("button[aria-label='Connect to ssh']").await,
        0,
        "Connect is no longer offered"
    );
    let (status, body) = b
        .fetch("POST", "/devices/gw-1/connect", "endpoint=ssh", true)
        .await;
    assert_eq!(status, 403, "{body}");
    a.call(
        "Things",
        "gw-1",
        "DeleteVisibilityPermission",
        json!({"organization": "Everyone"}),
    )
    .await
    .ok();
    b.goto("/devices").await;
    b.wait_text("#device-rows", "No devices you may see", T)
        .await;
    b.goto("/devices/gw-1").await;
    b.wait_text("main", "Entity Not Found : [gw-1]", T).await;

    // A password change ends the user's browser sessions at once.
    a.call(
        "Users",
        "field-tech",
        "SetPassword",
        json!({"password": "Field-Tech-Pw-2"}),
    )
    .await
    .ok();
    b.goto("/devices").await;
    b.wait_path("/login?next=", T).await;

    // Revoke from the Access page takes the set's Allows away and leaves a Deny in place.
    a.call(
        "Things",
        "gw-1",
        "AddVisibilityPermission",
        json!({"organization": "Everyone"}),
    )
    .await
    .ok();
    b.sign_in("Administrator", &admin_pw).await;
    b.goto("/access?kind=Thing&name=gw-1").await;
    b.fill("#g-principal", "field-ops").await;
    b.select("#g-type", "Group").await;
    b.click("#grant-form button[type=submit]:not([formaction])")
        .await;
    b.wait_text("#access-body", "Group field-ops may now connect", T)
        .await;
    a.grant_runtime(
        "Things",
        "gw-1",
        "ServiceInvoke",
        "GetSession",
        "field-ops",
        "Group",
        false,
    )
    .await
    .ok();
    b.fill("#g-principal", "field-ops").await;
    b.select("#g-type", "Group").await;
    b.click("#grant-form button[formaction='/access/revoke']")
        .await;
    b.wait_text(
        "#access-body",
        "remote access revoked for Group field-ops",
        T,
    )
    .await;
    let perms = a
        .call("Things", "gw-1", "GetRunTimePermissionsAsJSON", json!({}))
        .await
        .ok();
    let left: Vec<&serde_json::Value> = perms.rows()[0]["result"]["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["principal"]["name"] == "field-ops")
        .collect();
    assert_eq!(left.len(), 1, "only the Deny is left: {left:?}");
    assert_eq!(left[0]["allow"], false);
    assert_eq!(left[0]["resource"], "GetSession");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_is_shown_as_text_and_sessions_cannot_be_fixed_or_forged() {
    let (site, _gas, _agent) = site().await;
    let admin_pw = site.fleet.server.admin_password().to_string();
    let a = &site.admin;
    let hostile =
        "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>";
    a.call(
        "Resources",
        "EntityServices",
        "CreateThing",
        json!({"name": "evil-1", "thingTemplateName": "RemoteAccessibleThing", "description": hostile}),
    )
    .await
    .ok();
    a.put(
        "/Thingworx/Things/evil-1/Properties/endpoints",
        &json!({"endpoints": {"rows": [{"name": "e", "protocol": "TCP", "host": "127.0.0.1", "port": 1,
                                         "description": hostile}]}}),
    )
    .await
    .ok();
    let long = "x".repeat(5000);
    a.call("Things", "evil-1", "AddRunTimePermission",
           json!({"type": "PropertyRead", "resource": long, "principal": "Administrator", "principalType": "User", "allow": true}))
        .await;

    let b = Browser::start(&site.url()).await;
    // A session id fixed before sign-in is not the one the browser gets.
    b.goto("/login").await;
    let fixed = "f".repeat(64);
    b.eval(&format!(
        "document.cookie = 'thingport_session={fixed}; path=/'; return 1"
    ))
    .await;
    assert_eq!(
        b.session_cookie().await.unwrap().0,
        fixed,
        "the fixed id is planted"
    );
    b.sign_in("Administrator", &admin_pw).await;
    let (cookie, _, _) = b.session_cookie().await.unwrap();
    assert_ne!(cookie, fixed);

    b.goto("/devices?q=evil").await;
    b.wait_text("#device-rows", "evil-1", T).await;
    b.goto("/devices/evil-1").await;
    let text = b.wait_text("main", "<img src=x onerror=", T).await;
    assert!(text.contains("<script>"), "{text}");
    assert_eq!(
        b.eval("return document.title").await,
        json!("evil-1 · Thingport")
    );
    assert_eq!(
        b.eval("return document.querySelectorAll('main img, main script').length")
            .await,
        json!(0)
    );
    b.shot("13-hostile-text").await;
    // A search far longer than any name is cut, not refused; the page still answers.
    b.goto(&format!("/devices?q={}", "a".repeat(3000))).await;
    b.wait_text("#device-rows", "No device name contains", T)
        .await;
    b.close().await;

    // Headers: the CSP forbids inline script and framing; pages with data are not cached.
    let addr = site.fleet.server.addr();
    let r = raw(
        addr,
        "GET /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let csp = r.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(r.header("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    // A forged or expired cookie sends a page load to sign-in and removes the cookie.
    let r = raw(
        addr,
        "GET /sessions HTTP/1.1\r\nHost: x\r\nCookie: thingport_session=forged\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 303);
    assert_eq!(
        r.header("location").as_deref(),
        Some("/login?next=/sessions")
    );
    assert!(r
        .header("set-cookie")
        .unwrap_or_default()
        .contains("Max-Age=0"));
    // A script's write with a forged cookie: 401 in place, and where to sign in.
    let r = raw(
        addr,
        "POST /sessions/end HTTP/1.1\r\nHost: x\r\nCookie: thingport_session=forged\r\nX-XSRF-TOKEN: TWX-XSRF-TOKEN-VALUE\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 9\r\nConnection: close\r\n\r\nsession=x",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r
        .header("x-thingport-redirect")
        .unwrap_or_default()
        .starts_with("/login"));
    // Sign-in posted from another site is refused.
    let r = raw(
        addr,
        &format!(
            "POST /login HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\nuser=Administrator&password={admin_pw}",
            "user=Administrator&password=".len() + admin_pw.len()
        ),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.header("set-cookie").is_none());
    // An open redirect through `next` is not followed.
    let body = format!("user=Administrator&password={admin_pw}&next=https://evil.example/");
    let r = raw(
        addr,
        &format!(
            "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location").as_deref(), Some("/devices"));
}
