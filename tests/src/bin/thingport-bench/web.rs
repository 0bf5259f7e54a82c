//! `thingport-bench web`: the web console's device list at 10,000 Things, as a signed-in
//! browser asks for it (cookie session, server-side rendering, HTML over keep-alive HTTP/1.1):
//! a page of the list, the rows fragment the list refreshes itself with, and a search by name,
//! for an administrator (who bypasses visibility) and for a user who sees every Thing through
//! an organization (the visibility check runs for each of the 10,000).

use crate::http::{snippet, Auth, Conn, Target};
use crate::platform::median;
use crate::server::{self, ServerProcess};
use crate::Outcome;
use anyhow::{bail, Context, Result};
use clap::Args;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE, COOKIE, HOST, SET_COOKIE};
use hyper::{Method, Request, StatusCode};
use serde::Serialize;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Target (BENCHMARKS.md, issue 13): a page of the device list renders in under 5 ms p50 at
/// 10,000 Things.
pub const PAGE_P50_TARGET_US: f64 = 5_000.0;

#[derive(Debug, Args)]
pub struct WebArgs {
    /// The `thingport-server` binary [default: next to this executable].
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,

    /// 1,000 Things and 200 requests per figure: a smoke run, not for the record.
    #[arg(long)]
    pub quick: bool,

    /// Also write every figure to this file as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Things in the model [default: 10000, --quick: 1000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub things: Option<u64>,

