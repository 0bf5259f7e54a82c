//! `thingport-bench extension`: the cost of one service call into a native extension, host →
//! extension → host, measured in-process against the real fixture library `libfixture_noop.so`
//! loaded through the server's own host (`thingport_server::extensions::host`).
//!
//! Measured, each after a warm-up, call by call:
//!
//! * `Instance::call_blocking` with `Echo {"text": "hello"}` on the calling thread: the FFI call,
//!   the SDK's dispatch and JSON encoding and decoding on both sides;
//! * the same with `ReadThing`, whose service makes one host call back into the host;
//! * `Instance::call` (async: a hop to a blocking thread under a deadline timer) on a multi-thread
//!   tokio runtime, the path the server uses, sequentially and with several concurrent callers;
//! * baselines: the same JSON encoding and decoding without any FFI call, and the blocking-thread
//!   hop around a no-op without any extension call;
//! * alternatives to the hop that the server does not use (no deadline timer, `block_in_place`,
//!   a dedicated spinning call thread), to size what a change of the host would gain.
//!
//! Every repetition runs on a fresh multi-thread runtime (as many workers as CPUs, like the
//! server's), because the concurrent runs grow tokio's blocking pool and that changes the cost of
//! later calls; the sequential call is measured again after them.
//!
//! The host calls of `ReadThing` are answered in-process by [`BenchHost`] (a small fixed JSON
//! object), so the figures are the boundary's cost, not the platform's.

use crate::Outcome;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::future::Future;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thingport_sdk::protocol::{Caller, ErrorBody, ErrorKind, HostRequest, InvokeResult, Request};
use thingport_server::extensions::host::{CallError, HostServices, Instance, Library};

/// Target: median latency of a service call into an extension, in µs (issue 3).
pub const P50_TARGET_US: f64 = 20.0;

/// The Thing whose properties the benchmark host serves to `ReadThing`.
const THING: &str = "BenchThing";
/// Calls that may fail in one run before it gives up (the run is failed anyway).
const MAX_ERRORS: u64 = 100;
/// Error messages kept verbatim for the report.
const MAX_ERROR_SAMPLES: usize = 5;

#[derive(Debug, Args)]
pub struct ExtensionArgs {
    /// The fixture extension library [default: libfixture_noop.so next to this executable, i.e.
    /// target/release/libfixture_noop.so for target/release/thingport-bench].
    #[arg(long, value_name = "PATH")]
    pub library: Option<PathBuf>,

    /// Small counts: done in a few seconds (a smoke run, not for the record).
    #[arg(long)]
    pub quick: bool,

    /// Also write every figure to this file as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Repetitions of every measurement; the summary shows the median over them
    /// [default: 3, --quick: 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub repeat: Option<u32>,

    /// Measured calls of each run (all callers together) [default: 80000, --quick: 10000].
    /// Each run also stops at its time cap (2 s, --quick: 0.6 s; warm-up: a tenth of the calls, within 0.4 s, --quick: 0.2 s).
    #[arg(long, value_parser = clap::value_parser!(u64).range(100..=10_000_000))]
    pub calls: Option<u64>,

    /// Concurrent callers of the concurrent `Instance::call` runs (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "LIST", default_values_t = vec![4u64, 8],
          value_parser = clap::value_parser!(u64).range(2..=64))]
    pub callers: Vec<u64>,

    /// Worker threads of the tokio runtime [default: the number of CPUs, like the server's].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub worker_threads: Option<u64>,

    /// Deadline of each `Instance::call`, in milliseconds (the host's default is 10 s).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub deadline_ms: u64,

    /// Run only these measurements (comma-separated), e.g. to profile one of them.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LIST")]
    pub only: Vec<Kind>,
}

/// Counts and limits of one mode.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub mode: &'static str,
    pub repeat: u32,
    pub calls: u64,
    pub warmup_calls: u64,
    /// Hard time cap of one measured run, and of its warm-up.
    pub run_cap_seconds: f64,
    pub warmup_cap_seconds: f64,
    pub callers: Vec<u64>,
    pub worker_threads: usize,
    pub deadline_ms: u64,
}

impl Settings {
    fn from_args(a: &ExtensionArgs) -> Self {
        let q = a.quick;
        let calls = a.calls.unwrap_or(if q { 10_000 } else { 80_000 });
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Settings {
            mode: if q { "quick" } else { "full" },
            repeat: a.repeat.unwrap_or(if q { 1 } else { 3 }),
            calls,
            warmup_calls: (calls / 10).max(100),
            run_cap_seconds: if q { 0.6 } else { 2.0 },
            warmup_cap_seconds: if q { 0.2 } else { 0.4 },
            callers: a.callers.clone(),
            worker_threads: a.worker_threads.map(|n| n as usize).unwrap_or(cpus),
            deadline_ms: a.deadline_ms,
        }
    }

    fn run_cap(&self) -> Duration {
        Duration::from_secs_f64(self.run_cap_seconds)
    }

