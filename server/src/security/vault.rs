//! Secrets at rest: values the platform must give back in clear later (an endpoint's VNC or SSH
//! password, an SSH private key), as opposed to passwords it only verifies (those are hashed,
//! [`super::secrets`]).
//!
//! A sealed value is `v1:<key id>:<base64url(nonce ‖ ChaCha20-Poly1305 ciphertext ‖ tag)>`. The
//! key is 32 random bytes in a file **outside the database** (`--secrets-key-file`, by default
//! `<data-dir>/secrets.key`, created mode 0600 on first start), so a copy of the database alone
//! reveals nothing. The key id (the first 8 hex digits of the key's SHA-256) is kept beside each
//! value so a rotated key can be recognised. Every value is bound to what it is (its context: the
//! extension, the record and the field) by the AEAD's associated data: a sealed value copied to
//! another field or another endpoint does not open.
//!
//! Nonces are 96 random bits: safe for far more values than a platform stores (the bound for
//! random nonces is about 2^32 encryptions per key).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use std::io::Write as _;
use std::path::Path;

/// The format version in front of every sealed value.
const VERSION: &str = "v1";
/// The key's length in bytes.
const KEY_LEN: usize = 32;
/// The longest plaintext sealed (an RSA 8192 private key in PEM is about 6.5 KiB).
pub const MAX_PLAINTEXT: usize = 16 * 1024;

/// Why a secret could not be sealed or opened. The messages never contain secret material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VaultError {
    #[error("the value is not a sealed secret (expected v1:<key id>:<data>)")]
    Malformed,
    #[error("the secret was sealed with key {found}, but the secrets key file holds key {current}: restore the key file the value was sealed with")]
    OtherKey { found: String, current: String },
    #[error("the secret does not open with the secrets key (it was altered, or belongs to another field)")]
    Corrupt,
    #[error("a secret holds at most {MAX_PLAINTEXT} bytes, not {0}")]
    TooLong(usize),
    #[error("the system random generator failed")]
    Random,
}

/// The secrets key, loaded from its file.
pub struct Vault {
    key: LessSafeKey,
    id: String,
    random: SystemRandom,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("key_id", &self.id).finish()
    }
}

