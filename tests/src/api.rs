//! One helper per REST call the tests make often: services, entity creation, grants, audit, login.
//! Each returns the [`Resp`]; callers assert with `.ok()` / `.expect(status)`.

use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{encode_segment, Client, Resp};
use crate::wait::unique_secret;

impl Client {
    /// `POST /Thingworx/{collection}/{entity}/Services/{service}` with `params`.
    pub async fn call(&self, collection: &str, entity: &str, service: &str, params: Value) -> Resp {
        let path = format!(
            "/Thingworx/{collection}/{}/Services/{}",
            encode_segment(entity),
            encode_segment(service)
        );
        self.post(&path, &params).await
    }

    /// A service of `Resources/EntityServices` (CreateThing, DeleteThing, CreateUser, ...).
    pub async fn entity_service(&self, service: &str, params: Value) -> Resp {
        self.call("Resources", "EntityServices", service, params)
            .await
    }

    /// The names in `GET /Thingworx/{collection}`; panics unless it answers 200.
    pub async fn names(&self, collection: &str) -> Vec<String> {
        self.get(&format!("/Thingworx/{collection}"))
            .await
            .expect(200)
            .column("name")
    }

    /// `CreateThing`.
    pub async fn create_thing(&self, name: &str, template: &str) -> Resp {
        self.entity_service(
            "CreateThing",
            json!({"name": name, "thingTemplateName": template}),
        )
        .await
    }

    /// `CreateThingTemplate` with a base template.
    pub async fn create_template(&self, name: &str, base: &str) -> Resp {
        self.entity_service(
            "CreateThingTemplate",
            json!({"name": name, "baseThingTemplateName": base}),
        )
        .await
    }

    /// `CreateUser`; remembers the password as a secret that must never leak.
    pub async fn create_user(&self, name: &str, password: &str) -> Resp {
        self.secrets().add(password);
        self.entity_service("CreateUser", json!({"name": name, "password": password}))
            .await
    }

    /// Creates user `name` with a fresh password and returns a Basic-auth client for it; panics unless
    /// the creation succeeds.
    pub async fn new_user(&self, name: &str) -> Client {
        let password = unique_secret("UserPw");
        self.create_user(name, &password).await.ok();
        self.with_basic(name, &password)
    }

    pub async fn create_group(&self, name: &str) -> Resp {
        self.entity_service("CreateGroup", json!({"name": name}))
            .await
    }

    pub async fn create_organization(&self, name: &str) -> Resp {
        self.entity_service("CreateOrganization", json!({"name": name}))
            .await
    }

    /// `AddMember` on a group (`collection` = `Groups`) or organization (`Organizations`).
    pub async fn add_member(
        &self,
        collection: &str,
        name: &str,
        member: &str,
        member_type: &str,
    ) -> Resp {
        self.call(
            collection,
            name,
            "AddMember",
            json!({"member": member, "type": member_type}),
        )
        .await
    }

    pub async fn remove_member(
        &self,
        collection: &str,
        name: &str,
        member: &str,
        member_type: &str,
    ) -> Resp {
        self.call(
            collection,
            name,
            "RemoveMember",
            json!({"member": member, "type": member_type}),
        )
        .await
    }

    /// `CreateApplicationKey`; remembers the returned `keyId` as a secret. `expiration_ms` is a DATETIME.
    pub async fn create_app_key(&self, name: &str, user: &str, expiration_ms: Option<i64>) -> Resp {
        let mut params = json!({"name": name, "user": user});
        if let Some(ms) = expiration_ms {
            params["expirationDate"] = json!(ms);
        }
        let resp = self.entity_service("CreateApplicationKey", params).await;
        if let Some(key) = resp
            .body
            .get("rows")
            .and_then(|r| r.get(0))
            .and_then(|r| r.get("keyId"))
            .and_then(Value::as_str)
        {
            self.secrets().add(key);
        }
        resp
    }

    /// Creates an application key and returns its `keyId`; panics unless that succeeds.
    pub async fn new_app_key(&self, name: &str, user: &str) -> String {
        let resp = self.create_app_key(name, user, None).await.ok();
        resp.row()["keyId"]
            .as_str()
            .unwrap_or_else(|| panic!("CreateApplicationKey result has no keyId: {}", resp.text))
            .to_string()
    }

    /// `AddPropertyDefinition` on `{collection}/{entity}`.
    pub async fn add_property(
        &self,
        collection: &str,
        entity: &str,
        name: &str,
        base_type: &str,
    ) -> Resp {
        self.call(
            collection,
            entity,
            "AddPropertyDefinition",
            json!({"name": name, "type": base_type}),
        )
        .await
    }