    /// Sequential requests per figure [default: 2000, --quick: 200].
    #[arg(long, value_parser = clap::value_parser!(u64).range(10..=1_000_000))]
    pub requests: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Figure {
    who: &'static str,
    what: &'static str,
    requests: u64,
    p50_us: f64,
    p99_us: f64,
    bytes: usize,
}

#[derive(Debug, Serialize)]
struct WebReport {
    tool: &'static str,
    things: u64,
    figures: Vec<Figure>,
    page_p50_target_us: f64,
    verdict: &'static str,
}

const CREATORS: usize = 8;

async fn create_things(srv: &ServerProcess, admin: &Target, n: u64) -> Result<()> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..CREATORS as u64 {
        let addr = srv.addr;
        let target = admin.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(addr).await?;
            let p = target
                .post_template("/Thingworx/Resources/EntityServices/Services/CreateThing")?;
            let mut i = worker;
            while i < n {
                let body = json!({"name": format!("device-{i:05}"), "thingTemplateName": "RemoteThing",
                                  "description": format!("bench device {i}")});
                let (status, answer) = conn
                    .send(p.request_with(Some(Bytes::from(body.to_string()))))
                    .await?;
                if status != StatusCode::OK {
                    bail!("CreateThing device-{i:05}: {status}: {}", snippet(&answer));
                }
                i += CREATORS as u64;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await.context("a create task failed")??;
    }
    eprintln!(
        "created {n} Things in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Signs in through the console's form and returns the session cookie (`name=value`).
async fn sign_in(srv: &ServerProcess, user: &str, password: &str) -> Result<String> {
    let mut conn = Conn::connect(srv.addr).await?;
    let form = format!("user={user}&password={password}&next=/devices");
    let mut req = Request::new(http_body_util::Full::new(Bytes::from(form)));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = "/login".parse()?;
    let h = req.headers_mut();
    h.insert(HOST, HeaderValue::from_str(&srv.addr.to_string())?);
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    let resp = conn.send_full(req).await?;
    let cookie = resp
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(String::from)
        .with_context(|| {
            format!(
                "sign-in as {user} answered {} without a session",
                resp.status()
            )
        })?;
    Ok(cookie)
}

/// `count` sequential GETs of `paths` (cycled) with the cookie: latencies in µs, and the size of
/// the last answer.
async fn measure(
    srv: &ServerProcess,
    cookie: &str,
    paths: &[String],
    count: u64,
    needle: &str,
) -> Result<(Vec<f64>, usize)> {
    let mut conn = Conn::connect(srv.addr).await?;
    let host = HeaderValue::from_str(&srv.addr.to_string())?;
    let cookie = HeaderValue::from_str(cookie)?;
    let mut lat = Vec::with_capacity(count as usize);
    let mut size = 0;
    for i in 0..count {
        let mut req = Request::new(http_body_util::Full::new(Bytes::new()));
        *req.uri_mut() = paths[i as usize % paths.len()].parse()?;
        req.headers_mut().insert(HOST, host.clone());
        req.headers_mut().insert(COOKIE, cookie.clone());
        let t = Instant::now();
        let (status, body) = conn.send(req).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        if status != StatusCode::OK {
            bail!("GET {}: {status}: {}", paths[0], snippet(&body));
        }
        if !body.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            bail!(
                "GET {}: the answer lacks {needle:?}: {}",
                paths[0],
                snippet(&body)
            );
        }
        size = body.len();
    }
    Ok((lat, size))
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return 0.0;
    }
    s[((s.len() - 1) as f64 * p).round() as usize]
}

pub async fn run(args: WebArgs) -> Result<Outcome> {
    let things = args
        .things
        .unwrap_or(if args.quick { 1_000 } else { 10_000 });
    let requests = args
        .requests
        .unwrap_or(if args.quick { 200 } else { 2_000 });
    let binary = server::locate(args.server_bin.as_deref())?;
    let password = format!("Bench-{}", std::process::id());
    let srv = ServerProcess::start(&binary, &password, "warn")?;
    let admin = Target::new(
        srv.addr,
        &Auth::Basic {
            user: "Administrator".into(),
            password: password.clone(),
        },
    )?;
    create_things(&srv, &admin, things).await?;
    // A user who sees every device through the organization Everyone (one instance-visibility
    // grant on RemoteThing): the visibility check runs for each Thing.
    let mut conn = Conn::connect(srv.addr).await?;
    conn.call_ok(
        &admin.prepare(
            "/Thingworx/Resources/EntityServices/Services/CreateUser",
            Some(&json!({"name": "viewer", "password": "Viewer-Bench-1"})),
        )?,
        "CreateUser viewer",
    )
    .await
    .ok();
    conn.call_ok(
        &admin.prepare(
            "/Thingworx/ThingTemplates/RemoteThing/Services/AddInstanceVisibilityPermission",
            Some(&json!({"organization": "Everyone"})),
        )?,
        "AddInstanceVisibilityPermission",
    )
    .await
    .ok();
    let pages = things.div_ceil(50).max(1);
    let page_paths: Vec<String> = (1..=pages.min(200))
        .map(|p| format!("/devices?page={}", 1 + (p * 37) % pages))
        .collect();
    let row_paths: Vec<String> = page_paths
        .iter()
        .map(|p| p.replace("/devices?", "/devices/rows?q=&"))
        .collect();
    let search = vec![format!("/devices?q=device-{:05}", things / 2)];
    let mut figures = Vec::new();
    for (who, user, pw) in [
        ("Administrator", "Administrator", password.as_str()),
        (
            "viewer (sees all through Everyone)",
            "viewer",
            "Viewer-Bench-1",
        ),
    ] {
        let cookie = sign_in(&srv, user, pw).await?;
        for (what, paths, needle) in [
            ("a page of the device list", &page_paths, "device-"),
            ("the rows fragment (refresh)", &row_paths, "device-"),
            ("search by name", &search, "device-"),
        ] {
            // Warm-up, then the measured run.
            measure(&srv, &cookie, paths, (requests / 10).max(5), needle).await?;
            let (lat, bytes) = measure(&srv, &cookie, paths, requests, needle).await?;
            let f = Figure {
                who: if user == "Administrator" {
                    "Administrator"
                } else {
                    "viewer"
                },
                what,
                requests,
                p50_us: median(lat.clone()),
                p99_us: percentile(&lat, 0.99),
                bytes,
            };
            eprintln!(
                "{who}: {what}: p50 {:.0} µs, p99 {:.0} µs ({bytes} bytes)",
                f.p50_us, f.p99_us
            );
            figures.push(f);
        }
    }
    let worst_page = figures
        .iter()
        .filter(|f| f.what == "a page of the device list")
        .map(|f| f.p50_us)
        .fold(0.0, f64::max);
    let verdict = if worst_page < PAGE_P50_TARGET_US {
        "PASS"
    } else {
        "MISS"
    };
    println!(
        "\n## web: the device list at {things} Things (sequential, one keep-alive connection)\n"
    );
    println!("| who | request | p50 | p99 | answer |");
    println!("|---|---|---|---|---|");
    for f in &figures {
        println!(
            "| {} | {} | {:.2} ms | {:.2} ms | {:.1} KiB |",
            f.who,
            f.what,
            f.p50_us / 1000.0,
            f.p99_us / 1000.0,
            f.bytes as f64 / 1024.0
        );
    }
    println!(
        "\ntarget: a page of the device list < 5 ms p50 at 10,000 Things: worst p50 {:.2} ms → {verdict}{}",
        worst_page / 1000.0,
        if things < 10_000 { " (this run has fewer Things: not for the record)" } else { "" }
    );
    if let Some(path) = &args.json {
        let report = WebReport {
            tool: "thingport-bench web",
            things,
            figures,
            page_p50_target_us: PAGE_P50_TARGET_US,
            verdict,
        };
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(Outcome { requests_failed: 0 })
}
