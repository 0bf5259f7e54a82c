//! The installed extension packages: import (all or nothing), list, delete, load at start in
//! dependency order, and the index of the services extensions implement.

use super::definitions::{defined_entities, entity_writes, index_services, ExtService, Target};
use super::host::{HostServices, Instance, Library};
use super::package::{
    self, Action, ImportPlan, Metadata, PackageStore, ReportRow, ReportStatus, Sha256,
    VerifyOptions, ZipLimits,
};
use crate::audit::Category;
use crate::error::{ApiError, ApiResult};
use crate::model::entities::*;
use crate::model::Model;
use crate::platform::{Ctx, Platform};
use crate::services::ServiceDef;
use crate::store::Write;
use axum::http::StatusCode;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use thingport_sdk::protocol::{ErrorBody, ErrorKind, Request};

/// A loaded package.
pub struct Runtime {
    library: Arc<Library>,
    instance: Arc<Instance>,
    services: Vec<ExtService>,
}

/// An installed package and whether it runs.
pub struct Installed {
    pub metadata: Metadata,
    pub sha256: String,
    runtime: Result<Runtime, String>,
}

impl Installed {
    /// `loaded`, `failed: ...` or `disabled: ...` (after a panic).
    pub fn status(&self) -> String {
        match &self.runtime {
            Ok(rt) => match rt.instance.poisoned() {
                Some(reason) => format!("disabled: {reason}"),
                None => "loaded".into(),
            },
            Err(reason) => format!("failed: {reason}"),
        }
    }
}

/// The extension system's state.
pub struct Extensions {
    store: PackageStore,
    lib_dir: PathBuf,
    verify: VerifyOptions,
    limits: ZipLimits,
    deadline: Duration,
    services: Arc<dyn HostServices>,
    installed: RwLock<BTreeMap<String, Installed>>,
    /// Serialises imports and deletes.
    gate: tokio::sync::Mutex<()>,
    /// Live timers: (library load, timer name) → (package, task id, task).
    timers: std::sync::Mutex<TimerMap>,
    /// Loads whose instance exists but is not published yet (an import or start in progress):
    /// their timers wait; a load that leaves this set unpublished has its timers cancelled.
    pending: std::sync::Mutex<std::collections::HashSet<u64>>,
}

/// Live timers: (library load, timer name) → (package, task id, task).
type TimerMap = std::collections::HashMap<(u64, String), (String, u64, tokio::task::AbortHandle)>;

/// Identifies timer tasks, so a finishing one-shot removes only its own entry.
static NEXT_TIMER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Where a timer's firing goes.
enum TimerTarget {
    Ready(Arc<Instance>),
    /// Not published yet: hold the firing.
    Wait,
    /// Refused, replaced, deleted or disabled: the timer ends.
    Gone,
}

/// Most timers one extension may have at once.
const MAX_TIMERS: usize = 1_000;
/// Shortest timer period.
const MIN_PERIOD_MS: u64 = 10;
/// Longest timer delay or period (30 days).
const MAX_DELAY_MS: u64 = 30 * 24 * 3600 * 1000;

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extensions").finish_non_exhaustive()
    }
}

impl Extensions {
    pub fn new(
        data_dir: &std::path::Path,
        verify: VerifyOptions,
        deadline: Duration,
        services: Arc<dyn HostServices>,
    ) -> Self {
        Extensions {
            store: PackageStore::new(data_dir),
            lib_dir: data_dir.join("extensions").join("lib"),
            verify,
            limits: ZipLimits::default(),
            deadline,
            services,
            installed: RwLock::new(BTreeMap::new()),
            gate: tokio::sync::Mutex::new(()),
            timers: Default::default(),
            pending: Default::default(),
        }
    }