    fn warmup_cap(&self) -> Duration {
        Duration::from_secs_f64(self.warmup_cap_seconds)
    }
}

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Baseline: the JSON encoding and decoding of an `Echo` call, no FFI call.
    JsonEcho,
    /// Baseline: the JSON encoding and decoding of a `ReadThing` call and its host call, no FFI.
    JsonReadThing,
    /// `Instance::call_blocking` with `Echo` on the calling thread.
    BlockingEcho,
    /// `Instance::call_blocking` with `ReadThing` (one host call back into the host).
    BlockingReadThing,
    /// Baseline: `spawn_blocking` of a no-op under `tokio::time::timeout`, no extension call.
    Hop,
    /// `Instance::call` with `Echo`, one caller at a time.
    AsyncEcho,
    /// `Instance::call` with `ReadThing`, one caller at a time.
    AsyncReadThing,
    /// `Instance::call` with `Echo` from several concurrent callers (`--callers`).
    Concurrent,
    /// `Instance::call` with `Echo`, one caller at a time, after the concurrent runs grew the
    /// runtime's pool of blocking threads.
    AsyncEchoAfterConcurrent,
    /// Not the server's path: `call_blocking(Echo)` in `spawn_blocking` without the deadline
    /// timer, to isolate the timer's cost.
    AltNoTimer,
    /// Not the server's path: `call_blocking(Echo)` under `tokio::task::block_in_place` on the
    /// async worker itself (no hop; no deadline answer either).
    AltBlockInPlace,
    /// Not the server's path: `call_blocking(Echo)` on a dedicated thread that spins for a
    /// short while for its next job before it sleeps, answered through a oneshot channel under
    /// the same deadline timer (a prototype of a lower-latency hop).
    AltSpinThread,
}

/// In the order they run within a repetition. Each repetition starts a fresh runtime, so the
/// sequential async runs see a blocking pool warmed by themselves alone; the concurrent runs grow
/// it, and `AsyncEchoAfterConcurrent` measures the sequential call again with that bigger pool.
const ALL_KINDS: [Kind; 12] = [
    Kind::JsonEcho,
    Kind::JsonReadThing,
    Kind::BlockingEcho,
    Kind::BlockingReadThing,
    Kind::Hop,
    Kind::AsyncEcho,
    Kind::AsyncReadThing,
    Kind::AltNoTimer,
    Kind::AltBlockInPlace,
    Kind::AltSpinThread,
    Kind::Concurrent,
    Kind::AsyncEchoAfterConcurrent,
];

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::JsonEcho => "json_echo",
            Kind::JsonReadThing => "json_read_thing",
            Kind::BlockingEcho => "blocking_echo",
            Kind::BlockingReadThing => "blocking_read_thing",
            Kind::Hop => "async_hop",
            Kind::AsyncEcho => "async_echo",
            Kind::AsyncReadThing => "async_read_thing",
            Kind::Concurrent => "async_echo_concurrent",
            Kind::AsyncEchoAfterConcurrent => "async_echo_after_concurrent",
            Kind::AltNoTimer => "alt_spawn_blocking_no_timer",
            Kind::AltBlockInPlace => "alt_block_in_place",
            Kind::AltSpinThread => "alt_spinning_thread",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::JsonEcho => "baseline: JSON only, Echo (no FFI call)",
            Kind::JsonReadThing => "baseline: JSON only, ReadThing + its host call (no FFI call)",
            Kind::BlockingEcho => "(1) call_blocking Echo: host → ext → host",
            Kind::BlockingReadThing => {
                "(2) call_blocking ReadThing: host → ext → host → ext → host"
            }
            Kind::Hop => "baseline: spawn_blocking + timeout around a no-op (no call)",
            Kind::AsyncEcho => "(3) Instance::call Echo (async, the server's path)",
            Kind::AsyncReadThing => "Instance::call ReadThing (async)",
            Kind::Concurrent => "(3) Instance::call Echo, concurrent callers",
            Kind::AsyncEchoAfterConcurrent => {
                "(3) Instance::call Echo, after the concurrent runs (bigger blocking pool)"
            }
            Kind::AltNoTimer => "alternative: spawn_blocking(call_blocking Echo), no timer",
            Kind::AltBlockInPlace => {
                "alternative: block_in_place(call_blocking Echo) on the worker"
            }
            Kind::AltSpinThread => {
                "alternative: call_blocking Echo on a dedicated spinning thread + timeout"
            }
        }
    }
}

/// The host side of the benchmark: answers `GetProperties` of [`THING`] with a small JSON object.
pub struct BenchHost {
    properties: Value,
    calls: AtomicU64,
}

impl HostServices for BenchHost {
    fn host_call(
        &self,
        _extension: &str,
        _load: u64,
        request: HostRequest,
    ) -> Result<Value, ErrorBody> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match request {
            HostRequest::GetProperties { thing } if thing == THING => Ok(self.properties.clone()),
            HostRequest::GetProperties { thing } => Err(ErrorBody {
                error: format!("Thing {thing} not found"),
                kind: ErrorKind::NotFound,
            }),
            other => Err(ErrorBody {
                error: format!("the benchmark host does not serve {other:?}"),
                kind: ErrorKind::BadRequest,
            }),
        }
    }
}

