//! The command line: flags and `THINGPORT_*` environment variables, parsed by clap, then
//! validated into an [`AgentConfig`].

use crate::config::{parse_duration, parse_endpoint, AgentConfig, AppKey, ConfigError, Endpoint};
use clap::{Parser, ValueEnum};
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

/// The Thingport device agent: runs on a gateway, keeps a control channel to the platform open,
/// binds the gateway's Things and answers the platform for them.
///
/// It connects to ws(s)://HOST:PORT/Thingworx/WS of the platform given by --url, authenticates
/// with --app-key, binds every --thing, and reconnects forever (exponential backoff from
/// --min-backoff to --max-backoff, with jitter) when the connection fails or is lost. It serves
/// the remote sessions the platform orders for its Things: it attaches to the named GAS and
/// dials the endpoint for each tunnelled connection, only where --allow (or, by default, the
/// Thing's endpoints property) permits, at most --max-sessions at once, until the platform
/// ends the session (endSession). Logs go to stderr. Exit codes: 0 after SIGTERM/SIGINT, 2 for
/// a bad configuration, 1 for other failures.
#[derive(Debug, Clone, Parser)]
#[command(name = "thingport-agent", version, about, long_about)]
pub struct Args {
    /// The platform's address: http://HOST[:PORT] or https://HOST[:PORT] (ports default to 80
    /// and 443; IPv6 in brackets). A path is kept as a prefix (https://h/tp connects to
    /// wss://h:443/tp/Thingworx/WS; .../Thingworx is not doubled). ws:// and wss:// are refused:
    /// the agent derives the WebSocket URL itself.
    #[arg(long, env = "THINGPORT_URL", value_name = "URL")]
    pub url: String,

    /// The application key the agent authenticates with (sent in the appKey header; never
    /// logged). Prefer the environment variable over the flag: flags show in `ps`.
    #[arg(
        long,
        env = "THINGPORT_APP_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub app_key: String,

    /// A Thing to bind (repeatable, at least one). Each must exist on the platform, be enabled
    /// and derive from RemoteThing; a refused bind is retried every minute. THINGPORT_THING
    /// takes a comma-separated list.
    #[arg(
        long = "thing",
        env = "THINGPORT_THING",
        value_name = "NAME",
        required = true,
        value_delimiter = ','
    )]
    pub things: Vec<String>,

    /// An endpoint this agent may tunnel to for remote sessions (repeatable), HOST:PORT with
    /// IPv6 in brackets ([fd00::5]:22); with --allow, sessions may reach exactly these. Default
    /// (no --allow): only the endpoints the platform defines for the ordering Thing: before each
    /// session the agent reads the Thing's `endpoints` property with its own key
    /// (GET /Thingworx/Things/NAME/Properties/endpoints, through the same proxy and TLS settings,
    /// 5 s at most; the key's user needs PropertyRead on it) and denies the session
    /// (SESSION_DENIED) when the endpoint is not among them or they cannot be read.
    /// THINGPORT_ALLOW takes a comma-separated list.
    #[arg(
        long = "allow",
        env = "THINGPORT_ALLOW",
        value_name = "HOST:PORT",
        value_delimiter = ',',
        value_parser = parse_endpoint
    )]
    pub allow: Vec<Endpoint>,

    /// Refuse every remote session (SESSION_DENIED) while still binding the Things; checked
    /// before anything else.
    #[arg(long, env = "THINGPORT_DISABLE_REMOTE_ACCESS", value_parser = clap::builder::BoolishValueParser::new())]
    pub disable_remote_access: bool,

    /// The most remote sessions this agent runs at once (1 to 10000); further orders are denied
    /// (SESSION_DENIED "too many sessions") until one ends. Each session may carry many TCP
    /// connections.
    #[arg(long, env = "THINGPORT_MAX_SESSIONS", value_name = "N", default_value_t = crate::config::DEFAULT_MAX_SESSIONS)]
    pub max_sessions: usize,

    /// PEM file of extra CA certificates to trust for an https:// platform, in addition to the
    /// bundled Mozilla (webpki) roots, e.g. a company or self-signed CA.
    #[arg(long, env = "THINGPORT_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<PathBuf>,

    /// Do not verify the platform's TLS certificate. Development only: anyone on the path can
    /// then impersonate the platform and read the application key. Logged as a warning.
    #[arg(long, env = "THINGPORT_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,

    /// HTTP CONNECT proxy to reach the platform through: http://[USER:PASS@]HOST[:PORT]
    /// (port 80 by default; %-escape special characters in USER and PASS; Basic auth). Without
    /// it, HTTPS_PROXY/https_proxy (https:// platforms) or HTTP_PROXY/http_proxy (http://
    /// platforms) are used unless NO_PROXY/no_proxy (comma-separated host suffixes, or *)
    /// matches the platform host; NO_PROXY does not apply to an explicit --proxy. Only http://
    /// proxies are supported. Default: none, or the environment's.
    #[arg(
        long,
        env = "THINGPORT_PROXY",
        value_name = "URL",
        hide_env_values = true
    )]
    pub proxy: Option<String>,

    /// The first reconnect delay; each failed attempt doubles it up to --max-backoff, and each
    /// wait is a random pick between half the delay and the delay. A duration: 500ms, 2s, 1m, 1h
    /// (a bare number is seconds).
    #[arg(long, env = "THINGPORT_MIN_BACKOFF", value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub min_backoff: Duration,

    /// The largest reconnect delay (same syntax as --min-backoff). The delay starts again from
    /// --min-backoff once a connection has stayed up for 10 s.
    #[arg(long, env = "THINGPORT_MAX_BACKOFF", value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub max_backoff: Duration,

    /// Log format on stderr.
    #[arg(long, env = "THINGPORT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info` or `thingport_agent=debug` (RUST_LOG syntax).
    #[arg(
        long,
        env = "THINGPORT_LOG",
        value_name = "FILTER",
        default_value = "info"
    )]
    pub log: String,
}

