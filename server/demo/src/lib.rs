//! `thingport-demo` (run by `thingport up` and `thingport-server --demo`): the one-command demo
//! (SPEC §9). In this one process it starts the platform
//! (`thingport_server::run`, embedded SQLite in `--data-dir`), imports the bundled extensions
//! ([`bundle`]), creates the demo's users, keys and permissions ([`admin`]), runs a Global
//! Access Server (`thingport_gas`) and enables it, defines the Thing `demo-gateway` with an
//! `echo` endpoint (a TCP echo service of its own) and, when something listens on
//! 127.0.0.1:22, an `ssh` endpoint, runs an agent for it (`thingport_agent`), and prints the
//! Administrator's credentials and the commands to try, then `demo ready`. Ctrl-C or SIGTERM
//! stops the agent, the GAS and the platform, in that order, and exits 0.
//!
//! Everything it sets up is idempotent: a second `thingport up` on the same data directory
//! keeps the installed extensions (same version: no import), users, grants and Things, and
//! replaces only the application keys (their values are never stored) and the endpoints (the
//! echo service's port is new each run). Not for production: one process, loopback only,
//! plain HTTP.

mod admin;
mod banner;
mod bundle;
mod local;
mod signals;

use admin::Admin;
use anyhow::{anyhow, Context as _};
use banner::Ready;
use clap::Args;
use signals::Signals;
use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// `thingport up --help`'s long description.
pub const LONG_ABOUT: &str = r#"Run the whole platform as a demo, in this one process, until Ctrl-C.

Starts the platform on --listen with its data (embedded SQLite) in --data-dir; imports
the bundled extensions, in order: ConnectionServicesExtension, RemoteAccessExtension and,
if its library was built, AxedaCompatibilityExtension (each packed from the library next
to this executable, or in --extensions-dir; one already installed in the same version is
kept); creates the users demo-gas-service and demo-device with fresh application keys;
runs the Global Access Server demo-gas (on a free loopback port) and enables it; creates
the Thing demo-gateway (a RemoteAccessibleThing) with the endpoint `echo` (a TCP echo
service this command runs) and, if something listens on 127.0.0.1:22, `ssh`; runs an
agent for demo-gateway; waits until it is connected; then prints the Administrator's
credentials, the commands to try, and the line `demo ready` on stdout. Progress goes to
stderr; the components log at --log's level (warn by default).

The Administrator's password is generated on the first start and kept in
<data-dir>/demo-admin-password (mode 0600), so a later thingport up on the same data
directory works and prints it again. Ctrl-C or SIGTERM stops the agent, the GAS and the
platform, in that order, and exits 0.

Build first: `cargo build --release --workspace`, then run `target/release/thingport up`.
Fails (exit 1) naming the problem when the port is taken, a library is missing, or the
data directory is locked by a running server. The server connection flags do not apply."#;

/// The demo's GAS Thing.
pub const GAS_NAME: &str = "demo-gas";
/// The demo's gateway Thing.
pub const GATEWAY: &str = "demo-gateway";
/// The user whose application key the GAS runs with.
const GAS_USER: &str = "demo-gas-service";
/// The user whose application key the agent runs with.
const DEVICE_USER: &str = "demo-device";
const GAS_KEY: &str = "demo-gas-key";
const DEVICE_KEY: &str = "demo-device-key";
/// The Thing on which GASes call RegisterServer, Heartbeat and ReportSessionEvents.
const PROVIDER: &str = "GASRemoteAccessProvider";
/// How long one step of the start (the platform listening, the GAS registering, the gateway
/// connecting) may take.
const STEP_DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

