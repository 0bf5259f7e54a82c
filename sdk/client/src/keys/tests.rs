use super::*;
use thingport_package::{verify_signature, TrustedKeys};

#[test]
fn a_generated_key_round_trips_through_pem_and_signs_what_the_server_verifies() {
    let (key, pkcs8) = SigningKey::generate().unwrap();
    let pem = to_pem(&pkcs8);
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert!(pem.lines().all(|l| l.len() <= 64));
    let again = SigningKey::parse(pem.as_bytes()).unwrap();
    assert_eq!(again.public_key(), key.public_key());
    let der = SigningKey::parse(&pkcs8).unwrap();
    assert_eq!(der.public_key(), key.public_key());

    let xml = b"<Entities/>";
    let file = key.signature_file(xml);
    let trusted = TrustedKeys::new(vec![key.public_key()]);
    assert_eq!(
        verify_signature(xml, Some(file.as_bytes()), &trusted).unwrap(),
        key.public_key()
    );
    assert!(verify_signature(b"<Entities />", Some(file.as_bytes()), &trusted).is_err());
}

#[test]
fn the_public_key_line_is_a_trusted_keys_file_line() {
    let (key, _) = SigningKey::generate().unwrap();
    let line = public_key_line(&key.public_key(), "release\nkey");
    assert!(!line.contains('\n'));
    let trusted = TrustedKeys::parse(&line).unwrap();
    assert_eq!(trusted.keys(), &[key.public_key()]);
}

#[test]
fn a_hex_seed_is_accepted() {
    // RFC 8032, test 1.
    let seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    let key = SigningKey::parse(format!("# test key\n{seed}\n").as_bytes()).unwrap();
    assert_eq!(
        hex::encode(key.public_key().0),
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    );
    assert_eq!(
        hex::encode(key.sign(b"")),
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
         5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    );
}

#[test]
fn an_openssl_pkcs8_v1_key_is_accepted() {
    // `openssl genpkey -algorithm ed25519` (PKCS#8 v1, no public key), seed of RFC 8032 test 1.
    let pem = "-----BEGIN PRIVATE KEY-----\n\
               MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n\
               -----END PRIVATE KEY-----\n";
    let key = SigningKey::parse(pem.as_bytes()).unwrap();
    assert_eq!(
        hex::encode(key.public_key().0),
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    );
}

#[test]
fn garbage_is_refused_and_debug_hides_the_private_key() {
    for bad in [
        &b"not a key"[..],
        b"-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n",
        b"-----BEGIN PRIVATE KEY-----\nMC4C\n",
        b"",
    ] {
        assert!(SigningKey::parse(bad).is_err(), "{bad:?}");
    }
    let seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    let key = SigningKey::parse(seed.as_bytes()).unwrap();
    let shown = format!("{key:?}");
    assert!(!shown.contains(seed), "{shown}");
    assert!(shown.contains("d75a9801"), "{shown}");
}

#[test]
fn keygen_writes_a_private_file_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("release.key");
    let public = keygen(&path).unwrap();
    assert_eq!(SigningKey::load(&path).unwrap().public_key(), public);
    assert_eq!(permissions_warning(&path), None);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(permissions_warning(&path).unwrap().contains("chmod 600"));
    }
    let before = std::fs::read(&path).unwrap();
    let err = keygen(&path).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}
