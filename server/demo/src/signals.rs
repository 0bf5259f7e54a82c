//! The signals that stop `thingport up`.

use anyhow::Context as _;

/// Ctrl-C, SIGTERM and SIGHUP, registered when created (a signal that comes before
/// [`Signals::recv`] is polled is kept).
pub struct Signals {
    #[cfg(unix)]
    streams: Vec<(tokio::signal::unix::Signal, &'static str)>,
}

impl Signals {
    #[cfg(unix)]
    pub fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut streams = Vec::new();
        for (kind, name) in [
            (SignalKind::interrupt(), "interrupt"),
            (SignalKind::terminate(), "SIGTERM"),
            (SignalKind::hangup(), "SIGHUP"),
        ] {
            let s = signal(kind).with_context(|| format!("cannot handle {name}"))?;
            streams.push((s, name));
        }
        Ok(Signals { streams })
    }

    #[cfg(not(unix))]
    pub fn install() -> anyhow::Result<Signals> {
        Ok(Signals {})
    }

    /// Waits for the next signal and names it.
    #[cfg(unix)]
    pub async fn recv(&mut self) -> &'static str {
        let waits = self.streams.iter_mut().map(|(s, name)| {
            let name: &'static str = name;
            Box::pin(async move {
                s.recv().await;
                name
            })
        });
        futures_util::future::select_all(waits).await.0
    }

    #[cfg(not(unix))]
    pub async fn recv(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "interrupt"
    }
}