/// `thingport up`'s flags.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Address and port of the platform's REST API (port 0 picks a free port).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    #[arg(env = "THINGPORT_DEMO_LISTEN")]
    pub listen: SocketAddr,

    /// The demo's data directory (created, mode 0700): the embedded SQLite database, the
    /// installed extension packages, and the Administrator's password in demo-admin-password
    /// (mode 0600). Only one server may use it at a time.
    #[arg(long, value_name = "DIR", default_value = "./thingport-demo")]
    #[arg(env = "THINGPORT_DEMO_DATA_DIR")]
    pub data_dir: PathBuf,

    /// The directory holding the bundled extension libraries (libconnection_services.so,
    /// libremote_access.so, and libaxeda_compat.so if built) [default: the directory of this
    /// executable, e.g. target/release after `cargo build --release --workspace`].
    #[arg(long, value_name = "DIR", env = "THINGPORT_EXTENSIONS_DIR")]
    pub extensions_dir: Option<PathBuf>,
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub fn run(args: UpArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let result = runtime.block_on(up(args));
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// One progress line on stderr.
fn progress(line: impl Display) {
    eprintln!("thingport up: {line}");
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    // Installed first: a signal during the start stops what has started, cleanly.
    let mut signals = Signals::install()?;
    let mut demo = Demo::default();
    let started = tokio::select! {
        started = demo.start(&args) => Some(started),
        signal = signals.recv() => {
            progress(format_args!("{signal}: stopping"));
            None
        }
    };
    let result = match started {
        None => Ok(()),
        Some(Err(e)) => Err(e),
        Some(Ok(ready)) => {
            ready.print();
            tokio::select! {
                signal = signals.recv() => {
                    progress(format_args!("{signal}: stopping"));
                    Ok(())
                }
                (name, exit) = demo.first_exit() => Err(match exit {
                    Ok(()) => anyhow!("the {name} stopped unexpectedly"),
                    Err(e) => e.context(format!("the {name} failed")),
                }),
            }
        }
    };
    tokio::select! {
        () = demo.stop() => {}
        signal = signals.recv() => {
            eprintln!("thingport: {signal} again: exiting without finishing the shutdown");
            std::process::exit(1);
        }
    }
    if result.is_ok() {
        progress("stopped");
    }
    result
}

/// A component running on the runtime: the platform, the GAS or the agent.
struct Component {
    name: &'static str,
    /// Dropping or signalling it starts the component's shutdown.
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
    /// How long its shutdown may take before it is abandoned.
    stop_within: Duration,
}

/// A shutdown trigger and the future the component waits on.
fn trigger() -> (
    watch::Sender<bool>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (tx, mut rx) = watch::channel(false);
    (tx, async move {
        let _ = rx.wait_for(|stop| *stop).await;
    })
}

/// What is running, in start order.
#[derive(Default)]
struct Demo {
    components: Vec<Component>,
    echo: Option<JoinHandle<()>>,
}

impl Demo {
    fn spawn(
        &mut self,
        name: &'static str,
        stop_within: Duration,
        run: impl FnOnce(
            std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
        ) -> JoinHandle<anyhow::Result<()>>,
    ) {
        let (stop, shutdown) = trigger();
        let task = run(Box::pin(shutdown));
        self.components.push(Component {
            name,
            stop,
            task,
            stop_within,
        });
    }

    /// Fails with the error of a component that has ended (they end only when told to).
    async fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(at) = self.components.iter().position(|c| c.task.is_finished()) {
            let c = self.components.remove(at);
            return Err(match c.task.await {
                Ok(Ok(())) => anyhow!("the {} stopped unexpectedly", c.name),
                Ok(Err(e)) => e.context(format!("the {} failed", c.name)),
                Err(e) => anyhow!("the {} panicked: {e}", c.name),
            });
        }
        Ok(())
    }

    /// Polls `cond` until it holds, failing after [`STEP_DEADLINE`] with `what` or as soon as
    /// a component ends.
    async fn wait_until<F, Fut>(&mut self, what: &str, mut cond: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<bool>>,
    {
        let deadline = Instant::now() + STEP_DEADLINE;
        loop {
            self.check_alive().await?;
            if cond().await? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "{what} did not happen within {STEP_DEADLINE:?} (run with --log info to see \
                     why)"
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The first component to end, and how it ended; pending while none is running.
    async fn first_exit(&mut self) -> (&'static str, anyhow::Result<()>) {
        if self.components.is_empty() {
            std::future::pending::<()>().await;
        }
        let tasks = self.components.iter_mut().map(|c| &mut c.task);
        let (exit, at, _) = futures_util::future::select_all(tasks).await;
        let c = self.components.remove(at);
        let exit = match exit {
            Ok(result) => result,
            Err(e) => Err(anyhow!("panicked: {e}")),
        };
        (c.name, exit)
    }

    /// Stops the components in the reverse order of their start, each within its bound.
    async fn stop(&mut self) {
        while let Some(c) = self.components.pop() {
            let _ = c.stop.send(true);
            let abort = c.task.abort_handle();
            match tokio::time::timeout(c.stop_within, c.task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => progress(format_args!("the {} failed to stop: {e:#}", c.name)),
                Ok(Err(e)) => progress(format_args!("the {} panicked: {e}", c.name)),
                Err(_) => {
                    abort.abort();
                    progress(format_args!(
                        "the {} did not stop within {:?}; abandoned",
                        c.name, c.stop_within
                    ));
                }
            }
        }
        if let Some(echo) = self.echo.take() {
            echo.abort();
        }
    }

    async fn start(&mut self, args: &UpArgs) -> anyhow::Result<Ready> {
        // A fixed port first: a taken one fails before the data directory is touched. (Port 0
        // is left to the server, which reports what it bound.)
        if args.listen.port() != 0 {
            local::pick_listen(args.listen)?;
        }
        let data = local::prepare_data_dir(&args.data_dir)?;
        let extensions_dir = bundle::extensions_dir(args.extensions_dir.as_deref())?;
        if data.created {
            // A new demo needs the libraries: say so before anything starts.
            for b in bundle::BUNDLED.iter().filter(|b| b.required) {
                let path = b.library_path(&extensions_dir);
                anyhow::ensure!(
                    path.is_file(),
                    "extension library missing: {} (build the bundled extensions with `{}`, or \
                     point --extensions-dir / THINGPORT_EXTENSIONS_DIR at the directory holding \
                     them)",
                    path.display(),
                    bundle::BUILD_COMMAND
                );
            }
        }
        progress(format_args!(
            "data directory {}{}",
            data.path.display(),
            if data.created { " (new)" } else { "" }
        ));

        // The platform, and the address it bound.
        let config = server_config(args.listen, &data);
        let (bound_tx, mut bound_rx) = tokio::sync::oneshot::channel();
        self.spawn("platform", Duration::from_secs(30), |shutdown| {
            tokio::spawn(thingport_server::run_with_ready(
                config,
                shutdown,
                move |a| {
                    let _ = bound_tx.send(a);
                },
            ))
        });
        let mut bound = None;
        self.wait_until("the platform listening", || {
            if let Ok(a) = bound_rx.try_recv() {
                bound = Some(a);
            }
            let ready = bound.is_some();
            async move { Ok(ready) }
        })
        .await?;
        let addr = bound.context("the platform's address")?;
        // A wildcard address is reached on loopback.
        let reach = match addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::from(([127, 0, 0, 1], addr.port()))
            }
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
            }
            _ => addr,
        };
        let url = format!("http://{reach}");
        progress(format_args!("platform listening on {url}"));
        let admin = Admin::new(&url, &data.password)?;

        import_extensions(&admin, &extensions_dir).await?;

        // The GAS's and the device's users and keys.
        admin.ensure_user(GAS_USER).await?;
        admin.grant_visibility(PROVIDER).await?;
        admin
            .grant_runtime(PROVIDER, "ServiceInvoke", GAS_USER)
            .await?;
        let gas_key = admin.fresh_key(GAS_KEY, GAS_USER).await?;
        admin.ensure_user(DEVICE_USER).await?;
        let device_key = admin.fresh_key(DEVICE_KEY, DEVICE_USER).await?;
        progress(format_args!(
            "users {GAS_USER} and {DEVICE_USER} with fresh application keys"
        ));

        // The GAS.
        let gas = thingport_gas::Server::bind(gas_config(&url, gas_key)?).await?;
        let gas_addr = gas.local_addr();
        self.spawn(
            "Global Access Server",
            Duration::from_secs(15),
            |shutdown| tokio::spawn(gas.run(shutdown)),
        );
        self.wait_until(&format!("the GAS {GAS_NAME} registering"), || async {
            Ok(admin.is_connected(GAS_NAME).await? == Some(true))
        })
        .await?;
        admin.enable_gas(GAS_NAME).await?;
        progress(format_args!(
            "Global Access Server {GAS_NAME} on {gas_addr}: registered and enabled"
        ));

        // The gateway, its endpoints and its agent.
        let created = admin.ensure_thing(GATEWAY, "RemoteAccessibleThing").await?;
        admin.grant_visibility(GATEWAY).await?;
        for perm in ["PropertyWrite", "PropertyRead"] {
            admin.grant_runtime(GATEWAY, perm, DEVICE_USER).await?;
        }
        let (echo, echo_task) = local::start_echo().await?;
        self.echo = Some(echo_task);
        let ssh = local::ssh_listening().await;
        let mut endpoints = vec![("echo", "TCP", "127.0.0.1", echo.port())];
        if ssh {
            endpoints.push(("ssh", "SSH", "127.0.0.1", 22));
        }
        admin.set_endpoints(GATEWAY, &endpoints).await?;
        progress(format_args!(
            "Thing {GATEWAY}{}: endpoint echo → {echo} (an echo service), {}",
            if created { " created" } else { "" },
            if ssh {
                "endpoint ssh → 127.0.0.1:22"
            } else {
                "no ssh endpoint (nothing listens on 127.0.0.1:22)"
            }
        ));
        let agent = agent_config(&url, device_key)?;
        self.spawn("agent", Duration::from_secs(10), |shutdown| {
            tokio::spawn(thingport_agent::run(agent, shutdown))
        });
        self.wait_until(&format!("{GATEWAY} connecting"), || async {
            Ok(admin.is_connected(GATEWAY).await? == Some(true))
        })
        .await?;
        progress(format_args!(
            "{GATEWAY} connected (its agent runs in this process)"
        ));

        Ok(Ready {
            url,
            data,
            ssh,
            command: local::command_name(),
        })
    }
}

