//! TLS on both legs: a second GAS, `gas-tls`, serving `wss` with a throwaway certificate (made
//! with the `openssl` command as `tests/src/certs.rs` does), made the only GAS enabled for new
//! sessions (`DisableForRemoteSessions` on the plain one, whose sessions go on); a RAC started
//! with `--ca-file` for the `bulk` endpoint, and the agent (started with the same `--ca-file` at
//! the beginning) attaching to it over TLS too. The platform stays plain HTTP. Bulk transfers
//! alternate between the plain tunnel and the TLS one, so that both see the same machine.

use super::report::{Latency, Tls, TlsRun};
use super::site::{ChildProc, DEVICE, GAS_NAME, OPERATOR};
use super::targets::{self, Echo};
use super::{blocking, Artefacts, Running, Settings, MIB};
use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The TLS GAS's name.
const GAS_TLS: &str = "gas-tls";

/// A throwaway CA and a certificate for 127.0.0.1 signed by it; removed when dropped.
pub struct Certs {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes the certificates with `openssl` (EC P-256, valid 2 days).
pub fn make_certs() -> Result<Certs> {
    let dir = tempfile::Builder::new()
        .prefix("thingport-bench-tls-")
        .tempdir()?;
    let run = |args: &[&str]| -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .context("cannot run openssl (apt-get install openssl)")?;
        ensure!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=thingport-bench CA",
    ]);
    run(&ca)?;
    let mut req = vec!["req"];
    req.extend(ec);
    req.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&req)?;
    std::fs::write(
        dir.path().join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ])?;
    let p = |f: &str| dir.path().join(f);
    Ok(Certs {
        ca: p("ca.pem"),
        cert: p("server.pem"),
        key: p("server.key"),
        _dir: dir,
    })
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

/// Runs the phase: starts `gas-tls` and a TLS RAC for `bulk`, measures, and leaves `gas-1`
/// disabled (this is the last phase that starts sessions).
pub async fn measure(
    site: &mut Running,
    art: &Artefacts,
    st: &Settings,
    certs: &Certs,
) -> Result<Tls> {
    let log: Vec<&str> = match &st.child_log {
        Some(f) => vec!["--log", f.as_str()],
        None => vec![],
    };
    let url = site.url.clone();
    let mut args = vec![
        "--url",
        url.as_str(),
        "--name",
        GAS_TLS,
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        path_str(&certs.cert)?,
        "--tls-key",
        path_str(&certs.key)?,
    ];
    args.extend(&log);
    let mut gas = ChildProc::spawn(
        "thingport-gas (TLS)",
        &art.gas,
        &args,
        &[("THINGPORT_APP_KEY", site.gas_key.as_str())],
        true,
    )?;
    site.admin.wait_connected(GAS_TLS, &mut gas).await?;
    site.admin
        .thing_service(GAS_TLS, "EnableForRemoteSessions", json!({}))
        .await?;
    site.admin
        .thing_service(GAS_NAME, "DisableForRemoteSessions", json!({}))
        .await?;
    let ca = path_str(&certs.ca)?;
    let mut args = vec![
        "--ca-file",
        ca,
        "connect",
        DEVICE,
        "bulk",
        "--local",
        "127.0.0.1:0",
    ];
    args.extend(&log);
    let env = [
        ("THINGPORT_URL", url.as_str()),
        ("THINGPORT_USER", OPERATOR),
        ("THINGPORT_PASSWORD", site.operator_password.as_str()),
    ];
    let mut rac = ChildProc::spawn("thingport connect (bulk, TLS)", &art.rac, &args, &env, true)?;
    let r = run(site, st, &mut gas, &mut rac).await;
    let r = match (r, gas.check_alive(), rac.check_alive()) {
        (Ok(t), Ok(()), Ok(())) => Ok(t),
        (Err(e), Ok(()), Ok(())) => Err(e),
        (Ok(_), Err(d), _) | (Ok(_), _, Err(d)) => Err(d),
        (Err(e), Err(d), _) | (Err(e), _, Err(d)) => Err(anyhow::anyhow!("{e:#}, because {d:#}")),
    };
    site.blame(r).await
}

