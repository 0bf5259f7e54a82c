//! A sans-IO Telnet client (RFC 854 and 855, with ECHO 857, SUPPRESS-GO-AHEAD 858, NAWS 1073,
//! TERMINAL-TYPE 1091 and BINARY 856) for the browser's terminal: [`Telnet::receive`] turns the
//! server's bytes into terminal bytes plus replies, [`Telnet::send`] turns keystrokes into
//! Telnet's encoding. It does no I/O, so the console glue owns the sockets and the tests feed
//! bytes directly.
//!
//! Option negotiation keeps, per option and per side, the states of RFC 1143's "Q method"
//! (without its queue): a request that would not change an option's state gets no reply, and an
//! answer to our own request is recognised as such, so two peers can never loop.

use super::frame::Size;

const IAC: u8 = 255;
const DONT: u8 = 254;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
const SB: u8 = 250;
const SE: u8 = 240;

const CR: u8 = b'\r';
const LF: u8 = b'\n';
const NUL: u8 = 0;

const OPT_BINARY: u8 = 0;
const OPT_ECHO: u8 = 1;
const OPT_SGA: u8 = 3;
const OPT_TTYPE: u8 = 24;
const OPT_NAWS: u8 = 31;

/// TERMINAL-TYPE subnegotiation commands (RFC 1091).
const TTYPE_IS: u8 = 0;
const TTYPE_SEND: u8 = 1;

/// The terminal type announced: the browser runs xterm.js.
const TERMINAL_TYPE: &[u8] = b"XTERM-256COLOR";

/// The longest subnegotiation kept, in bytes; the ones we act on are a few bytes, and a server
/// cannot make us buffer more than this by never sending `IAC SE`.
const MAX_SUBNEGOTIATION: usize = 1024;

/// One side of one option, as RFC 1143 names the states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Q {
    No,
    Yes,
    /// We asked to enable it and await the answer.
    WantYes,
    /// We asked to disable it and await the answer.
    // We never ask to turn an option off ourselves; kept for the RFC 1143 table.
    #[allow(dead_code)]
    WantNo,
}

/// Where the parser of the server's stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Data,
    /// After `IAC`.
    Iac,
    /// After `IAC WILL|WONT|DO|DONT`, awaiting the option.
    Negotiation(u8),
    /// Inside `IAC SB ... IAC SE`.
    Subnegotiation,
    /// After an `IAC` inside a subnegotiation.
    SubnegotiationIac,
}

/// The Telnet client state of one console.
#[derive(Debug)]
pub struct Telnet {
    state: State,
    /// The last terminal byte was a CR: a NUL right after it is Telnet's "bare CR" padding.
    after_cr: bool,
    /// Whether we perform each option (answers to DO/DONT).
    us: [Q; 256],
    /// Whether the server performs each option (answers to WILL/WONT).
    him: [Q; 256],
    subnegotiation: Vec<u8>,
    /// The current subnegotiation went over [`MAX_SUBNEGOTIATION`] and will be ignored.
    overflowed: bool,
    size: Size,
}

impl Telnet {
    /// A client for a terminal of `size`, before anything was negotiated.
    pub fn new(size: Size) -> Telnet {
        Telnet {
            state: State::Data,
            after_cr: false,
            us: [Q::No; 256],
            him: [Q::No; 256],
            subnegotiation: Vec::new(),
            overflowed: false,
            size,
        }
    }

    /// What to send to the server at the start: IAC WILL NAWS, IAC WILL TTYPE, IAC DO SGA, IAC DO
    /// ECHO (record these as requested so the answers do not cause replies).
    ///
    /// Servers (login, busybox telnetd, device consoles) mostly negotiate themselves; offering
    /// these up front gets a character-at-a-time, server-echoed session with the right window
    /// size even from servers that wait for the client.
    pub fn start(&mut self, to_server: &mut Vec<u8>) {
        for opt in [OPT_NAWS, OPT_TTYPE] {
            if self.us[usize::from(opt)] == Q::No {
                self.us[usize::from(opt)] = Q::WantYes;
                to_server.extend_from_slice(&[IAC, WILL, opt]);
            }
        }
        for opt in [OPT_SGA, OPT_ECHO] {
            if self.him[usize::from(opt)] == Q::No {
                self.him[usize::from(opt)] = Q::WantYes;
                to_server.extend_from_slice(&[IAC, DO, opt]);
            }
        }
    }

