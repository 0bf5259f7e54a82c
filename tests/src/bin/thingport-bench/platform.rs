//! `thingport-bench platform`: authorised REST calls per second and their latency, on one
//! connection and on many, against a freshly started server.

use crate::http::Body;
use crate::load::{MakeRequest, Pool, Stop};
use crate::probe::{self, Cost, Memory, Prober};
use crate::report::{self, Measurement, Report};
use crate::server::{self, ServerProcess};
use crate::setup::{self, Fixture};
use crate::Outcome;
use anyhow::{Context, Result};
use clap::Args;
use hyper::body::Bytes;
use hyper::Request;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct PlatformArgs {
    /// The `thingport-server` binary [default: thingport-server next to this executable, i.e.
    /// target/release/thingport-server for target/release/thingport-bench].
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,

    /// Small counts and durations: done in well under a minute (a smoke run, not for the record).
    #[arg(long)]
    pub quick: bool,

    /// Also write every figure to this file as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Concurrent connections of the multi-connection runs.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(2..=1024))]
    pub connections: u64,

    /// Repetitions of every measurement; the summary shows the median over them
    /// [default: 3, --quick: 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub repeat: Option<u32>,

    /// Sequential requests of each single-connection read run [default: 20000, --quick: 2000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(10..=1_000_000))]
    pub requests: Option<u64>,

    /// Seconds of each multi-connection read run [default: 10, --quick: 3].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=120))]
    pub duration: Option<u64>,

    /// Things created in each single-connection create run [default: 2000, --quick: 200].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub creates_single: Option<u64>,

    /// Things created in each multi-connection create run [default: 5000, --quick: 500].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub creates_concurrent: Option<u64>,

    /// Worker threads of the load generator (1: one current-thread runtime, the leanest; the
    /// server shares the machine's cores with it).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub client_threads: u64,

    /// Run only these measurements (comma-separated), e.g. to profile one of them.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LIST")]
    pub only: Vec<Kind>,

    /// The server's --log filter (its log goes to a file in its temporary data directory).
    #[arg(long, default_value = "warn")]
    pub server_log: String,
}

/// Counts and durations of one mode.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub mode: &'static str,
    pub repeat: u32,
    pub connections: usize,
    pub single_requests: u64,
    pub single_warmup_requests: u64,
    pub concurrent_seconds: f64,
    pub concurrent_warmup_seconds: f64,
    pub creates_single: u64,
    pub creates_concurrent: u64,
    pub create_warmup: u64,
    /// Hard time cap of any one phase.
    pub phase_cap_seconds: f64,
    pub client_threads: u64,
}

impl Settings {
    fn from_args(a: &PlatformArgs) -> Self {
        let q = a.quick;
        let requests = a.requests.unwrap_or(if q { 2_000 } else { 20_000 });
        Settings {
            mode: if q { "quick" } else { "full" },
            repeat: a.repeat.unwrap_or(if q { 1 } else { 3 }),
            connections: a.connections as usize,
            single_requests: requests,
            single_warmup_requests: (requests / 10).max(10),
            concurrent_seconds: a.duration.unwrap_or(if q { 3 } else { 10 }) as f64,
            concurrent_warmup_seconds: if q { 0.5 } else { 1.0 },
            creates_single: a.creates_single.unwrap_or(if q { 200 } else { 2_000 }),
            creates_concurrent: a.creates_concurrent.unwrap_or(if q { 500 } else { 5_000 }),
            create_warmup: if q { 20 } else { 100 },
            phase_cap_seconds: if q { 20.0 } else { 120.0 },
            client_threads: a.client_threads,
        }
    }
}

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// `GET /healthz`: no authentication, no model access; the same-run HTTP baseline.
    Healthz,
    /// `GET /Thingworx/Things/BenchThing/Properties/p`: visibility + PropertyRead.
    Read,
    /// `POST /Thingworx/Things/BenchThing/Services/GetPropertyValues`: visibility + ServiceInvoke.
    Service,
    /// `POST .../EntityServices/Services/CreateThing` with a unique name: Create on Things + a write.
    Create,
}