    /// Writes a verified library where `dlopen` can read it, then opens it and creates an instance.
    async fn start(
        &self,
        name: &str,
        lib_sha: &str,
        bytes: &[u8],
        p: &Platform,
    ) -> Result<Runtime, String> {
        // Writing the library and opening it (which runs its initialisers and entry point) happen
        // on a blocking thread under the call deadline, never on an async worker.
        let (dir, bytes, sha) = (self.lib_dir.clone(), bytes.to_vec(), lib_sha.to_string());
        let (name_owned, services) = (name.to_string(), self.services.clone());
        let opened = tokio::task::spawn_blocking(move || -> Result<Arc<Library>, String> {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create the library directory: {e}"))?;
            let path = dir.join(format!("{sha}.so"));
            // An existing file is reused only if it still holds the verified bytes.
            let intact = std::fs::read(&path).map(|b| b == bytes).unwrap_or(false);
            if !intact {
                let tmp = dir.join(format!(".{sha}.{}.tmp", std::process::id()));
                let written = std::fs::File::create(&tmp)
                    .and_then(|mut f| {
                        std::io::Write::write_all(&mut f, &bytes).and_then(|_| f.sync_all())
                    })
                    .and_then(|_| std::fs::rename(&tmp, &path));
                if let Err(e) = written {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(format!("cannot write the library: {e}"));
                }
            }
            Library::open(&path, &name_owned, services).map_err(|e| e.to_string())
        });
        let library = match tokio::time::timeout(self.deadline, opened).await {
            Ok(Ok(r)) => r?,
            Ok(Err(e)) => return Err(format!("loading the library failed: {e}")),
            Err(_) => {
                return Err(format!(
                    "loading the library did not finish within {:?}",
                    self.deadline
                ))
            }
        };
        let load = library.load_id();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(load);
        let config = config_for(&p.model(), &library.manifest().definitions);
        let lib = library.clone();
        let created = tokio::task::spawn_blocking(move || lib.create(&config));
        let created = match tokio::time::timeout(self.deadline, created).await {
            Ok(Ok(Ok(i))) => Ok(Arc::new(i)),
            Ok(Ok(Err(e))) => Err(format!("its entry point failed: {e}")),
            Ok(Err(e)) => Err(format!("its entry point failed: {e}")),
            Err(_) => Err(format!(
                "its entry point did not return within {:?}",
                self.deadline
            )),
        };
        let instance = match created {
            Ok(i) => i,
            Err(why) => {
                self.abandon(load);
                return Err(why);
            }
        };
        let services = index_services(&library.manifest().definitions);
        Ok(Runtime {
            library,
            instance,
            services,
        })
    }

    /// The installed packages, for `GetExtensionPackageList`.
    pub fn list(&self) -> Vec<(Metadata, String, String)> {
        let installed = self.installed.read().unwrap_or_else(|p| p.into_inner());
        installed
            .values()
            .map(|i| (i.metadata.clone(), i.sha256.clone(), i.status()))
            .collect()
    }

