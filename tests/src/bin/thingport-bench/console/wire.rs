//! The two targets of `console` and the clients that measure them, blocking and on loopback:
//!
//! * the **echo** server writes back whatever it reads (declared `TELNET`: it does not negotiate,
//!   so the GAS's Telnet client sees its own offers echoed and settles them, RFC 1143);
//! * the **RFB** server is a fake VNC server (RFB 3.8, security type None, a 1920×1080 screen of
//!   32-bit pixels) that answers every FramebufferUpdateRequest with the whole screen as one Raw
//!   rectangle;
//! * [`Console`] plays the browser on the GAS's console WebSocket (subprotocol
//!   `thingport-console.v1`, the ticket first, `ready`, then binary messages), and [`Tcp`] is the
//!   plain client of a `thingport connect --local` listener. Both are a [`Stream`], so the
//!   keystroke and the RFB client code is the same for both paths.
//!
//! Every socket has a read and a write timeout, so nothing waits forever.

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Bytes, Message, WebSocket};

/// Longest any socket operation may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// The console WebSocket's subprotocol.
const SUBPROTOCOL: &str = "thingport-console.v1";
/// The fake VNC server's screen.
pub const WIDTH: u16 = 1920;
pub const HEIGHT: u16 = 1080;
/// Bytes of one full-screen update: FramebufferUpdate header (4), rectangle header (12), pixels.
pub const UPDATE_BYTES: usize = 4 + 12 + WIDTH as usize * HEIGHT as usize * 4;
/// Sent before the measured keystrokes; its echo shows the Telnet negotiation has settled.
const MARKER: &[u8] = b"thingport-bench-marker";
/// The most unexpected bytes tolerated before an echo (Telnet may still settle an option).
const MAX_STRAY: usize = 64 * 1024;

/// A listening target on 127.0.0.1:0, a thread per connection; stops accepting when dropped.
pub struct Target {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Target {
    pub fn echo() -> Result<Target> {
        Target::start(echo)
    }

    pub fn rfb() -> Result<Target> {
        update();
        Target::start(rfb)
    }

    fn start(serve: fn(TcpStream) -> std::io::Result<()>) -> Result<Target> {
        let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a target server")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("console-target-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(s) = conn else { continue };
                    let _ = std::thread::Builder::new()
                        .name("console-target".into())
                        .spawn(move || {
                            if prepare(&s).is_ok() {
                                let _ = serve(s);
                            }
                        });
                }
            })?;
        Ok(Target { addr, stop })
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn prepare(s: &TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))
}

fn echo(mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        s.write_all(&buf[..n])?;
    }
}

/// The whole update the RFB server sends: headers and pseudo-random pixels (so that a lost,
/// repeated or reordered chunk shows up at the client).
pub fn update() -> &'static [u8] {
    static U: OnceLock<Vec<u8>> = OnceLock::new();
    U.get_or_init(|| {
        let mut v = Vec::with_capacity(UPDATE_BYTES);
        v.extend_from_slice(&[0, 0, 0, 1]);
        for n in [0, 0, WIDTH, HEIGHT] {
            v.extend_from_slice(&n.to_be_bytes());
        }
        v.extend_from_slice(&0i32.to_be_bytes());
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        while v.len() < UPDATE_BYTES {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes()[..8.min(UPDATE_BYTES - v.len())]);
        }
        v
    })
}

