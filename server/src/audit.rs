//! Audit entries: every security-relevant action, persisted in the same transaction as the
//! change it records.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Audit categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Category {
    /// Logins and failed authentication.
    Authentication,
    /// Users, groups, organizations, application keys, permissions.
    Security,
    /// Creation and deletion of model entities.
    Entity,
    /// Extension packages (import, delete, load failures).
    Extensions,
    /// Remote sessions.
    RemoteAccess,
}

impl Category {
    pub const ALL: [Category; 5] = [
        Category::Authentication,
        Category::Security,
        Category::Entity,
        Category::Extensions,
        Category::RemoteAccess,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Authentication => "AUTHENTICATION",
            Category::Security => "SECURITY",
            Category::Entity => "ENTITY",
            Category::Extensions => "EXTENSIONS",
            Category::RemoteAccess => "REMOTE_ACCESS",
        }
    }
    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audit entry.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: i64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub principal: String,
    pub category: Category,
    /// The entity acted on, as `Kind:name`.
    pub entity: String,
    pub message: String,
    pub source_ip: String,
}

/// Filters of an audit query.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub category: Option<Category>,
    pub principal: Option<String>,
    pub entity: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Only entries with a smaller id (paging, newest first).
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// Default and largest number of rows an audit query returns.
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 10_000;
