//! The messages that cross the extension boundary, serialized as JSON, and the manifest.
//!
//! Versioned with the ABI: a field added here must be optional (`#[serde(default)]`) so an older
//! host or extension still decodes the message; anything else is a new ABI major version.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Base types of properties, parameters and results (the host's, by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum BaseType {
    String,
    Number,
    Integer,
    Long,
    Boolean,
    Datetime,
    Json,
    Infotable,
    Thingname,
    Guid,
    Nothing,
}

/// A typed field: a property, a service parameter or result, a data shape field. The JSON shape
/// is the host's `FieldDef`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Field {
    pub name: String,
    pub base_type: BaseType,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_shape: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<Value>,
}

impl Field {
    pub fn new(name: &str, base_type: BaseType) -> Self {
        Field {
            name: name.into(),
            base_type,
            description: String::new(),
            data_shape: None,
            required: false,
            default_value: None,
        }
    }
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
    pub fn describe(mut self, d: &str) -> Self {
        self.description = d.into();
        self
    }
    pub fn shape(mut self, s: &str) -> Self {
        self.data_shape = Some(s.into());
        self
    }
    pub fn default(mut self, v: impl Into<Value>) -> Self {
        self.default_value = Some(v.into());
        self
    }
}

/// A service an extension implements: its typed signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDecl {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub inputs: Vec<Field>,
    /// `None` for a service that returns nothing.
    #[serde(default)]
    pub result: Option<Field>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataShapeDef {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub fields: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingShapeDef {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub properties: Vec<Field>,
    #[serde(default)]
    pub services: Vec<ServiceDecl>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingTemplateDef {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Defaults to `GenericThing`.
    #[serde(default)]
    pub base: Option<String>,
    #[serde(default)]
    pub shapes: Vec<String>,
    #[serde(default)]
    pub properties: Vec<Field>,
    #[serde(default)]
    pub services: Vec<ServiceDecl>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingDef {
    pub name: String,
    pub template: String,
    #[serde(default)]
    pub description: String,
    /// Services on this Thing alone (beyond its template's and shapes').
    #[serde(default)]
    pub services: Vec<ServiceDecl>,
}

/// One field of a subsystem configuration table, with its range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigField {
    #[serde(flatten)]
    pub field: Field,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigTableDef {
    pub name: String,
    pub fields: Vec<ConfigField>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubsystemDef {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub configuration: Vec<ConfigTableDef>,
    #[serde(default)]
    pub services: Vec<ServiceDecl>,
}

/// A WebSocket route the extension wants the host to serve (e.g. `/Thingworx/WS` for CSE), ABI 1.2.
///
/// The host accepts the upgrade only for an authenticated caller offering one of `subprotocols`,
/// owns the socket, answers pings, enforces the limits below, and hands the extension the
/// connection's events (`connectionOpen`, `connectionMessage`, `connectionClosed`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteDef {
    /// `/Thingworx/WS` or a path under it.
    pub path: String,
    /// WebSocket subprotocols accepted on the route, e.g. `thingport.v1`.
    #[serde(default)]
    pub subprotocols: Vec<String>,
    /// The largest text message accepted (larger: the host closes with status 1009).
    #[serde(default = "RouteDef::default_max_message_bytes")]
    pub max_message_bytes: u32,
    /// The host closes a connection whose first message does not arrive within this time (1008).
    #[serde(default = "RouteDef::default_hello_timeout_ms")]
    pub hello_timeout_ms: u64,
    /// The host pings every connection this often.
    #[serde(default = "RouteDef::default_ping_interval_ms")]
    pub ping_interval_ms: u64,
    /// The host closes a connection from which nothing (not even a pong) arrived for this long.
    #[serde(default = "RouteDef::default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

impl RouteDef {
    pub(crate) fn default_max_message_bytes() -> u32 {
        64 * 1024
    }
    pub(crate) fn default_hello_timeout_ms() -> u64 {
        10_000
    }
    pub(crate) fn default_ping_interval_ms() -> u64 {
        10_000
    }
    pub(crate) fn default_idle_timeout_ms() -> u64 {
        25_000
    }
}

/// Services an extension implements on a template it does not define (e.g. CSE's `Ping` on the
/// host's `RemoteThing`), ABI 1.2. The template must exist when the package is imported; the
/// services apply to every Thing deriving from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateServicesDef {
    pub template: String,
    pub services: Vec<ServiceDecl>,
}

/// Everything an extension contributes to the model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Definitions {
    #[serde(default)]
    pub data_shapes: Vec<DataShapeDef>,
    #[serde(default)]
    pub thing_shapes: Vec<ThingShapeDef>,
    #[serde(default)]
    pub thing_templates: Vec<ThingTemplateDef>,
    #[serde(default)]
    pub things: Vec<ThingDef>,
    #[serde(default)]
    pub subsystems: Vec<SubsystemDef>,
    #[serde(default)]
    pub routes: Vec<RouteDef>,
    #[serde(default)]
    pub template_services: Vec<TemplateServicesDef>,
}

/// The manifest embedded in the library (`ExtensionApi::manifest`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The crate name the library was built from.
    pub name: String,
    /// The crate version.
    pub version: String,
    /// The SDK version it was built with.
    pub sdk_version: String,
    #[serde(default)]
    pub definitions: Definitions,
}

/// Who called, as the host resolved them (the host has already checked permissions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Caller {
    pub name: String,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub source_ip: String,
}

