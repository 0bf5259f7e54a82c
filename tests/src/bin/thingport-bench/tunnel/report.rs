//! The tunnel benchmark's figures: settings, per-run results, the verdicts against the targets of
//! `../shared/BENCHMARKS.md`, the Markdown tables on stdout and the `--json` document.

use super::session::SessionTimes;
use super::TunnelArgs;
use crate::report::Machine;
use serde::Serialize;
use std::time::Duration;

/// Target: tunnelled bulk throughput as a share of direct loopback.
pub(super) const BULK_SHARE_TARGET: f64 = 0.30;
/// Target: CPU seconds of RAC + GAS + agent per GiB moved.
pub(super) const CPU_TARGET_S: f64 = 1.0;
/// Targets: round trip over direct, µs, at p50 and p99.
pub(super) const RTT_P50_EXTRA_US: f64 = 80.0;
const RTT_P99_EXTRA_US: f64 = 150.0;
/// Target: new connection to first echoed byte over direct, µs, at p50.
pub(super) const CONNECT_P50_EXTRA_US: f64 = 500.0;
/// Targets: `StartSession` → first echoed byte, ms.
const SESSION_P50_MS: f64 = 20.0;
const SESSION_P99_MS: f64 = 50.0;
/// Target: none of the burst's connections waits longer than this, ms.
const BURST_WAIT_MS: f64 = 1_000.0;
/// Target: relay memory per open tunnelled connection, KiB.
pub(super) const MEMORY_PER_CONNECTION_KIB: f64 = 64.0;
/// Target: after a burst, each relay's resident memory within this share over its idle figure.
const MEMORY_BACK_SHARE: f64 = 0.10;
/// Target: a sibling's round trip p99 beside a bulk transfer in the same session, ms.
const FAIRNESS_P99_MS: f64 = 5.0;
/// Target: bulk throughput with TLS on both legs as a share of plain.
const TLS_SHARE_TARGET: f64 = 0.50;
/// Target: `StartSession` calls per second.
const START_RATE_TARGET: f64 = 1_000.0;

/// Counts and limits of one mode.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub mode: &'static str,
    pub bulk_bytes: u64,
    pub repeat: u64,
    pub round_trips: usize,
    pub connections: usize,
    pub sessions: usize,
    /// Connections opened at once, per burst, and bursts per path.
    pub burst: usize,
    pub bursts: usize,
    /// Tunnelled connections held open at the same time, and the sessions (RACs) they use.
    pub open: usize,
    pub open_sessions: usize,
    /// How long the relays' memory may take to come back after the connections closed.
    pub memory_wait_seconds: f64,
    /// Sibling round trips per measurement of the fairness phase.
    pub fairness_round_trips: usize,
    /// Concurrent operator connections and `StartSession` + `EndSession` pairs of the rate phase.
    pub start_rate_connections: usize,
    pub start_rate_calls: usize,
    /// Bulk transfers per direction of the socat and TLS phases (1 with --quick).
    pub side_repeat: u64,
    /// Hard time cap of any one phase (one bulk transfer, all round trips, ...).
    pub phase_cap_seconds: f64,
    pub child_log: Option<String>,
    pub server_log: String,
}

impl Settings {
    pub fn from_args(a: &TunnelArgs) -> Self {
        let q = a.quick;
        Settings {
            mode: if q { "quick" } else { "full" },
            bulk_bytes: a.bulk_mib.unwrap_or(if q { 128 } else { 1024 }) * 1024 * 1024,
            repeat: a.repeat,
            round_trips: a.round_trips.unwrap_or(if q { 1_000 } else { 5_000 }) as usize,
            connections: a.connections.unwrap_or(if q { 100 } else { 500 }) as usize,
            sessions: a.sessions.unwrap_or(if q { 20 } else { 50 }) as usize,
            burst: a.burst.unwrap_or(if q { 200 } else { 1_000 }) as usize,
            bursts: if q { 1 } else { 3 },
            open: a.open.unwrap_or(if q { 1_000 } else { 10_000 }) as usize,
            open_sessions: a.open_sessions as usize,
            memory_wait_seconds: if q { 5.0 } else { 30.0 },
            fairness_round_trips: if q { 500 } else { 2_000 },
            start_rate_connections: a.start_rate_connections as usize,
            start_rate_calls: a.start_rate_calls.unwrap_or(if q { 500 } else { 5_000 }) as usize,
            side_repeat: if q { 1 } else { a.repeat },
            phase_cap_seconds: if q { 20.0 } else { 120.0 },
            child_log: a.child_log.clone(),
            server_log: a.server_log.clone(),
        }
    }

