use super::accept;
use crate::cli::Args;
use clap::Parser;
use serde_json::json;
use thingport_protocol::control::codes;

fn config(extra: &[&str]) -> crate::AgentConfig {
    let mut argv = vec![
        "thingport-agent",
        "--url=http://p:8080",
        "--app-key=k",
        "--thing=t",
    ];
    argv.extend_from_slice(extra);
    Args::try_parse_from(argv)
        .unwrap()
        .into_config(|_| None)
        .unwrap()
}

fn order(host: &str, port: u16) -> serde_json::Value {
    json!({"session": "s", "gasUrl": "https://gas.example:8443", "credential": "v1.a.b",
           "endpoint": {"host": host, "port": port, "name": "ssh"}})
}

#[test]
fn orders_are_checked_against_the_configuration() {
    let (o, url) = accept(&config(&[]), &order("10.0.0.5", 22)).unwrap();
    assert_eq!((o.endpoint.port, url.path.as_str()), (22, "/tunnel"));
    assert!(url.tls);
    let allowed = config(&["--allow=10.0.0.5:22,gw.lan:5900,[fd00::5]:22"]);
    assert!(accept(&allowed, &order("10.0.0.5", 22)).is_ok());
    assert!(accept(&allowed, &order("GW.lan", 5900)).is_ok());
    let (o, _) = accept(&allowed, &order("[FD00::5]", 22)).unwrap();
    assert_eq!(o.endpoint.address().to_string(), "[fd00::5]:22");
    let denied = accept(&allowed, &order("10.0.0.5", 23)).unwrap_err();
    assert_eq!(denied.code, codes::SESSION_DENIED);
    assert!(denied.message.contains("10.0.0.5:23"), "{denied:?}");
}

#[test]
fn disabled_remote_access_refuses_everything_first() {
    let off = config(&["--disable-remote-access", "--allow=10.0.0.5:22"]);
    for body in [order("10.0.0.5", 22), json!({}), json!("junk")] {
        let e = accept(&off, &body).unwrap_err();
        assert_eq!(e.code, codes::SESSION_DENIED);
        assert!(e.message.contains("--disable-remote-access"), "{e:?}");
    }
}

#[test]
fn malformed_orders_fail_without_panicking() {
    let long = "x".repeat(500);
    for bad in [
        json!({}),
        json!(null),
        json!({"session": "s", "gasUrl": "ftp://x", "credential": "c",
               "endpoint": {"host": "h", "port": 1}}),
        json!({"session": "s", "gasUrl": "http://g", "credential": "bad\nvalue",
               "endpoint": {"host": "h", "port": 1}}),
        json!({"session": "s", "gasUrl": "http://g", "credential": "c",
               "endpoint": {"host": "bad host", "port": 1}}),
        json!({"session": "s", "gasUrl": "http://g", "credential": "c",
               "endpoint": {"host": "h", "port": 0}}),
        json!({"session": "s", "gasUrl": "http://g", "credential": "c",
               "endpoint": {"host": "h", "port": 70000}}),
        json!({"session": "", "gasUrl": "http://g", "credential": "c",
               "endpoint": {"host": "h", "port": 1}}),
        json!({"session": long, "gasUrl": "http://g", "credential": "c",
               "endpoint": {"host": "h", "port": 1}}),
    ] {
        assert_eq!(
            accept(&config(&[]), &bad).unwrap_err().code,
            codes::FAILED,
            "{bad}"
        );
    }
}
