//! The simulated agents of `thingport-bench control`: one task per device, each holding one
//! `thingport.v1` control channel to the server, the way the real agent does, but lean enough
//! that one process holds 10,000 of them.
//!
//! Each agent opens a WebSocket to `/Thingworx/WS` (header `appKey`, subprotocol
//! `thingport.v1`) from one of several loopback source addresses (127.0.0.1 ... 127.0.0.N, bound
//! before connecting, so that the connections spread over N ephemeral-port ranges), sends `hello`,
//! waits for `welcome`, binds its own Thing and waits for `bound`. Then it keeps reading (so the
//! server's pings are answered), pings every [`control::PING_INTERVAL_MS`] itself, answers the
//! `ping` request, and declares the link dead after [`control::IDLE_TIMEOUT_MS`] of silence.
//!
//! When a connection ends or an attempt fails, the agent reconnects after an exponential backoff
//! with full jitter: the n-th consecutive failure waits a uniformly random time in
//! `[0, min(cap, initial × 2^n)]` (the real agent's shape, with shorter defaults here: 250 ms
//! initial, 5 s cap). A session that reached `bound` resets the backoff.
//!
//! The first connection of every agent waits for a permit of a shared semaphore (bounded
//! concurrency of the initial fleet start); reconnections are not gated, like a real fleet
//! coming back after a server restart.
//!
//! Each WebSocket has a 4 KiB read buffer and no write buffer, so the bench's own memory per
//! connection stays small. Everything an agent waits for is bounded in time.

use anyhow::{bail, Result};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thingport_protocol::control::{self, codes, encode, AgentMessage, ErrorInfo, PlatformMessage};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// Read buffer of each agent's WebSocket.
const READ_BUFFER: usize = 4 * 1024;
/// Distinct error texts counted separately; later ones are counted as "other".
const MAX_ERROR_KINDS: usize = 40;
/// How long an agent waits for the server's side of a closing handshake.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// The agent's name in `hello`, and in its answers to `ping`.
const AGENT: &str = "thingport-bench/control";

/// What every agent needs to know.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    pub server: SocketAddr,
    pub app_key: String,
    /// Thing `i` of agent `i`.
    pub things: Arc<Vec<String>>,
    /// Agents connect from 127.0.0.1 ... 127.0.0.`source_addresses`.
    pub source_addresses: u8,
    /// Initial connections in flight at once.
    pub connect_concurrency: usize,
    pub backoff_initial: Duration,
    pub backoff_cap: Duration,
    /// Limit of one attempt: TCP connect, upgrade, `hello` → `welcome`, `bind` → `bound`.
    pub attempt_timeout: Duration,
}

/// Counters of the whole fleet since it started.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counters {
    /// Connection attempts started.
    pub attempts: u64,
    /// Attempts that did not end in `bound` (refused connect, failed upgrade, timeout, ...).
    pub failed_attempts: u64,
    /// `bound` answers received.
    pub binds: u64,
    /// Bound connections that ended (closed by the server, dropped, silent).
    pub lost: u64,
    /// `ping` requests from the platform answered.
    pub pings_answered: u64,
    /// Failures that retrying cannot fix (a refused bind, a refused key): the run is failed.
    pub fatal: u64,
    /// Why attempts failed and connections ended: text → count.
    pub reasons: BTreeMap<String, u64>,
}

impl Counters {
    /// What happened between `before` and `self`.
    pub fn since(&self, before: &Counters) -> Counters {
        let mut reasons = BTreeMap::new();
        for (k, v) in &self.reasons {
            let d = v - before.reasons.get(k).copied().unwrap_or(0);
            if d > 0 {
                reasons.insert(k.clone(), d);
            }
        }
        Counters {
            attempts: self.attempts - before.attempts,
            failed_attempts: self.failed_attempts - before.failed_attempts,
            binds: self.binds - before.binds,
            lost: self.lost - before.lost,
            pings_answered: self.pings_answered - before.pings_answered,
            fatal: self.fatal - before.fatal,
            reasons,
        }
    }
}