impl Args {
    /// Validates the flags into a configuration. `env` reads the proxy variables
    /// (`HTTPS_PROXY`, `NO_PROXY`, ...): pass `|name| std::env::var(name).ok()`.
    pub fn into_config(
        self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<AgentConfig, ConfigError> {
        let app_key = AppKey::new(self.app_key)?;
        let mut config = AgentConfig::new(&self.url, app_key, self.things)?;
        config.allow = self.allow;
        config.disable_remote_access = self.disable_remote_access;
        config.max_sessions = self.max_sessions;
        if let Some(path) = &self.ca_file {
            config.tls.extra_roots = crate::tls::load_ca_file(path)?;
        }
        config.tls.insecure = self.insecure;
        config.proxy = crate::proxy::resolve(self.proxy.as_deref(), &config.url, env)?;
        config.min_backoff = self.min_backoff;
        config.max_backoff = self.max_backoff;
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<AgentConfig, String> {
        let mut argv = vec!["thingport-agent"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .into_config(|_| None)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn clap_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn a_full_command_line_becomes_a_config() {
        let c = parse(&[
            "--url=https://platform.example:8443",
            "--app-key=k-123",
            "--thing=a",
            "--thing=b,c",
            "--allow=127.0.0.1:22",
            "--allow=[::1]:5900",
            "--disable-remote-access",
            "--max-sessions=3",
            "--min-backoff=500ms",
            "--max-backoff=1m",
            "--proxy=http://u:p%40ss@proxy:3128",
        ])
        .unwrap();
        assert_eq!(c.things, ["a", "b", "c"]);
        assert_eq!(c.url.ws_url(), "wss://platform.example:8443/Thingworx/WS");
        assert_eq!(c.allow.len(), 2);
        assert_eq!(c.allow[1].to_string(), "[::1]:5900");
        assert!(c.disable_remote_access);
        assert_eq!(c.max_sessions, 3);
        assert_eq!(c.min_backoff, Duration::from_millis(500));
        assert_eq!(c.max_backoff, Duration::from_secs(60));
        let proxy = c.proxy.unwrap();
        assert_eq!(proxy.credentials, Some(("u".into(), "p@ss".into())));
        assert!(!format!("{proxy:?} {proxy}").contains("p@ss"));
        assert!(!format!("{:?}", c.app_key).contains("k-123"));
    }

    #[test]
    fn bad_configurations_are_refused_with_the_flag_named() {
        let base = ["--url=http://h", "--app-key=k", "--thing=t"];
        for (extra, needle) in [
            (&["--allow=h"][..], "HOST:PORT"),
            (&["--allow=h:0"], "port"),
            (&["--allow=::1:22"], "HOST:PORT"),
            (&["--min-backoff=2x"], "unknown unit"),
            (
                &["--min-backoff=0s"],
                "--min-backoff must be greater than 0",
            ),
            (&["--min-backoff=20s"], "must not exceed --max-backoff"),
            (&["--proxy=socks5://p:1080"], "only http:// proxies"),
            (&["--ca-file=/nonexistent/ca.pem"], "--ca-file"),
            (&["--thing=t"], "given twice"),
            (&["--max-sessions=0"], "--max-sessions must be from 1"),
            (&["--max-sessions=many"], "many"),
            (&["--log-format=xml"], "xml"),
        ] {
            let mut args = base.to_vec();
            args.extend_from_slice(extra);
            let err = parse(&args).unwrap_err();
            assert!(err.contains(needle), "{extra:?}: {err}");
        }
        assert!(parse(&["--url=wss://h", "--app-key=k", "--thing=t"])
            .unwrap_err()
            .contains("http:// or https://"));
        assert!(parse(&["--url=http://h", "--app-key=k"])
            .unwrap_err()
            .contains("--thing"));
        assert!(parse(&["--url=http://h", "--app-key=", "--thing=t"])
            .unwrap_err()
            .contains("--app-key"));
    }

    #[test]
    fn help_documents_every_flag_and_default() {
        let help = Args::command().render_long_help().to_string();
        for flag in [
            "--url",
            "--app-key",
            "--thing",
            "--allow",
            "--disable-remote-access",
            "--max-sessions",
            "THINGPORT_MAX_SESSIONS",
            "[default: 64]",
            "Properties/endpoints",
            "--ca-file",
            "--insecure",
            "--proxy",
            "--min-backoff",
            "--max-backoff",
            "--log-format",
            "--log ",
            "THINGPORT_APP_KEY",
            "[default: 1s]",
            "[default: 15s]",
            "[default: info]",
            "tunnel to",
        ] {
            assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
        }
    }
}
