//! The SSH client of a browser console: the GAS logs in to a device's SSH server over a tunnel
//! stream with credentials the platform stores (the browser never sees them), asks for a PTY and
//! a shell, and hands the WebSocket glue a [`Shell`] to type into and read from.
//!
//! Not here: the WebSocket, the tunnel, trust on first use (an operator accepts a host key
//! fingerprint outside of this module and the platform stores the key; a connection only ever
//! checks against a stored key), and timeouts (the glue bounds [`connect`] and the session).
//!
//! # Backpressure
//!
//! russh 0.65 delivers a channel's incoming data through a bounded `tokio::sync::mpsc` channel of
//! [`CHANNEL_BUFFER`] messages. When it is full, russh's session task *awaits* the send, and
//! while it waits it reads nothing more from the transport stream (for any channel). The SSH
//! window is no help here: russh grants the server more window as data *arrives*, not as it is
//! consumed. So a browser that stops reading bounds what the GAS holds for its console to
//! [`CHANNEL_BUFFER`] packets of at most 32 KiB each (russh's `maximum_packet_size`), plus
//! russh's one packet being decoded; beyond that the server's writes back up into the tunnel
//! stream, whose own flow control stops the device. `cat` of a 100 MiB file to a paused browser
//! therefore leaves memory bounded.
//!
//! The price: while the reading side is not drained, the whole SSH connection is paused, so
//! [`ShellWriter::write`] and [`ShellWriter::resize`] may wait too (and keepalives are not sent).
//! The glue must keep draining [`ShellReader::next`] as fast as the browser takes output.

// The WebSocket glue that uses this module is written separately; until it lands, nothing in
// the crate calls it.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, AuthResult, KeyboardInteractiveAuthResponse};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, MethodKind};
use tokio::io::{AsyncRead, AsyncWrite};
use zeroize::Zeroizing;

use shell::{output_of, Step};
// The glue (not written yet) names these; until then some are unused outside the tests.
pub use shell::{Output, Shell};

/// Messages of the shell channel buffered between russh and the reader before russh stops
/// reading the transport (see the module documentation).
pub const CHANNEL_BUFFER: usize = 16;

/// How often an idle connection sends a keepalive. It keeps NAT and the tunnel warm and detects a
/// dead device (russh closes the connection after 3 unanswered keepalives).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// The most keyboard-interactive rounds we answer: a server that keeps asking is refused rather
/// than looped on forever.
const MAX_KEYBOARD_INTERACTIVE_ROUNDS: usize = 4;

/// What the platform stores to log in to a device. `Debug` shows which secrets are present, never
/// their values.
pub struct Credentials {
    /// The user to log in as.
    pub username: String,
    /// For password (or keyboard-interactive) authentication.
    pub password: Option<Zeroizing<String>>,
    /// A private key: OpenSSH (`BEGIN OPENSSH PRIVATE KEY`) or PEM (PKCS#8 `BEGIN PRIVATE KEY` or
    /// `BEGIN ENCRYPTED PRIVATE KEY`, PKCS#1 `BEGIN RSA PRIVATE KEY`, SEC1 `BEGIN EC PRIVATE
    /// KEY`); RSA, ECDSA or Ed25519. Tried before the password when both are stored.
    pub private_key: Option<Zeroizing<String>>,
    /// The passphrase of an encrypted private key.
    pub passphrase: Option<Zeroizing<String>>,
    /// The device's pinned host key, an OpenSSH public key line (`ssh-ed25519 AAAA... [comment]`);
    /// `None` while no operator has accepted one (every connection is then refused with
    /// [`SshError::HostKeyUnknown`], which carries the key to show the operator).
    pub host_key: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .field("host_key", &self.host_key)
            .finish()
    }
}

/// A terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub cols: u16,
    pub rows: u16,
}

/// A host key as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// `SHA256:` and the unpadded base64 digest, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    /// The key as an OpenSSH public key line without a comment (`ssh-ed25519 AAAA...`), what the
    /// platform stores as [`Credentials::host_key`] once an operator accepts it.
    pub openssh: String,
}

