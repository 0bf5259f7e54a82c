//! Persistence: the SQLite database in the data directory, through `sqlx`.
//!
//! The store is write-through: the platform first commits a batch of [`Write`]s in one
//! transaction, then applies the same change to the in-memory model. Queries use `$n`
//! placeholders and portable SQL so the same text runs on PostgreSQL (see docs/architecture.md).

use crate::audit::{AuditEntry, AuditQuery, Category};
use crate::model::entities::EntityKind;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Row, SqlitePool};
use std::path::Path;
use std::time::Duration;

/// A storage failure. Never shown to API clients (they get a generic 500).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to open the database at {path}")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("failed to run database migrations")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
    #[error("failed to start the password hashing threads")]
    Io(#[source] std::io::Error),
    #[error("stored {kind} '{name}' is corrupt")]
    Corrupt {
        kind: String,
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// One change, part of an atomic batch.
#[derive(Debug, Clone)]
pub enum Write {
    PutEntity {
        kind: EntityKind,
        name: String,
        body: Value,
    },
    DeleteEntity {
        kind: EntityKind,
        name: String,
    },
    /// Replaces the grants of an entity; an empty ACL deletes the row.
    PutAcl {
        kind: EntityKind,
        name: String,
        body: Value,
        empty: bool,
    },
    PutValue {
        thing: String,
        property: String,
        value: Value,
    },
    DeleteValue {
        thing: String,
        property: String,
    },
    DeleteValues {
        thing: String,
    },
    Audit {
        principal: String,
        category: Category,
        entity: String,
        message: String,
        source_ip: String,
    },
    /// Records an installed extension package (replacing an older version's record).
    PutPackage {
        name: String,
        version: String,
        sha256: String,
        installed_by: String,
    },
    /// Deletes a package's record and its extension records.
    DeletePackage {
        name: String,
    },
    /// Writes (inserts or replaces) one extension record.
    PutRecord {
        package: String,
        collection: String,
        key: String,
        value: Value,
    },
    DeleteRecord {
        package: String,
        collection: String,
        key: String,
    },
}

impl Write {
    /// A short description for logs: kind and name, never the body (which may hold a hash).
    pub fn describe(&self) -> String {
        match self {
            Write::PutEntity { kind, name, .. } => format!("put {kind} {name}"),
            Write::DeleteEntity { kind, name } => format!("delete {kind} {name}"),
            Write::PutAcl { kind, name, .. } => format!("put acl of {kind} {name}"),
            Write::PutValue {
                thing, property, ..
            } => format!("put value {thing}.{property}"),
            Write::DeleteValue { thing, property } => format!("delete value {thing}.{property}"),
            Write::DeleteValues { thing } => format!("delete values of {thing}"),
            Write::Audit {
                category, entity, ..
            } => format!("audit {category} {entity}"),
            Write::PutPackage { name, version, .. } => format!("put package {name} {version}"),
            Write::DeletePackage { name } => format!("delete package {name}"),
            Write::PutRecord {
                package,
                collection,
                key,
                ..
            } => format!("put record {package}/{collection}/{key}"),
            Write::DeleteRecord {
                package,
                collection,
                key,
            } => format!("delete record {package}/{collection}/{key}"),
        }
    }
}

/// What is loaded at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub entities: Vec<(String, String, Value)>,
    pub acls: Vec<(String, String, Value)>,
    pub values: Vec<(String, String, Value)>,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

fn now() -> i64 {
    crate::model::basetype::now_millis()
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and runs the migrations.
    pub async fn open_file(path: &Path) -> Result<Store, StoreError> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed transaction is on disk before the API acknowledges it.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // SQL text stays out of the logs; failures are logged by the caller without it.
            .disable_statement_logging();
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Store { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Reads every entity, ACL and property value.
    pub async fn load(&self) -> Result<Snapshot, StoreError> {
        let mut snap = Snapshot::default();
        for (table, key, val, dest) in [
            ("entities", "kind", "body", 0),
            ("acls", "kind", "body", 1),
            ("property_values", "thing", "value", 2),
        ] {
            let second = if dest == 2 { "property" } else { "name" };
            let sql = format!("SELECT {key}, {second}, {val} FROM {table}");
            let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
            for r in rows {
                let a: String = r.try_get(0)?;
                let b: String = r.try_get(1)?;
                let text: String = r.try_get(2)?;
                let v: Value =
                    serde_json::from_str(&text).map_err(|source| StoreError::Corrupt {
                        kind: format!("{table}.{a}"),
                        name: b.clone(),
                        source,
                    })?;
                let dest = match dest {
                    0 => &mut snap.entities,
                    1 => &mut snap.acls,
                    _ => &mut snap.values,
                };
                dest.push((a, b, v));
            }
        }
        Ok(snap)
    }

    /// Commits a batch of writes atomically.
    pub async fn apply(&self, writes: &[Write]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let ts = now();
        for w in writes {
            match w {
                Write::PutEntity { kind, name, body } => {
                    sqlx::query(
                        "INSERT INTO entities (kind, name, body, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
                         ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
                    )
                    .bind(kind.as_str())
                    .bind(name)
                    .bind(body.to_string())
                    .bind(ts)
                    .execute(&mut *tx)
                    .await?;
                }
                Write::DeleteEntity { kind, name } => {
                    for sql in [
                        "DELETE FROM entities WHERE kind = $1 AND name = $2",
                        "DELETE FROM acls WHERE kind = $1 AND name = $2",
                    ] {
                        sqlx::query(sql)
                            .bind(kind.as_str())
                            .bind(name)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                Write::PutAcl {
                    kind,
                    name,
                    body,
                    empty,
                } => {
                    if *empty {
                        sqlx::query("DELETE FROM acls WHERE kind = $1 AND name = $2")
                            .bind(kind.as_str())
                            .bind(name)
                            .execute(&mut *tx)
                            .await?;
                    } else {
                        sqlx::query(
                            "INSERT INTO acls (kind, name, body, updated_at) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
                        )
                        .bind(kind.as_str())
                        .bind(name)
                        .bind(body.to_string())
                        .bind(ts)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                Write::PutValue {
                    thing,
                    property,
                    value,
                } => {
                    sqlx::query(
                        "INSERT INTO property_values (thing, property, value, updated_at) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (thing, property) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    )
                    .bind(thing)
                    .bind(property)
                    .bind(value.to_string())
                    .bind(ts)
                    .execute(&mut *tx)
                    .await?;
                }
                Write::DeleteValue { thing, property } => {
                    sqlx::query("DELETE FROM property_values WHERE thing = $1 AND property = $2")
                        .bind(thing)
                        .bind(property)
                        .execute(&mut *tx)
                        .await?;
                }
                Write::DeleteValues { thing } => {
                    sqlx::query("DELETE FROM property_values WHERE thing = $1")
                        .bind(thing)
                        .execute(&mut *tx)
                        .await?;
                }
                Write::PutPackage {
                    name,
                    version,
                    sha256,
                    installed_by,
                } => {
                    sqlx::query(
                        "INSERT INTO extension_packages (name, version, sha256, installed_at, installed_by) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (name) DO UPDATE SET version = excluded.version, sha256 = excluded.sha256, \
                         installed_at = excluded.installed_at, installed_by = excluded.installed_by",
                    )
                    .bind(name)
                    .bind(version)
                    .bind(sha256)
                    .bind(ts)
                    .bind(installed_by)
                    .execute(&mut *tx)
                    .await?;
                }
                Write::DeletePackage { name } => {
                    for sql in [
                        "DELETE FROM extension_packages WHERE name = $1",
                        "DELETE FROM extension_records WHERE package = $1",
                    ] {
                        sqlx::query(sql).bind(name).execute(&mut *tx).await?;
                    }
                }
                Write::PutRecord {
                    package,
                    collection,
                    key,
                    value,
                } => {
                    sqlx::query(
                        "INSERT INTO extension_records (package, collection, key, value, updated_at) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (package, collection, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    )
                    .bind(package)
                    .bind(collection)
                    .bind(key)
                    .bind(value.to_string())
                    .bind(ts)
                    .execute(&mut *tx)
                    .await?;
                }
                Write::DeleteRecord {
                    package,
                    collection,
                    key,
                } => {
                    sqlx::query(
                        "DELETE FROM extension_records WHERE package = $1 AND collection = $2 AND key = $3",
                    )
                    .bind(package)
                    .bind(collection)
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
                }
                Write::Audit {
                    principal,
                    category,
                    entity,
                    message,
                    source_ip,
                } => {
                    sqlx::query(
                        "INSERT INTO audit_log (ts, principal, category, entity, message, source_ip) VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(ts)
                    .bind(principal)
                    .bind(category.as_str())
                    .bind(entity)
                    .bind(message)
                    .bind(source_ip)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// One extension record's value.
    pub async fn record(
        &self,
        package: &str,
        collection: &str,
        key: &str,
    ) -> Result<Option<Value>, StoreError> {
        let row = sqlx::query(
            "SELECT value FROM extension_records WHERE package = $1 AND collection = $2 AND key = $3",
        )
        .bind(package)
        .bind(collection)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => {
                let text: String = r.try_get(0)?;
                Ok(Some(serde_json::from_str(&text).unwrap_or(Value::Null)))
            }
            None => Ok(None),
        }
    }

    /// Extension records of a collection in key order: keys starting with `prefix`, after
    /// `after` (exclusive; for paging), at most `limit`.
    pub async fn records(
        &self,
        package: &str,
        collection: &str,
        prefix: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<(String, Value)>, StoreError> {
        // `key >= prefix AND key < prefix + U+10FFFF`: a prefix range without LIKE escaping.
        let upper = format!("{prefix}\u{10FFFF}");
        let rows = sqlx::query(
            "SELECT key, value FROM extension_records WHERE package = $1 AND collection = $2 \
             AND key >= $3 AND key < $4 AND key > $5 ORDER BY key LIMIT $6",
        )
        .bind(package)
        .bind(collection)
        .bind(prefix)
        .bind(upper)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let key: String = r.try_get(0)?;
                let text: String = r.try_get(1)?;
                Ok((key, serde_json::from_str(&text).unwrap_or(Value::Null)))
            })
            .collect()
    }

    /// Installed extension packages: (name, version, package sha256), in installation order.
    pub async fn packages(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, version, sha256 FROM extension_packages ORDER BY installed_at, name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// Audit entries matching `q`, newest first.
    pub async fn query_audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, ts, principal, category, entity, message, source_ip FROM audit_log \
             WHERE ($1 IS NULL OR category = $1) AND ($2 IS NULL OR principal = $2) \
             AND ($3 IS NULL OR entity = $3 OR entity LIKE $7 ESCAPE '\\') \
             AND ($4 IS NULL OR ts >= $4) AND ($5 IS NULL OR ts <= $5) ORDER BY id DESC LIMIT $6",
        )
        .bind(q.category.map(Category::as_str))
        .bind(q.principal.as_deref())
        .bind(q.entity.as_deref())
        .bind(q.since)
        .bind(q.until)
        .bind(i64::from(q.limit))
        // A bare name (no `Kind:`) matches that name under any kind.
        .bind(q.entity.as_deref().filter(|e| !e.contains(':')).map(|e| {
            let escaped = e
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%:{escaped}")
        }))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let cat: String = r.try_get(3)?;
            out.push(AuditEntry {
                id: r.try_get(0)?,
                timestamp: r.try_get(1)?,
                principal: r.try_get(2)?,
                category: Category::parse(&cat).unwrap_or(Category::Security),
                entity: r.try_get(4)?,
                message: r.try_get(5)?,
                source_ip: r.try_get(6)?,
            });
        }
        Ok(out)
    }
}