/// A VNC server's side of RFB 3.8 (security None), then full-screen Raw updates on request.
fn rfb(mut s: TcpStream) -> std::io::Result<()> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    s.write_all(b"RFB 003.008\n")?;
    let mut version = [0u8; 12];
    s.read_exact(&mut version)?;
    s.write_all(&[1, 1])?;
    let mut chosen = [0u8; 1];
    s.read_exact(&mut chosen)?;
    if chosen[0] != 1 {
        return Err(bad("the client chose a security type other than None"));
    }
    s.write_all(&0u32.to_be_bytes())?;
    let mut shared = [0u8; 1];
    s.read_exact(&mut shared)?;
    let name = b"thingport-bench";
    let mut init = Vec::new();
    init.extend_from_slice(&WIDTH.to_be_bytes());
    init.extend_from_slice(&HEIGHT.to_be_bytes());
    // 32 bpp, depth 24, little-endian, true colour, 255/255/255, shifts 16/8/0.
    init.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
    init.extend_from_slice(&(name.len() as u32).to_be_bytes());
    init.extend_from_slice(name);
    s.write_all(&init)?;
    let mut skip = vec![0u8; 64 * 1024];
    loop {
        let mut kind = [0u8; 1];
        if s.read(&mut kind)? == 0 {
            return Ok(());
        }
        match kind[0] {
            // SetPixelFormat.
            0 => s.read_exact(&mut skip[..19])?,
            // SetEncodings.
            2 => {
                let mut head = [0u8; 3];
                s.read_exact(&mut head)?;
                let n = usize::from(u16::from_be_bytes([head[1], head[2]]));
                s.read_exact(&mut skip[..4 * n])?;
            }
            // FramebufferUpdateRequest: always the whole screen.
            3 => {
                s.read_exact(&mut skip[..9])?;
                s.write_all(update())?;
            }
            // KeyEvent, PointerEvent.
            4 => s.read_exact(&mut skip[..7])?,
            5 => s.read_exact(&mut skip[..5])?,
            _ => return Err(bad("an RFB client message this server does not know")),
        }
    }
}

/// A byte stream to a target, through one path.
pub trait Stream {
    fn write_all(&mut self, bytes: &[u8]) -> Result<()>;
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()>;
}

/// A plain TCP connection (to a `thingport connect` listener).
pub struct Tcp(TcpStream);

impl Tcp {
    pub fn connect(addr: SocketAddr) -> Result<Tcp> {
        let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .with_context(|| format!("cannot connect to {addr}"))?;
        prepare(&s)?;
        Ok(Tcp(s))
    }
}

impl Stream for Tcp {
    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        Ok(self.0.write_all(bytes)?)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.0.read_exact(buf).context("reading from the tunnel")
    }
}

/// A browser console: the WebSocket after `ready`; binary messages carry the bytes.
pub struct Console {
    ws: WebSocket<TcpStream>,
    pending: Bytes,
    at: usize,
    /// The `ready` message.
    pub ready: Value,
}

impl Console {
    /// Opens `url` as the browser does: subprotocol, ticket and size first, then waits for
    /// `ready` (an `error` message fails with its code and text).
    pub fn open(url: &str, ticket: &str) -> Result<Console> {
        let mut req = url
            .into_client_request()
            .with_context(|| format!("bad console URL {url:?}"))?;
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        let host = req.uri().host().context("the console URL has no host")?;
        let port = req.uri().port_u16().unwrap_or(80);
        let s = TcpStream::connect((host, port))
            .with_context(|| format!("cannot connect to the console at {url}"))?;
        prepare(&s)?;
        let (mut ws, _) = tungstenite::client::client(req, s)
            .map_err(|e| anyhow::anyhow!("console WebSocket handshake with {url}: {e}"))?;
        let hello = json!({"ticket": ticket, "cols": 80, "rows": 24}).to_string();
        ws.send(Message::text(hello))?;
        let ready = loop {
            match ws.read().context("waiting for the console's ready")? {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str())
                        .with_context(|| format!("the console sent {t:?}"))?;
                    ensure!(
                        v["type"] == "ready",
                        "the console answered {v} instead of ready"
                    );
                    break v;
                }
                Message::Close(c) => bail!("the console closed before ready: {c:?}"),
                Message::Binary(_) => bail!("the console sent bytes before ready"),
                _ => {}
            }
        };
        Ok(Console {
            ws,
            pending: Bytes::new(),
            at: 0,
            ready,
        })
    }
}