struct Shared {
    base: Instant,
    /// Agents bound right now.
    bound: AtomicUsize,
    /// Per agent: when it last received `bound`, in µs since `base` (0: never).
    bound_at_us: Vec<AtomicU64>,
    attempts: AtomicU64,
    failed_attempts: AtomicU64,
    binds: AtomicU64,
    lost: AtomicU64,
    pings_answered: AtomicU64,
    fatal: AtomicU64,
    reasons: Mutex<BTreeMap<String, u64>>,
    first_fatal: Mutex<Option<String>>,
    /// Woken whenever `bound` changes or a fatal error happens.
    changed: Notify,
}

impl Shared {
    fn reason(&self, why: &str) {
        let mut r = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
        let key = if r.len() < MAX_ERROR_KINDS || r.contains_key(why) {
            why.to_string()
        } else {
            "other".to_string()
        };
        *r.entry(key).or_insert(0) += 1;
    }

    fn fatal(&self, why: &str) {
        self.fatal.fetch_add(1, Ordering::Relaxed);
        self.reason(why);
        self.first_fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| why.to_string());
        self.changed.notify_waiters();
    }
}

/// The running agents.
pub struct Fleet {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    agents: usize,
}

/// How an attempt or a session ended.
enum End {
    /// The fleet is stopping.
    Stop,
    /// Retry after a backoff; `bound`: the session had reached `bound` (resets the backoff).
    Retry { why: String, bound: bool },
    /// Retrying cannot help.
    Fatal(String),
}

type Ws = WebSocketStream<TcpStream>;

