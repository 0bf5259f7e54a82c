//! Serves extensions' host calls from the platform.
//!
//! Every operation goes through the same code paths as the REST API (`services::invoke`,
//! `things::write_properties`, ...), acting as the system principal: an extension's internal work
//! runs as the system, not as the user whose call started it (SPEC §2), and the user's own
//! permissions were checked before the extension was called.

use super::host::HostServices;
use crate::audit::Category;
use crate::error::ApiError;
use crate::model::entities::EntityKind;
use crate::platform::{Ctx, Platform};
use crate::security::{DesignPerm, RunPerm};
use crate::services::{self, things};
use crate::store::Write;
use axum::http::StatusCode;
use serde_json::Value;
use std::sync::{Arc, Weak};
use thingport_sdk::protocol::{ErrorBody, ErrorKind, HostRequest};

/// The platform as seen by extensions.
pub struct PlatformBridge {
    platform: Weak<Platform>,
    runtime: tokio::runtime::Handle,
}

impl PlatformBridge {
    /// `runtime` runs the platform's async work for host calls, which arrive on blocking threads.
    pub fn new(platform: &Arc<Platform>, runtime: tokio::runtime::Handle) -> Arc<Self> {
        Arc::new(PlatformBridge {
            platform: Arc::downgrade(platform),
            runtime,
        })
    }
}

/// Maps a client-facing error to the error body an extension receives.
pub fn error_body(e: &ApiError) -> ErrorBody {
    let kind = match e.status {
        StatusCode::BAD_REQUEST => ErrorKind::BadRequest,
        StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => ErrorKind::Forbidden,
        StatusCode::NOT_FOUND => ErrorKind::NotFound,
        StatusCode::CONFLICT => ErrorKind::Conflict,
        StatusCode::UNPROCESSABLE_ENTITY => ErrorKind::Unprocessable,
        StatusCode::SERVICE_UNAVAILABLE => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    };
    ErrorBody {
        error: e.message.clone(),
        kind,
    }
}

/// The largest record value (its JSON text).
pub const MAX_RECORD_BYTES: usize = 256 * 1024;

fn no_vault() -> ErrorBody {
    ErrorBody {
        error: "the platform has no secrets key loaded".into(),
        kind: ErrorKind::Unavailable,
    }
}

fn bad(error: String) -> ErrorBody {
    ErrorBody {
        error,
        kind: ErrorKind::BadRequest,
    }
}

/// Collections are names (1..64 of `A-Za-z0-9_.-`); keys are 1..256 bytes (empty allowed only
/// where `key` is not used).
fn check_record(collection: &str, key: &str) -> Result<(), ErrorBody> {
    let named = !collection.is_empty()
        && collection.len() <= 64
        && collection
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !named {
        return Err(bad(format!(
            "a record collection is 1 to 64 characters of A-Z, a-z, 0-9, '_', '.', '-', not '{}'",
            crate::model::names::printable(collection)
        )));
    }
    if key.len() > 256 {
        return Err(bad("a record key has at most 256 bytes".into()));
    }
    Ok(())
}

fn audit_write(
    extension: &str,
    audit: Option<thingport_sdk::protocol::AuditEntry>,
) -> Result<Option<Write>, ErrorBody> {
    let Some(a) = audit else { return Ok(None) };
    let category = Category::parse(&a.category)
        .ok_or_else(|| bad(format!("unknown audit category '{}'", a.category)))?;
    Ok(Some(Write::Audit {
        principal: format!("extension:{extension}"),
        category,
        entity: a.entity,
        message: a.message,
        source_ip: "local".into(),
    }))
}

impl PlatformBridge {
    /// Writes record changes (and their audit entry) in one transaction.
    fn apply(&self, p: &Platform, writes: &[Write]) -> Result<Value, ErrorBody> {
        self.runtime
            .block_on(p.store().apply(writes))
            .map_err(|e| {
                error_body(&ApiError::internal(
                    "writing an extension record failed",
                    &e,
                ))
            })?;
        Ok(Value::Null)
    }
}

fn no_extensions() -> ErrorBody {
    ErrorBody {
        error: "the extension system is not running".into(),
        kind: ErrorKind::Unavailable,
    }
}

