//! The host API an extension calls: platform operations and logging, through a [`Host`] handle.
//!
//! Each operation is one [`HostRequest`] sent synchronously to the host; the host answers with a
//! JSON body (shapes documented on each method) or an [`ErrorBody`](crate::protocol::ErrorBody).
//! A [`Host`] is backed either by the real host across the C ABI (built by the SDK in `create`) or
//! by an in-process [`HostBackend`] such as [`FakeHost`](crate::testing::FakeHost).

use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};
use thingport_extension_abi as abi;

use crate::protocol::{
    AuditEntry, BaseType, HostRequest, InfoTable, PropertyUpdate, Record, ThingInfo,
};
use crate::Error;

/// Severity of a log line; the host records it in its `tracing` under the extension's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    /// The `LOG_*` constant of the ABI.
    pub fn to_abi(self) -> u32 {
        match self {
            Level::Error => abi::LOG_ERROR,
            Level::Warn => abi::LOG_WARN,
            Level::Info => abi::LOG_INFO,
            Level::Debug => abi::LOG_DEBUG,
            Level::Trace => abi::LOG_TRACE,
        }
    }

    /// The level of a `LOG_*` constant; `None` for an unknown value.
    pub fn from_abi(level: u32) -> Option<Level> {
        Some(match level {
            abi::LOG_ERROR => Level::Error,
            abi::LOG_WARN => Level::Warn,
            abi::LOG_INFO => Level::Info,
            abi::LOG_DEBUG => Level::Debug,
            abi::LOG_TRACE => Level::Trace,
            _ => return None,
        })
    }
}

/// What carries a [`Host`]'s requests: the C ABI in a loaded extension, or an in-process fake in
/// tests. Implement it to plug your own test double.
pub trait HostBackend: Send + Sync + 'static {
    /// Performs one platform operation and returns the host's response body (the JSON the host
    /// sends with `STATUS_OK`), or its error.
    fn host_call(&self, request: &HostRequest) -> Result<Value, Error>;

    /// Records a log line. `target` is free-form (empty by default; a module path or a topic).
    fn log(&self, level: Level, target: &str, message: &str);
}

/// The extension's handle to the platform, received in
/// [`Extension::create`](crate::Extension::create). Cheap to clone; usable from any thread, for
/// the life of the instance.
///
/// Every call is synchronous: it returns when the host has done the work. The host never holds a
/// lock across an extension call, so calling back into the host (even into another service of
/// this extension) does not deadlock.
#[derive(Clone)]
pub struct Host {
    backend: Arc<dyn HostBackend>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Host")
    }
}

impl Host {
    /// A handle over any backend.
    pub fn new(backend: Arc<dyn HostBackend>) -> Host {
        Host { backend }
    }

    /// The property values of a Thing, by property name (response body: a JSON object).
    pub fn get_properties(&self, thing: &str) -> Result<Map<String, Value>, Error> {
        let response = self.backend.host_call(&HostRequest::GetProperties {
            thing: thing.into(),
        })?;
        decode(response, "GetProperties")
    }

    /// One property value of a Thing (`null` when it has none).
    pub fn get_property(&self, thing: &str, property: &str) -> Result<Value, Error> {
        let mut values = self.get_properties(thing)?;
        Ok(values.remove(property).unwrap_or(Value::Null))
    }

    /// Writes property values of a Thing atomically; the host validates them against the
    /// properties' base types (response body: ignored).
    pub fn set_properties(&self, thing: &str, values: Map<String, Value>) -> Result<(), Error> {
        self.backend.host_call(&HostRequest::SetProperties {
            thing: thing.into(),
            values,
        })?;
        Ok(())
    }

    /// Writes one property value of a Thing.
    pub fn set_property(&self, thing: &str, property: &str, value: Value) -> Result<(), Error> {
        let mut values = Map::new();
        values.insert(property.into(), value);
        self.set_properties(thing, values)
    }

    /// Invokes a service on another entity, as the system (not as the user whose call is being
    /// served); the host checks and validates the parameters as for a REST call. `entity_kind` is
    /// `Things`, `ThingTemplates`, `ThingShapes` or `Subsystems`. The response body is the
    /// service's result [`InfoTable`]; [`InfoTable::result`] reads a single-valued result.
    pub fn invoke(
        &self,
        entity_kind: &str,
        entity: &str,
        service: &str,
        params: Value,
    ) -> Result<InfoTable, Error> {
        let response = self.backend.host_call(&HostRequest::Invoke {
            entity_kind: entity_kind.into(),
            entity: entity.into(),
            service: service.into(),
            params,
        })?;
        decode(response, "Invoke")
    }