    pub fn cap(&self) -> Duration {
        Duration::from_secs_f64(self.phase_cap_seconds)
    }
}

/// CPU seconds per GiB moved, per process, during one tunnelled transfer.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Cpu {
    pub rac: f64,
    pub gas: f64,
    pub agent: f64,
    /// The platform (not in the tunnel's path; shown to prove it).
    pub server: f64,
    /// This process: the client and the target server.
    pub bench: f64,
}

impl Cpu {
    pub fn relays(&self) -> f64 {
        self.rac + self.gas + self.agent
    }
}

/// One bulk transfer each way, direct then tunnel.
#[derive(Clone, Debug, Serialize)]
pub struct Bulk {
    pub repeat: u64,
    pub direction: &'static str,
    pub bytes: u64,
    pub direct_mib_s: f64,
    pub tunnel_mib_s: f64,
    pub cpu_s_per_gib: Cpu,
}

/// Percentiles of a set of timings, in µs.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl Latency {
    pub fn of_us(d: &[Duration]) -> Latency {
        let mut us: Vec<f64> = d.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        Latency {
            samples: us.len(),
            p50_us: quantile(&us, 0.50),
            p99_us: quantile(&us, 0.99),
            max_us: us.last().copied().unwrap_or(0.0),
        }
    }
}

/// The nearest-rank quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// `StartSession` → first echoed byte, and its phases.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sessions {
    pub capped: bool,
    pub total: Latency,
    pub start_call: Latency,
    pub attach: Latency,
    pub first_byte: Latency,
    pub end_call: Latency,
}

impl Sessions {
    pub fn of(t: &[SessionTimes], capped: bool) -> Sessions {
        let of =
            |f: fn(&SessionTimes) -> Duration| Latency::of_us(&t.iter().map(f).collect::<Vec<_>>());
        Sessions {
            capped,
            total: of(|s| s.total),
            start_call: of(|s| s.start_call),
            attach: of(|s| s.attach),
            first_byte: of(|s| s.first_byte),
            end_call: of(|s| s.end_call),
        }
    }
}

/// Connections opened all at once (pooled over the bursts of one path).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Burst {
    pub path: String,
    pub bursts: usize,
    pub attempted: usize,
    pub succeeded: usize,
    /// Connections whose byte came back more than 1 s after the burst's start.
    pub over_1s: usize,
    /// From the burst's start to each connection's first echoed byte.
    pub latency: Latency,
    /// The kernel's counters over the bursts (whole network namespace).
    pub syn_retrans: u64,
    pub listen_overflows: u64,
    pub listen_drops: u64,
    pub errors: Vec<String>,
}

impl Burst {
    pub fn succeeded_share(&self) -> f64 {
        self.succeeded as f64 / self.attempted.max(1) as f64
    }
}

/// Resident memory of one relay process.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProcMemory {
    pub name: String,
    pub idle_kib: u64,
    pub open_kib: u64,
    pub after_kib: u64,
}

impl ProcMemory {
    pub fn back(&self) -> bool {
        self.after_kib as f64 <= self.idle_kib as f64 * (1.0 + MEMORY_BACK_SHARE)
    }
}

/// Tunnelled connections held open at the same time, and memory.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Many {
    pub requested: usize,
    /// What the open-file limits allowed (== requested unless `limit_note`).
    pub attempted: usize,
    pub limit_note: Option<String>,
    /// Soft limits of open files (`/proc/PID/limits`) of this tool and the relays.
    pub open_files_limits: Vec<(String, u64)>,
    pub sessions: usize,
    pub opened: usize,
    pub failed: usize,
    /// Open connections that echoed a second byte once all were open.
    pub echoed_again: usize,
    pub open_seconds: f64,
    pub errors: Vec<String>,
    pub processes: Vec<ProcMemory>,
    /// (all open − idle), summed over the relays, per open connection.
    pub per_connection_kib: f64,
    pub after_wait_cap_seconds: f64,
    pub after_waited_seconds: f64,
}

impl Many {
    pub fn sum(&self, f: fn(&ProcMemory) -> u64) -> u64 {
        self.processes.iter().map(f).sum()
    }
}