    /// Finds an extension service on an entity: on a Thing, those of its own, its template chain
    /// and the shapes of both.
    pub fn find_service(
        &self,
        m: &Model,
        kind: EntityKind,
        entity: &str,
        service: &str,
    ) -> Option<(&'static ServiceDef, Arc<Instance>)> {
        let installed = self.installed.read().unwrap_or_else(|p| p.into_inner());
        let applies = |s: &ExtService| -> bool {
            match (kind, s.target) {
                (EntityKind::Subsystem, Target::Subsystem)
                | (EntityKind::ThingTemplate, Target::Template) => s.target_name == entity,
                (EntityKind::Thing, Target::Thing) => s.target_name == entity,
                (EntityKind::Thing, Target::Template) => m
                    .things
                    .get(entity)
                    .is_some_and(|t| m.template_derives_from(&t.template, &s.target_name)),
                (EntityKind::Thing, Target::Shape) => m.things.get(entity).is_some_and(|t| {
                    t.shapes.contains(&s.target_name)
                        || m.template_chain(&t.template).iter().any(|tpl| {
                            m.templates
                                .get(*tpl)
                                .is_some_and(|tt| tt.shapes.contains(&s.target_name))
                        })
                }),
                _ => false,
            }
        };
        installed
            .values()
            .filter_map(|i| i.runtime.as_ref().ok())
            .find_map(|rt| {
                rt.services
                    .iter()
                    .find(|s| s.def.name == service && applies(s))
                    .map(|s| (s.def, rt.instance.clone()))
            })
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The running instance of an extension package.
    pub fn instance_of(&self, package: &str) -> Option<Arc<Instance>> {
        let installed = self.installed.read().unwrap_or_else(|p| p.into_inner());
        installed
            .get(package)
            .and_then(|i| i.runtime.as_ref().ok())
            .map(|rt| rt.instance.clone())
    }

    /// Schedules (or replaces) a timer of one library load: `Request::Timer` after `delay_ms`,
    /// then every `period_ms`. Timers belong to that load's instance: they wait while it is not
    /// published yet, and end when it is refused, replaced by an upgrade, deleted or disabled.
    pub fn schedule_timer(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        package: &str,
        load: u64,
        name: &str,
        delay_ms: u64,
        period_ms: Option<u64>,
    ) -> Result<(), ErrorBody> {
        let bad = |m: String| ErrorBody {
            error: m,
            kind: ErrorKind::BadRequest,
        };
        if name.is_empty() || name.len() > 128 {
            return Err(bad("a timer name must be 1 to 128 bytes".into()));
        }
        if delay_ms > MAX_DELAY_MS
            || period_ms.is_some_and(|p| !(MIN_PERIOD_MS..=MAX_DELAY_MS).contains(&p))
        {
            return Err(bad(format!("timer '{name}': delay must be at most {MAX_DELAY_MS} ms and a period {MIN_PERIOD_MS}..{MAX_DELAY_MS} ms")));
        }
        if matches!(self.timer_target(load), TimerTarget::Gone) {
            return Err(ErrorBody {
                error: format!("extension {package} is no longer running"),
                kind: ErrorKind::Unavailable,
            });
        }
        let key = (load, name.to_string());
        let mut timers = self.timers.lock().unwrap_or_else(|p| p.into_inner());
        if !timers.contains_key(&key)
            && timers.keys().filter(|(l, _)| *l == load).count() >= MAX_TIMERS
        {
            return Err(ErrorBody {
                error: format!("extension {package} has {MAX_TIMERS} timers already"),
                kind: ErrorKind::Unavailable,
            });
        }
        let me = Arc::downgrade(self);
        let id = NEXT_TIMER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (pkg, timer) = (package.to_string(), name.to_string());
        let task = runtime.spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            loop {
                let Some(ext) = me.upgrade() else { return };
                match ext.timer_target(load) {
                    TimerTarget::Gone => break,
                    TimerTarget::Wait => {
                        drop(ext);
                        tokio::time::sleep(Duration::from_millis(MIN_PERIOD_MS)).await;
                        continue;
                    }
                    TimerTarget::Ready(instance) => {
                        let request = Request::Timer { name: timer.clone() };
                        if let Err(e) = instance.call(request, ext.deadline).await {
                            tracing::warn!(extension = %pkg, timer = %timer, error = %e, "extension timer callback failed");
                        }
                    }
                }
                drop(ext);
                match period_ms {
                    Some(p) => tokio::time::sleep(Duration::from_millis(p)).await,
                    None => break,
                }
            }
            if let Some(ext) = me.upgrade() {
                let mut timers = ext.timers.lock().unwrap_or_else(|p| p.into_inner());
                if timers.get(&(load, timer.clone())).is_some_and(|(_, t, _)| *t == id) {
                    timers.remove(&(load, timer));
                }
            }
        });
        if let Some((_, _, old)) =
            timers.insert(key, (package.to_string(), id, task.abort_handle()))
        {
            old.abort();
        }
        Ok(())
    }

    fn timer_target(&self, load: u64) -> TimerTarget {
        let installed = self.installed.read().unwrap_or_else(|p| p.into_inner());
        let published = installed
            .values()
            .filter_map(|i| i.runtime.as_ref().ok())
            .find(|rt| rt.instance.load_id() == load)
            .map(|rt| rt.instance.clone());
        drop(installed);
        match published {
            Some(i) if i.poisoned().is_none() => TimerTarget::Ready(i),
            Some(_) => TimerTarget::Gone,
            None if self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&load) =>
            {
                TimerTarget::Wait
            }
            None => TimerTarget::Gone,
        }
    }

    /// Cancels a timer of one library load, if it exists.
    pub fn cancel_timer(&self, load: u64, name: &str) {
        if let Some((_, _, t)) = self
            .timers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(load, name.to_string()))
        {
            t.abort();
        }
    }

    /// Ends every timer of a library load.
    fn cancel_timers_of(&self, load: u64) {
        self.timers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(l, _), (_, _, t)| {
                if *l == load {
                    t.abort();
                }
                *l != load
            });
    }

    /// A load that will not be published (refused, failed): forget it and end its timers.
    fn abandon(&self, load: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&load);
        self.cancel_timers_of(load);
    }

    /// A load that is now published: its timers may fire.
    fn published(&self, load: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&load);
    }
}

