//! The GAS registry: registration (a GASModel Thing per GAS, keys in memory), heartbeats and
//! liveness, the GAS's session reports, and the selector that picks a GAS for a new session.

use super::*;

impl Engine {
    pub fn register(&self, input: proto::RegisterServer, caller: &Caller) -> Result<Value, Error> {
        check_name(&input.name)?;
        let url = input.public_url.trim().trim_end_matches('/').to_string();
        let host_name = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""))
            .filter(|h| !h.is_empty() && url.len() <= 2048 && !url.contains(char::is_whitespace))
            .ok_or_else(|| {
                Error::unprocessable(format!(
                    "publicUrl must be an http:// or https:// URL with a host, not '{}'",
                    clip(&input.public_url)
                ))
            })?
            .to_string();
        if !(1..=MAX_CAPACITY).contains(&input.capacity) {
            return Err(Error::unprocessable(format!(
                "capacity must be between 1 and {MAX_CAPACITY}, not {}: run more GASes for more sessions",
                input.capacity
            )));
        }
        if input.version.len() > 200 {
            return Err(Error::unprocessable("version is longer than 200 bytes"));
        }
        // A GAS name belongs to the user whose key registered it first: another key cannot take
        // it over (and point its sessions elsewhere); an administrator can.
        let owner = self
            .host
            .record_get(GAS_OWNERS, &input.name)?
            .and_then(|v| v.get("user").and_then(Value::as_str).map(str::to_string));
        let exists = self.host.describe_thing(&input.name).is_ok();
        if let Some(owner) = owner.as_ref().filter(|_| exists) {
            if *owner != caller.name && !caller.admin {
                return Err(Error::forbidden(format!(
                    "GAS '{}' was registered by another user: register under another --name, or have an administrator delete its Thing",
                    input.name
                )));
            }
        }
        let created = match self.host.describe_thing(&input.name) {
            Ok(info) if info.templates.iter().any(|t| t == GAS_MODEL) => false,
            Ok(info) => {
                return Err(Error::conflict(format!(
                    "Thing '{}' exists and is a {}, not a {GAS_MODEL}: choose another --name",
                    input.name, info.template
                )))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let max = self
                    .host
                    .get_property(crate::PROVIDER, "maxServers")
                    .ok()
                    .and_then(|v| v.as_i64())
                    .unwrap_or(50);
                let existing = self.host.things_of_template(GAS_MODEL)?.len() as i64;
                if existing >= max {
                    return Err(Error::conflict(format!(
                        "maxServers reached: {existing} GAS Things exist and {} allows {max}; delete an unused GAS Thing or raise maxServers",
                        crate::PROVIDER
                    )));
                }
                self.host.invoke(
                    "Resources",
                    "EntityServices",
                    "CreateThing",
                    json!({"name": input.name, "thingTemplateName": GAS_MODEL,
                           "description": "a Global Access Server (registered itself)"}),
                )?;
                true
            }
            Err(e) => return Err(e),
        };
        if owner.is_none() || created {
            self.host
                .record_put(GAS_OWNERS, &input.name, json!({"user": caller.name}), None)?;
        }
        let mut key = vec![0u8; 32];
        self.rng
            .fill(&mut key)
            .map_err(|_| Error::internal("the system random generator failed"))?;
        let registration = self.random_hex(16)?;
        let now = now_ms();
        let sessions = self.sessions_on(&input.name);
        let mut values = props(&[
            ("externalHostName", json!(host_name)),
            ("version", json!(input.version)),
            ("latestRegistrationDate", json!(now)),
            ("healthy", json!(true)),
            ("isConnected", json!(true)),
            ("lastConnection", json!(now)),
            ("currentNumberOfSessions", json!(sessions)),
            ("capacity", json!(input.capacity)),
        ]);
        if created {
            values.insert("enabledForRemoteSessions".into(), json!(false));
        }
        self.host.set_properties(&input.name, values)?;
        let enabled = self
            .host
            .get_property(&input.name, "enabledForRemoteSessions")
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        self.state().gases.insert(
            input.name.clone(),
            Gas {
                registration: registration.clone(),
                key: key.clone(),
                public_url: url.clone(),
                capacity: input.capacity,
                last_heard_ms: now,
                healthy: true,
                connected_written: true,
                missing: HashMap::new(),
                end_orders: Vec::new(),
            },
        );
        let _ = self.host.audit(
            AUDIT,
            &input.name,
            &format!(
                "GAS {} {} by {} from {} ({url}, capacity {}, {}){}",
                input.name,
                if created {
                    "registered for the first time"
                } else {
                    "registered again"
                },
                caller.name,
                caller.source_ip,
                input.capacity,
                clip(&input.version),
                if enabled {
                    ""
                } else {
                    "; not enabled for remote sessions: run EnableForRemoteSessions on it"
                }
            ),
        );
        self.host.info(format!(
            "GAS {} registered ({url}, enabled: {enabled})",
            input.name
        ));
        serde_json::to_value(proto::Registration {
            registration,
            key: URL_SAFE_NO_PAD.encode(&key),
            heartbeat_interval_ms: proto::HEARTBEAT_INTERVAL_MS,
            enabled,
        })
        .map_err(|e| Error::internal(e.to_string()))
    }

    /// The GAS's registration, checked; `NotFound` means "register again".
    pub(super) fn check_registration(
        state: &State,
        name: &str,
        registration: &str,
    ) -> Result<(), Error> {
        match state.gases.get(name) {
            Some(g) if g.registration == registration => Ok(()),
            _ => Err(Error::not_found(format!(
                "unknown registration for GAS '{}': register again",
                clip(name)
            ))),
        }
    }

    pub fn heartbeat(&self, beat: Heartbeat) -> Result<Value, Error> {
        if beat.sessions.len() > proto::MAX_HEARTBEAT_SESSIONS {
            return Err(Error::unprocessable(format!(
                "a heartbeat lists at most {} sessions",
                proto::MAX_HEARTBEAT_SESSIONS
            )));
        }
        let now = now_ms();
        let mut endings: Endings = Vec::new();
        let mut started: Vec<String> = Vec::new();
        let (reply, write_connected, count) = {
            let mut state = self.state();
            Self::check_registration(&state, &beat.name, &beat.registration)?;
            let mut end = Vec::new();
            let mut listed = std::collections::HashSet::new();
            for s in &beat.sessions {
                listed.insert(s.session.as_str());
                match state.live.get_mut(&s.session) {
                    Some(live) if live.record.remote_server == beat.name => {
                        live.recovered_ms = None;
                        let bytes = s.bytes_up.saturating_add(s.bytes_down);
                        if bytes > live.record.bytes_transferred {
                            live.record.bytes_transferred = bytes;
                            live.record.last_activity_time = now;
                        }
                        if s.paired && live.record.status != Status::Started {
                            live.record.status = Status::Started;
                            live.record.start_time.get_or_insert(now);
                            started.push(s.session.clone());
                        }
                    }
                    // Ended here (or never ours): the GAS must close it.
                    _ => end.push(s.session.clone()),
                }
            }
            let name = beat.name.clone();
            let on_this: std::collections::HashSet<String> = state
                .live
                .iter()
                .filter(|(_, l)| {
                    l.record.remote_server == name && l.record.status == Status::Started
                })
                .map(|(id, _)| id.clone())
                .collect();
            let count = state
                .live
                .values()
                .filter(|l| l.record.remote_server == name)
                .count();
            let gas = state.gases.get_mut(&name).expect("checked above");
            gas.last_heard_ms = now;
            gas.healthy = beat.healthy;
            let write_connected = !gas.connected_written;
            gas.connected_written = true;
            gas.missing.retain(|id, _| on_this.contains(id));
            for id in on_this {
                if listed.contains(id.as_str()) {
                    gas.missing.remove(&id);
                } else {
                    let n = gas.missing.entry(id.clone()).or_insert(0);
                    *n += 1;
                    // Twice in a row: not a heartbeat racing the session's last report.
                    if *n >= 2 {
                        endings.push((
                            id,
                            Cause::ServerLost,
                            "the GAS no longer carries the session".into(),
                        ));
                    }
                }
            }
            end.append(&mut gas.end_orders);
            end.sort_unstable();
            end.dedup();
            (proto::HeartbeatReply { end }, write_connected, count)
        };
        for id in started {
            self.persist_live(&id);
        }
        let mut values = props(&[
            ("healthy", json!(beat.healthy)),
            ("currentNumberOfSessions", json!(count)),
        ]);
        if write_connected {
            values.insert("isConnected".into(), json!(true));
            values.insert("lastConnection".into(), json!(now));
            self.host
                .info(format!("GAS {} is connected again", beat.name));
        }
        if let Err(e) = self.host.set_properties(&beat.name, values) {
            self.host
                .warn(format!("cannot update GAS Thing {}: {e}", beat.name));
        }
        for (id, cause, detail) in endings {
            self.terminate(&id, cause, &detail, None, true);
        }
        serde_json::to_value(reply).map_err(|e| Error::internal(e.to_string()))
    }

    pub fn reports(&self, reports: proto::SessionReports) -> Result<Value, Error> {
        if reports.events.len() > proto::MAX_REPORTS {
            return Err(Error::unprocessable(format!(
                "a batch holds at most {} reports",
                proto::MAX_REPORTS
            )));
        }
        {
            let state = self.state();
            Self::check_registration(&state, &reports.name, &reports.registration)?;
        }
        for report in reports.events {
            match report {
                SessionReport::Attached { .. } => {}
                SessionReport::Started { session } => {
                    let _order = self.stripe(&session);
                    let record = {
                        let mut state = self.state();
                        match state.live.get_mut(&session) {
                            Some(l)
                                if l.record.remote_server == reports.name
                                    && l.record.status != Status::Started =>
                            {
                                l.record.status = Status::Started;
                                l.record.start_time = Some(now_ms());
                                l.record.last_activity_time = now_ms();
                                l.recovered_ms = None;
                                Some(l.record.clone())
                            }
                            _ => None,
                        }
                    };
                    if let Some(record) = record {
                        self.persist(&record, None);
                    }
                }
                SessionReport::Ended {
                    session,
                    cause,
                    role,
                    detail,
                    bytes_up,
                    bytes_down,
                    ..
                } => {
                    let ours = self
                        .state()
                        .live
                        .get(&session)
                        .is_some_and(|l| l.record.remote_server == reports.name);
                    if !ours {
                        // Already ended here (EndSession, a sweep): the GAS's count is final.
                        self.final_bytes(
                            &session,
                            &reports.name,
                            bytes_up.saturating_add(bytes_down),
                        );
                        continue;
                    }
                    let (cause, why) = map_end(&cause, role.as_deref(), &detail);
                    let bytes = bytes_up.saturating_add(bytes_down);
                    if !self.terminate(&session, cause, &why, Some(bytes), false) {
                        // Ended meanwhile by EndSession or the sweep: keep the final count.
                        self.final_bytes(&session, &reports.name, bytes);
                    }
                }
            }
        }
        Ok(Value::Null)
    }

    /// Writes the GAS's final byte count into the record of a session that already ended.
    pub(super) fn final_bytes(&self, id: &str, gas: &str, bytes: u64) {
        let Ok(Some(mut record)) = self.find(id) else {
            return;
        };
        if record.status == Status::Terminated
            && record.remote_server == gas
            && bytes > record.bytes_transferred
        {
            record.bytes_transferred = bytes;
            self.persist(&record, None);
        }
    }

    // ---------------------------------------------------------------- sessions

    pub(super) fn sessions_on(&self, gas: &str) -> usize {
        self.state()
            .live
            .values()
            .filter(|l| l.record.remote_server == gas)
            .count()
    }

    /// Picks the GAS for a new session: enabled, connected (heard within 30 s), healthy, under
    /// capacity; the fewest sessions first.
    pub fn select(&self) -> Option<(String, String, Vec<u8>)> {
        let now = now_ms();
        let mut candidates: Vec<(usize, String, String, Vec<u8>)> = {
            let state = self.state();
            let mut load: HashMap<&str, usize> = HashMap::new();
            for l in state.live.values() {
                *load.entry(l.record.remote_server.as_str()).or_default() += 1;
            }
            state
                .gases
                .iter()
                .filter(|(_, g)| {
                    g.healthy && now - g.last_heard_ms <= proto::SILENT_AFTER_MS as i64
                })
                .filter_map(|(name, g)| {
                    let n = load.get(name.as_str()).copied().unwrap_or(0);
                    (n < g.capacity as usize)
                        .then(|| (n, name.clone(), g.public_url.clone(), g.key.clone()))
                })
                .collect()
        };
        candidates.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        candidates.into_iter().find_map(|(_, name, url, key)| {
            let enabled = self.host.describe_thing(&name).is_ok_and(|t| t.enabled)
                && self
                    .host
                    .get_property(&name, "enabledForRemoteSessions")
                    .ok()
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false);
            enabled.then_some((name, url, key))
        })
    }

    /// The live sessions carried by a GAS.
    pub fn gas_sessions(&self, gas: &str) -> Vec<RemoteSession> {
        let mut out: Vec<RemoteSession> = self
            .state()
            .live
            .values()
            .filter(|l| l.record.remote_server == gas)
            .map(|l| l.record.clone())
            .collect();
        out.sort_by(|a, b| b.session_id.cmp(&a.session_id));
        out
    }

    pub fn gas_session_count(&self, gas: &str) -> usize {
        self.sessions_on(gas)
    }
}

