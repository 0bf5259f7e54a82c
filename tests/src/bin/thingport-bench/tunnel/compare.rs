//! Side by side (issue 17): every tunnel figure of direct, `socat` (one hop), wstunnel (two
//! hops, our shape) and Thingport, each as a ratio to direct and to wstunnel, and the verdicts
//! that ask for Thingport both to meet its target and to be ahead of wstunnel.
//!
//! "÷ direct" divides a relay's figure by the direct path measured interleaved with that relay
//! (Thingport's own direct transfers and blocks, socat's, wstunnel's), so that a machine that
//! slows down between phases does not count against a path; "÷ wstunnel" divides the figures as
//! measured. Latency "over direct" is the relay's figure minus that same direct figure.

use super::report::{
    Report, TargetCheck, BULK_SHARE_TARGET, CONNECT_P50_EXTRA_US, CPU_TARGET_S,
    MEMORY_PER_CONNECTION_KIB, RTT_P50_EXTRA_US,
};
use super::wstunnel::Figures;

/// One figure of the four paths (direct, socat, wstunnel, Thingport): its value, and the direct
/// value it is compared with.
struct Row {
    name: String,
    value: [Option<f64>; 4],
    direct: [Option<f64>; 4],
    /// A latency: also shown as the difference to direct.
    latency: bool,
    decimals: usize,
}

fn rows(r: &Report, w: &Figures) -> Vec<Row> {
    let s = r.more.socat.as_ref();
    let mut out = Vec::new();
    for (i, d) in ["up", "down"].iter().enumerate() {
        let direct = r.bulk_direct_mib_s[i];
        out.push(Row {
            name: format!("bulk {d}, one connection, MiB/s"),
            value: [
                Some(direct),
                s.map(|s| s.socat_mib_s[i]),
                Some(w.wstunnel_mib_s[i]),
                Some(r.bulk_tunnel_mib_s[i]),
            ],
            direct: [
                Some(direct),
                s.map(|s| s.direct_mib_s[i]),
                Some(w.direct_mib_s[i]),
                Some(direct),
            ],
            latency: false,
            decimals: 0,
        });
    }
    out.push(Row {
        name: "relay CPU s per GiB (all relays of the path)".into(),
        value: [
            None,
            s.map(|s| s.cpu_s_per_gib),
            Some(w.cpu_s_per_gib),
            Some(r.cpu_s_per_gib[2].relays()),
        ],
        direct: [None; 4],
        latency: false,
        decimals: 2,
    });
    type Pick = fn(&super::report::Latency) -> f64;
    let lat: [(&str, usize, Pick); 4] = [
        ("round trip 64 B, p50 µs", 0, |l| l.p50_us),
        ("round trip 64 B, p99 µs", 0, |l| l.p99_us),
        ("new connection → first echoed byte, p50 µs", 1, |l| {
            l.p50_us
        }),
        ("new connection → first echoed byte, p99 µs", 1, |l| {
            l.p99_us
        }),
    ];
    for (name, which, f) in lat {
        let of = |pair: &[super::report::Latency; 2]| [f(&pair[0]), f(&pair[1])];
        let t = of(if which == 0 {
            &r.round_trip
        } else {
            &r.new_connection
        });
        let ws = of(if which == 0 {
            &w.round_trip
        } else {
            &w.new_connection
        });
        let so = s.map(|s| {
            of(if which == 0 {
                &s.round_trip
            } else {
                &s.new_connection
            })
        });
        out.push(Row {
            name: name.into(),
            value: [Some(t[0]), so.map(|x| x[1]), Some(ws[1]), Some(t[1])],
            direct: [Some(t[0]), so.map(|x| x[0]), Some(ws[0]), Some(t[0])],
            latency: true,
            decimals: 0,
        });
    }
    out.push(Row {
        name: format!(
            "memory per open connection, all relays, KiB (wstunnel {} open, Thingport {})",
            w.held.opened, r.more.many.opened
        ),
        value: [
            None,
            None,
            Some(w.held.per_connection_kib),
            Some(r.more.many.per_connection_kib),
        ],
        direct: [None; 4],
        latency: false,
        decimals: 1,
    });
    out
}

