use super::*;
use crate::testutil::sign;

const XML: &[u8] = b"<Entities/>";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn trusted_keys_parse_hex_base64_and_comments() {
    let (a, _) = sign(1, XML);
    let (b, _) = sign(2, XML);
    let text = format!(
        "# release keys\n\n{}  # alice\n  {}\n{}\n",
        hex::encode(a.0),
        b64(&b.0),
        hex::encode(a.0).to_uppercase()
    );
    let keys = TrustedKeys::parse(&text).unwrap();
    assert_eq!(keys.keys(), &[a, b]);
}

#[test]
fn trusted_keys_errors_name_the_line() {
    let err = TrustedKeys::parse("# c\nnot-a-key\n").unwrap_err();
    assert!(matches!(err, KeysError::BadKey { line: 2 }), "{err:?}");
    assert!(err.to_string().contains("line 2"), "{err}");
    // 31 bytes of hex, and base64 of 33 bytes.
    TrustedKeys::parse(&"ab".repeat(31)).unwrap_err();
    TrustedKeys::parse(&b64(&[1u8; 33])).unwrap_err();
    assert!(matches!(
        TrustedKeys::parse("# none\n\n").unwrap_err(),
        KeysError::Empty
    ));
}

#[test]
fn trusted_keys_load_reports_the_path() {
    let path = std::env::temp_dir().join(format!("thingport-no-such-keys-{}", std::process::id()));
    let err = TrustedKeys::load(&path).unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_valid_signature_by_a_named_trusted_key_verifies() {
    let (key, sig) = sign(1, XML);
    let (other, _) = sign(2, XML);
    let trusted = TrustedKeys::new(vec![other, key]);
    let file = SignatureFile::format(&key, &sig);
    assert_eq!(
        verify_signature(XML, Some(file.as_bytes()), &trusted).unwrap(),
        key
    );
}

#[test]
fn a_valid_signature_without_a_key_line_verifies_and_accepts_base64() {
    let (key, sig) = sign(1, XML);
    let (other, _) = sign(2, XML);
    let trusted = TrustedKeys::new(vec![other, key]);
    let file = format!("# comment\n\nsignature: {}\n", b64(&sig));
    assert_eq!(
        verify_signature(XML, Some(file.as_bytes()), &trusted).unwrap(),
        key
    );
}

#[test]
fn unsigned_packages_are_refused() {
    let (key, _) = sign(1, XML);
    let err = verify_signature(XML, None, &TrustedKeys::new(vec![key])).unwrap_err();
    assert_eq!(err, SignatureError::Unsigned);
    assert!(err.to_string().contains("unsigned"), "{err}");
}

#[test]
fn a_modified_metadata_is_a_bad_signature() {
    let (key, sig) = sign(1, XML);
    let trusted = TrustedKeys::new(vec![key]);
    let file = SignatureFile::format(&key, &sig);
    let err = verify_signature(b"<Entities />", Some(file.as_bytes()), &trusted).unwrap_err();
    assert_eq!(
        err,
        SignatureError::BadSignature {
            fingerprint: key.fingerprint()
        }
    );
    assert!(err.to_string().starts_with("bad signature"), "{err}");
    let unnamed = format!("signature: {}", hex::encode(sig));
    let err = verify_signature(b"<Entities />", Some(unnamed.as_bytes()), &trusted).unwrap_err();
    assert_eq!(err, SignatureError::NoTrustedKeyVerifies);
}

#[test]
fn a_signature_by_an_untrusted_key_is_refused() {
    let (mallory, sig) = sign(9, XML);
    let (trusted_key, _) = sign(1, XML);
    let trusted = TrustedKeys::new(vec![trusted_key]);
    let file = SignatureFile::format(&mallory, &sig);
    let err = verify_signature(XML, Some(file.as_bytes()), &trusted).unwrap_err();
    assert_eq!(
        err,
        SignatureError::UntrustedKey {
            fingerprint: mallory.fingerprint()
        }
    );
    assert!(err.to_string().contains("untrusted key"), "{err}");
    // Without the key line the server cannot tell whose it is.
    let unnamed = format!("signature: {}", hex::encode(sig));
    let err = verify_signature(XML, Some(unnamed.as_bytes()), &trusted).unwrap_err();
    assert_eq!(err, SignatureError::NoTrustedKeyVerifies);
}

#[test]
fn malformed_signature_files_are_refused() {
    let (key, sig) = sign(1, XML);
    let trusted = TrustedKeys::new(vec![key]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"\xff\xfe".to_vec(), "not UTF-8"),
        (b"".to_vec(), "no signature line"),
        (b"just text".to_vec(), "line 1: expected `key: value`"),
        (b"signature: abcd".to_vec(), "not 64 bytes"),
        (
            format!("key: abcd\nsignature: {}", hex::encode(sig)).into_bytes(),
            "not a 32-byte public key",
        ),
        (
            format!("signature: {0}\nsignature: {0}", hex::encode(sig)).into_bytes(),
            "repeated field",
        ),
        (b"algorithm: rsa".to_vec(), "unexpected or repeated field"),
    ];
    for (file, message) in cases {
        let err = verify_signature(XML, Some(&file), &trusted).unwrap_err();
        assert!(matches!(err, SignatureError::Malformed { .. }), "{err:?}");
        assert!(
            err.to_string().contains(message),
            "{err} should contain {message}"
        );
    }
}
