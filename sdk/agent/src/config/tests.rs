use super::*;

#[test]
fn durations_take_ms_s_m_h_and_bare_seconds() {
    let ms = Duration::from_millis;
    assert_eq!(parse_duration("500ms"), Ok(ms(500)));
    assert_eq!(parse_duration("2s"), Ok(ms(2_000)));
    assert_eq!(parse_duration("1m"), Ok(ms(60_000)));
    assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
    assert_eq!(parse_duration("15"), Ok(ms(15_000)));
    assert_eq!(parse_duration(" 3s "), Ok(ms(3_000)));
    assert_eq!(parse_duration("0ms"), Ok(ms(0)));
}

#[test]
fn bad_durations_say_what_is_wrong() {
    for (text, needle) in [
        ("", "not a duration"),
        ("s", "not a duration"),
        ("-1s", "not a duration"),
        ("1.5s", "unknown unit"),
        ("2x", "unknown unit"),
        ("2 sec", "unknown unit"),
        ("99999999999999999999s", "too large"),
        ("18446744073709551615h", "too large"),
    ] {
        let err = parse_duration(text).unwrap_err();
        assert!(err.contains(needle), "{text:?}: {err}");
    }
}

#[test]
fn endpoints_are_host_port_with_bracketed_ipv6() {
    let ep = |h: &str, p| Endpoint {
        host: h.into(),
        port: p,
    };
    assert_eq!(parse_endpoint("127.0.0.1:22"), Ok(ep("127.0.0.1", 22)));
    assert_eq!(
        parse_endpoint("PLC-1.local:5900"),
        Ok(ep("plc-1.local", 5900))
    );
    assert_eq!(parse_endpoint("[::1]:23"), Ok(ep("::1", 23)));
    assert_eq!(parse_endpoint("[fd00::5]:65535"), Ok(ep("fd00::5", 65535)));
    assert_eq!(
        parse_endpoint("[fd00::5]:65535").unwrap().to_string(),
        "[fd00::5]:65535"
    );
    assert_eq!(parse_endpoint("gw_1:80").unwrap().to_string(), "gw_1:80");
}

#[test]
fn bad_endpoints_are_refused() {
    for (text, needle) in [
        ("host", "not HOST:PORT"),
        ("::1:22", "not HOST:PORT"),
        ("[::1]22", "not HOST:PORT"),
        ("[nothex]:22", "not HOST:PORT"),
        ("host:0", "1 to 65535"),
        ("host:65536", "1 to 65535"),
        ("host:+22", "1 to 65535"),
        ("host:", "1 to 65535"),
        (":22", "host is empty"),
        ("bad host:22", "not a valid host"),
        ("a..b:22", "not a valid host"),
        ("h/x:22", "not a valid host"),
    ] {
        let err = parse_endpoint(text).unwrap_err();
        assert!(err.contains(needle), "{text:?}: {err}");
    }
}

#[test]
fn app_keys_are_redacted_and_checked() {
    let key = AppKey::new("s3cret-key").unwrap();
    assert_eq!(key.expose(), "s3cret-key");
    assert!(!format!("{key:?} {key}").contains("s3cret"));
    assert!(AppKey::new("").is_err());
    assert!(AppKey::new("has space").is_err());
    assert!(AppKey::new("line\nbreak").is_err());
}

#[test]
fn config_validation_catches_what_types_cannot() {
    let key = || AppKey::new("k").unwrap();
    let none: [&str; 0] = [];
    assert!(AgentConfig::new("http://h", key(), none)
        .unwrap_err()
        .to_string()
        .contains("--thing"));
    assert!(AgentConfig::new("http://h", key(), ["a", "a"])
        .unwrap_err()
        .to_string()
        .contains("twice"));
    assert!(AgentConfig::new("http://h", key(), ["bad\u{7}"]).is_err());
    let mut c = AgentConfig::new("http://h", key(), ["a"]).unwrap();
    c.min_backoff = Duration::from_secs(20);
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("--max-backoff"));
    c.min_backoff = Duration::ZERO;
    assert!(c.validate().is_err());
}
