//! Persistence: the SQLite database in the data directory, through `sqlx`.
//!
//! The store is write-through: the platform first commits a batch of [`Write`]s in one
//! transaction, then applies the same change to the in-memory model. Queries use `$n`
//! placeholders and portable SQL so the same text runs on PostgreSQL (see docs/architecture.md).
//!
//! Writes go through one writer task (group commit): the batches waiting when it is free are
//! committed together in one transaction; if one of them fails, they are committed one by one
//! instead, so a batch that fails is refused alone while the others are written. Each caller is answered only once its batch is durable
//! (`synchronous = FULL`), so durability is unchanged; what changes is that concurrent writers
//! share one fsync instead of queueing for SQLite's write lock (whose busy handler sleeps).

use crate::audit::{AuditEntry, AuditQuery, Category};
use crate::model::entities::EntityKind;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Row, SqlitePool};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The most caller batches one group commit takes.
const GROUP_MAX: usize = 256;
/// Batches waiting for the writer before `apply` waits for room.
const WRITER_QUEUE: usize = 4_096;

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
    /// The group commit a batch was part of failed as a whole (nothing of it was written).
    #[error("database commit failed")]
    Commit(#[source] Arc<sqlx::Error>),
    #[error("the database writer has stopped")]
    WriterStopped,
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
    writer: mpsc::Sender<Pending>,
}

/// One caller's batch, waiting for the writer.
#[derive(Debug)]
struct Pending {
    writes: Vec<Write>,
    done: oneshot::Sender<Result<(), StoreError>>,
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
        let (writer, queue) = mpsc::channel(WRITER_QUEUE);
        tokio::spawn(write_loop(pool.clone(), queue));
        Ok(Store { pool, writer })
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