/// Imports the bundled extensions in order, skipping those installed in the same version.
async fn import_extensions(admin: &Admin, dir: &std::path::Path) -> anyhow::Result<()> {
    let installed = admin.installed().await?;
    for b in &bundle::BUNDLED {
        let library = b.library_path(dir);
        if !b.required && !library.is_file() {
            progress(format_args!(
                "{} not imported: {} is not built (optional)",
                b.name,
                library.display()
            ));
            continue;
        }
        let Some((template, source)) = b.template(dir)? else {
            let e = anyhow!(
                "{} has no metadata.xml template (looked in {}, and the source tree)",
                b.name,
                dir.join(b.crate_dir).display()
            );
            if b.required {
                return Err(e);
            }
            progress(format_args!("{} not imported: {e}", b.name));
            continue;
        };
        let (name, version) = bundle::identity(b, &template)?;
        if installed.get(&name) == Some(&version) {
            progress(format_args!("{name} {version} already installed"));
            continue;
        }
        let outcome = async {
            let zip = bundle::pack(b, &template, &library)?;
            admin.import(&format!("{name}.zip"), zip).await
        }
        .await;
        match outcome {
            Ok(()) => progress(format_args!(
                "imported {name} {version} (from {}, metadata {source})",
                library.display()
            )),
            Err(e) if b.required => return Err(e.context(format!("cannot import {name}"))),
            Err(e) => progress(format_args!("{name} not imported: {e:#}")),
        }
    }
    Ok(())
}

