use super::*;
use crate::metadata::{Dependency, NativeLibrary};
use crate::Sha256;

fn meta(name: &str, version: &str, deps: &[(&str, &str)]) -> Metadata {
    Metadata {
        name: name.into(),
        version: Version::parse(version).unwrap(),
        vendor: String::new(),
        description: String::new(),
        minimum_thingworx_version: None,
        depends_on: deps
            .iter()
            .map(|(n, v)| Dependency {
                name: (*n).into(),
                version: Version::parse(v).unwrap(),
            })
            .collect(),
        native_libraries: vec![NativeLibrary {
            file: format!("lib/t/lib{name}.so"),
            target: "t".into(),
            sha256: Sha256([0; 32]),
            abi_version: 1,
        }],
    }
}

fn installed(list: &[(&str, &str)]) -> BTreeMap<String, Version> {
    list.iter()
        .map(|(n, v)| ((*n).into(), Version::parse(v).unwrap()))
        .collect()
}

fn plan(packages: &[Metadata], inst: &[(&str, &str)]) -> ImportPlan {
    let refs: Vec<&Metadata> = packages.iter().collect();
    plan_import(&refs, &installed(inst))
}

fn statuses(plan: &ImportPlan) -> Vec<ReportStatus> {
    plan.rows
        .iter()
        .map(|r| r.extension_report_status)
        .collect()
}

fn step_indices(plan: &ImportPlan) -> Vec<usize> {
    plan.steps.iter().map(|s| s.index).collect()
}

#[test]
fn a_new_package_is_installed() {
    let p = plan(&[meta("A", "1.0.0", &[])], &[]);
    assert!(!p.is_refused());
    assert_eq!(
        p.rows,
        vec![ReportRow::new(
            "A",
            "1.0.0",
            ReportStatus::Ok,
            "Extension A 1.0.0 imported".into()
        )]
    );
    assert_eq!(
        p.steps,
        vec![Step {
            index: 0,
            action: Action::Install
        }]
    );
}

#[test]
fn a_minor_or_patch_upgrade_replaces() {
    for (old, new) in [
        ("1.0.0", "1.1.0"),
        ("1.1.0", "1.1.1"),
        ("1.0.0-beta.1", "1.0.0"),
    ] {
        let p = plan(&[meta("A", new, &[])], &[("A", old)]);
        assert!(!p.is_refused(), "{old} -> {new}: {:?}", p.rows);
        assert_eq!(
            p.steps[0].action,
            Action::Upgrade {
                from: Version::parse(old).unwrap()
            }
        );
        assert_eq!(
            p.rows[0].report_message,
            format!("Extension A upgraded from {old} to {new}")
        );
    }
}

#[test]
fn the_same_version_is_a_warning_and_changes_nothing() {
    let p = plan(&[meta("A", "1.2.0", &[])], &[("A", "1.2.0")]);
    assert!(!p.is_refused());
    assert_eq!(statuses(&p), [ReportStatus::Warning]);
    assert_eq!(
        p.rows[0].report_message,
        "Extension A 1.2.0 is already installed; nothing changed"
    );
    assert!(p.steps.is_empty());
}

#[test]
fn build_metadata_does_not_make_a_new_version() {
    let p = plan(
        &[meta("A", "1.2.0+build.2", &[])],
        &[("A", "1.2.0+build.1")],
    );
    assert_eq!(statuses(&p), [ReportStatus::Warning]);
    let v = |s: &str| Version::parse(s).unwrap();
    assert!(satisfies(&v("1.2.0+b"), &v("1.2.0")));
    assert!(satisfies(&v("1.2.0"), &v("1.2.0-rc.1")));
    assert!(!satisfies(&v("1.2.0-rc.1"), &v("1.2.0")));
}

#[test]
fn a_newer_installed_version_refuses() {
    let p = plan(&[meta("A", "1.0.0", &[])], &[("A", "1.2.0")]);
    assert!(p.is_refused());
    assert_eq!(
        p.rows[0].report_message,
        "Extension A 1.0.0 is older than the installed version 1.2.0"
    );
    assert!(p.steps.is_empty());
}

#[test]
fn a_major_upgrade_refuses() {
    let p = plan(&[meta("A", "2.0.0", &[])], &[("A", "1.9.0")]);
    assert!(p.is_refused());
    assert!(
        p.rows[0].report_message.contains("major upgrade"),
        "{:?}",
        p.rows
    );
}

