//! The command line of `thingport-gas`: flags and `THINGPORT_*` environment variables, parsed by
//! clap, then validated into a [`GasConfig`].

use crate::server::config::DEFAULT_LISTEN;
use crate::server::platform::load_ca_file;
use crate::server::{AppKey, ConfigError, GasConfig};
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

/// The Thingport Global Access Server (GAS): relays the tunnels of remote sessions between the
/// Remote Access Client and the device agent.
///
/// It registers with the platform given by --url as the GAS Thing --name (created disabled the
/// first time: an administrator runs EnableForRemoteSessions on it), heartbeats, serves tunnels
/// on --listen (path /tunnel) and reports every session's sides, bytes and end. Registration is
/// retried forever (1 s to 15 s, with jitter). It prints `listening on ADDR` on stdout once
/// ready; logs go to stderr. SIGTERM/SIGINT drain: no new sessions, live ones get --drain, then
/// end. Exit codes: 0 after a signal, 2 for a bad configuration, 1 for other failures.
#[derive(Debug, Clone, Parser)]
#[command(name = "thingport-gas", version, about, long_about)]
pub struct Args {
    /// The platform's address: http://HOST[:PORT] or https://HOST[:PORT], a path kept as a
    /// prefix. The GAS calls POST {url}/Thingworx/Things/GASRemoteAccessProvider/Services/...
    #[arg(long, env = "THINGPORT_URL", value_name = "URL")]
    pub url: String,

    /// The application key the GAS calls the platform with (header appKey; never logged).
    /// Prefer the environment variable over the flag: flags show in `ps`.
    #[arg(
        long,
        env = "THINGPORT_APP_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub app_key: String,

    /// The name of this GAS: its Thing on the platform and the name tunnel credentials carry.
    /// 1 to 128 of letters, digits and _ . @ : -, starting with a letter, a digit or _.
    #[arg(long, env = "THINGPORT_NAME", value_name = "NAME")]
    pub name: String,

    /// The address tunnels are served on (port 0 picks a free port). The default serves this
    /// host only; a GAS that clients and agents reach from elsewhere listens on 0.0.0.0:8443
    /// (or [::]:8443) and sets --public-url.
    #[arg(long, env = "THINGPORT_LISTEN", value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Where clients and agents reach this GAS, sent to the platform at registration:
    /// http://HOST[:PORT] or https://HOST[:PORT] (the tunnel path /tunnel is appended); ws:// and
    /// wss:// are taken as the same address. Default:
    /// http(s)://<bound address>; required when --listen is a wildcard address. https:// when
    /// the GAS serves TLS.
    #[arg(long, env = "THINGPORT_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    /// PEM certificate chain to serve tunnels over TLS (wss) with; needs --tls-key.
    #[arg(
        long,
        env = "THINGPORT_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "THINGPORT_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// PEM file of extra CA certificates to trust for an https:// platform, in addition to the
    /// bundled Mozilla (webpki) roots.
    #[arg(long, env = "THINGPORT_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<PathBuf>,

    /// Do not verify the platform's TLS certificate. Development only: anyone on the path can
    /// then impersonate the platform and read the application key and the signing keys.
    /// Logged as a warning.
    #[arg(long, env = "THINGPORT_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,

    /// The most concurrent sessions (paired or waiting for a side), 1..5000; reported to the
    /// platform and enforced: a side of a new session beyond it is refused with 503. (Every
    /// heartbeat lists the live sessions; run more GASes for more.)
    #[arg(long, env = "THINGPORT_CAPACITY", value_name = "N", default_value_t = crate::server::config::DEFAULT_CAPACITY,
          value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub capacity: u32,

    /// At shutdown, how long live sessions may go on before they are ended (SHUTDOWN): 500ms,
    /// 10s, 1m (a bare number is seconds).
    #[arg(long, env = "THINGPORT_DRAIN", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub drain: Duration,

    /// Log format on stderr.
    #[arg(long, env = "THINGPORT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info` or `thingport_gas=debug` (RUST_LOG syntax).
    #[arg(
        long,
        env = "THINGPORT_LOG",
        value_name = "FILTER",
        default_value = "info"
    )]
    pub log: String,
}

