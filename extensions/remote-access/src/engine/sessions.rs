//! A session's life: start (the permission checks left to RAE, the remote access switch, GAS
//! selection, the agent's order), attach, refusals, termination, records and listings.

use super::*;

impl Engine {
    /// The endpoints of a Thing (its `endpoints` property's rows).
    pub fn endpoints(&self, thing: &str) -> Result<Vec<RemoteEndpoint>, Error> {
        let value = self.host.get_property(thing, "endpoints")?;
        let rows = value
            .get("rows")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(rows
            .into_iter()
            .filter_map(|r| serde_json::from_value::<RemoteEndpoint>(r).ok())
            .collect())
    }

    /// Starts a session of `kind` ([`KIND_TUNNEL`]: a client attaches with the credential
    /// answered; [`KIND_CONSOLE`]: a browser opens the GAS's console with the ticket answered).
    pub fn start(
        &self,
        thing: &str,
        endpoint_name: &str,
        caller: &Caller,
        kind: &str,
    ) -> Result<StartedSession, Error> {
        // The host checked visibility and ServiceInvoke; the rest of SPEC's four checks here.
        for (perm, resource) in [("Read", ""), ("PropertyRead", "endpoints")] {
            if !self
                .host
                .check_permission(&caller.name, "Things", thing, perm, resource)?
            {
                let what = if resource.is_empty() { "" } else { resource };
                return Err(Error::forbidden(format!(
                    "Not authorized for {perm} on {what} in {thing}"
                )));
            }
        }
        let endpoints = self.endpoints(thing)?;
        let Some(endpoint) = endpoints.iter().find(|e| e.name == endpoint_name) else {
            let names: Vec<&str> = endpoints.iter().map(|e| e.name.as_str()).collect();
            return Err(Error::not_found(format!(
                "Thing '{thing}' has no endpoint '{}'{}",
                clip(endpoint_name),
                if names.is_empty() {
                    " (it defines none: set its endpoints property)".to_string()
                } else {
                    format!(" (it has: {})", names.join(", "))
                }
            )));
        };
        let (host, port) = endpoint.target(thing)?;
        let console_protocol = if kind == KIND_CONSOLE {
            Some(crate::console::protocol_of(thing, endpoint)?)
        } else {
            None
        };
        let now = now_ms();
        let id = format!("{:012x}{}", now.max(0), self.random_hex(10)?);
        let mut record = RemoteSession {
            session_id: id.clone(),
            agent_device: thing.to_string(),
            remote_endpoint: endpoint.name.clone(),
            remote_server: String::new(),
            created_by: caller.name.clone(),
            created_time: now,
            start_time: None,
            end_time: None,
            last_activity_time: now,
            status: Status::Initializing,
            termination_cause: None,
            bytes_transferred: 0,
            user_ip: caller.source_ip.clone(),
            agent_ip: String::new(),
            detail: None,
            kind: kind.to_string(),
        };
        if self.state().live.len() >= MAX_LIVE {
            return Err(Error::unavailable(format!(
                "{MAX_LIVE} sessions are live: try again later"
            )));
        }
        let _ = self
            .host
            .record_put(BY_DEVICE, &format!("{thing}/{id}"), Value::Bool(true), None);
        if let Some(why) = crate::switches::why_disabled(&self.host, thing)? {
            self.refuse(record, Cause::RemoteAccessDisabled, &why, &host, port);
            return Err(Error::forbidden(format!("REMOTE_ACCESS_DISABLED: {why}")));
        }
        let connected = self
            .host
            .get_property(thing, "isConnected")
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        if !connected {
            let why = format!("Thing '{thing}' has no agent connected");
            self.refuse(record, Cause::ErrorStartingRemoteSession, &why, &host, port);
            return Err(Error::unavailable(format!("DEVICE_OFFLINE: {why}")));
        }
        let Some((gas, gas_url, key)) = self.select() else {
            let why = "no Global Access Server is enabled, connected, healthy and under capacity";
            self.refuse(record, Cause::NoServers, why, &host, port);
            return Err(Error::unavailable(format!(
                "NO_SERVERS: {why} (an administrator runs EnableForRemoteSessions on a registered GAS Thing)"
            )));
        };
        record.remote_server = gas.clone();
        let expires = now + GRANT_LIFETIME_MS;
        let grant = |role, key: &[u8]| self.credential(&id, role, &gas, expires, key);
        // A console session's client side is the GAS itself: the browser gets a ticket for the
        // GAS's console (signed with the console key), never a raw tunnel credential.
        let client = if console_protocol.is_some() {
            grant(Role::Client, &tunnel::console_key(&key))?
        } else {
            grant(Role::Client, &key)?
        };
        let agent = grant(Role::Agent, &key)?;
        let order = self.stripe(&id);
        self.state().live.insert(
            id.clone(),
            Live {
                record: record.clone(),
                grant_expires_ms: expires,
                recovered_ms: None,
                console_claimed: false,
            },
        );
        self.persist(
            &record,
            Some(format!(
                "session {id} created by {} from {}: Thing {thing}, endpoint {} ({host}:{port}), GAS {gas}",
                caller.name, caller.source_ip, endpoint.name
            )),
        );
        drop(order);
        let order = self.host.invoke(
            "Subsystems",
            "ConnectionServicesSubsystem",
            "SendMessage",
            json!({
                "thingName": thing,
                "name": requests::START_SESSION,
                "body": {"session": id, "gasUrl": gas_url, "credential": agent,
                         "endpoint": {"host": host, "port": port, "name": endpoint.name}},
                "waitForReply": true,
                "timeoutMs": ORDER_TIMEOUT_MS,
            }),
        );
        if let Err(e) = order {
            let message = e.message().to_string();
            return Err(if message.contains(codes::SESSION_DENIED) {
                let why = message
                    .split_once(&format!("{}: ", codes::SESSION_DENIED))
                    .map(|(_, m)| m.to_string())
                    .unwrap_or(message);
                self.terminate(&id, Cause::SessionDenied, &why, None, false);
                Error::forbidden(format!("SESSION_DENIED: the device's agent refused: {why}"))
            } else if e.kind() == ErrorKind::Unavailable {
                self.terminate(
                    &id,
                    Cause::ErrorStartingRemoteSession,
                    &message,
                    None,
                    false,
                );
                Error::unavailable(format!("DEVICE_OFFLINE: {message}"))
            } else {
                self.terminate(
                    &id,
                    Cause::ErrorStartingRemoteSession,
                    &message,
                    None,
                    false,
                );
                Error::unavailable(format!("ERROR_STARTING_REMOTE_SESSION: {message}"))
            });
        }
        let written = self.stripe(&id);
        let record = {
            let mut state = self.state();
            match state.live.get_mut(&id) {
                Some(l) => {
                    if l.record.status == Status::Initializing {
                        l.record.status = Status::Created;
                    }
                    Some(l.record.clone())
                }
                None => None,
            }
        };
        let Some(record) = record else {
            // Ended while the order was out (e.g. a side failed at once).
            let record = self.get(thing, &id)?;
            return Err(Error::unavailable(format!(
                "ERROR_STARTING_REMOTE_SESSION: the session ended while starting ({})",
                record
                    .termination_cause
                    .map(Cause::as_str)
                    .unwrap_or("unknown cause")
            )));
        };
        self.persist(&record, None);
        drop(written);
        Ok(match console_protocol {
            None => StartedSession {
                session: record,
                gas_url: Some(gas_url),
                credential: Some(client),
                credential_expires: Some(expires),
                ..Default::default()
            },
            Some(protocol) => StartedSession {
                session: record,
                console_url: Some(crate::console::console_url(&gas_url)),
                ticket: Some(client),
                credential_expires: Some(expires),
                protocol: Some(protocol.to_string()),
                ..Default::default()
            },
        })
    }

