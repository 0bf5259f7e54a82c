//! The endpoint editor's credentials (SPEC §11): what a browser console logs in with. The page
//! reads them through `GetEndpointCredentials` (never a secret: `passwordSet`, the pinned host
//! key) and writes them through `SetEndpointCredentials` and `GenerateEndpointKeyPair`, as the
//! viewer, so the remote access extension checks who may change them and audits every change.

use super::device::{self, EndpointRow};
use super::view::{fragment_error, page_html, with_status};
use super::Viewer;
use crate::api::AppState;
use crate::error::ApiError;
use crate::model::entities::EntityKind;
use crate::services;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// What the editor shows of an endpoint's stored credentials.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    pub authentication: String,
    pub username: String,
    pub password_set: bool,
    pub private_key_set: bool,
    pub passphrase_set: bool,
    pub host_key: String,
    pub host_key_fingerprint: String,
    pub public_key: String,
    pub updated: String,
}

/// The ways of authenticating, as (value, label).
pub const AUTHENTICATIONS: [(&str, &str); 4] = [
    ("none", "None"),
    ("password", "Password only (VNC)"),
    ("userPassword", "User and password"),
    ("privateKey", "User and private key (SSH)"),
];

fn result(t: crate::model::infotable::InfoTable) -> Value {
    t.rows
        .into_iter()
        .next()
        .and_then(|mut r| r.remove("result"))
        .unwrap_or(Value::Null)
}

fn stored_of(v: &Value) -> Stored {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let b = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    Stored {
        authentication: Some(s("authentication"))
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "none".into()),
        username: s("username"),
        password_set: b("passwordSet"),
        private_key_set: b("privateKeySet"),
        passphrase_set: b("passphraseSet"),
        host_key: s("hostKey"),
        host_key_fingerprint: s("hostKeyFingerprint"),
        public_key: s("publicKey"),
        updated: match (s("updatedBy"), v.get("updatedTime").and_then(Value::as_i64)) {
            (by, Some(t)) if !by.is_empty() => {
                format!("changed by {by} at {}", super::view::datetime(Some(t)))
            }
            _ => String::new(),
        },
    }
}

/// Fills in the stored credentials of the console endpoints (the viewer may edit them).
pub async fn load(s: &AppState, v: &Viewer, thing: &str, rows: &mut [EndpointRow]) {
    for row in rows.iter_mut().filter(|r| r.console) {
        let read = services::invoke(
            &s.platform,
            &v.ctx,
            EntityKind::Thing,
            thing,
            "GetEndpointCredentials",
            json!({"endpoint": row.name()}),
        )
        .await;
        row.creds = read.ok().map(|t| stored_of(&result(t)));
    }
}

#[derive(Deserialize)]
pub struct CredentialsForm {
    endpoint: String,
    authentication: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    clear_password: Option<String>,
    #[serde(default)]
    private_key: String,
    #[serde(default)]
    clear_private_key: Option<String>,
    #[serde(default)]
    passphrase: String,
    #[serde(default)]
    clear_passphrase: Option<String>,
    #[serde(default)]
    host_key: String,
}

/// A secret field: typed → set; "remove" ticked → removed (""); else left out (kept).
fn secret(params: &mut Map<String, Value>, name: &str, typed: &str, clear: bool) {
    if !typed.is_empty() {
        params.insert(name.into(), Value::String(typed.to_string()));
    } else if clear {
        params.insert(name.into(), Value::String(String::new()));
    }
}

/// `POST /devices/{thing}/endpoints/credentials`.
pub async fn save(
    State(s): State<AppState>,
    v: Viewer,
    Path(thing): Path<String>,
    Form(form): Form<CredentialsForm>,
) -> Response {
    let mut params = Map::new();
    params.insert("endpoint".into(), json!(form.endpoint));
    params.insert("authentication".into(), json!(form.authentication));
    params.insert("username".into(), json!(form.username));
    params.insert("hostKey".into(), json!(form.host_key));
    secret(
        &mut params,
        "password",
        &form.password,
        form.clear_password.is_some(),
    );
    secret(
        &mut params,
        "privateKey",
        &form.private_key,
        form.clear_private_key.is_some(),
    );
    secret(
        &mut params,
        "passphrase",
        &form.passphrase,
        form.clear_passphrase.is_some(),
    );
    let written = services::invoke(
        &s.platform,
        &v.ctx,
        EntityKind::Thing,
        &thing,
        "SetEndpointCredentials",
        Value::Object(params),
    )
    .await;
    answer(&s, &v, &thing, &form.endpoint, written.map(|_| None)).await
}

#[derive(Deserialize)]
pub struct KeyPairForm {
    endpoint: String,
    #[serde(default)]
    username: String,
}

/// `POST /devices/{thing}/endpoints/keypair`: a new Ed25519 key pair; the panel shows its
/// public half for the device's `authorized_keys`.
pub async fn keypair(
    State(s): State<AppState>,
    v: Viewer,
    Path(thing): Path<String>,
    Form(form): Form<KeyPairForm>,
) -> Response {
    let mut params = json!({"endpoint": form.endpoint});
    if !form.username.trim().is_empty() {
        params["username"] = json!(form.username);
    }
    let made = services::invoke(
        &s.platform,
        &v.ctx,
        EntityKind::Thing,
        &thing,
        "GenerateEndpointKeyPair",
        params,
    )
    .await;
    answer(
        &s,
        &v,
        &thing,
        &form.endpoint,
        made.map(|t| Some(result(t))),
    )
    .await
}

/// The panel after a change: a notice, or the error with that endpoint's editor left open.
async fn answer(
    s: &AppState,
    v: &Viewer,
    thing: &str,
    endpoint: &str,
    outcome: Result<Option<Value>, ApiError>,
) -> Response {
    let mut panel = device::endpoints_panel(s, v, thing).await;
    match outcome {
        Ok(generated) => {
            panel.notice = match generated {
                Some(_) => format!(
                    "a new key pair was generated for {endpoint}: add its public key to the device's authorized_keys"
                ),
                None => format!("credentials of {endpoint} saved"),
            };
            panel.open_credentials(endpoint);
            page_html(&panel)
        }
        Err(e) => {
            if e.status == axum::http::StatusCode::NOT_FOUND && panel.rows_is_empty() {
                return fragment_error(&e);
            }
            panel.error = e.message.clone();
            panel.open_credentials(endpoint);
            with_status(e.status, page_html(&panel))
        }
    }
}
