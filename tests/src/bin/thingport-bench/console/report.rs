//! The figures of `console`: their JSON document and the Markdown tables on stdout.

use super::wire;
use crate::report::Machine;
use serde::Serialize;
use std::time::Duration;

/// Target: p50 of the keystroke echo through the console at most this much above `connect`'s.
pub const KEYSTROKE_P50_MARGIN_US: f64 = 1_000.0;
/// Target: console updates/s ÷ connect updates/s.
pub const VNC_RATIO_TARGET: f64 = 1.0;

/// Per path: the update times and the CPU seconds of [GAS, agent, RAC, this tool] spent in them.
pub(super) type PathUpdates = (Vec<Duration>, [f64; 4]);

/// Percentiles of a set of timings, in µs.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(super) struct Latency {
    pub(super) samples: usize,
    pub(super) p50_us: f64,
    pub(super) p99_us: f64,
    pub(super) max_us: f64,
}

impl Latency {
    pub(super) fn of(d: &[Duration]) -> Latency {
        let mut us: Vec<f64> = d.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        let q = |q: f64| {
            if us.is_empty() {
                return 0.0;
            }
            us[((q * us.len() as f64).ceil() as usize).clamp(1, us.len()) - 1]
        };
        Latency {
            samples: us.len(),
            p50_us: q(0.50),
            p99_us: q(0.99),
            max_us: us.last().copied().unwrap_or(0.0),
        }
    }
}

#[derive(Debug, Serialize)]
pub(super) struct Keystrokes {
    pub(super) console: Latency,
    pub(super) connect: Latency,
    /// The client straight to the echo server: the floor.
    pub(super) direct: Latency,
    pub(super) p50_difference_us: f64,
    pub(super) target_us: f64,
    pub(super) verdict: &'static str,
}

/// CPU seconds per update of the processes on a path.
#[derive(Debug, Default, Serialize)]
pub(super) struct Cpu {
    pub(super) gas_ms: f64,
    pub(super) agent_ms: f64,
    pub(super) rac_ms: f64,
    pub(super) bench_ms: f64,
}

#[derive(Debug, Serialize)]
pub(super) struct Updates {
    pub(super) updates: usize,
    pub(super) seconds: f64,
    pub(super) updates_per_s: f64,
    pub(super) mib_per_s: f64,
    pub(super) per_update: Latency,
    pub(super) cpu_per_update: Cpu,
}

#[derive(Debug, Serialize)]
pub(super) struct Vnc {
    pub(super) width: u16,
    pub(super) height: u16,
    pub(super) bytes_per_update: usize,
    pub(super) console: Updates,
    pub(super) connect: Updates,
    /// The client straight to the RFB server: the floor.
    pub(super) direct: Updates,
    /// Console updates/s ÷ connect updates/s over the whole run (the target's figure).
    pub(super) ratio: f64,
    /// The same from the median update times (less sensitive to a stall of the shared machine).
    pub(super) ratio_at_p50: f64,
    pub(super) target_ratio: f64,
    pub(super) verdict: &'static str,
}

#[derive(Debug, Serialize)]
pub(super) struct ConsoleReport {
    pub(super) tool: &'static str,
    pub(super) version: &'static str,
    pub(super) mode: &'static str,
    pub(super) machine: Machine,
    pub(super) keystrokes: Keystrokes,
    pub(super) vnc: Vnc,
    pub(super) total_seconds: f64,
}

pub(super) fn updates_of((times, cpu): &PathUpdates) -> Updates {
    let n = times.len().max(1) as f64;
    let seconds: f64 = times.iter().map(Duration::as_secs_f64).sum();
    let ms = |s: f64| s * 1e3 / n;
    Updates {
        updates: times.len(),
        seconds,
        updates_per_s: times.len() as f64 / seconds,
        mib_per_s: (times.len() * wire::UPDATE_BYTES) as f64 / (1024.0 * 1024.0) / seconds,
        per_update: Latency::of(times),
        cpu_per_update: Cpu {
            gas_ms: ms(cpu[0]),
            agent_ms: ms(cpu[1]),
            rac_ms: ms(cpu[2]),
            bench_ms: ms(cpu[3]),
        },
    }
}

pub(super) fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "MISS"
    }
}

pub(super) fn print(r: &ConsoleReport) {
    let (k, v) = (&r.keystrokes, &r.vnc);
    let m = &r.machine;
    println!(
        "\n## console: browser console vs thingport connect ({} mode) on {} CPU(s), {}\n",
        r.mode, m.cpus, m.cpu_model
    );
    println!("| keystroke echo (1 byte, one at a time) | samples | p50 µs | p99 µs | max µs |");
    println!("|---|--:|--:|--:|--:|");
    for (name, l) in [
        (
            "browser console (WebSocket → GAS Telnet client → agent)",
            &k.console,
        ),
        ("`thingport connect` (RAC → GAS → agent)", &k.connect),
        ("direct (client → echo server, the floor)", &k.direct),
    ] {
        println!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} |",
            l.samples, l.p50_us, l.p99_us, l.max_us
        );
    }
    println!(
        "\ntarget: console p50 ≤ connect p50 + 1 ms: difference {:+.0} µs → {}\n",
        k.p50_difference_us, k.verdict
    );
    println!(
        "| {}×{} Raw update ({:.1} MiB) | updates | updates/s | MiB/s | p50 ms | p99 ms | CPU ms/update: GAS | agent | RAC | this tool (client, targets) |",
        v.width,
        v.height,
        v.bytes_per_update as f64 / (1024.0 * 1024.0)
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for (name, u) in [
        (
            "browser console (WebSocket → GAS RFB proxy → agent)",
            &v.console,
        ),
        ("`thingport connect` (RAC → GAS → agent)", &v.connect),
        ("direct (client → RFB server, the floor)", &v.direct),
    ] {
        let c = &u.cpu_per_update;
        println!(
            "| {name} | {} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            u.updates,
            u.updates_per_s,
            u.mib_per_s,
            u.per_update.p50_us / 1e3,
            u.per_update.p99_us / 1e3,
            c.gas_ms,
            c.agent_ms,
            c.rac_ms,
            c.bench_ms
        );
    }
    println!(
        "\ntarget: console updates/s ÷ connect updates/s ≥ {:.1}: {:.2} → {} (from the median update times: {:.2})",
        v.target_ratio, v.ratio, v.verdict, v.ratio_at_p50
    );
}