/// A sibling connection's round trips in one session, alone and beside a bulk transfer.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Fairness {
    pub direct_alone: Latency,
    pub direct_with_bulk: Latency,
    pub tunnel_alone: Latency,
    pub tunnel_with_bulk: Latency,
    /// Throughput of the bulk transfers beside the round trips.
    pub direct_bulk_mib_s: f64,
    pub tunnel_bulk_mib_s: f64,
    pub capped: bool,
}

/// One bulk transfer through the plain tunnel and through the TLS one.
#[derive(Clone, Debug, Serialize)]
pub struct TlsRun {
    pub repeat: u64,
    pub direction: &'static str,
    pub plain_mib_s: f64,
    pub tls_mib_s: f64,
    /// RAC + GAS + agent CPU seconds per GiB.
    pub plain_cpu_s_per_gib: f64,
    pub tls_cpu_s_per_gib: f64,
}

/// TLS on both legs (RAC → GAS and agent → GAS), against the plain tunnel in the same phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Tls {
    pub runs: Vec<TlsRun>,
    /// Medians: up, down.
    pub plain_mib_s: [f64; 2],
    pub tls_mib_s: [f64; 2],
    pub plain_cpu_s_per_gib: f64,
    pub tls_cpu_s_per_gib: f64,
    /// 64-byte round trips: plain, TLS.
    pub round_trip: [Latency; 2],
}

/// One bulk transfer direct and through `socat`.
#[derive(Clone, Debug, Serialize)]
pub struct SocatRun {
    pub repeat: u64,
    pub direction: &'static str,
    pub direct_mib_s: f64,
    pub socat_mib_s: f64,
    pub socat_cpu_s_per_gib: f64,
}

/// The one-hop `socat -b 131072` baseline.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Socat {
    pub version: String,
    pub runs: Vec<SocatRun>,
    pub direct_mib_s: [f64; 2],
    pub socat_mib_s: [f64; 2],
    pub cpu_s_per_gib: f64,
    /// Direct, socat.
    pub round_trip: [Latency; 2],
    pub new_connection: [Latency; 2],
    pub burst: Burst,
}

/// `StartSession` + `EndSession` from concurrent operator connections.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StartRate {
    pub connections: usize,
    pub calls: usize,
    pub seconds: f64,
    /// `StartSession` calls answered per second of the phase (each followed by its `EndSession`).
    pub per_second: f64,
    pub start: Latency,
    pub end: Latency,
    /// CPU per `StartSession` + `EndSession` pair, ms.
    pub server_cpu_ms: f64,
    pub agent_cpu_ms: f64,
    pub gas_cpu_ms: f64,
    pub capped: bool,
}

/// The figures of issue 7 beside the first ones; `None` with a note when not measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct More {
    pub fairness: Fairness,
    /// Direct, tunnel.
    pub burst: [Burst; 2],
    pub many: Many,
    pub start_rate: StartRate,
    pub tls: Option<Tls>,
    pub tls_note: Option<String>,
    pub socat: Option<Socat>,
    pub socat_note: Option<String>,
    /// The two-hop wstunnel path (issue 17).
    pub wstunnel: Option<super::wstunnel::Figures>,
    pub wstunnel_note: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetCheck {
    pub figure: String,
    pub target: String,
    pub measured: String,
    pub verdict: &'static str,
}

/// Everything `--json` writes.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub unix_time: u64,
    pub total_seconds: f64,
    pub machine: Machine,
    pub settings: Settings,
    pub bulk: Vec<Bulk>,
    /// Medians over the repetitions: up, down.
    pub bulk_direct_mib_s: [f64; 2],
    pub bulk_tunnel_mib_s: [f64; 2],
    /// Medians over the repetitions of each process's CPU per GiB: up, down, both.
    pub cpu_s_per_gib: [Cpu; 3],
    /// Direct, tunnel.
    pub round_trip: [Latency; 2],
    pub round_trip_capped: bool,
    pub new_connection: [Latency; 2],
    pub new_connection_capped: bool,
    pub sessions: Sessions,
    pub more: More,
    pub targets: Vec<TargetCheck>,
    /// Lines each process logged during the run (at its log level).
    pub log_lines: Vec<(String, usize)>,
}