/// Why a console could not be opened or went wrong. [`SshError::code`] is a stable code for the
/// glue and the browser; `Display` is a sentence for an operator.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// No host key is pinned for the device. Retrying does not help until an operator accepts
    /// `presented` (trust on first use) and the platform stores it.
    #[error(
        "the device's SSH host key ({}) is not known to the platform; an operator must check and \
         accept this fingerprint before a console can connect",
        presented.fingerprint
    )]
    HostKeyUnknown { presented: KeyInfo },
    /// The device presented another key than the pinned one: the device was reinstalled or its
    /// key replaced, or someone is in the middle. Not retryable; an operator must decide.
    #[error(
        "the device's SSH host key changed: it presented {} but the platform expects {}; if the \
         device was reinstalled an operator must accept the new key, otherwise someone may be \
         intercepting the connection",
        presented.fingerprint,
        expected_fingerprint
    )]
    HostKeyMismatch {
        presented: KeyInfo,
        expected_fingerprint: String,
    },
    /// The stored host key is not an OpenSSH public key line (the platform's data is wrong).
    #[error("the stored SSH host key of the device cannot be read: {0}")]
    BadHostKey(String),
    /// The stored private key cannot be used (unreadable, encrypted without the right
    /// passphrase). The message never contains key material.
    #[error("the stored SSH private key cannot be used: {0}")]
    BadPrivateKey(String),
    /// The SSH server refused the stored credentials.
    #[error("{0}")]
    AuthFailed(String),
    /// Anything else: the transport, the key exchange, the channel. `context` says which step.
    #[error("the SSH connection to the device failed while {context}")]
    Protocol {
        context: &'static str,
        #[source]
        source: russh::Error,
    },
}

impl SshError {
    /// A stable code for the glue and the browser.
    pub fn code(&self) -> &'static str {
        match self {
            SshError::HostKeyUnknown { .. } => "SSH_HOST_KEY_UNKNOWN",
            SshError::HostKeyMismatch { .. } => "SSH_HOST_KEY_MISMATCH",
            SshError::BadHostKey(_) => "SSH_BAD_HOST_KEY",
            SshError::BadPrivateKey(_) => "SSH_BAD_PRIVATE_KEY",
            SshError::AuthFailed(_) => "SSH_AUTH_FAILED",
            SshError::Protocol { .. } => "SSH_PROTOCOL",
        }
    }

    fn protocol(context: &'static str) -> impl FnOnce(russh::Error) -> SshError {
        move |source| SshError::Protocol { context, source }
    }
}

/// The SHA-256 fingerprint (`SHA256:...`, as `ssh-keygen -lf` prints it) of an OpenSSH public key
/// line, to show an operator which key is stored.
#[cfg(test)]
pub fn fingerprint_of(openssh_public_key: &str) -> Result<String, SshError> {
    Ok(parse_host_key(openssh_public_key)?
        .fingerprint(HashAlg::Sha256)
        .to_string())
}

fn parse_host_key(line: &str) -> Result<PublicKey, SshError> {
    PublicKey::from_openssh(line.trim()).map_err(|e| {
        SshError::BadHostKey(format!(
            "expected an OpenSSH public key line like \"ssh-ed25519 AAAA...\" ({e})"
        ))
    })
}

fn key_info(key: &PublicKey) -> KeyInfo {
    let mut bare = key.clone();
    bare.set_comment("");
    KeyInfo {
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        // Encoding a key that russh just decoded cannot fail; an empty line would only make the
        // operator's "accept" fail to parse, never accept a wrong key.
        openssh: bare.to_openssh().unwrap_or_default(),
    }
}

/// What the host key check decided, kept outside russh's handshake so that [`connect`] can turn
/// russh's generic "unknown key" error into the right [`SshError`].
#[derive(Debug)]
enum Verdict {
    Unknown(KeyInfo),
    Mismatch(KeyInfo),
}

struct Client {
    pinned: Option<PublicKey>,
    verdict: Arc<Mutex<Option<Verdict>>>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // A host certificate is checked by the key it certifies: the server proved it holds that
        // key during the key exchange, and we pin keys, not certificate authorities.
        let presented = server_public_key.public_key();
        let verdict = match &self.pinned {
            Some(pinned) if pinned.key_data() == presented.key_data() => return Ok(true),
            Some(_) => Verdict::Mismatch(key_info(&presented)),
            None => Verdict::Unknown(key_info(&presented)),
        };
        if let Ok(mut slot) = self.verdict.lock() {
            *slot = Some(verdict);
        }
        Ok(false)
    }
}

