//! The VNC (RFB 3.3, 3.7 and 3.8) security handshake, proxied: the GAS answers the VNC server's
//! security handshake itself with the password stored for the endpoint
//! ([`authenticate_upstream`]), and plays a server offering only security type None toward the
//! browser's noVNC ([`serve_downstream`]). The password therefore never reaches the browser.
//! After both functions return, the two streams are joined byte for byte: the browser's
//! ClientInit is the next thing the server reads.
//!
//! Everything the server sends is untrusted: every length it announces is bounded before anything
//! is allocated, and its reason strings are cut to printable text. Neither function has a timeout;
//! the caller applies one to the whole handshake.
//!
//! Reference: <https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst>.

use des::cipher::generic_array::GenericArray;
use des::cipher::{BlockEncrypt, KeyInit};
use des::Des;
use std::fmt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroize;

/// The longest reason string accepted from a server, in bytes. Real reasons are a sentence; a
/// larger length is a broken or hostile server, refused before anything is allocated.
const MAX_REASON: u32 = 4096;

/// Security type None.
const SEC_NONE: u8 = 1;
/// Security type VNC Authentication (DES challenge/response).
const SEC_VNC_AUTH: u8 = 2;

/// The RFB protocol version agreed with a peer. Versions between the three named ones are treated
/// as rfbproto says: 3.4–3.6 as 3.3, anything from 3.8 up (Apple's 3.889, 4.x) as 3.8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V3_3,
    V3_7,
    V3_8,
}

impl Version {
    /// The 12-byte ProtocolVersion message for this version.
    fn message(self) -> &'static [u8; 12] {
        match self {
            Version::V3_3 => b"RFB 003.003\n",
            Version::V3_7 => b"RFB 003.007\n",
            Version::V3_8 => b"RFB 003.008\n",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V3_3 => "3.3",
            Version::V3_7 => "3.7",
            Version::V3_8 => "3.8",
        })
    }
}

/// Why a VNC handshake failed. [`RfbError::code`] gives the stable code the browser is sent.
#[derive(Debug, thiserror::Error)]
pub enum RfbError {
    /// The stored password was refused (or the server ended authentication with a failure);
    /// the reason is the server's, when RFB 3.8 let it give one. Fix the stored password.
    #[error("{}", match .0 {
        Some(reason) => format!(
            "VNC authentication failed: the VNC server refused the stored password ({reason})"
        ),
        None => "VNC authentication failed: the VNC server refused the stored password".to_string(),
    })]
    AuthFailed(Option<String>),
    /// The server requires VNC Authentication and no password is stored for the endpoint.
    #[error("the VNC server requires a password and none is stored for this endpoint")]
    PasswordRequired,
    /// The server offers none of the security types the GAS can answer (these are them).
    #[error(
        "the VNC server offers only security types {}; Thingport supports None (1) and VNC \
         Authentication (2)",
        type_list(.0)
    )]
    Unsupported(Vec<u8>),
    /// The server refused the connection before authentication, with its reason (often "too
    /// many connections" or a blacklisted address: retrying later may help).
    #[error("the VNC server refused the connection: {0}")]
    Refused(String),
    /// A peer broke the RFB protocol; not retryable.
    #[error("VNC protocol error: {0}")]
    Protocol(String),
    /// Reading or writing a stream failed, or a peer closed it in the middle of the handshake.
    #[error("the VNC connection failed during the handshake: {0}")]
    Io(#[from] std::io::Error),
}

impl RfbError {
    /// The stable code for the browser (`ServerMessage::Error`'s `code`).
    pub fn code(&self) -> &'static str {
        match self {
            RfbError::AuthFailed(_) => "VNC_AUTH_FAILED",
            RfbError::PasswordRequired => "VNC_PASSWORD_REQUIRED",
            RfbError::Unsupported(_) => "VNC_UNSUPPORTED_SECURITY",
            RfbError::Refused(_) => "VNC_REFUSED",
            RfbError::Protocol(_) => "VNC_PROTOCOL",
            RfbError::Io(_) => "VNC_IO",
        }
    }
}

