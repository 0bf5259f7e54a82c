//! The remote access switch (SPEC §10, qbee's per-device, per-group and per-tag switch).
//!
//! Remote access is on unless it is switched off on the device (its `RemoteAccessible` property
//! [`PROPERTY`]), on its template or any base template, or on any of its tags. Template and tag
//! switches are records in [`SWITCHES`] (key `template/NAME` or `tag/TAG`), kept only while off,
//! written with their audit entry in one transaction. `StartSession` asks [`why_disabled`] first
//! and refuses with `REMOTE_ACCESS_DISABLED`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use thingport_sdk::{Error, Host, Value};

/// The device's own switch, a BOOLEAN property of `RemoteAccessible` (default true).
pub const PROPERTY: &str = "remoteAccessEnabled";
/// The record collection of template and tag switches that are off.
pub const SWITCHES: &str = "access-switches";
/// The longest template name or tag a switch takes.
const MAX_NAME: usize = 256;

/// What a switch applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every Thing of a template, or of a template based on it.
    Template,
    /// Every Thing carrying a tag (`Vocabulary:term`).
    Tag,
}

impl Scope {
    pub fn parse(s: &str) -> Result<Scope, Error> {
        match s.to_ascii_lowercase().as_str() {
            "template" => Ok(Scope::Template),
            "tag" => Ok(Scope::Tag),
            _ => Err(Error::unprocessable(format!(
                "scope must be 'template' or 'tag', not '{}'",
                crate::engine::clip(s)
            ))),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scope::Template => "template",
            Scope::Tag => "tag",
        }
    }
}

fn key(scope: Scope, name: &str) -> String {
    format!("{}/{name}", scope.as_str())
}

/// One switch that is off, as `GetRemoteAccessSwitches` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Switch {
    /// `template` or `tag`.
    pub scope: String,
    /// The template's name or the tag.
    pub name: String,
    /// Always false: only switches that are off are kept.
    pub enabled: bool,
    /// Who switched it off.
    pub changed_by: String,
    /// When (ms since the Unix epoch).
    #[schemars(extend("x-thingport-base-type" = "DATETIME"))]
    pub changed_time: i64,
}

/// Switches remote access on or off for a template or a tag, audited.
pub fn set(host: &Host, scope: Scope, name: &str, enabled: bool, by: &str) -> Result<(), Error> {
    let name = name.trim();
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(Error::unprocessable(format!(
            "name must be 1..{MAX_NAME} printable characters"
        )));
    }
    let what = format!("{} '{name}'", scope.as_str());
    let message = format!(
        "remote access switched {} for {what} by {by}",
        if enabled { "on" } else { "off" }
    );
    let entity = match scope {
        Scope::Template => format!("ThingTemplate:{name}"),
        Scope::Tag => format!("Tag:{name}"),
    };
    let audit = Some((crate::engine::AUDIT, entity.as_str(), message.as_str()));
    if enabled {
        host.record_delete(SWITCHES, &key(scope, name), audit)
    } else {
        let value = json!(Switch {
            scope: scope.as_str().into(),
            name: name.into(),
            enabled: false,
            changed_by: by.into(),
            changed_time: crate::model::now_ms(),
        });
        host.record_put(SWITCHES, &key(scope, name), value, audit)
    }
}

/// Every template and tag switch that is off, templates first.
pub fn list(host: &Host) -> Result<Vec<Switch>, Error> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let page = host.record_query(SWITCHES, "", &after, 1000)?;
        let Some(last) = page.last() else { break };
        after = last.key.clone();
        let n = page.len();
        out.extend(
            page.into_iter()
                .filter_map(|r| serde_json::from_value::<Switch>(r.value).ok()),
        );
        if n < 1000 {
            break;
        }
    }
    Ok(out)
}

/// Why remote access is off for `thing`, or `None` when it is on.
pub fn why_disabled(host: &Host, thing: &str) -> Result<Option<String>, Error> {
    // A Thing made before the property existed has none: on.
    if matches!(host.get_property(thing, PROPERTY), Ok(Value::Bool(false))) {
        return Ok(Some(format!(
            "remote access is switched off on Thing '{thing}'"
        )));
    }
    let info = host.describe_thing(thing)?;
    for template in &info.templates {
        if host
            .record_get(SWITCHES, &key(Scope::Template, template))?
            .is_some()
        {
            return Ok(Some(format!(
                "remote access is switched off for the template '{template}' of Thing '{thing}'"
            )));
        }
    }
    for tag in &info.tags {
        if host.record_get(SWITCHES, &key(Scope::Tag, tag))?.is_some() {
            return Ok(Some(format!(
                "remote access is switched off for the tag '{tag}' of Thing '{thing}'"
            )));
        }
    }
    Ok(None)
}
