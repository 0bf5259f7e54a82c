//! The permission services: grant, deny, revoke and list design-time, run-time and visibility
//! permissions on an entity (or, for design time, on a whole collection).

use super::{Params, ServiceDef};
use crate::audit::Category;
use crate::error::{ApiError, ApiResult};
use crate::model::basetype::BaseType;
use crate::model::entities::{EntityKind, Member, PrincipalKind};
use crate::model::infotable::InfoTable;
use crate::model::names::printable;
use crate::platform::{put_acl, Ctx, Platform};
use crate::security::{DesignGrant, DesignPerm, RunGrant, RunPerm};
use serde_json::json;

fn principal(params: &Params) -> ApiResult<Member> {
    let kind = PrincipalKind::parse(params.str("principalType")).ok_or_else(|| {
        ApiError::bad_request(format!(
            "parameter 'principalType' must be User or Group, got '{}'",
            printable(params.str("principalType"))
        ))
    })?;
    Ok(Member {
        kind,
        name: params.str("principal").to_string(),
    })
}

fn design_perm(params: &Params) -> ApiResult<DesignPerm> {
    DesignPerm::parse(params.str("type")).ok_or_else(|| {
        ApiError::bad_request(format!(
            "parameter 'type' must be one of Create, Read, Update, Delete, got '{}'",
            printable(params.str("type"))
        ))
    })
}

fn run_perm(params: &Params) -> ApiResult<RunPerm> {
    RunPerm::parse(params.str("type")).ok_or_else(|| {
        ApiError::bad_request(format!(
            "parameter 'type' must be one of PropertyRead, PropertyWrite, ServiceInvoke, EventInvoke, EventSubscribe, got '{}'",
            printable(params.str("type"))
        ))
    })
}

pub async fn run(
    p: &Platform,
    ctx: &Ctx,
    kind: EntityKind,
    entity: &str,
    def: &ServiceDef,
    params: Params,
) -> ApiResult<InfoTable> {
    let key = (kind, entity.to_string());
    // Read-only listings.
    if def.name.starts_with("Get") {
        let m = p.model();
        let acl = m.acl.get(&key).cloned().unwrap_or_default();
        let v = match def.name {
            "GetDesignTimePermissionsAsJSON" => json!({"permissions": acl.design}),
            "GetRunTimePermissionsAsJSON" => json!({"permissions": acl.runtime}),
            _ => {
                json!({"permissions": acl.visibility, "instancePermissions": acl.instance_visibility})
            }
        };
        return Ok(InfoTable::scalar(BaseType::Json, v));
    }
    let resource = params.opt_str("resource").unwrap_or("*").to_string();
    p.commit(|m| {
        let mut acl = m.acl.get(&key).cloned().unwrap_or_default();
        let message;
        match def.name {
            "AddDesignTimePermission"
            | "DeleteDesignTimePermission"
            | "AddRunTimePermission"
            | "DeleteRunTimePermission" => {
                let who = principal(&params)?;
                if !m.exists(who.kind.entity_kind(), &who.name) {
                    return Err(ApiError::entity_not_found(&who.name));
                }
                let adding = def.name.starts_with("Add");
                let allow = params.bool("allow").unwrap_or(true);
                let verb = match (adding, allow) {
                    (false, _) => "revoked",
                    (true, true) => "allowed",
                    (true, false) => "denied",
                };
                if def.name.contains("DesignTime") {
                    let perm = design_perm(&params)?;
                    acl.design
                        .retain(|g| !(g.perm == perm && g.principal == who));
                    if adding {
                        acl.design.push(DesignGrant {
                            perm,
                            principal: who.clone(),
                            allow,
                        });
                    }
                    message = format!(
                        "design-time {} {verb} for {} {}",
                        perm.as_str(),
                        who.kind.as_str(),
                        who.name
                    );
                } else {
                    let perm = run_perm(&params)?;
                    if resource != "*" {
                        crate::model::names::validate("resource", &resource)?;
                    }
                    acl.runtime.retain(|g| {
                        !(g.perm == perm && g.resource == resource && g.principal == who)
                    });
                    if adding {
                        acl.runtime.push(RunGrant {
                            perm,
                            resource: resource.clone(),
                            principal: who.clone(),
                            allow,
                        });
                    }
                    message = format!(
                        "run-time {} on {resource} {verb} for {} {}",
                        perm.as_str(),
                        who.kind.as_str(),
                        who.name
                    );
                }
            }
            name => {
                let org = params.str("organization").to_string();
                if !m.orgs.contains_key(&org) {
                    return Err(ApiError::entity_not_found(&org));
                }
                let set = if name.contains("Instance") {
                    &mut acl.instance_visibility
                } else {
                    &mut acl.visibility
                };
                let what = if name.contains("Instance") {
                    "instance visibility"
                } else {
                    "visibility"
                };
                if name.starts_with("Add") {
                    set.insert(org.clone());
                    message = format!("{what} granted to organization {org}");
                } else {
                    set.remove(&org);
                    message = format!("{what} revoked from organization {org}");
                }
            }
        }
        let audit_kind = kind;
        Ok((
            vec![
                put_acl(kind, entity, &acl),
                ctx.audit(Category::Security, audit_kind, entity, message),
            ],
            (),
        ))
    })
    .await?;
    Ok(InfoTable::empty())
}
