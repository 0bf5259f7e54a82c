//! Version rules, `dependsOn` and the order of an import (SPEC §4), and the report rows.
//!
//! Per package, the first rule that applies decides:
//! 1. the same name twice in one upload: failure;
//! 2. a newer version installed: failure;
//! 3. the same version installed: warning, nothing changes;
//! 4. a higher major version than the installed one: failure (a major upgrade may break what
//!    depends on the installed version; delete the old one first, which the delete rules only
//!    allow once nothing depends on it);
//! 5. a `dependsOn Name:X.Y.Z` that no installed or co-imported package satisfies (same major,
//!    version >= X.Y.Z): failure, `Extension {name} depends on [{dep}:{ver}] which is not
//!    installed`;
//! 6. part of (or depending on) a `dependsOn` cycle among the co-imported packages: failure.
//!
//! Otherwise a new package is installed and a same-major newer version replaces the installed
//! one. The import is all-or-nothing: one failure refuses it, and every row that would have been
//! ok says it was not imported. The steps of an accepted plan list the packages to install,
//! dependencies first, ties in upload order.

use super::metadata::Metadata;
use semver::Version;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

/// `extensionReportStatus` of a report row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ReportStatus {
    Ok = 0,
    Failure = 1,
    Warning = 2,
}

impl Serialize for ReportStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*self as u8)
    }
}

impl<'de> Deserialize<'de> for ReportStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u8::deserialize(d)? {
            0 => Ok(Self::Ok),
            1 => Ok(Self::Failure),
            2 => Ok(Self::Warning),
            n => Err(serde::de::Error::custom(format!(
                "unknown extensionReportStatus {n}"
            ))),
        }
    }
}

/// One row of the import report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportRow {
    pub name: String,
    pub version: String,
    pub extension_report_status: ReportStatus,
    pub report_message: String,
}

impl ReportRow {
    /// A row with `status` and `message`.
    pub fn new(name: &str, version: &str, status: ReportStatus, message: String) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            extension_report_status: status,
            report_message: message,
        }
    }

    /// Whether the row is a failure.
    pub fn is_failure(&self) -> bool {
        self.extension_report_status == ReportStatus::Failure
    }
}

/// What an accepted import does to one package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Not installed before.
    Install,
    /// Replaces the installed, older version of the same major.
    Upgrade { from: Version },
    /// The same version is installed; nothing changes.
    Unchanged,
}

/// One package to install, by index into the packages given to [`plan_import`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub index: usize,
    pub action: Action,
}

/// The outcome of [`plan_import`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportPlan {
    /// One row per package, in the order given.
    pub rows: Vec<ReportRow>,
    /// The packages to install, dependencies first; empty when the import is refused.
    pub steps: Vec<Step>,
}

impl ImportPlan {
    /// Whether the import is refused (some row is a failure): install nothing.
    pub fn is_refused(&self) -> bool {
        self.rows.iter().any(ReportRow::is_failure)
    }

    /// Refuses the whole import because package `index` failed later (e.g. its entry point
    /// failed while loading): its row becomes a failure with `message`, the other ok rows say
    /// they were not imported, and the steps are dropped.
    pub fn refuse(&mut self, index: usize, message: String) {
        if let Some(row) = self.rows.get_mut(index) {
            row.extension_report_status = ReportStatus::Failure;
            row.report_message = message;
        }
        self.steps.clear();
        for row in &mut self.rows {
            if row.extension_report_status == ReportStatus::Ok {
                row.extension_report_status = ReportStatus::Failure;
                row.report_message = format!(
                    "Extension {} {} was not imported because the import was refused",
                    row.name, row.version
                );
            }
        }
    }
}

