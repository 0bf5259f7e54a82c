//! `AxedaCompatibilityExtension` (ACE): what devices and scripts migrated from Axeda expect
//! (SPEC §5). It depends on CSE and RAE and is not where remote sessions happen: it defines
//! entities that use RAE's shapes, and services that grant RAE's permissions.
//!
//! - Templates `AxedaBaseModel` (base `RemoteThing`, implements RAE's `RemoteAccessible` and
//!   `GASRemoteAccessible`, properties `modelNumber` and `serialNumber`),
//!   `AxedaEMessageGatewayModel` and `AxedaStandaloneModel` (both based on `AxedaBaseModel`).
//! - The Thing Shape `Axeda.RemoteAccessible`, which Axeda exports reference: an alias kept so
//!   that they import, replaced by `GASRemoteAccessible`. The host has no shape inheritance, so
//!   it has no members of its own and implementing it gives a Thing nothing; remote sessions
//!   need `RemoteAccessible` (every Axeda model has it).
//! - The Thing `eMessageServices` (template `AxedaEMessageServicesTemplate`, visible to
//!   administrators only until one shares it):
//!   `GrantRemoteAccessPermissionsGASForThing` / `...ForTemplate` grant a user group exactly
//!   what a remote-access user needs on a device or on every Thing of a template
//!   ([`grants`]); `FindThingByModelAndSerial` finds an Axeda device ([`lookup`]).
//!
//! Everything runs through the host's own services as the system (`host.invoke`), so each
//! change goes through the host's validation and its `SECURITY` audit entry.

mod grants;
mod lookup;
#[cfg(test)]
mod tests;

use schemars::JsonSchema;
use serde::Deserialize;
use thingport_sdk::protocol::{
    BaseType, Definitions, Field, ServiceDecl, ThingDef, ThingShapeDef, ThingTemplateDef,
};
use thingport_sdk::{ok, service, Call, Error, Extension, Host, Value};

/// The base of every Axeda device model.
pub const AXEDA_BASE_MODEL: &str = "AxedaBaseModel";
pub const AXEDA_GATEWAY_MODEL: &str = "AxedaEMessageGatewayModel";
pub const AXEDA_STANDALONE_MODEL: &str = "AxedaStandaloneModel";
/// The Axeda shape name, replaced by `GASRemoteAccessible`.
pub const AXEDA_REMOTE_ACCESSIBLE: &str = "Axeda.RemoteAccessible";
/// The Thing carrying the eMessage services.
pub const EMESSAGE_SERVICES: &str = "eMessageServices";
const EMESSAGE_TEMPLATE: &str = "AxedaEMessageServicesTemplate";

/// RAE's shapes (RAE defines them; this package only references them).
pub const REMOTE_ACCESSIBLE: &str = "RemoteAccessible";
pub const GAS_REMOTE_ACCESSIBLE: &str = "GASRemoteAccessible";

