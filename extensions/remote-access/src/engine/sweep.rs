//! Recovery at start (sessions a previous run left open) and the 5 s sweep: lost GASes,
//! inactivity, maximum duration, sessions never started.

use super::*;

impl Engine {
    /// At start: no GAS is known yet (they register again), and sessions a previous run left
    /// open are watched: their GAS has [`RECOVERY_GRACE_MS`] to report them.
    pub fn recover(&self) -> Result<(), Error> {
        for gas in self.host.things_of_template(GAS_MODEL)? {
            let _ = self.host.set_properties(
                &gas,
                props(&[("isConnected", json!(false)), ("healthy", json!(false))]),
            );
        }
        let now = now_ms();
        let mut after: Option<String> = None;
        let mut recovered = 0;
        loop {
            let page =
                self.host
                    .record_query(SESSIONS, "", after.as_deref().unwrap_or(""), 1000)?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            let mut state = self.state();
            for record in &page {
                let Ok(session) = serde_json::from_value::<RemoteSession>(record.value.clone())
                else {
                    continue;
                };
                if session.status != Status::Terminated {
                    recovered += 1;
                    state.live.insert(
                        session.session_id.clone(),
                        Live {
                            record: session,
                            grant_expires_ms: now + RECOVERY_GRACE_MS,
                            recovered_ms: Some(now),
                            // Its GAS may have claimed the credentials before the restart.
                            console_claimed: true,
                        },
                    );
                }
            }
            if page.len() < 1000 {
                break;
            }
        }
        if recovered > 0 {
            self.host.info(format!(
                "{recovered} session(s) were open at the last stop: they end SERVER_LOST unless their GAS reports them within {} s",
                RECOVERY_GRACE_MS / 1000
            ));
        }
        Ok(())
    }

    /// Every 5 s: GAS liveness, and the sessions that must end (lost GAS, inactivity, maximum
    /// duration, never started).
    pub fn sweep(&self) {
        let now = now_ms();
        let settings = self.settings();
        let mut endings: Endings = Vec::new();
        let mut disconnected: Vec<String> = Vec::new();
        {
            let mut state = self.state();
            let mut lost: Vec<String> = Vec::new();
            for (name, gas) in state.gases.iter_mut() {
                let silent = now - gas.last_heard_ms;
                if silent > proto::SILENT_AFTER_MS as i64 && gas.connected_written {
                    gas.connected_written = false;
                    disconnected.push(name.clone());
                }
                if silent > proto::LOST_AFTER_MS as i64 {
                    lost.push(name.clone());
                }
            }
            for (id, live) in &state.live {
                let r = &live.record;
                let ending = if lost.contains(&r.remote_server) {
                    Some((
                        Cause::ServerLost,
                        "the GAS stopped sending heartbeats".to_string(),
                    ))
                } else if live
                    .recovered_ms
                    .is_some_and(|t| now - t > RECOVERY_GRACE_MS)
                {
                    Some((
                        Cause::ServerLost,
                        "open at the platform's last stop and not reported by a GAS since".into(),
                    ))
                } else if r.status != Status::Started && now > live.grant_expires_ms + 10_000 {
                    Some((
                        Cause::NotStarted,
                        "a side did not attach before its credential expired".into(),
                    ))
                } else if now - r.last_activity_time > settings.inactive_ms {
                    Some((
                        Cause::Abandoned,
                        format!("no traffic for {} min", settings.inactive_ms / 60_000),
                    ))
                } else if now - r.created_time > settings.max_duration_ms {
                    Some((
                        Cause::MaxDuration,
                        format!("open for {} h", settings.max_duration_ms / 3_600_000),
                    ))
                } else {
                    None
                };
                if let Some((cause, detail)) = ending {
                    endings.push((id.clone(), cause, detail));
                }
            }
        }
        for name in disconnected {
            self.host.warn(format!(
                "GAS {name} sent no heartbeat for {} s: disconnected",
                proto::SILENT_AFTER_MS / 1000
            ));
            let _ = self
                .host
                .set_properties(&name, props(&[("isConnected", json!(false))]));
        }
        for (id, cause, detail) in endings {
            self.terminate(&id, cause, &detail, None, true);
        }
    }
}
