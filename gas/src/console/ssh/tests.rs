//! [`connect`] against an in-process russh server over `tokio::io::duplex`: a shell that echoes
//! input, reports the PTY and every window change as text, and exits with status 3 on `exit\r`.

use super::shell::ShellReader;
use super::*;

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::server::{self, Auth, Msg, Response, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Test-only keys made with `ssh-keygen -t ed25519` (the encrypted one with `-a 2 -N 'correct
/// horse'` so that bcrypt stays fast). They guard nothing.
const PLAIN_OPENSSH: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACAd/RCISGefuJMH/A8KtxzIQSnjRJQeRGX2rN97d3xHaQAAAJBBwVPCQcFT
wgAAAAtzc2gtZWQyNTUxOQAAACAd/RCISGefuJMH/A8KtxzIQSnjRJQeRGX2rN97d3xHaQ
AAAEBaMV9P1bdpj0tYNvN/pOUVjv4/OgPDElmdrQf1ZRxjRR39EIhIZ5+4kwf8Dwq3HMhB
KeNElB5EZfas33t3fEdpAAAACnBsYWluLXRlc3QBAgM=
-----END OPENSSH PRIVATE KEY-----
";
const PLAIN_PUB: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB39EIhIZ5+4kwf8Dwq3HMhBKeNElB5EZfas33t3fEdp plain-test";
/// What `ssh-keygen -lf` prints for [`PLAIN_PUB`].
const PLAIN_FINGERPRINT: &str = "SHA256:zfw09JYAtnzH061n3mEslwVm6Op5zQdtK5sP7fd2yXk";

const ENCRYPTED_OPENSSH: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABCnAE0adP
O3du528wFjUcfWAAAAAgAAAAEAAAAzAAAAC3NzaC1lZDI1NTE5AAAAICReKVK4mpnQqT9Q
BbtILh7gHQt/0oyVrm0JZzsBH/6uAAAAkAN7A6kZ9YR7mUteCoJ9SjJF9LIyB+FDiiB3LV
G9YYhRU7HBQpP0UW/aoEcCAnQvAa4uKqDepg2jLX9lRVg51adCQQ1IBNEOMHuP0AA6Gv3J
gloMCrinohtRNac8LNyUbTH3LuaLvx+k7oSNDQ35vaghmxC0YlidrCvU5s/5PuIrdiMi7g
CLarZxVNlRwsd+qQ==
-----END OPENSSH PRIVATE KEY-----
";
const ENCRYPTED_PUB: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICReKVK4mpnQqT9QBbtILh7gHQt/0oyVrm0JZzsBH/6u enc-test";
const PASSPHRASE: &str = "correct horse";

/// `openssl ecparam -name prime256v1 -genkey -noout` (SEC1).
const EC_SEC1: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIGRSydb6TQrqrk2nJwe/HlHzt9jbvJCFJct4BVaEXwdmoAoGCCqGSM49
AwEHoUQDQgAE5jdgOQjLsvNABB+s/GGD8wPK2Yf8qYYgh3kg+Gw8sJM/hbXFY0uM
FcuhSOD6aeQzQ5mIyTTJxhb8MlD0SHW33g==
-----END EC PRIVATE KEY-----
";

const HOST_SEED: [u8; 32] = [7; 32];
const OTHER_SEED: [u8; 32] = [8; 32];
const PKCS8_SEED: [u8; 32] = [9; 32];

fn ed25519(seed: [u8; 32]) -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&seed))
}

fn openssh_public(key: &PrivateKey) -> String {
    key.public_key().to_openssh().unwrap()
}

struct TestServer {
    allowed_keys: Vec<PublicKey>,
    keyboard_interactive_only: bool,
    /// When set, the shell floods [`FLOOD`] bytes and counts here what it got sent.
    flood: Option<Arc<AtomicUsize>>,
    channel: Option<Channel<Msg>>,
}

impl TestServer {
    fn new() -> TestServer {
        TestServer {
            allowed_keys: [PLAIN_PUB, ENCRYPTED_PUB]
                .iter()
                .map(|k| PublicKey::from_openssh(k).unwrap())
                .collect(),
            keyboard_interactive_only: false,
            flood: None,
            channel: None,
        }
    }
}