    /// `PUT /Thingworx/Things/{thing}/Properties/{prop}` with `{prop: value}`.
    pub async fn set_property(&self, thing: &str, prop: &str, value: Value) -> Resp {
        let path = format!(
            "/Thingworx/Things/{}/Properties/{}",
            encode_segment(thing),
            encode_segment(prop)
        );
        self.put(&path, &json!({ prop: value })).await
    }

    /// `GET /Thingworx/Things/{thing}/Properties/{prop}`.
    pub async fn get_property(&self, thing: &str, prop: &str) -> Resp {
        let path = format!(
            "/Thingworx/Things/{}/Properties/{}",
            encode_segment(thing),
            encode_segment(prop)
        );
        self.get(&path).await
    }

    /// `GET /Thingworx/{collection}/{name}`.
    pub async fn get_entity(&self, collection: &str, name: &str) -> Resp {
        self.get(&format!("/Thingworx/{collection}/{}", encode_segment(name)))
            .await
    }

    /// `AddRunTimePermission` on `{collection}/{entity}`.
    #[allow(clippy::too_many_arguments)]
    pub async fn grant_runtime(
        &self,
        collection: &str,
        entity: &str,
        perm: &str,
        resource: &str,
        principal: &str,
        principal_type: &str,
        allow: bool,
    ) -> Resp {
        self.call(
            collection,
            entity,
            "AddRunTimePermission",
            json!({"type": perm, "resource": resource, "principal": principal,
                   "principalType": principal_type, "allow": allow}),
        )
        .await
    }

    /// `DeleteRunTimePermission` on `{collection}/{entity}`.
    pub async fn revoke_runtime(
        &self,
        collection: &str,
        entity: &str,
        perm: &str,
        resource: &str,
        principal: &str,
        principal_type: &str,
    ) -> Resp {
        self.call(
            collection,
            entity,
            "DeleteRunTimePermission",
            json!({"type": perm, "resource": resource, "principal": principal,
                   "principalType": principal_type}),
        )
        .await
    }

    /// `AddDesignTimePermission` on `{collection}/{entity}`.
    pub async fn grant_design(
        &self,
        collection: &str,
        entity: &str,
        perm: &str,
        principal: &str,
        principal_type: &str,
        allow: bool,
    ) -> Resp {
        self.call(
            collection,
            entity,
            "AddDesignTimePermission",
            json!({"type": perm, "principal": principal, "principalType": principal_type,
                   "allow": allow}),
        )
        .await
    }

    /// `AddDesignTimePermission` on a whole collection (`/Thingworx/Collections/{collection}`).
    pub async fn grant_collection(
        &self,
        collection: &str,
        perm: &str,
        principal: &str,
        principal_type: &str,
        allow: bool,
    ) -> Resp {
        self.grant_design(
            "Collections",
            collection,
            perm,
            principal,
            principal_type,
            allow,
        )
        .await
    }

    /// `AddVisibilityPermission {organization}` on `{collection}/{entity}`.
    pub async fn grant_visibility(&self, collection: &str, entity: &str, org: &str) -> Resp {
        self.call(
            collection,
            entity,
            "AddVisibilityPermission",
            json!({"organization": org}),
        )
        .await
    }

    /// `AddInstanceVisibilityPermission {organization}` on a Thing Template.
    pub async fn grant_instance_visibility(&self, template: &str, org: &str) -> Resp {
        self.call(
            "ThingTemplates",
            template,
            "AddInstanceVisibilityPermission",
            json!({"organization": org}),
        )
        .await
    }

    /// `GET /Thingworx/AuditLog?{query}` (query without the `?`).
    pub async fn audit_log(&self, query: &str) -> Resp {
        self.get(&format!("/Thingworx/AuditLog?{query}")).await
    }

    /// `POST /Thingworx/Login` with this client's credentials; returns the answer and the value of the
    /// `thingport_session` cookie it set, if any.
    pub async fn login(&self) -> (Resp, Option<String>) {
        let resp = self
            .send(Method::POST, "/Thingworx/Login", None, None, &[])
            .await;
        let cookie = resp
            .headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                let first = v.split(';').next()?.trim();
                first.strip_prefix("thingport_session=").map(str::to_string)
            });
        if let Some(c) = &cookie {
            self.secrets().add(c.clone());
        }
        (resp, cookie)
    }
}
