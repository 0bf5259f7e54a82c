//! The tunnel benchmark's figures: settings, per-run results, the verdicts against the targets of
//! `../shared/BENCHMARKS.md`, the Markdown tables on stdout and the `--json` document.

use super::session::SessionTimes;
use super::TunnelArgs;
use crate::report::Machine;
use serde::Serialize;
use std::time::Duration;

/// Target: tunnelled bulk throughput as a share of direct loopback.
const BULK_SHARE_TARGET: f64 = 0.30;
/// Target: CPU seconds of RAC + GAS + agent per GiB moved.
const CPU_TARGET_S: f64 = 1.0;
/// Targets: round trip over direct, µs, at p50 and p99.
const RTT_P50_EXTRA_US: f64 = 80.0;
const RTT_P99_EXTRA_US: f64 = 150.0;
/// Target: new connection to first echoed byte over direct, µs, at p50.
const CONNECT_P50_EXTRA_US: f64 = 500.0;
/// Targets: `StartSession` → first echoed byte, ms.
const SESSION_P50_MS: f64 = 20.0;
const SESSION_P99_MS: f64 = 50.0;

/// Counts and limits of one mode.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub mode: &'static str,
    pub bulk_bytes: u64,
    pub repeat: u64,
    pub round_trips: usize,
    pub connections: usize,
    pub sessions: usize,
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
        log_lines: [(&str, usize); 5],
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
            targets: Vec::new(),
            log_lines: log_lines.iter().map(|(n, l)| (n.to_string(), *l)).collect(),
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
    out
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
                "| {name}, {q} µs ({} samples{note}) | {d:.0} | {t:.0} | +{:.0} µs |",
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