impl Kind {
    pub fn key(self) -> &'static str {
        match self {
            Kind::Healthz => "healthz",
            Kind::Read => "property_read",
            Kind::Service => "service_call",
            Kind::Create => "thing_create",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Healthz => "GET /healthz (baseline, no auth)",
            Kind::Read => "property read (GET .../Properties/p)",
            Kind::Service => "service call (POST GetPropertyValues)",
            Kind::Create => "Thing create (POST CreateThing)",
        }
    }
}

fn make_request(kind: Kind, f: &Fixture) -> Result<MakeRequest> {
    let thing = setup::THING;
    Ok(match kind {
        Kind::Healthz => fixed(f.anonymous.prepare("/healthz", None)?),
        Kind::Read => fixed(f.user.prepare(
            &format!("/Thingworx/Things/{thing}/Properties/{}", setup::PROPERTY),
            None,
        )?),
        Kind::Service => fixed(f.user.prepare(
            &format!("/Thingworx/Things/{thing}/Services/GetPropertyValues"),
            Some(&serde_json::json!({})),
        )?),
        Kind::Create => {
            let p = f
                .user
                .post_template("/Thingworx/Resources/EntityServices/Services/CreateThing")?;
            let tag = std::process::id();
            // Unique over the whole run: every create phase shares this counter.
            let next = AtomicU64::new(0);
            Arc::new(move || -> Request<Body> {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let body = format!(
                    r#"{{"name":"BenchNew-{tag}-{n}","thingTemplateName":"{}"}}"#,
                    setup::TEMPLATE
                );
                p.request_with(Some(Bytes::from(body)))
            })
        }
    })
}

fn fixed(p: crate::http::Prepared) -> MakeRequest {
    Arc::new(move || p.request())
}

/// Runs the whole platform benchmark.
pub async fn run(args: PlatformArgs) -> Result<Outcome> {
    let settings = Settings::from_args(&args);
    let started = Instant::now();
    let binary = server::locate(args.server_bin.as_deref())?;
    if cfg!(debug_assertions) {
        eprintln!("warning: this thingport-bench is a debug build; its load generator is slow. Use --release.");
    }
    let admin_password = format!(
        "bench-admin-{}-{}",
        std::process::id(),
        started.elapsed().as_nanos()
    );
    let mut srv = ServerProcess::start(&binary, &admin_password, &args.server_log)?;
    eprintln!(
        "server {} (pid {}) listening on {}",
        binary.display(),
        srv.pid(),
        srv.addr
    );
    let idle = probe::memory(srv.pid())?;
    let fixture = setup::create(srv.addr, &admin_password).await?;
    let mut prober = Prober::new(
        srv.pid(),
        srv.addr,
        fixture.anonymous.prepare("/metrics", None)?,
    );
    let mut memory: Vec<(String, Memory)> = vec![
        ("idle, just started".into(), idle),
        ("idle, after setup".into(), probe::memory(srv.pid())?),
    ];
    let mut runs = Vec::new();
    let ctx = Ctx {
        settings: &settings,
        addr: srv.addr,
    };
    let wanted = |k: Kind| args.only.is_empty() || args.only.contains(&k);
    for r in 1..=settings.repeat {
        for kind in [Kind::Healthz, Kind::Read, Kind::Service] {
            if !wanted(kind) {
                continue;
            }
            let make = make_request(kind, &fixture)?;
            runs.push(ctx.single(kind, r, &make, &mut prober).await?);
            srv.check_alive()?;
            runs.push(ctx.concurrent(kind, r, &make, &mut prober).await?);
            srv.check_alive()?;
        }
    }
    memory.push((
        "after the read and service-call runs".into(),
        probe::memory(srv.pid())?,
    ));
    let make = make_request(Kind::Create, &fixture)?;
    for r in (1..=settings.repeat).filter(|_| wanted(Kind::Create)) {
        runs.push(ctx.single(Kind::Create, r, &make, &mut prober).await?);
        srv.check_alive()?;
        runs.push(ctx.concurrent(Kind::Create, r, &make, &mut prober).await?);
        srv.check_alive()?;
    }
    memory.push(("after the create runs".into(), probe::memory(srv.pid())?));
    if wanted(Kind::Read) && wanted(Kind::Create) {
        // Reads again, now that the model holds thousands more Things: do reads scale?
        let make = make_request(Kind::Read, &fixture)?;
        let mut after = ctx.single(Kind::Read, 1, &make, &mut prober).await?;
        after.scenario = "property_read_after_creates".into();
        after.label = "property read, after the creates".into();
        runs.push(after);
    }
    memory.push(("at the end".into(), probe::memory(srv.pid())?));
    let server_log_lines = srv.log_lines();
    let report = Report::new(
        &settings,
        &srv,
        runs,
        memory,
        server_log_lines,
        started.elapsed().as_secs_f64(),
    );
    report::print(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if report.requests_failed > 0 {
        eprintln!("server log tail:\n{}", srv.log_tail());
    }
    Ok(Outcome {
        requests_failed: report.requests_failed,
    })
}

struct Ctx<'a> {
    settings: &'a Settings,
    addr: std::net::SocketAddr,
}