/// Figures of one measured run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Run {
    pub scenario: String,
    pub label: String,
    pub callers: usize,
    pub repeat: u32,
    /// Calls answered with the expected result.
    pub calls: u64,
    /// Calls that failed or answered something else, warm-up included.
    pub errors: u64,
    pub elapsed_s: f64,
    /// `calls / elapsed_s` (all callers together).
    pub per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    pub max_us: f64,
    /// CPU time of all threads of this process (callers, workers, blocking threads) per call.
    pub cpu_us_per_call: f64,
    /// Threads of this process at the end of the run: main, tokio workers, blocking pool.
    pub threads: usize,
    /// The run hit its time cap before its call count.
    pub capped: bool,
    pub error_samples: Vec<String>,
}

/// Medians over the repetitions of one (scenario, callers) pair.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub label: String,
    pub callers: usize,
    pub runs: usize,
    pub calls: u64,
    pub errors: u64,
    pub per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    pub cpu_us_per_call: f64,
    /// The largest thread count at the end of one of the runs.
    pub threads: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetCheck {
    pub figure: String,
    pub target: String,
    pub measured_us: f64,
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct Component {
    pub what: String,
    pub p50_us: f64,
}

/// Everything `--json` writes.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub unix_time: u64,
    pub total_seconds: f64,
    pub machine: crate::report::Machine,
    /// `/proc/loadavg` before and after the run (other work on the machine skews these figures).
    pub loadavg_before: String,
    pub loadavg_after: String,
    pub library: String,
    pub request_bytes: Payloads,
    pub settings: Settings,
    pub summary: Vec<Summary>,
    pub targets: Vec<TargetCheck>,
    pub breakdown: Vec<Component>,
    pub calls_failed: u64,
    pub runs: Vec<Run>,
}

/// Sizes of the JSON messages that cross the boundary, in bytes.
#[derive(Clone, Debug, Serialize)]
pub struct Payloads {
    pub echo_request: usize,
    pub echo_response: usize,
    pub read_thing_request: usize,
    pub read_thing_response: usize,
    pub host_request: usize,
    pub host_response: usize,
}

/// Threads of this process (`/proc/self/task`).
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The first three fields of `/proc/loadavg` (1, 5 and 15 minutes).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn invoke(service: &str, params: Value) -> Request {
    Request::Invoke {
        entity_kind: "Things".into(),
        entity: THING.into(),
        service: service.into(),
        params,
        caller: Caller {
            name: "bench-user".into(),
            admin: false,
            source_ip: "127.0.0.1".into(),
        },
    }
}

