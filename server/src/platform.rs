//! The running platform: the in-memory model, the store, and the one way to change them.
//!
//! Every change is a batch of [`Write`]s planned against a consistent view of the model under
//! the write gate, committed to the database in one transaction, and only then applied to the
//! model by the same [`apply`] function that replays them: there is no second code path that
//! mutates state, so memory never holds what the database does not.

use crate::audit::Category;
use crate::error::{ApiError, ApiResult};
use crate::model::entities::{EntityKind, Thing};
use crate::model::Model;
use crate::security::hasher::Hasher;
use crate::security::{secrets, Acl, Principal};
use crate::store::{Store, StoreError, Write};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

/// How long a verified Basic credential is trusted without hashing again.
const CREDENTIAL_TTL: Duration = Duration::from_secs(60);
/// Bound on cached credentials (all dropped beyond it).
const CACHE_LIMIT: usize = 10_000;

/// Who is acting, and from where: passed to every service.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub who: Arc<Principal>,
    pub source_ip: String,
}

impl Ctx {
    pub fn system() -> Self {
        Ctx {
            who: Arc::new(Principal::system()),
            source_ip: "local".into(),
        }
    }

    /// An audit entry written by this caller, to be committed with the change it records.
    pub fn audit(
        &self,
        category: Category,
        kind: EntityKind,
        name: &str,
        message: impl Into<String>,
    ) -> Write {
        Write::Audit {
            principal: self.who.name.clone(),
            category,
            entity: format!("{kind}:{name}"),
            message: message.into(),
            source_ip: self.source_ip.clone(),
        }
    }
}

pub struct Platform {
    model: RwLock<Model>,
    store: Store,
    /// Serialises writers so a plan is made against the state it will be applied to.
    write_gate: tokio::sync::Mutex<()>,
    principals: Mutex<HashMap<String, Arc<Principal>>>,
    credentials: Mutex<HashMap<String, (String, Instant)>>,
    sessions: crate::security::sessions::Sessions,
    hasher: Hasher,
    extensions: std::sync::OnceLock<Arc<crate::extensions::registry::Extensions>>,
    /// The key that seals secrets at rest (endpoint credentials), once loaded.
    vault: std::sync::OnceLock<Arc<crate::security::vault::Vault>>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform").finish_non_exhaustive()
    }
}

/// Builds the write that stores an entity's current body.
pub fn put_entity<T: Serialize>(kind: EntityKind, name: &str, entity: &T) -> Write {
    Write::PutEntity {
        kind,
        name: name.to_string(),
        body: serde_json::to_value(entity).unwrap_or_default(),
    }
}

/// Builds the write that stores an entity's grants.
pub fn put_acl(kind: EntityKind, name: &str, acl: &Acl) -> Write {
    Write::PutAcl {
        kind,
        name: name.to_string(),
        body: serde_json::to_value(acl).unwrap_or_default(),
        empty: acl.is_empty(),
    }
}

/// Applies one committed write to the model.
pub fn apply(m: &mut Model, w: &Write) -> Result<(), serde_json::Error> {
    match w {
        Write::PutEntity { kind, name, body } => m.put_body(*kind, name, body.clone())?,
        Write::DeleteEntity { kind, name } => m.remove(*kind, name),
        Write::PutAcl {
            kind,
            name,
            body,
            empty,
        } => {
            let key = (*kind, name.clone());
            if *empty {
                m.acl.remove(&key);
            } else {
                m.acl.insert(key, serde_json::from_value(body.clone())?);
            }
        }
        Write::PutValue {
            thing,
            property,
            value,
        } => {
            if let Some(t) = m.things.get_mut(thing) {
                t.values.insert(property.clone(), value.clone());
            }
        }
        Write::DeleteValue { thing, property } => {
            if let Some(t) = m.things.get_mut(thing) {
                t.values.remove(property);
            }
        }
        Write::DeleteValues { thing } => {
            if let Some(t) = m.things.get_mut(thing) {
                t.values.clear();
            }
        }
        Write::Audit { .. }
        | Write::PutPackage { .. }
        | Write::DeletePackage { .. }
        | Write::PutRecord { .. }
        | Write::DeleteRecord { .. } => {}
    }
    Ok(())
}

