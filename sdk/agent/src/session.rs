//! Remote sessions: a `startSession` order from the platform makes the agent connect to a Global
//! Access Server with the order's credential and carry the session's TCP connections to the
//! endpoint, one dial per tunnelled connection (`thingport_tunnel`, role `Agent`).
//!
//! The agent dials only what it may: never anything when `--disable-remote-access` is set, and
//! only endpoints on its `--allow` list when one is given (both answer `SESSION_DENIED`). Without
//! `--allow`, the endpoint is the one the platform's order names (the platform sends only
//! endpoints defined on the Thing). Sessions live on their own: a control channel that reconnects
//! does not end them.

use crate::config::{AgentConfig, Endpoint};
use crate::transport::{self, Upgrade};
use crate::url::PlatformUrl;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use thingport_protocol::control::{codes, ErrorInfo};
use thingport_protocol::tunnel;
use thingport_tunnel::{Dial, Mux, Role};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::{info, warn};

/// How long one dial of the endpoint may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The body of a `startSession` request.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionOrder {
    pub session: String,
    /// The GAS's public URL (`http(s)://host:port`); the tunnel path is added.
    pub gas_url: String,
    /// The agent side's credential for this session on that GAS.
    pub credential: String,
    pub endpoint: OrderEndpoint,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrderEndpoint {
    pub host: String,
    pub port: u16,
    #[serde(default)]
    pub name: String,
}

/// Checks an order against the agent's configuration; `Ok` is what to start.
pub fn accept(
    config: &AgentConfig,
    body: &Value,
) -> Result<(SessionOrder, PlatformUrl), ErrorInfo> {
    let order: SessionOrder = serde_json::from_value(body.clone()).map_err(|e| {
        ErrorInfo::new(
            codes::FAILED,
            format!("not a valid startSession order: {e}"),
        )
    })?;
    if config.disable_remote_access {
        return Err(ErrorInfo::new(
            codes::SESSION_DENIED,
            "remote access is disabled on this agent (--disable-remote-access)",
        ));
    }
    let wanted = Endpoint {
        host: order.endpoint.host.to_ascii_lowercase(),
        port: order.endpoint.port,
    };
    if !config.allow.is_empty() && !config.allow.contains(&wanted) {
        return Err(ErrorInfo::new(
            codes::SESSION_DENIED,
            format!("endpoint {wanted} is not in this agent's --allow list"),
        ));
    }
    let mut url = PlatformUrl::parse(&order.gas_url).map_err(|e| {
        ErrorInfo::new(
            codes::FAILED,
            format!("the order's GAS URL is not usable: {e}"),
        )
    })?;
    url.path = tunnel::PATH.into();
    if order.credential.len() > tunnel::MAX_CREDENTIAL
        || HeaderValue::from_str(&format!("Bearer {}", order.credential)).is_err()
    {
        return Err(ErrorInfo::new(
            codes::FAILED,
            "the order's credential is malformed",
        ));
    }
    Ok((order, url))
}

/// Runs an accepted session in its own task until the GAS or the peer ends it.
pub fn spawn(config: AgentConfig, order: SessionOrder, url: PlatformUrl) {
    tokio::spawn(async move {
        let session = order.session.clone();
        match run(config, order, url).await {
            Ok(()) => info!(%session, "remote session ended"),
            Err(e) => warn!(%session, error = %format!("{e:#}"), "remote session failed"),
        }
    });
}

async fn run(config: AgentConfig, order: SessionOrder, url: PlatformUrl) -> anyhow::Result<()> {
    let tls = if url.tls {
        Some(crate::tls::client_config(&config.tls)?)
    } else {
        None
    };
    let bearer = HeaderValue::from_str(&format!("Bearer {}", order.credential))?;
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(64 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(tunnel::MAX_FRAME))
        .max_frame_size(Some(tunnel::MAX_FRAME));
    let ws = transport::open(
        &config,
        tls.as_ref(),
        Upgrade {
            url: &url,
            headers: vec![("Authorization", bearer)],
            subprotocol: tunnel::SUBPROTOCOL_V1,
            ws_config,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot reach the GAS {}: {e}", url.authority()))?;
    info!(
        session = %order.session,
        gas = %url.authority(),
        endpoint = %format!("{}:{}", order.endpoint.host, order.endpoint.port),
        name = %order.endpoint.name,
        "remote session attached to the GAS"
    );
    let target = (order.endpoint.host.clone(), order.endpoint.port);
    let dial: Dial = Arc::new(move || {
        let target = target.clone();
        Box::pin(async move {
            tokio::time::timeout(
                DIAL_TIMEOUT,
                TcpStream::connect((target.0.as_str(), target.1)),
            )
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting to {}:{} timed out", target.0, target.1),
                )
            })?
        })
    });
    let (_mux, done) = Mux::start(ws, Role::Agent { dial });
    done.await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::accept;
    use crate::cli::Args;
    use clap::Parser;
    use serde_json::json;
    use thingport_protocol::control::codes;

    fn config(extra: &[&str]) -> crate::AgentConfig {
        let mut argv = vec![
            "thingport-agent",
            "--url=http://p:8080",
            "--app-key=k",
            "--thing=t",
        ];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv)
            .unwrap()
            .into_config(|_| None)
            .unwrap()
    }

    fn order(host: &str, port: u16) -> serde_json::Value {
        json!({"session": "s", "gasUrl": "https://gas.example:8443", "credential": "v1.a.b",
               "endpoint": {"host": host, "port": port, "name": "ssh"}})
    }

    #[test]
    fn orders_are_checked_against_the_configuration() {
        let (o, url) = accept(&config(&[]), &order("10.0.0.5", 22)).unwrap();
        assert_eq!((o.endpoint.port, url.path.as_str()), (22, "/tunnel"));
        assert!(url.tls);
        let allowed = config(&["--allow=10.0.0.5:22"]);
        assert!(accept(&allowed, &order("10.0.0.5", 22)).is_ok());
        assert_eq!(
            accept(&allowed, &order("10.0.0.5", 23)).unwrap_err().code,
            codes::SESSION_DENIED
        );
        let off = config(&["--disable-remote-access"]);
        assert_eq!(
            accept(&off, &order("10.0.0.5", 22)).unwrap_err().code,
            codes::SESSION_DENIED
        );
        for bad in [
            json!({}),
            json!({"session": "s", "gasUrl": "ftp://x", "credential": "c",
                   "endpoint": {"host": "h", "port": 1}}),
            json!({"session": "s", "gasUrl": "http://g", "credential": "bad\nvalue",
                   "endpoint": {"host": "h", "port": 1}}),
        ] {
            assert_eq!(accept(&config(&[]), &bad).unwrap_err().code, codes::FAILED);
        }
    }
}
