use super::*;

const NOP: u8 = 241;
const GA: u8 = 249;
const AYT: u8 = 246;

fn size(cols: u16, rows: u16) -> Size {
    Size { cols, rows }
}

/// Feeds `input` to `telnet`, returning (terminal bytes, replies).
fn feed(telnet: &mut Telnet, input: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut terminal, mut server) = (Vec::new(), Vec::new());
    telnet.receive(input, &mut terminal, &mut server);
    (terminal, server)
}

fn started() -> Telnet {
    let mut telnet = Telnet::new(size(80, 24));
    let mut out = Vec::new();
    telnet.start(&mut out);
    telnet
}

#[test]
fn start_offers_naws_and_ttype_and_asks_for_sga_and_echo() {
    let mut telnet = Telnet::new(size(80, 24));
    let mut out = Vec::new();
    telnet.start(&mut out);
    assert_eq!(
        out,
        [IAC, WILL, OPT_NAWS, IAC, WILL, OPT_TTYPE, IAC, DO, OPT_SGA, IAC, DO, OPT_ECHO]
    );
    // Asking again while the requests are pending sends nothing.
    let mut again = Vec::new();
    telnet.start(&mut again);
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn answers_to_our_requests_get_no_reply_except_the_window_size() {
    let mut telnet = started();
    let answers = [
        IAC, DO, OPT_NAWS, IAC, DO, OPT_TTYPE, IAC, WILL, OPT_SGA, IAC, WILL, OPT_ECHO,
    ];
    let (terminal, reply) = feed(&mut telnet, &answers);
    assert!(terminal.is_empty());
    // DO NAWS is the server asking for the size: it is sent, and nothing else is.
    assert_eq!(reply, [IAC, SB, OPT_NAWS, 0, 80, 0, 24, IAC, SE]);
    // Replaying the same answers (a server that repeats itself) produces nothing at all: no loop.
    let (terminal, reply) = feed(&mut telnet, &answers);
    assert!(terminal.is_empty());
    assert!(reply.is_empty(), "{reply:?}");
}

#[test]
fn refusals_of_our_requests_get_no_reply() {
    let mut telnet = started();
    let refusals = [
        IAC, DONT, OPT_NAWS, IAC, DONT, OPT_TTYPE, IAC, WONT, OPT_SGA, IAC, WONT, OPT_ECHO,
    ];
    let (_, reply) = feed(&mut telnet, &refusals);
    assert!(reply.is_empty(), "{reply:?}");
    let (_, reply) = feed(&mut telnet, &refusals);
    assert!(reply.is_empty(), "{reply:?}");
    // And a later resize sends nothing, NAWS being off.
    let mut out = Vec::new();
    telnet.resize(size(100, 30), &mut out);
    assert!(out.is_empty());
}

#[test]
fn server_first_negotiation_without_start() {
    let mut telnet = Telnet::new(size(132, 43));
    // DO NAWS: WILL plus the size.
    let (_, reply) = feed(&mut telnet, &[IAC, DO, OPT_NAWS]);
    assert_eq!(
        reply,
        [IAC, WILL, OPT_NAWS, IAC, SB, OPT_NAWS, 0, 132, 0, 43, IAC, SE]
    );
    // DO TTYPE: WILL.
    let (_, reply) = feed(&mut telnet, &[IAC, DO, OPT_TTYPE]);
    assert_eq!(reply, [IAC, WILL, OPT_TTYPE]);
    // WILL ECHO, WILL SGA, WILL BINARY: DO.
    for opt in [OPT_ECHO, OPT_SGA, OPT_BINARY] {
        let (_, reply) = feed(&mut telnet, &[IAC, WILL, opt]);
        assert_eq!(reply, [IAC, DO, opt], "option {opt}");
    }
    // DO SGA, DO BINARY: WILL.
    for opt in [OPT_SGA, OPT_BINARY] {
        let (_, reply) = feed(&mut telnet, &[IAC, DO, opt]);
        assert_eq!(reply, [IAC, WILL, opt], "option {opt}");
    }
    // Every one of them repeated: silence.
    let repeated = [
        IAC, DO, OPT_NAWS, IAC, DO, OPT_TTYPE, IAC, WILL, OPT_ECHO, IAC, WILL, OPT_SGA, IAC, WILL,
        OPT_BINARY, IAC, DO, OPT_SGA, IAC, DO, OPT_BINARY,
    ];
    let (_, reply) = feed(&mut telnet, &repeated);
    assert!(reply.is_empty(), "{reply:?}");
}

#[test]
fn unknown_options_are_refused_once() {
    let mut telnet = started();
    // DO ECHO (we echo? no), DO 99, WILL NAWS (the server reporting its size? no), WILL 99.
    let (_, reply) = feed(
        &mut telnet,
        &[
            IAC, DO, OPT_ECHO, IAC, DO, 99, IAC, WILL, OPT_NAWS, IAC, WILL, 99,
        ],
    );
    assert_eq!(
        reply,
        [IAC, WONT, OPT_ECHO, IAC, WONT, 99, IAC, DONT, OPT_NAWS, IAC, DONT, 99]
    );
    // Our refusals echoed back as DONT/WONT change nothing: no reply.
    let (_, reply) = feed(
        &mut telnet,
        &[
            IAC, DONT, OPT_ECHO, IAC, DONT, 99, IAC, WONT, OPT_NAWS, IAC, WONT, 99,
        ],
    );
    assert!(reply.is_empty(), "{reply:?}");
}

#[test]
fn disabling_is_acknowledged_only_when_it_changes_state() {
    let mut telnet = Telnet::new(size(80, 24));
    feed(&mut telnet, &[IAC, WILL, OPT_ECHO, IAC, DO, OPT_SGA]);
    // WONT ECHO while on: DONT. DONT SGA while on: WONT.
    let (_, reply) = feed(&mut telnet, &[IAC, WONT, OPT_ECHO, IAC, DONT, OPT_SGA]);
    assert_eq!(reply, [IAC, DONT, OPT_ECHO, IAC, WONT, OPT_SGA]);
    // Again: already off, no reply.
    let (_, reply) = feed(&mut telnet, &[IAC, WONT, OPT_ECHO, IAC, DONT, OPT_SGA]);
    assert!(reply.is_empty(), "{reply:?}");
    // And it can be enabled again.
    let (_, reply) = feed(&mut telnet, &[IAC, WILL, OPT_ECHO]);
    assert_eq!(reply, [IAC, DO, OPT_ECHO]);
}

#[test]
fn two_clients_negotiating_with_each_other_terminate() {
    // Not a real setup, but the strongest loop check: two instances that both start, each
    // feeding its replies to the other until both fall silent.
    let (mut a, mut b) = (Telnet::new(size(80, 24)), Telnet::new(size(90, 30)));
    let (mut to_b, mut to_a) = (Vec::new(), Vec::new());
    a.start(&mut to_b);
    b.start(&mut to_a);
    for _ in 0..10 {
        let (mut next_a, mut next_b, mut sink) = (Vec::new(), Vec::new(), Vec::new());
        a.receive(&to_a, &mut sink, &mut next_b);
        b.receive(&to_b, &mut sink, &mut next_a);
        if next_a.is_empty() && next_b.is_empty() {
            return;
        }
        (to_a, to_b) = (next_a, next_b);
    }
    panic!("negotiation did not settle in 10 rounds");
}

#[test]
fn naws_subnegotiation_and_resize() {
    let mut telnet = started();
    let mut out = Vec::new();
    // Before the server agreed: remembered, nothing sent.
    telnet.resize(size(100, 40), &mut out);
    assert!(out.is_empty());
    let (_, reply) = feed(&mut telnet, &[IAC, DO, OPT_NAWS]);
    assert_eq!(reply, [IAC, SB, OPT_NAWS, 0, 100, 0, 40, IAC, SE]);
    telnet.resize(size(300, 2), &mut out);
    assert_eq!(out, [IAC, SB, OPT_NAWS, 1, 44, 0, 2, IAC, SE]);
}

#[test]
fn naws_doubles_a_255_dimension() {
    let mut telnet = started();
    feed(&mut telnet, &[IAC, DO, OPT_NAWS]);
    let mut out = Vec::new();
    telnet.resize(size(255, 255), &mut out);
    assert_eq!(out, [IAC, SB, OPT_NAWS, 0, IAC, IAC, 0, IAC, IAC, IAC, SE]);
    let mut out = Vec::new();
    telnet.resize(size(0xFF01, 0x01FF), &mut out);
    assert_eq!(out, [IAC, SB, OPT_NAWS, IAC, IAC, 1, 1, IAC, IAC, IAC, SE]);
}

#[test]
fn terminal_type() {
    let mut telnet = started();
    let send = [IAC, SB, OPT_TTYPE, TTYPE_SEND, IAC, SE];
    // Before TTYPE is agreed, a SEND is ignored.
    let (_, reply) = feed(&mut telnet, &send);
    assert!(reply.is_empty(), "{reply:?}");
    let (terminal, reply) = feed(&mut telnet, &[&[IAC, DO, OPT_TTYPE][..], &send].concat());
    assert!(terminal.is_empty());
    let mut expected = vec![IAC, SB, OPT_TTYPE, TTYPE_IS];
    expected.extend_from_slice(b"XTERM-256COLOR");
    expected.extend_from_slice(&[IAC, SE]);
    assert_eq!(reply, expected);
    // Asked again (cycling through the list), the same answer ends it.
    let (_, reply) = feed(&mut telnet, &send);
    assert_eq!(reply, expected);
    // Other subnegotiations are ignored.
    let (terminal, reply) = feed(&mut telnet, &[IAC, SB, OPT_TTYPE, TTYPE_IS, b'x', IAC, SE]);
    assert!(terminal.is_empty() && reply.is_empty());
}

#[test]
fn commands_are_stripped_and_iac_iac_is_data() {
    let mut telnet = Telnet::new(size(80, 24));
    let input = [
        b'a', IAC, NOP, b'b', IAC, GA, b'c', IAC, AYT, IAC, IAC, b'd', IAC, SB, 42, 1, 2, IAC, IAC,
        3, IAC, SE, b'e', IAC, SE, b'f',
    ];
    let (terminal, reply) = feed(&mut telnet, &input);
    assert_eq!(terminal, [b'a', b'b', b'c', IAC, b'd', b'e', b'f']);
    assert!(reply.is_empty());
}

#[test]
fn cr_nul_becomes_cr() {
    let mut telnet = Telnet::new(size(80, 24));
    let (terminal, _) = feed(&mut telnet, b"a\r\0b\r\nc\0d\r\r\0");
    assert_eq!(terminal, b"a\rb\r\nc\0d\r\r");
    // Split between the CR and the NUL, and with a command between them.
    let (terminal, _) = feed(&mut telnet, b"x\r");
    assert_eq!(terminal, b"x\r");
    let (terminal, _) = feed(&mut telnet, &[IAC, NOP, 0, b'y']);
    assert_eq!(terminal, b"y");
    // In BINARY from the server, NUL is data.
    feed(&mut telnet, &[IAC, WILL, OPT_BINARY]);
    let (terminal, _) = feed(&mut telnet, b"\r\0");
    assert_eq!(terminal, b"\r\0");
}

#[test]
fn keyboard_encoding() {
    let mut telnet = Telnet::new(size(80, 24));
    let mut out = Vec::new();
    telnet.send(b"ls\r", &mut out);
    assert_eq!(out, b"ls\r\0");
    out.clear();
    telnet.send(b"a\r\nb\rc\r", &mut out);
    assert_eq!(out, b"a\r\nb\r\0c\r\0");
    out.clear();
    telnet.send(&[b'x', IAC, b'y', IAC, IAC], &mut out);
    assert_eq!(out, [b'x', IAC, IAC, b'y', IAC, IAC, IAC, IAC]);
    // In BINARY (we transmit binary), CR is sent as is; 0xFF is still doubled.
    feed(&mut telnet, &[IAC, DO, OPT_BINARY]);
    out.clear();
    telnet.send(&[b'\r', IAC], &mut out);
    assert_eq!(out, [b'\r', IAC, IAC]);
}

#[test]
fn oversized_subnegotiation_is_dropped() {
    let mut telnet = started();
    feed(&mut telnet, &[IAC, DO, OPT_TTYPE]);
    let mut input = vec![IAC, SB, OPT_TTYPE, TTYPE_SEND];
    input.extend(std::iter::repeat_n(b'z', 100_000));
    input.extend_from_slice(&[IAC, SE, b'o', b'k']);
    let (terminal, reply) = feed(&mut telnet, &input);
    assert_eq!(terminal, b"ok");
    assert!(reply.is_empty(), "{reply:?}");
    assert!(telnet.subnegotiation.capacity() <= 2 * MAX_SUBNEGOTIATION);
    // The next subnegotiation works again.
    let (_, reply) = feed(&mut telnet, &[IAC, SB, OPT_TTYPE, TTYPE_SEND, IAC, SE]);
    assert!(!reply.is_empty());
}

#[test]
fn unterminated_subnegotiation_ends_at_the_next_command() {
    let mut telnet = started();
    // IAC SB NAWS ... then IAC WILL ECHO without IAC SE: the WILL is still understood.
    let (terminal, reply) = feed(
        &mut telnet,
        &[IAC, SB, OPT_NAWS, 1, 2, IAC, WILL, OPT_ECHO, b'k'],
    );
    assert_eq!(terminal, b"k");
    assert!(reply.is_empty(), "{reply:?}"); // answers our DO ECHO
    let (_, reply) = feed(&mut telnet, &[IAC, WILL, OPT_BINARY]);
    assert_eq!(reply, [IAC, DO, OPT_BINARY]);
}

/// A recorded-style server stream: negotiation, a login banner with CR LF and CR NUL, an escaped
/// 0xFF, commands, and subnegotiations.
fn server_stream() -> Vec<u8> {
    let mut s = vec![
        IAC, DO, OPT_TTYPE, IAC, DO, OPT_NAWS, IAC, WILL, OPT_ECHO, IAC, WILL, OPT_SGA, IAC, DO,
        39, IAC, WILL, 5,
    ];
    s.extend_from_slice(&[IAC, SB, OPT_TTYPE, TTYPE_SEND, IAC, SE]);
    s.extend_from_slice(b"\r\nWelcome\r\0\r\nlogin: ");
    s.extend_from_slice(&[IAC, GA, b'x', IAC, IAC, b'y', IAC, NOP]);
    s.extend_from_slice(&[IAC, SB, 200, 1, IAC, IAC, 2, IAC, SE]);
    s.extend_from_slice(&[IAC, DONT, OPT_NAWS, IAC, WONT, OPT_ECHO, b'\r', 0, b'z']);
    s
}

#[test]
fn the_stream_gives_the_same_result_split_anywhere() {
    let stream = server_stream();
    let mut whole = started();
    let (terminal, reply) = feed(&mut whole, &stream);
    assert_eq!(terminal, b"\r\nWelcome\r\r\nlogin: x\xffy\rz");
    assert!(!reply.is_empty());

    // One byte at a time.
    let mut bytewise = started();
    let (mut t, mut r) = (Vec::new(), Vec::new());
    for byte in &stream {
        bytewise.receive(std::slice::from_ref(byte), &mut t, &mut r);
    }
    assert_eq!((&t, &r), (&terminal, &reply));

    // Cut in two at every position.
    for cut in 0..=stream.len() {
        let mut split = started();
        let (mut t, mut r) = (Vec::new(), Vec::new());
        split.receive(&stream[..cut], &mut t, &mut r);
        split.receive(&stream[cut..], &mut t, &mut r);
        assert_eq!((&t, &r), (&terminal, &reply), "cut at {cut}");
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap deterministic fuzz: a linear congruential stream biased toward Telnet bytes.
    let mut x: u32 = 12345;
    let mut telnet = started();
    let (mut t, mut r) = (Vec::new(), Vec::new());
    for _ in 0..200_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let byte = match (x >> 16) % 4 {
            0 => IAC,
            1 => [WILL, WONT, DO, DONT, SB, SE][((x >> 8) % 6) as usize],
            _ => (x >> 20) as u8,
        };
        telnet.receive(&[byte], &mut t, &mut r);
    }
    let mut out = Vec::new();
    telnet.resize(size(500, 300), &mut out);
    telnet.send(&t, &mut out);
}
