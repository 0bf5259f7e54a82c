use super::*;
use clap::CommandFactory as _;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("thingport").chain(args.iter().copied()))
}

#[test]
fn the_command_line_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn pack_takes_its_flags_and_defaults_to_release() {
    let cli = parse(&["ext", "pack", "dir", "-o", "out.zip"]).unwrap();
    let Command::Ext(ExtCommand::Pack(args)) = cli.command else {
        panic!("not pack")
    };
    assert_eq!(args.profile, "release");
    assert_eq!(args.output, PathBuf::from("out.zip"));
    let cli = parse(&[
        "ext",
        "pack",
        "dir",
        "--output",
        "o",
        "--profile",
        "debug",
        "--target-dir",
        "t",
        "--sign-key",
        "k",
    ])
    .unwrap();
    let Command::Ext(ExtCommand::Pack(args)) = cli.command else {
        panic!("not pack")
    };
    assert_eq!(args.profile, "debug");
    assert_eq!(args.target_dir, Some(PathBuf::from("t")));
    assert_eq!(args.sign_key, Some(PathBuf::from("k")));
    // -o is required.
    let err = parse(&["ext", "pack", "dir"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn global_flags_go_anywhere_and_credentials_resolve() {
    let cli = parse(&[
        "ext",
        "list",
        "--url",
        "http://h:1",
        "--user",
        "u",
        "--password",
        "p",
    ])
    .unwrap();
    assert_eq!(cli.global.url, "http://h:1");
    assert_eq!(
        auth(&cli.global).unwrap(),
        Auth::Basic {
            user: "u".into(),
            password: Secret("p".into())
        }
    );
    let cli = parse(&["--app-key", "k", "--user", "u", "ext", "delete", "X"]).unwrap();
    assert_eq!(auth(&cli.global).unwrap(), Auth::AppKey(Secret("k".into())));
    let cli = parse(&["--user", "u", "ext", "list"]).unwrap();
    assert!(auth(&cli.global)
        .unwrap_err()
        .to_string()
        .contains("--password"));
}

#[test]
fn the_report_is_a_table_with_words_for_statuses() {
    let report = serde_json::json!({"rows": [
        {"name": "A", "version": "1.0.0", "extensionReportStatus": 0, "reportMessage": "imported"},
        {"name": "LongerName", "version": "2.0.0", "extensionReportStatus": 2, "reportMessage": "already installed"},
        {"name": "C", "version": "1.0.0", "extensionReportStatus": 1, "reportMessage": "Extension C depends on [B:1.0.0] which is not installed"},
    ]});
    assert_eq!(
        describe_report(&report),
        "name        version  status   message\n\
         A           1.0.0    ok       imported\n\
         LongerName  2.0.0    warning  already installed\n\
         C           1.0.0    failure  Extension C depends on [B:1.0.0] which is not installed\n"
    );
    assert_eq!(
        describe_report(&serde_json::json!({})),
        "the server returned no report rows\n"
    );
}

#[test]
fn connect_listens_locally_by_default_or_takes_stdio() {
    let cli = parse(&["connect", "gw-1", "ssh"]).unwrap();
    let Command::Connect(args) = cli.command else {
        panic!("not connect")
    };
    assert_eq!(
        (args.thing.as_str(), args.endpoint.as_str()),
        ("gw-1", "ssh")
    );
    assert_eq!((args.local.as_str(), args.stdio), ("127.0.0.1:0", false));
    let cli = parse(&["connect", "gw-1", "ssh", "--stdio", "--insecure"]).unwrap();
    assert!(cli.global.insecure);
    let Command::Connect(args) = cli.command else {
        panic!("not connect")
    };
    assert!(args.stdio);
    let cli = parse(&["connect", "gw-1", "ssh", "--local", "0.0.0.0:2222"]).unwrap();
    let Command::Connect(args) = cli.command else {
        panic!("not connect")
    };
    assert_eq!(args.local, "0.0.0.0:2222");
    // One of the two, and both names are needed.
    let both = parse(&[
        "connect",
        "gw-1",
        "ssh",
        "--stdio",
        "--local",
        "127.0.0.1:1",
    ]);
    assert_eq!(both.unwrap_err().exit_code(), 2);
    assert_eq!(parse(&["connect", "gw-1"]).unwrap_err().exit_code(), 2);
}

#[test]
fn session_and_audit_commands_parse() {
    let cli = parse(&["sessions"]).unwrap();
    assert!(matches!(cli.command, Command::Sessions { thing: None, .. }));
    let cli = parse(&["sessions", "gw-1", "--json"]).unwrap();
    assert!(matches!(
        cli.command,
        Command::Sessions { thing: Some(ref t), json: true } if t == "gw-1"
    ));
    let cli = parse(&["end", "s-1"]).unwrap();
    assert!(matches!(cli.command, Command::End { ref session } if session == "s-1"));
    let cli = parse(&["audit", "--category", "REMOTE_ACCESS", "--limit", "5"]).unwrap();
    let Command::Audit(args) = cli.command else {
        panic!("not audit")
    };
    assert_eq!(args.category.as_deref(), Some("REMOTE_ACCESS"));
    assert_eq!(args.limit, Some(5));
    assert!(parse(&["things", "--json"]).is_ok());
    assert_eq!(parse(&["end"]).unwrap_err().exit_code(), 2);
}
