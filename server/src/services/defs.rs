//! The host's service definitions, per kind of entity.

use super::{Access, Handler, ServiceDef};
use crate::model::basetype::{BaseType as T, FieldDef as F};
use crate::model::entities::EntityKind;
use crate::security::DesignPerm;
use std::sync::LazyLock;

fn name_param() -> F {
    F::new("name", T::String)
        .required()
        .describe("the entity's name")
}
fn desc_param() -> F {
    F::new("description", T::String).describe("a free-text description")
}
fn principal_params(d: ServiceDef) -> ServiceDef {
    d.input(
        F::new("principal", T::String)
            .required()
            .describe("a user or group name"),
    )
    .input(
        F::new("principalType", T::String)
            .required()
            .describe("User or Group"),
    )
}

/// Gives every definition of a list the implementation that runs it.
fn routed(handler: Handler, mut defs: Vec<ServiceDef>) -> Vec<ServiceDef> {
    for d in &mut defs {
        d.handler = handler;
    }
    defs
}

/// Generic run-time services of every Thing.
static THING: LazyLock<Vec<ServiceDef>> = LazyLock::new(|| {
    routed(Handler::Thing, {
        vec![
            ServiceDef::new(
                "GetPropertyValues",
                Access::RunTime,
                "the values of every property the caller may read, as one row",
            )
            .returns(T::Infotable),
            ServiceDef::new(
                "SetPropertyValues",
                Access::RunTime,
                "writes several properties at once (needs PropertyWrite on each)",
            )
            .input(
                F::new("values", T::Infotable)
                    .required()
                    .describe("one row: property name to value"),
            ),
            ServiceDef::new(
                "GetMetadata",
                Access::RunTime,
                "the Thing's template, shapes, tags, property and service definitions",
            )
            .returns(T::Json),
            ServiceDef::new("EnableThing", Access::RunTime, "enables the Thing"),
            ServiceDef::new(
                "DisableThing",
                Access::RunTime,
                "disables the Thing: its run-time services are refused until enabled",
            ),
        ]
    })
});

/// Property definition services (Things, ThingTemplates, ThingShapes).
static PROPERTY_DEFS: LazyLock<Vec<ServiceDef>> = LazyLock::new(|| {
    routed(Handler::PropertyDefinition, {
        vec![
            ServiceDef::new(
                "AddPropertyDefinition",
                Access::Design(DesignPerm::Update),
                "adds a typed, persistent property",
            )
            .input(name_param())
            .input(
                F::new("type", T::String)
                    .required()
                    .describe("the base type, e.g. STRING, INTEGER, INFOTABLE"),
            )
            .input(desc_param())
            .input(F::new("defaultValue", T::Json).describe("the value read before any write"))
            .input(
                F::new("dataShape", T::String)
                    .describe("for INFOTABLE: the data shape rows follow"),
            ),
            ServiceDef::new(
                "RemovePropertyDefinition",
                Access::Design(DesignPerm::Update),
                "removes a property and its value",
            )
            .input(name_param()),
        ]
    })
});