impl server::Handler for TestServer {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(if user == "op" && password == "right" {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let known = self
            .allowed_keys
            .iter()
            .any(|k| k.key_data() == key.public_key.key_data());
        Ok(if user == "op" && known {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        Ok(match response {
            None => Auth::Partial {
                name: "".into(),
                instructions: "".into(),
                prompts: vec![("Password: ".into(), false)].into(),
            },
            Some(mut answers) => {
                let right = answers.next().is_some_and(|a| &a[..] == b"right");
                if user == "op" && right && answers.next().is_none() {
                    Auth::Accept
                } else {
                    Auth::reject()
                }
            }
        })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channel = Some(channel);
        reply.accept().await;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        cols: u32,
        rows: u32,
        _: u32,
        _: u32,
        _: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.data(
            channel,
            format!("pty {cols}x{rows} {term}\r\n").into_bytes(),
        )?;
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let (Some(sent), Some(out)) = (self.flood.clone(), self.channel.take()) {
            tokio::spawn(async move {
                let chunk = vec![b'x'; 32 * 1024];
                while sent.load(Ordering::SeqCst) < FLOOD {
                    // Waits for the client's SSH window, as any server does.
                    if out.data_bytes(chunk.clone()).await.is_err() {
                        return;
                    }
                    sent.fetch_add(chunk.len(), Ordering::SeqCst);
                }
            });
        }
        session.channel_success(channel)
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        cols: u32,
        rows: u32,
        _: u32,
        _: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.data(channel, format!("size {cols}x{rows}\r\n").into_bytes())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if data == b"exit\r" {
            session.exit_status_request(channel, 3)?;
            session.eof(channel)?;
            return session.close(channel);
        }
        session.data(channel, data.to_vec())
    }
}

/// Starts the test server on one end of a duplex pipe and returns the other end.
fn serve(server: TestServer) -> tokio::io::DuplexStream {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let methods: &[MethodKind] = if server.keyboard_interactive_only {
        &[MethodKind::KeyboardInteractive]
    } else {
        &[MethodKind::PublicKey, MethodKind::Password]
    };
    let config = Arc::new(server::Config {
        keys: vec![ed25519(HOST_SEED)],
        methods: MethodSet::from(methods),
        auth_rejection_time: Duration::ZERO,
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: None,
        ..Default::default()
    });
    tokio::spawn(async move {
        if let Ok(session) = server::run_stream(config, server_io, server).await {
            let _ = session.await;
        }
    });
    client_io
}

fn creds() -> Credentials {
    Credentials {
        username: "op".into(),
        password: None,
        private_key: None,
        passphrase: None,
        host_key: Some(openssh_public(&ed25519(HOST_SEED))),
    }
}

fn with_password(password: &str) -> Credentials {
    Credentials {
        password: Some(Zeroizing::new(password.into())),
        ..creds()
    }
}

const SIZE: Size = Size { cols: 80, rows: 24 };

async fn open(creds: &Credentials) -> Result<Shell, SshError> {
    tokio::time::timeout(
        Duration::from_secs(5),
        connect(serve(TestServer::new()), creds, SIZE),
    )
    .await
    .expect("connect timed out")
}

/// Reads output until it contains `needle`; returns everything read.
async fn read_until(reader: &mut ShellReader, needle: &str) -> String {
    let mut seen = String::new();
    let read = async {
        while !seen.contains(needle) {
            match reader.next().await {
                Some(Output::Data(data)) => seen.push_str(&String::from_utf8_lossy(&data)),
                other => panic!("expected output, got {other:?} after {seen:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} in the output"));
    seen
}

#[tokio::test]
async fn password_login_gives_a_pty_shell_that_echoes() {
    let mut shell = open(&with_password("right")).await.unwrap();
    read_until(&mut shell.reader, "pty 80x24 xterm-256color\r\n").await;
    shell.write(b"hello").await.unwrap();
    read_until(&mut shell.reader, "hello").await;
    shell.close().await;
}

#[tokio::test]
async fn wrong_password_is_refused_naming_the_user_and_methods() {
    let err = open(&with_password("wrong")).await.err().unwrap();
    assert_eq!(err.code(), "SSH_AUTH_FAILED");
    let message = err.to_string();
    assert!(message.contains("'op'"), "{message}");
    assert!(
        message.contains("it accepts: publickey, password;"),
        "{message}"
    );
    assert!(
        message.contains("tried with the stored credentials: password"),
        "{message}"
    );
}

#[tokio::test]
async fn no_stored_credential_is_refused_before_connecting() {
    let err = connect(tokio::io::duplex(16).0, &creds(), SIZE)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), "SSH_AUTH_FAILED");
    assert!(err
        .to_string()
        .contains("no SSH password or private key is stored"));
}

#[tokio::test]
async fn keyboard_interactive_gets_the_password() {
    let server = TestServer {
        keyboard_interactive_only: true,
        ..TestServer::new()
    };
    let mut shell = connect(serve(server), &with_password("right"), SIZE)
        .await
        .unwrap();
    shell.write(b"ki").await.unwrap();
    read_until(&mut shell.reader, "ki").await;

    let server = TestServer {
        keyboard_interactive_only: true,
        ..TestServer::new()
    };
    let err = connect(serve(server), &with_password("wrong"), SIZE)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), "SSH_AUTH_FAILED");
    assert!(err.to_string().contains("keyboard-interactive"), "{err}");
}

fn with_key(pem: &str, passphrase: Option<&str>) -> Credentials {
    Credentials {
        private_key: Some(Zeroizing::new(pem.into())),
        passphrase: passphrase.map(|p| Zeroizing::new(p.into())),
        ..creds()
    }
}

#[tokio::test]
async fn openssh_ed25519_key_logs_in() {
    let mut shell = open(&with_key(PLAIN_OPENSSH, None)).await.unwrap();
    shell.write(b"key").await.unwrap();
    read_until(&mut shell.reader, "key").await;
}

#[tokio::test]
async fn encrypted_openssh_key_logs_in_with_its_passphrase() {
    let mut shell = open(&with_key(ENCRYPTED_OPENSSH, Some(PASSPHRASE)))
        .await
        .unwrap();
    shell.write(b"enc").await.unwrap();
    read_until(&mut shell.reader, "enc").await;
}

#[tokio::test]
async fn encrypted_pkcs8_key_logs_in_with_its_passphrase() {
    let key = russh::keys::decode_secret_key(PLAIN_OPENSSH, None).unwrap();
    let mut pem = Vec::new();
    russh::keys::encode_pkcs8_pem_encrypted(&key, PASSPHRASE.as_bytes(), 16, &mut pem).unwrap();
    let pem = String::from_utf8(pem).unwrap();
    assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    let mut shell = open(&with_key(&pem, Some(PASSPHRASE))).await.unwrap();
    shell.write(b"p8").await.unwrap();
    read_until(&mut shell.reader, "p8").await;

    let err = open(&with_key(&pem, Some("wrong"))).await.err().unwrap();
    assert_eq!(err.code(), "SSH_BAD_PRIVATE_KEY", "{err}");
}

#[tokio::test]
async fn wrong_or_missing_passphrase_is_a_bad_private_key_without_key_material() {
    for passphrase in [Some("wrong"), None] {
        let err = open(&with_key(ENCRYPTED_OPENSSH, passphrase))
            .await
            .err()
            .unwrap();
        assert_eq!(err.code(), "SSH_BAD_PRIVATE_KEY", "{err}");
        let message = err.to_string();
        for line in ENCRYPTED_OPENSSH.lines().skip(1).take(6) {
            assert!(!message.contains(&line[..16]), "{message}");
        }
        if passphrase.is_none() {
            assert!(message.contains("no passphrase is stored"), "{message}");
        } else {
            assert!(message.contains("passphrase is wrong"), "{message}");
        }
    }
    let err = open(&with_key("not a key", None)).await.err().unwrap();
    assert_eq!(err.code(), "SSH_BAD_PRIVATE_KEY");
}

#[tokio::test]
async fn a_changed_host_key_is_refused_with_both_fingerprints() {
    let pinned = openssh_public(&ed25519(OTHER_SEED));
    let creds = Credentials {
        host_key: Some(format!("{pinned} old-device")),
        ..with_password("right")
    };
    let server_key = openssh_public(&ed25519(HOST_SEED));
    match open(&creds).await.err().unwrap() {
        err @ SshError::HostKeyMismatch { .. } => {
            assert_eq!(err.code(), "SSH_HOST_KEY_MISMATCH");
            let SshError::HostKeyMismatch {
                presented,
                expected_fingerprint,
            } = &err
            else {
                unreachable!()
            };
            assert_eq!(presented.fingerprint, fingerprint_of(&server_key).unwrap());
            assert_eq!(presented.openssh, server_key);
            assert_eq!(expected_fingerprint, &fingerprint_of(&pinned).unwrap());
            assert!(err.to_string().contains(&presented.fingerprint), "{err}");
        }
        other => panic!("expected a host key mismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unknown_host_key_is_refused_with_what_to_accept() {
    let creds = Credentials {
        host_key: None,
        ..with_password("right")
    };
    match open(&creds).await.err().unwrap() {
        SshError::HostKeyUnknown { presented } => {
            let server_key = openssh_public(&ed25519(HOST_SEED));
            assert_eq!(presented.openssh, server_key);
            assert_eq!(presented.fingerprint, fingerprint_of(&server_key).unwrap());
            // What the operator accepts is what a later connection pins.
            let creds = Credentials {
                host_key: Some(presented.openssh),
                ..with_password("right")
            };
            open(&creds).await.unwrap();
        }
        other => panic!("expected an unknown host key, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreadable_pinned_key_is_refused_before_connecting() {
    let creds = Credentials {
        host_key: Some("ssh-ed25519 not-base64!".into()),
        ..with_password("right")
    };
    let err = connect(tokio::io::duplex(16).0, &creds, SIZE)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), "SSH_BAD_HOST_KEY");
    assert_eq!(fingerprint_of("").unwrap_err().code(), "SSH_BAD_HOST_KEY");
}

#[test]
fn fingerprints_match_ssh_keygen() {
    assert_eq!(fingerprint_of(PLAIN_PUB).unwrap(), PLAIN_FINGERPRINT);
    assert_eq!(
        fingerprint_of(&format!("  {PLAIN_PUB}\n")).unwrap(),
        PLAIN_FINGERPRINT
    );
}

#[tokio::test]
async fn resize_reaches_the_server_from_a_split_shell() {
    let shell = open(&with_password("right")).await.unwrap();
    let (mut reader, mut writer) = shell.split();
    read_until(&mut reader, "pty 80x24").await;
    writer
        .resize(Size {
            cols: 120,
            rows: 40,
        })
        .await
        .unwrap();
    read_until(&mut reader, "size 120x40\r\n").await;
    writer.close().await;
}

#[tokio::test]
async fn the_exit_status_is_delivered_then_the_end() {
    let mut shell = open(&with_password("right")).await.unwrap();
    read_until(&mut shell.reader, "pty").await;
    shell.write(b"exit\r").await.unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        let mut rest = Vec::new();
        while let Some(out) = shell.next().await {
            rest.push(out);
        }
        rest
    })
    .await
    .unwrap();
    assert_eq!(rest.last(), Some(&Output::Exit(3)), "{rest:?}");
    assert_eq!(shell.next().await, None);
}

#[test]
fn credentials_debug_redacts_secrets() {
    let creds = Credentials {
        passphrase: Some(Zeroizing::new("s3cret-pass".into())),
        ..with_key(PLAIN_OPENSSH, None)
    };
    let creds = Credentials {
        password: Some(Zeroizing::new("s3cret-pw".into())),
        ..creds
    };
    let debug = format!("{creds:?}");
    assert!(
        !debug.contains("s3cret") && !debug.contains("OPENSSH"),
        "{debug}"
    );
}

/// A PEM block of `der`.
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The platform may generate keys with `ring::signature::Ed25519KeyPair::generate_pkcs8`, which
/// writes PKCS#8 v2 (the seed and the public key). `ring` is no direct dependency of this crate,
/// so the test writes the layouts by hand from a fixed seed: v1 (the seed only), v2 as ring 0.17
/// writes it (RFC 5958: the public key as `[1] IMPLICIT BIT STRING`, tag `81`), and v2 with the
/// constructed `[1]` tag (`a1 23 03 21 00`) that early PKCS#8 v2 writers, older ring among them,
/// used. russh 0.65.4 reads the first two and refuses the third (its DER parser rejects the
/// tag); ring 0.17 itself only accepts that legacy tag on request.
#[test]
fn ed25519_pkcs8_as_ring_writes_it_decodes() {
    let expected = ed25519(PKCS8_SEED);
    let public = Ed25519Keypair::from_seed(&PKCS8_SEED).public.0;
    let der = |head: &[u8], tail: &[u8]| {
        let mut der = head.to_vec();
        der.extend_from_slice(&PKCS8_SEED);
        if !tail.is_empty() {
            der.extend_from_slice(tail);
            der.extend_from_slice(&public);
        }
        pem("PRIVATE KEY", &der)
    };
    let algorithm = [
        0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ];
    let v1 = der(
        &[&[0x30, 0x2e, 0x02, 0x01, 0x00][..], &algorithm].concat(),
        &[],
    );
    let v2 = der(
        &[&[0x30, 0x51, 0x02, 0x01, 0x01][..], &algorithm].concat(),
        &[0x81, 0x21, 0x00],
    );
    let v2_legacy = der(
        &[&[0x30, 0x53, 0x02, 0x01, 0x01][..], &algorithm].concat(),
        &[0xa1, 0x23, 0x03, 0x21, 0x00],
    );

    for (version, pem) in [("v1", &v1), ("v2", &v2)] {
        let key = decode_private_key(pem, None).unwrap_or_else(|e| panic!("PKCS#8 {version}: {e}"));
        assert_eq!(
            key.public_key().key_data(),
            expected.public_key().key_data()
        );
        // A stored passphrase does not get in the way of an unencrypted key.
        decode_private_key(pem, Some("unused")).unwrap();
    }
    let err = decode_private_key(&v2_legacy, None).unwrap_err();
    assert_eq!(err.code(), "SSH_BAD_PRIVATE_KEY", "{err}");
}

#[test]
fn sec1_ecdsa_and_openssh_round_trip_keys_decode() {
    let ec = decode_private_key(EC_SEC1, None).unwrap();
    assert_eq!(ec.algorithm().as_str(), "ecdsa-sha2-nistp256");
    let openssh = ed25519(PKCS8_SEED).to_openssh(LineEnding::LF).unwrap();
    decode_private_key(&openssh, None).unwrap();
}

/// What the flooding shell sends: `cat` of a big file.
const FLOOD: usize = 8 * 1024 * 1024;

/// A reader that stops reading holds the server back: the server gets ahead of it by no more
/// than the SSH window (2 MiB, which russh grants as data arrives), the channel buffer
/// ([`CHANNEL_BUFFER`] packets of at most 32 KiB) and the pipe, instead of the whole output.
#[tokio::test]
async fn a_reader_that_stops_reading_holds_the_server_back() {
    let sent = Arc::new(AtomicUsize::new(0));
    let server = TestServer {
        flood: Some(sent.clone()),
        ..TestServer::new()
    };
    let shell = connect(serve(server), &with_password("right"), SIZE)
        .await
        .unwrap();
    let (mut reader, _writer) = shell.split();

    // Let every task run until nothing moves any more (no sleeping: on this single-threaded
    // runtime a yield runs whatever is ready).
    let mut last = usize::MAX;
    let mut still = 0;
    while still < 200 {
        tokio::task::yield_now().await;
        let now = sent.load(Ordering::SeqCst);
        if now == last {
            still += 1;
        } else {
            (last, still) = (now, 0);
        }
    }
    // The window, [`CHANNEL_BUFFER`] (16) packets and two more in flight, the pipe. Written out
    // rather than computed so that a larger buffer fails here.
    let bound = 2 * 1024 * 1024 + 18 * 32 * 1024 + 64 * 1024;
    assert!(
        last <= bound,
        "the server got {last} bytes ahead (bound {bound})"
    );
    assert!(last > 0, "the server sent nothing");

    // Reading again lets the rest through.
    let mut received = 0;
    while received < FLOOD {
        match reader.next().await {
            Some(Output::Data(data)) => received += data.len(),
            other => panic!("expected output, got {other:?} after {received} bytes"),
        }
    }
    assert_eq!(sent.load(Ordering::SeqCst), FLOOD);
}
