//! Extension packages through the real HTTP API with real `.so` fixtures: import, services on
//! extension templates, permissions, reload at start, panics, deadlines, refusals, delete.

use serde_json::json;
use thingport_e2e::packages::{upload, zip_of, PackageSpec};
use thingport_e2e::{Server, ServerOptions};

async fn package_list(server: &Server) -> Vec<serde_json::Value> {
    let r = server
        .admin()
        .call(
            "Subsystems",
            "PlatformSubsystem",
            "GetExtensionPackageList",
            json!({}),
        )
        .await
        .ok();
    r.rows().clone()
}

#[tokio::test]
async fn import_call_restart_and_delete() {
    let mut server = Server::default_started();
    let admin = server.admin();
    let r = upload(&admin, PackageSpec::new("NoopExtension", "noop").build())
        .await
        .ok();
    assert_eq!(r.rows()[0]["extensionReportStatus"], json!(0), "{}", r.text);
    let list = package_list(&server).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], json!("NoopExtension"));
    assert_eq!(list[0]["status"], json!("loaded"));
    // The extension's own log lines reach the server's log, attributed to it.
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("created with") && l.contains("NoopExtension")),
        "extension log line missing from the server log:\n{log}"
    );

    // The extension's template is usable and its services run on Things of it.
    admin.create_thing("Widget", "FixtureTemplate").await.ok();
    let r = admin
        .call("Things", "Widget", "Add", json!({"a": 2, "b": 40}))
        .await
        .ok();
    assert_eq!(r.rows()[0]["result"].as_f64(), Some(42.0), "{}", r.text);
    // The host validates inputs against the declared types before the extension sees them.
    admin
        .call("Things", "Widget", "Add", json!({"a": "x", "b": 1}))
        .await
        .expect_error(400, "parameter 'a'");

    // The same permission path applies: a user needs visibility and ServiceInvoke.
    let alice = admin.new_user("alice").await;
    alice
        .call("Things", "Widget", "Add", json!({"a": 1, "b": 1}))
        .await
        .expect(404);
    admin
        .grant_visibility("Things", "Widget", "Everyone")
        .await
        .ok();
    alice
        .call("Things", "Widget", "Add", json!({"a": 1, "b": 1}))
        .await
        .expect_error(403, "ServiceInvoke on Add");
    admin
        .grant_runtime(
            "Things",
            "Widget",
            "ServiceInvoke",
            "Add",
            "alice",
            "User",
            true,
        )
        .await
        .ok();
    alice
        .call("Things", "Widget", "Add", json!({"a": 1, "b": 1}))
        .await
        .ok();
    // Only administrators import (a small body: the refusal comes before the body is read).
    upload(&alice, zip_of(&[("metadata.xml", b"<Entities/>")]))
        .await
        .expect(403);

    // The same version again: a warning, nothing changed.
    let r = upload(&admin, PackageSpec::new("NoopExtension", "noop").build())
        .await
        .ok();
    assert_eq!(r.rows()[0]["extensionReportStatus"], json!(2), "{}", r.text);
    // A tampered copy of the installed version is refused for what it is (406, the reason),
    // not answered "already installed": a package is verified before it is judged a no-op.
    let r = upload(
        &admin,
        PackageSpec::new("NoopExtension", "noop")
            .wrong_sha256()
            .build(),
    )
    .await
    .expect_error(406, "sha256");
    assert_eq!(
        r.body["report"]["rows"][0]["extensionReportStatus"],
        json!(1),
        "{}",
        r.text
    );
    assert_eq!(package_list(&server).await[0]["status"], json!("loaded"));

    // Installed packages load again at start, before the server serves.
    server.restart();
    let admin = server.admin();
    assert_eq!(package_list(&server).await[0]["status"], json!("loaded"));
    let r = admin
        .call("Things", "Widget", "Echo", json!({"text": "after restart"}))
        .await
        .ok();
    assert_eq!(r.rows()[0]["result"], json!("after restart"));

    // Delete is refused while Things use its template, then works.
    admin
        .call(
            "Subsystems",
            "PlatformSubsystem",
            "DeleteExtensionPackage",
            json!({"packageName": "NoopExtension"}),
        )
        .await
        .expect_error(409, "Widget");
    admin
        .entity_service("DeleteThing", json!({"name": "Widget"}))
        .await
        .ok();
    // A template derived from the extension's template blocks the delete too, Things or not.
    admin
        .create_template("Derived", "FixtureTemplate")
        .await
        .ok();
    admin
        .call(
            "Subsystems",
            "PlatformSubsystem",
            "DeleteExtensionPackage",
            json!({"packageName": "NoopExtension"}),
        )
        .await
        .expect_error(409, "Derived");
    admin
        .entity_service("DeleteThingTemplate", json!({"name": "Derived"}))
        .await
        .ok();
    // What an extension owns changes only with its package.
    admin
        .entity_service("DeleteThingTemplate", json!({"name": "FixtureTemplate"}))
        .await
        .expect_error(409, "belongs to extension package NoopExtension");
    admin
        .call(
            "ThingTemplates",
            "FixtureTemplate",
            "AddPropertyDefinition",
            json!({"name": "x", "type": "STRING"}),
        )
        .await
        .expect_error(409, "belongs to extension package");
    admin
        .call(
            "Subsystems",
            "PlatformSubsystem",
            "DeleteExtensionPackage",
            json!({"packageName": "NoopExtension"}),
        )
        .await
        .ok();
    assert!(package_list(&server).await.is_empty());
    assert!(!admin
        .names("ThingTemplates")
        .await
        .contains(&"FixtureTemplate".to_string()));
    let audit = admin.audit_log("category=EXTENSIONS").await.ok();
    assert!(
        audit.text.contains("imported") && audit.text.contains("deleted"),
        "{}",
        audit.text
    );
}