/// The configuration an extension's instance receives: `{"<table>": {"<field>": value}}` over
/// the configuration tables of its subsystems, with the values set so far (defaults otherwise).
pub fn config_for(m: &Model, defs: &thingport_sdk::protocol::Definitions) -> Value {
    let mut out = serde_json::Map::new();
    for d in &defs.subsystems {
        let current = Subsystem {
            configuration: d.configuration.clone(),
            values: m
                .subsystems
                .get(&d.name)
                .map(|x| x.values.clone())
                .unwrap_or_default(),
            ..Subsystem::default()
        };
        if let Value::Object(tables) = current.config() {
            out.extend(tables);
        }
    }
    Value::Object(out)
}

/// A verified library's bytes and their sha256 (hex).
type VerifiedBytes = (Vec<u8>, String);

/// An import's outcome: the report and whether it was refused (406).
#[derive(Debug)]
pub struct ImportOutcome {
    pub rows: Vec<ReportRow>,
    pub refused: bool,
}

fn single_failure(name: &str, message: String) -> ImportOutcome {
    ImportOutcome {
        rows: vec![ReportRow {
            name: name.to_string(),
            version: String::new(),
            extension_report_status: ReportStatus::Failure,
            report_message: message,
        }],
        refused: true,
    }
}

impl Extensions {
    /// Imports an upload (one package or a zip of packages): all or nothing.
    pub async fn import(
        &self,
        p: &Platform,
        ctx: &Ctx,
        upload: Vec<u8>,
    ) -> ApiResult<ImportOutcome> {
        let _gate = self.gate.lock().await;
        let before = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let outcome = self.import_locked(p, ctx, upload).await;
        if let Ok(o) = &outcome {
            if o.refused {
                let (name, why) = o
                    .rows
                    .iter()
                    .find(|r| r.is_failure())
                    .map(|r| (r.name.clone(), r.report_message.clone()))
                    .unwrap_or_default();
                tracing::warn!(extension = %name, principal = %ctx.who.name, reason = %why, "extension import refused");
                p.audit(ctx.audit(
                    Category::Extensions,
                    EntityKind::Resource,
                    &name,
                    format!("extension import refused: {why}"),
                ))
                .await;
            }
        }
        // Whatever this import started and did not publish is abandoned, with its timers.
        let leftover: Vec<u64> = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .difference(&before)
            .copied()
            .collect();
        for load in leftover {
            self.abandon(load);
        }
        outcome
    }