fn median(mut v: Vec<f64>) -> f64 {
    crate::platform::median(std::mem::take(&mut v))
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Settings,
        machine: Machine,
        bulk: Vec<Bulk>,
        round_trip: [Latency; 2],
        round_trip_capped: bool,
        new_connection: [Latency; 2],
        new_connection_capped: bool,
        sessions: Sessions,
        more: More,
        log_lines: &[(String, usize)],
        total_seconds: f64,
    ) -> Report {
        let dir = |d: &str, f: fn(&Bulk) -> f64| {
            median(bulk.iter().filter(|b| b.direction == d).map(f).collect())
        };
        let cpu_of = |d: Option<&str>| {
            let pick: Vec<&Bulk> = bulk
                .iter()
                .filter(|b| d.is_none_or(|d| b.direction == d))
                .collect();
            let m = |f: fn(&Cpu) -> f64| median(pick.iter().map(|b| f(&b.cpu_s_per_gib)).collect());
            Cpu {
                rac: m(|c| c.rac),
                gas: m(|c| c.gas),
                agent: m(|c| c.agent),
                server: m(|c| c.server),
                bench: m(|c| c.bench),
            }
        };
        let mut r = Report {
            tool: "thingport-bench tunnel",
            version: env!("CARGO_PKG_VERSION"),
            unix_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            total_seconds,
            machine,
            settings,
            bulk_direct_mib_s: [
                dir("up", |b| b.direct_mib_s),
                dir("down", |b| b.direct_mib_s),
            ],
            bulk_tunnel_mib_s: [
                dir("up", |b| b.tunnel_mib_s),
                dir("down", |b| b.tunnel_mib_s),
            ],
            cpu_s_per_gib: [cpu_of(Some("up")), cpu_of(Some("down")), cpu_of(None)],
            bulk,
            round_trip,
            round_trip_capped,
            new_connection,
            new_connection_capped,
            sessions,
            more,
            targets: Vec::new(),
            log_lines: log_lines.to_vec(),
        };
        r.targets = targets(&r);
        r
    }
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "MISS"
    }
}

fn targets(r: &Report) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    for (i, d) in ["up", "down"].iter().enumerate() {
        let share = r.bulk_tunnel_mib_s[i] / r.bulk_direct_mib_s[i].max(f64::MIN_POSITIVE);
        out.push(TargetCheck {
            figure: format!("bulk {d}, one connection"),
            target: format!("≥ {:.0}% of direct", BULK_SHARE_TARGET * 100.0),
            measured: format!("{:.0}%", share * 100.0),
            verdict: verdict(share >= BULK_SHARE_TARGET),
        });
    }
    let cpu = r.cpu_s_per_gib[2].relays();
    out.push(TargetCheck {
        figure: "CPU of RAC + GAS + agent per GiB moved".into(),
        target: format!("≤ {CPU_TARGET_S:.1} s"),
        measured: format!("{cpu:.2} s"),
        verdict: verdict(cpu <= CPU_TARGET_S),
    });
    let [d, t] = r.round_trip;
    for (q, extra, dv, tv) in [
        ("p50", RTT_P50_EXTRA_US, d.p50_us, t.p50_us),
        ("p99", RTT_P99_EXTRA_US, d.p99_us, t.p99_us),
    ] {
        out.push(TargetCheck {
            figure: format!("round trip, 64 B, {q}"),
            target: format!("≤ direct + {extra:.0} µs"),
            measured: format!("direct + {:.0} µs", tv - dv),
            verdict: verdict(tv - dv <= extra),
        });
    }
    let [d, t] = r.new_connection;
    out.push(TargetCheck {
        figure: "new connection in an open session → first echoed byte, p50".into(),
        target: format!("≤ direct + {CONNECT_P50_EXTRA_US:.0} µs"),
        measured: format!("direct + {:.0} µs", t.p50_us - d.p50_us),
        verdict: verdict(t.p50_us - d.p50_us <= CONNECT_P50_EXTRA_US),
    });
    let s = &r.sessions.total;
    for (q, target, v) in [
        ("p50", SESSION_P50_MS, s.p50_us / 1e3),
        ("p99", SESSION_P99_MS, s.p99_us / 1e3),
    ] {
        out.push(TargetCheck {
            figure: format!("StartSession → first echoed byte, {q}"),
            target: format!("≤ {target:.0} ms"),
            measured: format!("{v:.1} ms"),
            verdict: verdict(v <= target),
        });
    }
    more_targets(&r.more, &mut out);
    out.extend(super::compare::verdicts(r));
    out
}

