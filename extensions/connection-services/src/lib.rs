//! `ConnectionServicesExtension` (CSE): the device control channel.
//!
//! Agents open a WebSocket on `/Thingworx/WS` with the subprotocol `thingport.v1`; the host
//! authenticates the application key at the upgrade, owns the socket and hands this extension
//! the connection's events. The extension speaks the protocol of
//! [`thingport_protocol::control`]: `hello`, then `bind` per Thing. A bind succeeds when the Thing
//! exists, is enabled, derives from `RemoteThing`, and the key's user may write its properties;
//! the newest connection to bind a Thing wins (the older one is told `REPLACED`).
//!
//! The bindings live in memory ([`registry::Registry`]); `isConnected` and `lastConnection` mirror
//! them, written in batches by a 250 ms timer (one transaction for many changes, so 10,000 agents
//! reconnecting cost a handful of disk syncs, not 10,000). At start the extension marks every
//! `RemoteThing` that still says connected as disconnected: a crash leaves no stale flag.
//!
//! Services:
//! - `Ping()` on every Thing deriving from `RemoteThing`: round trip to its agent.
//! - `ConnectionServicesSubsystem.SendMessage(thingName, name, body, waitForReply, timeoutMs)`:
//!   egress to a bound Thing, for other extensions (called through the host as the system) and
//!   administrators; with `waitForReply` it returns the device's answer or fails at the deadline.
//! - `ConnectionServicesSubsystem.GetConnectedThings()`: who is connected, from where, since when.

mod registry;
#[cfg(test)]
mod tests;

use registry::{Egress, Registry};
use schemars::JsonSchema;
use serde::Deserialize;
use std::time::Duration;
use thingport_protocol::control;
use thingport_sdk::protocol::{
    BaseType, ConfigField, ConfigTableDef, Definitions, Field, RouteDef, SubsystemDef,
};
use thingport_sdk::{ok, service, Call, Connection, Error, Extension, Host, Value};

/// The subsystem carrying the egress services and the settings.
pub const SUBSYSTEM: &str = "ConnectionServicesSubsystem";
/// Messages only the platform may send (see `SendMessage`).
const SESSION_ORDERS: [&str; 2] = [
    control::requests::START_SESSION,
    control::requests::END_SESSION,
];
/// The template every bindable Thing derives from (the host's).
pub const REMOTE_THING: &str = "RemoteThing";
/// The timer that writes `isConnected` / `lastConnection` changes.
const FLUSH_TIMER: &str = "flush-connection-state";
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// The timer that re-checks bound Things (deleted, disabled or re-templated while bound → `GONE`).
const VERIFY_TIMER: &str = "verify-bindings";
const VERIFY_EVERY: Duration = Duration::from_secs(30);

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct SendMessageInput {
    /// The bound Thing to send to.
    #[schemars(extend("x-thingport-base-type" = "THINGNAME"))]
    thing_name: String,
    /// The message's name (for a request, what the agent should do, e.g. `ping`).
    name: String,
    /// The message's body (any JSON; `{}` when absent).
    body: Option<Value>,
    /// Wait for the device's answer (a request) instead of sending one-way.
    wait_for_reply: Option<bool>,
    /// How long to wait for the answer, in milliseconds (1..60000, default 5000; the host's
    /// extension call deadline, 10 s by default, also bounds it).
    #[schemars(extend("format" = "int32"))]
    timeout_ms: Option<i32>,
}

pub struct ConnectionServices {
    host: Host,
    registry: Registry,
}

fn settings(config: &Value) -> u32 {
    config
        .pointer("/Settings/maxThingsPerConnection")
        .and_then(Value::as_u64)
        .map(|n| n.clamp(1, 10_000) as u32)
        .unwrap_or(control::MAX_THINGS_PER_CONNECTION)
}