/// Logs in to the SSH server at the other end of `stream` with `creds` and starts a shell on an
/// `xterm-256color` PTY of `size`.
///
/// The host key is checked against [`Credentials::host_key`] before anything secret is sent.
/// `connect` has no timeout of its own: the glue wraps it in one.
pub async fn connect<S>(stream: S, creds: &Credentials, size: Size) -> Result<Shell, SshError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Everything that can be refused without the device is refused before touching the stream.
    let pinned = creds.host_key.as_deref().map(parse_host_key).transpose()?;
    let key = creds
        .private_key
        .as_deref()
        .map(|pem| decode_private_key(pem, creds.passphrase.as_deref().map(String::as_str)))
        .transpose()?;
    if key.is_none() && creds.password.is_none() {
        return Err(SshError::AuthFailed(format!(
            "no SSH password or private key is stored for user '{}' on this device",
            creds.username
        )));
    }
    let expected_fingerprint = pinned
        .as_ref()
        .map(|k| k.fingerprint(HashAlg::Sha256).to_string());

    let config = client::Config {
        // The platform owns session timeouts.
        inactivity_timeout: None,
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        channel_buffer_size: CHANNEL_BUFFER,
        ..Default::default()
    };
    let verdict = Arc::new(Mutex::new(None));
    let handler = Client {
        pinned,
        verdict: verdict.clone(),
    };
    let mut handle = match client::connect_stream(Arc::new(config), stream, handler).await {
        Ok(handle) => handle,
        Err(source) => {
            let verdict = verdict.lock().ok().and_then(|mut v| v.take());
            return Err(match verdict {
                Some(Verdict::Unknown(presented)) => SshError::HostKeyUnknown { presented },
                Some(Verdict::Mismatch(presented)) => SshError::HostKeyMismatch {
                    presented,
                    expected_fingerprint: expected_fingerprint.unwrap_or_default(),
                },
                None => SshError::Protocol {
                    context: "setting up the encrypted connection",
                    source,
                },
            });
        }
    };

    authenticate(&mut handle, creds, key).await?;

    let channel = handle
        .channel_open_session()
        .await
        .map_err(SshError::protocol("opening a session channel"))?;
    let (mut reader, writer) = channel.split();
    writer
        .request_pty(
            false,
            "xterm-256color",
            size.cols.into(),
            size.rows.into(),
            0,
            0,
            &[],
        )
        .await
        .map_err(SshError::protocol("requesting a terminal"))?;
    writer
        .request_shell(true)
        .await
        .map_err(SshError::protocol("starting a shell"))?;

    // Wait for the server's answer to the shell request. Output before it means the shell runs
    // (some servers send a banner first); it is kept and the answer is no longer awaited, so a
    // device that floods here is held back like any other (see "Backpressure").
    let mut pending = Vec::new();
    while pending.is_empty() {
        match reader.wait().await {
            Some(ChannelMsg::Success) => break,
            Some(ChannelMsg::Failure) => {
                return Err(SshError::Protocol {
                    context: "starting a shell (the server refused it)",
                    source: russh::Error::RequestDenied,
                })
            }
            Some(msg) => match output_of(msg) {
                Step::Output(out) => pending.push(out),
                Step::Closed => {
                    return Err(SshError::Protocol {
                        context: "starting a shell (the server closed the channel)",
                        source: russh::Error::Disconnect,
                    })
                }
                Step::Skip => {}
            },
            None => {
                return Err(SshError::Protocol {
                    context: "starting a shell (the connection ended)",
                    source: russh::Error::Disconnect,
                })
            }
        }
    }

    Ok(Shell::new(reader, pending, writer, handle))
}

/// Decodes a stored private key. The passphrase only goes to formats that are encrypted: russh
/// would try to decrypt an unencrypted PKCS#8 key with it and fail.
fn decode_private_key(pem: &str, passphrase: Option<&str>) -> Result<PrivateKey, SshError> {
    let unencrypted_pem = (pem.contains("-----BEGIN PRIVATE KEY-----")
        || pem.contains("-----BEGIN EC PRIVATE KEY-----"))
        && !pem.contains("DEK-Info:");
    let passphrase = if unencrypted_pem { None } else { passphrase };
    russh::keys::decode_secret_key(pem, passphrase).map_err(|e| {
        use russh::keys::Error as E;
        // The reasons never quote the key: only which step failed.
        let reason = match (&e, passphrase) {
            (E::KeyIsEncrypted, _) => "it is encrypted and no passphrase is stored".to_owned(),
            (_, None) if pem.contains("ENCRYPTED") => {
                "it is encrypted and no passphrase is stored".to_owned()
            }
            (_, Some(_)) if pem.contains("ENCRYPTED") || pem.contains("OPENSSH") => {
                format!("the passphrase is wrong or the key is damaged ({e})")
            }
            (E::CouldNotReadKey, _) => "it is not an OpenSSH or PEM private key".to_owned(),
            _ => format!("it is damaged or of an unsupported type ({e})"),
        };
        SshError::BadPrivateKey(reason)
    })
}

