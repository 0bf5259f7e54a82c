//! `RemoteAccessExtension` (RAE): remote sessions from a user to a device's endpoint through a
//! Global Access Server (SPEC §5, §6).
//!
//! - Devices are Things implementing the shape `RemoteAccessible` (the template
//!   `RemoteAccessibleThing`, or an Axeda model); their `endpoints` property lists what can be
//!   reached (`RemoteEndpoint` rows: name, protocol, host, port as the gateway sees them).
//! - GASes register themselves through `GASRemoteAccessProvider.RegisterServer` with their
//!   application key: the first registration creates their `GASModel` Thing, disabled; an
//!   administrator enables it with `EnableForRemoteSessions`. They heartbeat every 10 s and report
//!   what happens to sessions (`Heartbeat`, `ReportSessionEvents`); the wire types are
//!   `thingport_protocol::gas`.
//! - `StartSession` checks the caller (visibility and ServiceInvoke by the host; Read and
//!   PropertyRead here), picks a GAS ([`engine::Engine::select`]), signs one credential per side
//!   with the GAS's in-memory key, orders the device's agent through CSE (`startSession`), and
//!   answers the client's credential. Tunnel bytes never pass through the platform.
//! - Every transition is an extension record; creation and termination write `REMOTE_ACCESS`
//!   audit entries in the same transaction. A 5 s sweep ends sessions of lost GASes
//!   (`SERVER_LOST`), idle ones (`ABANDONED`), old ones (`MAX_DURATION`) and those never started.

mod console;
mod engine;
mod model;
mod switches;
#[cfg(test)]
mod tests;

use engine::{table, Engine, Settings};
use model::{RemoteEndpoint, RemoteSession, KIND_CONSOLE, KIND_TUNNEL};
use schemars::JsonSchema;
use serde::Deserialize;
use std::time::Duration;
use thingport_protocol::gas as proto;
use thingport_sdk::protocol::{
    BaseType, ConfigField, ConfigTableDef, DataShapeDef, Definitions, Field, ServiceDecl,
    SubsystemDef, ThingDef, ThingShapeDef, ThingTemplateDef,
};
use thingport_sdk::{data_shape, ok, service, Call, Error, Extension, Host, Value};