fn permission_services(runtime: bool, instance_visibility: bool) -> Vec<ServiceDef> {
    let upd = Access::Design(DesignPerm::Update);
    let read = Access::Design(DesignPerm::Read);
    let mut v = vec![
        principal_params(
            ServiceDef::new(
                "AddDesignTimePermission",
                upd,
                "grants or denies a design-time permission",
            )
            .input(
                F::new("type", T::String)
                    .required()
                    .describe("Create, Read, Update or Delete"),
            ),
        )
        .input(
            F::new("allow", T::Boolean)
                .required()
                .describe("true to allow, false to deny"),
        ),
        principal_params(
            ServiceDef::new(
                "DeleteDesignTimePermission",
                upd,
                "removes a design-time grant or denial",
            )
            .input(F::new("type", T::String).required()),
        ),
        ServiceDef::new(
            "GetDesignTimePermissionsAsJSON",
            read,
            "the design-time grants",
        )
        .returns(T::Json),
        ServiceDef::new(
            "AddVisibilityPermission",
            upd,
            "makes the entity visible to an organization's members",
        )
        .input(F::new("organization", T::String).required()),
        ServiceDef::new(
            "DeleteVisibilityPermission",
            upd,
            "removes an organization's visibility",
        )
        .input(F::new("organization", T::String).required()),
        ServiceDef::new(
            "GetVisibilityPermissionsAsJSON",
            read,
            "the organizations that see the entity",
        )
        .returns(T::Json),
    ];
    if runtime {
        v.push(
            principal_params(
                ServiceDef::new(
                    "AddRunTimePermission",
                    upd,
                    "grants or denies a run-time permission (on a template: for every instance)",
                )
                .input(F::new("type", T::String).required().describe(
                    "PropertyRead, PropertyWrite, ServiceInvoke, EventInvoke or EventSubscribe",
                ))
                .input(
                    F::new("resource", T::String)
                        .default("*".into())
                        .describe("* or one property, service or event"),
                ),
            )
            .input(F::new("allow", T::Boolean).required()),
        );
        v.push(principal_params(
            ServiceDef::new(
                "DeleteRunTimePermission",
                upd,
                "removes a run-time grant or denial",
            )
            .input(F::new("type", T::String).required())
            .input(F::new("resource", T::String).default("*".into())),
        ));
        v.push(
            ServiceDef::new("GetRunTimePermissionsAsJSON", read, "the run-time grants")
                .returns(T::Json),
        );
    }
    if instance_visibility {
        v.push(
            ServiceDef::new(
                "AddInstanceVisibilityPermission",
                upd,
                "makes every Thing of the template visible to an organization",
            )
            .input(F::new("organization", T::String).required()),
        );
        v.push(
            ServiceDef::new(
                "DeleteInstanceVisibilityPermission",
                upd,
                "removes an organization's instance visibility",
            )
            .input(F::new("organization", T::String).required()),
        );
    }
    v
}

static PERMS_RUNTIME: LazyLock<Vec<ServiceDef>> =
    LazyLock::new(|| routed(Handler::Permissions, permission_services(true, false)));
static PERMS_TEMPLATE: LazyLock<Vec<ServiceDef>> =
    LazyLock::new(|| routed(Handler::Permissions, permission_services(true, true)));
static PERMS_DESIGN: LazyLock<Vec<ServiceDef>> =
    LazyLock::new(|| routed(Handler::Permissions, permission_services(false, false)));

/// Design-time permissions on whole collections.
static COLLECTION: LazyLock<Vec<ServiceDef>> = LazyLock::new(|| {
    routed(Handler::Permissions, {
        permission_services(false, false)
            .into_iter()
            .filter(|d| d.name.contains("DesignTime"))
            .collect()
    })
});

static MEMBERSHIP: LazyLock<Vec<ServiceDef>> = LazyLock::new(|| {
    routed(Handler::Membership, {
        let member = |d: ServiceDef| {
            d.input(
                F::new("member", T::String)
                    .required()
                    .describe("a user or group name"),
            )
            .input(
                F::new("type", T::String)
                    .required()
                    .describe("User or Group"),
            )
        };
        vec![
            member(ServiceDef::new(
                "AddMember",
                Access::Design(DesignPerm::Update),
                "adds a user or group",
            )),
            member(ServiceDef::new(
                "RemoveMember",
                Access::Design(DesignPerm::Update),
                "removes a user or group",
            )),
            ServiceDef::new(
                "GetMembers",
                Access::Design(DesignPerm::Read),
                "the direct members",
            )
            .returns(T::Infotable),
        ]
    })
});