/// Logs in with the stored key, then the stored password (as `password`, then as
/// `keyboard-interactive`), each only if the server offers the method.
async fn authenticate(
    handle: &mut client::Handle<Client>,
    creds: &Credentials,
    key: Option<PrivateKey>,
) -> Result<(), SshError> {
    let user = creds.username.as_str();
    let failed = |source| SshError::Protocol {
        context: "authenticating",
        source,
    };

    // Ask which methods the server accepts, as OpenSSH does: a refusal of `none` lists them all,
    // while a refusal of a later attempt may list fewer (russh's server drops a failed method).
    let accepts = match handle.authenticate_none(user).await.map_err(failed)? {
        AuthResult::Success => return Ok(()),
        AuthResult::Failure {
            remaining_methods, ..
        } => remaining_methods,
    };
    // A server that lists nothing gets every attempt.
    let offers = |method| accepts.is_empty() || accepts.contains(&method);
    let mut tried = Vec::new();

    if let Some(key) = key.filter(|_| offers(MethodKind::PublicKey)) {
        tried.push("publickey");
        let hash = if key.algorithm().is_rsa() {
            handle
                .best_supported_rsa_hash()
                .await
                .map_err(failed)?
                .flatten()
        } else {
            None
        };
        let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
        if handle
            .authenticate_publickey(user, key)
            .await
            .map_err(failed)?
            .success()
        {
            return Ok(());
        }
    }

    if let Some(password) = &creds.password {
        let password: &str = password;
        if offers(MethodKind::Password) {
            tried.push("password");
            if handle
                .authenticate_password(user, password)
                .await
                .map_err(failed)?
                .success()
            {
                return Ok(());
            }
        }
        // Embedded SSH servers often take the password only through keyboard-interactive.
        if offers(MethodKind::KeyboardInteractive) {
            tried.push("keyboard-interactive");
            if keyboard_interactive(handle, user, password).await? {
                return Ok(());
            }
        }
    }

    let accepts: Vec<&str> = accepts
        .iter()
        .filter(|m| **m != MethodKind::None)
        .map(<&str>::from)
        .collect();
    let accepts = if accepts.is_empty() {
        "it lists no method".to_owned()
    } else {
        format!("it accepts: {}", accepts.join(", "))
    };
    let tried = if tried.is_empty() {
        "no stored credential fits those methods".to_owned()
    } else {
        format!("tried with the stored credentials: {}", tried.join(", "))
    };
    Err(SshError::AuthFailed(format!(
        "the SSH server refused user '{user}' ({accepts}; {tried})"
    )))
}

/// Answers the server's keyboard-interactive prompts with the password; `true` if it let us in.
async fn keyboard_interactive(
    handle: &mut client::Handle<Client>,
    user: &str,
    password: &str,
) -> Result<bool, SshError> {
    let failed = |source| SshError::Protocol {
        context: "authenticating",
        source,
    };
    let mut reply = handle
        .authenticate_keyboard_interactive_start(user, None)
        .await
        .map_err(failed)?;
    for _ in 0..MAX_KEYBOARD_INTERACTIVE_ROUNDS {
        match reply {
            KeyboardInteractiveAuthResponse::Success => return Ok(true),
            KeyboardInteractiveAuthResponse::Failure { .. } => return Ok(false),
            KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } => {
                // Every prompt gets the password (a round without prompts gets no answers).
                let answers = prompts.iter().map(|_| password.to_owned()).collect();
                reply = handle
                    .authenticate_keyboard_interactive_respond(answers)
                    .await
                    .map_err(failed)?;
            }
        }
    }
    Ok(false)
}

mod shell;

#[cfg(test)]
mod tests;