    /// A fresh client credential for a session its creator started elsewhere (the web console's
    /// Connect): only the creator, only while the session waits for its client (CREATED), and
    /// never past the session's own credential deadline.
    pub fn attach(&self, thing: &str, id: &str, caller: &Caller) -> Result<StartedSession, Error> {
        let not_found = || {
            Error::not_found(format!(
                "Thing '{thing}' has no live session '{}'",
                clip(id)
            ))
        };
        let (record, expires, gas_url, key) = {
            let state = self.state();
            let live = state.live.get(id).ok_or_else(not_found)?;
            if live.record.agent_device != thing {
                return Err(not_found());
            }
            if live.record.created_by != caller.name {
                return Err(Error::forbidden(format!(
                    "session {} was started by another user: only they may attach to it",
                    clip(id)
                )));
            }
            if live.record.kind == KIND_CONSOLE {
                return Err(Error::conflict(format!(
                    "session {} is a browser console: its client side is the GAS, it takes no tunnel client",
                    clip(id)
                )));
            }
            if live.record.status != Status::Created {
                return Err(Error::conflict(format!(
                    "session {} is {}: only a session waiting for its client (CREATED) takes one",
                    clip(id),
                    live.record.status.as_str()
                )));
            }
            let gas = state
                .gases
                .get(&live.record.remote_server)
                .ok_or_else(|| Error::unavailable("the session's GAS is not registered"))?;
            (
                live.record.clone(),
                live.grant_expires_ms,
                gas.public_url.clone(),
                gas.key.clone(),
            )
        };
        if expires <= now_ms() {
            return Err(Error::conflict(format!(
                "session {} waited too long for its client: start a new one",
                clip(id)
            )));
        }
        let credential = self.credential(id, Role::Client, &record.remote_server, expires, &key)?;
        let _ = self.host.audit(
            AUDIT,
            thing,
            &format!(
                "session {id}: a client credential issued again to {} from {} (AttachSession)",
                caller.name, caller.source_ip
            ),
        );
        Ok(StartedSession {
            session: record,
            gas_url: Some(gas_url),
            credential: Some(credential),
            credential_expires: Some(expires),
            ..Default::default()
        })
    }

