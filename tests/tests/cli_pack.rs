//! `thingport ext pack` and `ext keygen`, run as the real binary on the fixture extension
//! `tests/fixtures/noop` (built by `cargo build --workspace` in the test's own profile), and the
//! packages checked with the server's own package code.
//!
//! Needs the `thingport` binary: `cargo build --workspace` (or `-p thingport-client`) first, or
//! `THINGPORT_BIN`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use thingport_e2e::Server;
use thingport_server::extensions::package::{
    host_target, verify_package, Metadata, Package, Sha256, TrustedKeys, VerifyOptions, ZipLimits,
};

/// Path of the `thingport` binary: `THINGPORT_BIN`, else next to the running test executable's
/// profile directory, else `$CARGO_TARGET_DIR/debug`, else `<workspace>/target/debug`.
fn thingport_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("THINGPORT_BIN") {
        return PathBuf::from(p);
    }
    let mut candidates = vec![profile_dir().join("thingport")];
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("debug/thingport"));
    }
    candidates.push(workspace_root().join("target/debug/thingport"));
    candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "thingport binary not found (looked at {candidates:?}); run `cargo build \
                 --workspace` first, or set THINGPORT_BIN"
            )
        })
}

/// `<target>/<profile>`: the directory of the test executable's profile (it runs from
/// `<target>/<profile>/deps/`), where the fixture extensions were built too.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test executable sits in <target>/<profile>/deps")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    profile_dir().parent().expect("<target>").to_path_buf()
}

fn profile() -> String {
    profile_dir()
        .file_name()
        .expect("a profile directory name")
        .to_string_lossy()
        .into_owned()
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn fixture(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures").join(name)
}

/// The built library of fixture `name` (`fixture-noop` → `libfixture_noop.so`).
fn fixture_library(crate_name: &str) -> PathBuf {
    let file = format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        crate_name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    );
    let path = profile_dir().join(file);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// Runs `thingport` with `args`, without the THINGPORT_* and CARGO_TARGET_DIR variables of the
/// environment unless `env` sets them.
fn thingport(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(thingport_binary());
    command.args(args).env_remove("CARGO_TARGET_DIR");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("THINGPORT_") {
            command.env_remove(key);
        }
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("thingport runs")
}

/// `thingport ext pack DIR -o OUT` of the library built in the test's own profile and target
/// directory, with `extra` arguments.
fn pack_built(dir: &Path, out: &Path, extra: &[&str]) -> Output {
    let profile = profile();
    let target = target_dir();
    let mut args = vec!["ext", "pack", path_str(dir), "-o", path_str(out)];
    args.extend(["--profile", &profile, "--target-dir", path_str(&target)]);
    args.extend_from_slice(extra);
    thingport(&args, &[])
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a failure: exit code 1 and exactly one stderr line `thingport: ...` containing
/// `needle`. Returns that line.
#[track_caller]
fn expect_failure(output: &Output, needle: &str) -> String {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(lines[0].starts_with("thingport: "), "{stderr}");
    assert!(
        lines[0].contains(needle),
        "expected {needle:?} in: {stderr}"
    );
    lines[0].to_owned()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 test paths")
}

/// A crate directory holding a copy of fixture `name`'s Cargo.toml and the given metadata.xml.
fn crate_copy(name: &str, metadata: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture(name).join("Cargo.toml"),
        dir.path().join("Cargo.toml"),
    )
    .unwrap();
    if let Some(xml) = metadata {
        std::fs::write(dir.path().join("metadata.xml"), xml).unwrap();
    }
    dir
}

fn noop_template() -> String {
    std::fs::read_to_string(fixture("noop").join("metadata.xml")).unwrap()
}

#[test]
fn packs_the_noop_fixture_into_a_package_the_server_accepts() {
    let library = fixture_library("fixture-noop");
    let out = tempfile::tempdir().unwrap();
    let first = out.path().join("noop.zip");
    let noop = fixture("noop");
    let profile = profile();

    // The target directory from CARGO_TARGET_DIR.
    let output = thingport(
        &[
            "ext",
            "pack",
            path_str(&noop),
            "-o",
            path_str(&first),
            "--profile",
            &profile,
        ],
        &[("CARGO_TARGET_DIR", path_str(&target_dir()))],
    );
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));

    let library_bytes = std::fs::read(&library).unwrap();
    let library_sha = Sha256::of(&library_bytes);
    let target = host_target();
    assert!(stdout.contains("FixtureNoopExtension 0.1.0"), "{stdout}");
    assert!(stdout.contains(&target), "{stdout}");
    assert!(stdout.contains(&library_sha.to_hex()), "{stdout}");

    let bytes = std::fs::read(&first).unwrap();
    assert!(
        stdout.contains(&format!("{} bytes (package)", bytes.len())),
        "{stdout}"
    );
    let package = Package::read(bytes.clone(), &ZipLimits::default()).unwrap();
    let metadata = Metadata::parse(&package.files["metadata.xml"]).unwrap();
    assert_eq!(metadata, package.metadata);
    assert_eq!(metadata.name, "FixtureNoopExtension");
    assert_eq!(metadata.version.to_string(), "0.1.0");
    assert_eq!(metadata.vendor, "Thingport tests");
    assert_eq!(metadata.native_libraries.len(), 1);
    let native = &metadata.native_libraries[0];
    let file_name = library.file_name().unwrap().to_string_lossy();
    assert_eq!(native.file, format!("lib/{target}/{file_name}"));
    assert_eq!(native.target, target);
    assert_eq!(native.abi_version, 1);
    assert_eq!(native.sha256, library_sha);
    assert_eq!(Sha256::of(&package.files[&native.file]), native.sha256);
    assert_eq!(package.files.len(), 2, "{:?}", package.files.keys());
    let verified = verify_package(&package.files, &metadata, &VerifyOptions::default()).unwrap();
    assert_eq!(verified.bytes, library_bytes.as_slice());

    // The same inputs give the same bytes, with the target directory given as a flag.
    let second = out.path().join("again.zip");
    let output = pack_built(&noop, &second, &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(std::fs::read(&second).unwrap(), bytes);
}

