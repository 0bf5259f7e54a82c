//! The fixture every platform measurement runs against: a non-administrator whose access comes
//! only from group grants, so that each measured call takes the full permission check.
//!
//! * user `bench-user` (an ordinary member of `Users`, hence of organization `Everyone`), member
//!   of group `BenchCallers`, authenticating with an application key;
//! * Thing `BenchThing` (template `RemoteThing`) with INTEGER property `p` = 1, visible to
//!   `Everyone`, with run-time `PropertyRead` and `ServiceInvoke` on `*` granted to `BenchCallers`;
//! * design-time `Create` on the `Things` collection granted to `BenchCallers`;
//! * Thing `BenchHidden`, with no grant at all: the user must get `404` for it, which shows that the
//!   permission check is really in the path.

use crate::http::{snippet, Auth, Conn, Target};
use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::net::SocketAddr;

pub const USER: &str = "bench-user";
pub const GROUP: &str = "BenchCallers";
pub const THING: &str = "BenchThing";
pub const HIDDEN: &str = "BenchHidden";
pub const PROPERTY: &str = "p";
pub const TEMPLATE: &str = "RemoteThing";
const KEY_NAME: &str = "bench-key";

/// What the measurements need from the fixture.
#[derive(Debug)]
pub struct Fixture {
    /// Requests as `bench-user`, by application key.
    pub user: Target,
    /// Requests without credentials (`/healthz`, `/metrics`).
    pub anonymous: Target,
}

const ENTITY_SERVICES: &str = "/Thingworx/Resources/EntityServices/Services";

/// Creates the fixture as `Administrator` and checks that it grants exactly what it should.
pub async fn create(addr: SocketAddr, admin_password: &str) -> Result<Fixture> {
    let admin = Target::new(
        addr,
        &Auth::Basic {
            user: "Administrator".into(),
            password: admin_password.into(),
        },
    )?;
    let mut conn = Conn::connect(addr).await?;
    let user_password = format!("bench-{}", std::process::id()) + "-Pw-0123456789";
    let steps: Vec<(String, Value)> = vec![
        (
            format!("{ENTITY_SERVICES}/CreateUser"),
            json!({"name": USER, "password": user_password}),
        ),
        (
            format!("{ENTITY_SERVICES}/CreateGroup"),
            json!({"name": GROUP}),
        ),
        (
            format!("/Thingworx/Groups/{GROUP}/Services/AddMember"),
            json!({"member": USER, "type": "User"}),
        ),
        (
            format!("{ENTITY_SERVICES}/CreateThing"),
            json!({"name": THING, "thingTemplateName": TEMPLATE}),
        ),
        (
            format!("{ENTITY_SERVICES}/CreateThing"),
            json!({"name": HIDDEN, "thingTemplateName": TEMPLATE}),
        ),
        (
            format!("/Thingworx/Things/{THING}/Services/AddPropertyDefinition"),
            json!({"name": PROPERTY, "type": "INTEGER", "defaultValue": 1}),
        ),
        (
            format!("/Thingworx/Things/{HIDDEN}/Services/AddPropertyDefinition"),
            json!({"name": PROPERTY, "type": "INTEGER", "defaultValue": 1}),
        ),
        (
            format!("/Thingworx/Things/{THING}/Services/AddVisibilityPermission"),
            json!({"organization": "Everyone"}),
        ),
        (
            format!("/Thingworx/Things/{THING}/Services/AddRunTimePermission"),
            json!({"type": "PropertyRead", "resource": "*", "principal": GROUP, "principalType": "Group", "allow": true}),
        ),
        (
            format!("/Thingworx/Things/{THING}/Services/AddRunTimePermission"),
            json!({"type": "ServiceInvoke", "resource": "*", "principal": GROUP, "principalType": "Group", "allow": true}),
        ),
        (
            "/Thingworx/Collections/Things/Services/AddDesignTimePermission".to_string(),
            json!({"type": "Create", "principal": GROUP, "principalType": "Group", "allow": true}),
        ),
    ];
    for (path, body) in &steps {
        let what = format!("setup: POST {path} {body}");
        conn.call_ok(&admin.prepare(path, Some(body))?, &what)
            .await?;
    }
    let key = conn
        .call_ok(
            &admin.prepare(
                &format!("{ENTITY_SERVICES}/CreateApplicationKey"),
                Some(&json!({"name": KEY_NAME, "user": USER})),
            )?,
            "setup: CreateApplicationKey",
        )
        .await?;
    let key_id = key["rows"][0]["keyId"]
        .as_str()
        .with_context(|| format!("CreateApplicationKey answered no rows[0].keyId: {key}"))?
        .to_string();
    let fixture = Fixture {
        user: Target::new(addr, &Auth::AppKey(key_id))?,
        anonymous: Target::new(addr, &Auth::None)?,
    };
    verify(&mut conn, &fixture).await?;
    Ok(fixture)
}

/// The measured calls answer what they should, and what must be refused is refused.
async fn verify(conn: &mut Conn, f: &Fixture) -> Result<()> {
    let read_path = format!("/Thingworx/Things/{THING}/Properties/{PROPERTY}");
    let v = conn
        .call_ok(
            &f.user.prepare(&read_path, None)?,
            "verify: property read as bench-user",
        )
        .await?;
    ensure!(
        v["rows"][0][PROPERTY] == json!(1),
        "verify: property read as bench-user answered {v}, expected rows[0].{PROPERTY} = 1"
    );
    let v = conn
        .call_ok(
            &f.user.prepare(
                &format!("/Thingworx/Things/{THING}/Services/GetPropertyValues"),
                Some(&json!({})),
            )?,
            "verify: GetPropertyValues as bench-user",
        )
        .await?;
    ensure!(
        v["rows"][0][PROPERTY] == json!(1),
        "verify: GetPropertyValues as bench-user answered {v}, expected rows[0].{PROPERTY} = 1"
    );
    let refused = [
        (
            f.user.prepare(
                &format!("/Thingworx/Things/{HIDDEN}/Properties/{PROPERTY}"),
                None,
            )?,
            404,
            "a Thing without grants",
        ),
        (
            f.anonymous.prepare(&read_path, None)?,
            401,
            "no credentials",
        ),
    ];
    for (req, want, what) in refused {
        let (status, body) = conn.send(req.request()).await?;
        if status.as_u16() != want {
            bail!(
                "verify: reading {what} answered {status} ({}), expected {want}: the permission check is not in the path",
                snippet(&body)
            );
        }
    }
    Ok(())
}