/// Applies the version and dependency rules to `packages` (in upload order) against the
/// `installed` packages (name to version), and orders the accepted ones.
pub fn plan_import(packages: &[&Metadata], installed: &BTreeMap<String, Version>) -> ImportPlan {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for p in packages {
        *counts.entry(p.name.as_str()).or_default() += 1;
    }
    let mut verdicts: Vec<Result<Action, String>> = packages
        .iter()
        .map(|p| version_verdict(p, installed, counts[p.name.as_str()]))
        .collect();

    for (p, verdict) in packages.iter().zip(verdicts.iter_mut()) {
        if !matches!(verdict, Ok(Action::Install | Action::Upgrade { .. })) {
            continue;
        }
        let unsatisfied = p.depends_on.iter().find(|dep| {
            let ok = |v: &Version| satisfies(v, &dep.version);
            let co_imported = packages
                .iter()
                .any(|q| q.name == dep.name && ok(&q.version));
            !co_imported && !installed.get(&dep.name).is_some_and(ok)
        });
        if let Some(dep) = unsatisfied {
            *verdict = Err(format!(
                "Extension {} depends on [{}:{}] which is not installed",
                p.name, dep.name, dep.version
            ));
        }
    }

    let edges = co_import_edges(packages);
    let (order, blocked) = topological_order(&edges);
    for (index, message) in cycle_messages(packages, &edges, &blocked) {
        if verdicts[index].is_ok() {
            verdicts[index] = Err(message);
        }
    }

    let rows: Vec<ReportRow> = packages
        .iter()
        .zip(&verdicts)
        .map(|(p, verdict)| row_for(p, verdict))
        .collect();
    let mut plan = ImportPlan {
        rows,
        steps: order
            .into_iter()
            .filter_map(|index| match &verdicts[index] {
                Ok(Action::Unchanged) | Err(_) => None,
                Ok(action) => Some(Step {
                    index,
                    action: action.clone(),
                }),
            })
            .collect(),
    };
    if let Some(first) = plan.rows.iter().position(ReportRow::is_failure) {
        let message = plan.rows[first].report_message.clone();
        plan.refuse(first, message);
    }
    plan
}

/// Whether `installed` satisfies a `dependsOn` on `required`: the same major version, at or
/// above `required` (build metadata ignored).
pub fn satisfies(installed: &Version, required: &Version) -> bool {
    installed.major == required.major && installed.cmp_precedence(required) != Ordering::Less
}

fn version_verdict(
    p: &Metadata,
    installed: &BTreeMap<String, Version>,
    count: usize,
) -> Result<Action, String> {
    let (name, version) = (&p.name, &p.version);
    if count > 1 {
        return Err(format!(
            "Extension {name} appears {count} times in the upload"
        ));
    }
    let Some(current) = installed.get(name) else {
        return Ok(Action::Install);
    };
    let precedence = current.cmp_precedence(version);
    if precedence == Ordering::Greater {
        Err(format!(
            "Extension {name} {version} is older than the installed version {current}"
        ))
    } else if precedence == Ordering::Equal {
        Ok(Action::Unchanged)
    } else if version.major != current.major {
        Err(format!(
            "Extension {name} {version} is a major upgrade of the installed version {current}; \
             delete {name} {current} first"
        ))
    } else {
        Ok(Action::Upgrade {
            from: current.clone(),
        })
    }
}

fn row_for(p: &Metadata, verdict: &Result<Action, String>) -> ReportRow {
    let (name, version) = (p.name.as_str(), p.version.to_string());
    let (status, message) = match verdict {
        Ok(Action::Install) => (
            ReportStatus::Ok,
            format!("Extension {name} {version} imported"),
        ),
        Ok(Action::Upgrade { from }) => (
            ReportStatus::Ok,
            format!("Extension {name} upgraded from {from} to {version}"),
        ),
        Ok(Action::Unchanged) => (
            ReportStatus::Warning,
            format!("Extension {name} {version} is already installed; nothing changed"),
        ),
        Err(message) => (ReportStatus::Failure, message.clone()),
    };
    ReportRow::new(name, &version, status, message)
}

/// For each package, the indices of the co-imported packages it depends on (ascending).
fn co_import_edges(packages: &[&Metadata]) -> Vec<Vec<usize>> {
    packages
        .iter()
        .map(|p| {
            let mut deps: Vec<usize> = p
                .depends_on
                .iter()
                .filter_map(|d| packages.iter().position(|q| q.name == d.name))
                .collect();
            deps.sort_unstable();
            deps.dedup();
            deps
        })
        .collect()
}

