use super::*;
use tokio::io::{duplex, DuplexStream};

mod downstream;

/// The challenge 0x00, 0x01, …, 0x0f.
const CHALLENGE: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// The VNC Authentication response to [`CHALLENGE`] for the password "password", computed outside
/// Rust, twice, with the same result:
///
/// ```text
/// KEY=$(python3 -c 'print(bytes(int(f"{b:08b}"[::-1], 2) for b in b"password").hex())')
/// # KEY = 0e86ceceeef64e26 (each byte of "password" with its bits reversed)
/// printf 000102030405060708090a0b0c0d0e0f | xxd -r -p \
///   | openssl enc -des-ecb -nopad -K $KEY -provider legacy -provider default | xxd -p
/// ```
///
/// and with Python's `cryptography` (TripleDES with the key repeated three times is single DES)
/// in ECB mode over the same 16 bytes. Both print b866924125c8eebb9debc1db61c538e2.
const RESPONSE: [u8; 16] = [
    0xb8, 0x66, 0x92, 0x41, 0x25, 0xc8, 0xee, 0xbb, 0x9d, 0xeb, 0xc1, 0xdb, 0x61, 0xc5, 0x38, 0xe2,
];

/// One step of a scripted peer.
#[derive(Debug, Clone)]
enum Step {
    /// Send these bytes.
    Send(Vec<u8>),
    /// Read exactly these bytes (the test fails on anything else).
    Expect(Vec<u8>),
}
use Step::{Expect, Send};

