//! The optional one-hop baseline of `../shared/BENCHMARKS.md`: `socat -b 131072` (Debian's), one
//! forking listener per target, on a free loopback port picked just before it starts. Skipped,
//! with a note, when `socat` is not on `PATH`. Its CPU is the listener's own plus that of its
//! reaped children (`/proc/PID/stat` fields 14–17), read once the connection's child has exited.

use super::site::ChildProc;
use anyhow::{bail, Result};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `socat` on `PATH`, if any.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("socat"))
        .find(|p| p.is_file())
}

/// `socat -V`'s version line.
pub fn version(bin: &std::path::Path) -> String {
    std::process::Command::new(bin)
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| l.starts_with("socat version"))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "socat (version unknown)".into())
}

/// A forking `socat` listener relaying to one target; killed when dropped.
pub struct Socat {
    pub addr: SocketAddr,
    child: ChildProc,
}

impl Socat {
    pub fn start(bin: &std::path::Path, target: SocketAddr) -> Result<Socat> {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let listen =
                format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,backlog=4096,nodelay");
            let connect = format!("TCP:{target},nodelay");
            let mut child = ChildProc::spawn(
                "socat",
                bin,
                &["-b", "131072", &listen, &connect],
                &[],
                false,
            )?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if child.check_alive().is_err() {
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Ok(Socat { addr, child });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        bail!("socat did not start listening (5 attempts)")
    }

    pub fn check_alive(&mut self) -> Result<()> {
        self.child.check_alive()
    }

    /// CPU seconds of the listener and its reaped children, once no child is left (bounded).
    pub fn cpu_seconds(&self) -> f64 {
        let pid = self.child.pid();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            if children.trim().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return 0.0;
        };
        let Some(rest) = text.rfind(')').map(|i| &text[i + 1..]) else {
            return 0.0;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // After ')': utime, stime, cutime, cstime are indices 11 to 14.
        (11..=14)
            .map(|i| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
            .sum::<f64>()
            / 100.0
    }
}
