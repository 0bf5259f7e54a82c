use super::*;

const TICKET: &str = "tkt-secret-0123456789";

fn hello_err(text: &str) -> FrameError {
    let err = parse_hello(text).unwrap_err();
    assert!(
        !err.to_string().contains(TICKET),
        "the error {err} repeats the ticket"
    );
    err
}

#[test]
fn hello_with_size() {
    let hello = parse_hello(&format!(r#"{{"ticket":"{TICKET}","cols":132,"rows":43}}"#)).unwrap();
    assert_eq!(hello.ticket, TICKET);
    assert_eq!(
        hello.size,
        Size {
            cols: 132,
            rows: 43
        }
    );
}

#[test]
fn hello_defaults_to_80_by_24() {
    let hello = parse_hello(&format!(r#"{{"ticket":"{TICKET}"}}"#)).unwrap();
    assert_eq!(hello.size, Size { cols: 80, rows: 24 });
    let hello = parse_hello(&format!(r#"{{"ticket":"{TICKET}","cols":null,"rows":30}}"#)).unwrap();
    assert_eq!(hello.size, Size { cols: 80, rows: 30 });
}

#[test]
fn hello_accepts_the_range_limits_and_ignores_unknown_fields() {
    let hello = parse_hello(&format!(
        r#"{{"ticket":"{TICKET}","cols":2,"rows":1,"theme":"dark","x":[1,{{}}]}}"#
    ))
    .unwrap();
    assert_eq!(hello.size, Size { cols: 2, rows: 1 });
    let hello = parse_hello(&format!(r#"{{"ticket":"{TICKET}","cols":500,"rows":300}}"#)).unwrap();
    assert_eq!(
        hello.size,
        Size {
            cols: 500,
            rows: 300
        }
    );
}

#[test]
fn hello_accepts_a_ticket_of_2048_bytes() {
    let ticket = "t".repeat(2048);
    let hello = parse_hello(&format!(r#"{{"ticket":"{ticket}"}}"#)).unwrap();
    assert_eq!(hello.ticket.len(), 2048);
}

#[test]
fn hello_debug_redacts_the_ticket() {
    let hello = parse_hello(&format!(r#"{{"ticket":"{TICKET}"}}"#)).unwrap();
    let debug = format!("{hello:?}");
    assert!(!debug.contains(TICKET), "{debug}");
    assert!(debug.contains("redacted"), "{debug}");
}

#[test]
fn hello_refuses_oversized() {
    let text = format!(
        r#"{{"ticket":"{TICKET}","pad":"{}"}}"#,
        "x".repeat(MAX_HELLO)
    );
    let err = hello_err(&text);
    assert!(matches!(err, FrameError::TooLarge { max: MAX_HELLO, .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "the console's first message is {} bytes; at most 4096",
            text.len()
        )
    );
}

#[test]
fn hello_refuses_non_json_and_non_objects() {
    for text in [
        "",
        "ticket",
        "{",
        "[]",
        "null",
        "42",
        r#""tkt""#,
        r#"[{"ticket":"x"}]"#,
    ] {
        let err = hello_err(text);
        assert_eq!(err, FrameError::HelloNotJson, "{text:?}");
        assert_eq!(
            err.to_string(),
            "the console's first message must be JSON with a ticket"
        );
    }
}

#[test]
fn hello_refuses_missing_empty_or_odd_tickets() {
    assert_eq!(hello_err(r#"{"cols":80}"#), FrameError::MissingTicket);
    assert_eq!(hello_err(r#"{"ticket":null}"#), FrameError::MissingTicket);
    assert_eq!(hello_err(r#"{"ticket":""}"#), FrameError::EmptyTicket);
    assert_eq!(hello_err(r#"{"ticket":42}"#), FrameError::TicketNotString);
    assert_eq!(
        hello_err(r#"{"ticket":["a"]}"#),
        FrameError::TicketNotString
    );
}

#[test]
fn hello_refuses_a_ticket_over_2048_bytes_without_echoing_it() {
    let ticket = format!("{TICKET}{}", "t".repeat(2049 - TICKET.len()));
    let err = hello_err(&format!(r#"{{"ticket":"{ticket}"}}"#));
    assert_eq!(err, FrameError::TicketTooLong(2049));
    assert_eq!(
        err.to_string(),
        "the console's ticket is 2049 bytes; at most 2048"
    );
}

#[test]
fn hello_refuses_sizes_out_of_range() {
    let cases = [
        (r#""cols":0"#, "cols 0 is outside 2..500"),
        (r#""cols":1"#, "cols 1 is outside 2..500"),
        (r#""cols":501"#, "cols 501 is outside 2..500"),
        (r#""cols":-1"#, "cols -1 is outside 2..500"),
        (r#""cols":70000"#, "cols 70000 is outside 2..500"),
        (
            r#""cols":18446744073709551615"#,
            "cols 18446744073709551615 is outside 2..500",
        ),
        (r#""rows":0"#, "rows 0 is outside 1..300"),
        (r#""rows":301"#, "rows 301 is outside 1..300"),
    ];
    for (field, message) in cases {
        let err = hello_err(&format!(r#"{{"ticket":"{TICKET}",{field}}}"#));
        assert!(matches!(err, FrameError::OutOfRange { .. }), "{field}");
        assert_eq!(err.to_string(), message);
    }
}

#[test]
fn hello_refuses_sizes_that_are_not_integers() {
    let cases = [
        (r#""cols":80.5"#, "cols must be a whole number, not 80.5"),
        (r#""cols":80.0"#, "cols must be a whole number, not 80.0"),
        (
            r#""cols":"80""#,
            "cols must be a whole number, not a string",
        ),
        (
            r#""rows":true"#,
            "rows must be a whole number, not a boolean",
        ),
        (
            r#""rows":[24]"#,
            "rows must be a whole number, not an array",
        ),
        (r#""rows":{}"#, "rows must be a whole number, not an object"),
    ];
    for (field, message) in cases {
        let err = hello_err(&format!(r#"{{"ticket":"{TICKET}",{field}}}"#));
        assert!(matches!(err, FrameError::NotInteger { .. }), "{field}");
        assert_eq!(err.to_string(), message);
    }
}

#[test]
fn truncated_hellos_never_panic_and_never_echo_the_ticket() {
    let text = format!(r#"{{"ticket":"{TICKET}","cols":132,"rows":43,"x":"é\u00ff"}}"#);
    for end in 0..text.len() {
        // Also cut inside multi-byte characters (as lossy text, like a torn frame would be).
        let part = String::from_utf8_lossy(&text.as_bytes()[..end]);
        if let Err(err) = parse_hello(&part) {
            assert!(!err.to_string().contains(TICKET));
        }
        let _ = parse_control(&part);
    }
    // Every strict prefix is incomplete JSON.
    for end in 0..text.len() {
        if text.is_char_boundary(end) {
            assert!(parse_hello(&text[..end]).is_err(), "{}", &text[..end]);
        }
    }
    assert!(parse_hello(&text).is_ok());
}

#[test]
fn deeply_nested_json_is_refused_not_a_stack_overflow() {
    let text = format!("{}{}", "[".repeat(3000), "]".repeat(3000));
    assert_eq!(
        parse_hello(&text[..MAX_HELLO]),
        Err(FrameError::HelloNotJson)
    );
    assert_eq!(
        parse_control(&text[..MAX_CONTROL]),
        Err(FrameError::ControlNotJson)
    );
}

#[test]
fn control_messages() {
    assert_eq!(
        parse_control(r#"{"type":"resize","cols":100,"rows":40}"#),
        Ok(Control::Resize(Size {
            cols: 100,
            rows: 40
        }))
    );
    assert_eq!(parse_control(r#"{"type":"pause"}"#), Ok(Control::Pause));
    assert_eq!(
        parse_control(r#"{"type":"resume","extra":1}"#),
        Ok(Control::Resume)
    );
}

#[test]
fn control_refuses_oversized() {
    let text = format!(r#"{{"type":"pause","pad":"{}"}}"#, "x".repeat(5000 - 25));
    assert_eq!(text.len(), 5000);
    let err = parse_control(&text).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the control message is 5000 bytes; at most 1024"
    );
}

#[test]
fn control_refuses_non_objects_and_missing_types() {
    for text in ["", "pause", "[]", r#""pause""#, "{", r#"{"type":7}"#] {
        assert_eq!(
            parse_control(text),
            Err(FrameError::ControlNotJson),
            "{text:?}"
        );
    }
    assert_eq!(parse_control("{}"), Err(FrameError::MissingType));
    assert_eq!(
        parse_control(r#"{"type":null}"#),
        Err(FrameError::MissingType)
    );
}

#[test]
fn control_refuses_an_unknown_type_by_name() {
    let err = parse_control(r#"{"type":"reboot"}"#).unwrap_err();
    assert_eq!(err, FrameError::UnknownType("reboot".into()));
    assert_eq!(err.to_string(), r#"unknown control message type "reboot""#);
    // A long name is cut, and control characters are escaped.
    let err = parse_control(&format!(r#"{{"type":"a\n{}"}}"#, "b".repeat(500))).unwrap_err();
    let message = err.to_string();
    assert!(message.len() < 100, "{message}");
    assert!(message.contains(r"a\n"), "{message}");
}

#[test]
fn resize_needs_both_dimensions_in_range() {
    assert_eq!(
        parse_control(r#"{"type":"resize","rows":40}"#)
            .unwrap_err()
            .to_string(),
        "the resize message has no cols"
    );
    assert_eq!(
        parse_control(r#"{"type":"resize","cols":40}"#)
            .unwrap_err()
            .to_string(),
        "the resize message has no rows"
    );
    assert_eq!(
        parse_control(r#"{"type":"resize","cols":0,"rows":40}"#)
            .unwrap_err()
            .to_string(),
        "cols 0 is outside 2..500"
    );
    assert_eq!(
        parse_control(r#"{"type":"resize","cols":80,"rows":1000}"#)
            .unwrap_err()
            .to_string(),
        "rows 1000 is outside 1..300"
    );
    assert!(matches!(
        parse_control(r#"{"type":"resize","cols":80,"rows":2.5}"#),
        Err(FrameError::NotInteger { field: "rows", .. })
    ));
}

#[test]
fn server_messages_serialize_with_a_type_tag() {
    let json = |m: ServerMessage| serde_json::from_str::<Value>(&m.to_json()).unwrap();
    assert_eq!(
        json(ServerMessage::Ready {
            protocol: "vnc".into(),
            session: "s-1".into(),
            endpoint: "Panel".into(),
        }),
        serde_json::json!({"type":"ready","protocol":"vnc","session":"s-1","endpoint":"Panel"})
    );
    assert_eq!(
        json(ServerMessage::Error {
            code: "VNC_AUTH_FAILED".into(),
            message: "wrong \"password\"".into(),
        }),
        serde_json::json!({"type":"error","code":"VNC_AUTH_FAILED","message":"wrong \"password\""})
    );
    assert_eq!(
        json(ServerMessage::HostKey {
            code: "HOST_KEY_MISMATCH".into(),
            fingerprint: "SHA256:new".into(),
            key: "ssh-ed25519 AAAA".into(),
            expected: Some("SHA256:old".into()),
        }),
        serde_json::json!({"type":"hostKey","code":"HOST_KEY_MISMATCH","fingerprint":"SHA256:new",
            "key":"ssh-ed25519 AAAA","expected":"SHA256:old"})
    );
    assert_eq!(
        json(ServerMessage::HostKey {
            code: "HOST_KEY_UNKNOWN".into(),
            fingerprint: "SHA256:new".into(),
            key: "k".into(),
            expected: None,
        }),
        serde_json::json!({"type":"hostKey","code":"HOST_KEY_UNKNOWN","fingerprint":"SHA256:new",
            "key":"k","expected":null})
    );
    assert_eq!(
        ServerMessage::Exit { status: 0 }.to_json(),
        r#"{"type":"exit","status":0}"#
    );
    assert_eq!(
        ServerMessage::Closed {
            reason: "idle".into()
        }
        .to_json(),
        r#"{"type":"closed","reason":"idle"}"#
    );
}

#[test]
fn subprotocol_name() {
    assert_eq!(SUBPROTOCOL, "thingport-console.v1");
}