#[tokio::test]
async fn a_panicking_service_disables_the_extension_and_the_server_keeps_serving() {
    let server = Server::default_started();
    let admin = server.admin();
    upload(&admin, PackageSpec::new("PanicExtension", "panics").build())
        .await
        .ok();
    let template = package_template(&server, "PanicExtension").await;
    admin.create_thing("Bomb", &template).await.ok();
    admin
        .call("Things", "Bomb", "Boom", json!({}))
        .await
        .expect(500);
    admin
        .call("Things", "Bomb", "Boom", json!({}))
        .await
        .expect_error(503, "disabled");
    let list = package_list(&server).await;
    assert!(
        list[0]["status"].as_str().unwrap().starts_with("disabled"),
        "{list:?}"
    );
    server.anonymous().get("/healthz").await.ok();
    admin.get("/Thingworx/Things").await.ok();
}

#[tokio::test]
async fn a_slow_service_is_answered_at_the_deadline() {
    let server = Server::start(ServerOptions {
        extra_args: vec!["--extension-call-timeout".into(), "1".into()],
        ..ServerOptions::default()
    });
    let admin = server.admin();
    upload(&admin, PackageSpec::new("SlowExtension", "slow").build())
        .await
        .ok();
    let template = package_template(&server, "SlowExtension").await;
    admin.create_thing("Sloth", &template).await.ok();
    admin
        .call("Things", "Sloth", "Sleep", json!({"millis": 3000}))
        .await
        .expect_error(504, "did not answer");
    admin
        .call("Things", "Sloth", "Sleep", json!({"millis": 1}))
        .await
        .ok();
}

/// The first template the named package defines.
async fn package_template(server: &Server, package: &str) -> String {
    let r = server.admin().get("/Thingworx/ThingTemplates").await.ok();
    let names: Vec<String> = r.column("name");
    for n in names {
        let e = server.admin().get_entity("ThingTemplates", &n).await.ok();
        if e.body["owner"] == json!(package) {
            return n;
        }
    }
    panic!("package {package} defines no template");
}