    /// Bytes from the server: terminal data appended to `to_terminal` (IAC IAC → one 0xFF;
    /// commands stripped incl. NOP, GA, and subnegotiations; a CR NUL becomes CR), replies to
    /// `to_server`. Handles commands split across calls at any byte.
    ///
    /// CR NUL is left alone while the server transmits in BINARY, where a NUL is data.
    pub fn receive(&mut self, input: &[u8], to_terminal: &mut Vec<u8>, to_server: &mut Vec<u8>) {
        for &byte in input {
            self.state = match self.state {
                State::Data => match byte {
                    IAC => State::Iac,
                    _ => {
                        let binary = self.him[usize::from(OPT_BINARY)] == Q::Yes;
                        if !(byte == NUL && self.after_cr && !binary) {
                            to_terminal.push(byte);
                        }
                        self.after_cr = byte == CR;
                        State::Data
                    }
                },
                State::Iac => self.command(byte, to_terminal),
                State::Negotiation(verb) => {
                    self.negotiate(verb, byte, to_server);
                    State::Data
                }
                State::Subnegotiation => match byte {
                    IAC => State::SubnegotiationIac,
                    _ => {
                        self.collect(byte);
                        State::Subnegotiation
                    }
                },
                State::SubnegotiationIac => match byte {
                    IAC => {
                        self.collect(IAC);
                        State::Subnegotiation
                    }
                    SE => {
                        self.subnegotiated(to_server);
                        State::Data
                    }
                    // Not allowed inside a subnegotiation: the server forgot its IAC SE. Drop the
                    // subnegotiation and take the byte as the command it is.
                    _ => {
                        self.subnegotiation.clear();
                        self.command(byte, to_terminal)
                    }
                },
            };
        }
    }

    /// Handles the byte after an IAC (outside a subnegotiation) and returns the next state.
    fn command(&mut self, byte: u8, to_terminal: &mut Vec<u8>) -> State {
        match byte {
            IAC => {
                to_terminal.push(IAC);
                self.after_cr = false;
                State::Data
            }
            WILL | WONT | DO | DONT => State::Negotiation(byte),
            SB => {
                self.subnegotiation.clear();
                self.overflowed = false;
                State::Subnegotiation
            }
            // NOP, GA, DM, BRK, IP, AO, AYT, EC, EL, a stray SE, and anything unassigned: none
            // has a meaning for a browser terminal.
            _ => State::Data,
        }
    }

    fn collect(&mut self, byte: u8) {
        if self.subnegotiation.len() < MAX_SUBNEGOTIATION {
            self.subnegotiation.push(byte);
        } else {
            self.overflowed = true;
        }
    }

    /// Acts on a complete subnegotiation (`IAC SB <option> <data> IAC SE`); one cut short by the
    /// size bound is ignored, since its meaning is unknown.
    fn subnegotiated(&mut self, to_server: &mut Vec<u8>) {
        let body = std::mem::take(&mut self.subnegotiation);
        if self.overflowed {
            self.overflowed = false;
            return;
        }
        if body.as_slice() == [OPT_TTYPE, TTYPE_SEND] && self.us[usize::from(OPT_TTYPE)] == Q::Yes {
            // Always the same answer: repeating the last type tells the server the list ends.
            to_server.extend_from_slice(&[IAC, SB, OPT_TTYPE, TTYPE_IS]);
            to_server.extend_from_slice(TERMINAL_TYPE);
            to_server.extend_from_slice(&[IAC, SE]);
        }
        // Keep the allocation for the next one.
        self.subnegotiation = body;
        self.subnegotiation.clear();
    }

