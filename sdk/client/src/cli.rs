//! The command line: flags and `THINGPORT_*` variables (clap), and what each command prints.
//!
//! Commands:
//! - `connect THING ENDPOINT [--local ADDR:PORT | --stdio]`: the Remote Access Client
//!   ([`crate::connect`]);
//! - `things`, `sessions [THING]`, `end SESSION`, `audit [--category C]`: the remote access and
//!   audit queries (`cli/admin.rs`);
//! - `ext pack | keygen | pubkey | import | list | delete`: extension packages (`cli/ext.rs`);
//! - `up`: the one-command demo ([`crate::up`]).
//!
//! Output is for people and simple scripts: results on stdout, warnings and logs on stderr
//! (`connect --stdio` writes nothing but tunnel bytes on stdout). A failure is one line on
//! stderr, `thingport: <what went wrong>`, and exit code 1; a usage mistake is clap's message and
//! exit code 2.

use crate::api::{Auth, Connection, Secret};
use crate::connect::{ConnectOptions, Local};
use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// The Thingport client and admin CLI.
///
/// Connects to devices' remote endpoints through a Global Access Server (`connect`), lists
/// Things, remote sessions and the audit log, ends sessions, and packs and administers
/// extension packages. Commands that call the server take --url and either --app-key or --user
/// and --password (or their THINGPORT_* variables).
#[derive(Debug, Parser)]
#[command(name = "thingport", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Base URL of the Thingport server.
    #[arg(long, env = "THINGPORT_URL", default_value = "http://127.0.0.1:8080")]
    #[arg(global = true, help_heading = CONNECTION)]
    pub url: String,

    /// Application key to authenticate with (sent as the `appKey` header); takes precedence
    /// over --user. Prefer the environment variable (flags show in `ps`).
    #[arg(long, env = "THINGPORT_APP_KEY", hide_env_values = true)]
    #[arg(global = true, help_heading = CONNECTION)]
    pub app_key: Option<String>,

    /// User name for HTTP Basic authentication (with --password).
    #[arg(long, env = "THINGPORT_USER")]
    #[arg(global = true, help_heading = CONNECTION)]
    pub user: Option<String>,

    /// Password of --user. Prefer the environment variable (flags show in `ps`).
    #[arg(long, env = "THINGPORT_PASSWORD", hide_env_values = true)]
    #[arg(global = true, help_heading = CONNECTION)]
    pub password: Option<String>,

    /// A PEM file of CA certificates to trust besides the webpki roots, for an https:// server
    /// and a wss:// Global Access Server.
    #[arg(long, env = "THINGPORT_CA_FILE", value_name = "FILE")]
    #[arg(global = true, help_heading = CONNECTION)]
    pub ca_file: Option<PathBuf>,

    /// Do not verify TLS certificates (development only: anyone on the path can read and
    /// change the traffic).
    #[arg(long, env = "THINGPORT_INSECURE")]
    #[arg(global = true, help_heading = CONNECTION)]
    pub insecure: bool,

    /// Log format on stderr.
    #[arg(long, env = "THINGPORT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    #[arg(global = true, help_heading = LOGGING)]
    pub log_format: LogFormat,

    /// Log filter, e.g. `warn` or `thingport_client=debug` (RUST_LOG syntax).
    #[arg(long, env = "THINGPORT_LOG", default_value = "warn")]
    #[arg(global = true, help_heading = LOGGING)]
    pub log: String,
}

