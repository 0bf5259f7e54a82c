//! Endpoint credentials for browser consoles (SPEC §11) through the REST API of the real server:
//! write-only (reads say `passwordSet`), sealed at rest (the SQLite files hold no secret), audited
//! without the secret, guarded by PropertyWrite and PropertyRead on `endpoints`, bad input
//! refused with the reason; generated key pairs hand out only their public half; a malformed
//! secrets key file stops the server, and a database whose key file was replaced fails the
//! console clearly instead of leaking.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use thingport_e2e::clients::{require, running};
use thingport_e2e::consoles::{run, T};
use thingport_e2e::remote::Site;
use thingport_e2e::{run_binary, unique_secret, Client, Resp};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// A site whose device `gw-1` has an SSH and a VNC endpoint (nobody listens: only the
/// credentials matter here).
async fn site() -> Site {
    let site = Site::start(&["gw-1"]).await;
    site.set_endpoints(
        "gw-1",
        &[
            ("ssh", "SSH", "127.0.0.1", 22),
            ("vnc", "VNC", "127.0.0.1", 5900),
        ],
    )
    .await;
    site
}

async fn svc(c: &Client, service: &str, params: Value) -> Resp {
    c.call("Things", "gw-1", service, params).await
}

/// A fresh unencrypted Ed25519 private key from `ssh-keygen` (PEM text).
fn private_key(dir: &Path) -> String {
    let keygen = require("ssh-keygen", "openssh-client");
    let path = dir.join("id_ed25519");
    run(std::process::Command::new(keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&path));
    std::fs::read_to_string(&path).unwrap()
}

/// The base64 lines of a PEM body (each long enough that finding it is no coincidence).
fn pem_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 20)
        .map(str::to_string)
        .collect()
}

/// The SQLite database and its write-ahead log, as bytes.
fn database_bytes(data_dir: &Path) -> Vec<(String, Vec<u8>)> {
    ["thingport.db", "thingport.db-wal"]
        .iter()
        .filter_map(|name| {
            let bytes = std::fs::read(data_dir.join(name)).ok()?;
            Some((name.to_string(), bytes))
        })
        .collect()
}