/// `19 (VeNCrypt), 30 (Apple ARD)`: security type numbers with the names of the known ones
/// (IANA's "RFB Security Types" registry).
fn type_list(types: &[u8]) -> String {
    types
        .iter()
        .map(|&t| match type_name(t) {
            Some(name) => format!("{t} ({name})"),
            None => t.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn type_name(t: u8) -> Option<&'static str> {
    Some(match t {
        0 => "Invalid",
        1 => "None",
        2 => "VNC Authentication",
        5 => "RA2",
        6 => "RA2ne",
        16 => "Tight",
        17 => "Ultra",
        18 => "TLS",
        19 => "VeNCrypt",
        20 => "SASL",
        21 => "MD5",
        22 => "xvp",
        30 => "Apple ARD",
        113 => "MS-Logon II",
        _ => return None,
    })
}

/// Parses a 12-byte ProtocolVersion message, `RFB xxx.yyy\n`, into (major, minor).
fn parse_version(message: &[u8; 12]) -> Option<(u16, u16)> {
    let digits = |d: &[u8]| -> Option<u16> {
        d.iter().try_fold(0u16, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u16::from(b - b'0'))
        })
    };
    if &message[..4] != b"RFB " || message[7] != b'.' || message[11] != b'\n' {
        return None;
    }
    Some((digits(&message[4..7])?, digits(&message[8..11])?))
}

/// A printable form of a version message from a peer, for an error.
fn show(message: &[u8]) -> String {
    String::from_utf8_lossy(message).escape_debug().to_string()
}

/// Runs the client side of the security handshake with a VNC `server`: reads its version,
/// answers with the version to use, picks VNC Authentication when it is offered and `password`
/// is given (else None), answers the challenge, and checks the result. Returns the version
/// agreed; the next bytes `server` expects are the ClientInit the browser will send.
///
/// The password is used as VNC Authentication defines it: its first 8 bytes, zero-padded.
pub async fn authenticate_upstream<S: AsyncRead + AsyncWrite + Unpin>(
    server: &mut S,
    password: Option<&[u8]>,
) -> Result<Version, RfbError> {
    let mut message = [0u8; 12];
    server.read_exact(&mut message).await?;
    let version = match parse_version(&message) {
        Some((major, _)) if major > 3 => Version::V3_8,
        Some((3, minor)) if minor >= 8 => Version::V3_8,
        Some((3, 7)) => Version::V3_7,
        Some((3, 3..=6)) => Version::V3_3,
        _ => {
            return Err(RfbError::Protocol(format!(
                "the VNC server's version message \"{}\" is not RFB 3.3 or later",
                show(&message)
            )))
        }
    };
    server.write_all(version.message()).await?;
    server.flush().await?;

    let chosen = if version == Version::V3_3 {
        // 3.3: the server decides, with a u32.
        match server.read_u32().await? {
            0 => return Err(RfbError::Refused(read_reason(server).await?)),
            t if t == u32::from(SEC_NONE) => SEC_NONE,
            t if t == u32::from(SEC_VNC_AUTH) => match password {
                Some(_) => SEC_VNC_AUTH,
                None => return Err(RfbError::PasswordRequired),
            },
            t => match u8::try_from(t) {
                Ok(t) => return Err(RfbError::Unsupported(vec![t])),
                Err(_) => {
                    return Err(RfbError::Protocol(format!(
                        "the VNC server chose security type {t}, which does not exist"
                    )))
                }
            },
        }
    } else {
        // 3.7 and 3.8: the server lists the types, the client picks one.
        let count = usize::from(server.read_u8().await?);
        if count == 0 {
            return Err(RfbError::Refused(read_reason(server).await?));
        }
        let mut offered = [0u8; 255];
        let offered = &mut offered[..count];
        server.read_exact(offered).await?;
        let chosen = if password.is_some() && offered.contains(&SEC_VNC_AUTH) {
            SEC_VNC_AUTH
        } else if offered.contains(&SEC_NONE) {
            SEC_NONE
        } else if offered.contains(&SEC_VNC_AUTH) {
            return Err(RfbError::PasswordRequired);
        } else {
            return Err(RfbError::Unsupported(offered.to_vec()));
        };
        server.write_all(&[chosen]).await?;
        server.flush().await?;
        chosen
    };

    if chosen == SEC_VNC_AUTH {
        let mut challenge = [0u8; 16];
        server.read_exact(&mut challenge).await?;
        let mut response = vnc_response(password.unwrap_or_default(), &challenge);
        let written = server.write_all(&response).await;
        response.zeroize();
        written?;
        server.flush().await?;
    } else if version != Version::V3_8 {
        // Before 3.8, None is followed by no SecurityResult: ClientInit comes next.
        return Ok(version);
    }

    match server.read_u32().await? {
        0 => Ok(version),
        _ => {
            // Only 3.8 gives a reason. 1 is "failed"; some servers send 2 for "too many
            // attempts", which is a failure just the same.
            let reason = match version {
                Version::V3_8 => Some(read_reason(server).await?),
                _ => None,
            };
            if chosen == SEC_VNC_AUTH {
                Err(RfbError::AuthFailed(reason))
            } else {
                Err(RfbError::Refused(
                    reason.unwrap_or_else(|| "no reason given".to_string()),
                ))
            }
        }
    }
}