fn more_targets(m: &More, out: &mut Vec<TargetCheck>) {
    let b = &m.burst[1];
    out.push(TargetCheck {
        figure: format!(
            "{} connections opened at once through one session, succeeded",
            thousands(b.attempted as f64 / b.bursts.max(1) as f64)
        ),
        target: "100%".into(),
        measured: format!(
            "{:.1}% ({} of {})",
            100.0 * b.succeeded_share(),
            b.succeeded,
            b.attempted
        ),
        verdict: verdict(b.succeeded == b.attempted && b.attempted > 0),
    });
    out.push(TargetCheck {
        figure: "the same, waited over 1 s for the first echoed byte".into(),
        target: "none".into(),
        measured: format!("{} (max {:.0} ms)", b.over_1s, b.latency.max_us / 1e3),
        verdict: verdict(b.over_1s == 0 && b.latency.max_us <= BURST_WAIT_MS * 1e3),
    });
    let n = &m.many;
    out.push(TargetCheck {
        figure: format!(
            "{} concurrently open tunnelled connections on one GAS, succeeded{}",
            thousands(n.attempted as f64),
            if n.limit_note.is_some() {
                " (fewer than asked: open-file limits)"
            } else {
                ""
            }
        ),
        target: "100%".into(),
        measured: format!(
            "{} opened, {} echoed again, of {}",
            n.opened, n.echoed_again, n.attempted
        ),
        verdict: verdict(
            n.attempted > 0
                && n.opened == n.attempted
                && n.echoed_again == n.attempted
                && n.limit_note.is_none(),
        ),
    });
    out.push(TargetCheck {
        figure: "memory per open connection, RACs + GAS + agent".into(),
        target: format!("≤ {MEMORY_PER_CONNECTION_KIB:.0} KiB"),
        measured: format!("{:.1} KiB", n.per_connection_kib),
        verdict: verdict(n.opened > 0 && n.per_connection_kib <= MEMORY_PER_CONNECTION_KIB),
    });
    let worst = n.processes.iter().max_by(|a, b| {
        let r = |p: &ProcMemory| p.after_kib as f64 / p.idle_kib.max(1) as f64;
        r(a).total_cmp(&r(b))
    });
    if let Some(w) = worst {
        out.push(TargetCheck {
            figure: "memory after the connections closed, each relay vs its idle figure".into(),
            target: format!("≤ idle + {:.0}%", MEMORY_BACK_SHARE * 100.0),
            measured: format!(
                "worst {} {:+.1}%{}",
                w.name,
                100.0 * (w.after_kib as f64 / w.idle_kib.max(1) as f64 - 1.0),
                if n.processes.iter().all(ProcMemory::back) {
                    format!(" (all back after {:.1} s)", n.after_waited_seconds)
                } else {
                    format!(" after waiting {:.0} s", n.after_waited_seconds)
                }
            ),
            verdict: verdict(n.processes.iter().all(ProcMemory::back)),
        });
    }
    let f = &m.fairness;
    out.push(TargetCheck {
        figure:
            "fairness: a sibling's 64 B round trip p99 beside a bulk transfer in the same session"
                .into(),
        target: format!("≤ {FAIRNESS_P99_MS:.0} ms"),
        measured: format!(
            "{:.2} ms (alone {:.2} ms)",
            f.tunnel_with_bulk.p99_us / 1e3,
            f.tunnel_alone.p99_us / 1e3
        ),
        verdict: verdict(
            f.tunnel_with_bulk.samples > 0 && f.tunnel_with_bulk.p99_us <= FAIRNESS_P99_MS * 1e3,
        ),
    });
    if let Some(t) = &m.tls {
        for (i, d) in ["up", "down"].iter().enumerate() {
            let share = t.tls_mib_s[i] / t.plain_mib_s[i].max(f64::MIN_POSITIVE);
            out.push(TargetCheck {
                figure: format!("bulk {d} with TLS on both legs"),
                target: format!("≥ {:.0}% of plain", TLS_SHARE_TARGET * 100.0),
                measured: format!("{:.0}%", share * 100.0),
                verdict: verdict(share >= TLS_SHARE_TARGET),
            });
        }
    }
    let s = &m.start_rate;
    out.push(TargetCheck {
        figure: format!(
            "StartSession calls per second ({} connections, each followed by EndSession)",
            s.connections
        ),
        target: format!("≥ {}/s", thousands(START_RATE_TARGET)),
        measured: format!("{}/s", thousands(s.per_second)),
        verdict: verdict(s.per_second >= START_RATE_TARGET),
    });
}

