//! Results: per-run progress lines on stderr, the summary tables (Markdown, so they can be pasted
//! into `docs/benchmarks.md`) on stdout, the PASS/MISS verdicts against the targets, and the JSON
//! document of `--json`.

use crate::load::RunStats;
use crate::platform::{median, Settings};
use crate::probe::{Cost, Memory};
use crate::server::ServerProcess;
use serde::Serialize;

/// Target: median latency of a permission-checked read on one connection, in µs.
pub const READ_P50_TARGET_US: f64 = 1_000.0;
/// Target: permission-checked calls per second on the multi-connection runs.
pub const CALLS_PER_SECOND_TARGET: f64 = 10_000.0;

/// One measured phase.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    pub scenario: String,
    pub label: String,
    pub repeat: u32,
    pub warmup_errors: u64,
    pub warmup_error_samples: Vec<String>,
    pub stats: RunStats,
    pub cost: Cost,
}

/// Medians over the repetitions of one (scenario, connections) pair.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub label: String,
    pub connections: usize,
    pub runs: usize,
    pub requests: u64,
    pub errors: u64,
    pub per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// `per_second` divided by that of `/healthz` at the same connection count.
    pub vs_healthz: Option<f64>,
    pub server_cpu_us_per_request: f64,
    pub bench_cpu_us_per_request: f64,
    /// Mean time inside the server's handler stack (its `/metrics` histogram).
    pub server_handler_mean_us: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetCheck {
    pub figure: String,
    pub target: String,
    pub measured: f64,
    pub unit: &'static str,
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct MemoryPoint {
    pub when: String,
    #[serde(flatten)]
    pub memory: Memory,
}

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory_total_kib: u64,
}

impl Machine {
    /// CPU count and model, kernel and memory of this machine, from `/proc`.
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| {
                    l.strip_prefix("model name")
                        .and_then(|r| r.split_once(':'))
                        .map(|(_, v)| v.trim().to_string())
                })
                .unwrap_or_else(|| "unknown".into()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            memory_total_kib: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        }
    }
}

/// Everything `--json` writes.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub unix_time: u64,
    pub total_seconds: f64,
    pub machine: Machine,
    pub server_binary: String,
    pub settings: Settings,
    pub summary: Vec<Summary>,
    pub targets: Vec<TargetCheck>,
    pub memory: Vec<MemoryPoint>,
    /// Lines the server logged at the --server-log level (warn by default) during the run.
    pub server_log_lines: usize,
    pub requests_failed: u64,
    pub runs: Vec<Measurement>,
}

impl Report {
    pub fn new(
        settings: &Settings,
        srv: &ServerProcess,
        runs: Vec<Measurement>,
        memory: Vec<(String, Memory)>,
        server_log_lines: usize,
        total_seconds: f64,
    ) -> Self {
        let summary = summarise(&runs);
        let targets = targets(&summary);
        let requests_failed = runs.iter().map(|m| m.stats.errors + m.warmup_errors).sum();
        Report {
            tool: "thingport-bench platform",
            version: env!("CARGO_PKG_VERSION"),
            unix_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            total_seconds,
            machine: Machine::probe(),
            server_binary: srv.binary.display().to_string(),
            settings: settings.clone(),
            summary,
            targets,
            memory: memory
                .into_iter()
                .map(|(when, memory)| MemoryPoint { when, memory })
                .collect(),
            server_log_lines,
            requests_failed,
            runs,
        }
    }
}