async fn run(
    site: &mut Running,
    st: &Settings,
    gas: &mut ChildProc,
    rac: &mut ChildProc,
) -> Result<Tls> {
    let (plain, tls) = (site.rac_bulk.addr()?, rac.addr()?);
    let (len, cap) = (st.bulk_bytes, st.cap());
    let warm = len.min(32 * MIB);
    let gas_before = crate::probe::cpu_seconds(Some(gas.pid()));
    for up in [true, false] {
        blocking(move || targets::bulk_transfer(tls, warm, up, cap)).await?;
    }
    if crate::probe::cpu_seconds(Some(gas.pid())) <= gas_before {
        bail!("the TLS RAC's session did not go through {GAS_TLS} (its CPU time did not move)");
    }
    let pids = [
        [site.rac_bulk.pid(), site.gas.pid(), site.agent.pid()],
        [rac.pid(), gas.pid(), site.agent.pid()],
    ];
    let cpu = |p: [u32; 3]| -> f64 { p.iter().map(|p| crate::probe::cpu_seconds(Some(*p))).sum() };
    let gib = len as f64 / (1024.0 * MIB as f64);
    let mut runs = Vec::new();
    for repeat in 1..=st.side_repeat {
        for up in [true, false] {
            let mut mib_s = [0.0; 2];
            let mut cpu_per = [0.0; 2];
            for (i, addr) in [plain, tls].into_iter().enumerate() {
                let before = cpu(pids[i]);
                let t = blocking(move || targets::bulk_transfer(addr, len, up, cap)).await?;
                cpu_per[i] = (cpu(pids[i]) - before) / gib;
                mib_s[i] = len as f64 / MIB as f64 / t.as_secs_f64();
            }
            let r = TlsRun {
                repeat,
                direction: if up { "up" } else { "down" },
                plain_mib_s: mib_s[0],
                tls_mib_s: mib_s[1],
                plain_cpu_s_per_gib: cpu_per[0],
                tls_cpu_s_per_gib: cpu_per[1],
            };
            eprintln!(
                "  TLS bulk {:<4} run {}  plain {:>6.0} MiB/s  TLS {:>6.0} MiB/s ({:>3.0}%)  CPU s/GiB RAC + GAS + agent: plain {:.2}, TLS {:.2}",
                r.direction,
                repeat,
                r.plain_mib_s,
                r.tls_mib_s,
                100.0 * r.tls_mib_s / r.plain_mib_s,
                r.plain_cpu_s_per_gib,
                r.tls_cpu_s_per_gib
            );
            runs.push(r);
        }
    }
    let n = (st.round_trips / 5).max(100);
    let (rp, rt) = blocking(move || {
        let deadline = Instant::now() + cap;
        let mut conns = [Echo::connect_bulk(plain)?, Echo::connect_bulk(tls)?];
        let mut samples: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
        for c in conns.iter_mut() {
            for _ in 0..super::WARMUP {
                c.round_trip()?;
            }
        }
        while samples[1].len() < n && Instant::now() < deadline {
            for (c, s) in conns.iter_mut().zip(samples.iter_mut()) {
                for _ in 0..super::RTT_BLOCK {
                    s.push(c.round_trip()?);
                }
            }
        }
        let [a, b] = samples;
        Ok((a, b))
    })
    .await?;
    let med = |up: bool, f: fn(&TlsRun) -> f64| {
        crate::platform::median(
            runs.iter()
                .filter(|r| (r.direction == "up") == up)
                .map(f)
                .collect(),
        )
    };
    Ok(Tls {
        plain_mib_s: [med(true, |r| r.plain_mib_s), med(false, |r| r.plain_mib_s)],
        tls_mib_s: [med(true, |r| r.tls_mib_s), med(false, |r| r.tls_mib_s)],
        plain_cpu_s_per_gib: crate::platform::median(
            runs.iter().map(|r| r.plain_cpu_s_per_gib).collect(),
        ),
        tls_cpu_s_per_gib: crate::platform::median(
            runs.iter().map(|r| r.tls_cpu_s_per_gib).collect(),
        ),
        round_trip: [Latency::of_us(&rp), Latency::of_us(&rt)],
        runs,
    })
}