    /// Writes an audit entry in `category` (e.g. `REMOTE_ACCESS`) about `entity` (response body:
    /// ignored).
    pub fn audit(&self, category: &str, entity: &str, message: &str) -> Result<(), Error> {
        self.backend.host_call(&HostRequest::Audit {
            category: category.into(),
            entity: entity.into(),
            message: message.into(),
        })?;
        Ok(())
    }

    /// The names of the Things of a template and of the templates derived from it (response
    /// body: a JSON array of strings).
    pub fn things_of_template(&self, template: &str) -> Result<Vec<String>, Error> {
        let response = self.backend.host_call(&HostRequest::ThingsOfTemplate {
            template: template.into(),
        })?;
        decode(response, "ThingsOfTemplate")
    }

    /// Schedules (or replaces) the timer `name`: `Extension::on_timer(name)` runs after `delay`,
    /// then every `period` if given. The host owns the clock; timers end with the instance.
    pub fn schedule_timer(
        &self,
        name: &str,
        delay: std::time::Duration,
        period: Option<std::time::Duration>,
    ) -> Result<(), Error> {
        self.backend.host_call(&HostRequest::ScheduleTimer {
            name: name.into(),
            delay_ms: delay.as_millis().try_into().unwrap_or(u64::MAX),
            period_ms: period.map(|p| p.as_millis().try_into().unwrap_or(u64::MAX)),
        })?;
        Ok(())
    }

    /// Cancels the timer `name`, if it exists.
    pub fn cancel_timer(&self, name: &str) -> Result<(), Error> {
        self.backend
            .host_call(&HostRequest::CancelTimer { name: name.into() })?;
        Ok(())
    }

    /// Queues a text message on one of this extension's connections (ABI 1.2). Never blocks:
    /// `Unavailable` when the connection is gone or its send queue is full (a peer that does not
    /// read).
    pub fn send(&self, connection: u64, text: String) -> Result<(), Error> {
        self.backend
            .host_call(&HostRequest::ConnectionSend { connection, text })?;
        Ok(())
    }

    /// Closes one of this extension's connections with a WebSocket status (1000 normal, 1008
    /// policy violation, ...) and a reason the peer receives (at most 120 bytes are sent).
    /// `on_connection_closed` follows.
    pub fn close(&self, connection: u64, code: u16, reason: &str) -> Result<(), Error> {
        self.backend.host_call(&HostRequest::ConnectionClose {
            connection,
            code,
            reason: reason.into(),
        })?;
        Ok(())
    }

    /// What the host knows of a Thing: template chain, shapes, enabled (`NotFound` if none).
    pub fn describe_thing(&self, thing: &str) -> Result<ThingInfo, Error> {
        let response = self.backend.host_call(&HostRequest::DescribeThing {
            thing: thing.into(),
        })?;
        decode(response, "DescribeThing")
    }

    /// Whether `user` holds permission `perm` on an entity (see
    /// [`HostRequest::CheckPermission`]); `false` when the user cannot see it.
    pub fn check_permission(
        &self,
        user: &str,
        entity_kind: &str,
        entity: &str,
        perm: &str,
        resource: &str,
    ) -> Result<bool, Error> {
        let response = self.backend.host_call(&HostRequest::CheckPermission {
            user: user.into(),
            entity_kind: entity_kind.into(),
            entity: entity.into(),
            perm: perm.into(),
            resource: resource.into(),
        })?;
        decode(response, "CheckPermission")
    }

    /// Writes property values of several Things in one transaction: all or nothing.
    pub fn set_properties_batch(&self, updates: Vec<PropertyUpdate>) -> Result<(), Error> {
        self.backend
            .host_call(&HostRequest::SetPropertiesBatch { updates })?;
        Ok(())
    }

    /// Writes (inserts or replaces) one of this extension's records, with an optional audit
    /// entry `(category, entity, message)` in the same transaction (ABI 1.3). Records survive
    /// restarts and upgrades and are deleted with the package.
    pub fn record_put(
        &self,
        collection: &str,
        key: &str,
        value: Value,
        audit: Option<(&str, &str, &str)>,
    ) -> Result<(), Error> {
        self.backend.host_call(&HostRequest::RecordPut {
            collection: collection.into(),
            key: key.into(),
            value,
            audit: audit.map(audit_entry),
        })?;
        Ok(())
    }

