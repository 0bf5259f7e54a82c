//! The HTTP(S) listener: accepts connections with a deep backlog, optionally terminates TLS,
//! serves the API with hyper (header read timeout against slow clients), and drains on shutdown.

use crate::api::auth::Peer;
use anyhow::Context;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Pending connections the kernel queues before `accept` (a burst must not be dropped).
const BACKLOG: u32 = 4096;
/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long live requests get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds a listening socket with a deep accept backlog.
pub fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .context("failed to create a socket")?;
    socket
        .set_reuseaddr(true)
        .context("failed to set SO_REUSEADDR")?;
    socket
        .bind(addr)
        .with_context(|| format!("failed to bind {addr}"))?;
    socket
        .listen(BACKLOG)
        .with_context(|| format!("failed to listen on {addr}"))
}

/// Loads a PEM certificate chain and private key into a TLS acceptor.
pub fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("failed to read the TLS certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("failed to parse the TLS certificate {}", cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "no certificate found in {}",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("failed to read a private key from {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("failed to configure TLS")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not form a valid pair")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains.
///
/// Connections may be upgraded (the extensions' WebSocket routes); an upgraded connection leaves
/// hyper and is tracked by [`crate::extensions::connections`], which closes it at shutdown.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    open: prometheus_client::metrics::gauge::Gauge,
) {
    // `draining` tells every connection to finish its current request and close; each
    // connection task holds a clone of `alive`, so `all_done` ends when the last one finished.
    let (draining, _) = tokio::sync::watch::channel(false);
    let (alive, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let svc =
            TowerToHyperService::new(app.map_request(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(Peer(peer));
                req
            }));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true);
        let draining = draining.subscribe();
        let alive = alive.clone();
        let tls = tls.clone();
        let open = open.clone();
        tokio::spawn(async move {
            open.inc();
            let result = match tls {
                None => serve_one(&builder, TokioIo::new(stream), svc, draining).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(s)) => serve_one(&builder, TokioIo::new(s), svc, draining).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            open.dec();
            drop(alive);
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining open connections");
    let _ = draining.send(true);
    drop(alive);
    if tokio::time::timeout(DRAIN_TIMEOUT, all_done.recv())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?DRAIN_TIMEOUT, "some connections were still open at the end of the drain");
    }
}

/// Serves one connection (with upgrades) until it ends; once `draining` turns true, lets the
/// request in flight finish and closes.
async fn serve_one<I, S>(
    builder: &hyper::server::conn::http1::Builder,
    io: I,
    svc: S,
    mut draining: tokio::sync::watch::Receiver<bool>,
) -> hyper::Result<()>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming> + Send,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    <S::ResBody as hyper::body::Body>::Data: Send,
    S::Future: Send,
{
    let conn = builder.serve_connection(io, svc).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = async { draining.wait_for(|d| *d).await.map(drop) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}
