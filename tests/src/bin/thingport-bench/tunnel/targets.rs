//! The targets the tunnel reaches, run by the benchmark itself on loopback, and the blocking
//! clients that measure them, the same code for the direct path and for the tunnel.
//!
//! * the **echo** server writes back whatever it reads;
//! * the **bulk** server takes a 9-byte request: `U` + length (it reads that many bytes, checks
//!   them against the pattern, and answers the count it read and `1` if every byte matched),
//!   `D` + length (it writes that many bytes of the pattern, then closes) or `E` (from then on it
//!   echoes, so that a sibling connection of a bulk transfer can ping through the same session);
//! * the **many** server ([`ManyEcho`]) echoes too, but on an event loop of its own with a deep
//!   accept backlog (4,096), for thousands of connections at once.
//!
//! Both run a blocking thread per connection (the leanest server for one connection at a time: no
//! event loop between the socket and the copy). Every socket has a read and a write timeout, so
//! no thread or measurement waits forever.

use anyhow::{bail, ensure, Context, Result};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Size of every bulk write and read.
pub const CHUNK: usize = 128 * 1024;
/// Period of the bulk pattern: not a multiple of any buffer size, so a lost, repeated or
/// reordered chunk shows up as a mismatch.
const PERIOD: usize = 1_000_003;
/// Longest any socket operation may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// `PERIOD + CHUNK` pseudo-random bytes: the stream's byte `p` is `pattern()[p % PERIOD]`, and
/// any `CHUNK` bytes from any offset are one contiguous slice.
fn pattern() -> &'static [u8] {
    static P: OnceLock<Vec<u8>> = OnceLock::new();
    P.get_or_init(|| {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut v: Vec<u8> = (0..PERIOD)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        v.extend_from_within(..CHUNK);
        v
    })
}

/// The pattern's bytes `[pos, pos + len)`, `len <= CHUNK`.
fn expected(pos: u64, len: usize) -> &'static [u8] {
    let at = (pos % PERIOD as u64) as usize;
    &pattern()[at..at + len]
}

/// A listening target; stops accepting when dropped.
pub struct TargetServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

#[derive(Clone, Copy)]
enum Kind {
    Echo,
    Bulk,
}

impl TargetServer {
    pub fn echo() -> Result<Self> {
        Self::start(Kind::Echo)
    }

    pub fn bulk() -> Result<Self> {
        pattern();
        Self::start(Kind::Bulk)
    }

    fn start(kind: Kind) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a target server")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("bench-target-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(s) = conn else { continue };
                    let _ = std::thread::Builder::new()
                        .name("bench-target".into())
                        .spawn(move || {
                            let _ = prepare(&s);
                            let _ = match kind {
                                Kind::Echo => echo(s),
                                Kind::Bulk => bulk(s),
                            };
                        });
                }
            })?;
        Ok(TargetServer { addr, stop })
    }
}

impl Drop for TargetServer {
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
            return s.shutdown(Shutdown::Write);
        }
        s.write_all(&buf[..n])?;
    }
}

fn bulk(mut s: TcpStream) -> std::io::Result<()> {
    let mut req = [0u8; 9];
    s.read_exact(&mut req)?;
    let len = u64::from_le_bytes(req[1..].try_into().expect("8 bytes"));
    match req[0] {
        b'U' => {
            let (count, ok) = receive(&mut s, len, None)?;
            let mut answer = [0u8; 9];
            answer[..8].copy_from_slice(&count.to_le_bytes());
            answer[8] = u8::from(ok);
            s.write_all(&answer)?;
            s.shutdown(Shutdown::Write)
        }
        b'D' => {
            send(&mut s, len, None)?;
            s.shutdown(Shutdown::Write)
        }
        b'E' => echo(s),
        _ => Err(ErrorKind::InvalidData.into()),
    }
}

/// Writes `len` bytes of the pattern (until `deadline`, if any).
fn send(s: &mut TcpStream, len: u64, deadline: Option<Instant>) -> std::io::Result<()> {
    let mut pos = 0u64;
    while pos < len {
        past(deadline)?;
        let n = (len - pos).min(CHUNK as u64) as usize;
        s.write_all(expected(pos, n))?;
        pos += n as u64;
    }
    Ok(())
}

/// Reads until EOF or `limit` bytes (or `deadline`, if any); answers the count and whether every
/// byte matched.
fn receive(
    s: &mut TcpStream,
    limit: u64,
    deadline: Option<Instant>,
) -> std::io::Result<(u64, bool)> {
    let mut buf = vec![0u8; CHUNK];
    let (mut pos, mut ok) = (0u64, true);
    while pos < limit {
        past(deadline)?;
        let want = (limit - pos).min(CHUNK as u64) as usize;
        let n = s.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        ok &= buf[..n] == *expected(pos, n);
        pos += n as u64;
    }
    Ok((pos, ok))
}

fn past(deadline: Option<Instant>) -> std::io::Result<()> {
    match deadline {
        Some(d) if Instant::now() > d => Err(std::io::Error::new(
            ErrorKind::TimedOut,
            "the transfer hit the phase's time cap",
        )),
        _ => Ok(()),
    }
}

fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .with_context(|| format!("cannot connect to {addr}"))?;
    prepare(&s)?;
    Ok(s)
}

