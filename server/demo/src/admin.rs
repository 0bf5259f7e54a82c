//! The REST calls `thingport up` makes as the Administrator to set the demo up: the installed
//! extensions and imports, users, application keys, permissions, the gateway Thing and its
//! endpoints, enabling the GAS, and `isConnected`.
//!
//! Its own small client rather than `thingport_client::api::Connection`: the demo's platform is always on
//! loopback, so this client never goes through an `HTTP(S)_PROXY` of the environment, and the
//! calls that may find their entity already there (a second `thingport up`) read 409 and 404 as
//! answers, not failures.

use anyhow::{bail, Context as _};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// The built-in administrator (`thingport_server::security::ADMINISTRATOR`).
pub use thingport_server::security::ADMINISTRATOR;

/// An answer: the status and the body (`Null` when it is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The server's `error` message, else a short form of the body.
    fn message(&self) -> String {
        match self.body.get("error").and_then(Value::as_str) {
            Some(e) => e.to_owned(),
            None => self.body.to_string().chars().take(200).collect(),
        }
    }

    /// The first row of an InfoTable answer.
    fn first_row(&self) -> Option<&Value> {
        self.body.get("rows").and_then(|r| r.get(0))
    }
}

/// The Administrator's client for the demo platform.
#[derive(Debug, Clone)]
pub struct Admin {
    base: String,
    password: String,
    http: reqwest::Client,
}

impl Admin {
    /// A client for `base` (`http://ADDR`) with the Administrator's `password`.
    pub fn new(base: &str, password: &str) -> anyhow::Result<Self> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(
            "X-XSRF-TOKEN",
            HeaderValue::from_static("TWX-XSRF-TOKEN-VALUE"),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()
            .context("failed to set up the HTTP client")?;
        Ok(Self {
            base: base.to_owned(),
            password: password.to_owned(),
            http,
        })
    }

    async fn send(&self, call: &str, request: reqwest::RequestBuilder) -> anyhow::Result<Reply> {
        let response = request
            .basic_auth(ADMINISTRATOR, Some(&self.password))
            .send()
            .await
            .with_context(|| {
                format!("{call} failed: cannot reach the platform at {}", self.base)
            })?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .with_context(|| format!("{call} failed: the answer could not be read"))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        let reply = Reply { status, body };
        if status == 401 {
            bail!(
                "{call} failed: the platform refused the Administrator's password (401): the \
                 data directory's demo-admin-password does not match its database"
            );
        }
        Ok(reply)
    }

    async fn post(&self, call: &str, path: &str, params: &Value) -> anyhow::Result<Reply> {
        let request = self.http.post(format!("{}{path}", self.base)).json(params);
        self.send(call, request).await
    }

    /// `POST /Thingworx/{collection}/{entity}/Services/{service}`; an answer other than 2xx (or
    /// one of `accept`) is an error naming the call.
    async fn service(
        &self,
        collection: &str,
        entity: &str,
        service: &str,
        params: Value,
        accept: &[u16],
    ) -> anyhow::Result<Reply> {
        let call = format!("{service} on {entity}");
        let path = format!("/Thingworx/{collection}/{entity}/Services/{service}");
        let reply = self.post(&call, &path, &params).await?;
        if !reply.ok() && !accept.contains(&reply.status) {
            bail!(
                "{call} failed: the platform answered {}: {}",
                reply.status,
                reply.message()
            );
        }
        Ok(reply)
    }

    async fn entity_service(
        &self,
        service: &str,
        params: Value,
        accept: &[u16],
    ) -> anyhow::Result<Reply> {
        self.service("Resources", "EntityServices", service, params, accept)
            .await
    }

    /// The installed extension packages: name → version.
    pub async fn installed(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let reply = self
            .service(
                "Subsystems",
                "PlatformSubsystem",
                "GetExtensionPackageList",
                json!({}),
                &[],
            )
            .await?;
        let rows = reply
            .body
            .get("rows")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(rows
            .iter()
            .filter_map(|row| {
                let name = row.get("name")?.as_str()?;
                let version = row.get("packageVersion")?.as_str()?;
                Some((name.to_owned(), version.to_owned()))
            })
            .collect())
    }