    /// Handles `IAC <verb> <opt>` from the server.
    fn negotiate(&mut self, verb: u8, opt: u8, to_server: &mut Vec<u8>) {
        let i = usize::from(opt);
        match verb {
            DO | DONT => {
                let wanted = verb == DO;
                let before = self.us[i];
                let (after, reply) = answer(before, wanted, supported_by_us(opt));
                self.us[i] = after;
                if let Some(yes) = reply {
                    to_server.extend_from_slice(&[IAC, if yes { WILL } else { WONT }, opt]);
                }
                if opt == OPT_NAWS && after == Q::Yes && before != Q::Yes {
                    self.naws(to_server);
                }
            }
            WILL | WONT => {
                let (after, reply) = answer(self.him[i], verb == WILL, wanted_from_him(opt));
                self.him[i] = after;
                if let Some(yes) = reply {
                    to_server.extend_from_slice(&[IAC, if yes { DO } else { DONT }, opt]);
                }
            }
            _ => {}
        }
    }

    /// Keyboard bytes from the browser: 0xFF doubled; outside BINARY mode a lone CR becomes CR
    /// NUL (xterm.js sends "\r" for Enter).
    ///
    /// "Lone" is judged within `input`: a CR at its end becomes CR NUL even if the next call
    /// starts with LF (xterm.js never splits CR LF; the worst case is a harmless extra NUL).
    pub fn send(&mut self, input: &[u8], to_server: &mut Vec<u8>) {
        let binary = self.us[usize::from(OPT_BINARY)] == Q::Yes;
        for (i, &byte) in input.iter().enumerate() {
            match byte {
                IAC => to_server.extend_from_slice(&[IAC, IAC]),
                CR if !binary && input.get(i + 1) != Some(&LF) => {
                    to_server.extend_from_slice(&[CR, NUL])
                }
                _ => to_server.push(byte),
            }
        }
    }

    /// The window size changed: IAC SB NAWS w(u16 BE) h(u16 BE) IAC SE if NAWS is on (0xFF bytes
    /// inside doubled); otherwise remember it for when the server asks.
    pub fn resize(&mut self, size: Size, to_server: &mut Vec<u8>) {
        self.size = size;
        if self.us[usize::from(OPT_NAWS)] == Q::Yes {
            self.naws(to_server);
        }
    }

    /// Sends the NAWS subnegotiation with the current size.
    fn naws(&self, to_server: &mut Vec<u8>) {
        to_server.extend_from_slice(&[IAC, SB, OPT_NAWS]);
        let [w1, w0] = self.size.cols.to_be_bytes();
        let [h1, h0] = self.size.rows.to_be_bytes();
        for byte in [w1, w0, h1, h0] {
            if byte == IAC {
                to_server.push(IAC);
            }
            to_server.push(byte);
        }
        to_server.extend_from_slice(&[IAC, SE]);
    }
}

/// Options we agree to perform when the server sends DO.
fn supported_by_us(opt: u8) -> bool {
    matches!(opt, OPT_NAWS | OPT_TTYPE | OPT_SGA | OPT_BINARY)
}

/// Options we agree the server performs when it sends WILL.
fn wanted_from_him(opt: u8) -> bool {
    matches!(opt, OPT_ECHO | OPT_SGA | OPT_BINARY)
}

/// RFC 1143 (without the queue): given one side's state of an option, whether the peer asks to
/// enable it (`enable`, i.e. WILL/DO) or disable it (WONT/DONT), and whether we accept it
/// enabled, returns the new state and the reply (`Some(true)` to agree to enabling, `Some(false)`
/// to refuse or to acknowledge disabling, `None` for no reply).
fn answer(state: Q, enable: bool, acceptable: bool) -> (Q, Option<bool>) {
    match (state, enable) {
        // A request to enable.
        (Q::No, true) if acceptable => (Q::Yes, Some(true)),
        (Q::No, true) => (Q::No, Some(false)),
        (Q::Yes, true) => (Q::Yes, None),
        // The peer answered our request to disable with "enabled": RFC 1143 calls this an
        // error and settles on disabled, without a reply.
        (Q::WantNo, true) => (Q::No, None),
        // The peer agreed to our request to enable.
        (Q::WantYes, true) => (Q::Yes, None),
        // A request (or answer) to disable: acknowledge only a change from enabled.
        (Q::No, false) => (Q::No, None),
        (Q::Yes, false) => (Q::No, Some(false)),
        (Q::WantNo, false) | (Q::WantYes, false) => (Q::No, None),
    }
}

#[cfg(test)]
mod tests;
