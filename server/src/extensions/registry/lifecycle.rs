//! Loading the installed packages at start, and deleting packages.

use super::*;

impl Extensions {
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
    pub(super) async fn publish_at_start(
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
            .filter(|(k, n)| {
                crate::extensions::definitions::owner_of(m, *k, n).is_some_and(|o| owned(&o))
            })
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
            self.retire(rt.instance.load_id(), "the extension was deleted");
        }
        drop(removed);
        if let Ok(sha) = sha.parse::<Sha256>() {
            let _ = self.store.delete(&sha);
        }
        tracing::info!(extension = name, principal = %ctx.who.name, "extension package deleted; its library stays mapped until restart");
        Ok(())
    }
}
