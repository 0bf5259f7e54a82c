//! Ed25519 signing keys for extension packages.
//!
//! **Key file** (what `thingport ext keygen -o FILE` writes and `ext pack --sign-key FILE`
//! reads): a PKCS#8 private key in PEM, `-----BEGIN PRIVATE KEY-----` … `-----END PRIVATE
//! KEY-----`, written with mode 0600. Also read: the same PKCS#8 document as raw DER, one made
//! by `openssl genpkey -algorithm ed25519` (PKCS#8 v1), and a bare 32-byte seed as 64 hexadecimal
//! digits (blank lines and `#` comment lines around it are ignored).
//!
//! **Public key line** (what `keygen` and `ext pubkey` print): the 32-byte public key in hex,
//! then a `#` comment naming the key file: one line of the server's `--trusted-extension-keys`
//! file as it is.
//!
//! The signature `ext pack` writes is `signature.ed25519` in the format of
//! `thingport_package::signature`: the signer's key and an ed25519
//! signature of the exact bytes of `metadata.xml`.

use anyhow::{bail, Context as _};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use std::io::Write as _;
use std::path::Path;
use thingport_package::{PublicKey, SignatureFile};

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// An ed25519 private key that signs packages. Its `Debug` shows only the public key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(public {})", hex::encode(self.public_key().0))
    }
}

impl SigningKey {
    /// A new random key and its PKCS#8 (v2) document.
    pub fn generate() -> anyhow::Result<(Self, Vec<u8>)> {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| anyhow::anyhow!("failed to generate an ed25519 key"))?;
        let key = Self::from_pkcs8(pkcs8.as_ref())?;
        Ok((key, pkcs8.as_ref().to_vec()))
    }

    fn from_pkcs8(der: &[u8]) -> anyhow::Result<Self> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| anyhow::anyhow!("not an ed25519 PKCS#8 private key ({e})"))?;
        Ok(Self { pair })
    }

    /// Parses a key file's bytes (see the module documentation for the accepted forms).
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Self> {
        if let Ok(text) = std::str::from_utf8(bytes) {
            if let Some(start) = text.find(PEM_BEGIN) {
                let body = &text[start + PEM_BEGIN.len()..];
                let Some(end) = body.find(PEM_END) else {
                    bail!("the PEM block has no {PEM_END} line");
                };
                let b64: String = body[..end].split_whitespace().collect();
                let der = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .context("the PEM block is not base64")?;
                return Self::from_pkcs8(&der);
            }
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect();
            if let [seed] = lines.as_slice() {
                if seed.len() == 64 && seed.bytes().all(|b| b.is_ascii_hexdigit()) {
                    let seed = hex::decode(seed).context("the seed is not hex")?;
                    let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
                        .map_err(|e| anyhow::anyhow!("invalid ed25519 seed ({e})"))?;
                    return Ok(Self { pair });
                }
            }
        }
        Self::from_pkcs8(bytes)
            .context("expected a PEM or DER PKCS#8 ed25519 private key, or a 32-byte seed in hex")
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("failed to read the signing key {}", path.display()))?;
        Self::parse(&bytes).with_context(|| format!("invalid signing key {}", path.display()))
    }

    /// The public key, as the server's trusted keys file lists it.
    pub fn public_key(&self) -> PublicKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(key)
    }

    /// The ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }

    /// The text of `signature.ed25519` for a package whose manifest is `metadata_xml`.
    pub fn signature_file(&self, metadata_xml: &[u8]) -> String {
        SignatureFile::format(&self.public_key(), &self.sign(metadata_xml))
    }
}

/// PEM text of a PKCS#8 document.
pub fn to_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("{PEM_BEGIN}\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(PEM_END);
    pem.push('\n');
    pem
}

/// The line to add to the server's trusted keys file: the key in hex and a comment.
pub fn public_key_line(key: &PublicKey, comment: &str) -> String {
    let comment: String = comment.chars().filter(|c| !c.is_control()).collect();
    format!("{}  # {comment}", hex::encode(key.0))
}

/// Generates a key and writes it to `path` (PEM PKCS#8, mode 0600). Refuses to overwrite.
pub fn keygen(path: &Path) -> anyhow::Result<PublicKey> {
    let (key, pkcs8) = SigningKey::generate()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("{} already exists; not overwriting a key", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("failed to create {}", path.display())),
    };
    file.write_all(to_pem(&pkcs8).as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("failed to write {}", path.display()))?;
    Ok(key.public_key())
}

/// A warning when a key file can be read by other users, else `None`.
pub fn permissions_warning(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        if mode & 0o077 != 0 {
            return Some(format!(
                "warning: the signing key {} is accessible by other users (mode {:o}); \
                 consider `chmod 600`",
                path.display(),
                mode & 0o777
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    None
}

#[cfg(test)]
mod tests;