pub const SUBSYSTEM: &str = "RemoteAccessSubsystem";
pub const PROVIDER: &str = proto::PROVIDER;
pub const SELECTOR: &str = "GASSelector";
const SWEEP_TIMER: &str = "sweep-sessions";
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The shape of a device reachable through remote sessions.
pub const REMOTE_ACCESSIBLE: &str = "RemoteAccessible";
/// The shape of a GAS Thing.
pub const REMOTE_ACCESS_SERVER: &str = "RemoteAccessServer";

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct StartSessionInput {
    /// The endpoint's name, one of the Thing's `endpoints` rows (e.g. `ssh`).
    remote_endpoint: String,
    /// Provider-specific options (reserved; ignored by the GAS provider).
    provider_config: Option<Value>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct SessionIdInput {
    /// The session's id, as `StartSession` answered it.
    session_id: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct SwitchInput {
    /// `template` (every Thing of the template or a template based on it) or `tag`.
    scope: String,
    /// The template's name, or the tag (`Vocabulary:term`).
    name: String,
    /// On (true) or off (false).
    enabled: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct FindSessionsInput {
    /// Only the sessions of this Thing.
    #[schemars(extend("x-thingport-base-type" = "THINGNAME"))]
    thing_name: Option<String>,
    /// Only sessions in this status (INITIALIZING, CREATED, STARTED, TERMINATED).
    status: Option<String>,
    /// Only sessions started by this user.
    created_by: Option<String>,
    /// At most this many, newest first (default and ceiling: maxSessionsReturned).
    #[schemars(extend("format" = "int32"))]
    limit: Option<i32>,
}

fn sessions_result(name: &str, description: &str, inputs: Vec<Field>) -> ServiceDecl {
    let mut s = service::<(), ()>(name, description);
    s.inputs = inputs;
    s.result = Some(
        Field::new("result", BaseType::Infotable)
            .shape("RemoteSession")
            .describe("RemoteSession rows"),
    );
    s
}

fn with_inputs<I: JsonSchema>(name: &str, description: &str) -> ServiceDecl {
    let decl = service::<I, ()>(name, description);
    sessions_result(name, description, decl.inputs)
}

fn remote_session_shape() -> DataShapeDef {
    let mut shape = data_shape::<RemoteSession>(
        "RemoteSession",
        "a remote session: who, which device and endpoint, which GAS, status, cause, bytes",
    );
    shape = shape
        .field(
            Field::new("gasUrl", BaseType::String)
                .describe("StartSession only: the GAS's base URL the client attaches to"),
        )
        .field(
            Field::new("credential", BaseType::String)
                .describe("StartSession only: the client's single-use tunnel credential"),
        )
        .field(
            Field::new("credentialExpires", BaseType::Datetime)
                .describe("StartSession only: when the credential expires"),
        )
        .field(
            Field::new("consoleUrl", BaseType::String)
                .describe("StartConsoleSession only: the GAS's console WebSocket URL"),
        )
        .field(
            Field::new("ticket", BaseType::String)
                .describe("StartConsoleSession only: the browser's single-use ticket (its first WebSocket message)"),
        )
        .field(
            Field::new("protocol", BaseType::String)
                .describe("StartConsoleSession only: VNC, SSH or TELNET"),
        );
    shape
}

fn gas_server_services() -> Vec<ServiceDecl> {
    let mut v = Vec::new();
    for (name, description) in [
        (
            "EnableForRemoteSessions",
            "lets the selector give this GAS new sessions",
        ),
        (
            "DisableForRemoteSessions",
            "stops giving this GAS new sessions (live ones go on)",
        ),
        (
            "enableRemoteSessions",
            "PTC's name of EnableForRemoteSessions",
        ),
        (
            "disableRemoteSessions",
            "PTC's name of DisableForRemoteSessions",
        ),
    ] {
        v.push(service::<(), ()>(name, description));
    }
    v.push(sessions_result(
        "GetSessions",
        "the live sessions this GAS carries",
        vec![],
    ));
    v.push(service::<(), i64>(
        "GetSessionCount",
        "how many live sessions this GAS carries",
    ));
    v
}

pub struct RemoteAccess {
    host: Host,
    engine: Engine,
}

impl Extension for RemoteAccess {
    fn definitions() -> Definitions {
        let endpoints = Field::new("endpoints", BaseType::Infotable)
            .shape("RemoteEndpoint")
            .describe("what can be reached on the device's network: name, protocol, host, port");
        Definitions::new()
            .data_shape(data_shape::<RemoteEndpoint>(
                "RemoteEndpoint",
                "an endpoint of a device: host and port as the gateway sees them",
            ))
            .data_shape(remote_session_shape())
            .data_shape(data_shape::<switches::Switch>(
                "RemoteAccessSwitch",
                "a template or tag for which remote access is switched off",
            ))
            .thing_shape(
                ThingShapeDef::new(REMOTE_ACCESSIBLE)
                    .describe("a device reachable through remote sessions")
                    .property(
                        Field::new("providerName", BaseType::Thingname)
                            .describe("the remote access provider")
                            .default(PROVIDER),
                    )
                    .property(endpoints)
                    .property(
                        Field::new(switches::PROPERTY, BaseType::Boolean)
                            .describe("sessions may start (false: StartSession fails with REMOTE_ACCESS_DISABLED)")
                            .default(true),
                    )
                    .service(with_inputs::<SessionIdInput>(
                        "AttachSession",
                        "a fresh client credential for a session you started that waits for its client (CREATED), e.g. one started from the web console",
                    ))
                    .service(with_inputs::<StartSessionInput>(
                        "StartSession",
                        "starts a session to one of the Thing's endpoints: the RemoteSession row, with gasUrl and the client's credential",
                    ))
                    .service(with_inputs::<StartSessionInput>(
                        "StartConsoleSession",
                        "starts a browser console (VNC, SSH or TELNET endpoints): the RemoteSession row, with consoleUrl and a single-use ticket the browser sends as its first WebSocket message",
                    ))
                    .service(service::<console::SetCredentialsInput, Value>(
                        "SetEndpointCredentials",
                        "stores an endpoint's credentials, encrypted (fields left out are kept; empty removes): the stored state without secrets (needs PropertyWrite on endpoints; audited)",
                    ))
                    .service(service::<console::EndpointInput, Value>(
                        "GetEndpointCredentials",
                        "an endpoint's stored credentials without the secrets: passwordSet, privateKeySet, hostKey and its fingerprint (needs PropertyRead on endpoints)",
                    ))
                    .service(service::<console::GenerateInput, Value>(
                        "GenerateEndpointKeyPair",
                        "generates an Ed25519 key pair for an SSH endpoint: keeps the private key encrypted, answers the public key for authorized_keys (needs PropertyWrite on endpoints; audited)",
                    ))
                    .service(with_inputs::<SessionIdInput>(
                        "EndSession",
                        "ends a session of this Thing (USER_SHUTDOWN): the session afterwards",
                    ))
                    .service(with_inputs::<SessionIdInput>(
                        "GetSession",
                        "one session of this Thing",
                    ))
                    .service(sessions_result(
                        "GetSessions",
                        "this Thing's sessions, newest first (at most maxSessionsReturned)",
                        vec![],
                    ))
                    .service({
                        let mut s = service::<(), ()>(
                            "GetRemoteAccessibleEndpoints",
                            "the Thing's endpoints",
                        );
                        s.result = Some(
                            Field::new("result", BaseType::Infotable).shape("RemoteEndpoint"),
                        );
                        s
                    }),
            )
            .thing_shape(
                ThingShapeDef::new("GASRemoteAccessible")
                    .describe("a device whose sessions go through Global Access Servers"),
            )
            .thing_shape({
                let mut shape = ThingShapeDef::new(REMOTE_ACCESS_SERVER)
                    .describe("a Global Access Server")
                    .property(
                        Field::new("enabledForRemoteSessions", BaseType::Boolean)
                            .describe("the selector may give it new sessions (false when created; kept across restarts)")
                            .default(false),
                    )
                    .property(Field::new("externalHostName", BaseType::String))
                    .property(Field::new("currentNumberOfSessions", BaseType::Integer).default(0))
                    .property(
                        Field::new("capacity", BaseType::Integer)
                            .describe("the most concurrent sessions the GAS takes (its --capacity)")
                            .default(0),
                    )
                    .property(Field::new("healthy", BaseType::Boolean).default(false))
                    .property(Field::new("version", BaseType::String))
                    .property(Field::new("latestRegistrationDate", BaseType::Datetime));
                for s in gas_server_services() {
                    shape = shape.service(s);
                }
                shape
            })
            .thing_shape(
                ThingShapeDef::new("RemoteAccessProvider")
                    .describe("a remote access provider")
                    .property(
                        Field::new("selector", BaseType::Thingname)
                            .describe("the Thing choosing a GAS per session")
                            .default(SELECTOR),
                    )
                    .property(
                        Field::new("maxServers", BaseType::Integer)
                            .describe("the most GAS Things registration creates")
                            .default(50),
                    ),
            )
            .thing_shape(
                ThingShapeDef::new("GASSelectorService")
                    .describe("chooses the GAS of a new session")
                    .service(service::<(), Value>(
                        "SelectServer",
                        "the GAS a session started now would get: {name, url} or null",
                    )),
            )
            .template(
                ThingTemplateDef::new("GASModel")
                    .describe("a registered Global Access Server (one Thing per GAS)")
                    .based_on("RemoteThing")
                    .implements(REMOTE_ACCESS_SERVER),
            )
            .template(
                ThingTemplateDef::new("RemoteAccessibleThing")
                    .describe("a device reachable through remote sessions")
                    .based_on("RemoteThing")
                    .implements(REMOTE_ACCESSIBLE)
                    .implements("GASRemoteAccessible"),
            )
            .template(
                ThingTemplateDef::new("GASRemoteAccessProviderTemplate")
                    .describe("the GAS remote access provider")
                    .implements("RemoteAccessProvider"),
            )
            .template(
                ThingTemplateDef::new("GASSelectorTemplate")
                    .describe("the GAS selector")
                    .implements("GASSelectorService"),
            )
            .thing(
                ThingDef::new(PROVIDER, "GASRemoteAccessProviderTemplate")
                    .describe("where Global Access Servers register and report")
                    .service(service::<RegisterInput, Value>(
                        proto::REGISTER_SERVER,
                        "a GAS registers (creating its GASModel Thing, disabled, the first time): {registration, key, heartbeatIntervalMs, enabled}",
                    ))
                    .service(service::<HeartbeatInput, Value>(
                        proto::HEARTBEAT,
                        "a GAS's heartbeat: health and live sessions; answers {end: [sessions to close]}",
                    ))
                    .service(service::<ReportsInput, ()>(
                        proto::REPORT_SESSION_EVENTS,
                        "a GAS reports sessions attached, started and ended",
                    ))
                    .service(service::<ClaimInput, Value>(
                        proto::CLAIM_CONSOLE_SESSION,
                        "the GAS holding a console session gets the endpoint's protocol and credentials, once",
                    )),
            )
            .thing(ThingDef::new(SELECTOR, "GASSelectorTemplate").describe("the GAS selector"))
            .subsystem(
                SubsystemDef::new(SUBSYSTEM)
                    .describe("remote sessions: settings, and sessions across all devices")
                    .configuration(
                        ConfigTableDef::new("Settings")
                            .field(
                                ConfigField::new(
                                    Field::new("maxSessionDurationHours", BaseType::Integer)
                                        .describe("sessions end MAX_DURATION after this long")
                                        .default(24),
                                )
                                .range(1.0, 240.0),
                            )
                            .field(
                                ConfigField::new(
                                    Field::new("inactiveSessionTimeoutMinutes", BaseType::Integer)
                                        .describe("sessions without traffic end ABANDONED after this long")
                                        .default(15),
                                )
                                .range(1.0, 60.0),
                            )
                            .field(
                                ConfigField::new(
                                    Field::new("maxSessionsReturned", BaseType::Integer)
                                        .describe("the most sessions a listing answers")
                                        .default(500),
                                )
                                .range(1.0, 10_000.0),
                            ),
                    )
                    .service(with_inputs::<FindSessionsInput>(
                        "GetSessions",
                        "sessions of the Things the caller can see, newest first",
                    ))
                    .service(with_inputs::<SessionIdInput>(
                        "EndSession",
                        "ends a session by id (needs ServiceInvoke on EndSession of its Thing)",
                    ))
                    .service(service::<SwitchInput, ()>(
                        "SetRemoteAccessSwitch",
                        "switches remote access on or off for every Thing of a template or of a tag (audited)",
                    ))
                    .service({
                        let mut s = service::<(), ()>(
                            "GetRemoteAccessSwitches",
                            "the template and tag switches that are off",
                        );
                        s.result = Some(
                            Field::new("result", BaseType::Infotable).shape("RemoteAccessSwitch"),
                        );
                        s
                    }),
            )
    }

    fn create(host: Host, config: Value) -> Result<Self, Error> {
        let rae = RemoteAccess {
            engine: Engine::new(host.clone(), Settings::from_config(&config)),
            host,
        };
        rae.engine.recover()?;
        rae.host
            .schedule_timer(SWEEP_TIMER, SWEEP_EVERY, Some(SWEEP_EVERY))?;
        Ok(rae)
    }

    fn invoke(&self, call: &Call) -> Result<Value, Error> {
        let e = &self.engine;
        let thing = call.entity.as_str();
        match (call.entity_kind.as_str(), call.service.as_str()) {
            ("Things", proto::REGISTER_SERVER) => {
                e.register(call.params::<proto::RegisterServer>()?, &call.caller)
            }
            ("Things", proto::HEARTBEAT) => e.heartbeat(call.params::<proto::Heartbeat>()?),
            ("Things", proto::REPORT_SESSION_EVENTS) => {
                e.reports(call.params::<proto::SessionReports>()?)
            }
            ("Things", "SelectServer") => ok(e
                .select()
                .map(|(name, url, _)| serde_json::json!({"name": name, "url": url}))),
            ("Things", "StartSession") => {
                let input: StartSessionInput = call.params()?;
                let _ = input.provider_config;
                let started = e.start(thing, &input.remote_endpoint, &call.caller, KIND_TUNNEL)?;
                ok(table(&[started]))
            }
            ("Things", "StartConsoleSession") => {
                let input: StartSessionInput = call.params()?;
                let started = e.start(thing, &input.remote_endpoint, &call.caller, KIND_CONSOLE)?;
                ok(table(&[started]))
            }
            ("Things", proto::CLAIM_CONSOLE_SESSION) => {
                e.claim_console(call.params::<proto::ClaimConsoleSession>()?)
            }
            ("Things", "SetEndpointCredentials") => ok(console::set(
                &self.host,
                &call.caller,
                thing,
                call.params()?,
            )?),
            ("Things", "GetEndpointCredentials") => {
                let input: console::EndpointInput = call.params()?;
                ok(console::get(
                    &self.host,
                    &call.caller,
                    thing,
                    &input.endpoint,
                )?)
            }
            ("Things", "GenerateEndpointKeyPair") => ok(console::generate(
                &self.host,
                &call.caller,
                thing,
                call.params()?,
            )?),
            ("Things", "AttachSession") => {
                let input: SessionIdInput = call.params()?;
                ok(table(&[e.attach(
                    thing,
                    &input.session_id,
                    &call.caller,
                )?]))
            }
            ("Subsystems", "SetRemoteAccessSwitch") => {
                let input: SwitchInput = call.params()?;
                let scope = switches::Scope::parse(&input.scope)?;
                switches::set(
                    &self.host,
                    scope,
                    &input.name,
                    input.enabled,
                    &call.caller.name,
                )?;
                Ok(Value::Null)
            }
            ("Subsystems", "GetRemoteAccessSwitches") => ok(table(&switches::list(&self.host)?)),
            ("Things", "EndSession") => {
                let input: SessionIdInput = call.params()?;
                ok(table(&[e.end(thing, &input.session_id, &call.caller)?]))
            }
            ("Things", "GetSession") => {
                let input: SessionIdInput = call.params()?;
                ok(table(&[e.get(thing, &input.session_id)?]))
            }
            ("Things", "GetSessions") => {
                if self.is_gas(thing) {
                    // Only the sessions of devices the caller can see.
                    let mut visible: std::collections::HashMap<String, bool> = Default::default();
                    let rows: Vec<RemoteSession> = e
                        .gas_sessions(thing)
                        .into_iter()
                        .filter(|s| {
                            call.caller.admin
                                || *visible.entry(s.agent_device.clone()).or_insert_with(|| {
                                    self.host
                                        .check_permission(
                                            &call.caller.name,
                                            "Things",
                                            &s.agent_device,
                                            "Visible",
                                            "",
                                        )
                                        .unwrap_or(false)
                                })
                        })
                        .collect();
                    ok(table(&rows))
                } else {
                    ok(table(&e.device_sessions(thing)?))
                }
            }
            ("Things", "GetRemoteAccessibleEndpoints") => ok(table(&e.endpoints(thing)?)),
            ("Things", "GetSessionCount") => ok(e.gas_session_count(thing)),
            ("Things", s @ ("EnableForRemoteSessions" | "enableRemoteSessions")) => {
                self.enable(thing, true, s, call)
            }
            ("Things", s @ ("DisableForRemoteSessions" | "disableRemoteSessions")) => {
                self.enable(thing, false, s, call)
            }
            ("Subsystems", "GetSessions") => self.find_sessions(call),
            ("Subsystems", "EndSession") => {
                let input: SessionIdInput = call.params()?;
                let not_found = || {
                    Error::not_found(format!("no session '{}'", engine::clip(&input.session_id)))
                };
                let session = e.find(&input.session_id)?.ok_or_else(not_found)?;
                let user = &call.caller.name;
                let device = session.agent_device.as_str();
                if !self
                    .host
                    .check_permission(user, "Things", device, "Visible", "")?
                {
                    return Err(not_found());
                }
                if !self.host.check_permission(
                    user,
                    "Things",
                    device,
                    "ServiceInvoke",
                    "EndSession",
                )? {
                    return Err(Error::forbidden(format!(
                        "Not authorized for ServiceInvoke on EndSession in {device}"
                    )));
                }
                ok(table(&[e.end(device, &input.session_id, &call.caller)?]))
            }
            (kind, other) => Err(Error::not_found(format!(
                "service {other} not found on {kind} {thing}"
            ))),
        }
    }

    fn on_timer(&self, name: &str) -> Result<(), Error> {
        if name == SWEEP_TIMER {
            self.engine.sweep();
        }
        Ok(())
    }

    fn on_configure(&self, config: &Value) -> Result<(), Error> {
        self.engine.set_settings(Settings::from_config(config));
        Ok(())
    }
}

/// `ClaimConsoleSession`'s declared inputs (the wire type is [`proto::ClaimConsoleSession`]).
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase")]
struct ClaimInput {
    /// The GAS Thing's name.
    name: String,
    /// The registration id `RegisterServer` answered.
    registration: String,
    /// The console session.
    session: String,
}

/// `RegisterServer`'s declared inputs (the wire type is [`proto::RegisterServer`]).
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase")]
struct RegisterInput {
    /// The GAS Thing's name.
    name: String,
    /// Where clients and agents reach the GAS (http:// or https:// base URL).
    public_url: String,
    /// The GAS's version.
    version: String,
    /// The most concurrent sessions it takes.
    #[schemars(extend("format" = "int32"))]
    capacity: u32,
}

/// `Heartbeat`'s declared inputs (the wire type is [`proto::Heartbeat`]).
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase")]
struct HeartbeatInput {
    name: String,
    registration: String,
    healthy: bool,
    /// The live sessions: [{session, bytesUp, bytesDown, paired}].
    sessions: Value,
}

/// `ReportSessionEvents`' declared inputs (the wire type is [`proto::SessionReports`]).
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase")]
struct ReportsInput {
    name: String,
    registration: String,
    /// The reports, oldest first: [{event: attached|started|ended, session, ...}].
    events: Value,
}

impl RemoteAccess {
    fn is_gas(&self, thing: &str) -> bool {
        self.host
            .describe_thing(thing)
            .is_ok_and(|t| t.templates.iter().any(|x| x == engine::GAS_MODEL))
    }

    fn enable(&self, thing: &str, on: bool, service: &str, call: &Call) -> Result<Value, Error> {
        if !self.is_gas(thing) {
            return Err(Error::unprocessable(format!(
                "{service}: Thing '{thing}' is not a {}",
                engine::GAS_MODEL
            )));
        }
        self.host
            .set_property(thing, "enabledForRemoteSessions", Value::Bool(on))?;
        let _ = self.host.audit(
            engine::AUDIT,
            thing,
            &format!(
                "GAS {thing} {} for remote sessions by {}",
                if on { "enabled" } else { "disabled" },
                call.caller.name
            ),
        );
        Ok(Value::Null)
    }

    fn find_sessions(&self, call: &Call) -> Result<Value, Error> {
        let input: FindSessionsInput = call.params()?;
        let max = self.engine.settings().max_returned;
        let limit = match input.limit {
            None => max,
            Some(n) if n >= 1 => (n as usize).min(max),
            Some(n) => {
                return Err(Error::unprocessable(format!(
                    "limit must be at least 1, not {n}"
                )))
            }
        };
        let status = match input.status.as_deref() {
            None | Some("") => None,
            Some(s) => Some(
                serde_json::from_value::<model::Status>(Value::from(s.to_ascii_uppercase()))
                    .map_err(|_| {
                        Error::unprocessable(format!(
                            "status must be INITIALIZING, CREATED, STARTED or TERMINATED, not '{}'",
                            engine::clip(s)
                        ))
                    })?,
            ),
        };
        let user = call.caller.name.clone();
        let admin = call.caller.admin;
        let mut visible: std::collections::HashMap<String, bool> = Default::default();
        let host = self.host.clone();
        let mut keep = |s: &RemoteSession| {
            if input
                .thing_name
                .as_ref()
                .is_some_and(|t| *t != s.agent_device)
            {
                return false;
            }
            if input
                .created_by
                .as_ref()
                .is_some_and(|u| !u.is_empty() && *u != s.created_by)
            {
                return false;
            }
            if status.is_some_and(|st| st != s.status) {
                return false;
            }
            admin
                || *visible.entry(s.agent_device.clone()).or_insert_with(|| {
                    host.check_permission(&user, "Things", &s.agent_device, "Visible", "")
                        .unwrap_or(false)
                })
        };
        ok(table(&self.engine.all_sessions(limit, &mut keep)?))
    }
}

thingport_sdk::export_extension!(RemoteAccess);