impl Stream for Console {
    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.ws
            .send(Message::Binary(Bytes::copy_from_slice(bytes)))
            .context("writing to the console")
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            if self.at == self.pending.len() {
                match self.ws.read().context("reading from the console")? {
                    Message::Binary(b) => {
                        self.pending = b;
                        self.at = 0;
                    }
                    Message::Text(t) => bail!("the console sent a control message: {t}"),
                    Message::Close(c) => bail!("the console closed: {c:?}"),
                    // Pings are answered by tungstenite on the next write or read.
                    _ => {}
                }
                continue;
            }
            let n = (self.pending.len() - self.at).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&self.pending[self.at..self.at + n]);
            self.at += n;
            done += n;
        }
        Ok(())
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}

/// Sends the marker and reads until its echo: whatever the Telnet negotiation left before it
/// has then been read.
pub fn settle(s: &mut dyn Stream) -> Result<()> {
    s.write_all(MARKER)?;
    let mut seen = Vec::new();
    let mut b = [0u8; 1];
    while !seen.ends_with(MARKER) {
        ensure!(
            seen.len() < MAX_STRAY,
            "no marker echo within {MAX_STRAY} bytes"
        );
        s.read_exact(&mut b)?;
        seen.push(b[0]);
    }
    Ok(())
}

/// One keystroke: writes `key`, reads until it comes back (skipping a bounded number of stray
/// bytes).
pub fn keystroke(s: &mut dyn Stream, key: u8) -> Result<()> {
    s.write_all(&[key])?;
    let mut b = [0u8; 1];
    for _ in 0..MAX_STRAY {
        s.read_exact(&mut b)?;
        if b[0] == key {
            return Ok(());
        }
    }
    bail!("keystroke {key:#x} did not come back within {MAX_STRAY} bytes")
}

/// The client's side of the RFB 3.8 handshake with a server offering None, ClientInit (shared)
/// and ServerInit, which must announce the fake server's screen; then Raw as the only encoding.
pub fn rfb_handshake(s: &mut dyn Stream) -> Result<()> {
    let mut version = [0u8; 12];
    s.read_exact(&mut version)?;
    ensure!(
        &version == b"RFB 003.008\n",
        "the server announced {:?}, expected RFB 003.008",
        String::from_utf8_lossy(&version)
    );
    s.write_all(b"RFB 003.008\n")?;
    let mut types = [0u8; 2];
    s.read_exact(&mut types)?;
    ensure!(types == [1, 1], "security types {types:?}, expected [1, 1]");
    s.write_all(&[1])?;
    let mut result = [0u8; 4];
    s.read_exact(&mut result)?;
    ensure!(result == [0; 4], "SecurityResult {result:?}, expected 0");
    s.write_all(&[1])?;
    let mut init = [0u8; 24];
    s.read_exact(&mut init)?;
    let (w, h) = (
        u16::from_be_bytes([init[0], init[1]]),
        u16::from_be_bytes([init[2], init[3]]),
    );
    ensure!(
        (w, h) == (WIDTH, HEIGHT) && init[4] == 32,
        "ServerInit announced {w}×{h} at {} bpp",
        init[4]
    );
    let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
    ensure!(name_len <= 256, "ServerInit name of {name_len} bytes");
    let mut name = vec![0u8; name_len];
    s.read_exact(&mut name)?;
    s.write_all(&[2, 0, 0, 1, 0, 0, 0, 0])
}

/// One non-incremental FramebufferUpdateRequest for the whole screen, and its update read into
/// `buf` (`UPDATE_BYTES`) and checked byte for byte.
pub fn full_update(s: &mut dyn Stream, buf: &mut [u8]) -> Result<()> {
    let [w1, w0] = WIDTH.to_be_bytes();
    let [h1, h0] = HEIGHT.to_be_bytes();
    s.write_all(&[3, 0, 0, 0, 0, 0, w1, w0, h1, h0])?;
    s.read_exact(buf)?;
    ensure!(
        buf == update(),
        "the framebuffer update arrived damaged (the bytes differ from what the server sent)"
    );
    Ok(())
}
