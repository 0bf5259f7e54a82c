//! SHA-256 digests: the identity of a stored package and the pin of a native library.

use sha2::{Digest as _, Sha256 as Hasher};
use std::fmt;
use std::str::FromStr;

/// A SHA-256 digest. Displays (and parses) as 64 lowercase hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Hasher::digest(bytes).into())
    }

    /// The full digest as 64 lowercase hexadecimal digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hexadecimal digits followed by `…`, for messages.
    pub fn short(&self) -> String {
        format!("{}…", &self.to_hex()[..12])
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({})", self.to_hex())
    }
}

/// The text is not 64 hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected 64 hexadecimal digits")]
pub struct InvalidDigest;

impl FromStr for Sha256 {
    type Err = InvalidDigest;

    /// Parses 64 hexadecimal digits, either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 {
            return Err(InvalidDigest);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| InvalidDigest)?;
        Ok(Self(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest_round_trips_through_hex() {
        let d = Sha256::of(b"abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_hex().parse::<Sha256>().unwrap(), d);
        assert_eq!(d.to_hex().to_uppercase().parse::<Sha256>().unwrap(), d);
        assert_eq!(d.short(), "ba7816bf8f01…");
    }

    #[test]
    fn bad_hex_is_refused() {
        assert_eq!("abc".parse::<Sha256>(), Err(InvalidDigest));
        assert_eq!("z".repeat(64).parse::<Sha256>(), Err(InvalidDigest));
        assert_eq!("é".repeat(32).parse::<Sha256>(), Err(InvalidDigest));
    }
}
