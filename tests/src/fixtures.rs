//! Set-up steps that many tests share, built from the [`Client`] calls; each panics unless it succeeds.

use serde_json::Value;

use crate::client::Client;

impl Client {
    /// Creates Thing `thing` of `template` with the given `(property, base type, value)` triples, as this
    /// client (normally the administrator).
    pub async fn thing_with_properties(
        &self,
        thing: &str,
        template: &str,
        props: &[(&str, &str, Value)],
    ) {
        self.create_thing(thing, template).await.ok();
        for (name, base_type, value) in props {
            self.add_property("Things", thing, name, base_type)
                .await
                .ok();
            if !value.is_null() {
                self.set_property(thing, name, value.clone()).await.ok();
            }
        }
    }

    /// Makes `thing` visible to every user (organization `Everyone`).
    pub async fn show_to_everyone(&self, thing: &str) {
        self.grant_visibility("Things", thing, "Everyone")
            .await
            .ok();
    }

    /// Allows `perm` on `resource` of Thing `thing` to user `user`.
    pub async fn allow_user(&self, thing: &str, perm: &str, resource: &str, user: &str) {
        self.grant_runtime("Things", thing, perm, resource, user, "User", true)
            .await
            .ok();
    }
}
