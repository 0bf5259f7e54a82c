use super::*;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

const CDYLIB: &str = "[package]\nname = \"hello-counter\"\nversion = \"1.0.0\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n";

#[test]
fn the_library_name_comes_from_the_package_or_the_lib_section() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("Cargo.toml"), CDYLIB);
    let krate = ExtensionCrate::read(dir.path()).unwrap();
    assert_eq!(krate.package, "hello-counter");
    assert_eq!(krate.lib_name, "hello_counter");
    if cfg!(target_os = "linux") {
        assert_eq!(krate.library_file_name(), "libhello_counter.so");
    }

    write(
        &dir.path().join("Cargo.toml"),
        "[package]\nname = \"x\"\n[lib]\nname = \"custom\"\ncrate-type = [\"rlib\", \"cdylib\"]\n",
    );
    assert_eq!(ExtensionCrate::read(dir.path()).unwrap().lib_name, "custom");
}

#[test]
fn crates_that_are_not_extensions_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let err = ExtensionCrate::read(dir.path()).unwrap_err().to_string();
    assert!(err.contains("has no Cargo.toml"), "{err}");

    write(&dir.path().join("Cargo.toml"), "[package]\nname = \"x\"\n");
    let err = ExtensionCrate::read(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("crate-type does not include \"cdylib\""),
        "{err}"
    );

    write(
        &dir.path().join("Cargo.toml"),
        "[workspace]\nmembers = []\n",
    );
    let err = ExtensionCrate::read(dir.path()).unwrap_err().to_string();
    assert!(err.contains("no [package] section"), "{err}");

    write(&dir.path().join("Cargo.toml"), "[package\n");
    let err = format!("{:#}", ExtensionCrate::read(dir.path()).unwrap_err());
    assert!(err.contains("failed to parse"), "{err}");
}

#[test]
fn the_workspace_root_is_the_nearest_workspace_above_the_crate() {
    let root = tempfile::tempdir().unwrap();
    write(
        &root.path().join("Cargo.toml"),
        "[workspace]\nmembers = [\"extensions/hello\"]\n",
    );
    let member = root.path().join("extensions/hello");
    write(&member.join("Cargo.toml"), CDYLIB);
    let krate = ExtensionCrate::read(&member).unwrap();
    assert_eq!(
        krate.workspace_root(),
        std::path::absolute(root.path()).unwrap()
    );

    // A crate outside any workspace is its own root.
    let alone = tempfile::tempdir().unwrap();
    write(&alone.path().join("Cargo.toml"), CDYLIB);
    let krate = ExtensionCrate::read(alone.path()).unwrap();
    // (unless the temporary directory itself sits in a workspace, which it does not)
    assert_eq!(krate.workspace_root(), alone.path());
}

#[test]
fn the_target_dir_is_the_flag_else_the_environment_else_the_roots() {
    let root = Path::new("/ws");
    assert_eq!(
        target_dir(Some(Path::new("/flag")), Some("/env".into()), root),
        PathBuf::from("/flag")
    );
    assert_eq!(
        target_dir(None, Some("/env".into()), root),
        PathBuf::from("/env")
    );
    assert_eq!(
        target_dir(None, Some("".into()), root),
        PathBuf::from("/ws/target")
    );
    assert_eq!(target_dir(None, None, root), PathBuf::from("/ws/target"));
}

#[test]
fn profiles_name_their_directory_and_build_command() {
    let release = Profile::new("release").unwrap();
    assert_eq!(release.dir_name(), "release");
    assert_eq!(
        release.build_command("hello"),
        "cargo build --release -p hello"
    );
    let debug = Profile::new("dev").unwrap();
    assert_eq!(debug.dir_name(), "debug");
    assert_eq!(debug.build_command("hello"), "cargo build -p hello");
    let custom = Profile::new("dist").unwrap();
    assert_eq!(
        custom.build_command("hello"),
        "cargo build --profile dist -p hello"
    );
    assert!(Profile::new("../x").is_err());
    assert!(Profile::new("").is_err());
}

#[test]
fn a_missing_library_names_the_command_that_builds_it() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("Cargo.toml"), CDYLIB);
    let krate = ExtensionCrate::read(dir.path()).unwrap();
    let target = dir.path().join("target");
    let err = find_library(&krate, &target, &Profile::new("release").unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("run `cargo build --release -p hello-counter`"),
        "{err}"
    );
    assert!(err.contains(&krate.library_file_name()), "{err}");

    let built = target.join("release").join(krate.library_file_name());
    write(&built, "lib");
    let found = find_library(&krate, &target, &Profile::new("release").unwrap()).unwrap();
    assert_eq!(found, built);
}

#[test]
fn sources_newer_than_the_library_are_found() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("Cargo.toml"), CDYLIB);
    let krate = ExtensionCrate::read(dir.path()).unwrap();
    let lib = dir.path().join("libx.so");
    write(&lib, "lib");
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let file = std::fs::File::options().write(true).open(&lib).unwrap();
    file.set_modified(old).unwrap();
    write(&dir.path().join("src/deep/lib.rs"), "// newer");
    let newer = newer_sources(&krate, &lib);
    assert!(
        newer.contains(&dir.path().join("src/deep/lib.rs")),
        "{newer:?}"
    );

    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
        .unwrap();
    assert!(newer_sources(&krate, &lib).is_empty());
}

#[test]
fn the_abi_version_is_read_from_the_entry_symbol() {
    let mut lib = b"\x7fELF....thingport_extension_entry_v1\0other\0".to_vec();
    assert_eq!(abi_version_of(&lib).unwrap(), 1);
    // Repeated names (symbol and string tables) are one version; a prefix without digits or
    // NUL is not a symbol.
    lib.extend_from_slice(b"thingport_extension_entry_v1\0thingport_extension_entry_vX\0");
    lib.extend_from_slice(b"thingport_extension_entry_v2abc");
    assert_eq!(abi_version_of(&lib).unwrap(), 1);
    let err = abi_version_of(b"no symbol here").unwrap_err().to_string();
    assert!(
        err.contains("exports no thingport_extension_entry_v<N>"),
        "{err}"
    );
    let two = b"thingport_extension_entry_v1\0thingport_extension_entry_v2\0";
    assert!(abi_version_of(two).is_err());
}
