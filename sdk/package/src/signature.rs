//! Ed25519 package signatures and the trusted keys file (`--trusted-extension-keys`).
//!
//! **Signature file**: `signature.ed25519` at the package root, UTF-8 text. Blank lines and lines
//! starting with `#` are ignored; the other lines are `key: value`:
//!
//! ```text
//! # signed by the Acme release key
//! key: <the signer's ed25519 public key, 32 bytes, hex or base64>
//! signature: <ed25519 signature of the exact bytes of metadata.xml, 64 bytes, hex or base64>
//! ```
//!
//! `signature` is required; `key` is optional and only lets the server say "signed by an
//! untrusted key" instead of "bad signature". The signature covers `metadata.xml` byte for byte;
//! `metadata.xml` pins each library's SHA-256, so the signature covers the libraries too.
//!
//! **Trusted keys file**: UTF-8 text, one ed25519 public key (32 bytes, hex or base64) per line;
//! blank lines and `#` comments (whole line or after the key) are ignored. At least one key.
//!
//! Hex and base64 are told apart by length: 64 (key) or 128 (signature) hexadecimal digits are
//! hex; anything else is standard base64 with padding.

use base64::Engine as _;
use ring::signature::{UnparsedPublicKey, ED25519};
use std::path::Path;

/// The signature's path at the root of a package.
pub const SIGNATURE_FILE: &str = "signature.ed25519";

/// An ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The first 16 hexadecimal digits, to name the key in messages and logs.
    pub fn fingerprint(&self) -> String {
        hex::encode(&self.0[..8])
    }

    fn verifies(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        UnparsedPublicKey::new(&ED25519, self.0)
            .verify(message, signature)
            .is_ok()
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.0))
    }
}

/// The keys whose signatures the server accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
}

/// Why a trusted keys file was refused (an operator's mistake: fix the file and restart).
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("failed to read the trusted extension keys file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("trusted extension keys, line {line}: expected a 32-byte ed25519 public key in hex or base64")]
    BadKey { line: usize },
    #[error("the trusted extension keys file lists no keys")]
    Empty,
}

impl TrustedKeys {
    /// Keys from a list (for tests and embedding).
    pub fn new(keys: Vec<PublicKey>) -> Self {
        Self { keys }
    }

    /// Parses the trusted keys file format.
    pub fn parse(text: &str) -> Result<Self, KeysError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let key = decode::<32>(line).ok_or(KeysError::BadKey { line: i + 1 })?;
            if !keys.contains(&PublicKey(key)) {
                keys.push(PublicKey(key));
            }
        }
        if keys.is_empty() {
            return Err(KeysError::Empty);
        }
        Ok(Self { keys })
    }

    /// Reads and parses a trusted keys file.
    pub fn load(path: &Path) -> Result<Self, KeysError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// The keys, in file order.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }
}

/// Why a package's signature was refused. The uploader's fault; retrying does not help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the package is unsigned ({SIGNATURE_FILE} is missing) and this server accepts only packages signed by a trusted key")]
    Unsigned,
    #[error("{SIGNATURE_FILE} is malformed: {reason}")]
    Malformed { reason: String },
    #[error("the package is signed by the untrusted key {fingerprint}")]
    UntrustedKey { fingerprint: String },
    #[error(
        "bad signature: {SIGNATURE_FILE} does not verify metadata.xml with the key {fingerprint}"
    )]
    BadSignature { fingerprint: String },
    #[error("bad signature: no trusted key verifies metadata.xml against {SIGNATURE_FILE} (a modified package, or signed by an untrusted key)")]
    NoTrustedKeyVerifies,
}

/// A parsed signature file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureFile {
    /// The signer's key, when the file names it.
    pub key: Option<PublicKey>,
    /// The signature over the bytes of `metadata.xml`.
    pub signature: [u8; 64],
}

impl SignatureFile {
    /// Parses the signature file format.
    pub fn parse(bytes: &[u8]) -> Result<Self, SignatureError> {
        let malformed = |reason: String| SignatureError::Malformed { reason };
        let text = std::str::from_utf8(bytes).map_err(|_| malformed("not UTF-8".into()))?;
        let (mut key, mut signature) = (None, None);
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(malformed(format!("line {}: expected `key: value`", i + 1)));
            };
            match name.trim() {
                "key" if key.is_none() => {
                    let k = decode::<32>(value.trim()).ok_or_else(|| {
                        malformed(format!("line {}: key is not a 32-byte public key", i + 1))
                    })?;
                    key = Some(PublicKey(k));
                }
                "signature" if signature.is_none() => {
                    signature = Some(decode::<64>(value.trim()).ok_or_else(|| {
                        malformed(format!("line {}: signature is not 64 bytes", i + 1))
                    })?);
                }
                other => {
                    return Err(malformed(format!(
                        "line {}: unexpected or repeated field {other:?}",
                        i + 1
                    )))
                }
            }
        }
        let signature = signature.ok_or_else(|| malformed("no signature line".into()))?;
        Ok(Self { key, signature })
    }

    /// The file's text for a signer's key and signature (hex), as `thingport ext pack` writes it.
    pub fn format(key: &PublicKey, signature: &[u8; 64]) -> String {
        format!(
            "key: {}\nsignature: {}\n",
            hex::encode(key.0),
            hex::encode(signature)
        )
    }
}

/// Checks that `signature_file` (the bytes of `signature.ed25519`, `None` when absent) is a
/// valid signature of `metadata_xml` by one of `trusted`; returns that key.
pub fn verify_signature(
    metadata_xml: &[u8],
    signature_file: Option<&[u8]>,
    trusted: &TrustedKeys,
) -> Result<PublicKey, SignatureError> {
    let file = SignatureFile::parse(signature_file.ok_or(SignatureError::Unsigned)?)?;
    match file.key {
        Some(key) => {
            if !trusted.keys.contains(&key) {
                return Err(SignatureError::UntrustedKey {
                    fingerprint: key.fingerprint(),
                });
            }
            if !key.verifies(metadata_xml, &file.signature) {
                return Err(SignatureError::BadSignature {
                    fingerprint: key.fingerprint(),
                });
            }
            Ok(key)
        }
        None => trusted
            .keys
            .iter()
            .find(|k| k.verifies(metadata_xml, &file.signature))
            .copied()
            .ok_or(SignatureError::NoTrustedKeyVerifies),
    }
}

/// Decodes exactly `N` bytes from hex (2N digits) or standard base64.
fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    if text.len() == 2 * N && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode_to_slice(text, &mut out).ok()?;
        return Some(out);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    out.copy_from_slice(bytes.get(..N).filter(|_| bytes.len() == N)?);
    Some(out)
}

#[cfg(test)]
mod tests;
