//! The installed extension packages: import (all or nothing), list, delete, load at start in
//! dependency order, and the index of the services extensions implement.

mod import;
mod lifecycle;
mod timers;

pub use import::ImportOutcome;
use timers::TimerMap;

use super::connections::{Connections, Target as RouteTarget};
use super::definitions::{defined_entities, entity_writes, index_services, ExtService, Target};
use super::host::{HostServices, Instance, Library};
use super::package::{
    self, ImportPlan, Metadata, PackageStore, ReportRow, ReportStatus, Sha256, VerifyOptions,
    ZipLimits,
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
    /// The WebSocket connections served for extensions' routes.
    connections: Arc<Connections>,
}

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
            connections: Default::default(),
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

/// Why no extension can take a WebSocket upgrade.
#[derive(Debug)]
pub enum RouteRefusal {
    /// No loaded extension serves the path.
    NoRoute,
    /// Extensions serve the path, but with none of the offered subprotocols (these are).
    Subprotocols(Vec<String>),
}

impl Extensions {
    /// The connection registry.
    pub fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }

    /// Stops the extension system at server shutdown: closes every connection (waiting for the
    /// extensions to hear of it), stops every timer, then sends each instance `shutdown` so it can
    /// write what it holds while the store is still open.
    pub async fn shutdown(&self) {
        self.connections.shutdown(Duration::from_secs(5)).await;
        {
            let mut timers = self.timers.lock().unwrap_or_else(|p| p.into_inner());
            for (_, (_, _, t)) in timers.iter() {
                t.abort();
            }
            timers.clear();
        }
        let instances: Vec<(String, Arc<Instance>)> = {
            let installed = self.installed.read().unwrap_or_else(|p| p.into_inner());
            installed
                .iter()
                .filter_map(|(n, i)| {
                    i.runtime
                        .as_ref()
                        .ok()
                        .map(|rt| (n.clone(), rt.instance.clone()))
                })
                .collect()
        };
        for (name, instance) in instances {
            if let Err(e) = instance.call(Request::Shutdown, self.deadline).await {
                tracing::warn!(extension = %name, error = %e, "extension shutdown failed");
            }
        }
    }

    /// A library load ended (upgrade, delete): its timers stop and its connections close.
    fn retire(&self, load: u64, why: &str) {
        self.cancel_timers_of(load);
        self.connections.close_load(load, why);
    }

    /// The loaded extension serving `path` with the first of `offered` subprotocols it accepts.
    pub fn route(&self, path: &str, offered: &[&str]) -> Result<RouteTarget, RouteRefusal> {
        let installed = self.installed.read().unwrap_or_else(|p| p.into_inner());
        let mut supported = Vec::new();
        for (name, i) in installed.iter() {
            let Ok(rt) = &i.runtime else { continue };
            if rt.instance.poisoned().is_some() {
                continue;
            }
            for r in &rt.library.manifest().definitions.routes {
                if r.path != path {
                    continue;
                }
                if let Some(sp) = offered
                    .iter()
                    .find(|o| r.subprotocols.iter().any(|s| s == *o))
                {
                    return Ok(RouteTarget {
                        package: name.clone(),
                        load: rt.instance.load_id(),
                        instance: rt.instance.clone(),
                        route: r.clone(),
                        subprotocol: sp.to_string(),
                        deadline: self.deadline,
                    });
                }
                supported.extend(r.subprotocols.iter().cloned());
            }
        }
        if supported.is_empty() {
            Err(RouteRefusal::NoRoute)
        } else {
            Err(RouteRefusal::Subprotocols(supported))
        }
    }
}