#[test]
fn a_missing_dependency_refuses_with_the_thingworx_message() {
    let p = plan(
        &[meta(
            "AxedaCompatibilityExtension",
            "1.0.0",
            &[("RemoteAccessExtension", "1.0.0")],
        )],
        &[],
    );
    assert!(p.is_refused());
    assert_eq!(
        p.rows[0].report_message,
        "Extension AxedaCompatibilityExtension depends on [RemoteAccessExtension:1.0.0] which is not installed"
    );
}

#[test]
fn dependencies_need_the_same_major_at_or_above_the_version() {
    let cases = [
        ("1.3.0", true),
        ("1.4.2", true),
        ("1.0.0", false),
        ("1.2.9", false),
        ("2.0.0", false),
        ("0.9.0", false),
    ];
    for (installed_version, ok) in cases {
        let p = plan(
            &[meta("B", "1.0.0", &[("A", "1.3.0")])],
            &[("A", installed_version)],
        );
        assert_eq!(!p.is_refused(), ok, "A {installed_version}: {:?}", p.rows);
    }
}

#[test]
fn a_co_imported_dependency_satisfies_and_comes_first() {
    let packages = [
        meta("B", "1.0.0", &[("A", "1.0.0")]),
        meta("A", "1.1.0", &[]),
    ];
    let p = plan(&packages, &[]);
    assert!(!p.is_refused(), "{:?}", p.rows);
    assert_eq!(step_indices(&p), [1, 0]);
    assert_eq!(statuses(&p), [ReportStatus::Ok, ReportStatus::Ok]);
}

#[test]
fn a_co_imported_upgrade_satisfies_a_newer_requirement() {
    let packages = [
        meta("B", "1.0.0", &[("A", "1.2.0")]),
        meta("A", "1.2.0", &[]),
    ];
    let p = plan(&packages, &[("A", "1.0.0")]);
    assert!(!p.is_refused(), "{:?}", p.rows);
    assert_eq!(
        p.steps,
        vec![
            Step {
                index: 1,
                action: Action::Upgrade {
                    from: Version::new(1, 0, 0)
                }
            },
            Step {
                index: 0,
                action: Action::Install
            },
        ]
    );
}

#[test]
fn ordering_is_topological_with_ties_in_upload_order() {
    // D -> {B, C}, B -> A, C -> A, E independent.
    let packages = [
        meta("D", "1.0.0", &[("B", "1.0.0"), ("C", "1.0.0")]),
        meta("E", "1.0.0", &[]),
        meta("C", "1.0.0", &[("A", "1.0.0")]),
        meta("B", "1.0.0", &[("A", "1.0.0")]),
        meta("A", "1.0.0", &[]),
    ];
    let p = plan(&packages, &[]);
    assert!(!p.is_refused());
    let names: Vec<&str> = p
        .steps
        .iter()
        .map(|s| packages[s.index].name.as_str())
        .collect();
    assert_eq!(names, ["E", "A", "C", "B", "D"]);
}

#[test]
fn a_cycle_is_refused_naming_its_packages() {
    let packages = [
        meta("A", "1.0.0", &[("B", "1.0.0")]),
        meta("B", "1.0.0", &[("C", "1.0.0")]),
        meta("C", "1.0.0", &[("A", "1.0.0")]),
        meta("D", "1.0.0", &[("A", "1.0.0")]),
        meta("E", "1.0.0", &[]),
    ];
    let p = plan(&packages, &[]);
    assert!(p.is_refused());
    assert!(p.steps.is_empty());
    for (row, package) in p.rows.iter().zip(&packages).take(3) {
        let msg = &row.report_message;
        assert!(msg.contains("dependency cycle: A -> B -> C -> A"), "{msg}");
        assert!(
            msg.starts_with(&format!("Extension {}", package.name)),
            "{msg}"
        );
    }
    assert_eq!(
        p.rows[3].report_message,
        "Extension D depends on A, which is part of a dependency cycle"
    );
    // The otherwise acceptable package is not imported either.
    assert!(p.rows[4].is_failure());
    assert_eq!(
        p.rows[4].report_message,
        "Extension E 1.0.0 was not imported because the import was refused"
    );
}