    /// Uploads a package (`ExtensionPackageUploader?purpose=import`).
    pub async fn import(&self, file_name: &str, zip: Vec<u8>) -> anyhow::Result<()> {
        let part = reqwest::multipart::Part::bytes(zip)
            .file_name(file_name.to_owned())
            .mime_str("application/zip")
            .context("failed to build the upload")?;
        let form = reqwest::multipart::Form::new().part("file", part);
        let request = self
            .http
            .post(format!(
                "{}/Thingworx/ExtensionPackageUploader?purpose=import",
                self.base
            ))
            .multipart(form);
        let reply = self.send("ExtensionPackageUploader", request).await?;
        if !reply.ok() {
            bail!(
                "the platform refused the import ({}): {}",
                reply.status,
                reply.message()
            );
        }
        Ok(())
    }

    /// Creates user `name` (member of Users) with a random password nobody uses (its
    /// application key is what authenticates); an existing user is kept.
    pub async fn ensure_user(&self, name: &str) -> anyhow::Result<()> {
        let password = thingport_server::security::secrets::random_password();
        self.entity_service(
            "CreateUser",
            json!({"name": name, "password": password}),
            &[409],
        )
        .await?;
        Ok(())
    }

    /// A fresh application key `name` for `user` (an older key of that name, from an earlier
    /// run, is deleted: its value was never stored). Answers the key's value.
    pub async fn fresh_key(&self, name: &str, user: &str) -> anyhow::Result<String> {
        self.entity_service("DeleteApplicationKey", json!({"name": name}), &[404])
            .await?;
        let reply = self
            .entity_service(
                "CreateApplicationKey",
                json!({"name": name, "user": user}),
                &[],
            )
            .await?;
        reply
            .first_row()
            .and_then(|r| r.get("keyId"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .context("CreateApplicationKey answered without a keyId")
    }

    /// `AddVisibilityPermission` for the organization Everyone on a Thing.
    pub async fn grant_visibility(&self, thing: &str) -> anyhow::Result<()> {
        self.service(
            "Things",
            thing,
            "AddVisibilityPermission",
            json!({"organization": "Everyone"}),
            &[],
        )
        .await?;
        Ok(())
    }

    /// `AddRunTimePermission` `perm` on every resource of a Thing for `user` (the same grant
    /// twice is one grant).
    pub async fn grant_runtime(&self, thing: &str, perm: &str, user: &str) -> anyhow::Result<()> {
        self.service(
            "Things",
            thing,
            "AddRunTimePermission",
            json!({"type": perm, "resource": "*", "principal": user,
                   "principalType": "User", "allow": true}),
            &[],
        )
        .await?;
        Ok(())
    }

    /// Creates Thing `name` from `template`; answers false when it already exists.
    pub async fn ensure_thing(&self, name: &str, template: &str) -> anyhow::Result<bool> {
        let reply = self
            .entity_service(
                "CreateThing",
                json!({"name": name, "thingTemplateName": template}),
                &[409],
            )
            .await?;
        Ok(reply.status != 409)
    }

    /// Sets a Thing's `endpoints`: `(name, protocol, host, port)` rows.
    pub async fn set_endpoints(
        &self,
        thing: &str,
        rows: &[(&str, &str, &str, u16)],
    ) -> anyhow::Result<()> {
        let rows: Vec<Value> = rows
            .iter()
            .map(|(n, p, h, port)| json!({"name": n, "protocol": p, "host": h, "port": port}))
            .collect();
        let call = format!("setting the endpoints of {thing}");
        let request = self
            .http
            .put(format!(
                "{}/Thingworx/Things/{thing}/Properties/endpoints",
                self.base
            ))
            .json(&json!({"endpoints": {"rows": rows}}));
        let reply = self.send(&call, request).await?;
        if !reply.ok() {
            bail!(
                "{call} failed: the platform answered {}: {}",
                reply.status,
                reply.message()
            );
        }
        Ok(())
    }

    /// `EnableForRemoteSessions` on a GAS Thing.
    pub async fn enable_gas(&self, gas: &str) -> anyhow::Result<()> {
        self.service("Things", gas, "EnableForRemoteSessions", json!({}), &[])
            .await?;
        Ok(())
    }

    /// A Thing's `isConnected`; `None` while the Thing does not exist (a GAS before it
    /// registered).
    pub async fn is_connected(&self, thing: &str) -> anyhow::Result<Option<bool>> {
        let call = format!("reading isConnected of {thing}");
        let request = self.http.get(format!(
            "{}/Thingworx/Things/{thing}/Properties/isConnected",
            self.base
        ));
        let reply = self.send(&call, request).await?;
        match reply.status {
            404 => Ok(None),
            _ if reply.ok() => Ok(Some(
                reply
                    .first_row()
                    .and_then(|r| r.get("isConnected"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            )),
            status => bail!(
                "{call} failed: the platform answered {status}: {}",
                reply.message()
            ),
        }
    }
}