impl Extension for ConnectionServices {
    fn definitions() -> Definitions {
        Definitions::new()
            .route(
                RouteDef::new(control::PATH)
                    .subprotocol(control::SUBPROTOCOL_V1)
                    .max_message_bytes(control::MAX_MESSAGE_BYTES as u32)
                    .timing(
                        control::HELLO_TIMEOUT_MS,
                        control::PING_INTERVAL_MS,
                        control::IDLE_TIMEOUT_MS,
                    ),
            )
            .template_services(
                REMOTE_THING,
                vec![service::<(), Value>(
                    "Ping",
                    "round trip to the device's agent: answers {thing, agent, roundTripMs, agentTime}, or 503 when no agent serves the Thing",
                )],
            )
            .subsystem(
                SubsystemDef::new(SUBSYSTEM)
                    .describe("the device control channel: connected agents and egress to devices")
                    .configuration(
                        ConfigTableDef::new("Settings").field(
                            ConfigField::new(
                                Field::new("maxThingsPerConnection", BaseType::Integer)
                                    .describe("the most Things one agent connection may bind")
                                    .default(control::MAX_THINGS_PER_CONNECTION),
                            )
                            .range(1.0, 10_000.0),
                        ),
                    )
                    .service(service::<SendMessageInput, Value>(
                        "SendMessage",
                        "sends a message to a bound Thing's agent; with waitForReply, returns the device's answer",
                    ))
                    .service(service::<(), Value>(
                        "GetConnectedThings",
                        "the bound Things: thing, user, agent, sourceIp, since (ms)",
                    )),
            )
    }

    fn create(host: Host, config: Value) -> Result<Self, Error> {
        let cse = ConnectionServices {
            registry: Registry::new(host.clone(), settings(&config)),
            host,
        };
        cse.registry.reset_stale_flags()?;
        cse.host
            .schedule_timer(FLUSH_TIMER, FLUSH_EVERY, Some(FLUSH_EVERY))?;
        cse.host
            .schedule_timer(VERIFY_TIMER, VERIFY_EVERY, Some(VERIFY_EVERY))?;
        Ok(cse)
    }

    fn invoke(&self, call: &Call) -> Result<Value, Error> {
        match call.service.as_str() {
            "Ping" => ok(self.registry.ping(&call.entity)?),
            "SendMessage" => {
                let input: SendMessageInput = call.params()?;
                // Session orders carry credentials and name a GAS: only the platform itself
                // (RemoteAccessExtension, through the host) may send them, never a REST caller,
                // or a user with SendMessage could bypass StartSession's checks and audit.
                let from_platform =
                    call.caller.name == "System" && call.caller.source_ip == "local";
                if SESSION_ORDERS.contains(&input.name.as_str()) && !from_platform {
                    return Err(Error::forbidden(format!(
                        "'{}' is reserved for RemoteAccessExtension: start sessions with StartSession on the Thing",
                        input.name
                    )));
                }
                let timeout = input
                    .timeout_ms
                    .unwrap_or(control::DEFAULT_REQUEST_TIMEOUT_MS as i32);
                if !(1..=60_000).contains(&timeout) {
                    return Err(Error::unprocessable(format!(
                        "timeoutMs must be between 1 and 60000, not {timeout}"
                    )));
                }
                let egress = Egress {
                    thing: input.thing_name,
                    name: input.name,
                    body: input
                        .body
                        .unwrap_or_else(|| Value::Object(Default::default())),
                };
                if input.wait_for_reply.unwrap_or(false) {
                    self.registry
                        .request(egress, Duration::from_millis(timeout as u64))
                } else {
                    self.registry.notify(egress).map(|()| Value::Null)
                }
            }
            "GetConnectedThings" => ok(self.registry.connected_things()),
            other => Err(Error::not_found(format!("service {other} not found"))),
        }
    }

    fn on_timer(&self, name: &str) -> Result<(), Error> {
        match name {
            FLUSH_TIMER => self.registry.flush(),
            VERIFY_TIMER => self.registry.verify(),
            _ => {}
        }
        Ok(())
    }

    fn on_configure(&self, config: &Value) -> Result<(), Error> {
        self.registry.set_max_things(settings(config));
        Ok(())
    }

    fn on_shutdown(&self) -> Result<(), Error> {
        self.registry.flush_final();
        Ok(())
    }

    fn on_connection_open(&self, connection: &Connection) -> Result<(), Error> {
        self.registry.open(connection);
        Ok(())
    }

    fn on_connection_message(&self, connection: u64, text: &str) -> Result<(), Error> {
        self.registry.message(connection, text);
        Ok(())
    }

    fn on_connection_closed(&self, connection: u64, reason: &str) -> Result<(), Error> {
        self.registry.closed(connection, reason);
        Ok(())
    }
}

impl Drop for ConnectionServices {
    /// The instance is destroyed after its last connection closed (package deleted or upgraded):
    /// write the disconnects its timer would have written.
    fn drop(&mut self) {
        self.registry.flush_final();
    }
}

thingport_sdk::export_extension!(ConnectionServices);