    async fn import_locked(
        &self,
        p: &Platform,
        ctx: &Ctx,
        upload: Vec<u8>,
    ) -> ApiResult<ImportOutcome> {
        let packages = match package::read_upload(upload, &self.limits) {
            Ok(p) => p,
            Err(e) => return Ok(single_failure(e.entry().unwrap_or("upload"), e.to_string())),
        };
        let installed_versions: BTreeMap<String, semver::Version> = {
            let i = self.installed.read().unwrap_or_else(|p| p.into_inner());
            i.iter()
                .map(|(n, x)| (n.clone(), x.metadata.version.clone()))
                .collect()
        };
        let metas: Vec<&Metadata> = packages.iter().map(|p| &p.metadata).collect();
        let mut plan: ImportPlan = package::plan_import(&metas, &installed_versions);
        if plan.is_refused() {
            return Ok(ImportOutcome {
                rows: plan.rows,
                refused: true,
            });
        }
        let mut started: Vec<(usize, Runtime, String)> = Vec::new();
        let steps = plan.steps.clone();
        for step in &steps {
            if step.action == Action::Unchanged {
                continue;
            }
            let pkg = &packages[step.index];
            let verified = match pkg.verify(&self.verify) {
                Ok(v) => v,
                Err(e) => {
                    plan.refuse(step.index, e.to_string());
                    return Ok(ImportOutcome {
                        rows: plan.rows,
                        refused: true,
                    });
                }
            };
            let lib_sha = verified.library.sha256.to_string();
            match self
                .start(&pkg.metadata.name, &lib_sha, verified.bytes, p)
                .await
            {
                Ok(rt) => started.push((step.index, rt, pkg.sha256.to_string())),
                Err(msg) => {
                    plan.refuse(
                        step.index,
                        format!("Extension {} could not be loaded: {msg}", pkg.metadata.name),
                    );
                    return Ok(ImportOutcome {
                        rows: plan.rows,
                        refused: true,
                    });
                }
            }
        }
        // Names must be free: across the model (owned by others) and across this import.
        let mut seen: BTreeMap<(EntityKind, String), String> = BTreeMap::new();
        for (index, rt, _) in &started {
            let name = &packages[*index].metadata.name;
            for key in defined_entities(&rt.library.manifest().definitions) {
                if let Some(other) = seen.insert(key.clone(), name.clone()) {
                    plan.refuse(
                        *index,
                        format!(
                            "{} '{}' is defined by both {other} and {name}",
                            key.0, key.1
                        ),
                    );
                    return Ok(ImportOutcome {
                        rows: plan.rows,
                        refused: true,
                    });
                }
            }
        }
        for (index, _, _) in &started {
            self.store
                .put(&packages[*index].bytes)
                .map_err(|e| ApiError::internal("failed to store an extension package", &e))?;
        }
        let refusal = std::sync::Mutex::new(None);
        let committed = p
            .commit(|m| {
                let mut w = Vec::new();
                for (index, rt, sha) in &started {
                    let md = &packages[*index].metadata;
                    match entity_writes(m, &md.name, &rt.library.manifest().definitions) {
                        Ok(ws) => w.extend(ws),
                        Err(msg) => {
                            *refusal.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some((*index, msg));
                            return Err(ApiError::conflict("refused"));
                        }
                    }
                    w.push(Write::PutPackage {
                        name: md.name.clone(),
                        version: md.version.to_string(),
                        sha256: sha.clone(),
                        installed_by: ctx.who.name.clone(),
                    });
                    w.push(ctx.audit(
                        Category::Extensions,
                        EntityKind::Resource,
                        &md.name,
                        format!("extension package {} {} imported", md.name, md.version),
                    ));
                }
                Ok((w, ()))
            })
            .await;
        if let Some((index, msg)) = refusal.into_inner().unwrap_or_else(|p| p.into_inner()) {
            plan.refuse(index, msg);
            return Ok(ImportOutcome {
                rows: plan.rows,
                refused: true,
            });
        }
        committed?;
        let mut replaced_instances = Vec::new();
        let mut installed = self.installed.write().unwrap_or_else(|p| p.into_inner());
        for (index, rt, sha) in started {
            let md = packages[index].metadata.clone();
            tracing::info!(extension = %md.name, version = %md.version, principal = %ctx.who.name, "extension package imported");
            let load = rt.instance.load_id();
            let replaced = installed.insert(
                md.name.clone(),
                Installed {
                    metadata: md,
                    sha256: sha,
                    runtime: Ok(rt),
                },
            );
            self.published(load);
            // An upgrade: the old version's timers end with it.
            if let Some(Installed {
                runtime: Ok(old), ..
            }) = &replaced
            {
                self.cancel_timers_of(old.instance.load_id());
            }
            replaced_instances.push(replaced);
        }
        drop(installed);
        drop(replaced_instances);
        Ok(ImportOutcome {
            rows: plan.rows,
            refused: false,
        })
    }

