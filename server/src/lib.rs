//! The Thingport host platform (`thingport-server`): the entity model (shapes, templates,
//! Things, data shapes), users, groups, organizations and application keys, ThingWorx
//! permission semantics, the ThingWorx-compatible REST API, persistence and the audit trail.
//!
//! It is not the tunnel path: tunnel bytes never pass through this crate (see `gas/` and the
//! agent in `sdk/`). [`run`] is the whole server as a library function; `main.rs` only parses
//! flags and calls it, and tests drive the binary over HTTP.

pub mod api;
pub mod audit;
pub mod bootstrap;
pub mod config;
pub mod error;
pub mod extensions;
pub mod metrics;
pub mod model;
pub mod platform;
pub mod security;
pub mod serve;
pub mod services;
pub mod store;
pub mod web;

#[cfg(test)]
mod proptests;

use anyhow::Context;
use std::future::Future;
use std::io::Write as _;
use std::sync::Arc;

/// Opens the data directory, loads the model, bootstraps, and serves until `shutdown`.
pub async fn run(config: config::Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    run_with_ready(config, shutdown, |_| {}).await
}

/// [`run`], calling `ready` with the bound address once the server accepts requests (for
/// embedders that listen on port 0, such as `thingport up`).
pub async fn run_with_ready(
    config: config::Config,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(std::net::SocketAddr),
) -> anyhow::Result<()> {
    config.validate()?;
    let db_path = config.database_path()?;
    let _lock = lock_data_dir(&config.data_dir)?;
    let db_dir = db_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(db_dir)
        .with_context(|| format!("failed to create {}", db_dir.display()))?;
    let key_file = config
        .secrets_key_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join("secrets.key"));
    // Loaded (or created) before the database is touched: a bad key file leaves nothing behind.
    let vault = Arc::new(
        security::vault::Vault::load_or_create(&key_file)
            .with_context(|| format!("--secrets-key-file {}", key_file.display()))?,
    );
    let store = store::Store::open_file(&db_path)
        .await
        .context("failed to open the database")?;
    let platform = Arc::new(
        platform::Platform::load(store.clone())
            .await
            .context("failed to load the model")?,
    );
    let outcome = bootstrap::ensure(&platform, config.admin_password.as_deref())
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap failed: {}", e.message))?;
    if outcome.created_admin {
        tracing::info!(
            user = security::ADMINISTRATOR,
            "created the built-in administrator"
        );
    }
    if let Some(pw) = &outcome.generated_password {
        // Shown once, on stdout only (never in the log).
        println!(
            "created user {} with the generated password: {pw}",
            security::ADMINISTRATOR
        );
        println!("(shown once; change it with the SetPassword service)");
    }
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => Some(serve::tls_acceptor(c, k)?),
        _ => None,
    };
    let trusted_keys =
        match &config.trusted_extension_keys {
            Some(path) => Some(extensions::package::TrustedKeys::load(path).with_context(
                || format!("failed to read --trusted-extension-keys {}", path.display()),
            )?),
            None => None,
        };
    let verify = extensions::package::VerifyOptions {
        trusted_keys,
        ..Default::default()
    };
    platform.set_vault(vault);
    let bridge =
        extensions::bridge::PlatformBridge::new(&platform, tokio::runtime::Handle::current());
    let exts = Arc::new(extensions::registry::Extensions::new(
        &config.data_dir,
        verify,
        std::time::Duration::from_secs(config.extension_call_timeout),
        bridge,
    ));
    platform.set_extensions(exts.clone());
    // Installed extensions load before the server answers any request.
    exts.load_all(&platform)
        .await
        .context("failed to read the installed extension packages")?;
    let state = api::AppState::new(
        platform.clone(),
        usize::try_from(config.max_body_bytes).unwrap_or(usize::MAX),
        usize::try_from(config.max_upload_bytes).unwrap_or(usize::MAX),
        config.request_timeout(),
        tls.is_some(),
    );
    let open = state.metrics.open_connections.clone();
    let app = api::router(state);
    let listener = serve::bind(config.listen)?;
    let addr = listener
        .local_addr()
        .context("failed to read the bound address")?;
    tracing::info!(%addr, tls = tls.is_some(), data_dir = %config.data_dir.display(), "thingport-server ready");
    println!("listening on {addr}");
    let _ = std::io::stdout().flush();
    ready(addr);
    // WebSocket connections left hyper at their upgrade: they are closed (1001) when the
    // shutdown starts, alongside the drain of plain requests.
    let hub = exts.connections().clone();
    let shutdown = async move {
        shutdown.await;
        hub.begin_shutdown();
    };
    serve::serve(listener, app, tls, shutdown, open).await;
    exts.shutdown().await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Creates the data directory (0700) and takes an exclusive lock on it for the process's life.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("failed to create the data directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let path = dir.join("LOCK");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("failed to open {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => {
            anyhow::bail!(
                "data directory {} is in use by another thingport-server",
                dir.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("failed to lock {}", path.display()))
        }
    }
}