/// One line per bulk transfer, on stderr.
pub fn progress(b: &Bulk) {
    let c = &b.cpu_s_per_gib;
    eprintln!(
        "  bulk {:<4} run {}  direct {:>7.0} MiB/s  tunnel {:>7.0} MiB/s ({:>3.0}%)  CPU s/GiB: RAC {:.2} GAS {:.2} agent {:.2} (sum {:.2}), server {:.2}, bench {:.2}",
        b.direction,
        b.repeat,
        b.direct_mib_s,
        b.tunnel_mib_s,
        100.0 * b.tunnel_mib_s / b.direct_mib_s,
        c.rac,
        c.gas,
        c.agent,
        c.relays(),
        c.server,
        c.bench
    );
}

fn thousands(v: f64) -> String {
    let digits = (v.round() as u64).to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The tables, on stdout.
pub fn print(r: &Report) {
    let st = &r.settings;
    println!();
    println!(
        "thingport-bench tunnel ({} mode) on {} CPU(s), {}: bulk {} MiB × {} each way, {} round trips, {} connections, {} sessions",
        st.mode,
        r.machine.cpus,
        r.machine.cpu_model,
        st.bulk_bytes / (1024 * 1024),
        st.repeat,
        thousands(st.round_trips as f64),
        thousands(st.connections as f64),
        st.sessions
    );
    println!();
    println!("| figure | direct | tunnel | tunnel vs direct |");
    println!("|---|--:|--:|--:|");
    for (i, d) in ["up", "down"].iter().enumerate() {
        let (a, b) = (r.bulk_direct_mib_s[i], r.bulk_tunnel_mib_s[i]);
        println!(
            "| bulk {d}, one connection, MiB/s (median of {}) | {} | {} | {:.0}% |",
            st.repeat,
            thousands(a),
            thousands(b),
            100.0 * b / a
        );
    }
    let lat = |name: &str, l: [Latency; 2], capped: bool| {
        let note = if capped { " (time cap hit)" } else { "" };
        for (q, d, t) in [
            ("p50", l[0].p50_us, l[1].p50_us),
            ("p99", l[0].p99_us, l[1].p99_us),
        ] {
            println!(
                "| {name}, {q} µs ({} samples{note}) | {d:.0} | {t:.0} | {:+.0} µs |",
                l[1].samples,
                t - d
            );
        }
    };
    lat("round trip, 64 B", r.round_trip, r.round_trip_capped);
    lat(
        "new connection → first echoed byte",
        r.new_connection,
        r.new_connection_capped,
    );
    let s = &r.sessions;
    for (q, v) in [("p50", s.total.p50_us), ("p99", s.total.p99_us)] {
        println!(
            "| StartSession → first echoed byte, {q} ms ({} sessions) | – | {:.1} | – |",
            s.total.samples,
            v / 1e3
        );
    }
    println!();
    println!("| CPU s per GiB (tunnel, medians) | RAC | GAS | agent | RAC + GAS + agent | server | bench (client + target) |");
    println!("|---|--:|--:|--:|--:|--:|--:|");
    for (name, c) in ["bulk up", "bulk down", "both directions"]
        .iter()
        .zip(r.cpu_s_per_gib.iter())
    {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            c.rac,
            c.gas,
            c.agent,
            c.relays(),
            c.server,
            c.bench
        );
    }
    println!();
    println!("| StartSession → first echoed byte, phase | p50 ms | p99 ms |");
    println!("|---|--:|--:|");
    for (name, l) in [
        (
            "StartSession call (REST, operator, keep-alive)",
            s.start_call,
        ),
        (
            "attach: TCP connect + WebSocket upgrade to the GAS",
            s.attach,
        ),
        ("open a stream + first byte echoed", s.first_byte),
        ("total (the figure)", s.total),
        ("EndSession call (after, not in the figure)", s.end_call),
    ] {
        println!("| {name} | {:.2} | {:.2} |", l.p50_us / 1e3, l.p99_us / 1e3);
    }
    print_more(r);
    println!();
    super::compare::print(r);
    println!();
    println!("| target | measured | verdict |");
    println!("|---|--:|---|");
    for t in &r.targets {
        println!(
            "| {}: {} | {} | {} |",
            t.figure, t.target, t.measured, t.verdict
        );
    }
    println!();
    let logs: Vec<String> = r
        .log_lines
        .iter()
        .map(|(n, l)| format!("{n} {l}"))
        .collect();
    println!(
        "log lines: {}; total {:.0} s",
        logs.join(", "),
        r.total_seconds
    );
}