fn num(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => {
            if decimals == 0 && v.abs() >= 1_000.0 {
                let digits = (v.round() as i64).to_string();
                let mut s = String::new();
                for (i, ch) in digits.chars().enumerate() {
                    if i > 0 && (digits.len() - i).is_multiple_of(3) && ch != '-' {
                        s.push(',');
                    }
                    s.push(ch);
                }
                s
            } else {
                format!("{v:.decimals$}")
            }
        }
        _ => "–".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// The side-by-side table, on stdout (or why wstunnel is not in it).
pub fn print(r: &Report) {
    let Some(w) = &r.more.wstunnel else {
        println!(
            "wstunnel baseline: {}",
            r.more.wstunnel_note.as_deref().unwrap_or("not measured")
        );
        return;
    };
    println!(
        "| side by side ({}) | direct | socat, 1 hop | wstunnel, 2 hops | Thingport, 2 hops |",
        w.version
    );
    println!("|---|--:|--:|--:|--:|");
    for row in rows(r, w) {
        let cells = |f: &dyn Fn(usize) -> String| (0..4).map(f).collect::<Vec<_>>().join(" | ");
        println!(
            "| {} | {} |",
            row.name,
            cells(&|i| num(row.value[i], row.decimals))
        );
        if row.latency {
            println!(
                "| ↳ over direct, µs | {} |",
                cells(&|i| match (row.value[i], row.direct[i]) {
                    (Some(v), Some(d)) => format!("{:+.0}", v - d),
                    _ => "–".into(),
                })
            );
        }
        // A relay's CPU or memory has no direct counterpart.
        if row.direct.iter().any(Option::is_some) {
            println!(
                "| ↳ ÷ direct | {} |",
                cells(&|i| num(ratio(row.value[i], row.direct[i]), 2))
            );
        }
        println!(
            "| ↳ ÷ wstunnel | {} |",
            cells(&|i| num(ratio(row.value[i], row.value[2]), 2))
        );
    }
    println!(
        "(÷ direct: against the direct path measured interleaved with that path; wstunnel: {} bulk transfer(s) each way, {} round trips, {} new connections, {} connections held open)",
        w.runs.len() / 2,
        w.round_trip[1].samples,
        w.new_connection[1].samples,
        w.held.attempted
    );
}

/// The verdicts against the targets and against wstunnel; none when wstunnel was not measured.
pub fn verdicts(r: &Report) -> Vec<TargetCheck> {
    let Some(w) = &r.more.wstunnel else {
        return Vec::new();
    };
    let v = |pass: bool| if pass { "PASS" } else { "MISS" };
    let mut out = Vec::new();
    for (i, d) in ["up", "down"].iter().enumerate() {
        let t = r.bulk_tunnel_mib_s[i] / r.bulk_direct_mib_s[i].max(f64::MIN_POSITIVE);
        let ws = w.wstunnel_mib_s[i] / w.direct_mib_s[i].max(f64::MIN_POSITIVE);
        out.push(TargetCheck {
            figure: format!("bulk {d}, one connection, vs wstunnel"),
            target: format!(
                "≥ {:.0}% of direct and above wstunnel (2 hops)",
                BULK_SHARE_TARGET * 100.0
            ),
            measured: format!("{:.0}%; wstunnel {:.0}%", t * 100.0, ws * 100.0),
            verdict: v(t >= BULK_SHARE_TARGET && t > ws),
        });
    }
    let cpu = r.cpu_s_per_gib[2].relays();
    out.push(TargetCheck {
        figure: "CPU of the three relays per GiB moved, vs wstunnel".into(),
        target: format!("≤ {CPU_TARGET_S:.1} s and below wstunnel"),
        measured: format!("{cpu:.2} s; wstunnel {:.2} s", w.cpu_s_per_gib),
        verdict: v(cpu <= CPU_TARGET_S && cpu < w.cpu_s_per_gib),
    });
    let over = |l: &[super::report::Latency; 2]| l[1].p50_us - l[0].p50_us;
    for (name, extra, t, ws) in [
        (
            "round trip, 64 B, p50, vs wstunnel",
            RTT_P50_EXTRA_US,
            over(&r.round_trip),
            over(&w.round_trip),
        ),
        (
            "new connection → first echoed byte, p50, vs wstunnel",
            CONNECT_P50_EXTRA_US,
            over(&r.new_connection),
            over(&w.new_connection),
        ),
    ] {
        out.push(TargetCheck {
            figure: name.into(),
            target: format!("≤ direct + {extra:.0} µs and below wstunnel"),
            measured: format!("direct + {t:.0} µs; wstunnel direct + {ws:.0} µs"),
            verdict: v(t <= extra && t < ws),
        });
    }
    let (t, ws) = (r.more.many.per_connection_kib, w.held.per_connection_kib);
    out.push(TargetCheck {
        figure: "memory per open connection, all relays, vs wstunnel".into(),
        target: format!("≤ {MEMORY_PER_CONNECTION_KIB:.0} KiB and below wstunnel"),
        measured: format!("{t:.1} KiB; wstunnel {ws:.1} KiB"),
        verdict: v(r.more.many.opened > 0 && t <= MEMORY_PER_CONNECTION_KIB && t < ws),
    });
    out
}