/// A call from the host into the extension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Request {
    /// A service call on one of the extension's entities, parameters already validated.
    #[serde(rename_all = "camelCase")]
    Invoke {
        entity_kind: String,
        entity: String,
        service: String,
        params: Value,
        caller: Caller,
    },
    /// A timer the extension scheduled fired.
    #[serde(rename_all = "camelCase")]
    Timer { name: String },
    /// An administrator changed a configuration table of one of the extension's subsystems;
    /// `config` is the whole configuration in the shape `create` receives (ABI 1.1).
    #[serde(rename_all = "camelCase")]
    Configure { config: Value },
    /// A client opened a WebSocket on one of the extension's routes (ABI 1.2). `Ok` accepts it;
    /// an error closes it at once (status 1008, the error's message as the reason).
    #[serde(rename_all = "camelCase")]
    ConnectionOpen {
        connection: u64,
        route: String,
        subprotocol: String,
        /// The authenticated user (the application key's user for an agent).
        principal: Caller,
    },
    /// One text message on an open connection, in arrival order (the next one is delivered after
    /// this call returns). An error is logged; the connection stays open.
    #[serde(rename_all = "camelCase")]
    ConnectionMessage { connection: u64, text: String },
    /// The connection ended (`reason` says why: the peer closed, the link went silent, the
    /// extension or the server closed it). No message on it follows.
    #[serde(rename_all = "camelCase")]
    ConnectionClosed { connection: u64, reason: String },
    /// The server is stopping (ABI 1.2): its connections are closed and timers stopped; write
    /// what the instance still holds. The last call before `destroy`.
    Shutdown,
}

/// Whose fault an error is; the host maps it to an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// 400: the caller's input is wrong.
    BadRequest,
    /// 403.
    Forbidden,
    /// 404.
    NotFound,
    /// 409: the request conflicts with the current state.
    Conflict,
    /// 422: well-formed but out of range.
    Unprocessable,
    /// 503: try again later.
    Unavailable,
    /// 500: the extension's own failure.
    Internal,
}

/// The body of an error response (`STATUS_ERROR`), from either side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub kind: ErrorKind,
}

/// The body of a successful `Invoke`: the service's result value (`null` for none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvokeResult {
    pub result: Value,
}