impl Args {
    /// Validates the flags into a configuration (TLS files and --ca-file are read now, so a bad
    /// one stops the GAS at start).
    pub fn into_config(self) -> Result<GasConfig, ConfigError> {
        let app_key = AppKey::new(self.app_key)?;
        let mut config = GasConfig::new(&self.url, app_key, &self.name)?;
        config.listen = self.listen;
        config.public_url = self.public_url;
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let acceptor = crate::tls::acceptor(cert, key).map_err(|e| {
                ConfigError::new(format!(
                    "--tls-cert/--tls-key: {}",
                    crate::server::platform::chain(&e)
                ))
            })?;
            config.tls = Some(acceptor);
        }
        if let Some(path) = &self.ca_file {
            config.platform_tls.extra_roots = load_ca_file(path)?;
        }
        config.platform_tls.insecure = self.insecure;
        config.capacity = self.capacity;
        config.relay.drain = self.drain;
        config.validate()?;
        Ok(config)
    }
}

/// Parses a duration: a whole number with `ms`, `s`, `m` or `h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let usage = "use a whole number with ms, s, m or h (e.g. 500ms, 10s, 1m)";
    if digits.is_empty() {
        return Err(format!("{text:?} is not a duration: {usage}"));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is too large a duration"))?;
    let millis_per_unit: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => return Err(format!("{text:?}: unknown unit {other:?}; {usage}")),
    };
    n.checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too large a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<GasConfig, String> {
        let mut argv = vec!["thingport-gas"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .into_config()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn clap_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn a_full_command_line_becomes_a_config() {
        let c = parse(&[
            "--url=https://platform.example:8443/",
            "--app-key=k-123",
            "--name=gas-1",
            "--listen=0.0.0.0:0",
            "--public-url=https://gas-1.example:443",
            "--capacity=5",
            "--drain=500ms",
            "--insecure",
        ])
        .unwrap();
        assert_eq!(c.url.to_string(), "https://platform.example:8443");
        assert_eq!(c.name, "gas-1");
        assert_eq!(c.capacity, 5);
        assert_eq!(c.relay.drain, Duration::from_millis(500));
        assert!(c.platform_tls.insecure);
        assert!(!format!("{c:?}").contains("k-123"));
        let d = parse(&["--url=http://p", "--app-key=k", "--name=g"]).unwrap();
        assert_eq!(d.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(d.capacity, 1000);
        assert_eq!(d.relay.drain, Duration::from_secs(10));
    }

    #[test]
    fn bad_configurations_are_refused_with_the_flag_named() {
        let base = ["--url=http://h", "--app-key=k", "--name=g"];
        for (extra, needle) in [
            (&["--capacity=0"][..], "capacity"),
            (&["--capacity=5001"][..], "capacity"),
            (&["--listen=nowhere"], "--listen"),
            (&["--listen=0.0.0.0:1"], "--public-url is required"),
            (
                &["--public-url=ftp://x"],
                "http://, https://, ws:// or wss://",
            ),
            (&["--drain=2x"], "unknown unit"),
            (&["--tls-cert=/nonexistent.pem"], "--tls-key"),
            (
                &["--tls-cert=/nonexistent.pem", "--tls-key=/nonexistent.key"],
                "--tls-cert",
            ),
            (&["--ca-file=/nonexistent/ca.pem"], "--ca-file"),
            (&["--log-format=xml"], "xml"),
        ] {
            let mut args = base.to_vec();
            args.extend_from_slice(extra);
            let err = parse(&args).unwrap_err();
            assert!(err.contains(needle), "{extra:?}: {err}");
        }
        assert!(parse(&["--url=wss://h", "--app-key=k", "--name=g"])
            .unwrap_err()
            .contains("http:// or https://"));
        assert!(parse(&["--url=http://h", "--app-key=k", "--name=a b"])
            .unwrap_err()
            .contains("not a valid Thing name"));
        assert!(parse(&["--url=http://h", "--app-key=", "--name=g"])
            .unwrap_err()
            .contains("--app-key"));
        assert!(parse(&["--url=http://h", "--app-key=k"])
            .unwrap_err()
            .contains("--name"));
    }

    #[test]
    fn help_documents_every_flag_and_default() {
        let help = Args::command().render_long_help().to_string();
        for flag in [
            "--url",
            "--app-key",
            "--name",
            "--listen",
            "--public-url",
            "--tls-cert",
            "--tls-key",
            "--ca-file",
            "--insecure",
            "--capacity",
            "--drain",
            "--log-format",
            "--log ",
            "THINGPORT_APP_KEY",
            "THINGPORT_PUBLIC_URL",
            "[default: 127.0.0.1:8443]",
            "[default: 1000]",
            "[default: 10s]",
            "EnableForRemoteSessions",
        ] {
            assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }
}
