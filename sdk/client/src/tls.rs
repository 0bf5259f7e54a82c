//! The rustls client configuration shared by the REST calls (`https://` platforms) and the tunnel
//! WebSocket (`wss://` GAS): the ring provider, the webpki roots plus `--ca-file`, ALPN
//! `http/1.1`, and the `--insecure` verifier (development only) that accepts any certificate.

use anyhow::Context as _;
use rustls::ClientConfig;
use std::path::PathBuf;
use std::sync::Arc;

/// How certificates are checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// A PEM file of extra trust anchors (`--ca-file`), added to the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (`--insecure`).
    pub insecure: bool,
}

/// Builds the client configuration from the options, reading `--ca-file` (`thingport-tls`:
/// ring, the webpki roots plus the file's certificates, the `--insecure` verifier).
pub fn client_config(options: &TlsOptions) -> anyhow::Result<Arc<ClientConfig>> {
    let extra = match &options.ca_file {
        Some(path) => thingport_tls::load_ca_file(path).map_err(anyhow::Error::msg)?,
        None => Vec::new(),
    };
    let config =
        thingport_tls::client_config(&extra, options.insecure).context("failed to set up TLS")?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ca_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = client_config(&TlsOptions {
            ca_file: Some(missing),
            insecure: false,
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("cannot read it"), "{e:#}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        let e = client_config(&TlsOptions {
            ca_file: Some(empty),
            insecure: false,
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("no CERTIFICATE"), "{e:#}");
        assert!(client_config(&TlsOptions::default()).is_ok());
        assert!(client_config(&TlsOptions {
            ca_file: None,
            insecure: true
        })
        .is_ok());
    }
}
