//! Password hashing (argon2id) and application key generation and hashing (SHA-256).
//!
//! Application keys are 122 random bits formatted as a GUID (the form ThingWorx clients expect);
//! with that much entropy a fast hash is the right tool, and the lookup by hash is constant time
//! with respect to the secret. Passwords are chosen by people and get a slow, salted hash.

use argon2::password_hash::{rand_core::OsRng, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::cell::RefCell;

/// Shortest accepted password, in bytes.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest accepted password, in bytes (bounds the hashing work an attacker can ask for).
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Largest argon2 memory accepted from a stored hash (256 MiB), in 1 KiB blocks.
const MAX_BLOCKS: usize = 256 * 1024;

thread_local! {
    /// argon2's working memory (19 MiB with the default parameters), kept per thread and reused.
    /// Allocating it afresh each time fragments the allocator's heap: freed blocks get split by
    /// small allocations and every later hash grows the heap by another 19 MiB.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

fn with_memory<R>(blocks: usize, f: impl FnOnce(&mut [Block]) -> R) -> R {
    MEMORY.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() < blocks {
            m.resize(blocks, Block::default());
        }
        f(&mut m[..blocks])
    })
}

/// An argon2id PHC string for `password` (default parameters: 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    let params = Params::default();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_buf)?;
    let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
        with_memory(params.block_count(), |mem| {
            argon.hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, mem)
        })
        .map_err(Into::into)
    })?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `hash` (constant-time comparison). A malformed
/// hash never matches.
pub fn verify_password(password: &str, hash: &str) -> bool {
    let check = || -> Option<bool> {
        let parsed = PasswordHash::new(hash).ok()?;
        let expected = parsed.hash?;
        let params = Params::try_from(&parsed).ok()?;
        let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
        let version = match parsed.version {
            Some(v) => Version::try_from(v).ok()?,
            None => Version::default(),
        };
        if params.block_count() > MAX_BLOCKS {
            return None;
        }
        let mut salt_buf = [0u8; 64];
        let salt = parsed.salt?.decode_b64(&mut salt_buf).ok()?;
        let argon = Argon2::new(algorithm, version, params.clone());
        let mut out = [0u8; Output::MAX_LENGTH];
        let out = out.get_mut(..expected.len())?;
        with_memory(params.block_count(), |mem| {
            argon.hash_password_into_with_memory(password.as_bytes(), salt, out, mem)
        })
        .ok()?;
        Some(Output::new(out).ok()? == expected)
    };
    check().unwrap_or(false)
}

/// Hex SHA-256, used for application keys and credential cache keys.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A new application key value: a random version-4 GUID.
pub fn new_app_key() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A random password for the bootstrap administrator: 24 characters, about 140 bits.
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut b = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter()
        .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
        .collect()
}

/// A random opaque token (browser session ids).
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_round_trip() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a hash"));
        // Hashes made by the argon2 crate's own API verify too (format compatibility).
        use argon2::password_hash::PasswordHasher;
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"pw-12345", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password("pw-12345", &theirs));
        assert!(!verify_password("pw-12346", &theirs));
    }

    #[test]
    fn app_keys_are_guids_and_unique() {
        let a = new_app_key();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_ne!(a, new_app_key());
    }
}
