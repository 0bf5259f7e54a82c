//! The rustls client configuration (`thingport-tls`: the ring provider, webpki roots plus
//! `--ca-file`, ALPN `http/1.1`, the `--insecure` verifier), with the agent's errors.

use crate::config::{ConfigError, TlsOptions};
use rustls::pki_types::CertificateDer;
use rustls::ClientConfig;
use std::path::Path;
use std::sync::Arc;

/// Reads every certificate of a PEM file (`--ca-file`), checked as trust anchors.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    thingport_tls::load_ca_file(path).map_err(ConfigError::new)
}

/// Builds the client configuration used for every `https://` connection.
pub fn client_config(options: &TlsOptions) -> anyhow::Result<Arc<ClientConfig>> {
    Ok(Arc::new(thingport_tls::client_config(
        &options.extra_roots,
        options.insecure,
    )?))
}