/// Maps a GAS's end report to a termination cause and a detail for people.
fn map_end(cause: &str, role: Option<&str>, detail: &str) -> (Cause, String) {
    use thingport_protocol::gas::end_causes as c;
    let side = role.unwrap_or("a side");
    let (cause, what) = match (cause, role) {
        (c::NOT_PAIRED, _) => (
            Cause::NotStarted,
            "the other side never attached".to_string(),
        ),
        (c::SHUTDOWN, _) => (Cause::ServerLost, "the GAS shut down".to_string()),
        (c::CONSOLE_AUTH_FAILED, _) => (
            Cause::AuthenticationFailed,
            "the endpoint refused the stored credentials".to_string(),
        ),
        (c::CONSOLE_HOST_KEY_MISMATCH, _) => (
            Cause::HostKeyMismatch,
            "the SSH server's host key is not the pinned one".to_string(),
        ),
        (c::CONSOLE_HOST_KEY_UNKNOWN, _) => (
            Cause::HostKeyUnknown,
            "no SSH host key is pinned for the endpoint".to_string(),
        ),
        (c::CONSOLE_UNREACHABLE, _) => (
            Cause::EndpointUnreachable,
            "the agent could not reach the endpoint".to_string(),
        ),
        (c::CONSOLE_FAILED, _) => (Cause::ConsoleError, "the console failed".to_string()),
        (c::CLOSED, Some("client")) => (Cause::UserShutdown, "the client closed the tunnel".into()),
        (_, Some("client")) => (
            Cause::Abandoned,
            format!("the client's tunnel {}", lower(cause)),
        ),
        (_, Some("agent")) => (
            Cause::DeviceShutdown,
            format!("the agent's tunnel {}", lower(cause)),
        ),
        (c::ENDED_BY_PLATFORM, _) => (Cause::Abandoned, "ended by the platform".to_string()),
        _ => (Cause::ServerLost, format!("{side}: {}", lower(cause))),
    };
    if detail.is_empty() {
        (cause, what)
    } else {
        (cause, format!("{what}: {}", clip(detail)))
    }
}

fn lower(cause: &str) -> &'static str {
    use thingport_protocol::gas::end_causes as c;
    match cause {
        c::CLOSED => "closed",
        c::LOST => "was lost",
        c::PROTOCOL => "broke the protocol",
        _ => "ended",
    }
}