fn send(bytes: &[u8]) -> Step {
    Send(bytes.to_vec())
}
fn expect(bytes: &[u8]) -> Step {
    Expect(bytes.to_vec())
}
fn u32be(n: u32) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}
fn reason(text: &str) -> Vec<u8> {
    let mut bytes = u32be(text.len() as u32);
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

/// Plays `steps` on `peer`, sending at most `budget` bytes in all (then hanging up, to simulate
/// a peer closing early). Returns an error describing the first unmet expectation.
async fn play(mut peer: DuplexStream, steps: Vec<Step>, budget: usize) -> Result<(), String> {
    let mut left = budget;
    for step in steps {
        match step {
            Send(bytes) => {
                let n = bytes.len().min(left);
                peer.write_all(&bytes[..n])
                    .await
                    .map_err(|e| e.to_string())?;
                left -= n;
                if n < bytes.len() {
                    return Ok(());
                }
            }
            Expect(bytes) => {
                let mut got = vec![0u8; bytes.len()];
                peer.read_exact(&mut got)
                    .await
                    .map_err(|e| format!("expected {bytes:?}: {e}"))?;
                if got != bytes {
                    return Err(format!("expected {bytes:?}, got {got:?}"));
                }
            }
        }
    }
    Ok(())
}

/// Runs [`authenticate_upstream`] against a server playing `steps`. On success the client then
/// sends a 1-byte ClientInit and reads 4 bytes of "ServerInit", so a script that ends with
/// `expect(&[1]), send(b"INIT")` proves the handshake consumed exactly its own bytes.
async fn upstream(
    steps: Vec<Step>,
    password: Option<&[u8]>,
    budget: usize,
) -> (Result<Version, RfbError>, Result<(), String>) {
    let (mut client, server) = duplex(64 * 1024);
    let server = tokio::spawn(play(server, steps, budget));
    let result = authenticate_upstream(&mut client, password).await;
    if result.is_ok() {
        client.write_all(&[1]).await.unwrap();
        let mut init = [0u8; 4];
        client.read_exact(&mut init).await.unwrap();
        assert_eq!(&init, b"INIT");
    }
    drop(client);
    (result, server.await.unwrap())
}

/// A script that must succeed, returning the version.
async fn upstream_ok(mut steps: Vec<Step>, password: Option<&[u8]>) -> Version {
    steps.extend([expect(&[1]), send(b"INIT")]);
    let (result, script) = upstream(steps, password, usize::MAX).await;
    script.unwrap();
    result.unwrap()
}

/// A script that must fail, returning the error (the script itself may be cut short).
async fn upstream_err(steps: Vec<Step>, password: Option<&[u8]>) -> RfbError {
    upstream(steps, password, usize::MAX).await.0.unwrap_err()
}

/// Every cut of the server's bytes short of the whole makes the handshake fail with VNC_IO.
async fn fails_on_every_early_eof(steps: Vec<Step>, password: Option<&[u8]>) {
    let total: usize = steps
        .iter()
        .map(|s| match s {
            Send(bytes) => bytes.len(),
            Expect(_) => 0,
        })
        .sum();
    for budget in 0..total {
        let (result, _) = upstream(steps.clone(), password, budget).await;
        match result {
            Err(err) => assert_eq!(err.code(), "VNC_IO", "cut at {budget}: {err}"),
            Ok(v) => panic!("cut at {budget} of {total} bytes succeeded with {v:?}"),
        }
    }
}

fn v3_3_auth() -> Vec<Step> {
    vec![
        send(b"RFB 003.003\n"),
        expect(b"RFB 003.003\n"),
        Send(u32be(2)),
        send(&CHALLENGE),
        expect(&RESPONSE),
        Send(u32be(0)),
    ]
}

fn v3_7_none() -> Vec<Step> {
    vec![
        send(b"RFB 003.007\n"),
        expect(b"RFB 003.007\n"),
        send(&[1, 1]),
        expect(&[1]),
    ]
}

fn v3_8_auth() -> Vec<Step> {
    vec![
        send(b"RFB 003.008\n"),
        expect(b"RFB 003.008\n"),
        send(&[2, 16, 2]),
        expect(&[2]),
        send(&CHALLENGE),
        expect(&RESPONSE),
        Send(u32be(0)),
    ]
}

#[test]
fn des_response_matches_the_known_vector() {
    assert_eq!(vnc_response(b"password", &CHALLENGE), RESPONSE);
    // Only the first 8 bytes of a password count.
    assert_eq!(vnc_response(b"password-and-more", &CHALLENGE), RESPONSE);
    // A shorter password is zero-padded: different, and the same as with explicit zeros.
    assert_ne!(vnc_response(b"pass", &CHALLENGE), RESPONSE);
    assert_eq!(
        vnc_response(b"pass", &CHALLENGE),
        vnc_response(b"pass\0\0\0\0", &CHALLENGE)
    );
}

#[tokio::test]
async fn v3_3_none() {
    let steps = vec![
        send(b"RFB 003.003\n"),
        expect(b"RFB 003.003\n"),
        Send(u32be(1)),
    ];
    assert_eq!(upstream_ok(steps.clone(), None).await, Version::V3_3);
    // A stored password does not matter when the server chose None.
    assert_eq!(
        upstream_ok(steps.clone(), Some(b"password")).await,
        Version::V3_3
    );
    fails_on_every_early_eof(steps, None).await;
}

#[tokio::test]
async fn v3_3_vnc_auth() {
    assert_eq!(
        upstream_ok(v3_3_auth(), Some(b"password")).await,
        Version::V3_3
    );
    fails_on_every_early_eof(v3_3_auth(), Some(b"password")).await;
}

#[tokio::test]
async fn v3_3_wrong_password_has_no_reason() {
    let mut steps = v3_3_auth();
    *steps.last_mut().unwrap() = Send(u32be(1));
    let err = upstream_err(steps, Some(b"password")).await;
    assert!(matches!(err, RfbError::AuthFailed(None)), "{err:?}");
    assert_eq!(err.code(), "VNC_AUTH_FAILED");
    assert_eq!(
        err.to_string(),
        "VNC authentication failed: the VNC server refused the stored password"
    );
}

#[tokio::test]
async fn v3_3_refusal_and_password_required() {
    let refused = vec![
        send(b"RFB 003.003\n"),
        expect(b"RFB 003.003\n"),
        Send(u32be(0)),
        Send(reason("Too many security failures")),
    ];
    let err = upstream_err(refused.clone(), Some(b"password")).await;
    assert_eq!(err.code(), "VNC_REFUSED");
    assert_eq!(
        err.to_string(),
        "the VNC server refused the connection: Too many security failures"
    );
    fails_on_every_early_eof(refused, None).await;

    let err = upstream_err(v3_3_auth(), None).await;
    assert!(matches!(err, RfbError::PasswordRequired), "{err:?}");
    assert_eq!(err.code(), "VNC_PASSWORD_REQUIRED");
}

#[tokio::test]
async fn v3_3_server_choosing_another_type() {
    let steps = |t: u32| {
        vec![
            send(b"RFB 003.003\n"),
            expect(b"RFB 003.003\n"),
            Send(u32be(t)),
        ]
    };
    let err = upstream_err(steps(16), Some(b"password")).await;
    assert!(
        matches!(&err, RfbError::Unsupported(t) if t == &[16]),
        "{err:?}"
    );
    let err = upstream_err(steps(70000), Some(b"password")).await;
    assert_eq!(err.code(), "VNC_PROTOCOL", "{err}");
}

#[tokio::test]
async fn v3_7_none_has_no_security_result() {
    assert_eq!(upstream_ok(v3_7_none(), None).await, Version::V3_7);
    fails_on_every_early_eof(v3_7_none(), None).await;
}

#[tokio::test]
async fn v3_7_vnc_auth_and_wrong_password() {
    let steps = |result: u32| {
        vec![
            send(b"RFB 003.007\n"),
            expect(b"RFB 003.007\n"),
            send(&[1, 2]),
            expect(&[2]),
            send(&CHALLENGE),
            expect(&RESPONSE),
            Send(u32be(result)),
        ]
    };
    assert_eq!(
        upstream_ok(steps(0), Some(b"password")).await,
        Version::V3_7
    );
    fails_on_every_early_eof(steps(0), Some(b"password")).await;
    // No reason follows a failure before 3.8.
    let err = upstream_err(steps(1), Some(b"password")).await;
    assert!(matches!(err, RfbError::AuthFailed(None)), "{err:?}");
}

#[tokio::test]
async fn v3_8_none() {
    let steps = vec![
        send(b"RFB 003.008\n"),
        expect(b"RFB 003.008\n"),
        send(&[1, 1]),
        expect(&[1]),
        Send(u32be(0)),
    ];
    assert_eq!(upstream_ok(steps.clone(), None).await, Version::V3_8);
    fails_on_every_early_eof(steps, None).await;
}

#[tokio::test]
async fn v3_8_none_refused_after_choice() {
    let steps = vec![
        send(b"RFB 003.008\n"),
        expect(b"RFB 003.008\n"),
        send(&[1, 1]),
        expect(&[1]),
        Send(u32be(1)),
        Send(reason("not now")),
    ];
    let err = upstream_err(steps, None).await;
    assert!(
        matches!(&err, RfbError::Refused(r) if r == "not now"),
        "{err:?}"
    );
}

#[tokio::test]
async fn v3_8_vnc_auth() {
    assert_eq!(
        upstream_ok(v3_8_auth(), Some(b"password")).await,
        Version::V3_8
    );
    fails_on_every_early_eof(v3_8_auth(), Some(b"password")).await;
}

#[tokio::test]
async fn v3_8_picks_vnc_auth_only_with_a_password() {
    let offer = |choice: u8| {
        vec![
            send(b"RFB 003.008\n"),
            expect(b"RFB 003.008\n"),
            send(&[3, 1, 16, 2]),
            expect(&[choice]),
        ]
    };
    let mut with_password = offer(2);
    with_password.extend([send(&CHALLENGE), expect(&RESPONSE), Send(u32be(0))]);
    assert_eq!(
        upstream_ok(with_password, Some(b"password")).await,
        Version::V3_8
    );
    let mut without = offer(1);
    without.push(Send(u32be(0)));
    assert_eq!(upstream_ok(without, None).await, Version::V3_8);
}

#[tokio::test]
async fn v3_8_wrong_password_with_reason() {
    let mut steps = v3_8_auth();
    *steps.last_mut().unwrap() = Send(u32be(1));
    steps.push(Send(reason("Authentication failed\r\n\x1b[31m")));
    let err = upstream_err(steps.clone(), Some(b"password")).await;
    assert_eq!(err.code(), "VNC_AUTH_FAILED");
    // The reason is made printable: control characters become spaces, the ends are trimmed.
    assert!(
        matches!(&err, RfbError::AuthFailed(Some(r)) if r == "Authentication failed   [31m"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "VNC authentication failed: the VNC server refused the stored password (Authentication failed   [31m)"
    );
    fails_on_every_early_eof(steps, Some(b"password")).await;
}

#[tokio::test]
async fn only_unsupported_types() {
    let steps = vec![
        send(b"RFB 003.008\n"),
        expect(b"RFB 003.008\n"),
        send(&[2, 19, 30]),
    ];
    let err = upstream_err(steps, Some(b"password")).await;
    assert!(
        matches!(&err, RfbError::Unsupported(t) if t == &[19, 30]),
        "{err:?}"
    );
    assert_eq!(err.code(), "VNC_UNSUPPORTED_SECURITY");
    assert_eq!(
        err.to_string(),
        "the VNC server offers only security types 19 (VeNCrypt), 30 (Apple ARD); Thingport \
         supports None (1) and VNC Authentication (2)"
    );
    assert_eq!(type_list(&[200, 16]), "200, 16 (Tight)");
}

#[tokio::test]
async fn v3_8_refusal_with_reason() {
    let steps = vec![
        send(b"RFB 003.008\n"),
        expect(b"RFB 003.008\n"),
        send(&[0]),
        Send(reason("Connection rejected: blacklisted")),
    ];
    let err = upstream_err(steps.clone(), Some(b"password")).await;
    assert!(
        matches!(&err, RfbError::Refused(r) if r == "Connection rejected: blacklisted"),
        "{err:?}"
    );
    assert_eq!(err.code(), "VNC_REFUSED");
    fails_on_every_early_eof(steps, None).await;
}

#[tokio::test]
async fn v3_8_password_required() {
    let steps = vec![
        send(b"RFB 003.008\n"),
        expect(b"RFB 003.008\n"),
        send(&[1, 2]),
    ];
    let err = upstream_err(steps, None).await;
    assert!(matches!(err, RfbError::PasswordRequired), "{err:?}");
    assert_eq!(
        err.to_string(),
        "the VNC server requires a password and none is stored for this endpoint"
    );
}

#[tokio::test]
async fn reason_lengths_are_bounded() {
    let refusal = |len: u32, body: usize| {
        let mut bytes = u32be(len);
        bytes.extend(vec![b'r'; body]);
        vec![
            send(b"RFB 003.008\n"),
            expect(b"RFB 003.008\n"),
            send(&[0]),
            Send(bytes),
        ]
    };
    // At the limit: accepted.
    let err = upstream_err(refusal(4096, 4096), None).await;
    assert!(
        matches!(&err, RfbError::Refused(r) if r.len() == 4096),
        "{err:?}"
    );
    // Over it (and absurdly over it, with no body sent): refused before reading or allocating.
    for len in [4097, u32::MAX] {
        let err = upstream_err(refusal(len, 0), None).await;
        assert_eq!(err.code(), "VNC_PROTOCOL");
        assert_eq!(
            err.to_string(),
            format!(
                "VNC protocol error: the VNC server announced a {len}-byte reason; at most 4096"
            )
        );
    }
    // The same bound after a failed 3.8 authentication.
    let mut steps = v3_8_auth();
    *steps.last_mut().unwrap() = Send(u32be(1));
    steps.push(Send(u32be(u32::MAX)));
    let err = upstream_err(steps, Some(b"password")).await;
    assert_eq!(err.code(), "VNC_PROTOCOL");
}

#[tokio::test]
async fn empty_reason() {
    let steps = vec![
        send(b"RFB 003.008\n"),
        expect(b"RFB 003.008\n"),
        send(&[0]),
        Send(u32be(0)),
    ];
    let err = upstream_err(steps, None).await;
    assert!(
        matches!(&err, RfbError::Refused(r) if r == "no reason given"),
        "{err:?}"
    );
}

#[tokio::test]
async fn garbage_versions_are_protocol_errors() {
    for version in [
        &b"RFB 003.00a\n"[..],
        b"HTTP/1.1 200",
        b"RFB 003.008\r",
        b"RFB  03.008\n",
        b"rfb 003.008\n",
        b"RFB 002.009\n",
        b"RFB 003.002\n",
        b"SSH-2.0-Open",
        &[0xff; 12],
    ] {
        // The client must not answer anything: the script ends after the version.
        let steps = vec![Send(version.to_vec())];
        let err = upstream_err(steps, None).await;
        assert_eq!(err.code(), "VNC_PROTOCOL", "{version:?}: {err}");
        assert!(
            err.to_string()
                .starts_with("VNC protocol error: the VNC server's version message"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn other_server_versions_map_to_the_nearest() {
    for (announced, answer, version) in [
        (b"RFB 003.889\n", b"RFB 003.008\n", Version::V3_8),
        (b"RFB 004.001\n", b"RFB 003.008\n", Version::V3_8),
        (b"RFB 003.009\n", b"RFB 003.008\n", Version::V3_8),
        (b"RFB 003.006\n", b"RFB 003.003\n", Version::V3_3),
        (b"RFB 003.004\n", b"RFB 003.003\n", Version::V3_3),
    ] {
        let mut steps = vec![send(announced), expect(answer)];
        steps.extend(match version {
            Version::V3_8 => vec![send(&[1, 1]), expect(&[1]), Send(u32be(0))],
            _ => vec![Send(u32be(1))],
        });
        assert_eq!(upstream_ok(steps, None).await, version);
    }
}

#[test]
fn error_codes() {
    let io = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
    for (err, code) in [
        (RfbError::AuthFailed(None), "VNC_AUTH_FAILED"),
        (RfbError::PasswordRequired, "VNC_PASSWORD_REQUIRED"),
        (RfbError::Unsupported(vec![19]), "VNC_UNSUPPORTED_SECURITY"),
        (RfbError::Refused("x".into()), "VNC_REFUSED"),
        (RfbError::Protocol("x".into()), "VNC_PROTOCOL"),
        (RfbError::Io(io), "VNC_IO"),
    ] {
        assert_eq!(err.code(), code);
    }
}