impl Platform {
    /// Loads the model from the store.
    pub async fn load(store: Store) -> Result<Platform, StoreError> {
        let snap = store.load().await?;
        let mut m = Model::default();
        m.resources.push("EntityServices".into());
        // Shapes and data shapes first, templates before Things: order of EntityKind::STORED.
        for kind in EntityKind::STORED {
            for (k, name, body) in snap.entities.iter().filter(|(k, _, _)| k == kind.as_str()) {
                m.put_body(kind, name, body.clone())
                    .map_err(|source| StoreError::Corrupt {
                        kind: k.clone(),
                        name: name.clone(),
                        source,
                    })?;
            }
        }
        for (k, name, body) in snap.acls {
            let kind = match k.as_str() {
                "Collection" => EntityKind::Collection,
                other => match EntityKind::parse(other) {
                    Some(kind) => kind,
                    None => continue,
                },
            };
            let acl: Acl = serde_json::from_value(body).map_err(|source| StoreError::Corrupt {
                kind: format!("acl {k}"),
                name: name.clone(),
                source,
            })?;
            m.acl.insert((kind, name), acl);
        }
        for (thing, prop, value) in snap.values {
            if let Some(t) = m.things.get_mut(&thing) {
                t.values.insert(prop, value);
            }
        }
        Ok(Platform {
            model: RwLock::new(m),
            store,
            write_gate: tokio::sync::Mutex::new(()),
            principals: Mutex::new(HashMap::new()),
            credentials: Mutex::new(HashMap::new()),
            sessions: crate::security::sessions::Sessions::new(Default::default()),
            hasher: Hasher::for_this_machine().map_err(StoreError::Io)?,
            extensions: std::sync::OnceLock::new(),
            vault: std::sync::OnceLock::new(),
        })
    }

    /// Attaches the extension system (once, at start).
    pub fn set_extensions(&self, e: Arc<crate::extensions::registry::Extensions>) {
        let _ = self.extensions.set(e);
    }

    /// Attaches the secrets key (once; later calls are ignored).
    pub fn set_vault(&self, v: Arc<crate::security::vault::Vault>) {
        let _ = self.vault.set(v);
    }

    /// The secrets key, once attached.
    pub fn vault(&self) -> Option<&Arc<crate::security::vault::Vault>> {
        self.vault.get()
    }