/// The credentials view a service answers (its `result` field).
fn view(r: &Resp) -> Value {
    r.row()
        .get("result")
        .cloned()
        .unwrap_or_else(|| panic!("no result in {}", r.text))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_write_only_sealed_at_rest_and_audited_without_secrets() {
    let site = site().await;
    let dir = tempfile::tempdir().unwrap();
    let server = &site.fleet.server;
    let (password, passphrase, vnc_password) = (
        unique_secret("EndpointPw"),
        unique_secret("KeyPassphrase"),
        unique_secret("VncPw"),
    );
    let pem = private_key(dir.path());
    for s in [&password, &passphrase, &vnc_password] {
        server.secrets().add(s.clone());
    }
    for line in pem_lines(&pem) {
        server.secrets().add(line);
    }

    // Set: SSH with a password, a private key and its passphrase; VNC with a password.
    let set = svc(
        &site.admin,
        "SetEndpointCredentials",
        json!({"endpoint": "ssh", "authentication": "privateKey", "username": "pi",
               "password": password, "privateKey": pem, "passphrase": passphrase}),
    )
    .await
    .ok();
    let vnc = svc(
        &site.admin,
        "SetEndpointCredentials",
        json!({"endpoint": "vnc", "authentication": "password", "password": vnc_password}),
    )
    .await
    .ok();

    // Reads (and the answers to the writes) say what is set, never what it is.
    let got = svc(
        &site.admin,
        "GetEndpointCredentials",
        json!({"endpoint": "ssh"}),
    )
    .await
    .ok();
    let row = &view(&got);
    assert_eq!(row["authentication"], "privateKey", "{row}");
    assert_eq!(row["username"], "pi", "{row}");
    assert_eq!(row["passwordSet"], true, "{row}");
    assert_eq!(row["privateKeySet"], true, "{row}");
    assert_eq!(row["passphraseSet"], true, "{row}");
    let vnc_got = svc(
        &site.admin,
        "GetEndpointCredentials",
        json!({"endpoint": "vnc"}),
    )
    .await
    .ok();
    assert_eq!(view(&vnc_got)["passwordSet"], true, "{}", vnc_got.text);
    let answers = [&set.text, &vnc.text, &got.text, &vnc_got.text];
    for text in answers {
        assert_eq!(server.secrets().found_in(text), None, "a secret in {text}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
    }

    // At rest: neither the database nor its WAL holds a secret.
    let files = database_bytes(&server.data_dir());
    // The records did reach these files (so the search below looks in the right place).
    assert!(
        files.iter().any(|(_, b)| contains(b, b"gw-1/ssh")),
        "no credential record in {:?}",
        server.data_dir()
    );
    let mut needles: Vec<Vec<u8>> = [&password, &passphrase, &vnc_password]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    needles.extend(pem_lines(&pem).into_iter().map(String::into_bytes));
    needles.push(b"OPENSSH PRIVATE KEY".to_vec());
    for (name, bytes) in &files {
        for n in &needles {
            assert!(
                !contains(bytes, n),
                "{name} ({} bytes) holds {:?}",
                bytes.len(),
                String::from_utf8_lossy(n)
            );
        }
    }

    // Removing ("" = remove) and pinning a host key are changes too.
    let host_key = std::fs::read_to_string(dir.path().join("id_ed25519.pub")).unwrap();
    svc(
        &site.admin,
        "SetEndpointCredentials",
        json!({"endpoint": "ssh", "passphrase": "", "hostKey": host_key}),
    )
    .await
    .ok();

    // The platform's own key pair: only the public half comes out, and ssh-keygen reads it.
    let made = svc(
        &site.admin,
        "GenerateEndpointKeyPair",
        json!({"endpoint": "ssh", "username": "pi"}),
    )
    .await
    .ok();
    let made_row = &view(&made);
    let public = made_row["publicKey"].as_str().expect("publicKey");
    assert!(public.starts_with("ssh-ed25519 "), "{made_row}");
    assert!(!made.text.contains("PRIVATE KEY"), "{}", made.text);
    assert_eq!(made_row["privateKeySet"], true, "{made_row}");
    let public_file = dir.path().join("generated.pub");
    std::fs::write(&public_file, format!("{public}\n")).unwrap();
    let keygen = require("ssh-keygen", "openssh-client");
    let listed = run(std::process::Command::new(keygen)
        .arg("-l")
        .arg("-f")
        .arg(&public_file));
    assert!(
        listed.contains("SHA256:") && listed.contains("(ED25519)"),
        "{listed}"
    );
    let fingerprint = listed.split_whitespace().nth(1).unwrap().to_string();
    let again = svc(
        &site.admin,
        "GetEndpointCredentials",
        json!({"endpoint": "ssh"}),
    )
    .await
    .ok();
    assert_eq!(view(&again)["publicKey"], json!(public), "{}", again.text);
    for (name, bytes) in database_bytes(&server.data_dir()) {
        assert!(!contains(&bytes, b"OPENSSH PRIVATE KEY"), "{name}");
    }

    // Every change is in the audit trail, without a secret.
    let audit = site.remote_access_audit().await.join("\n");
    for needle in [
        "credentials of endpoint ssh changed by Administrator",
        "password set",
        "privateKey set",
        "passphrase set",
        "credentials of endpoint vnc changed by Administrator",
        "a new Ed25519 key pair generated",
        &fingerprint,
        "passphrase removed",
        "host key pinned SHA256:",
    ] {
        assert!(audit.contains(needle), "{needle:?} not in:\n{audit}");
    }
    assert_eq!(server.secrets().found_in(&audit), None, "{audit}");
    assert!(!audit.contains("PRIVATE KEY"), "{audit}");
    server.assert_no_secrets_in_log();
}

/// A user with visibility, design Read, ServiceInvoke on every service and `perm` on gw-1.
async fn user_with(site: &Site, name: &str, perm: &str) -> Client {
    let a = &site.admin;
    let user = a.new_user(name).await;
    for p in ["ServiceInvoke", perm] {
        a.grant_runtime("Things", "gw-1", p, "*", name, "User", true)
            .await
            .ok();
    }
    a.grant_design("Things", "gw-1", "Read", name, "User", true)
        .await
        .ok();
    user
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_needs_property_write_and_reading_needs_property_read() {
    let site = site().await;
    let reader = user_with(&site, "cred-reader", "PropertyRead").await;
    let writer = user_with(&site, "cred-writer", "PropertyWrite").await;
    let secret = unique_secret("EndpointPw");
    site.fleet.server.secrets().add(secret.clone());
    let set = json!({"endpoint": "vnc", "authentication": "password", "password": secret});

    svc(&reader, "SetEndpointCredentials", set.clone())
        .await
        .expect_error(403, "PropertyWrite");
    svc(
        &reader,
        "GenerateEndpointKeyPair",
        json!({"endpoint": "ssh", "username": "pi"}),
    )
    .await
    .expect_error(403, "PropertyWrite");
    let seen = svc(
        &reader,
        "GetEndpointCredentials",
        json!({"endpoint": "vnc"}),
    )
    .await
    .ok();
    assert_eq!(view(&seen)["passwordSet"], false, "{}", seen.text);

    svc(
        &writer,
        "GetEndpointCredentials",
        json!({"endpoint": "vnc"}),
    )
    .await
    .expect_error(403, "PropertyRead");
    let written = svc(&writer, "SetEndpointCredentials", set).await.ok();
    assert!(!written.text.contains(&secret), "{}", written.text);
    let seen = svc(
        &reader,
        "GetEndpointCredentials",
        json!({"endpoint": "vnc"}),
    )
    .await
    .ok();
    assert_eq!(view(&seen)["passwordSet"], true, "{}", seen.text);
    assert_eq!(view(&seen)["updatedBy"], "cred-writer", "{}", seen.text);
    let audit = site.remote_access_audit().await.join("\n");
    assert!(
        audit.contains("credentials of endpoint vnc changed by cred-writer"),
        "{audit}"
    );
    assert_eq!(
        audit.matches("credentials of endpoint").count(),
        1,
        "refused changes are not audited as changes:\n{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_refused_naming_the_problem() {
    let site = site().await;
    let secret = unique_secret("EndpointPw");
    site.fleet.server.secrets().add(secret.clone());
    let pem_of = |body: &str| {
        format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{body}\n-----END OPENSSH PRIVATE KEY-----\n")
    };
    let ed25519_blob = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    let cases: Vec<(Value, u16, String)> = vec![
        (
            json!({"endpoint": "ssh", "authentication": "kerberos"}),
            422,
            "authentication 'kerberos' is not one of none, password, userPassword, privateKey"
                .into(),
        ),
        (
            json!({"endpoint": "ssh", "authentication": "userPassword", "username": "pi"}),
            422,
            "authentication userPassword needs a username and a password".into(),
        ),
        (
            json!({"endpoint": "ssh", "authentication": "privateKey", "username": "pi"}),
            422,
            "authentication privateKey needs a username and a private key".into(),
        ),
        (
            json!({"endpoint": "ssh", "privateKey": format!("not a key {secret}")}),
            422,
            "privateKey must be a PEM or OpenSSH private key".into(),
        ),
        (
            json!({"endpoint": "ssh", "hostKey": "ssh-dss AAAAB3NzaC1kc3M="}),
            422,
            "hostKey is not an OpenSSH public key: 'ssh-dss' is not a key type".into(),
        ),
        (
            json!({"endpoint": "ssh", "hostKey": format!("ssh-rsa {ed25519_blob}")}),
            422,
            "hostKey is not an OpenSSH public key: the key blob does not match its type".into(),
        ),
        (
            json!({"endpoint": "ssh", "hostKey": "ssh-ed25519 !!not-base64!!"}),
            422,
            "hostKey is not an OpenSSH public key: the key after the type is not base64".into(),
        ),
        (
            json!({"endpoint": "vnc", "password": format!("{secret}{}", "p".repeat(1025))}),
            422,
            format!("password is {} bytes; at most 1024", secret.len() + 1025),
        ),
        (
            json!({"endpoint": "ssh", "privateKey": pem_of(&"A".repeat(17 * 1024))}),
            422,
            "privateKey is ".to_string(),
        ),
        (
            json!({"endpoint": "vnc", "password": format!("{secret}\u{0}tail")}),
            422,
            "password contains a NUL byte".into(),
        ),
        (
            json!({"endpoint": "vnc", "passphrase": "a\u{0}b"}),
            422,
            "passphrase contains a NUL byte".into(),
        ),
        (
            json!({"endpoint": "no-such", "authentication": "none"}),
            404,
            "Thing 'gw-1' has no endpoint 'no-such'".into(),
        ),
    ];
    for (params, status, needle) in cases {
        let r = svc(&site.admin, "SetEndpointCredentials", params.clone()).await;
        let r = r.expect_error(status, &needle);
        assert!(!r.text.contains(&secret), "{params}: {}", r.text);
        if needle == "privateKey is " {
            assert!(r.error().contains("at most 16384"), "{}", r.text);
        }
    }
    for (service, params) in [
        ("GetEndpointCredentials", json!({"endpoint": "no-such"})),
        (
            "GenerateEndpointKeyPair",
            json!({"endpoint": "no-such", "username": "pi"}),
        ),
    ] {
        svc(&site.admin, service, params)
            .await
            .expect_error(404, "has no endpoint 'no-such'");
    }
    svc(
        &site.admin,
        "GenerateEndpointKeyPair",
        json!({"endpoint": "ssh"}),
    )
    .await
    .expect_error(422, "needs the username");

    // Nothing of it was stored or audited.
    for ep in ["ssh", "vnc"] {
        let got = svc(
            &site.admin,
            "GetEndpointCredentials",
            json!({"endpoint": ep}),
        )
        .await
        .ok();
        let row = &view(&got);
        assert_eq!(row["authentication"], "none", "{row}");
        assert_eq!(row["passwordSet"], false, "{row}");
        assert_eq!(row["privateKeySet"], false, "{row}");
        assert_eq!(row["hostKey"], Value::Null, "{row}");
    }
    let audit = site.remote_access_audit().await.join("\n");
    assert!(!audit.contains("credentials of endpoint"), "{audit}");
}

#[test]
fn a_malformed_secrets_key_file_stops_the_server_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for (name, content) in [
        ("not-hex.key", "this is not a key\n"),
        ("short.key", "00112233445566778899aabbccddeeff\n"),
        ("empty.key", ""),
    ] {
        let key = dir.path().join(name);
        std::fs::write(&key, content).unwrap();
        let password = unique_secret("AdminPw");
        let out = run_binary(
            &[
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data.to_str().unwrap(),
                "--admin-password",
                &password,
                "--secrets-key-file",
                key.to_str().unwrap(),
            ],
            Duration::from_secs(30),
        );
        assert!(!out.status.success(), "{name}: {out:?}");
        assert!(!out.stdout.contains("listening on"), "{name}: {out:?}");
        let path = key.display().to_string();
        let lines: Vec<&str> = out.stderr.lines().filter(|l| l.contains(&path)).collect();
        assert_eq!(lines.len(), 1, "{name}: one line names the file: {out:?}");
        assert!(
            lines[0].starts_with("thingport-server: ") && lines[0].contains("64 hex digits"),
            "{name}: the error does not say what a key file holds: {out:?}"
        );
        assert!(!out.stderr.contains(&password), "{name}: {out:?}");
        assert!(!out.stderr.contains("panicked"), "{name}: {out:?}");
        // The key file was not replaced by a fresh one.
        assert_eq!(std::fs::read_to_string(&key).unwrap(), content, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_without_its_key_file_fails_the_console_without_leaking() {
    // An SSH endpoint nobody needs to answer: the claim fails before the stream is used.
    // (Telnet would not do: no stored secret is ever released for a Telnet console.)
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut r = running("tel", "SSH", listener.local_addr().unwrap().port()).await;
    let password = unique_secret("EndpointPw");
    r.site.fleet.server.secrets().add(password.clone());
    svc(
        &r.site.admin,
        "SetEndpointCredentials",
        json!({"endpoint": "tel", "authentication": "userPassword", "username": "pi",
               "password": password}),
    )
    .await
    .ok();

    // The server comes back with another secrets key (its file lost and created anew).
    let server = &mut r.site.fleet.server;
    server.terminate();
    let key_file = server.data_dir().join("secrets.key");
    std::fs::remove_file(&key_file).unwrap();
    server.restart_on_same_port();
    assert!(key_file.is_file(), "a new key file is created");
    // Clients made before the restart pool connections to the old process: new ones.
    r.site.admin = server.admin();
    let admin = r.site.admin.clone();
    r.site.wait_gas_connected("gas-1", true, T).await;
    thingport_e2e::fleet::wait_connected(&admin, "gw-1", true, T).await;

    // Reads still work (nothing is opened for them).
    let got = svc(&admin, "GetEndpointCredentials", json!({"endpoint": "tel"}))
        .await
        .ok();
    assert_eq!(view(&got)["passwordSet"], true, "{}", got.text);

    // The console fails, saying the stored credential cannot be read.
    let started = svc(
        &admin,
        "StartConsoleSession",
        json!({"remoteEndpoint": "tel"}),
    )
    .await
    .ok();
    let row = started.row().clone();
    let url = row["consoleUrl"].as_str().expect("consoleUrl");
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("thingport-console.v1"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let hello = json!({"ticket": row["ticket"], "cols": 80, "rows": 24});
    ws.send(Message::text(hello.to_string())).await.unwrap();
    let mut told = Vec::new();
    let deadline = std::time::Instant::now() + T;
    let code = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no close within {T:?}: {told:?}"
        );
        let m = tokio::time::timeout(T, ws.next())
            .await
            .expect("the GAS said nothing in time");
        match m {
            Some(Ok(Message::Text(t))) => told.push(t.as_str().to_string()),
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert_eq!(code, Some(4500), "{told:?}");
    let said = told.join("\n");
    assert!(said.contains("\"type\":\"error\""), "{said}");
    assert!(said.contains("cannot be read"), "{said}");
    assert!(!said.contains(&password), "{said}");
    let id = row["sessionId"].as_str().unwrap();
    let ended = r.site.wait_terminated("gw-1", id, T).await;
    assert_eq!(ended["terminationCause"], "CONSOLE_ERROR", "{ended}");
    assert!(!ended.to_string().contains(&password), "{ended}");
    drop(listener);
}

/// Secrets stay with the target they were entered for: an endpoint moved elsewhere (or a
/// re-pinned host key) does not take its password along, so write access to `endpoints` alone
/// cannot redirect a stored password to a machine of one's choosing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_do_not_follow_an_endpoint_moved_elsewhere_or_a_new_host_key() {
    let site = site().await;
    let admin = &site.admin;
    let password = unique_secret("MovedPw");
    let set = svc(
        admin,
        "SetEndpointCredentials",
        json!({"endpoint": "ssh", "authentication": "userPassword", "username": "pi",
               "password": password}),
    )
    .await
    .ok();
    assert_eq!(view(&set)["passwordSet"], true);

    // The endpoint now points elsewhere: the next change of its credentials (even of the user
    // name only) removes the password, which must be entered again for the new target.
    site.set_endpoints(
        "gw-1",
        &[
            ("ssh", "SSH", "127.0.0.2", 2222),
            ("vnc", "VNC", "127.0.0.1", 5900),
        ],
    )
    .await;
    let changed = svc(
        admin,
        "SetEndpointCredentials",
        json!({"endpoint": "ssh", "username": "root"}),
    )
    .await;
    assert_eq!(changed.status, 422, "{}", changed.text);
    assert!(
        changed.text.contains("needs a username and a password"),
        "{}",
        changed.text
    );
    let kept = view(
        &svc(admin, "GetEndpointCredentials", json!({"endpoint": "ssh"}))
            .await
            .ok(),
    );
    assert_eq!(
        kept["passwordSet"], true,
        "a refused change changes nothing"
    );
    let entered = svc(
        admin,
        "SetEndpointCredentials",
        json!({"endpoint": "ssh", "username": "root", "password": password}),
    )
    .await
    .ok();
    assert_eq!(view(&entered)["passwordSet"], true);

    // Pinning another host key than the pinned one removes the secrets too.
    let keygen = require("ssh-keygen", "openssh-client");
    let dir = tempfile::tempdir().unwrap();
    let mut keys = Vec::new();
    for name in ["a", "b"] {
        let path = dir.path().join(name);
        run(std::process::Command::new(&keygen)
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&path));
        keys.push(std::fs::read_to_string(path.with_extension("pub")).unwrap());
    }
    svc(
        admin,
        "SetEndpointCredentials",
        json!({"endpoint": "ssh", "hostKey": keys[0].trim()}),
    )
    .await
    .ok();
    let repinned = svc(
        admin,
        "SetEndpointCredentials",
        json!({"endpoint": "ssh", "authentication": "none", "hostKey": keys[1].trim()}),
    )
    .await
    .ok();
    let v = view(&repinned);
    assert_eq!(v["passwordSet"], false, "{v}");
    let audit = site.remote_access_audit().await.join("\n");
    assert!(
        audit.contains("password and keys removed (the pinned host key changed)"),
        "{audit}"
    );
    assert!(!audit.contains(&password));
}