static USER: LazyLock<Vec<ServiceDef>> = LazyLock::new(|| {
    routed(Handler::Membership, {
        vec![
            ServiceDef::new(
                "SetPassword",
                Access::Design(DesignPerm::Update),
                "sets the user's password",
            )
            .input(F::new("password", T::String).required()),
            ServiceDef::new(
                "ChangePassword",
                Access::Custom,
                "the user changes their own password",
            )
            .input(F::new("oldPassword", T::String).required())
            .input(F::new("newPassword", T::String).required()),
        ]
    })
});

static AUDIT: LazyLock<Vec<ServiceDef>> = LazyLock::new(|| {
    routed(Handler::Audit, {
        vec![ServiceDef::new(
            "QueryAuditHistory",
            Access::RunTime,
            "audit entries, newest first",
        )
        .input(
            F::new("category", T::String)
                .describe("AUTHENTICATION, SECURITY, ENTITY, EXTENSIONS or REMOTE_ACCESS"),
        )
        .input(F::new("principal", T::String))
        .input(F::new("entity", T::String).describe("Kind:name, e.g. Thing:gateway-1"))
        .input(F::new("since", T::Datetime))
        .input(F::new("until", T::Datetime))
        .input(F::new("limit", T::Integer).describe("1..10000, default 100"))
        .input(F::new("beforeId", T::Long).describe(
            "only entries older than this id (the next page: the last id of the previous one)",
        ))
        .returns(T::Infotable)]
    })
});

/// Configuration tables, on every subsystem.
static CONFIG: LazyLock<Vec<ServiceDef>> = LazyLock::new(|| {
    routed(Handler::Configuration, {
        vec![
            ServiceDef::new(
                "GetConfigurationTable",
                Access::Design(DesignPerm::Read),
                "the values of a configuration table, as one row",
            )
            .input(
                F::new("configurationTable", T::String)
                    .required()
                    .describe("e.g. Settings"),
            )
            .returns(T::Infotable),
            ServiceDef::new(
                "SetConfigurationTable",
                Access::Design(DesignPerm::Update),
                "sets values of a configuration table; out-of-range values are refused with 422",
            )
            .input(F::new("configurationTable", T::String).required())
            .input(
                F::new("values", T::Infotable)
                    .required()
                    .describe("one row: field name to value"),
            ),
        ]
    })
});

/// `PlatformSubsystem`: extension packages (administrators only).
static PLATFORM: LazyLock<Vec<ServiceDef>> = LazyLock::new(|| {
    routed(Handler::ExtensionPackages, {
        vec![
        ServiceDef::new("GetExtensionPackageList", Access::Custom, "the installed extension packages and whether each is loaded")
            .returns(T::Infotable),
        ServiceDef::new("DeleteExtensionPackage", Access::Custom, "deletes an extension package (409 while another depends on it or Things use its templates)")
            .input(F::new("packageName", T::String).required()),
    ]
    })
});

