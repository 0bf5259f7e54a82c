//! AxedaCompatibilityExtension end to end: the real server with CSE, RAE and ACE imported in
//! order, the real GAS, agent and Remote Access Client. A user in a group in an organization
//! that holds nothing cannot reach an Axeda device; after `GrantRemoteAccessPermissionsGASForThing`
//! (or `...ForTemplate`) they hold exactly what a remote session needs: a session carries bytes
//! through `thingport connect`, and everything else stays refused. Also the lookup by model and
//! serial number, who may grant, and bad inputs.

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use thingport_e2e::fleet::{wait_connected, Fleet, DEVICE_USER};
use thingport_e2e::packages::{axeda_compat_package, upload};
use thingport_e2e::remote::{Proc, Site};
use thingport_e2e::{unique_secret, Agent, Client, Resp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ORG: &str = "acme";
const GROUP: &str = "acme-operators";
const USER: &str = "acme-user";
/// The organization of the device user (so the devices are not visible to `Everyone`).
const DEVICE_ORG: &str = "acme-devices";
const EMESSAGE: &str = "eMessageServices";
const FOR_THING: &str = "GrantRemoteAccessPermissionsGASForThing";
const FOR_TEMPLATE: &str = "GrantRemoteAccessPermissionsGASForTemplate";
const FIND: &str = "FindThingByModelAndSerial";

struct Axeda {
    site: Site,
    /// [`USER`], member of [`GROUP`], member of [`ORG`]; holds nothing on any device.
    user: Client,
    user_password: String,
}

/// A site (CSE and RAE) with ACE imported, the organization, group and user.
async fn axeda_site() -> Axeda {
    let site = Site::start(&[]).await;
    let a = &site.admin;
    let r = upload(a, axeda_compat_package()).await.ok();
    assert_eq!(r.rows()[0]["extensionReportStatus"], json!(0), "{}", r.text);
    a.create_organization(ORG).await.ok();
    a.create_group(GROUP).await.ok();
    let user_password = unique_secret("AcmePw");
    a.create_user(USER, &user_password).await.ok();
    a.add_member("Groups", GROUP, USER, "User").await.ok();
    a.add_member("Organizations", ORG, GROUP, "Group")
        .await
        .ok();
    a.create_organization(DEVICE_ORG).await.ok();
    a.add_member("Organizations", DEVICE_ORG, DEVICE_USER, "User")
        .await
        .ok();
    let user = a.with_basic(USER, &user_password);
    Axeda {
        site,
        user,
        user_password,
    }
}

impl Axeda {
    /// An Axeda device the device user may bind, with its model and serial number and one
    /// endpoint `echo` → `127.0.0.1:port`; visible to [`DEVICE_ORG`] only.
    async fn add_device(&self, thing: &str, template: &str, model: &str, serial: &str, port: u16) {
        let a = &self.site.admin;
        a.create_thing(thing, template).await.ok();
        a.grant_visibility("Things", thing, DEVICE_ORG).await.ok();
        for perm in ["PropertyWrite", "PropertyRead"] {
            a.grant_runtime("Things", thing, perm, "*", DEVICE_USER, "User", true)
                .await
                .ok();
        }
        a.set_property(thing, "modelNumber", json!(model))
            .await
            .ok();
        a.set_property(thing, "serialNumber", json!(serial))
            .await
            .ok();
        self.site
            .set_endpoints(thing, &[("echo", "TCP", "127.0.0.1", port)])
            .await;
    }

    async fn grant_for_thing(&self, org: &str, group: &str, thing: &str) -> Resp {
        self.site
            .admin
            .call(
                "Things",
                EMESSAGE,
                FOR_THING,
                json!({"organization": org, "userGroup": group, "thingName": thing}),
            )
            .await
    }

    async fn grant_for_template(&self, org: &str, group: &str, template: &str) -> Resp {
        self.site
            .admin
            .call(
                "Things",
                EMESSAGE,
                FOR_TEMPLATE,
                json!({"organization": org, "userGroup": group, "templateName": template}),
            )
            .await
    }

    async fn start_session(&self, thing: &str) -> Resp {
        self.user
            .call(
                "Things",
                thing,
                "StartSession",
                json!({"remoteEndpoint": "echo"}),
            )
            .await
    }

    /// The group's run-time grants on an entity, sorted: (perm, resource, allow).
    async fn group_runtime(&self, collection: &str, entity: &str) -> Vec<(String, String, bool)> {
        let r = self
            .site
            .admin
            .call(collection, entity, "GetRunTimePermissionsAsJSON", json!({}))
            .await
            .ok();
        let mut v: Vec<_> = r.row()["result"]["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["principal"] == json!({"type": "Group", "name": GROUP}))
            .map(|g| {
                (
                    g["perm"].as_str().unwrap().to_string(),
                    g["resource"].as_str().unwrap().to_string(),
                    g["allow"].as_bool().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    }
}

/// What a remote-access user needs at run time, sorted like [`Axeda::group_runtime`].
fn session_grants() -> Vec<(String, String, bool)> {
    let mut v: Vec<_> = [
        ("PropertyRead", "endpoints"),
        ("ServiceInvoke", "StartSession"),
        ("ServiceInvoke", "EndSession"),
        ("ServiceInvoke", "GetSession"),
        ("ServiceInvoke", "GetSessions"),
        ("ServiceInvoke", "GetRemoteAccessibleEndpoints"),
    ]
    .into_iter()
    .map(|(p, r)| (p.to_string(), r.to_string(), true))
    .collect();
    v.sort();
    v
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_granted_for_a_thing_gets_remote_sessions_and_nothing_else() {
    let ax = axeda_site().await;
    let site = &ax.site;
    let echo = echo_server().await;
    for thing in ["axeda-gw-1", "axeda-gw-2"] {
        ax.add_device(
            thing,
            "AxedaEMessageGatewayModel",
            "EMG-1",
            thing,
            echo.port(),
        )
        .await;
    }
    let _gas = site.start_gas("gas-1", &[]).await;
    site.enable("gas-1").await;
    let _agent = Agent::start(
        &site.url(),
        &site.fleet.key,
        &["axeda-gw-1", "axeda-gw-2"],
        &[],
    );
    wait_connected(&site.admin, "axeda-gw-1", true, Duration::from_secs(15)).await;

    // Nothing granted: the device does not even exist for the user.
    ax.start_session("axeda-gw-1")
        .await
        .expect_error(404, "axeda-gw-1");

    let r = ax.grant_for_thing(ORG, GROUP, "axeda-gw-1").await.ok();
    let result = &r.row()["result"];
    assert_eq!(result["granted"].as_array().unwrap().len(), 8, "{result}");
    assert_eq!(result["alreadyHeld"], json!([]));

    // The real client: a session, bytes both ways, ended USER_SHUTDOWN on Ctrl-C.
    let env = [
        ("THINGPORT_URL", site.url()),
        ("THINGPORT_USER", USER.to_string()),
        ("THINGPORT_PASSWORD", ax.user_password.clone()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut rac = Proc::spawn(
        "thingport",
        &["connect", "axeda-gw-1", "echo", "--local", "127.0.0.1:0"],
        &env,
        true,
    );
    let data: Vec<u8> = (0..256 * 1024).map(|b| (b * 13) as u8).collect();
    assert!(
        round_trip(rac.addr.unwrap(), data).await,
        "log:\n{}",
        rac.log()
    );
    let sessions = site
        .admin
        .call("Things", "axeda-gw-1", "GetSessions", json!({}))
        .await
        .ok();
    let id = sessions.rows()[0]["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(sessions.rows()[0]["createdBy"], json!(USER));
    let status = rac.signal_and_wait("-INT", Duration::from_secs(15));
    assert!(status.success(), "{status:?}; log:\n{}", rac.log());
    let ended = site
        .wait_terminated("axeda-gw-1", &id, Duration::from_secs(15))
        .await;
    assert_eq!(ended["terminationCause"], json!("USER_SHUTDOWN"), "{ended}");

    // The session services through the API.
    let started = ax.start_session("axeda-gw-1").await.ok();
    let id = started.row()["sessionId"].as_str().unwrap().to_string();
    for (service, params) in [
        ("GetSession", json!({"sessionId": id})),
        ("GetSessions", json!({})),
        ("GetRemoteAccessibleEndpoints", json!({})),
        ("EndSession", json!({"sessionId": id})),
    ] {
        ax.user
            .call("Things", "axeda-gw-1", service, params)
            .await
            .ok();
    }

    // And nothing else.
    let u = &ax.user;
    u.set_property("axeda-gw-1", "endpoints", json!({"rows": []}))
        .await
        .expect_error(403, "PropertyWrite");
    u.get_property("axeda-gw-1", "serialNumber")
        .await
        .expect_error(403, "PropertyRead");
    u.call("Things", "axeda-gw-1", "DisableThing", json!({}))
        .await
        .expect_error(403, "ServiceInvoke");
    u.call("Things", "axeda-gw-1", "Ping", json!({}))
        .await
        .expect(403);
    u.grant_runtime(
        "Things",
        "axeda-gw-1",
        "PropertyWrite",
        "*",
        USER,
        "User",
        true,
    )
    .await
    .expect(403);
    u.grant_visibility("Things", "axeda-gw-2", ORG)
        .await
        .expect(404);
    ax.start_session("axeda-gw-2").await.expect(404);
    u.call("Things", EMESSAGE, FOR_THING, json!({}))
        .await
        .expect(404);
    assert_eq!(
        ax.group_runtime("Things", "axeda-gw-1").await,
        session_grants()
    );
    assert!(ax.group_runtime("Things", "axeda-gw-2").await.is_empty());

    // Idempotent: a second call adds nothing.
    let again = ax.grant_for_thing(ORG, GROUP, "axeda-gw-1").await.ok();
    assert_eq!(again.row()["result"]["granted"], json!([]));
    assert_eq!(
        again.row()["result"]["alreadyHeld"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    assert_eq!(
        ax.group_runtime("Things", "axeda-gw-1").await,
        session_grants()
    );

    let audit = site
        .admin
        .audit_log("category=SECURITY&limit=1000")
        .await
        .ok()
        .column("message");
    let needle = "remote access for user group 'acme-operators' (organization 'acme') on Thing 'axeda-gw-1' by Administrator: granted PropertyRead on endpoints";
    assert!(audit.iter().any(|m| m.contains(needle)), "{audit:?}");
    assert!(
        audit
            .iter()
            .any(|m| m.contains("by Administrator: granted nothing; already held")),
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_granted_for_a_template_reaches_its_things_and_new_ones_after_a_second_run() {
    let ax = axeda_site().await;
    let echo = echo_server().await;
    for (thing, template) in [
        ("sa-1", "AxedaStandaloneModel"),
        ("sa-2", "AxedaStandaloneModel"),
        ("gw-x", "AxedaEMessageGatewayModel"),
    ] {
        ax.add_device(thing, template, "SA-9", thing, echo.port())
            .await;
    }
    ax.start_session("sa-1").await.expect(404);
    let r = ax
        .grant_for_template(ORG, GROUP, "AxedaStandaloneModel")
        .await
        .ok();
    assert_eq!(
        r.row()["result"]["granted"].as_array().unwrap().len(),
        9,
        "{}",
        r.text
    );
    // Past every permission check: the devices are offline (no agent here).
    for thing in ["sa-1", "sa-2"] {
        ax.start_session(thing)
            .await
            .expect_error(503, "DEVICE_OFFLINE");
    }
    ax.start_session("gw-x").await.expect(404);
    ax.user
        .set_property("sa-1", "serialNumber", json!("x"))
        .await
        .expect(403);
    assert_eq!(
        ax.group_runtime("ThingTemplates", "AxedaStandaloneModel")
            .await,
        session_grants()
    );
    assert!(ax.group_runtime("Things", "sa-1").await.is_empty());

    // A Thing created afterwards is visible and has the run-time permissions through the
    // template, but design-time Read is per Thing: a second run grants it, and only it.
    ax.add_device("sa-3", "AxedaStandaloneModel", "SA-9", "sa-3", echo.port())
        .await;
    ax.start_session("sa-3").await.expect_error(403, "Read");
    let r = ax
        .grant_for_template(ORG, GROUP, "AxedaStandaloneModel")
        .await
        .ok();
    assert_eq!(
        r.row()["result"]["granted"],
        json!(["design-time Read on Thing 'sa-3'"])
    );
    ax.start_session("sa-3")
        .await
        .expect_error(503, "DEVICE_OFFLINE");

    // A template of one's own, derived from an Axeda model: checked on its Thing.
    let a = &ax.site.admin;
    a.create_template("MyAxedaModel", "AxedaBaseModel")
        .await
        .ok();
    ax.grant_for_template(ORG, GROUP, "MyAxedaModel")
        .await
        .expect_error(422, "create its Things, then grant");
    ax.add_device("mine-1", "MyAxedaModel", "M", "1", echo.port())
        .await;
    ax.grant_for_template(ORG, GROUP, "MyAxedaModel").await.ok();
    ax.start_session("mine-1")
        .await
        .expect_error(503, "DEVICE_OFFLINE");
    // A template without RemoteAccessible, checked on its Thing.
    a.create_template("Plain", "RemoteThing").await.ok();
    a.create_thing("plain-1", "Plain").await.ok();
    ax.grant_for_template(ORG, GROUP, "Plain")
        .await
        .expect_error(422, "does not implement RemoteAccessible");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_who_may_grant_and_bad_inputs() {
    let ax = axeda_site().await;
    let a = &ax.site.admin;
    for (thing, model, serial) in [
        ("d-1", "X100", "S-1"),
        ("d-2", "X100", "S-2"),
        ("dup-a", "X200", "S-9"),
        ("dup-b", "X200", "S-9"),
    ] {
        ax.add_device(thing, "AxedaStandaloneModel", model, serial, 22)
            .await;
    }
    let find = |who: &Client, model: &str, serial: &str| {
        let who = who.clone();
        let params = json!({"modelNumber": model, "serialNumber": serial});
        async move { who.call("Things", EMESSAGE, FIND, params).await }
    };
    let found = find(a, "X100", "S-2").await.ok();
    assert_eq!(found.row()["result"], json!("d-2"));
    find(a, "X100", "S-3").await.expect_error(
        404,
        "no AxedaBaseModel Thing has modelNumber 'X100' and serialNumber 'S-3'",
    );
    find(a, "X200", "S-9")
        .await
        .expect_error(409, "dup-a, dup-b");

    // eMessageServices is the administrators' until shared.
    find(&ax.user, "X100", "S-2").await.expect(404);
    a.grant_visibility("Things", EMESSAGE, ORG).await.ok();
    a.grant_runtime(
        "Things",
        EMESSAGE,
        "ServiceInvoke",
        FIND,
        GROUP,
        "Group",
        true,
    )
    .await
    .ok();
    // Only the devices the user can see.
    find(&ax.user, "X100", "S-2")
        .await
        .expect_error(404, "no AxedaBaseModel Thing");
    ax.grant_for_thing(ORG, GROUP, "d-2").await.ok();
    let found = find(&ax.user, "X100", "S-2").await.ok();
    assert_eq!(found.row()["result"], json!("d-2"));
    ax.grant_for_thing(ORG, GROUP, "dup-b").await.ok();
    let found = find(&ax.user, "X200", "S-9").await.ok();
    assert_eq!(found.row()["result"], json!("dup-b"));

    // Granting is for administrators, even with ServiceInvoke on the services.
    a.grant_runtime(
        "Things",
        EMESSAGE,
        "ServiceInvoke",
        "*",
        GROUP,
        "Group",
        true,
    )
    .await
    .ok();
    ax.user
        .call(
            "Things",
            EMESSAGE,
            FOR_THING,
            json!({"organization": ORG, "userGroup": GROUP, "thingName": "d-1"}),
        )
        .await
        .expect_error(403, "administrators only");
    ax.start_session("d-1").await.expect(404);

    // Bad inputs, each named.
    ax.grant_for_thing("nope", GROUP, "d-1")
        .await
        .expect_error(404, "organization 'nope' does not exist");
    ax.grant_for_thing(ORG, "nope", "d-1")
        .await
        .expect_error(404, "user group 'nope' does not exist");
    ax.grant_for_thing(ORG, GROUP, "nope")
        .await
        .expect_error(404, "Thing 'nope' does not exist");
    ax.grant_for_template(ORG, GROUP, "nope")
        .await
        .expect_error(404, "ThingTemplate 'nope' does not exist");
    a.create_thing("plain", "RemoteThing").await.ok();
    ax.grant_for_thing(ORG, GROUP, "plain").await.expect_error(
        422,
        "Thing 'plain' (template RemoteThing) does not implement RemoteAccessible",
    );
    ax.grant_for_template(ORG, GROUP, "GenericThing")
        .await
        .expect_error(422, "does not implement RemoteAccessible");
    ax.grant_for_thing("", GROUP, "d-1")
        .await
        .expect_error(400, "parameter 'organization' must not be empty");
    a.call("Things", EMESSAGE, FOR_THING, json!({"organization": ORG}))
        .await
        .expect_error(400, "missing required parameter");
    // An explicit denial is not overridden.
    a.grant_runtime(
        "Things",
        "d-1",
        "ServiceInvoke",
        "StartSession",
        GROUP,
        "Group",
        false,
    )
    .await
    .ok();
    ax.grant_for_thing(ORG, GROUP, "d-1").await.expect_error(
        409,
        "is explicitly denied ServiceInvoke on StartSession in Thing 'd-1'",
    );
    assert!(ax.group_runtime("Things", "d-1").await.len() == 1);
}

#[tokio::test]
async fn the_package_needs_remote_access_and_keeps_it_installed() {
    let fleet = Fleet::start(&[]).await;
    let r = upload(&fleet.admin, axeda_compat_package()).await;
    assert_eq!(r.status, 406, "{}", r.text);
    assert!(
        r.text.contains(
            "Extension AxedaCompatibilityExtension depends on [RemoteAccessExtension:1.0.0] which is not installed"
        ),
        "{}",
        r.text
    );
    drop(fleet);

    let ax = axeda_site().await;
    let listed: Vec<Value> = ax
        .site
        .admin
        .call(
            "Subsystems",
            "PlatformSubsystem",
            "GetExtensionPackageList",
            json!({}),
        )
        .await
        .ok()
        .rows()
        .clone();
    assert!(
        listed
            .iter()
            .any(|p| p.to_string().contains("AxedaCompatibilityExtension")),
        "{listed:?}"
    );
    ax.site
        .admin
        .call(
            "Subsystems",
            "PlatformSubsystem",
            "DeleteExtensionPackage",
            json!({"packageName": "RemoteAccessExtension"}),
        )
        .await
        .expect_error(409, "AxedaCompatibilityExtension");
}