/// Reads a `u32` length and that many bytes of reason, refusing lengths over [`MAX_REASON`]
/// before allocating. The text is made printable (invalid UTF-8 replaced, control characters
/// turned into spaces) since it ends up in logs and in front of the user.
async fn read_reason<S: AsyncRead + Unpin>(server: &mut S) -> Result<String, RfbError> {
    let len = server.read_u32().await?;
    if len > MAX_REASON {
        return Err(RfbError::Protocol(format!(
            "the VNC server announced a {len}-byte reason; at most {MAX_REASON}"
        )));
    }
    let mut reason = vec![0u8; len as usize];
    server.read_exact(&mut reason).await?;
    let text: String = String::from_utf8_lossy(&reason)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.trim();
    Ok(if text.is_empty() {
        "no reason given".to_string()
    } else {
        text.to_string()
    })
}

/// The VNC Authentication response to `challenge`: each 8-byte half DES-ECB-encrypted with the
/// password (first 8 bytes, zero-padded) as key, each key byte's bits reversed (a quirk of the
/// original VNC's DES code that every implementation keeps).
fn vnc_response(password: &[u8], challenge: &[u8; 16]) -> [u8; 16] {
    let mut key = [0u8; 8];
    for (k, p) in key.iter_mut().zip(password) {
        *k = p.reverse_bits();
    }
    let cipher = Des::new(GenericArray::from_slice(&key));
    key.zeroize();
    let mut response = *challenge;
    for half in response.chunks_exact_mut(8) {
        cipher.encrypt_block(GenericArray::from_mut_slice(half));
    }
    // The key schedule inside `cipher` is dropped here without being wiped: that needs the `des`
    // crate's `zeroize` feature.
    response
}

/// Plays the VNC server toward the `browser` up to the end of the security handshake: announces
/// 3.8, follows whichever of 3.3, 3.7 and 3.8 the browser answers, and offers only security type
/// None (the GAS has already authenticated upstream). After it returns, the browser's ClientInit
/// flows to the real server.
pub async fn serve_downstream<B: AsyncRead + AsyncWrite + Unpin>(
    browser: &mut B,
) -> Result<(), RfbError> {
    browser.write_all(Version::V3_8.message()).await?;
    browser.flush().await?;
    let mut message = [0u8; 12];
    browser.read_exact(&mut message).await?;
    // A client must not answer with a version above the server's; 3.4–3.6 mean 3.3.
    let version = match parse_version(&message) {
        Some((3, 8)) => Version::V3_8,
        Some((3, 7)) => Version::V3_7,
        Some((3, 3..=6)) => Version::V3_3,
        _ => {
            return Err(RfbError::Protocol(format!(
                "the browser's version message \"{}\" is not RFB 3.3, 3.7 or 3.8",
                show(&message)
            )))
        }
    };
    if version == Version::V3_3 {
        browser
            .write_all(&u32::from(SEC_NONE).to_be_bytes())
            .await?;
        browser.flush().await?;
        return Ok(());
    }
    browser.write_all(&[1, SEC_NONE]).await?;
    browser.flush().await?;
    let chosen = browser.read_u8().await?;
    if chosen != SEC_NONE {
        let problem = format!("the browser chose security type {chosen}, which was not offered");
        if version == Version::V3_8 {
            // Tell noVNC why, as 3.8 allows; the error below is what matters, so a failure to
            // send this is ignored.
            let mut failure = Vec::with_capacity(8 + problem.len());
            failure.extend_from_slice(&1u32.to_be_bytes());
            failure.extend_from_slice(&(problem.len() as u32).to_be_bytes());
            failure.extend_from_slice(problem.as_bytes());
            let _ = browser.write_all(&failure).await;
            let _ = browser.flush().await;
        }
        return Err(RfbError::Protocol(problem));
    }
    if version == Version::V3_8 {
        browser.write_all(&0u32.to_be_bytes()).await?;
        browser.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