const CONNECTION: &str = "Server connection (every command but ext pack, keygen, pubkey)";
const LOGGING: &str = "Logging";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect to a Thing's remote endpoint (e.g. its ssh) through a Global Access Server.
    ///
    /// Starts a remote session (StartSession on THING for ENDPOINT), attaches to the session's
    /// Global Access Server with the session's credential, and carries connections to the
    /// endpoint until Ctrl-C or SIGTERM, which end the session (exit 0). With --local (the
    /// default, 127.0.0.1:0) it listens, prints `listening on ADDR` on stdout and what to type
    /// on stderr; many connections at once are fine. With --stdio it carries one connection on
    /// stdin/stdout, for ssh:
    ///
    ///   ssh -o ProxyCommand='thingport connect %n ssh --stdio' user@gateway-1
    ///
    /// If the tunnel closes on its own, it prints why, asks the platform how the session ended
    /// and fails with `session ended: CAUSE` (e.g. SERVER_LOST, DEVICE_SHUTDOWN).
    Connect(ConnectArgs),

    /// List the Things you may see: name, template, enabled.
    Things {
        /// Print the server's answer as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },

    /// List remote sessions: of THING, or of every Thing (RemoteAccessSubsystem).
    Sessions {
        /// The Thing whose sessions to list.
        #[arg(value_name = "THING")]
        thing: Option<String>,
        /// Print the server's answer as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },

    /// End a remote session (RemoteAccessSubsystem.EndSession); its cause is USER_SHUTDOWN.
    End {
        /// The session's id, as `thingport sessions` shows it.
        #[arg(value_name = "SESSION")]
        session: String,
    },

    /// Show the audit log, newest first (AuditSubsystem.QueryAuditHistory).
    Audit(AuditArgs),

    /// Extension packages: pack, sign, import, list, delete.
    #[command(subcommand)]
    Ext(ExtCommand),

    /// Run the whole platform as a demo on this machine, until Ctrl-C (runs `thingport-demo`).
    ///
    /// The demo (the platform on the embedded default, the bundled extensions, a Global Access
    /// Server and a gateway with its agent, in one process) is the binary `thingport-demo`,
    /// shipped beside `thingport` (`cargo build --release --workspace` builds both), so that the
    /// client does not carry the platform. `thingport up ARGS...` runs it with ARGS, as git and
    /// cargo run their subcommands; `thingport up --help` shows its flags. `thingport-server
    /// --demo` runs the same demo.
    #[command(disable_help_flag = true)]
    Up {
        /// The demo's flags (`thingport up --help` lists them).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The Thing to reach (a RemoteAccessible Thing, e.g. a gateway).
    #[arg(value_name = "THING")]
    pub thing: String,

    /// The endpoint's name in the Thing's `endpoints` property, e.g. ssh.
    #[arg(value_name = "ENDPOINT")]
    pub endpoint: String,

    /// Listen on ADDR:PORT (port 0 picks a free one) and carry each connection to it.
    #[arg(long, value_name = "ADDR:PORT")]
    #[arg(default_value = "127.0.0.1:0", conflicts_with = "stdio")]
    pub local: String,

    /// Carry one connection on stdin and stdout (for ssh's ProxyCommand); logs go to stderr.
    #[arg(long)]
    pub stdio: bool,

    /// Attach to a session you already started (e.g. with Connect in the web console) instead
    /// of starting one: it must wait for its client (CREATED), for THING and ENDPOINT.
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this category: AUTHENTICATION, SECURITY, ENTITY, EXTENSIONS or REMOTE_ACCESS.
    #[arg(long, value_name = "C")]
    pub category: Option<String>,

    /// Only entries of this user (or application key's user).
    #[arg(long, value_name = "NAME")]
    pub principal: Option<String>,

    /// Only entries about this entity, as Kind:name (e.g. Thing:gateway-1).
    #[arg(long, value_name = "KIND:NAME")]
    pub entity: Option<String>,

    /// At most this many entries (1..10000; the server's default is 100).
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,

    /// Print the server's answer as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ExtCommand {
    /// Pack the extension crate in DIR into a package file.
    ///
    /// Reads DIR/Cargo.toml (the library's name) and DIR/metadata.xml (the package manifest
    /// template: name, packageVersion, vendor, description, dependsOn), takes the library that
    /// the workspace's build left in <target-dir>/<profile>/, and writes a package zip with
    /// metadata.xml (plus a NativeLibrary element for this host's target triple, with the
    /// library's sha256 and ABI version) and the library at lib/<target-triple>/<file>. The
    /// same inputs give the same bytes. The package is verified with the server's rules before
    /// it is written.
    Pack(PackArgs),

    /// Generate an ed25519 signing key for `ext pack --sign-key`.
    ///
    /// Writes FILE (a PKCS#8 private key in PEM, mode 0600; never overwrites) and prints the
    /// public key line to add to the server's --trusted-extension-keys file.
    Keygen {
        /// The key file to create.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },

    /// Print the public key line of a signing key, for the server's --trusted-extension-keys
    /// file.
    Pubkey {
        /// The signing key file.
        #[arg(value_name = "KEYFILE")]
        key: PathBuf,
    },

    /// Import a package (or a zip of packages) into the server; administrators only.
    ///
    /// Prints the import report, one row per package. A refused import prints the report and
    /// fails with the server's reason.
    Import {
        /// The package file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Print the server's answer as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },

    /// List the extension packages installed on the server.
    List {
        /// Print the server's answer as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },

    /// Delete an installed extension package.
    ///
    /// The server refuses while another package depends on it or Things use its templates or
    /// shapes, and names them.
    Delete {
        /// The package name, e.g. HelloCounterExtension.
        #[arg(value_name = "NAME")]
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct PackArgs {
    /// The extension crate's directory (holding Cargo.toml and metadata.xml).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// The package file to write (replaced atomically).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,

    /// The build profile whose library is packed: release, debug, or a custom profile.
    #[arg(long, default_value = "release")]
    pub profile: String,

    /// The cargo target directory [default: $CARGO_TARGET_DIR, else <workspace root>/target].
    #[arg(long, value_name = "PATH")]
    pub target_dir: Option<PathBuf>,

    /// Sign the package with this ed25519 key (see `thingport ext keygen`): writes
    /// signature.ed25519 for servers started with --trusted-extension-keys.
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
}

/// Parses the command line, runs the command and returns the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.global);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = format!("{e:#}").replace(['\r', '\n'], " ");
            eprintln!("thingport: {message}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(global: &GlobalArgs) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&global.log).unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match global.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let global = &cli.global;
    let command = match cli.command {
        Command::Ext(command) => command,
        Command::Connect(args) => return connect_command(global, args),
        Command::Up { mut args } => {
            if global.log != "warn" {
                args.splice(0..0, ["--log".into(), global.log.clone().into()]);
            }
            return crate::demo::exec(args);
        }
        Command::Things { json } => {
            let connection = connect(global)?;
            let things = block_on(async { connection.things().await })?;
            return admin::print_things(&things, json);
        }
        Command::Sessions { thing, json } => {
            let connection = connect(global)?;
            let sessions = block_on(async { connection.sessions(thing.as_deref()).await })?;
            return admin::print_sessions(&sessions, json);
        }
        Command::End { session } => {
            let connection = connect(global)?;
            block_on(async { connection.end_session(&session).await })?;
            println!("ended session {session}");
            return Ok(());
        }
        Command::Audit(args) => {
            let connection = connect(global)?;
            let entries = block_on(async { connection.audit(admin::audit_params(&args)).await })?;
            return admin::print_audit(&entries, args.json);
        }
    };
    ext::run(global, command)
}

/// The credentials from the flags: an application key, else a user and password.
pub fn auth(global: &GlobalArgs) -> anyhow::Result<Auth> {
    if let Some(key) = global.app_key.as_deref().filter(|k| !k.is_empty()) {
        return Ok(Auth::AppKey(Secret(key.to_owned())));
    }
    match (&global.user, &global.password) {
        (Some(user), Some(password)) => Ok(Auth::Basic {
            user: user.clone(),
            password: Secret(password.clone()),
        }),
        (Some(_), None) => bail!("--user needs --password (or THINGPORT_PASSWORD)"),
        (None, Some(_)) => bail!("--password needs --user (or THINGPORT_USER)"),
        (None, None) => Ok(Auth::None),
    }
}

/// The TLS configuration from --ca-file and --insecure (warning loudly about the latter).
fn tls(global: &GlobalArgs) -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
    if global.insecure {
        eprintln!(
            "thingport: WARNING: --insecure: TLS certificates are NOT verified; anyone on the \
             path can read and change this traffic (use it for development only)"
        );
    }
    crate::tls::client_config(&crate::tls::TlsOptions {
        ca_file: global.ca_file.clone(),
        insecure: global.insecure,
    })
}

fn connect(global: &GlobalArgs) -> anyhow::Result<Connection> {
    let tls = match (&global.ca_file, global.insecure) {
        (None, false) => None,
        _ => Some(tls(global)?),
    };
    Connection::with_tls(&global.url, auth(global)?, tls)
}

/// `thingport connect`: a single-threaded runtime (one session's relay needs no more than a
/// core, and tasks woken on the same thread cost no cross-thread wake-up: round trips 5–15%
/// shorter than on two workers), shut down without waiting for the blocking stdin reader (it
/// cannot be cancelled).
fn connect_command(global: &GlobalArgs, args: ConnectArgs) -> anyhow::Result<()> {
    let tls = tls(global)?;
    let connection = Connection::with_tls(&global.url, auth(global)?, Some(tls.clone()))?;
    let options = ConnectOptions {
        thing: args.thing,
        endpoint: args.endpoint,
        session: args.session,
        local: if args.stdio {
            Local::Stdio
        } else {
            Local::Listen(args.local)
        },
        tls: Some(tls),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let result = runtime.block_on(crate::connect::run(&connection, &options));
    runtime.shutdown_background();
    result
}

fn block_on<T>(future: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?
        .block_on(future)
}

mod admin;
mod ext;
pub use ext::{describe_pack, describe_report};
#[cfg(test)]
mod tests;