    /// Commits a batch of writes atomically; returns once it is durable.
    pub async fn apply(&self, writes: &[Write]) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        let pending = Pending {
            writes: writes.to_vec(),
            done,
        };
        self.writer
            .send(pending)
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
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
             AND ($4 IS NULL OR ts >= $4) AND ($5 IS NULL OR ts <= $5) \
             AND ($8 IS NULL OR id < $8) ORDER BY id DESC LIMIT $6",
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
        .bind(q.before_id)
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

/// The writer task: takes the batches waiting, commits them together, answers each.
async fn write_loop(pool: SqlitePool, mut queue: mpsc::Receiver<Pending>) {
    let mut group = Vec::with_capacity(GROUP_MAX);
    while queue.recv_many(&mut group, GROUP_MAX).await > 0 {
        match commit_group(&pool, &group).await {
            Ok(outcomes) => {
                for (p, outcome) in group.drain(..).zip(outcomes) {
                    let _ = p.done.send(outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batches = group.len(), "a group commit failed; nothing of it was written");
                let e = Arc::new(e);
                for p in group.drain(..) {
                    let _ = p.done.send(Err(StoreError::Commit(e.clone())));
                }
            }
        }
    }
}

/// Commits `group`: all its batches in one transaction (one fsync) when they all succeed, which
/// is the rule; if one fails, that transaction is rolled back and each batch is committed in a
/// transaction of its own, so only the failing one is refused. The outcome of each batch, or the
/// error that failed the whole group before anything was written.
async fn commit_group(
    pool: &SqlitePool,
    group: &[Pending],
) -> Result<Vec<Result<(), StoreError>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut failed = None;
    for p in group {
        if let Err(e) = write_all(&mut tx, &p.writes).await {
            failed = Some(e);
            break;
        }
    }
    match failed {
        None => {
            tx.commit().await?;
            return Ok(group.iter().map(|_| Ok(())).collect());
        }
        Some(e) => {
            tx.rollback().await?;
            if group.len() == 1 {
                return Ok(vec![Err(StoreError::Query(e))]);
            }
        }
    }
    // One batch failed: each on its own. From here every error is its batch's own outcome, so
    // no caller is told "failed" for a batch that was written.
    let mut outcomes = Vec::with_capacity(group.len());
    for p in group {
        outcomes.push(commit_one(pool, &p.writes).await.map_err(StoreError::Query));
    }
    Ok(outcomes)
}

/// Commits one batch in a transaction of its own.
async fn commit_one(pool: &SqlitePool, writes: &[Write]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    match write_all(&mut tx, writes).await {
        Ok(()) => tx.commit().await,
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// Runs `writes` on `conn` (inside a transaction).
async fn write_all(conn: &mut sqlx::SqliteConnection, writes: &[Write]) -> Result<(), sqlx::Error> {
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
                .execute(&mut *conn)
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
                        .execute(&mut *conn)
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
                        .execute(&mut *conn)
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
                    .execute(&mut *conn)
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
                .execute(&mut *conn)
                .await?;
            }
            Write::DeleteValue { thing, property } => {
                sqlx::query("DELETE FROM property_values WHERE thing = $1 AND property = $2")
                    .bind(thing)
                    .bind(property)
                    .execute(&mut *conn)
                    .await?;
            }
            Write::DeleteValues { thing } => {
                sqlx::query("DELETE FROM property_values WHERE thing = $1")
                    .bind(thing)
                    .execute(&mut *conn)
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
                .execute(&mut *conn)
                .await?;
            }
            Write::DeletePackage { name } => {
                for sql in [
                    "DELETE FROM extension_packages WHERE name = $1",
                    "DELETE FROM extension_records WHERE package = $1",
                ] {
                    sqlx::query(sql).bind(name).execute(&mut *conn).await?;
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
                .execute(&mut *conn)
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
                .execute(&mut *conn)
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
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str) -> Write {
        Write::PutRecord {
            package: "p".into(),
            collection: "c".into(),
            key: key.into(),
            value: Value::from(key),
        }
    }

    /// Concurrent batches are committed in groups; one that fails rolls back alone, whole, and
    /// the others of its group are written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_batch_rolls_back_alone_in_a_group_commit() {
        let dir = std::env::temp_dir().join(format!(
            "thingport-store-group-{}-{}",
            std::process::id(),
            now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open_file(&dir.join("db.sqlite")).await.unwrap();
        // Any audit line for the entity "boom" fails its statement.
        sqlx::query(
            "CREATE TRIGGER boom BEFORE INSERT ON audit_log WHEN NEW.entity = 'boom' \
             BEGIN SELECT RAISE(ABORT, 'boom'); END",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        let audit = |entity: &str| Write::Audit {
            principal: "tester".into(),
            category: Category::Entity,
            entity: entity.into(),
            message: "m".into(),
            source_ip: "127.0.0.1".into(),
        };
        // Another connection holds the write lock while the batches queue, so that they are
        // committed as one group (the first alone, waiting for the lock; then the other 199).
        let mut blocker = store.pool.acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *blocker)
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let store = store.clone();
            let writes = if i == 100 {
                // A record first, then the failing audit: neither may remain.
                vec![record("bad"), audit("boom")]
            } else {
                vec![record(&format!("k{i}")), audit("fine")]
            };
            tasks.push(tokio::spawn(async move { store.apply(&writes).await }));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.writer.max_capacity() - store.writer.capacity() < 199 {
            assert!(
                std::time::Instant::now() < deadline,
                "the batches did not queue"
            );
            tokio::task::yield_now().await;
        }
        sqlx::query("COMMIT").execute(&mut *blocker).await.unwrap();
        drop(blocker);
        for (i, t) in tasks.into_iter().enumerate() {
            let r = t.await.unwrap();
            assert_eq!(r.is_err(), i == 100, "batch {i}: {r:?}");
        }
        assert_eq!(store.record("p", "c", "bad").await.unwrap(), None);
        for i in [0, 99, 101, 199] {
            let key = format!("k{i}");
            assert_eq!(
                store.record("p", "c", &key).await.unwrap(),
                Some(Value::from(key.as_str()))
            );
        }
        let audits: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(audits, 199);
        // A failing batch alone (a group of one) is refused the same way.
        assert!(store.apply(&[record("bad"), audit("boom")]).await.is_err());
        assert_eq!(store.record("p", "c", "bad").await.unwrap(), None);
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