/// One bulk transfer of `len` bytes to (`up`) or from the bulk server at `addr`; answers its
/// time: from the request until the server confirmed every byte (up), or until the last byte
/// arrived (down). Fails on a short count, a mismatched byte, or when it takes longer than `cap`.
pub fn bulk_transfer(addr: SocketAddr, len: u64, up: bool, cap: Duration) -> Result<Duration> {
    let deadline = Some(Instant::now() + cap);
    let mut s = connect(addr)?;
    let mut req = [0u8; 9];
    req[0] = if up { b'U' } else { b'D' };
    req[1..].copy_from_slice(&len.to_le_bytes());
    let t = Instant::now();
    s.write_all(&req).context("bulk: sending the request")?;
    if up {
        send(&mut s, len, deadline).context("bulk up: sending")?;
        // No half-close before the answer: the server answers after `len` bytes, and a relay
        // that does not forward a half-close (wstunnel closes both ways) would drop the answer.
        let mut answer = [0u8; 9];
        s.read_exact(&mut answer)
            .context("bulk up: reading the server's count")?;
        let took = t.elapsed();
        let count = u64::from_le_bytes(answer[..8].try_into().expect("8 bytes"));
        ensure!(
            count == len && answer[8] == 1,
            "bulk up through {addr}: the target received {count} of {len} bytes, {}",
            if answer[8] == 1 {
                "all matching"
            } else {
                "NOT all matching the bytes sent"
            }
        );
        Ok(took)
    } else {
        let (count, ok) = receive(&mut s, len + 1, deadline).context("bulk down: receiving")?;
        let took = t.elapsed();
        ensure!(
            count == len && ok,
            "bulk down through {addr}: received {count} of {len} bytes, {}",
            if ok {
                "all matching"
            } else {
                "NOT all matching the bytes sent"
            }
        );
        Ok(took)
    }
}

/// A connection to an echo server for timed round trips.
pub struct Echo {
    s: TcpStream,
    out: [u8; 64],
    back: [u8; 64],
    seq: u64,
}

impl Echo {
    pub fn connect(addr: SocketAddr) -> Result<Self> {
        Ok(Echo {
            s: connect(addr)?,
            out: [0; 64],
            back: [0; 64],
            seq: 0,
        })
    }

    /// A connection to the bulk server at `addr` switched to echo (request `E`).
    pub fn connect_bulk(addr: SocketAddr) -> Result<Self> {
        let mut e = Self::connect(addr)?;
        let mut req = [0u8; 9];
        req[0] = b'E';
        e.s.write_all(&req).context("ping: the echo request")?;
        Ok(e)
    }

    /// One 64-byte round trip (the payload differs each time and must come back unchanged).
    pub fn round_trip(&mut self) -> Result<Duration> {
        self.seq += 1;
        for (i, b) in self.out.iter_mut().enumerate() {
            *b = (self.seq as u8).wrapping_add(i as u8);
        }
        let t = Instant::now();
        self.s.write_all(&self.out).context("ping: write")?;
        self.s.read_exact(&mut self.back).context("ping: read")?;
        let took = t.elapsed();
        if self.back != self.out {
            bail!("ping {}: the echo came back changed", self.seq);
        }
        Ok(took)
    }
}

/// A new connection to `addr`, one byte written, the time until it comes back echoed (the
/// connect included); then the connection is closed.
pub fn connect_first_byte(addr: SocketAddr, byte: u8) -> Result<Duration> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .with_context(|| format!("cannot connect to {addr}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.write_all(&[byte]).context("connect: write")?;
    let mut back = [0u8; 1];
    s.read_exact(&mut back).context("connect: read")?;
    let took = t.elapsed();
    ensure!(back[0] == byte, "connect: the echo came back changed");
    Ok(took)
}

/// The echo server for many connections at once: a current-thread Tokio runtime on a thread of
/// its own, a listening socket with a 4,096-deep accept backlog, 2 KiB of buffer per connection.
/// Dropping it stops the runtime, which closes every connection.
pub struct ManyEcho {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ManyEcho {
    pub fn start() -> Result<Self> {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<std::io::Result<SocketAddr>>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-many-echo".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = addr_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let bound = (|| {
                        let socket = tokio::net::TcpSocket::new_v4()?;
                        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
                        socket.listen(4096)
                    })();
                    let listener = match bound {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = addr_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = addr_tx.send(listener.local_addr());
                    let accept = async {
                        loop {
                            let Ok((s, _)) = listener.accept().await else {
                                // Out of descriptors, most likely: wait instead of spinning.
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            };
                            tokio::spawn(async move {
                                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                                let mut s = s;
                                let _ = s.set_nodelay(true);
                                let mut buf = [0u8; 2048];
                                loop {
                                    match s.read(&mut buf).await {
                                        Ok(0) | Err(_) => return,
                                        Ok(n) => {
                                            if s.write_all(&buf[..n]).await.is_err() {
                                                return;
                                            }
                                        }
                                    }
                                }
                            });
                        }
                    };
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept => {}
                    }
                });
            })?;
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the many-connection echo server did not start")?
            .context("cannot bind the many-connection echo server")?;
        Ok(ManyEcho {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for ManyEcho {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
