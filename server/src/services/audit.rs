//! `AuditSubsystem.QueryAuditHistory`, also behind `GET /Thingworx/AuditLog`.

use super::Params;
use crate::audit::{AuditQuery, Category, DEFAULT_LIMIT, MAX_LIMIT};
use crate::error::{ApiError, ApiResult};
use crate::model::basetype::{BaseType, FieldDef};
use crate::model::infotable::InfoTable;
use crate::model::names::printable;
use crate::platform::Platform;

/// Builds a query from validated parameters.
pub fn query(params: &Params) -> ApiResult<AuditQuery> {
    let category = match params.opt_str("category") {
        None | Some("") => None,
        Some(c) => Some(Category::parse(c).ok_or_else(|| {
            ApiError::bad_request(format!(
                "parameter 'category' must be one of AUTHENTICATION, SECURITY, ENTITY, EXTENSIONS, REMOTE_ACCESS, got '{}'",
                printable(c)
            ))
        })?),
    };
    let limit = match params.i64("limit") {
        None => DEFAULT_LIMIT,
        Some(l) if (1..=i64::from(MAX_LIMIT)).contains(&l) => l as u32,
        Some(_) => {
            return Err(ApiError::unprocessable(format!(
                "parameter 'limit' must be in 1..{MAX_LIMIT}"
            )))
        }
    };
    Ok(AuditQuery {
        category,
        principal: params.opt_str("principal").map(str::to_string),
        entity: params.opt_str("entity").map(str::to_string),
        since: params.i64("since"),
        until: params.i64("until"),
        before_id: params.i64("beforeId"),
        limit,
    })
}

pub async fn run(p: &Platform, params: Params) -> ApiResult<InfoTable> {
    let q = query(&params)?;
    let rows = p.store().query_audit(&q).await?;
    let mut t = InfoTable::new(&[
        FieldDef::new("id", BaseType::Long),
        FieldDef::new("timestamp", BaseType::Datetime),
        FieldDef::new("principal", BaseType::String),
        FieldDef::new("category", BaseType::String),
        FieldDef::new("entity", BaseType::String),
        FieldDef::new("message", BaseType::String),
        FieldDef::new("sourceIp", BaseType::String),
    ]);
    for r in rows {
        t.push(serde_json::to_value(r).unwrap_or_default());
    }
    Ok(t)
}