fn ms(us: f64) -> String {
    format!("{:.1}", us / 1e3)
}

/// The tables of the figures of issue 7.
fn print_more(r: &Report) {
    let m = &r.more;
    let st = &r.settings;
    let f = &m.fairness;
    println!();
    println!(
        "| fairness: sibling 64 B round trip in the bulk session ({} per case{}) | direct p50 / p99 µs | tunnel p50 / p99 µs |",
        thousands(st.fairness_round_trips as f64),
        if f.capped { ", time cap hit" } else { "" }
    );
    println!("|---|--:|--:|");
    println!(
        "| alone | {:.0} / {:.0} | {:.0} / {:.0} |",
        f.direct_alone.p50_us, f.direct_alone.p99_us, f.tunnel_alone.p50_us, f.tunnel_alone.p99_us
    );
    println!(
        "| beside bulk transfers ({} / {} MiB/s) | {:.0} / {:.0} | {:.0} / {:.0} |",
        thousands(f.direct_bulk_mib_s),
        thousands(f.tunnel_bulk_mib_s),
        f.direct_with_bulk.p50_us,
        f.direct_with_bulk.p99_us,
        f.tunnel_with_bulk.p50_us,
        f.tunnel_with_bulk.p99_us
    );
    println!();
    println!("| connections opened at once | bursts × connections | succeeded | p50 ms | p99 ms | max ms | over 1 s | SYN retransmits / listen overflows (kernel) |");
    println!("|---|--:|--:|--:|--:|--:|--:|--:|");
    let mut bursts: Vec<&Burst> = m.burst.iter().collect();
    if let Some(s) = &m.socat {
        bursts.push(&s.burst);
    }
    for b in bursts {
        println!(
            "| {} | {} × {} | {:.1}% | {} | {} | {} | {} | {} / {} |",
            b.path,
            b.bursts,
            thousands(b.attempted as f64 / b.bursts.max(1) as f64),
            100.0 * b.succeeded_share(),
            ms(b.latency.p50_us),
            ms(b.latency.p99_us),
            ms(b.latency.max_us),
            b.over_1s,
            b.syn_retrans,
            b.listen_overflows
        );
    }
    let n = &m.many;
    println!();
    println!(
        "{} connections held open over {} sessions: {} opened in {:.1} s, {} failed, {} echoed a second byte{}",
        thousands(n.attempted as f64),
        n.sessions,
        thousands(n.opened as f64),
        n.open_seconds,
        n.failed,
        thousands(n.echoed_again as f64),
        n.limit_note.as_ref().map(|l| format!(" ({l})")).unwrap_or_default()
    );
    let limits: Vec<String> = n
        .open_files_limits
        .iter()
        .map(|(p, l)| format!("{p} {}", thousands(*l as f64)))
        .collect();
    println!(
        "open-file soft limits (/proc/PID/limits): {}",
        limits.join(", ")
    );
    println!();
    println!("| relay VmRSS KiB | idle | all open | per open connection | after all closed | after vs idle |");
    println!("|---|--:|--:|--:|--:|--:|");
    let per = |p: &ProcMemory| (p.open_kib as f64 - p.idle_kib as f64) / n.opened.max(1) as f64;
    for p in &n.processes {
        println!(
            "| {} | {} | {} | {:.1} | {} | {:+.1}% |",
            p.name,
            thousands(p.idle_kib as f64),
            thousands(p.open_kib as f64),
            per(p),
            thousands(p.after_kib as f64),
            100.0 * (p.after_kib as f64 / p.idle_kib.max(1) as f64 - 1.0)
        );
    }
    let (i, o, a) = (
        n.sum(|p| p.idle_kib),
        n.sum(|p| p.open_kib),
        n.sum(|p| p.after_kib),
    );
    println!(
        "| all relays | {} | {} | {:.1} | {} | {:+.1}% |",
        thousands(i as f64),
        thousands(o as f64),
        n.per_connection_kib,
        thousands(a as f64),
        100.0 * (a as f64 / i.max(1) as f64 - 1.0)
    );
    println!(
        "(after: {:.1} s after the last close, waiting at most {:.0} s for every relay to be within 10% of idle)",
        n.after_waited_seconds, n.after_wait_cap_seconds
    );
    let s = &m.start_rate;
    println!();
    println!("| StartSession + EndSession, {} connections | calls | calls/s | StartSession p50 / p99 ms | EndSession p50 / p99 ms | CPU ms per pair: server / GAS / agent |", s.connections);
    println!("|---|--:|--:|--:|--:|--:|");
    println!(
        "| {} s{} | {} | {} | {} / {} | {} / {} | {:.2} / {:.2} / {:.2} |",
        format_args!("{:.1}", s.seconds),
        if s.capped { " (time cap hit)" } else { "" },
        thousands(s.calls as f64),
        thousands(s.per_second),
        ms(s.start.p50_us),
        ms(s.start.p99_us),
        ms(s.end.p50_us),
        ms(s.end.p99_us),
        s.server_cpu_ms,
        s.gas_cpu_ms,
        s.agent_cpu_ms
    );
    println!();
    match &m.socat {
        Some(x) => {
            println!("| socat -b 131072, one hop ({}) | direct | socat | socat vs direct | tunnel (this run) |", x.version);
            println!("|---|--:|--:|--:|--:|");
            for (i, d) in ["up", "down"].iter().enumerate() {
                println!(
                    "| bulk {d}, MiB/s | {} | {} | {:.0}% | {} |",
                    thousands(x.direct_mib_s[i]),
                    thousands(x.socat_mib_s[i]),
                    100.0 * x.socat_mib_s[i] / x.direct_mib_s[i].max(f64::MIN_POSITIVE),
                    thousands(r.bulk_tunnel_mib_s[i])
                );
            }
            println!(
                "| relay CPU s per GiB | – | {:.2} | – | {:.2} |",
                x.cpu_s_per_gib,
                r.cpu_s_per_gib[2].relays()
            );
            for (name, l, t) in [
                ("round trip, 64 B", x.round_trip, r.round_trip[1]),
                (
                    "new connection → first echoed byte",
                    x.new_connection,
                    r.new_connection[1],
                ),
            ] {
                for (q, d, v, tv) in [
                    ("p50", l[0].p50_us, l[1].p50_us, t.p50_us),
                    ("p99", l[0].p99_us, l[1].p99_us, t.p99_us),
                ] {
                    println!(
                        "| {name}, {q} µs | {d:.0} | {v:.0} | {:+.0} µs | {tv:.0} |",
                        v - d
                    );
                }
            }
        }
        None => println!(
            "socat baseline: {}",
            m.socat_note.as_deref().unwrap_or("not measured")
        ),
    }
    println!();
    match &m.tls {
        Some(t) => {
            println!("| TLS on both legs (RAC → GAS, agent → GAS) | plain tunnel | TLS tunnel | TLS vs plain |");
            println!("|---|--:|--:|--:|");
            for (i, d) in ["up", "down"].iter().enumerate() {
                println!(
                    "| bulk {d}, MiB/s (median of {}) | {} | {} | {:.0}% |",
                    st.side_repeat,
                    thousands(t.plain_mib_s[i]),
                    thousands(t.tls_mib_s[i]),
                    100.0 * t.tls_mib_s[i] / t.plain_mib_s[i].max(f64::MIN_POSITIVE)
                );
            }
            println!(
                "| CPU of RAC + GAS + agent, s per GiB | {:.2} | {:.2} | {:.2}× |",
                t.plain_cpu_s_per_gib,
                t.tls_cpu_s_per_gib,
                t.tls_cpu_s_per_gib / t.plain_cpu_s_per_gib.max(f64::MIN_POSITIVE)
            );
            let [p, l] = t.round_trip;
            println!("| round trip, 64 B, p50 / p99 µs ({} samples) | {:.0} / {:.0} | {:.0} / {:.0} | {:+.0} / {:+.0} µs |", l.samples, p.p50_us, p.p99_us, l.p50_us, l.p99_us, l.p50_us - p.p50_us, l.p99_us - p.p99_us);
        }
        None => println!("TLS: {}", m.tls_note.as_deref().unwrap_or("not measured")),
    }
}