pub const GRANT_FOR_THING: &str = "GrantRemoteAccessPermissionsGASForThing";
pub const GRANT_FOR_TEMPLATE: &str = "GrantRemoteAccessPermissionsGASForTemplate";
pub const FIND_THING: &str = "FindThingByModelAndSerial";

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct GrantForThingInput {
    /// The organization whose members get to see the Thing.
    organization: String,
    /// The user group that gets the permissions a remote-access user needs.
    user_group: String,
    /// The device: a Thing implementing RemoteAccessible (e.g. an Axeda model).
    #[schemars(extend("x-thingport-base-type" = "THINGNAME"))]
    thing_name: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct GrantForTemplateInput {
    /// The organization whose members get to see the template's Things.
    organization: String,
    /// The user group that gets the permissions a remote-access user needs.
    user_group: String,
    /// A Thing Template implementing RemoteAccessible (e.g. AxedaEMessageGatewayModel).
    template_name: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct FindThingInput {
    /// The device's model number (exact match).
    model_number: String,
    /// The device's serial number (exact match).
    serial_number: String,
}

/// What the grant services answer: what they added and what was already in place.
const GRANT_RESULT: &str =
    "{entityType, entity, organization, userGroup, granted: [...], alreadyHeld: [...]}";

fn grant_service<I: JsonSchema>(name: &str, description: &str) -> ServiceDecl {
    let mut s = service::<I, Value>(name, description);
    s.result = Some(Field::new("result", BaseType::Json).describe(GRANT_RESULT));
    s
}

fn axeda_model(name: &str, description: &str) -> ThingTemplateDef {
    ThingTemplateDef::new(name)
        .describe(description)
        .based_on(AXEDA_BASE_MODEL)
}

pub struct AxedaCompat {
    host: Host,
}

impl Extension for AxedaCompat {
    fn definitions() -> Definitions {
        Definitions::new()
            .thing_shape(ThingShapeDef::new(AXEDA_REMOTE_ACCESSIBLE).describe(
                "Axeda's remote-access shape, kept so Axeda exports import: replaced by \
                 GASRemoteAccessible. It has no members; a device needs RemoteAccessible \
                 (every Axeda model has it) for remote sessions",
            ))
            .template(
                ThingTemplateDef::new(AXEDA_BASE_MODEL)
                    .describe("an Axeda device: remote-accessible through Global Access Servers")
                    .based_on("RemoteThing")
                    .implements(REMOTE_ACCESSIBLE)
                    .implements(GAS_REMOTE_ACCESSIBLE)
                    .property(
                        Field::new("modelNumber", BaseType::String)
                            .describe("the device's Axeda model number"),
                    )
                    .property(
                        Field::new("serialNumber", BaseType::String)
                            .describe("the device's serial number"),
                    ),
            )
            .template(axeda_model(
                AXEDA_GATEWAY_MODEL,
                "an Axeda eMessage gateway (an agent serving devices behind it)",
            ))
            .template(axeda_model(
                AXEDA_STANDALONE_MODEL,
                "an Axeda standalone device (an agent serving itself)",
            ))
            .template(
                ThingTemplateDef::new(EMESSAGE_TEMPLATE)
                    .describe("the template of eMessageServices"),
            )
            .thing(
                ThingDef::new(EMESSAGE_SERVICES, EMESSAGE_TEMPLATE)
                    .describe("Axeda compatibility services: remote-access grants (administrators only) and device lookup")
                    .service(grant_service::<GrantForThingInput>(
                        GRANT_FOR_THING,
                        "administrators only: grants a user group what remote sessions to one Thing need (visibility for the organization, design-time Read, PropertyRead on endpoints, ServiceInvoke on the session services), nothing more; idempotent",
                    ))
                    .service(grant_service::<GrantForTemplateInput>(
                        GRANT_FOR_TEMPLATE,
                        "administrators only: the same for every Thing of a template (instance visibility and instance run-time permissions on the template, design-time Read on each current Thing: run it again after creating Things); idempotent",
                    ))
                    .service(service::<FindThingInput, String>(
                        FIND_THING,
                        "the name of the Axeda device (a Thing of AxedaBaseModel) with this model and serial number, among those the caller can see: 404 if none, 409 if several",
                    )),
            )
    }

    fn create(host: Host, _config: Value) -> Result<Self, Error> {
        Ok(AxedaCompat { host })
    }

    fn invoke(&self, call: &Call) -> Result<Value, Error> {
        match (call.entity_kind.as_str(), call.service.as_str()) {
            ("Things", GRANT_FOR_THING) => {
                let input: GrantForThingInput = call.params()?;
                let request = grants::Request {
                    organization: &input.organization,
                    group: &input.user_group,
                    target: grants::Target::Thing(&input.thing_name),
                };
                grants::grant(&self.host, &call.caller, request)
            }
            ("Things", GRANT_FOR_TEMPLATE) => {
                let input: GrantForTemplateInput = call.params()?;
                let request = grants::Request {
                    organization: &input.organization,
                    group: &input.user_group,
                    target: grants::Target::Template(&input.template_name),
                };
                grants::grant(&self.host, &call.caller, request)
            }
            ("Things", FIND_THING) => {
                let input: FindThingInput = call.params()?;
                let thing = lookup::find(
                    &self.host,
                    &call.caller,
                    &input.model_number,
                    &input.serial_number,
                )?;
                ok(thing)
            }
            (kind, other) => Err(Error::not_found(format!(
                "service {other} not found on {kind} {}",
                call.entity
            ))),
        }
    }
}

thingport_sdk::export_extension!(AxedaCompat);