impl Fleet {
    /// Starts one task per Thing of `cfg`; they connect at once, `connect_concurrency` at a time.
    pub fn start(cfg: FleetConfig) -> Fleet {
        let agents = cfg.things.len();
        let base = Instant::now();
        let shared = Arc::new(Shared {
            base,
            bound: AtomicUsize::new(0),
            bound_at_us: (0..agents).map(|_| AtomicU64::new(0)).collect(),
            attempts: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            binds: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            pings_answered: AtomicU64::new(0),
            fatal: AtomicU64::new(0),
            reasons: Mutex::new(BTreeMap::new()),
            first_fatal: Mutex::new(None),
            changed: Notify::new(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let gate = Arc::new(Semaphore::new(cfg.connect_concurrency.max(1)));
        let cfg = Arc::new(cfg);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()) << 32;
        let mut tasks = JoinSet::new();
        for i in 0..agents {
            let agent = Agent {
                index: i,
                cfg: cfg.clone(),
                shared: shared.clone(),
                stop: stop_rx.clone(),
                rng: Rng(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            };
            let gate = gate.clone();
            tasks.spawn(async move { agent.run(gate).await });
        }
        Fleet {
            shared,
            stop,
            tasks,
            agents,
        }
    }

    /// Agents bound right now.
    pub fn bound(&self) -> usize {
        self.shared.bound.load(Ordering::Relaxed)
    }

    pub fn counters(&self) -> Counters {
        let s = &self.shared;
        Counters {
            attempts: s.attempts.load(Ordering::Relaxed),
            failed_attempts: s.failed_attempts.load(Ordering::Relaxed),
            binds: s.binds.load(Ordering::Relaxed),
            lost: s.lost.load(Ordering::Relaxed),
            pings_answered: s.pings_answered.load(Ordering::Relaxed),
            fatal: s.fatal.load(Ordering::Relaxed),
            reasons: s.reasons.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// Waits until `want(bound agents)` holds; fails at `deadline` or on a fatal error, naming
    /// `what` and the fleet's state.
    pub async fn wait_until(
        &self,
        what: &str,
        deadline: Instant,
        want: impl Fn(usize) -> bool,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::from_std(deadline);
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(e) = self
                .shared
                .first_fatal
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                bail!("{what}: an agent failed for good: {e}");
            }
            let bound = self.bound();
            if want(bound) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let c = self.counters();
                bail!(
                    "{what}: not reached within the phase's time cap ({bound} of {} agents bound; {} attempts, {} failed; reasons: {:?})",
                    self.agents,
                    c.attempts,
                    c.failed_attempts,
                    c.reasons
                );
            }
        }
    }

    /// When each agent last received `bound`, as durations since `since` (agents that bound
    /// before `since`, or never, are left out), sorted.
    pub fn bound_since(&self, since: Instant) -> Vec<Duration> {
        let base = self.shared.base;
        // `since` − `base` in µs, either way round.
        let offset: i128 = if since >= base {
            since.duration_since(base).as_micros() as i128
        } else {
            -(base.duration_since(since).as_micros() as i128)
        };
        let mut v: Vec<Duration> = self
            .shared
            .bound_at_us
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .filter(|&us| us > 0)
            .map(|us| us as i128 - offset)
            .filter(|&d| d >= 0)
            .map(|d| Duration::from_micros(d as u64))
            .collect();
        v.sort();
        v
    }

    /// Stops every agent (each drops its socket) and waits for the tasks, at most `timeout`.
    pub async fn stop(mut self, timeout: Duration) -> Result<()> {
        let _ = self.stop.send(true);
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(timeout, all).await.is_err() {
            let left = self.tasks.len();
            self.tasks.abort_all();
            bail!("{left} agent tasks did not stop within {timeout:?}");
        }
        Ok(())
    }
}

struct Agent {
    index: usize,
    cfg: Arc<FleetConfig>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    rng: Rng,
}

impl Agent {
    async fn run(mut self, gate: Arc<Semaphore>) {
        let mut permit = match gate.acquire_owned().await {
            Ok(p) => Some(p),
            Err(_) => return,
        };
        let mut failures: u32 = 0;
        loop {
            if *self.stop.borrow() {
                return;
            }
            self.shared.attempts.fetch_add(1, Ordering::Relaxed);
            match self.session(permit.take()).await {
                End::Stop => return,
                End::Fatal(why) => return self.shared.fatal(&why),
                End::Retry { why, bound } => {
                    self.shared.reason(&why);
                    if bound {
                        failures = 0;
                    } else {
                        self.shared.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            // Full jitter: uniform in [0, min(cap, initial × 2^failures)].
            let ceiling = self
                .cfg
                .backoff_initial
                .saturating_mul(1u32 << failures.min(16))
                .min(self.cfg.backoff_cap);
            failures = failures.saturating_add(1);
            let pause = self.rng.below(ceiling);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stopped(&mut self.stop) => return,
            }
        }
    }

    /// One connection: establish and bind, then serve until it ends.
    async fn session(&mut self, permit: Option<OwnedSemaphorePermit>) -> End {
        let thing = self.cfg.things[self.index].clone();
        let establish = tokio::time::timeout(self.cfg.attempt_timeout, self.establish(&thing));
        let mut stop = self.stop.clone();
        let ws = tokio::select! {
            r = establish => match r {
                Ok(Ok(ws)) => ws,
                Ok(Err(end)) => return end,
                Err(_) => return retry(format!("no bound within {:?}", self.cfg.attempt_timeout)),
            },
            _ = stopped(&mut stop) => return End::Stop,
        };
        drop(permit);
        let s = self.shared.clone();
        s.bound_at_us[self.index].store(
            (s.base.elapsed().as_micros() as u64).max(1),
            Ordering::Relaxed,
        );
        s.binds.fetch_add(1, Ordering::Relaxed);
        s.bound.fetch_add(1, Ordering::Relaxed);
        s.changed.notify_waiters();
        let end = self.serve(ws).await;
        s.bound.fetch_sub(1, Ordering::Relaxed);
        if !matches!(end, End::Stop) {
            s.lost.fetch_add(1, Ordering::Relaxed);
        }
        s.changed.notify_waiters();
        end
    }

    /// TCP connect from this agent's source address, upgrade, `hello` → `welcome`,
    /// `bind` → `bound`.
    async fn establish(&self, thing: &str) -> Result<Ws, End> {
        let n = u32::from(self.cfg.source_addresses.max(1));
        let source = Ipv4Addr::from(u32::from(Ipv4Addr::LOCALHOST) + (self.index as u32 % n));
        let socket = TcpSocket::new_v4().map_err(|e| retry(format!("socket: {e}")))?;
        socket
            .bind(SocketAddr::new(IpAddr::V4(source), 0))
            .map_err(|e| retry(format!("bind {source}: {e}")))?;
        let stream = socket
            .connect(self.cfg.server)
            .await
            .map_err(|e| retry(format!("connect: {e}")))?;
        let _ = stream.set_nodelay(true);
        let mut req = format!("ws://{}{}", self.cfg.server, control::PATH)
            .into_client_request()
            .map_err(|e| End::Fatal(format!("bad request: {e}")))?;
        let key = HeaderValue::from_str(&self.cfg.app_key)
            .map_err(|e| End::Fatal(format!("bad key: {e}")))?;
        req.headers_mut().insert(control::APP_KEY_HEADER, key);
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(control::SUBPROTOCOL_V1),
        );
        let mut config = WebSocketConfig::default();
        config.read_buffer_size = READ_BUFFER;
        config.write_buffer_size = 0;
        config.max_message_size = Some(control::MAX_MESSAGE_BYTES);
        config.max_frame_size = Some(control::MAX_MESSAGE_BYTES);
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(config))
            .await
            .map_err(|e| match e {
                WsError::Http(resp) => {
                    let status = resp.status().as_u16();
                    let why = format!("upgrade answered {status}");
                    if status == 401 || status == 403 {
                        End::Fatal(why)
                    } else {
                        retry(why)
                    }
                }
                e => retry(format!("upgrade: {e}")),
            })?;
        let hello = AgentMessage::Hello {
            agent: AGENT.into(),
        };
        send(&mut ws, &hello).await?;
        match next_message(&mut ws).await? {
            PlatformMessage::Welcome { .. } => {}
            other => return Err(unexpected("welcome", &other)),
        }
        let bind = AgentMessage::Bind {
            id: 1,
            thing: thing.to_string(),
        };
        send(&mut ws, &bind).await?;
        match next_message(&mut ws).await? {
            PlatformMessage::Bound { id: 1, .. } => Ok(ws),
            PlatformMessage::BindRefused { code, reason, .. } if code == codes::UNAVAILABLE => {
                Err(retry(format!("bind refused: {code} ({reason})")))
            }
            PlatformMessage::BindRefused { code, reason, .. } => Err(End::Fatal(format!(
                "bind of '{thing}' refused: {code} ({reason})"
            ))),
            other => Err(unexpected("bound", &other)),
        }
    }

    /// Reads until the connection ends or the fleet stops; answers `ping` requests, pings the
    /// server every ping interval, and gives up on a silent link.
    async fn serve(&mut self, mut ws: Ws) -> End {
        let every = Duration::from_millis(control::PING_INTERVAL_MS);
        let idle_after = Duration::from_millis(control::IDLE_TIMEOUT_MS);
        // Spread the agents' pings over the interval.
        let first = tokio::time::Instant::now() + self.rng.below(every);
        let mut ping = tokio::time::interval_at(first, every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let idle = tokio::time::sleep(idle_after);
        tokio::pin!(idle);
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => return End::Stop,
                _ = ping.tick() => {
                    if let Err(e) = ws.send(Message::Ping(Default::default())).await {
                        return lost(format!("sending a ping: {e}"));
                    }
                }
                _ = &mut idle => {
                    return lost(format!("nothing received for {} ms", idle_after.as_millis()));
                }
                m = ws.next() => {
                    idle.as_mut().reset(tokio::time::Instant::now() + idle_after);
                    let text = match m {
                        None => return lost("closed without a close frame".into()),
                        Some(Err(e)) => return lost(format!("receive: {e}")),
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(frame))) => {
                            let why = frame
                                .map(|f| format!("closed by the server: {} {}", f.code, f.reason))
                                .unwrap_or_else(|| "closed by the server".into());
                            // Finish the closing handshake (tungstenite answers the close).
                            let _ = tokio::time::timeout(CLOSE_WAIT, async {
                                while let Some(Ok(_)) = ws.next().await {}
                            })
                            .await;
                            return lost(why);
                        }
                        Some(Ok(_)) => continue,
                    };
                    match PlatformMessage::decode(&text) {
                        Ok(PlatformMessage::Request { id, name, .. }) => {
                            let answer = if name == control::requests::PING {
                                self.shared.pings_answered.fetch_add(1, Ordering::Relaxed);
                                AgentMessage::Response {
                                    id,
                                    result: Some(serde_json::json!({"agent": AGENT, "time": now_ms()})),
                                    error: None,
                                }
                            } else {
                                AgentMessage::Response {
                                    id,
                                    result: None,
                                    error: Some(ErrorInfo::new(codes::UNKNOWN_REQUEST, format!("no request '{name}'"))),
                                }
                            };
                            if let Err(End::Retry { why, .. }) = send(&mut ws, &answer).await {
                                return lost(why);
                            }
                        }
                        Ok(PlatformMessage::Unbound { code, .. }) => {
                            return lost(format!("unbound by the platform: {code}"));
                        }
                        Ok(PlatformMessage::Error { code, .. }) => {
                            self.shared.reason(&format!("error message from the platform: {code}"));
                        }
                        Ok(_) => {}
                        Err(e) => return End::Fatal(e),
                    }
                }
            }
        }
    }
}