/// The platform's configuration: the demo's address, data directory and password, the
/// server's defaults otherwise (built here, not parsed, so that a `THINGPORT_*` variable
/// meant for a real server cannot reach the demo).
fn server_config(listen: SocketAddr, data: &local::DataDir) -> thingport_server::config::Config {
    thingport_server::config::Config {
        secrets_key_file: None,
        listen,
        demo: false,
        data_dir: data.path.clone(),
        database_url: None,
        admin_password: Some(data.password.clone()),
        tls_cert: None,
        tls_key: None,
        max_body_bytes: 1024 * 1024,
        request_timeout: 30,
        max_upload_bytes: 256 * 1024 * 1024,
        trusted_extension_keys: None,
        extension_call_timeout: 10,
        log_format: thingport_server::config::LogFormat::Human,
        log: "warn".into(),
    }
}

fn gas_config(url: &str, key: String) -> anyhow::Result<thingport_gas::GasConfig> {
    let key = thingport_gas::AppKey::new(key).map_err(|e| anyhow!("{e}"))?;
    let mut config =
        thingport_gas::GasConfig::new(url, key, GAS_NAME).map_err(|e| anyhow!("{e}"))?;
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    // A demo stops promptly: live sessions get two seconds.
    config.relay.drain = Duration::from_secs(2);
    config.timing.flush_timeout = Duration::from_secs(3);
    Ok(config)
}

fn agent_config(url: &str, key: String) -> anyhow::Result<thingport_agent::AgentConfig> {
    let key = thingport_agent::AppKey::new(key).map_err(|e| anyhow!("{e}"))?;
    thingport_agent::AgentConfig::new(url, key, [GATEWAY]).map_err(|e| anyhow!("{e}"))
}