/// `Resources/EntityServices`: creation and deletion of entities.
static ENTITY_SERVICES: LazyLock<Vec<ServiceDef>> = LazyLock::new(|| {
    routed(Handler::EntityServices, {
        let c = Access::Custom;
        let mut v = vec![
            ServiceDef::new(
                "CreateThing",
                c,
                "creates a Thing from a template (needs Create on Things)",
            )
            .input(name_param())
            .input(F::new("thingTemplateName", T::String).required())
            .input(desc_param())
            .input(F::new("tags", T::Json).describe("an array of strings")),
            ServiceDef::new(
                "CreateThingTemplate",
                c,
                "creates a Thing Template (needs Create on ThingTemplates)",
            )
            .input(name_param())
            .input(F::new("baseThingTemplateName", T::String).default("GenericThing".into()))
            .input(F::new("implementedShapes", T::Json).describe("an array of Thing Shape names"))
            .input(desc_param()),
            ServiceDef::new(
                "CreateThingShape",
                c,
                "creates a Thing Shape (needs Create on ThingShapes)",
            )
            .input(name_param())
            .input(desc_param()),
            ServiceDef::new(
                "CreateDataShape",
                c,
                "creates a Data Shape (needs Create on DataShapes)",
            )
            .input(name_param())
            .input(
                F::new("fields", T::Infotable)
                    .required()
                    .describe("rows: name, baseType, description?, dataShape?, required?"),
            )
            .input(desc_param()),
            ServiceDef::new(
                "CreateUser",
                c,
                "creates a user, member of Users (needs Create on Users)",
            )
            .input(name_param())
            .input(
                F::new("password", T::String)
                    .required()
                    .describe("8 to 1024 bytes"),
            )
            .input(desc_param()),
            ServiceDef::new(
                "CreateGroup",
                c,
                "creates a user group (needs Create on Groups)",
            )
            .input(name_param())
            .input(desc_param()),
            ServiceDef::new(
                "CreateOrganization",
                c,
                "creates an organization (needs Create on Organizations)",
            )
            .input(name_param())
            .input(desc_param()),
            ServiceDef::new(
                "CreateApplicationKey",
                c,
                "creates an application key; the result holds keyId, shown once",
            )
            .input(name_param())
            .input(
                F::new("user", T::String)
                    .required()
                    .describe("the user the key acts as"),
            )
            .input(
                F::new("expirationDate", T::Datetime)
                    .describe("when the key stops working; must be in the future"),
            )
            .input(desc_param())
            .returns(T::Infotable),
        ];
        for n in [
            "DeleteThing",
            "DeleteThingTemplate",
            "DeleteThingShape",
            "DeleteDataShape",
            "DeleteUser",
            "DeleteGroup",
            "DeleteOrganization",
            "DeleteApplicationKey",
        ] {
            v.push(
                ServiceDef::new(
                    n,
                    c,
                    "deletes the entity (needs Delete on it or its collection)",
                )
                .input(name_param()),
            );
        }
        v
    })
});

/// Every host service list (for the routing test).
#[cfg(test)]
pub(super) fn all_host_services() -> impl Iterator<Item = &'static ServiceDef> {
    let lists: [&'static [ServiceDef]; 12] = [
        &THING,
        &PROPERTY_DEFS,
        &PERMS_RUNTIME,
        &PERMS_TEMPLATE,
        &PERMS_DESIGN,
        &COLLECTION,
        &MEMBERSHIP,
        &USER,
        &AUDIT,
        &CONFIG,
        &PLATFORM,
        &ENTITY_SERVICES,
    ];
    lists.into_iter().flatten()
}

/// Every service an entity offers.
pub fn services_for(kind: EntityKind, entity: &str) -> impl Iterator<Item = &'static ServiceDef> {
    let lists: [&'static [ServiceDef]; 2] = match kind {
        EntityKind::Thing => [&THING, &PERMS_RUNTIME],
        EntityKind::ThingTemplate => [&PROPERTY_DEFS, &PERMS_TEMPLATE],
        EntityKind::ThingShape => [&PROPERTY_DEFS, &PERMS_DESIGN],
        EntityKind::Group | EntityKind::Organization => [&MEMBERSHIP, &PERMS_DESIGN],
        EntityKind::User => [&USER, &PERMS_DESIGN],
        EntityKind::Subsystem if entity == "AuditSubsystem" => [&AUDIT, &PERMS_RUNTIME],
        EntityKind::Subsystem if entity == "PlatformSubsystem" => [&PLATFORM, &PERMS_RUNTIME],
        EntityKind::Subsystem => [&[], &PERMS_RUNTIME],
        EntityKind::Resource => [&ENTITY_SERVICES, &[]],
        EntityKind::Collection => [&COLLECTION, &[]],
        EntityKind::DataShape | EntityKind::ApplicationKey => [&[], &PERMS_DESIGN],
    };
    let thing_defs: &'static [ServiceDef] = match kind {
        EntityKind::Thing => &PROPERTY_DEFS,
        EntityKind::Subsystem => &CONFIG,
        _ => &[],
    };
    lists.into_iter().chain([thing_defs]).flatten()
}
