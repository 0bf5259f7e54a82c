//! Property-based tests of the wire decoders (issue 16): arbitrary input never panics and is
//! refused with an error; valid input round-trips. Allocation is bounded by the decoders' own
//! limits ([`tunnel::MAX_CREDENTIAL`], the frame's length, the WebSocket's message size), which
//! these tests exercise at and past their edges. The case count is proptest's default (256 per
//! property), so a run is bounded and takes well under a second.

use crate::control::{AgentMessage, PlatformMessage};
use crate::tunnel::{self, Frame, Grant, Kind, Role, HEADER_LEN};
use proptest::prelude::*;

fn kind() -> impl Strategy<Value = Kind> {
    (1u8..=7).prop_map(|b| Kind::from_u8(b).expect("1..=7 are kinds"))
}

fn id() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            proptest::char::range('a', 'z'),
            proptest::char::range('0', '9')
        ],
        1..=tunnel::MAX_ID_LEN,
    )
    .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #[test]
    fn any_bytes_parse_to_a_frame_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(f) = Frame::parse(&bytes) {
            prop_assert!(bytes.len() >= HEADER_LEN);
            prop_assert_eq!(f.payload.len(), bytes.len() - HEADER_LEN);
            // The accessors of a parsed frame never panic either.
            let _ = f.credit();
            let _ = f.reason();
        }
    }

    #[test]
    fn data_frames_round_trip(stream in 1u32.., payload in proptest::collection::vec(any::<u8>(), 1..4096)) {
        let mut out = Vec::new();
        tunnel::write_frame(&mut out, Kind::Data, stream, &payload);
        let f = Frame::parse(&out).expect("a written frame parses");
        prop_assert_eq!(f.kind, Kind::Data);
        prop_assert_eq!(f.stream, stream);
        prop_assert_eq!(f.payload, &payload[..]);
    }

    #[test]
    fn each_kind_takes_only_its_payload(kind in kind(), stream in 1u32.., len in 0usize..600) {
        let payload = vec![b'x'; len];
        let mut out = Vec::new();
        tunnel::write_frame(&mut out, kind, stream, &payload);
        let expected_ok = match kind {
            Kind::Open | Kind::Opened | Kind::Fin => len == 0,
            Kind::Data => len > 0,
            Kind::Credit => len == 4,
            Kind::OpenFailed | Kind::Reset => len <= tunnel::MAX_REASON,
        };
        prop_assert_eq!(Frame::parse(&out).is_ok(), expected_ok);
        // Stream 0 is never a stream.
        let zero = tunnel::header(kind, 0);
        prop_assert!(Frame::parse(&zero).is_err());
    }

    #[test]
    fn credit_and_reason_frames_round_trip(stream in 1u32.., bytes in any::<u32>(), reason in ".{0,300}") {
        let c = tunnel::credit_frame(stream, bytes);
        prop_assert_eq!(Frame::parse(&c).unwrap().credit(), bytes);
        let r = tunnel::reason_frame(Kind::Reset, stream, &reason);
        let parsed = Frame::parse(&r).unwrap().reason();
        // Long reasons are cut (at a character boundary), never corrupted.
        prop_assert!(reason.starts_with(&parsed), "{:?} / {:?}", reason, parsed);
    }

    #[test]
    fn any_text_is_refused_or_a_valid_credential(token in ".{0,400}", key in proptest::collection::vec(any::<u8>(), 0..64), now in any::<i64>()) {
        // Never a panic, whatever the token, key or clock.
        let _ = tunnel::verify(&token, &key, now);
    }

    #[test]
    fn oversized_credentials_are_refused_before_any_work(extra in 1usize..10_000) {
        let token = "v".repeat(tunnel::MAX_CREDENTIAL + extra);
        prop_assert_eq!(tunnel::verify(&token, b"k", 0), Err(tunnel::CredentialError::Malformed));
    }

    #[test]
    fn credentials_round_trip_and_any_change_breaks_them(
        session in id(), gas in id(), nonce in id(), agent in any::<bool>(),
        life in 1i64..tunnel::MAX_GRANT_LIFETIME_MS, key in proptest::collection::vec(any::<u8>(), 1..64),
        flip in any::<usize>(),
    ) {
        let now = 1_700_000_000_000i64;
        let grant = Grant { session, gas, nonce, role: if agent { Role::Agent } else { Role::Client }, exp: now + life };
        let token = tunnel::sign(&grant, &key);
        prop_assert_eq!(tunnel::verify(&token, &key, now), Ok(grant));
        // One character changed anywhere: refused (malformed or a bad signature), never accepted.
        let mut bytes = token.into_bytes();
        let at = flip % bytes.len();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        if let Ok(changed) = String::from_utf8(bytes) {
            prop_assert!(tunnel::verify(&changed, &key, now).is_err());
        }
    }

    #[test]
    fn any_text_decodes_to_a_control_message_or_an_error(text in ".{0,400}") {
        let _ = AgentMessage::decode(&text);
        let _ = PlatformMessage::decode(&text);
    }

    #[test]
    fn control_messages_round_trip(id in any::<u64>(), thing in ".{0,200}", agent in ".{0,200}") {
        for m in [
            AgentMessage::Hello { agent: agent.clone() },
            AgentMessage::Bind { id, thing: thing.clone() },
            AgentMessage::Unbind { id, thing: thing.clone() },
        ] {
            let text = crate::control::encode(&m);
            prop_assert_eq!(AgentMessage::decode(&text), Ok(m));
        }
    }
}