    /// The extension system, once attached.
    pub fn extensions(&self) -> Option<&Arc<crate::extensions::registry::Extensions>> {
        self.extensions.get()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A read view of the model. Never hold it across an `.await`.
    pub fn model(&self) -> RwLockReadGuard<'_, Model> {
        self.model.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Plans a change against the current model, commits it, then applies it.
    pub async fn commit<R>(
        &self,
        plan: impl FnOnce(&Model) -> ApiResult<(Vec<Write>, R)>,
    ) -> ApiResult<R> {
        let _gate = self.write_gate.lock().await;
        let (writes, result) = plan(&self.model())?;
        if writes.is_empty() {
            return Ok(result);
        }
        self.store.apply(&writes).await?;
        let touches = |kinds: &[EntityKind]| {
            writes.iter().any(|w| {
                matches!(w, Write::PutEntity { kind, .. } | Write::DeleteEntity { kind, .. } if kinds.contains(kind))
            })
        };
        // Memberships feed resolved principals; user entities feed verified credentials.
        let principals_changed = touches(&[
            EntityKind::User,
            EntityKind::Group,
            EntityKind::Organization,
        ]);
        let users_changed = touches(&[EntityKind::User]);
        {
            let mut m = self.model.write().unwrap_or_else(|p| p.into_inner());
            for w in &writes {
                if let Err(e) = apply(&mut m, w) {
                    tracing::error!(error = %e, write = w.describe(), "a committed write could not be applied to the model; restart to reload");
                }
            }
        }
        if principals_changed {
            self.principals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        if users_changed {
            self.credentials
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        Ok(result)
    }

    /// Records an audit entry on its own (e.g. a failed login).
    pub async fn audit(&self, w: Write) {
        if let Err(e) = self.store.apply(std::slice::from_ref(&w)).await {
            tracing::error!(error = %e, "failed to write an audit entry");
        }
    }

    /// The resolved principal of a user, cached until memberships change.
    pub fn principal(&self, user: &str) -> Arc<Principal> {
        if let Some(p) = self
            .principals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
        {
            return p.clone();
        }
        let p = Arc::new(self.model().principal(user));
        let mut cache = self.principals.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(user.to_string(), p.clone());
        p
    }

    /// Authenticates an application key value.
    pub fn authenticate_key(&self, key: &str) -> ApiResult<Arc<Principal>> {
        let hash = secrets::sha256_hex(key.as_bytes());
        let user = {
            let m = self.model();
            let name = m.key_index.get(&hash).ok_or_else(|| {
                ApiError::unauthorized("invalid credentials: unknown application key")
            })?;
            let k = &m.app_keys[name];
            if k.expires_at
                .is_some_and(|t| t <= crate::model::basetype::now_millis())
            {
                return Err(ApiError::unauthorized(format!(
                    "application key '{name}' has expired"
                )));
            }
            match m.users.get(&k.user) {
                Some(u) if u.enabled => k.user.clone(),
                _ => {
                    return Err(ApiError::unauthorized(format!(
                        "application key '{name}' belongs to no enabled user"
                    )))
                }
            }
        };
        Ok(self.principal(&user))
    }

    /// Authenticates a user name and password (argon2id on a blocking thread, then cached).
    pub async fn authenticate_password(
        &self,
        user: &str,
        password: &str,
    ) -> ApiResult<Arc<Principal>> {
        let cache_key = {
            // Salted with a per-process secret: the cache never holds a crackable password digest.
            static SALT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
            let salt = SALT.get_or_init(secrets::random_token);
            secrets::sha256_hex(format!("{salt}\0{user}\0{password}").as_bytes())
        };
        let cached = {
            let mut c = self.credentials.lock().unwrap_or_else(|p| p.into_inner());
            match c.get(&cache_key) {
                Some((u, at)) if at.elapsed() < CREDENTIAL_TTL => Some(u.clone()),
                Some(_) => {
                    c.remove(&cache_key);
                    None
                }
                None => None,
            }
        };
        if let Some(u) = cached {
            return Ok(self.principal(&u));
        }
        let hash = {
            let m = self.model();
            m.users
                .get(user)
                .filter(|u| u.enabled)
                .map(|u| u.password_hash.clone())
        };
        // Unknown users cost the same hashing work as known ones (no user enumeration by timing).
        let known = hash.is_some();
        let pw = password.to_string();
        let ok = self
            .hash_work(move || {
                secrets::verify_password(&pw, hash.as_deref().unwrap_or_else(|| dummy_hash()))
            })
            .await?;
        if !(ok && known) {
            return Err(ApiError::unauthorized("invalid credentials"));
        }
        let mut c = self.credentials.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() >= CACHE_LIMIT {
            c.clear();
        }
        c.insert(cache_key, (user.to_string(), Instant::now()));
        drop(c);
        Ok(self.principal(user))
    }

    /// The browser sessions (sign-in, idle and absolute expiry).
    pub fn sessions(&self) -> &crate::security::sessions::Sessions {
        &self.sessions
    }

    /// Opens a browser session for `user`, returning its id. The session is bound to the
    /// user's current password hash: changing the password, or deleting the user and creating
    /// one of the same name, ends it.
    pub fn open_session(&self, user: &str) -> String {
        let tag = self.credential_tag(user).unwrap_or_default();
        self.sessions.open(user, &tag)
    }

    /// A digest of the user's password hash (`None` for no such user).
    fn credential_tag(&self, user: &str) -> Option<String> {
        let m = self.model();
        let u = m.users.get(user)?;
        Some(secrets::sha256_hex(u.password_hash.as_bytes()))
    }

    /// The user of a live browser session (re-resolved: a disabled user has none; a changed
    /// password or a re-created user ends it). `touch` marks the session used.
    pub fn session_user_touching(&self, token: &str, touch: bool) -> Option<Arc<Principal>> {
        let (user, tag) = self.sessions.user(token, touch)?;
        let current = {
            let m = self.model();
            m.users
                .get(&user)
                .filter(|u| u.enabled)
                .map(|u| secrets::sha256_hex(u.password_hash.as_bytes()))
        };
        if current.as_deref() != Some(tag.as_str()) {
            self.sessions.close(token);
            return None;
        }
        Some(self.principal(&user))
    }

    /// [`Platform::session_user_touching`] for a request of the user's.
    pub fn session_user(&self, token: &str) -> Option<Arc<Principal>> {
        self.session_user_touching(token, true)
    }

    pub fn close_session(&self, token: &str) {
        self.sessions.close(token);
    }

    /// Runs password hashing work on the bounded argon2 pool (503 when it is saturated).
    pub async fn hash_work<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> ApiResult<R> {
        self.hasher
            .run(f)
            .await
            .map_err(|e| ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
    }

    /// An argon2id hash of `password`, computed on the pool.
    pub async fn hash_password(&self, password: &str) -> ApiResult<String> {
        let pw = password.to_string();
        self.hash_work(move || secrets::hash_password(&pw))
            .await?
            .map_err(|e| {
                ApiError::internal(
                    "password hashing failed",
                    &std::io::Error::other(e.to_string()),
                )
            })
    }

    /// Runs `f` on a Thing, or answers 404.
    pub fn with_thing<R>(
        &self,
        name: &str,
        f: impl FnOnce(&Model, &Thing) -> ApiResult<R>,
    ) -> ApiResult<R> {
        let m = self.model();
        let t = m
            .things
            .get(name)
            .ok_or_else(|| ApiError::entity_not_found(name))?;
        f(&m, t)
    }
}

/// A valid argon2id hash of a random password, to spend equal time on unknown users.
fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| secrets::hash_password(&secrets::random_password()).unwrap_or_default())
}