/// Runs the whole extension benchmark.
pub fn run(args: ExtensionArgs) -> Result<Outcome> {
    let settings = Settings::from_args(&args);
    let started = Instant::now();
    let loadavg_before = loadavg();
    if cfg!(debug_assertions) {
        eprintln!("warning: this thingport-bench is a debug build; its own JSON code is unoptimised. Use --release.");
    }
    let path = crate::server::locate_artefact(
        args.library.as_deref(),
        "--library",
        &crate::server::library_file("fixture_noop"),
        "cargo build --release --workspace",
    )?;
    let host = Arc::new(BenchHost {
        properties: json!({"p": 1, "name": THING, "online": true}),
        calls: AtomicU64::new(0),
    });
    let lib = Library::open(&path, "fixture-noop", host.clone())
        .with_context(|| format!("cannot load {}", path.display()))?;
    if lib.manifest().name != "fixture-noop" {
        bail!(
            "{} is the extension {}, not fixture-noop",
            path.display(),
            lib.manifest().name
        );
    }
    let inst = Arc::new(
        lib.create(&json!({}))
            .map_err(|e| anyhow::anyhow!("creating an instance failed: {e}"))?,
    );
    let echo = invoke("Echo", json!({"text": "hello"}));
    let echo_expected = json!("hello");
    let read = invoke("ReadThing", json!({"thing": THING}));
    let read_expected = host.properties.clone();
    let payloads = check_fixture(&inst, &host, &echo, &read)?;
    eprintln!(
        "extension {} {} from {}; Echo request {} bytes, response {} bytes",
        lib.manifest().name,
        lib.manifest().version,
        path.display(),
        payloads.echo_request,
        payloads.echo_response
    );

    let deadline = Duration::from_millis(settings.deadline_ms);
    let kinds: Vec<Kind> = ALL_KINDS
        .into_iter()
        .filter(|k| args.only.is_empty() || args.only.contains(k))
        .collect();

    let mut runs: Vec<Run> = Vec::new();
    // Repetitions interleave (every measurement once, then again), so that a noisy moment of the
    // machine does not fall on all repetitions of one measurement.
    for repeat in 1..=settings.repeat {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(settings.worker_threads)
            .enable_all()
            .build()
            .context("cannot start the tokio runtime")?;
        for &kind in &kinds {
            let measured: Vec<(usize, Recorded)> = match kind {
                Kind::JsonEcho => {
                    vec![(
                        1,
                        run_sync(&settings, &echo_expected, || {
                            json_round_trip(&echo, host.as_ref())
                        }),
                    )]
                }
                Kind::JsonReadThing => vec![(
                    1,
                    run_sync(&settings, &read_expected, || {
                        json_round_trip(&read, host.as_ref())
                    }),
                )],
                Kind::BlockingEcho => vec![(
                    1,
                    run_sync(&settings, &echo_expected, || {
                        inst.call_blocking(&echo).map_err(|e| e.to_string())
                    }),
                )],
                Kind::BlockingReadThing => vec![(
                    1,
                    run_sync(&settings, &read_expected, || {
                        inst.call_blocking(&read).map_err(|e| e.to_string())
                    }),
                )],
                Kind::Hop => vec![(
                    1,
                    run_async(&rt, &settings, 1, false, Value::Null, move || async move {
                        match tokio::time::timeout(
                            deadline,
                            tokio::task::spawn_blocking(|| black_box(Value::Null)),
                        )
                        .await
                        {
                            Ok(Ok(v)) => Ok(v),
                            Ok(Err(e)) => Err(format!("blocking task failed: {e}")),
                            Err(_) => Err("deadline".to_string()),
                        }
                    })?,
                )],
                Kind::AsyncEcho | Kind::AsyncEchoAfterConcurrent => vec![(
                    1,
                    run_async(&rt, &settings, 1, false, echo_expected.clone(), {
                        let (inst, echo) = (inst.clone(), echo.clone());
                        move || call(&inst, &echo, deadline)
                    })?,
                )],
                Kind::AsyncReadThing => vec![(
                    1,
                    run_async(&rt, &settings, 1, false, read_expected.clone(), {
                        let (inst, read) = (inst.clone(), read.clone());
                        move || call(&inst, &read, deadline)
                    })?,
                )],
                Kind::AltNoTimer => vec![(
                    1,
                    run_async(&rt, &settings, 1, false, echo_expected.clone(), {
                        let (inst, echo) = (inst.clone(), echo.clone());
                        move || {
                            let (inst, echo) = (inst.clone(), echo.clone());
                            async move {
                                match tokio::task::spawn_blocking(move || inst.call_blocking(&echo))
                                    .await
                                {
                                    Ok(r) => r.map_err(|e| e.to_string()),
                                    Err(e) => Err(format!("blocking task failed: {e}")),
                                }
                            }
                        }
                    })?,
                )],
                Kind::AltBlockInPlace => vec![(
                    1,
                    run_async(&rt, &settings, 1, true, echo_expected.clone(), {
                        let (inst, echo) = (inst.clone(), echo.clone());
                        move || {
                            let (inst, echo) = (inst.clone(), echo.clone());
                            async move {
                                tokio::task::block_in_place(|| inst.call_blocking(&echo))
                                    .map_err(|e| e.to_string())
                            }
                        }
                    })?,
                )],
                Kind::AltSpinThread => {
                    let pool = Arc::new(SpinThread::start(SPIN));
                    vec![(
                        1,
                        run_async(&rt, &settings, 1, false, echo_expected.clone(), {
                            let (inst, echo) = (inst.clone(), echo.clone());
                            move || {
                                let (inst, echo) = (inst.clone(), echo.clone());
                                let (tx, rx) = tokio::sync::oneshot::channel();
                                let pool = pool.clone();
                                async move {
                                    pool.run(Box::new(move || {
                                        let _ = tx.send(inst.call_blocking(&echo));
                                    }))?;
                                    match tokio::time::timeout(deadline, rx).await {
                                        Ok(Ok(r)) => r.map_err(|e| e.to_string()),
                                        Ok(Err(_)) => {
                                            Err("the call thread dropped the call".into())
                                        }
                                        Err(_) => Err("deadline".into()),
                                    }
                                }
                            }
                        })?,
                    )]
                }
                Kind::Concurrent => {
                    let mut out = Vec::new();
                    for &n in &settings.callers {
                        let n = n as usize;
                        let r = run_async(&rt, &settings, n, false, echo_expected.clone(), {
                            let (inst, echo) = (inst.clone(), echo.clone());
                            move || call(&inst, &echo, deadline)
                        })?;
                        out.push((n, r));
                    }
                    out
                }
            };
            for (callers, rec) in measured {
                let run = rec.into_run(kind, callers, repeat);
                progress(&run);
                runs.push(run);
            }
        }
        // Ends the runtime's threads: the next repetition starts from a fresh pool.
        rt.shutdown_timeout(Duration::from_secs(5));
    }

    let summary = summarise(&runs);
    let report = Report {
        tool: "thingport-bench extension",
        version: env!("CARGO_PKG_VERSION"),
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        total_seconds: started.elapsed().as_secs_f64(),
        machine: crate::report::Machine::probe(),
        loadavg_before,
        loadavg_after: loadavg(),
        library: path.display().to_string(),
        request_bytes: payloads,
        settings,
        targets: targets(&summary),
        breakdown: breakdown(&summary),
        calls_failed: runs.iter().map(|r| r.errors).sum(),
        summary,
        runs,
    };
    print(&report);
    if let Some(file) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(file, text).with_context(|| format!("cannot write {}", file.display()))?;
        eprintln!("wrote {}", file.display());
    }
    Ok(Outcome {
        requests_failed: report.calls_failed,
    })
}