#[tokio::test]
async fn refused_imports_install_nothing() {
    let server = Server::default_started();
    let admin = server.admin();
    let refused = |r: &thingport_e2e::Resp, needle: &str| {
        assert_eq!(r.status, 406, "{}", r.text);
        assert!(r.text.contains(needle), "expected '{needle}' in {}", r.text);
        assert!(r.body["report"]["rows"].is_array(), "{}", r.text);
    };
    refused(&upload(&admin, b"this is not a zip".to_vec()).await, "zip");
    refused(
        &upload(
            &admin,
            PackageSpec::new("Tampered", "noop").wrong_sha256().build(),
        )
        .await,
        "sha256",
    );
    refused(
        &upload(&admin, PackageSpec::new("InitFails", "initfail").build()).await,
        "could not be loaded",
    );
    refused(
        &upload(&admin, PackageSpec::new("NoSymbol", "nosymbol").build()).await,
        "thingport_extension_entry_v1",
    );
    refused(
        &upload(&admin, PackageSpec::new("BadMagic", "badmagic").build()).await,
        "magic",
    );
    refused(
        &upload(&admin, PackageSpec::new("WrongAbi", "wrongabi").build()).await,
        "ABI",
    );
    refused(
        &upload(
            &admin,
            PackageSpec::new("Needy", "noop")
                .depends_on("Missing:1.0.0")
                .build(),
        )
        .await,
        "Missing",
    );
    refused(
        &upload(&admin, zip_of(&[("../evil.txt", b"x")])).await,
        "evil",
    );
    assert!(package_list(&server).await.is_empty());
    // Refusals are security-relevant: each is audited.
    let audit = admin.audit_log("category=EXTENSIONS").await.ok();
    assert!(
        audit.text.contains("import refused") && audit.text.contains("sha256"),
        "{}",
        audit.text
    );
    // A duplicate entity name across extensions.
    upload(&admin, PackageSpec::new("NoopExtension", "noop").build())
        .await
        .ok();
    refused(
        &upload(&admin, PackageSpec::new("Duplicate", "dupname").build()).await,
        "FixtureTemplate",
    );
    assert_eq!(package_list(&server).await.len(), 1);
    // A newer version installed refuses an older one.
    refused(
        &upload(
            &admin,
            PackageSpec::new("NoopExtension", "noop")
                .version("0.9.0")
                .build(),
        )
        .await,
        "older than the installed",
    );
}

#[tokio::test]
async fn upgrades_and_a_package_that_fails_at_start_is_reported_not_fatal() {
    let mut server = Server::default_started();
    let admin = server.admin();
    upload(&admin, PackageSpec::new("NoopExtension", "noop").build())
        .await
        .ok();
    upload(&admin, PackageSpec::new("SlowExtension", "slow").build())
        .await
        .ok();
    // A minor upgrade replaces the installed version.
    let r = upload(
        &admin,
        PackageSpec::new("NoopExtension", "noop")
            .version("1.1.0")
            .build(),
    )
    .await
    .ok();
    assert_eq!(r.rows()[0]["extensionReportStatus"], json!(0), "{}", r.text);
    let list = package_list(&server).await;
    let noop = list
        .iter()
        .find(|p| p["name"] == json!("NoopExtension"))
        .unwrap();
    assert_eq!(noop["packageVersion"], json!("1.1.0"));
    // A major upgrade is refused with a clear message.
    let r = upload(
        &admin,
        PackageSpec::new("NoopExtension", "noop")
            .version("2.0.0")
            .build(),
    )
    .await;
    assert_eq!(r.status, 406, "{}", r.text);

    // Corrupt one stored package: at the next start it is reported as failed, the other loads.
    let slow = list
        .iter()
        .find(|p| p["name"] == json!("SlowExtension"))
        .unwrap();
    let sha = slow["sha256"].as_str().unwrap();
    let stored = server
        .data_dir()
        .join("extensions")
        .join(format!("{sha}.zip"));
    assert!(stored.is_file(), "{} missing", stored.display());
    std::fs::write(&stored, b"corrupted").unwrap();
    server.restart();
    let list = package_list(&server).await;
    let status = |n: &str| {
        list.iter().find(|p| p["name"] == json!(n)).unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status("NoopExtension"), "loaded");
    assert!(status("SlowExtension").starts_with("failed"), "{list:?}");
    let admin = server.admin();
    admin.create_thing("Widget", "FixtureTemplate").await.ok();
    admin
        .call("Things", "Widget", "Echo", json!({"text": "still here"}))
        .await
        .ok();
}