/// Resolves when the fleet stops (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn retry(why: String) -> End {
    End::Retry { why, bound: false }
}

fn lost(why: String) -> End {
    End::Retry { why, bound: true }
}

fn unexpected(wanted: &str, got: &PlatformMessage) -> End {
    match got {
        PlatformMessage::Error { code, .. } if code == codes::UNAVAILABLE => {
            retry(format!("error instead of {wanted}: {code}"))
        }
        other => End::Fatal(format!("expected {wanted}, got {other:?}")),
    }
}

async fn send(ws: &mut Ws, m: &AgentMessage) -> Result<(), End> {
    ws.send(Message::Text(encode(m).into()))
        .await
        .map_err(|e| retry(format!("send: {e}")))
}

/// The next protocol message (control frames are skipped; tungstenite answers pings).
async fn next_message(ws: &mut Ws) -> Result<PlatformMessage, End> {
    loop {
        match ws.next().await {
            None => return Err(retry("closed during the handshake".into())),
            Some(Err(e)) => return Err(retry(format!("receive during the handshake: {e}"))),
            Some(Ok(Message::Text(t))) => {
                return PlatformMessage::decode(&t).map_err(End::Fatal);
            }
            Some(Ok(Message::Close(f))) => {
                return Err(retry(
                    f.map(|f| format!("closed during the handshake: {} {}", f.code, f.reason))
                        .unwrap_or_else(|| "closed during the handshake".into()),
                ))
            }
            Some(Ok(_)) => continue,
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// SplitMix64: the backoff's jitter (no need for a cryptographic generator).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, max]`.
    fn below(&mut self, max: Duration) -> Duration {
        let ns = max.as_nanos().min(u128::from(u64::MAX - 1)) as u64;
        Duration::from_nanos(self.next() % (ns + 1))
    }
}