/// One `Instance::call`; the request is cloned here, before the caller starts its clock.
fn call(
    inst: &Arc<Instance>,
    request: &Request,
    deadline: Duration,
) -> impl Future<Output = Result<Value, String>> + Send + 'static {
    let (inst, request) = (inst.clone(), request.clone());
    async move {
        inst.call(request, deadline)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Checks that the library answers as the fixture should before anything is measured, and
/// returns the sizes of the messages that cross the boundary.
fn check_fixture(
    inst: &Instance,
    host: &BenchHost,
    echo: &Request,
    read: &Request,
) -> Result<Payloads> {
    let fail = |what: &str, e: CallError| anyhow::anyhow!("{what} failed: {e}");
    let r = inst
        .call_blocking(&invoke("Add", json!({"a": 1, "b": 2})))
        .map_err(|e| fail("Add", e))?;
    if r.as_f64() != Some(3.0) {
        bail!("Add(1, 2) answered {r}, not 3");
    }
    let r = inst.call_blocking(echo).map_err(|e| fail("Echo", e))?;
    if r != json!("hello") {
        bail!("Echo answered {r}, not \"hello\"");
    }
    let before = host.calls.load(Ordering::Relaxed);
    let r = inst.call_blocking(read).map_err(|e| fail("ReadThing", e))?;
    if r != host.properties {
        bail!("ReadThing answered {r}, not {}", host.properties);
    }
    let made = host.calls.load(Ordering::Relaxed) - before;
    if made != 1 {
        bail!("ReadThing made {made} host calls, not 1");
    }
    match inst.call_blocking(&invoke("ReadThing", json!({"thing": "NoSuchThing"}))) {
        Err(CallError::Failed { body, .. }) if body.kind == ErrorKind::NotFound => {}
        other => bail!("ReadThing of an unknown Thing answered {other:?}, not NotFound"),
    }
    Ok(Payloads {
        echo_request: len(echo),
        echo_response: len(&InvokeResult {
            result: json!("hello"),
        }),
        read_thing_request: len(read),
        read_thing_response: len(&InvokeResult {
            result: host.properties.clone(),
        }),
        host_request: len(&HostRequest::GetProperties {
            thing: THING.into(),
        }),
        host_response: len(&host.properties),
    })
}

/// Length of a message's JSON encoding.
fn len(message: &impl Serialize) -> usize {
    serde_json::to_vec(message).map(|v| v.len()).unwrap_or(0)
}

#[derive(Deserialize)]
struct EchoInput {
    text: String,
}

#[derive(Deserialize)]
struct ReadThingInput {
    thing: String,
}

/// The JSON work of one call without the FFI: exactly the encodings, decodings and buffer copies
/// of `Instance::call_blocking`, the SDK's `call` and, for `ReadThing`, of the SDK's `host_call`
/// and the host's `host_call`, in the same order, with the same types.
fn json_round_trip(request: &Request, host: &dyn HostServices) -> Result<Value, String> {
    let e = |e: serde_json::Error| e.to_string();
    // Host (`call_blocking`): encode the request.
    let bytes = serde_json::to_vec(request).map_err(e)?;
    // Extension (SDK `call`): decode the request and the parameters, run the service.
    let decoded: Request = serde_json::from_slice(black_box(&bytes)).map_err(e)?;
    let Request::Invoke {
        service, params, ..
    } = decoded
    else {
        return Err("not an invoke".into());
    };
    let result = match service.as_str() {
        "Echo" => {
            let EchoInput { text } = EchoInput::deserialize(&params).map_err(e)?;
            serde_json::to_value(text).map_err(e)?
        }
        "ReadThing" => {
            let ReadThingInput { thing } = ReadThingInput::deserialize(&params).map_err(e)?;
            // Extension (SDK `host_call`): encode the host request.
            let hreq = serde_json::to_vec(&HostRequest::GetProperties { thing }).map_err(e)?;
            // Host (`host_call`): decode it, serve it, encode the answer.
            let hreq: HostRequest = serde_json::from_slice(black_box(&hreq)).map_err(e)?;
            let answer = host
                .host_call("fixture-noop", 0, hreq)
                .map_err(|b| b.error)?;
            let answer = serde_json::to_vec(&answer).map_err(e)?;
            // Extension: copy the host's buffer, decode it, type it, encode the result value.
            let answer = black_box(answer.as_slice()).to_vec();
            let v: Value = serde_json::from_slice(&answer).map_err(e)?;
            let map: Map<String, Value> = serde_json::from_value(v).map_err(e)?;
            serde_json::to_value(map).map_err(e)?
        }
        other => return Err(format!("service {other} not found")),
    };
    // Extension: encode the response.
    let out = serde_json::to_vec(&InvokeResult { result }).map_err(e)?;
    // Host (`take_buf`, `call_blocking`): copy the extension's buffer, decode the response.
    let out = black_box(out.as_slice()).to_vec();
    serde_json::from_slice::<InvokeResult>(&out)
        .map(|r| r.result)
        .map_err(e)
}

/// Latencies and failures of one run (all its callers).
#[derive(Default)]
struct Recorded {
    latencies_ns: Vec<u64>,
    errors: u64,
    samples: Vec<String>,
    elapsed: Duration,
    /// CPU time of every thread of this process during the run.
    cpu_ns: u64,
    /// Threads of this process at the end of the run.
    threads: usize,
    capped: bool,
}

impl Recorded {
    fn with_capacity(n: u64) -> Self {
        Recorded {
            latencies_ns: Vec::with_capacity(n as usize),
            ..Default::default()
        }
    }

    /// Records one call; `Ok` only if it answered `expected`.
    fn record(&mut self, ns: u64, outcome: Result<Value, String>, expected: &Value) {
        match outcome {
            Ok(v) if v == *expected => self.latencies_ns.push(ns),
            Ok(v) => self.fail(format!("answered {v}, expected {expected}")),
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, message: String) {
        self.errors += 1;
        if self.samples.len() < MAX_ERROR_SAMPLES {
            self.samples.push(message);
        }
    }

    fn merge(&mut self, other: Recorded) {
        self.latencies_ns.extend(other.latencies_ns);
        self.errors += other.errors;
        self.capped |= other.capped;
        for s in other.samples {
            if self.samples.len() < MAX_ERROR_SAMPLES {
                self.samples.push(s);
            }
        }
    }

    fn into_run(mut self, kind: Kind, callers: usize, repeat: u32) -> Run {
        let mut run = Run {
            scenario: kind.key().into(),
            label: kind.label().into(),
            callers,
            repeat,
            calls: self.latencies_ns.len() as u64,
            errors: self.errors,
            elapsed_s: self.elapsed.as_secs_f64(),
            capped: self.capped,
            threads: self.threads,
            error_samples: std::mem::take(&mut self.samples),
            ..Run::default()
        };
        run.per_second = run.calls as f64 / run.elapsed_s.max(1e-9);
        run.cpu_us_per_call = self.cpu_ns as f64 / 1000.0 / (run.calls.max(1) as f64);
        let lat = &mut self.latencies_ns;
        if !lat.is_empty() {
            lat.sort_unstable();
            let us = |ns: u64| ns as f64 / 1000.0;
            run.p50_us = us(percentile(lat, 0.50));
            run.p99_us = us(percentile(lat, 0.99));
            run.max_us = us(*lat.last().unwrap_or(&0));
            run.mean_us = lat.iter().sum::<u64>() as f64 / lat.len() as f64 / 1000.0;
        }
        run
    }
}

/// How long [`SpinThread`] spins for its next job before it sleeps.
const SPIN: Duration = Duration::from_micros(50);

type Job = Box<dyn FnOnce() + Send>;

/// One dedicated call thread that, after each job, polls its queue for `spin` before blocking on
/// it, so that a job sent soon after the last one needs no wake-up (a futex wake and a context
/// switch). The thread ends when the `SpinThread` is dropped.
struct SpinThread {
    tx: std::sync::mpsc::Sender<Job>,
}

impl SpinThread {
    fn start(spin: Duration) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::spawn(move || loop {
            let until = Instant::now() + spin;
            let job = loop {
                match rx.try_recv() {
                    Ok(job) => break Some(job),
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => break None,
                    Err(std::sync::mpsc::TryRecvError::Empty) if Instant::now() < until => {
                        std::hint::spin_loop()
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => break rx.recv().ok(),
                }
            };
            match job {
                Some(job) => job(),
                None => return,
            }
        });
        SpinThread { tx }
    }

    fn run(&self, job: Job) -> Result<(), String> {
        self.tx
            .send(job)
            .map_err(|_| "the call thread is gone".to_string())
    }
}

/// CPU time of this process's threads (`/proc/self/task/*/schedstat`, nanoseconds), per thread so
/// that a thread exiting during a run (an idle blocking thread) does not take its earlier time
/// out of the difference.
struct CpuClock {
    start: std::collections::HashMap<String, u64>,
}

impl CpuClock {
    fn read() -> std::collections::HashMap<String, u64> {
        let mut out = std::collections::HashMap::new();
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return out;
        };
        for entry in dir.flatten() {
            let tid = entry.file_name().to_string_lossy().into_owned();
            let ns = std::fs::read_to_string(entry.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()));
            if let Some(ns) = ns {
                out.insert(tid, ns);
            }
        }
        out
    }

    fn start() -> Self {
        CpuClock {
            start: Self::read(),
        }
    }

    fn elapsed_ns(&self) -> u64 {
        Self::read()
            .into_iter()
            .map(|(tid, ns)| ns.saturating_sub(self.start.get(&tid).copied().unwrap_or(0)))
            .sum()
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Warm-up, then `settings.calls` timed calls of `call` on this thread (within the time cap).
fn run_sync(
    settings: &Settings,
    expected: &Value,
    mut call: impl FnMut() -> Result<Value, String>,
) -> Recorded {
    let mut warm = Recorded::default();
    let warm_until = Instant::now() + settings.warmup_cap();
    for i in 0..settings.warmup_calls {
        let r = call();
        warm.record(0, r, expected);
        if warm.errors >= MAX_ERRORS || (i % 256 == 255 && Instant::now() > warm_until) {
            break;
        }
    }
    let mut rec = Recorded::with_capacity(settings.calls);
    let cpu = CpuClock::start();
    let started = Instant::now();
    let cap = started + settings.run_cap();
    for i in 0..settings.calls {
        let t = Instant::now();
        let r = call();
        let ns = t.elapsed().as_nanos() as u64;
        rec.record(ns, r, expected);
        if rec.errors >= MAX_ERRORS {
            break;
        }
        if i % 256 == 255 && Instant::now() > cap {
            rec.capped = true;
            break;
        }
    }
    rec.elapsed = started.elapsed();
    rec.cpu_ns = cpu.elapsed_ns();
    rec.threads = threads();
    rec.errors += warm.errors;
    let mut samples = warm.samples;
    samples.append(&mut rec.samples);
    samples.truncate(MAX_ERROR_SAMPLES);
    rec.samples = samples;
    rec
}

/// Warm-up, then `settings.calls` timed calls spread over `callers` tasks spawned on the
/// runtime's workers (where a server's request handlers run), each one call at a time.
fn run_async<F, Fut>(
    rt: &tokio::runtime::Runtime,
    settings: &Settings,
    callers: usize,
    yield_first: bool,
    expected: Value,
    make: F,
) -> Result<Recorded>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Value, String>> + Send + 'static,
{
    let expected = Arc::new(expected);
    let phase = |calls: u64, cap: Duration| -> Result<Recorded> {
        let per_caller = calls.div_ceil(callers as u64);
        let started = Instant::now();
        let until = started + cap;
        let handles: Vec<_> = (0..callers)
            .map(|_| {
                let (make, expected) = (make.clone(), expected.clone());
                rt.spawn(async move {
                    let mut rec = Recorded::with_capacity(per_caller);
                    for i in 0..per_caller {
                        if yield_first {
                            // Be polled afresh by a worker holding its core, as a request
                            // handler is after awaiting I/O (see `Kind::AltBlockInPlace`).
                            tokio::task::yield_now().await;
                        }
                        let fut = make();
                        let t = Instant::now();
                        let r = fut.await;
                        let ns = t.elapsed().as_nanos() as u64;
                        rec.record(ns, r, &expected);
                        if rec.errors >= MAX_ERRORS {
                            break;
                        }
                        if i % 64 == 63 && Instant::now() > until {
                            rec.capped = true;
                            break;
                        }
                    }
                    rec
                })
            })
            .collect();
        let mut all = Recorded::with_capacity(per_caller * callers as u64);
        for h in handles {
            let r = rt
                .block_on(h)
                .map_err(|e| anyhow::anyhow!("a caller task failed: {e}"))?;
            all.merge(r);
        }
        all.elapsed = started.elapsed();
        Ok(all)
    };
    let warm = phase(settings.warmup_calls, settings.warmup_cap())?;
    let cpu = CpuClock::start();
    let mut rec = phase(settings.calls, settings.run_cap())?;
    rec.cpu_ns = cpu.elapsed_ns();
    rec.threads = threads();
    rec.errors += warm.errors;
    let mut samples = warm.samples;
    samples.append(&mut rec.samples);
    samples.truncate(MAX_ERROR_SAMPLES);
    rec.samples = samples;
    Ok(rec)
}

fn median(mut v: Vec<f64>) -> f64 {
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

fn summarise(runs: &[Run]) -> Vec<Summary> {
    let mut keys: Vec<(String, usize)> = Vec::new();
    for r in runs {
        let k = (r.scenario.clone(), r.callers);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|(scenario, callers)| {
            let group: Vec<&Run> = runs
                .iter()
                .filter(|r| r.scenario == scenario && r.callers == callers)
                .collect();
            let med = |f: &dyn Fn(&Run) -> f64| median(group.iter().map(|r| f(r)).collect());
            Summary {
                label: group[0].label.clone(),
                callers,
                runs: group.len(),
                calls: group.iter().map(|r| r.calls).sum(),
                errors: group.iter().map(|r| r.errors).sum(),
                per_second: med(&|r| r.per_second),
                p50_us: med(&|r| r.p50_us),
                p99_us: med(&|r| r.p99_us),
                mean_us: med(&|r| r.mean_us),
                cpu_us_per_call: med(&|r| r.cpu_us_per_call),
                threads: group.iter().map(|r| r.threads).max().unwrap_or(0),
                scenario,
            }
        })
        .collect()
}

fn find(summary: &[Summary], kind: Kind, callers: usize) -> Option<&Summary> {
    summary
        .iter()
        .find(|s| s.scenario == kind.key() && s.callers == callers)
}

fn targets(summary: &[Summary]) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    for kind in [
        Kind::AsyncEcho,
        Kind::AsyncEchoAfterConcurrent,
        Kind::BlockingEcho,
    ] {
        if let Some(s) = find(summary, kind, 1) {
            out.push(TargetCheck {
                figure: format!("{}, median latency", s.label),
                target: format!("< {P50_TARGET_US} µs"),
                measured_us: s.p50_us,
                verdict: if s.p50_us < P50_TARGET_US {
                    "PASS"
                } else {
                    "MISS"
                },
            });
        }
    }
    out
}

/// Where the time of a call goes: differences of the medians' p50.
fn breakdown(summary: &[Summary]) -> Vec<Component> {
    let p50 = |k: Kind| find(summary, k, 1).map(|s| s.p50_us);
    let mut out = Vec::new();
    let mut add = |what: &str, v: Option<f64>| {
        if let Some(p50_us) = v {
            out.push(Component {
                what: what.into(),
                p50_us,
            });
        }
    };
    add(
        "JSON encoding and decoding of an Echo call (baseline)",
        p50(Kind::JsonEcho),
    );
    add(
        "FFI boundary of an Echo call: (1) − JSON baseline (FFI calls, buffer hand-over, the SDK's instance lookup, panic guards)",
        p50(Kind::BlockingEcho).zip(p50(Kind::JsonEcho)).map(|(a, b)| a - b),
    );
    add(
        "one host call back into the host: (2) − (1) (its JSON included)",
        p50(Kind::BlockingReadThing)
            .zip(p50(Kind::BlockingEcho))
            .map(|(a, b)| a - b),
    );
    add(
        "the async path's overhead: (3) − (1) (hop to an extension-call thread and back, deadline timer)",
        p50(Kind::AsyncEcho)
            .zip(p50(Kind::BlockingEcho))
            .map(|(a, b)| a - b),
    );
    add(
        "the bigger blocking pool after concurrent callers: (3) after − (3)",
        p50(Kind::AsyncEchoAfterConcurrent)
            .zip(p50(Kind::AsyncEcho))
            .map(|(a, b)| a - b),
    );
    add(
        "the hop alone: spawn_blocking + timeout around a no-op",
        p50(Kind::Hop),
    );
    add(
        "the server's path against the old one: (3) − spawn_blocking(call_blocking Echo) without timer",
        p50(Kind::AsyncEcho)
            .zip(p50(Kind::AltNoTimer))
            .map(|(a, b)| a - b),
    );
    add(
        "block_in_place instead of the hop: alternative − (1)",
        p50(Kind::AltBlockInPlace)
            .zip(p50(Kind::BlockingEcho))
            .map(|(a, b)| a - b),
    );
    add(
        "a dedicated spinning call thread instead of spawn_blocking: alternative − (1)",
        p50(Kind::AltSpinThread)
            .zip(p50(Kind::BlockingEcho))
            .map(|(a, b)| a - b),
    );
    out
}

/// One line per finished run, on stderr.
fn progress(r: &Run) {
    eprintln!(
        "  {:<27} callers {:>2}  run {}  {:>7.0} calls/s  p50 {:>7.2} µs  p99 {:>7.2} µs  mean {:>7.2} µs  cpu {:>6.2} µs/call  threads {:>2}  errors {}{}",
        r.scenario,
        r.callers,
        r.repeat,
        r.per_second,
        r.p50_us,
        r.p99_us,
        r.mean_us,
        r.cpu_us_per_call,
        r.threads,
        r.errors,
        if r.capped { " (hit the time cap)" } else { "" },
    );
    for e in &r.error_samples {
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

/// The summary, verdicts and breakdown (Markdown, for `docs/benchmarks.md`), on stdout.
fn print(r: &Report) {
    let st = &r.settings;
    println!();
    println!(
        "thingport-bench extension ({} mode, {} run(s) each, medians shown) on {} CPU(s), {}; tokio: {} worker thread(s)",
        st.mode, st.repeat, r.machine.cpus, r.machine.cpu_model, st.worker_threads
    );
    let p = &r.request_bytes;
    println!(
        "JSON bytes: Echo request {} / response {}; ReadThing request {} / response {}; host request {} / response {}",
        p.echo_request,
        p.echo_response,
        p.read_thing_request,
        p.read_thing_response,
        p.host_request,
        p.host_response
    );
    println!();
    println!("| measurement | callers | calls | p50 µs | p99 µs | mean µs | calls/s | CPU µs/call | threads | errors |");
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for s in &r.summary {
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {:.2} | {} | {} |",
            s.label,
            s.callers,
            thousands(s.calls as f64),
            s.p50_us,
            s.p99_us,
            s.mean_us,
            thousands(s.per_second),
            s.cpu_us_per_call,
            s.threads,
            s.errors,
        );
    }
    println!();
    println!("| target | measured | verdict |");
    println!("|---|--:|---|");
    for t in &r.targets {
        println!(
            "| {}: {} | {:.2} µs | {} |",
            t.figure, t.target, t.measured_us, t.verdict
        );
    }
    if !r.breakdown.is_empty() {
        println!();
        println!("| where the time of one call goes (medians of p50) | µs |");
        println!("|---|--:|");
        for c in &r.breakdown {
            println!("| {} | {:.2} |", c.what, c.p50_us);
        }
    }
    println!();
    println!(
        "calls failed: {}; total {:.0} s; load average before {}, after {}",
        r.calls_failed, r.total_seconds, r.loadavg_before, r.loadavg_after
    );
}