#[tokio::test]
async fn unsafe_or_broken_packages_are_refused() {
    let server = Server::default_started();
    let admin = server.admin();
    let refused = |r: thingport_e2e::Resp, needle: &str| {
        assert_eq!(r.status, 406, "{}", r.text);
        assert!(
            r.text.to_lowercase().contains(&needle.to_lowercase()),
            "expected '{needle}' in {}",
            r.text
        );
    };
    // A dependency cycle inside a zip of packages.
    let a = PackageSpec::new("CycleA", "noop")
        .depends_on("CycleB:1.0.0")
        .build();
    let b = PackageSpec::new("CycleB", "slow")
        .depends_on("CycleA:1.0.0")
        .build();
    refused(
        upload(&admin, zip_of(&[("a.zip", &a), ("b.zip", &b)])).await,
        "cycle",
    );
    // A symlink inside the package.
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.add_symlink(
        "metadata.xml",
        "/etc/passwd",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    refused(
        upload(&admin, w.finish().unwrap().into_inner()).await,
        "symbolic link",
    );
    // A compression bomb: 16 MiB of zeros in a few kilobytes.
    let zeros = vec![0u8; 16 * 1024 * 1024];
    refused(
        upload(
            &admin,
            zip_of(&[("metadata.xml", b"<Entities/>"), ("lib/bomb.so", &zeros)]),
        )
        .await,
        "ratio",
    );
    // metadata.xml without packageVersion: the message names the field.
    let md = br#"<Entities><ExtensionPackages><ExtensionPackage name="NoVersion"/></ExtensionPackages></Entities>"#;
    refused(
        upload(&admin, zip_of(&[("metadata.xml", md)])).await,
        "packageVersion",
    );
    // A package whose library is missing.
    let md = format!(
        r#"<Entities><ExtensionPackages><ExtensionPackage name="NoLib" packageVersion="1.0.0"><NativeLibrary file="lib/{}/libnolib.so" sha256="{}" abiVersion="1"/></ExtensionPackage></ExtensionPackages></Entities>"#,
        thingport_server::extensions::package::host_target(),
        "0".repeat(64)
    );
    refused(
        upload(&admin, zip_of(&[("metadata.xml", md.as_bytes())])).await,
        "libnolib.so",
    );
    // No metadata.xml at all.
    refused(
        upload(&admin, zip_of(&[("readme.txt", b"hello")])).await,
        "metadata.xml",
    );
    assert!(package_list(&server).await.is_empty());
    server.anonymous().get("/healthz").await.ok();
}

/// A fresh ed25519 key: (public key hex, signer of metadata.xml bytes in the signature file format).
fn keypair() -> (String, impl Fn(&[u8]) -> Option<String>) {
    use ring::signature::{Ed25519KeyPair, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let public: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
    let sign = move |bytes: &[u8]| {
        let sig: [u8; 64] = pair.sign(bytes).as_ref().try_into().unwrap();
        let key = thingport_server::extensions::package::PublicKey(public);
        Some(thingport_server::extensions::package::SignatureFile::format(&key, &sig))
    };
    (hex(&public), sign)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn trusted_keys_require_a_valid_signature() {
    let (trusted_public, trusted_sign) = keypair();
    let (_, other_sign) = keypair();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("trusted-keys");
    std::fs::write(&keys, format!("# release key\n{trusted_public}\n")).unwrap();
    let server = Server::start(ServerOptions {
        extra_args: vec![
            "--trusted-extension-keys".into(),
            keys.display().to_string(),
        ],
        ..ServerOptions::default()
    });
    let admin = server.admin();
    let spec = PackageSpec::new("NoopExtension", "noop");
    let r = upload(&admin, spec.build()).await;
    assert_eq!(
        r.status, 406,
        "an unsigned package must be refused: {}",
        r.text
    );
    assert!(r.text.contains("sign"), "{}", r.text);
    let r = upload(&admin, spec.build_signed(&other_sign)).await;
    assert_eq!(
        r.status, 406,
        "a package signed by an untrusted key must be refused: {}",
        r.text
    );
    // A signature over different metadata does not verify.
    let forged = spec.build_signed(|_| trusted_sign(b"<Entities/>"));
    assert_eq!(upload(&admin, forged).await.status, 406);
    upload(&admin, spec.build_signed(&trusted_sign)).await.ok();
    assert_eq!(package_list(&server).await[0]["status"], json!("loaded"));
}

#[tokio::test]
async fn configuration_tables_are_validated_persisted_and_reach_the_extension() {
    let mut server = Server::default_started();
    let admin = server.admin();
    upload(&admin, PackageSpec::new("NoopExtension", "noop").build())
        .await
        .ok();
    let get = |c: thingport_e2e::Client| async move {
        c.call(
            "Subsystems",
            "FixtureSubsystem",
            "GetConfigurationTable",
            json!({"configurationTable": "Settings"}),
        )
        .await
        .ok()
        .rows()[0]["limit"]
            .clone()
    };
    assert_eq!(get(server.admin()).await, json!(5), "the declared default");
    let set = |limit: serde_json::Value| json!({"configurationTable": "Settings", "values": {"rows": [{"limit": limit}]}});
    admin
        .call(
            "Subsystems",
            "FixtureSubsystem",
            "SetConfigurationTable",
            set(json!(11)),
        )
        .await
        .expect_error(422, "'limit'");
    admin
        .call(
            "Subsystems",
            "FixtureSubsystem",
            "SetConfigurationTable",
            set(json!("many")),
        )
        .await
        .expect_error(400, "INTEGER");
    admin
        .call(
            "Subsystems",
            "FixtureSubsystem",
            "GetConfigurationTable",
            json!({"configurationTable": "Nope"}),
        )
        .await
        .expect_error(404, "Nope");
    admin
        .call(
            "Subsystems",
            "FixtureSubsystem",
            "SetConfigurationTable",
            set(json!(7)),
        )
        .await
        .ok();
    assert_eq!(get(server.admin()).await, json!(7));
    // The running extension was told, and a non-administrator may not change it.
    assert!(
        server
            .log()
            .contains(r#"configured with {"Settings":{"limit":7}}"#),
        "{}",
        server.log()
    );
    let alice = admin.new_user("alice").await;
    alice
        .call(
            "Subsystems",
            "FixtureSubsystem",
            "SetConfigurationTable",
            set(json!(3)),
        )
        .await
        .expect(403);
    // Persisted, and handed to the extension when it is created at the next start.
    server.restart();
    assert_eq!(get(server.admin()).await, json!(7));
    assert!(
        server
            .log()
            .contains(r#"created with {"Settings":{"limit":7}}"#),
        "{}",
        server.log()
    );
}

#[tokio::test]
async fn host_timers_call_back_into_the_extension() {
    let server = Server::default_started();
    let admin = server.admin();
    upload(&admin, PackageSpec::new("NoopExtension", "noop").build())
        .await
        .ok();
    admin.create_thing("Clock", "FixtureTemplate").await.ok();
    admin
        .call(
            "Things",
            "Clock",
            "StartTimer",
            json!({"name": "t1", "delayMs": 50}),
        )
        .await
        .ok();
    thingport_e2e::wait_until(
        std::time::Duration::from_secs(20),
        "the extension's timer to fire",
        || {
            let admin = server.admin();
            async move {
                admin
                    .audit_log("category=EXTENSIONS")
                    .await
                    .text
                    .contains("timer t1 fired")
            }
        },
    )
    .await;
}