    /// A session refused before it had a GAS: written as TERMINATED with its audit entry.
    pub(super) fn refuse(
        &self,
        mut record: RemoteSession,
        cause: Cause,
        why: &str,
        host: &str,
        port: u16,
    ) {
        let now = now_ms();
        record.status = Status::Terminated;
        record.termination_cause = Some(cause);
        record.end_time = Some(now);
        record.detail = Some(why.to_string());
        let audit = format!(
            "session {} refused ({}): {} from {} asked for Thing {}, endpoint {} ({host}:{port}): {why}",
            record.session_id,
            cause.as_str(),
            record.created_by,
            record.user_ip,
            record.agent_device,
            record.remote_endpoint
        );
        self.persist(&record, Some(audit));
    }

    /// Ends a live session with `cause` (once: later calls for the same session do nothing).
    /// `order_ends` also asks the GAS (next heartbeat) and the agent (now) to close it, for
    /// endings the platform decided; a GAS report needs neither.
    pub fn terminate(
        &self,
        id: &str,
        cause: Cause,
        detail: &str,
        bytes: Option<u64>,
        order_ends: bool,
    ) -> bool {
        let now = now_ms();
        let order = self.stripe(id);
        let record = {
            let mut state = self.state();
            let Some(live) = state.live.remove(id) else {
                return false;
            };
            let mut record = live.record;
            if order_ends {
                if let Some(gas) = state.gases.get_mut(&record.remote_server) {
                    gas.end_orders.push(id.to_string());
                    gas.missing.remove(id);
                }
            }
            record.status = Status::Terminated;
            record.termination_cause = Some(cause);
            record.end_time = Some(now);
            if let Some(b) = bytes {
                record.bytes_transferred = record.bytes_transferred.max(b);
            }
            if !detail.is_empty() {
                record.detail = Some(clip(detail).to_string());
            }
            record
        };
        let duration_s = (now - record.start_time.unwrap_or(record.created_time)).max(0) / 1000;
        self.persist(
            &record,
            Some(format!(
                "session {} terminated ({}): Thing {}, endpoint {}, GAS {}, started by {}, {} bytes, {duration_s} s{}",
                record.session_id,
                cause.as_str(),
                record.agent_device,
                record.remote_endpoint,
                if record.remote_server.is_empty() { "none" } else { &record.remote_server },
                record.created_by,
                record.bytes_transferred,
                if detail.is_empty() { String::new() } else { format!(": {}", clip(detail)) }
            )),
        );
        drop(order);
        self.host.info(format!(
            "session {id} of {} terminated: {}{}",
            record.agent_device,
            cause.as_str(),
            if detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", clip(detail))
            }
        ));
        if order_ends && cause != Cause::DeviceShutdown {
            // One-way: the agent closes its side at once (the GAS also hears it at the next
            // heartbeat, in case the agent is unreachable).
            let _ = self.host.invoke(
                "Subsystems",
                "ConnectionServicesSubsystem",
                "SendMessage",
                json!({"thingName": record.agent_device, "name": requests::END_SESSION,
                       "body": {"session": id}}),
            );
        }
        true
    }

    pub(super) fn persist(&self, record: &RemoteSession, audit: Option<String>) {
        let value = match serde_json::to_value(record) {
            Ok(v) => v,
            Err(e) => {
                self.host
                    .error(format!("cannot encode session {}: {e}", record.session_id));
                return;
            }
        };
        let audit = audit.map(|m| (AUDIT, record.agent_device.as_str(), m));
        let result = match &audit {
            Some((c, e, m)) => self.host.record_put(
                SESSIONS,
                &record.session_id,
                value,
                Some((c, e, m.as_str())),
            ),
            None => self
                .host
                .record_put(SESSIONS, &record.session_id, value, None),
        };
        if let Err(e) = result {
            self.host.error(format!(
                "cannot write session {} ({:?}): {e}",
                record.session_id, record.status
            ));
        }
    }

    /// A session of `thing`, live or recorded.
    pub fn get(&self, thing: &str, id: &str) -> Result<RemoteSession, Error> {
        let found = self.find(id)?;
        match found {
            Some(s) if s.agent_device == thing => Ok(s),
            _ => Err(Error::not_found(format!(
                "Thing '{thing}' has no session '{}'",
                clip(id)
            ))),
        }
    }

    /// A session by id, live or recorded.
    pub fn find(&self, id: &str) -> Result<Option<RemoteSession>, Error> {
        if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(None);
        }
        if let Some(l) = self.state().live.get(id) {
            return Ok(Some(l.record.clone()));
        }
        Ok(self
            .host
            .record_get(SESSIONS, id)?
            .and_then(|v| serde_json::from_value(v).ok()))
    }

    /// Ends a session on the user's request (`EndSession`): the record afterwards.
    pub fn end(&self, thing: &str, id: &str, caller: &Caller) -> Result<RemoteSession, Error> {
        self.get(thing, id)?;
        self.terminate(
            id,
            Cause::UserShutdown,
            &format!("ended by {}", caller.name),
            None,
            true,
        );
        self.get(thing, id)
    }

    /// The sessions of a device, newest first, at most `maxSessionsReturned`.
    pub fn device_sessions(&self, thing: &str) -> Result<Vec<RemoteSession>, Error> {
        let max = self.settings().max_returned;
        let prefix = format!("{thing}/");
        let mut ids: Vec<String> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page =
                self.host
                    .record_query(BY_DEVICE, &prefix, after.as_deref().unwrap_or(""), 1000)?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            ids.extend(page.iter().map(|r| r.key[prefix.len()..].to_string()));
            if ids.len() > max {
                ids.drain(..ids.len() - max);
            }
            if page.len() < 1000 {
                break;
            }
        }
        let mut out = Vec::new();
        for id in ids.iter().rev() {
            if let Some(s) = self.find(id)? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// All sessions the filter takes, newest first, at most `limit`.
    pub fn all_sessions(
        &self,
        limit: usize,
        keep: &mut dyn FnMut(&RemoteSession) -> bool,
    ) -> Result<Vec<RemoteSession>, Error> {
        let live: HashMap<String, RemoteSession> = self
            .state()
            .live
            .iter()
            .map(|(k, l)| (k.clone(), l.record.clone()))
            .collect();
        let mut out: std::collections::VecDeque<RemoteSession> = Default::default();
        let mut after: Option<String> = None;
        loop {
            let page =
                self.host
                    .record_query(SESSIONS, "", after.as_deref().unwrap_or(""), 1000)?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            for r in &page {
                let s = match live.get(&r.key) {
                    Some(s) => s.clone(),
                    None => match serde_json::from_value::<RemoteSession>(r.value.clone()) {
                        Ok(s) => s,
                        Err(_) => continue,
                    },
                };
                if keep(&s) {
                    out.push_back(s);
                    if out.len() > limit {
                        out.pop_front();
                    }
                }
            }
            if page.len() < 1000 {
                break;
            }
        }
        Ok(out.into_iter().rev().collect())
    }
}