impl Vault {
    /// Loads the key from `path`, creating the file (mode 0600, 32 random bytes in hex) if it
    /// does not exist. A file of another size or content is refused: better to stop than to
    /// seal new values with a key that cannot open the old ones.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Vault> {
        use anyhow::Context as _;
        if !path.exists() {
            let random = SystemRandom::new();
            let mut key = [0u8; KEY_LEN];
            random
                .fill(&mut key)
                .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("failed to create {}", dir.display()))?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                options.mode(0o600);
            }
            match options.open(path) {
                Ok(mut file) => {
                    let text = zeroize::Zeroizing::new(format!("{}\n", hex::encode(key)));
                    file.write_all(text.as_bytes())
                        .and_then(|()| file.sync_all())
                        .with_context(|| {
                            format!("failed to write the secrets key file {}", path.display())
                        })?;
                    tracing::info!(path = %path.display(), "created the secrets key file (keep it with the backups, apart from the database)");
                }
                // Another process created it meanwhile: read theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("failed to create the secrets key file {}", path.display())
                    })
                }
            }
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read the secrets key file {}", path.display()))?;
        let key = hex::decode(text.trim())
            .ok()
            .filter(|k| k.len() == KEY_LEN)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the secrets key file {} must hold 64 hex digits (32 bytes); it does not",
                    path.display()
                )
            })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "the secrets key file is readable by other users: chmod 600 it");
                }
            }
        }
        Ok(Vault::from_key(&key))
    }

    /// A vault over a raw key (tests).
    pub fn from_key(key: &[u8]) -> Vault {
        let id = hex::encode(&Sha256::digest(key)[..4]);
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, key)
            .unwrap_or_else(|_| unreachable!("a 32-byte key is valid for ChaCha20-Poly1305"));
        Vault {
            key: LessSafeKey::new(unbound),
            id,
            random: SystemRandom::new(),
        }
    }

    /// The key's id, as sealed values carry it.
    pub fn key_id(&self) -> &str {
        &self.id
    }

    fn aad(&self, context: &str) -> Vec<u8> {
        format!("thingport.secret.{VERSION}|{}|{context}", self.id).into_bytes()
    }

    /// Seals `plaintext` for `context` (what the value is, e.g.
    /// `RemoteAccessExtension/endpoint-secrets/gw-1/ssh/password`).
    pub fn seal(&self, context: &str, plaintext: &str) -> Result<String, VaultError> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(VaultError::TooLong(plaintext.len()));
        }
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| VaultError::Random)?;
        let mut buf = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        buf.extend_from_slice(&nonce);
        let mut sealed = zeroize::Zeroizing::new(plaintext.as_bytes().to_vec());
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.aad(context)),
                &mut *sealed,
            )
            .map_err(|_| VaultError::Corrupt)?;
        buf.extend_from_slice(&sealed);
        Ok(format!(
            "{VERSION}:{}:{}",
            self.id,
            URL_SAFE_NO_PAD.encode(&buf)
        ))
    }

    /// Opens a value [`Vault::seal`] made for the same `context`.
    pub fn open(
        &self,
        context: &str,
        sealed: &str,
    ) -> Result<zeroize::Zeroizing<String>, VaultError> {
        let mut parts = sealed.splitn(3, ':');
        let (Some(VERSION), Some(id), Some(data)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(VaultError::Malformed);
        };
        if id != self.id {
            return Err(VaultError::OtherKey {
                found: id.chars().take(16).collect(),
                current: self.id.clone(),
            });
        }
        let mut buf = URL_SAFE_NO_PAD
            .decode(data)
            .map_err(|_| VaultError::Malformed)?;
        if buf.len() < NONCE_LEN + 16 {
            return Err(VaultError::Malformed);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&buf[..NONCE_LEN]);
        let mut body = zeroize::Zeroizing::new(buf.split_off(NONCE_LEN));
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.aad(context)),
                &mut body,
            )
            .map_err(|_| VaultError::Corrupt)?;
        let text = std::str::from_utf8(plain).map_err(|_| VaultError::Corrupt)?;
        Ok(zeroize::Zeroizing::new(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_context() {
        let vault = Vault::from_key(&[7u8; 32]);
        let sealed = vault.seal("T/ep/password", "s3cret").unwrap();
        assert!(sealed.starts_with(&format!("v1:{}:", vault.key_id())));
        assert!(!sealed.contains("s3cret"));
        assert_eq!(&*vault.open("T/ep/password", &sealed).unwrap(), "s3cret");
        // Another field, another endpoint: refused.
        assert_eq!(
            vault.open("T/ep/passphrase", &sealed),
            Err(VaultError::Corrupt)
        );
        // Two seals of one value differ (random nonces).
        assert_ne!(sealed, vault.seal("T/ep/password", "s3cret").unwrap());
        // Another key: named, not opened.
        let other = Vault::from_key(&[8u8; 32]);
        assert!(matches!(
            other.open("T/ep/password", &sealed),
            Err(VaultError::OtherKey { .. })
        ));
        // A flipped byte anywhere in the data.
        let (head, data) = sealed.rsplit_once(':').unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(data).unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= 1;
            let bad = format!("{head}:{}", URL_SAFE_NO_PAD.encode(&bytes));
            assert_eq!(vault.open("T/ep/password", &bad), Err(VaultError::Corrupt));
            bytes[i] ^= 1;
        }
        for bad in [
            "",
            "v1",
            "v2:x:y",
            "v1:abc",
            &format!("v1:{}:!!", vault.key_id()),
        ] {
            assert!(vault.open("T/ep/password", bad).is_err(), "{bad}");
        }
        assert_eq!(
            vault.seal("c", &"x".repeat(MAX_PLAINTEXT + 1)),
            Err(VaultError::TooLong(MAX_PLAINTEXT + 1))
        );
    }

    #[test]
    fn the_key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secrets.key");
        let a = Vault::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealed = a.seal("c", "v").unwrap();
        let b = Vault::load_or_create(&path).unwrap();
        assert_eq!(&*b.open("c", &sealed).unwrap(), "v");
        std::fs::write(&path, "not a key").unwrap();
        let err = Vault::load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("64 hex digits"), "{err}");
    }
}