fn summarise(runs: &[Measurement]) -> Vec<Summary> {
    let mut keys: Vec<(String, usize)> = Vec::new();
    for m in runs {
        let k = (m.scenario.clone(), m.stats.connections);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let mut out: Vec<Summary> = keys
        .into_iter()
        .map(|(scenario, connections)| {
            let group: Vec<&Measurement> = runs
                .iter()
                .filter(|m| m.scenario == scenario && m.stats.connections == connections)
                .collect();
            let med =
                |f: &dyn Fn(&Measurement) -> f64| median(group.iter().map(|m| f(m)).collect());
            Summary {
                label: group[0].label.clone(),
                connections,
                runs: group.len(),
                requests: group.iter().map(|m| m.stats.ok).sum(),
                errors: group.iter().map(|m| m.stats.errors + m.warmup_errors).sum(),
                per_second: med(&|m| m.stats.per_second),
                p50_us: med(&|m| m.stats.p50_us),
                p99_us: med(&|m| m.stats.p99_us),
                vs_healthz: None,
                server_cpu_us_per_request: med(&|m| m.cost.server_cpu_us_per_request),
                bench_cpu_us_per_request: med(&|m| m.cost.bench_cpu_us_per_request),
                server_handler_mean_us: med(&|m| m.cost.server_time.mean_us),
                scenario,
            }
        })
        .collect();
    let base: Vec<(usize, f64)> = out
        .iter()
        .filter(|s| s.scenario == "healthz")
        .map(|s| (s.connections, s.per_second))
        .collect();
    for s in out.iter_mut().filter(|s| s.scenario != "healthz") {
        s.vs_healthz = base
            .iter()
            .find(|(c, _)| *c == s.connections)
            .filter(|(_, b)| *b > 0.0)
            .map(|(_, b)| s.per_second / b);
    }
    out
}

fn targets(summary: &[Summary]) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    for s in summary {
        let checked = s.scenario == "property_read" || s.scenario == "service_call";
        if !checked {
            continue;
        }
        if s.connections == 1 {
            out.push(TargetCheck {
                figure: format!("{}, 1 connection, median latency", s.label),
                target: format!("< {READ_P50_TARGET_US} µs"),
                measured: s.p50_us,
                unit: "µs",
                verdict: verdict(s.p50_us < READ_P50_TARGET_US),
            });
        } else {
            out.push(TargetCheck {
                figure: format!(
                    "{}, {} connections, calls per second",
                    s.label, s.connections
                ),
                target: format!("≥ {CALLS_PER_SECOND_TARGET}/s"),
                measured: s.per_second,
                unit: "/s",
                verdict: verdict(s.per_second >= CALLS_PER_SECOND_TARGET),
            });
        }
    }
    out
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "MISS"
    }
}

/// One line per finished phase, on stderr.
pub fn progress(m: &Measurement) {
    let s = &m.stats;
    eprintln!(
        "  {:<28} conns {:>3}  run {}  {:>9.0}/s  p50 {:>8.1} µs  p99 {:>8.1} µs  errors {}{}  srv cpu {:.1} µs/req  handler {:.1} µs",
        m.scenario,
        s.connections,
        m.repeat,
        s.per_second,
        s.p50_us,
        s.p99_us,
        s.errors + m.warmup_errors,
        if s.capped { " (hit the time cap)" } else { "" },
        m.cost.server_cpu_us_per_request,
        m.cost.server_time.mean_us,
    );
    for e in m.warmup_error_samples.iter().chain(&s.error_samples) {
        eprintln!("      error: {e}");
    }
}

fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// The summary, targets and memory tables, on stdout.
pub fn print(r: &Report) {
    let st = &r.settings;
    println!();
    println!(
        "thingport-bench platform ({} mode, {} run(s) each, medians shown) on {} CPU(s), {}",
        st.mode, st.repeat, r.machine.cpus, r.machine.cpu_model
    );
    println!();
    println!("| measurement | conns | requests | req/s | p50 µs | p99 µs | errors | req/s ÷ /healthz | server CPU µs/req | bench CPU µs/req | server handler mean µs |");
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for s in &r.summary {
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {} | {} | {:.1} | {:.1} | {:.1} |",
            s.label,
            s.connections,
            thousands(s.requests as f64),
            thousands(s.per_second),
            s.p50_us,
            s.p99_us,
            s.errors,
            s.vs_healthz
                .map(|v| format!("{v:.2}"))
                .unwrap_or_else(|| "–".into()),
            s.server_cpu_us_per_request,
            s.bench_cpu_us_per_request,
            s.server_handler_mean_us,
        );
    }
    println!();
    println!("| target | measured | verdict |");
    println!("|---|--:|---|");
    for t in &r.targets {
        let measured = if t.unit == "µs" {
            format!("{:.0} µs", t.measured)
        } else {
            format!("{}/s", thousands(t.measured))
        };
        println!(
            "| {}: {} | {} | {} |",
            t.figure, t.target, measured, t.verdict
        );
    }
    println!();
    println!("| server memory | VmRSS MiB | VmHWM MiB |");
    println!("|---|--:|--:|");
    for m in &r.memory {
        println!(
            "| {} | {:.1} | {:.1} |",
            m.when,
            m.memory.vm_rss_kib as f64 / 1024.0,
            m.memory.vm_hwm_kib as f64 / 1024.0
        );
    }
    println!();
    println!(
        "requests failed: {}; server log lines at the --server-log level: {}; total {:.0} s",
        r.requests_failed, r.server_log_lines, r.total_seconds
    );
}