fn kind_of(entity_kind: &str) -> Result<EntityKind, ErrorBody> {
    EntityKind::parse(entity_kind)
        .or_else(|| EntityKind::from_collection(entity_kind))
        .ok_or_else(|| ErrorBody {
            error: format!("unknown entity kind '{entity_kind}'"),
            kind: ErrorKind::BadRequest,
        })
}

impl HostServices for PlatformBridge {
    fn host_call(
        &self,
        extension: &str,
        load: u64,
        request: HostRequest,
    ) -> Result<Value, ErrorBody> {
        let p = self.platform.upgrade().ok_or_else(|| ErrorBody {
            error: "the platform is shutting down".into(),
            kind: ErrorKind::Unavailable,
        })?;
        let ctx = Ctx::system();
        let api = |e: ApiError| error_body(&e);
        match request {
            HostRequest::GetProperties { thing } => {
                let t = things::read_properties(&p, &ctx.who, &thing).map_err(api)?;
                Ok(t.rows
                    .into_iter()
                    .next()
                    .map(Value::Object)
                    .unwrap_or(Value::Null))
            }
            HostRequest::SetProperties { thing, values } => {
                self.runtime
                    .block_on(things::write_properties(&p, &ctx, &thing, values))
                    .map_err(api)?;
                Ok(Value::Null)
            }
            HostRequest::Invoke {
                entity_kind,
                entity,
                service,
                params,
            } => {
                let kind = kind_of(&entity_kind)?;
                let t = self
                    .runtime
                    .block_on(services::invoke(&p, &ctx, kind, &entity, &service, params))
                    .map_err(api)?;
                serde_json::to_value(t).map_err(|e| ErrorBody {
                    error: format!("result not encodable: {e}"),
                    kind: ErrorKind::Internal,
                })
            }
            HostRequest::Audit {
                category,
                entity,
                message,
            } => {
                let category = Category::parse(&category).ok_or_else(|| ErrorBody {
                    error: format!("unknown audit category '{category}'"),
                    kind: ErrorKind::BadRequest,
                })?;
                self.runtime.block_on(p.audit(Write::Audit {
                    principal: format!("extension:{extension}"),
                    category,
                    entity,
                    message,
                    source_ip: "local".into(),
                }));
                Ok(Value::Null)
            }
            HostRequest::ScheduleTimer {
                name,
                delay_ms,
                period_ms,
            } => {
                let ext = p.extensions().ok_or_else(|| ErrorBody {
                    error: "the extension system is not running".into(),
                    kind: ErrorKind::Unavailable,
                })?;
                ext.schedule_timer(&self.runtime, extension, load, &name, delay_ms, period_ms)?;
                Ok(Value::Null)
            }
            HostRequest::CancelTimer { name } => {
                if let Some(ext) = p.extensions() {
                    ext.cancel_timer(load, &name);
                }
                Ok(Value::Null)
            }
            HostRequest::ConnectionSend { connection, text } => {
                let ext = p.extensions().ok_or_else(no_extensions)?;
                ext.connections().send(load, connection, text)?;
                Ok(Value::Null)
            }
            HostRequest::ConnectionClose {
                connection,
                code,
                reason,
            } => {
                if let Some(ext) = p.extensions() {
                    ext.connections().close(load, connection, code, &reason);
                }
                Ok(Value::Null)
            }
            HostRequest::DescribeThing { thing } => {
                let m = p.model();
                let Some(t) = m.things.get(&thing) else {
                    return Err(ErrorBody {
                        error: format!("Thing '{thing}' does not exist"),
                        kind: ErrorKind::NotFound,
                    });
                };
                let templates: Vec<String> = m
                    .template_chain(&t.template)
                    .into_iter()
                    .map(String::from)
                    .collect();
                let mut shapes = t.shapes.clone();
                for tpl in &templates {
                    if let Some(tt) = m.templates.get(tpl) {
                        shapes.extend(tt.shapes.iter().cloned());
                    }
                }
                Ok(serde_json::json!({
                    "name": thing, "template": t.template, "templates": templates,
                    "shapes": shapes, "enabled": t.enabled, "tags": t.tags,
                }))
            }
            HostRequest::CheckPermission {
                user,
                entity_kind,
                entity,
                perm,
                resource,
            } => {
                let kind = kind_of(&entity_kind)?;
                let who = p.principal(&user);
                let m = p.model();
                // A user that does not exist or is disabled holds no permission.
                if !m.users.get(&user).is_some_and(|u| u.enabled) {
                    return Ok(Value::Bool(false));
                }
                let allowed = if perm == "Visible" {
                    m.check_visible(&who, kind, &entity).is_ok()
                } else if let Some(rp) = RunPerm::parse(&perm) {
                    m.check_visible(&who, kind, &entity).is_ok()
                        && m.check_runtime(&who, kind, &entity, rp, &resource).is_ok()
                } else if let Some(dp) = DesignPerm::parse(&perm) {
                    m.check_visible(&who, kind, &entity).is_ok()
                        && m.check_design(&who, kind, &entity, dp).is_ok()
                } else {
                    return Err(ErrorBody {
                        error: format!("unknown permission '{perm}'"),
                        kind: ErrorKind::BadRequest,
                    });
                };
                Ok(Value::Bool(allowed))
            }
            HostRequest::SetPropertiesBatch { updates } => {
                let updates = updates.into_iter().map(|u| (u.thing, u.values)).collect();
                self.runtime
                    .block_on(things::write_properties_batch(&p, &ctx, updates))
                    .map_err(api)?;
                Ok(Value::Null)
            }
            HostRequest::RecordPut {
                collection,
                key,
                value,
                audit,
            } => {
                check_record(&collection, &key)?;
                let size = value.to_string().len();
                if size > MAX_RECORD_BYTES {
                    return Err(bad(format!(
                        "a record holds at most {MAX_RECORD_BYTES} bytes of JSON, not {size}"
                    )));
                }
                let mut writes = vec![Write::PutRecord {
                    package: extension.to_string(),
                    collection,
                    key,
                    value,
                }];
                writes.extend(audit_write(extension, audit)?);
                self.apply(&p, &writes)
            }
            HostRequest::RecordDelete {
                collection,
                key,
                audit,
            } => {
                check_record(&collection, &key)?;
                let mut writes = vec![Write::DeleteRecord {
                    package: extension.to_string(),
                    collection,
                    key,
                }];
                writes.extend(audit_write(extension, audit)?);
                self.apply(&p, &writes)
            }
            HostRequest::SecretSeal { context, plaintext } => {
                let vault = p.vault().ok_or_else(no_vault)?;
                vault
                    .seal(&format!("{extension}/{context}"), &plaintext)
                    .map(Value::String)
                    .map_err(|e| bad(e.to_string()))
            }
            HostRequest::SecretOpen { context, sealed } => {
                let vault = p.vault().ok_or_else(no_vault)?;
                match vault.open(&format!("{extension}/{context}"), &sealed) {
                    Ok(plain) => Ok(Value::String(plain.to_string())),
                    Err(e) => {
                        tracing::warn!(extension, context, error = %e, "a stored secret did not open");
                        Err(ErrorBody {
                            error: e.to_string(),
                            kind: ErrorKind::Unprocessable,
                        })
                    }
                }
            }
            HostRequest::RecordGet { collection, key } => {
                check_record(&collection, &key)?;
                let v = self
                    .runtime
                    .block_on(p.store().record(extension, &collection, &key))
                    .map_err(|e| {
                        api(ApiError::internal("reading an extension record failed", &e))
                    })?;
                Ok(v.unwrap_or(Value::Null))
            }
            HostRequest::RecordQuery {
                collection,
                prefix,
                after,
                limit,
            } => {
                check_record(&collection, "")?;
                if !(1..=1000).contains(&limit) {
                    return Err(bad(format!(
                        "limit must be between 1 and 1000, not {limit}"
                    )));
                }
                let rows = self
                    .runtime
                    .block_on(
                        p.store()
                            .records(extension, &collection, &prefix, &after, limit),
                    )
                    .map_err(|e| api(ApiError::internal("reading extension records failed", &e)))?;
                Ok(Value::Array(
                    rows.into_iter()
                        .map(|(key, value)| serde_json::json!({"key": key, "value": value}))
                        .collect(),
                ))
            }
            HostRequest::ThingsOfTemplate { template } => {
                let m = p.model();
                let mut names: Vec<&String> = m
                    .things
                    .iter()
                    .filter(|(_, t)| m.template_derives_from(&t.template, &template))
                    .map(|(n, _)| n)
                    .collect();
                names.sort();
                Ok(serde_json::json!(names))
            }
        }
    }
}