#[test]
fn a_signed_package_verifies_with_the_key_keygen_printed() {
    fixture_library("fixture-noop");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("release.key");
    let output = thingport(&["ext", "keygen", "-o", path_str(&key)], &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let line = text(&output.stdout);
    let trusted = TrustedKeys::parse(&line).unwrap();
    assert_eq!(trusted.keys().len(), 1);

    let pubkey = thingport(&["ext", "pubkey", path_str(&key)], &[]);
    assert_eq!(text(&pubkey.stdout), line);
    // keygen never overwrites a key.
    let again = thingport(&["ext", "keygen", "-o", path_str(&key)], &[]);
    expect_failure(&again, "already exists");

    let package_path = dir.path().join("signed.zip");
    let output = pack_built(
        &fixture("noop"),
        &package_path,
        &["--sign-key", path_str(&key)],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let package =
        Package::read(std::fs::read(&package_path).unwrap(), &ZipLimits::default()).unwrap();
    assert!(package.files.contains_key("signature.ed25519"));
    let options = VerifyOptions {
        trusted_keys: Some(trusted.clone()),
        ..VerifyOptions::default()
    };
    let verified = package.verify(&options).unwrap();
    assert_eq!(verified.signed_by, Some(trusted.keys()[0]));

    // Another key's server refuses it.
    let other = dir.path().join("other.key");
    let output = thingport(&["ext", "keygen", "-o", path_str(&other)], &[]);
    let stranger = TrustedKeys::parse(&text(&output.stdout)).unwrap();
    let options = VerifyOptions {
        trusted_keys: Some(stranger),
        ..VerifyOptions::default()
    };
    assert!(package.verify(&options).is_err());
}

#[test]
fn a_crate_without_metadata_xml_is_refused() {
    let krate = crate_copy("noop", None);
    let out = krate.path().join("out.zip");
    let output = pack_built(krate.path(), &out, &[]);
    expect_failure(&output, "no metadata.xml in");
    assert!(!out.exists());
}

#[test]
fn a_missing_build_names_the_cargo_command_to_run() {
    let krate = crate_copy("noop", Some(&noop_template()));
    let empty_target = tempfile::tempdir().unwrap();
    let out = krate.path().join("out.zip");
    std::fs::write(&out, b"previous package").unwrap();
    let output = thingport(
        &[
            "ext",
            "pack",
            path_str(krate.path()),
            "-o",
            path_str(&out),
            "--target-dir",
            path_str(empty_target.path()),
        ],
        &[],
    );
    expect_failure(&output, "run `cargo build --release -p fixture-noop`");
    assert_eq!(std::fs::read(&out).unwrap(), b"previous package");

    let output = thingport(
        &[
            "ext",
            "pack",
            path_str(krate.path()),
            "-o",
            path_str(&out),
            "--profile",
            "debug",
            "--target-dir",
            path_str(empty_target.path()),
        ],
        &[],
    );
    expect_failure(&output, "run `cargo build -p fixture-noop`");
}

#[test]
fn an_invalid_package_version_is_refused_naming_the_field() {
    let bad = noop_template().replace("packageVersion=\"0.1.0\"", "packageVersion=\"1.x\"");
    assert!(bad.contains("1.x"));
    let krate = crate_copy("noop", Some(&bad));
    let out = krate.path().join("out.zip");
    let output = pack_built(krate.path(), &out, &[]);
    let line = expect_failure(
        &output,
        "ExtensionPackage/@packageVersion \"1.x\" is not a semantic version",
    );
    assert!(line.contains("metadata.xml"), "{line}");
    assert!(!out.exists());
}

#[test]
fn a_library_without_the_entry_symbol_is_refused() {
    fixture_library("fixture-nosymbol");
    let template = noop_template().replace("FixtureNoopExtension", "FixtureNoSymbol");
    let krate = crate_copy("nosymbol", Some(&template));
    let out = krate.path().join("out.zip");
    let output = pack_built(krate.path(), &out, &[]);
    expect_failure(&output, "exports no thingport_extension_entry_v<N> symbol");
    assert!(!out.exists());
}

#[test]
fn help_answers_and_usage_mistakes_exit_2() {
    for args in [
        &["--help"][..],
        &["ext", "--help"],
        &["ext", "pack", "--help"],
        &["ext", "keygen", "--help"],
        &["ext", "import", "--help"],
        &["ext", "list", "--help"],
        &["ext", "delete", "--help"],
    ] {
        let output = thingport(args, &[]);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
        assert!(
            text(&output.stdout).contains("Usage: thingport"),
            "{args:?}"
        );
    }
    let missing_output = thingport(&["ext", "pack", "."], &[]);
    assert_eq!(missing_output.status.code(), Some(2));
    let unknown = thingport(&["ext", "frobnicate"], &[]);
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn server_commands_fail_in_one_line_when_the_server_is_unreachable() {
    // A port that was free a moment ago: nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let output = thingport(&["ext", "list", "--url", &url, "--app-key", "k"], &[]);
    expect_failure(&output, "GetExtensionPackageList failed: cannot reach");
    let output = thingport(&["ext", "list", "--user", "Administrator"], &[]);
    expect_failure(&output, "--user needs --password");
}

#[test]
fn imports_lists_and_deletes_through_the_cli() {
    fixture_library("fixture-noop");
    let dir = tempfile::tempdir().unwrap();
    let package = dir.path().join("noop.zip");
    let output = pack_built(&fixture("noop"), &package, &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));

    let server = Server::default_started();
    let url = server.base_url();
    let admin = [
        ("THINGPORT_URL", url.as_str()),
        ("THINGPORT_USER", "Administrator"),
        ("THINGPORT_PASSWORD", server.admin_password()),
    ];
    let ext = |args: &[&str]| {
        let mut all = vec!["ext"];
        all.extend_from_slice(args);
        thingport(&all, &admin)
    };

    let imported = ext(&["import", path_str(&package)]);
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    let report = text(&imported.stdout);
    assert!(report.starts_with("name "), "{report}");
    assert!(
        report.contains("FixtureNoopExtension  0.1.0    ok"),
        "{report}"
    );

    let again = ext(&["import", path_str(&package)]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains("warning"),
        "{}",
        text(&again.stdout)
    );

    let list = ext(&["list"]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    let listed = text(&list.stdout);
    assert!(
        listed
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("FixtureNoopExtension  0.1.0")),
        "{listed}"
    );
    let json = ext(&["list", "--json"]);
    let body: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(body["rows"][0]["name"], "FixtureNoopExtension");

    let garbage = dir.path().join("garbage.zip");
    std::fs::write(&garbage, b"not a zip").unwrap();
    let refused = ext(&["import", path_str(&garbage)]);
    expect_failure(&refused, "extension import refused");
    assert!(
        text(&refused.stdout).contains("failure"),
        "{}",
        text(&refused.stdout)
    );

    let deleted = ext(&["delete", "FixtureNoopExtension"]);
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    assert_eq!(text(&deleted.stdout), "deleted FixtureNoopExtension\n");
    let missing = ext(&["delete", "FixtureNoopExtension"]);
    expect_failure(
        &missing,
        "DeleteExtensionPackage failed: the server answered 404",
    );
    let empty = ext(&["list"]);
    assert_eq!(text(&empty.stdout), "no extension packages installed\n");

    let anonymous = thingport(&["ext", "list"], &[("THINGPORT_URL", url.as_str())]);
    expect_failure(&anonymous, "answered 401");
    assert!(text(&anonymous.stderr).contains("pass --app-key"));
}