#[test]
fn a_two_package_cycle_is_refused() {
    let packages = [
        meta("A", "1.0.0", &[("B", "1.0.0")]),
        meta("B", "1.0.0", &[("A", "1.0.0")]),
    ];
    let p = plan(&packages, &[]);
    assert_eq!(statuses(&p), [ReportStatus::Failure, ReportStatus::Failure]);
    assert!(
        p.rows[1].report_message.contains("A -> B -> A"),
        "{:?}",
        p.rows
    );
}

#[test]
fn duplicates_in_one_upload_are_refused() {
    let p = plan(&[meta("A", "1.0.0", &[]), meta("A", "1.1.0", &[])], &[]);
    assert_eq!(statuses(&p), [ReportStatus::Failure, ReportStatus::Failure]);
    assert_eq!(
        p.rows[0].report_message,
        "Extension A appears 2 times in the upload"
    );
}

#[test]
fn one_failure_refuses_all_but_keeps_warnings() {
    let packages = [
        meta("A", "1.0.0", &[]),
        meta("B", "1.0.0", &[]),
        meta("C", "0.1.0", &[]),
    ];
    let p = plan(&packages, &[("B", "1.0.0"), ("C", "0.2.0")]);
    assert_eq!(
        statuses(&p),
        [
            ReportStatus::Failure,
            ReportStatus::Warning,
            ReportStatus::Failure
        ]
    );
    assert!(p.steps.is_empty());
}

#[test]
fn refuse_after_planning_rewrites_rows_and_drops_steps() {
    let mut p = plan(&[meta("A", "1.0.0", &[]), meta("B", "1.0.0", &[])], &[]);
    assert_eq!(p.steps.len(), 2);
    p.refuse(1, "library entry point failed".into());
    assert!(p.is_refused());
    assert!(p.steps.is_empty());
    assert_eq!(p.rows[1].report_message, "library entry point failed");
    assert!(p.rows[0].report_message.contains("was not imported"));
}

#[test]
fn report_rows_serialize_in_the_thingworx_shape() {
    let row = ReportRow::new("A", "1.0.0", ReportStatus::Warning, "m".into());
    let json = serde_json::to_value(&row).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"name": "A", "version": "1.0.0", "extensionReportStatus": 2, "reportMessage": "m"})
    );
    assert_eq!(serde_json::from_value::<ReportRow>(json).unwrap(), row);
    let bad = serde_json::json!({"name": "A", "version": "1", "extensionReportStatus": 9, "reportMessage": ""});
    assert!(serde_json::from_value::<ReportRow>(bad).is_err());
}

#[test]
fn load_order_puts_dependencies_first_and_reports_the_unloadable() {
    let packages = [
        meta("C", "1.0.0", &[("B", "1.0.0")]),
        meta("B", "1.0.0", &[("A", "1.0.0")]),
        meta("A", "1.0.0", &[]),
        meta("X", "1.0.0", &[("Missing", "1.0.0")]),
        meta("Y", "1.0.0", &[("X", "1.0.0")]),
        meta("P", "1.0.0", &[("Q", "1.0.0")]),
        meta("Q", "1.0.0", &[("P", "1.0.0")]),
        meta("Z", "1.0.0", &[("A", "2.0.0")]),
    ];
    let refs: Vec<&Metadata> = packages.iter().collect();
    let (order, problems) = load_order(&refs);
    assert_eq!(order, [2, 1, 0]);
    let problems: BTreeMap<usize, String> = problems.into_iter().collect();
    assert_eq!(
        problems[&3],
        "Extension X depends on [Missing:1.0.0] which is not installed"
    );
    assert_eq!(
        problems[&4],
        "Extension Y depends on X, which cannot be loaded"
    );
    assert!(
        problems[&5].contains("dependency cycle: P -> Q -> P"),
        "{}",
        problems[&5]
    );
    assert!(
        problems[&6].contains("dependency cycle"),
        "{}",
        problems[&6]
    );
    assert_eq!(
        problems[&7],
        "Extension Z depends on [A:2.0.0] which is not installed"
    );
}

#[test]
fn dependents_lists_direct_dependents() {
    let packages = [
        meta("A", "1.0.0", &[]),
        meta("B", "1.0.0", &[("A", "1.0.0")]),
        meta("C", "1.0.0", &[("B", "1.0.0")]),
    ];
    let refs: Vec<&Metadata> = packages.iter().collect();
    assert_eq!(dependents("A", &refs), [1]);
    assert_eq!(dependents("C", &refs), Vec::<usize>::new());
}