impl Ctx<'_> {
    fn cap(&self) -> Duration {
        Duration::from_secs_f64(self.settings.phase_cap_seconds)
    }

    /// Sequential requests on one connection, after a warm-up on the same connection.
    async fn single(
        &self,
        kind: Kind,
        repeat: u32,
        make: &MakeRequest,
        prober: &mut Prober,
    ) -> Result<Measurement> {
        let s = self.settings;
        let (warmup, stop) = match kind {
            Kind::Create => (Stop::Count(s.create_warmup), Stop::Count(s.creates_single)),
            _ => (
                Stop::Count(s.single_warmup_requests),
                Stop::Count(s.single_requests),
            ),
        };
        self.measure(kind, repeat, 1, make, warmup, stop, prober)
            .await
    }

    /// Many connections at once, each one request in flight.
    async fn concurrent(
        &self,
        kind: Kind,
        repeat: u32,
        make: &MakeRequest,
        prober: &mut Prober,
    ) -> Result<Measurement> {
        let s = self.settings;
        let (warmup, stop) = match kind {
            Kind::Create => (
                Stop::Count(s.create_warmup),
                Stop::Count(s.creates_concurrent),
            ),
            _ => (
                Stop::For(Duration::from_secs_f64(s.concurrent_warmup_seconds)),
                Stop::For(Duration::from_secs_f64(s.concurrent_seconds)),
            ),
        };
        self.measure(kind, repeat, s.connections, make, warmup, stop, prober)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn measure(
        &self,
        kind: Kind,
        repeat: u32,
        connections: usize,
        make: &MakeRequest,
        warmup: Stop,
        stop: Stop,
        prober: &mut Prober,
    ) -> Result<Measurement> {
        let mut pool = Pool::connect(self.addr, connections).await?;
        let warm = pool.phase(make, warmup, self.cap()).await?;
        let before = prober.snapshot().await?;
        let stats = pool.phase(make, stop, self.cap()).await?;
        let after = prober.snapshot().await?;
        drop(pool);
        let cost: Cost = probe::cost(&before, &after, stats.ok + stats.errors);
        let m = Measurement {
            scenario: kind.key().into(),
            label: kind.label().into(),
            repeat,
            warmup_errors: warm.errors,
            warmup_error_samples: warm.error_samples,
            stats,
            cost,
        };
        report::progress(&m);
        Ok(m)
    }
}

/// Used by the report for the summary's medians.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
