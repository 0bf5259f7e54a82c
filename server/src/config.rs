//! Command-line flags and `THINGPORT_*` environment variables, parsed then validated.

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// The Thingport host platform: entity model, permissions, ThingWorx-compatible REST API,
/// persistence and audit.
///
/// On first start with no users it creates the user `Administrator` (member of
/// `Administrators`) with --admin-password, or with a random password printed once on stdout.
/// Once listening it prints `listening on ADDR` on stdout; logs go to stderr.
#[derive(Debug, Clone, Parser)]
#[command(name = "thingport-server", version, about, long_about)]
pub struct Config {
    /// Address and port of the REST API (port 0 picks a free port).
    #[arg(long, env = "THINGPORT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Run the one-command demo instead (the same as `thingport up`): the platform on the
    /// embedded default, the bundled extensions, a Global Access Server and a gateway with its
    /// agent, in one process. Runs `thingport-demo` beside this executable with --listen, --log
    /// and --data-dir (when given; the demo's default is ./thingport-demo); other flags do not
    /// apply to it.
    #[arg(long)]
    pub demo: bool,

    /// Directory for the embedded database and, later, extension packages. Created if missing
    /// (mode 0700). Only one server may use it at a time.
    #[arg(long, env = "THINGPORT_DATA_DIR", default_value = "./thingport-data")]
    pub data_dir: PathBuf,

    /// Database to use instead of the embedded SQLite file in --data-dir, e.g.
    /// sqlite:///var/lib/thingport/thingport.db. PostgreSQL (postgres://) is planned and refused for now.
    #[arg(long, env = "THINGPORT_DATABASE_URL")]
    pub database_url: Option<String>,

    /// File of the key that encrypts stored secrets (endpoint passwords and SSH keys): 64 hex
    /// digits, created (mode 0600) on first start. Default: `<data-dir>/secrets.key`. Keep it with
    /// the backups but apart from the database: without it the stored secrets cannot be read.
    #[arg(long, env = "THINGPORT_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,

    /// Password of the built-in Administrator, used only when the platform has no user yet
    /// (8 to 1024 bytes). Prefer the environment variable over the flag (flags show in `ps`).
    #[arg(long, env = "THINGPORT_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,

    /// PEM certificate chain: serve HTTPS instead of HTTP (needs --tls-key).
    #[arg(long, env = "THINGPORT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "THINGPORT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Largest accepted request body in bytes; larger ones are refused with 413 before being read.
    #[arg(long, env = "THINGPORT_MAX_BODY_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(64..=1024 * 1024 * 1024))]
    pub max_body_bytes: u64,

    /// Seconds a request may take before it is answered with 408.
    #[arg(long, env = "THINGPORT_REQUEST_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout: u64,

    /// Largest accepted extension package upload in bytes (`ExtensionPackageUploader`).
    #[arg(long, env = "THINGPORT_MAX_UPLOAD_BYTES", default_value_t = 256 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=4 * 1024 * 1024 * 1024))]
    pub max_upload_bytes: u64,

    /// File of trusted ed25519 public keys (one per line, hex or base64, `#` comments): when
    /// set, only extension packages signed by one of them are imported or loaded.
    #[arg(long, env = "THINGPORT_TRUSTED_EXTENSION_KEYS")]
    pub trusted_extension_keys: Option<PathBuf>,

    /// Seconds an extension call (service, timer, instance creation) may take before the caller
    /// is answered with 504.
    #[arg(long, env = "THINGPORT_EXTENSION_CALL_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub extension_call_timeout: u64,

    /// Log format on stderr.
    #[arg(long, env = "THINGPORT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info` or `thingport_server=debug` (RUST_LOG syntax).
    #[arg(long, env = "THINGPORT_LOG", default_value = "info")]
    pub log: String,
}

impl Config {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout)
    }

    /// The SQLite file to use, from --database-url or --data-dir.
    pub fn database_path(&self) -> anyhow::Result<PathBuf> {
        match &self.database_url {
            None => Ok(self.data_dir.join("thingport.db")),
            Some(url) => {
                if let Some(path) = url.strip_prefix("sqlite://") {
                    anyhow::ensure!(
                        !path.is_empty(),
                        "--database-url {url:?} names no file: use sqlite:///path/to/thingport.db"
                    );
                    Ok(PathBuf::from(path))
                } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                    anyhow::bail!("--database-url: PostgreSQL is not supported by this build yet; use the embedded SQLite default (omit --database-url)")
                } else {
                    anyhow::bail!(
                        "--database-url must start with sqlite:// (got a URL with another scheme)"
                    )
                }
            }
        }
    }

    /// Checks what clap cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.database_path()?;
        if let Some(pw) = &self.admin_password {
            let n = pw.len();
            anyhow::ensure!(
                (crate::security::secrets::MIN_PASSWORD_LEN
                    ..=crate::security::secrets::MAX_PASSWORD_LEN)
                    .contains(&n),
                "--admin-password must be 8 to 1024 bytes long"
            );
        }
        for f in [&self.tls_cert, &self.tls_key].into_iter().flatten() {
            anyhow::ensure!(
                f.is_file(),
                "TLS file {} does not exist or is not a file",
                f.display()
            );
        }
        Ok(())
    }
}