    /// One record's value (`None` when there is none).
    pub fn record_get(&self, collection: &str, key: &str) -> Result<Option<Value>, Error> {
        let v = self.backend.host_call(&HostRequest::RecordGet {
            collection: collection.into(),
            key: key.into(),
        })?;
        Ok((!v.is_null()).then_some(v))
    }

    /// Records of a collection in key order: keys starting with `prefix`, after `after`
    /// (exclusive; pass the last key of a page to get the next), at most `limit` (1..1000).
    pub fn record_query(
        &self,
        collection: &str,
        prefix: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<Record>, Error> {
        let response = self.backend.host_call(&HostRequest::RecordQuery {
            collection: collection.into(),
            prefix: prefix.into(),
            after: after.into(),
            limit,
        })?;
        decode(response, "RecordQuery")
    }

    /// Deletes one record (no error when there is none), with an optional audit entry.
    pub fn record_delete(
        &self,
        collection: &str,
        key: &str,
        audit: Option<(&str, &str, &str)>,
    ) -> Result<(), Error> {
        self.backend.host_call(&HostRequest::RecordDelete {
            collection: collection.into(),
            key: key.into(),
            audit: audit.map(audit_entry),
        })?;
        Ok(())
    }

    /// Encrypts `plaintext` with the platform's secrets key, bound to this extension and
    /// `context` (ABI 1.4): store the result, never the plaintext.
    pub fn secret_seal(&self, context: &str, plaintext: &str) -> Result<String, Error> {
        let v = self.backend.host_call(&HostRequest::SecretSeal {
            context: context.into(),
            plaintext: plaintext.into(),
        })?;
        decode(v, "SecretSeal")
    }

    /// Decrypts a value [`Host::secret_seal`] made for the same `context` (ABI 1.4).
    pub fn secret_open(&self, context: &str, sealed: &str) -> Result<String, Error> {
        let v = self.backend.host_call(&HostRequest::SecretOpen {
            context: context.into(),
            sealed: sealed.into(),
        })?;
        decode(v, "SecretOpen")
    }

    /// Sends a log line to the host, which records it under the extension's name.
    pub fn log(&self, level: Level, message: impl fmt::Display) {
        self.backend.log(level, "", &message.to_string());
    }

    /// Sends a log line with a `target` (a module path or topic) to the host.
    pub fn log_target(&self, level: Level, target: &str, message: impl fmt::Display) {
        self.backend.log(level, target, &message.to_string());
    }

    pub fn error(&self, message: impl fmt::Display) {
        self.log(Level::Error, message);
    }
    pub fn warn(&self, message: impl fmt::Display) {
        self.log(Level::Warn, message);
    }
    pub fn info(&self, message: impl fmt::Display) {
        self.log(Level::Info, message);
    }
    pub fn debug(&self, message: impl fmt::Display) {
        self.log(Level::Debug, message);
    }
    pub fn trace(&self, message: impl fmt::Display) {
        self.log(Level::Trace, message);
    }
}

impl InfoTable {
    /// A one-row table holding `value` in the field `result` (of the base type its JSON type
    /// suggests): what the host answers for a service with a single result.
    pub fn scalar(value: Value) -> InfoTable {
        let base_type = match &value {
            Value::String(_) => BaseType::String,
            Value::Number(_) => BaseType::Number,
            Value::Bool(_) => BaseType::Boolean,
            _ => BaseType::Json,
        };
        let field = serde_json::json!({"name": "result", "baseType": base_type});
        let mut row = Map::new();
        row.insert("result".into(), value);
        InfoTable {
            data_shape: serde_json::json!({"fieldDefinitions": {"result": field}}),
            rows: vec![row],
        }
    }

    /// The field `result` of the first row: the value of a single-valued result (`None` for a
    /// service without one).
    pub fn result(&self) -> Option<&Value> {
        self.rows.first()?.get("result")
    }
}

fn audit_entry((category, entity, message): (&str, &str, &str)) -> AuditEntry {
    AuditEntry {
        category: category.into(),
        entity: entity.into(),
        message: message.into(),
    }
}

fn decode<T: serde::de::DeserializeOwned>(response: Value, operation: &str) -> Result<T, Error> {
    serde_json::from_value(response).map_err(|e| {
        Error::internal(format!(
            "the host's response to {operation} is malformed: {e}"
        ))
    })
}
