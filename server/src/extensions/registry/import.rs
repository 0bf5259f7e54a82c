//! Importing extension packages: all or nothing.

use super::*;

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

    pub(super) async fn import_locked(
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
        // A package whose version is installed already (no step) is verified too: a corrupt or
        // tampered copy is refused for what it is, not waved through as "nothing changed".
        let stepped: std::collections::BTreeSet<usize> = steps.iter().map(|s| s.index).collect();
        for (index, pkg) in packages.iter().enumerate() {
            if stepped.contains(&index) {
                continue;
            }
            if let Err(e) = pkg.verify(&self.verify) {
                plan.refuse(index, e.to_string());
                return Ok(ImportOutcome {
                    rows: plan.rows,
                    refused: true,
                });
            }
        }
        for step in &steps {
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
            // An upgrade: the old version's timers and connections end with it.
            if let Some(Installed {
                runtime: Ok(old), ..
            }) = &replaced
            {
                self.retire(old.instance.load_id(), "the extension was upgraded");
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
}