/// Orders nodes so each comes after the nodes it depends on, ties by index. Returns the order
/// and the nodes that could not be placed (on or behind a cycle).
fn topological_order(edges: &[Vec<usize>]) -> (Vec<usize>, Vec<usize>) {
    let mut placed = vec![false; edges.len()];
    let mut order = Vec::with_capacity(edges.len());
    while let Some(next) =
        (0..edges.len()).find(|&i| !placed[i] && edges[i].iter().all(|&d| placed[d]))
    {
        placed[next] = true;
        order.push(next);
    }
    let blocked = (0..edges.len()).filter(|&i| !placed[i]).collect();
    (order, blocked)
}

/// Messages for the nodes left over by [`topological_order`]: those on a cycle name it; the
/// others name the dependency that leads to one.
fn cycle_messages(
    packages: &[&Metadata],
    edges: &[Vec<usize>],
    blocked: &[usize],
) -> Vec<(usize, String)> {
    let is_blocked = |i: usize| blocked.contains(&i);
    let mut on_cycle: BTreeMap<usize, String> = BTreeMap::new();
    for &start in blocked {
        // Every blocked node depends on another blocked node, so this walk finds a cycle or
        // reaches one already named.
        let mut path = vec![start];
        let mut current = start;
        while !on_cycle.contains_key(&current) {
            let Some(&next) = edges[current].iter().find(|&&d| is_blocked(d)) else {
                break;
            };
            if let Some(at) = path.iter().position(|&n| n == next) {
                let cycle = &path[at..];
                let mut names: Vec<&str> =
                    cycle.iter().map(|&i| packages[i].name.as_str()).collect();
                names.push(packages[next].name.as_str());
                let text = names.join(" -> ");
                for &i in cycle {
                    on_cycle.insert(
                        i,
                        format!(
                            "Extension {} is part of a dependency cycle: {text}",
                            packages[i].name
                        ),
                    );
                }
                break;
            }
            path.push(next);
            current = next;
        }
    }
    blocked
        .iter()
        .map(|&i| {
            let message = on_cycle.get(&i).cloned().unwrap_or_else(|| {
                let dep = edges[i]
                    .iter()
                    .find(|&&d| is_blocked(d))
                    .map_or("", |&d| packages[d].name.as_str());
                format!(
                    "Extension {} depends on {dep}, which is part of a dependency cycle",
                    packages[i].name
                )
            });
            (i, message)
        })
        .collect()
}

/// The order in which to load installed `packages` at start, dependencies first, and the ones
/// that cannot be loaded with the reason (a dependency missing or at an incompatible version, or
/// a cycle). The caller also skips a package when one of its dependencies fails to load.
pub fn load_order(packages: &[&Metadata]) -> (Vec<usize>, Vec<(usize, String)>) {
    let installed: BTreeMap<String, Version> = packages
        .iter()
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect();
    let mut problems: BTreeMap<usize, String> = BTreeMap::new();
    for (i, p) in packages.iter().enumerate() {
        for dep in &p.depends_on {
            let ok = installed
                .get(&dep.name)
                .is_some_and(|v| satisfies(v, &dep.version));
            if !ok {
                problems.entry(i).or_insert_with(|| {
                    format!(
                        "Extension {} depends on [{}:{}] which is not installed",
                        p.name, dep.name, dep.version
                    )
                });
            }
        }
    }
    let edges = co_import_edges(packages);
    let (order, blocked) = topological_order(&edges);
    for (i, message) in cycle_messages(packages, &edges, &blocked) {
        problems.entry(i).or_insert(message);
    }
    // Dependencies come first in `order`, so one pass carries a problem to every dependent.
    let mut loadable = Vec::with_capacity(order.len());
    for i in order {
        if problems.contains_key(&i) {
            continue;
        }
        if let Some(&d) = edges[i].iter().find(|d| problems.contains_key(d)) {
            let message = format!(
                "Extension {} depends on {}, which cannot be loaded",
                packages[i].name, packages[d].name
            );
            problems.insert(i, message);
            continue;
        }
        loadable.push(i);
    }
    (loadable, problems.into_iter().collect())
}

/// Indices of the `packages` that directly depend on the package `name` (for the delete rules).
pub fn dependents(name: &str, packages: &[&Metadata]) -> Vec<usize> {
    (0..packages.len())
        .filter(|&i| packages[i].depends_on.iter().any(|d| d.name == name))
        .collect()
}

#[cfg(test)]
mod tests;