    /// Loads every recorded package in dependency order; one that fails (and its dependents) is
    /// reported and audited, not fatal.
    pub async fn load_all(&self, p: &Platform) -> Result<(), crate::store::StoreError> {
        let records = p.store().packages().await?;
        let mut loaded: Vec<(Metadata, String, Result<VerifiedBytes, String>)> = Vec::new();
        for (name, version, sha256) in records {
            let read = sha256
                .parse::<Sha256>()
                .map_err(|e| e.to_string())
                .and_then(|sha| self.store.get(&sha).map_err(|e| e.to_string()))
                .and_then(|bytes| {
                    package::Package::read(bytes, &self.limits).map_err(|e| e.to_string())
                });
            match read {
                Ok(pkg) => {
                    let lib = pkg
                        .verify(&self.verify)
                        .map(|v| (v.bytes.to_vec(), v.library.sha256.to_string()))
                        .map_err(|e| e.to_string());
                    loaded.push((pkg.metadata.clone(), sha256, lib));
                }
                Err(e) => {
                    // Still listed (as failed) so the operator sees it; its dependents fail too.
                    let why = format!("its stored package is unreadable: {e}");
                    let version = semver::Version::parse(&version)
                        .unwrap_or_else(|_| semver::Version::new(0, 0, 0));
                    let md = Metadata {
                        name: name.clone(),
                        version,
                        vendor: String::new(),
                        description: String::new(),
                        minimum_thingworx_version: None,
                        depends_on: vec![],
                        native_libraries: vec![],
                    };
                    loaded.push((md, sha256, Err(why)));
                }
            }
        }
        let metas: Vec<&Metadata> = loaded.iter().map(|(m, _, _)| m).collect();
        let (order, problems) = package::load_order(&metas);
        let mut failed: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut outcomes: Vec<(usize, Result<Runtime, String>)> =
            problems.into_iter().map(|(i, why)| (i, Err(why))).collect();
        for (i, runtime) in outcomes.drain(..) {
            self.publish_at_start(p, &loaded[i].0, &loaded[i].1, runtime, &mut failed)
                .await;
        }
        for i in order {
            let (md, sha, lib) = &loaded[i];
            let dep_failed = md.depends_on.iter().find(|d| failed.contains(&d.name));
            let runtime = match (lib, dep_failed) {
                (_, Some(d)) => Err(format!("its dependency {} did not load", d.name)),
                (Err(e), _) => Err(e.clone()),
                (Ok((bytes, lib_sha)), None) => self.start(&md.name, lib_sha, bytes, p).await,
            };
            // Published at once, so the packages that depend on it can reach it from `create`.
            self.publish_at_start(p, md, sha, runtime, &mut failed)
                .await;
        }
        Ok(())
    }

    /// Records one package's outcome at start; a failure is logged and audited.
    async fn publish_at_start(
        &self,
        p: &Platform,
        md: &Metadata,
        sha: &str,
        runtime: Result<Runtime, String>,
        failed: &mut std::collections::HashSet<String>,
    ) {
        match &runtime {
            Ok(_) => {
                tracing::info!(extension = %md.name, version = %md.version, "extension loaded")
            }
            Err(why) => {
                failed.insert(md.name.clone());
                tracing::error!(extension = %md.name, reason = %why, "extension failed to load");
                p.audit(Ctx::system().audit(
                    Category::Extensions,
                    EntityKind::Resource,
                    &md.name,
                    format!("extension failed to load: {why}"),
                ))
                .await;
            }
        }
        if let Ok(rt) = &runtime {
            self.published(rt.instance.load_id());
        }
        let installed = Installed {
            metadata: md.clone(),
            sha256: sha.to_string(),
            runtime,
        };
        let replaced = self
            .installed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(md.name.clone(), installed);
        drop(replaced);
    }

