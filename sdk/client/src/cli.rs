//! The command line: flags and `THINGPORT_*` variables (clap), and what each command prints.
//!
//! Output is for people and simple scripts: results on stdout, warnings and logs on stderr. A
//! failure is one line on stderr, `thingport: <what went wrong>`, and exit code 1; a usage
//! mistake is clap's message and exit code 2.

use crate::api::{Auth, Connection, Secret};
use crate::keys;
use crate::pack::{self, PackOptions, PackReport};
use crate::table;
use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// The Thingport client and admin CLI.
///
/// Packs extension crates into packages and administers a Thingport server's extensions over
/// its REST API. Commands that call the server take --url and either --app-key or --user and
/// --password (or their THINGPORT_* variables).
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

    /// Log format on stderr.
    #[arg(long, env = "THINGPORT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    #[arg(global = true, help_heading = LOGGING)]
    pub log_format: LogFormat,

    /// Log filter, e.g. `warn` or `thingport_client=debug` (RUST_LOG syntax).
    #[arg(long, env = "THINGPORT_LOG", default_value = "warn")]
    #[arg(global = true, help_heading = LOGGING)]
    pub log: String,
}

const CONNECTION: &str = "Server connection (ext import, list, delete)";
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
    /// Extension packages: pack, sign, import, list, delete.
    #[command(subcommand)]
    Ext(ExtCommand),
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
    let Command::Ext(command) = cli.command;
    match command {
        ExtCommand::Pack(args) => {
            let report = pack::pack(&PackOptions {
                dir: args.dir,
                output: args.output,
                profile: args.profile,
                target_dir: args.target_dir,
                sign_key: args.sign_key,
            })?;
            for warning in &report.warnings {
                eprintln!("{warning}");
            }
            print!("{}", describe_pack(&report));
            Ok(())
        }
        ExtCommand::Keygen { output } => {
            let key = keys::keygen(&output)?;
            println!(
                "{}",
                keys::public_key_line(&key, &output.display().to_string())
            );
            eprintln!(
                "wrote the signing key {}; add the line above to the server's \
                 --trusted-extension-keys file",
                output.display()
            );
            Ok(())
        }
        ExtCommand::Pubkey { key } => {
            let signing = keys::SigningKey::load(&key)?;
            let line = keys::public_key_line(&signing.public_key(), &key.display().to_string());
            println!("{line}");
            Ok(())
        }
        ExtCommand::Import { file, json } => {
            let connection = connect(&cli.global)?;
            let outcome = block_on(connection.import(&file))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&outcome.report)?);
            } else {
                print!("{}", describe_report(&outcome.report));
            }
            match outcome.refused {
                Some(refusal) => bail!("{}: {}", file.display(), refusal.message),
                None => Ok(()),
            }
        }
        ExtCommand::List { json } => {
            let connection = connect(&cli.global)?;
            let list = block_on(connection.list())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            let rows = table::rows(&list);
            if rows.is_empty() {
                println!("no extension packages installed");
                return Ok(());
            }
            let preferred = ["name", "packageVersion", "version", "status", "vendor"];
            let columns = table::columns(&list, &rows, &preferred);
            let cell = |column: &str, value: Option<&Value>| {
                let text = table::cell(value);
                // A digest is long; its first 12 digits name it well enough (--json has all).
                match text.get(..12) {
                    Some(short) if column == "sha256" && text.len() > 12 => format!("{short}…"),
                    _ => text,
                }
            };
            print!("{}", table::render_rows(&columns, &rows, cell));
            Ok(())
        }
        ExtCommand::Delete { name } => {
            let connection = connect(&cli.global)?;
            block_on(connection.delete(&name))?;
            println!("deleted {name}");
            Ok(())
        }
    }
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

fn connect(global: &GlobalArgs) -> anyhow::Result<Connection> {
    Connection::new(&global.url, auth(global)?)
}

fn block_on<T>(future: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?
        .block_on(future)
}

/// What `ext pack` prints: what it wrote, one fact a line.
pub fn describe_pack(report: &PackReport) -> String {
    let m = &report.metadata;
    let mut out = format!("wrote {}\n", report.output.display());
    let mut line = |label: &str, value: String| {
        out.push_str(&format!("  {label:<8} {value}\n"));
    };
    line("package", format!("{} {}", m.name, m.version));
    line("target", report.target.clone());
    line("library", report.library.file.clone());
    line("from", report.library_source.display().to_string());
    line("sha256", report.library.sha256.to_hex());
    line("abi", report.library.abi_version.to_string());
    line(
        "size",
        format!(
            "{} bytes (library), {} bytes (package)",
            report.library_size, report.package_size
        ),
    );
    line("zip", format!("sha256 {}", report.package_sha256));
    if let Some(key) = &report.signed_by {
        line("signed", format!("by {}", hex::encode(key.0)));
    }
    out
}

/// The import report as a table: name, version, status (ok, failure, warning), message.
pub fn describe_report(report: &Value) -> String {
    let rows = table::rows(report);
    if rows.is_empty() {
        return "the server returned no report rows\n".to_owned();
    }
    let header: Vec<String> = ["name", "version", "status", "message"]
        .map(str::to_owned)
        .to_vec();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let status = match row.get("extensionReportStatus") {
                Some(Value::Number(n)) if n.as_i64() == Some(0) => "ok".to_owned(),
                Some(Value::Number(n)) if n.as_i64() == Some(1) => "failure".to_owned(),
                Some(Value::Number(n)) if n.as_i64() == Some(2) => "warning".to_owned(),
                other => table::cell(other),
            };
            vec![
                table::cell(row.get("name")),
                table::cell(row.get("version").or_else(|| row.get("packageVersion"))),
                status,
                table::cell(row.get("reportMessage")),
            ]
        })
        .collect();
    table::render(&header, &body)
}

#[cfg(test)]
mod tests;