impl Engine {
    /// `ClaimConsoleSession`: the GAS holding a console session gets the endpoint's protocol and
    /// credentials in clear, once (a second claim is refused: a ticket opens one console).
    pub fn claim_console(&self, claim: proto::ClaimConsoleSession) -> Result<Value, Error> {
        let not_found = || {
            Error::not_found(format!(
                "GAS '{}' holds no console session '{}' waiting for its browser",
                clip(&claim.name),
                clip(&claim.session)
            ))
        };
        let (thing, endpoint_name) = {
            let mut state = self.state();
            Self::check_registration(&state, &claim.name, &claim.registration)?;
            let live = state.live.get_mut(&claim.session).ok_or_else(not_found)?;
            if live.record.kind != KIND_CONSOLE || live.record.remote_server != claim.name {
                return Err(not_found());
            }
            if live.console_claimed {
                return Err(Error::conflict(format!(
                    "the console of session {} was already opened: start a new one",
                    clip(&claim.session)
                )));
            }
            live.console_claimed = true;
            (
                live.record.agent_device.clone(),
                live.record.remote_endpoint.clone(),
            )
        };
        let endpoints = self.endpoints(&thing)?;
        let endpoint = endpoints
            .iter()
            .find(|e| e.name == endpoint_name)
            .ok_or_else(|| {
                Error::not_found(format!(
                    "endpoint '{endpoint_name}' of Thing '{thing}' was removed"
                ))
            })?;
        let protocol = crate::console::protocol_of(&thing, endpoint)?;
        let opened = crate::console::open(&self.host, &thing, endpoint)?;
        let _ = self.host.audit(
            AUDIT,
            &thing,
            &format!(
                "session {}: the credentials of endpoint {endpoint_name} ({}) released to GAS {} for the browser console",
                claim.session, opened.authentication, claim.name
            ),
        );
        let answer = proto::ConsoleClaim {
            session: claim.session,
            thing,
            endpoint: endpoint_name,
            protocol: protocol.to_string(),
            authentication: opened.authentication.clone(),
            username: opened.username.clone(),
            password: opened.password.clone(),
            private_key: opened.private_key.clone(),
            passphrase: opened.passphrase.clone(),
            host_key: opened.host_key.clone(),
        };
        serde_json::to_value(answer).map_err(|e| Error::internal(e.to_string()))
    }
}