    /// Deletes a package: refused (409) while another package depends on it or Things use its
    /// templates or shapes.
    pub async fn delete(&self, p: &Platform, ctx: &Ctx, name: &str) -> ApiResult<()> {
        let _gate = self.gate.lock().await;
        let (metas, sha) = {
            let i = self.installed.read().unwrap_or_else(|p| p.into_inner());
            let Some(me) = i.get(name) else {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!(
                        "extension package '{}' is not installed",
                        crate::model::names::printable(name)
                    ),
                ));
            };
            let metas: Vec<Metadata> = i.values().map(|x| x.metadata.clone()).collect();
            (metas, me.sha256.clone())
        };
        let refs: Vec<&Metadata> = metas.iter().collect();
        let dependents: Vec<String> = package::dependents(name, &refs)
            .into_iter()
            .map(|i| refs[i].name.clone())
            .collect();
        if !dependents.is_empty() {
            return Err(ApiError::conflict(format!(
                "extension package {name} is required by {}",
                dependents.join(", ")
            )));
        }
        p.commit(|m| {
            let owned = |o: &Option<String>| o.as_deref() == Some(name);
            // Anything outside the package that uses one of its templates, shapes or data shapes:
            // the same rule as deleting those entities one by one.
            let mine: Vec<(EntityKind, String)> = [
                EntityKind::Thing,
                EntityKind::ThingTemplate,
                EntityKind::ThingShape,
                EntityKind::DataShape,
                EntityKind::Subsystem,
            ]
            .into_iter()
            .flat_map(|k| m.names(k).into_iter().map(move |n| (k, n.to_string())))
            .filter(|(k, n)| super::definitions::owner_of(m, *k, n).is_some_and(|o| owned(&o)))
            .collect();
            let mine_labels: std::collections::HashSet<String> =
                mine.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let mut users: Vec<String> = mine
                .iter()
                .flat_map(|(k, n)| crate::services::entities_in_use(m, *k, n))
                .filter(|u| !mine_labels.contains(u))
                .collect();
            // Things of templates derived from the package's templates count too.
            users.extend(
                m.things
                    .iter()
                    .filter(|(_, t)| !owned(&t.owner))
                    .filter(|(_, t)| {
                        m.template_chain(&t.template)
                            .iter()
                            .any(|tpl| m.templates.get(*tpl).is_some_and(|tt| owned(&tt.owner)))
                    })
                    .map(|(n, _)| format!("Thing {n}")),
            );
            users.sort();
            users.dedup();
            if !users.is_empty() {
                return Err(ApiError::conflict(format!(
                    "extension package {name} is in use by {}",
                    users.join(", ")
                )));
            }
            let mut w = Vec::new();
            for (kind, names) in [
                (
                    EntityKind::Thing,
                    m.things
                        .iter()
                        .filter(|(_, e)| owned(&e.owner))
                        .map(|(n, _)| n.clone())
                        .collect::<Vec<_>>(),
                ),
                (
                    EntityKind::ThingTemplate,
                    m.templates
                        .iter()
                        .filter(|(_, e)| owned(&e.owner))
                        .map(|(n, _)| n.clone())
                        .collect(),
                ),
                (
                    EntityKind::ThingShape,
                    m.shapes
                        .iter()
                        .filter(|(_, e)| owned(&e.owner))
                        .map(|(n, _)| n.clone())
                        .collect(),
                ),
                (
                    EntityKind::DataShape,
                    m.data_shapes
                        .iter()
                        .filter(|(_, e)| owned(&e.owner))
                        .map(|(n, _)| n.clone())
                        .collect(),
                ),
                (
                    EntityKind::Subsystem,
                    m.subsystems
                        .iter()
                        .filter(|(_, e)| owned(&e.owner))
                        .map(|(n, _)| n.clone())
                        .collect(),
                ),
            ] {
                for n in names {
                    if kind == EntityKind::Thing {
                        w.push(Write::DeleteValues { thing: n.clone() });
                    }
                    w.push(Write::DeleteEntity { kind, name: n });
                }
            }
            w.push(Write::DeletePackage {
                name: name.to_string(),
            });
            w.push(ctx.audit(
                Category::Extensions,
                EntityKind::Resource,
                name,
                format!("extension package {name} deleted"),
            ));
            Ok((w, ()))
        })
        .await?;
        // Taken out under the lock, dropped after it (the instance's `destroy` runs on a blocking thread).
        let removed = self
            .installed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some(Installed {
            runtime: Ok(rt), ..
        }) = &removed
        {
            self.cancel_timers_of(rt.instance.load_id());
        }
        drop(removed);
        if let Ok(sha) = sha.parse::<Sha256>() {
            let _ = self.store.delete(&sha);
        }
        tracing::info!(extension = name, principal = %ctx.who.name, "extension package deleted; its library stays mapped until restart");
        Ok(())
    }
}
