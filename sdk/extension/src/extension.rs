//! The trait an extension implements, and the service call it receives.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::protocol::{Caller, Definitions};
use crate::{Error, Host};

/// A Thingport extension: what it contributes to the model and how it answers calls.
///
/// The host loads the library once, reads [`Extension::definitions`] through the manifest, then
/// creates instances with [`Extension::create`] and sends each of them calls: services with
/// [`Extension::invoke`], timers with [`Extension::on_timer`]. An instance lives until the host
/// destroys it (the extension is deleted or the server stops): that drops the value.
///
/// The host may call an instance from several threads at once, hence `Send + Sync`: keep mutable
/// state behind a `Mutex` or atomics. Calls are synchronous and run on the host's blocking
/// threads under a deadline, so a callback may block briefly (a host call, a lock) but should not
/// wait for long. The extension owns no I/O (no sockets, no tokio runtime, no threads that outlive
/// a call): it reaches the platform through the [`Host`] it receives in `create`.
///
/// A panic in any callback is caught at the boundary: the call fails with "panicked" and the host
/// poisons the instance (it receives no more calls). Return an [`Error`] for anything expected.
///
/// Export the type with [`export_extension!`](crate::export_extension).
pub trait Extension: Send + Sync + Sized + 'static {
    /// The entities, services, configuration tables and routes this extension contributes.
    ///
    /// Called once when the library is loaded, before any instance exists, to build the manifest
    /// the host reads (the host registers these entities under the extension's ownership and
    /// refuses the extension if a name is taken). It must be deterministic and must not panic: a
    /// panic here makes the library's entry point fail, and the host refuses the library.
    fn definitions() -> Definitions;

    /// Creates an instance, once per instance the host loads (normally one per server process),
    /// before any call reaches it.
    ///
    /// `host` is the handle to keep for host calls and logging (cheap to clone). `config` is the
    /// configuration the host holds for the extension's subsystems (see `docs/extension-abi.md`;
    /// `null` when the host passed none). An `Err` means the extension fails to load: the host
    /// reports the error and sends no calls.
    fn create(host: Host, config: Value) -> Result<Self, Error>;

    /// A service call on one of the entities this extension defines.
    ///
    /// Called whenever a user (or another extension, through the host) invokes a service declared
    /// in [`Extension::definitions`]; the host has already checked permissions and validated the
    /// parameters against the declared inputs. `Ok(value)` is the service's result (`null` for a
    /// service without one); `Err` becomes the caller's error, with the HTTP status of its kind.
    ///
    /// Default: a `NotFound` error naming the service.
    fn invoke(&self, call: &Call) -> Result<Value, Error> {
        Err(Error::not_found(format!(
            "service {} is not implemented on {} {}",
            call.service, call.entity_kind, call.entity
        )))
    }

    /// A timer this instance scheduled fired. `Err` is logged by the host; it does not cancel the
    /// timer.
    ///
    /// Default: does nothing.
    fn on_timer(&self, name: &str) -> Result<(), Error> {
        let _ = name;
        Ok(())
    }

    /// An administrator changed a configuration table of one of this extension's subsystems
    /// (`SetConfigurationTable`); `config` is the whole configuration, shaped as in `create`
    /// (`{"<table>": {"<field>": value}}`), already validated against the declared types and ranges.
    ///
    /// Default: does nothing (the new values reach `create` at the next start).
    fn on_configure(&self, config: &Value) -> Result<(), Error> {
        let _ = config;
        Ok(())
    }

    /// A client opened a WebSocket on one of this extension's routes (declared in
    /// [`Definitions::routes`]). The host has authenticated `connection.principal` and owns the
    /// socket; send with [`Host::send`] and close with [`Host::close`]. `Err` refuses the
    /// connection: the host closes it with status 1008 and the error's message.
    ///
    /// Default: refuses every connection.
    fn on_connection_open(&self, connection: &Connection) -> Result<(), Error> {
        Err(Error::unavailable(format!(
            "this extension does not serve {}",
            connection.route
        )))
    }

    /// One text message arrived on an open connection. Messages of one connection arrive in
    /// order, one call at a time (the next is read after this call returns); messages of
    /// different connections may arrive concurrently. `Err` is logged by the host; the connection
    /// stays open (close it with [`Host::close`] if the peer misbehaves).
    ///
    /// Default: ignores the message.
    fn on_connection_message(&self, connection: u64, text: &str) -> Result<(), Error> {
        let _ = (connection, text);
        Ok(())
    }

    /// A connection ended, for any reason (`reason` says which); nothing more arrives on it and
    /// [`Host::send`] on it fails.
    ///
    /// Default: does nothing.
    fn on_connection_closed(&self, connection: u64, reason: &str) -> Result<(), Error> {
        let _ = (connection, reason);
        Ok(())
    }

    /// The server is stopping: every connection has been closed (and `on_connection_closed`
    /// delivered) and timers no longer fire. Write whatever state the instance still holds; host
    /// calls still work. Called once, under the usual deadline.
    ///
    /// Default: does nothing.
    fn on_shutdown(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// A WebSocket connection the host opened on one of the extension's routes.
#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    /// The host's handle, unique for the life of the server process.
    pub id: u64,
    /// The route's path, e.g. `/Thingworx/WS`.
    pub route: String,
    /// The subprotocol the host agreed with the client, one of the route's.
    pub subprotocol: String,
    /// The authenticated user (for an application key, its user) and the client's address.
    pub principal: Caller,
}

/// One service call, as [`Extension::invoke`] receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The kind of the entity called, as in the host's URLs: `Things`, `ThingTemplates`,
    /// `ThingShapes`, `Subsystems`.
    pub entity_kind: String,
    /// The entity's name, e.g. the Thing the service was called on.
    pub entity: String,
    /// The service's name, as declared.
    pub service: String,
    /// The parameters as one JSON object (`null` when none were passed); decode them with
    /// [`Call::params`].
    pub params: Value,
    /// Who called, as the host authenticated them.
    pub caller: Caller,
}

impl Call {
    /// Decodes the parameters into the service's input type (the type its declaration was built
    /// from with [`service`](crate::service())); absent parameters decode as an empty object, so a
    /// struct of optional fields accepts them.
    ///
    /// A mismatch is the caller's fault: `Error::bad_request("invalid parameters for Add: missing
    /// field `b`")`.
    pub fn params<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let decoded = match T::deserialize(&self.params) {
            Err(_) if self.params.is_null() => T::deserialize(&Value::Object(Default::default())),
            decoded => decoded,
        };
        decoded.map_err(|e| {
            Error::bad_request(format!("invalid parameters for {}: {e}", self.service))
        })
    }
}

/// Encodes a service's result: `ok(a + b)`, `ok(row)`, `ok(())` (no result).
///
/// For a service declared with an output struct whose only field is `result`, return that
/// field's value (`ok(out.result)`), since the declared result is the field.
pub fn ok<T: Serialize>(result: T) -> Result<Value, Error> {
    serde_json::to_value(result)
        .map_err(|e| Error::internal(format!("cannot encode the service result: {e}")))
}