/// A platform operation the extension asks of the host (`HostApi::host_call`).
///
/// The host answers `STATUS_OK` with, per variant: `GetProperties` a JSON object of property
/// values; `Invoke` the service's result as an [`InfoTable`]; `ThingsOfTemplate` a JSON array of
/// Thing names; `SetProperties` and `Audit` anything (ignored; `null` or an empty body). On
/// failure, `STATUS_ERROR` with an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum HostRequest {
    /// Property values of a Thing, as one JSON object.
    #[serde(rename_all = "camelCase")]
    GetProperties { thing: String },
    /// Writes property values (validated by the host) atomically.
    #[serde(rename_all = "camelCase")]
    SetProperties {
        thing: String,
        values: serde_json::Map<String, Value>,
    },
    /// Invokes a service on another entity, as the system (not as the original caller).
    #[serde(rename_all = "camelCase")]
    Invoke {
        entity_kind: String,
        entity: String,
        service: String,
        params: Value,
    },
    /// Writes an audit entry in `category` (e.g. `REMOTE_ACCESS`).
    #[serde(rename_all = "camelCase")]
    Audit {
        category: String,
        entity: String,
        message: String,
    },
    /// Names of the Things of a template (and of templates derived from it).
    #[serde(rename_all = "camelCase")]
    ThingsOfTemplate { template: String },
    /// Schedules (or replaces) the timer `name` of this extension: it fires `Request::Timer`
    /// after `delay_ms`, then every `period_ms` if given (ABI 1.1). Result: `null`.
    #[serde(rename_all = "camelCase")]
    ScheduleTimer {
        name: String,
        delay_ms: u64,
        #[serde(default)]
        period_ms: Option<u64>,
    },
    /// Cancels the timer `name` (no error if there is none). Result: `null`.
    #[serde(rename_all = "camelCase")]
    CancelTimer { name: String },
    /// Queues a text message on one of the extension's connections (ABI 1.2). Never blocks: an
    /// `Unavailable` error when the connection is gone or its send queue is full.
    #[serde(rename_all = "camelCase")]
    ConnectionSend { connection: u64, text: String },
    /// Closes one of the extension's connections with a WebSocket status and reason (ABI 1.2).
    /// `connectionClosed` follows. No error when it is already closed.
    #[serde(rename_all = "camelCase")]
    ConnectionClose {
        connection: u64,
        code: u16,
        reason: String,
    },
    /// What the host knows of a Thing (ABI 1.2): a [`ThingInfo`], or `NotFound`.
    #[serde(rename_all = "camelCase")]
    DescribeThing { thing: String },
    /// Whether `user` holds a permission (ABI 1.2): `perm` is a run-time permission
    /// (`PropertyRead`, `PropertyWrite`, `ServiceInvoke`, `EventInvoke`, `EventSubscribe`) on the
    /// property, service or event `resource`, or a design-time one (`Read`, `Update`, `Delete`)
    /// with an empty `resource`, or `Visible` (whether the user can see the entity at all).
    /// Result: a JSON boolean (`false` also when the user cannot see
    /// the entity or does not exist).
    #[serde(rename_all = "camelCase")]
    CheckPermission {
        user: String,
        entity_kind: String,
        entity: String,
        perm: String,
        #[serde(default)]
        resource: String,
    },
    /// Writes property values of several Things in one transaction (ABI 1.2): all or nothing.
    /// Result: `null`.
    #[serde(rename_all = "camelCase")]
    SetPropertiesBatch { updates: Vec<PropertyUpdate> },
    /// Writes (inserts or replaces) one of the extension's records (ABI 1.3), with an optional
    /// audit entry in the same transaction. Records belong to the package: kept across
    /// upgrades, deleted with it. Result: `null`.
    #[serde(rename_all = "camelCase")]
    RecordPut {
        collection: String,
        key: String,
        value: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audit: Option<AuditEntry>,
    },
    /// One record's value, `null` when there is none (ABI 1.3).
    #[serde(rename_all = "camelCase")]
    RecordGet { collection: String, key: String },
    /// Records of a collection in key order (ABI 1.3): keys starting with `prefix`, after
    /// `after` (exclusive, for paging), at most `limit` (1..1000). Result: `[{key, value}]`.
    #[serde(rename_all = "camelCase")]
    RecordQuery {
        collection: String,
        #[serde(default)]
        prefix: String,
        #[serde(default)]
        after: String,
        limit: u32,
    },
    /// Deletes one record (no error when there is none), with an optional audit entry (ABI 1.3).
    #[serde(rename_all = "camelCase")]
    RecordDelete {
        collection: String,
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audit: Option<AuditEntry>,
    },
    /// Encrypts a secret with the platform's secrets key (ABI 1.4), bound to this extension and
    /// `context` (what the value is, e.g. `endpoint-secrets/gw-1/ssh/password`). Result: the
    /// sealed value as a JSON string, safe to store in a record. The key never leaves the host.
    #[serde(rename_all = "camelCase")]
    SecretSeal { context: String, plaintext: String },
    /// Decrypts what `SecretSeal` made for the same extension and `context` (ABI 1.4). Result:
    /// the plaintext as a JSON string; an error when the value was altered, moved to another
    /// context, or sealed with another key.
    #[serde(rename_all = "camelCase")]
    SecretOpen { context: String, sealed: String },
}

/// An audit entry written with a record change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub category: String,
    pub entity: String,
    pub message: String,
}

/// One row of [`HostRequest::RecordQuery`]'s result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub key: String,
    pub value: Value,
}

/// One Thing's writes in [`HostRequest::SetPropertiesBatch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyUpdate {
    pub thing: String,
    pub values: serde_json::Map<String, Value>,
}

/// The answer to [`HostRequest::DescribeThing`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingInfo {
    pub name: String,
    pub template: String,
    /// The template and its bases, nearest first (ends with `GenericThing`).
    pub templates: Vec<String>,
    /// The shapes of the Thing and of its templates.
    pub shapes: Vec<String>,
    pub enabled: bool,
    /// The Thing's tags (`Vocabulary:term`); empty from hosts older than ABI 1.4.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A service's result as the host answers [`HostRequest::Invoke`]: the REST API's infotable,
/// `{"dataShape": {"fieldDefinitions": {name: field}}, "rows": [{name: value}]}`. A service with a
/// single result has one row with the field `result`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InfoTable {
    #[serde(default)]
    pub data_shape: Value,
    #[serde(default)]
    pub rows: Vec<serde_json::Map<String, Value>>,
}
