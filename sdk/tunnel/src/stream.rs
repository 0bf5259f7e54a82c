//! One stream's side of the multiplexer: its send credit, and the pump that moves bytes between
//! the local connection and the tunnel (reads straight behind a frame header, `CREDIT` after
//! each write to the local side).

use crate::{Shared, TunnelError};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use thingport_protocol::tunnel::{
    credit_frame, header, reason_frame, write_frame, Kind, HEADER_LEN, INITIAL_WINDOW, MAX_DATA,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// Consumed bytes gathered before they are granted back with a `CREDIT`.
const CREDIT_BATCH: u32 = INITIAL_WINDOW / 4;

/// Send credit of one stream: bytes the peer has allowed us to send.
pub(crate) struct Credit {
    avail: AtomicU32,
    notify: Notify,
}

impl Credit {
    pub(crate) fn new() -> Credit {
        Credit {
            avail: AtomicU32::new(INITIAL_WINDOW),
            notify: Notify::new(),
        }
    }
    pub(crate) fn grant(&self, n: u32) {
        self.avail.fetch_add(n, Ordering::AcqRel);
        self.notify.notify_one();
    }
    /// Takes up to `max` bytes of credit, waiting until there is some.
    async fn take(&self, max: u32) -> u32 {
        loop {
            let notified = self.notify.notified();
            let cur = self.avail.load(Ordering::Acquire);
            if cur > 0 {
                let n = cur.min(max);
                if self
                    .avail
                    .compare_exchange(cur, cur - n, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return n;
                }
                continue;
            }
            notified.await;
        }
    }
    fn give_back(&self, n: u32) {
        if n > 0 {
            self.grant(n);
        }
    }
}

/// A stream's half of the state, owned by its pump.
pub(crate) struct StreamState {
    pub(crate) id: u32,
    pub(crate) inbound: mpsc::UnboundedReceiver<Bytes>,
    pub(crate) queued: Arc<AtomicU32>,
    pub(crate) credit: Arc<Credit>,
    pub(crate) cancel: Arc<Notify>,
}

/// Moves bytes between a local connection and a stream until both directions are done (or the
/// stream is reset, or the tunnel closes).
pub(crate) async fn pump<R, W>(
    shared: &Arc<Shared>,
    st: StreamState,
    mut rd: R,
    mut wr: W,
) -> Result<(), TunnelError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let StreamState {
        id,
        mut inbound,
        queued,
        credit,
        cancel,
    } = st;
    let upstream = async {
        loop {
            let allowed = credit.take(MAX_DATA as u32).await as usize;
            // The header first, then the payload read straight behind it (no zero-filling, no
            // copy): the buffer becomes the message.
            let mut frame = Vec::with_capacity(HEADER_LEN + allowed);
            frame.extend_from_slice(&header(Kind::Data, id));
            let n = (&mut rd).take(allowed as u64).read_buf(&mut frame).await?;
            credit.give_back((allowed - n) as u32);
            if n == 0 {
                let mut fin = Vec::with_capacity(HEADER_LEN);
                write_frame(&mut fin, Kind::Fin, id, &[]);
                return shared.send(fin).await;
            }
            shared.send(frame).await?;
        }
    };
    let downstream = async {
        // Credit is returned in batches of at least `CREDIT_BATCH` bytes (the sender keeps at
        // least three quarters of its window meanwhile), and for everything written at once:
        // small exchanges then cost no `CREDIT` frame each way.
        let mut consumed = 0u32;
        while let Some(payload) = inbound.recv().await {
            wr.write_all(&payload).await?;
            let mut n = payload.len() as u32;
            while let Ok(more) = inbound.try_recv() {
                wr.write_all(&more).await?;
                n += more.len() as u32;
            }
            // A no-op for sockets; buffered writers (stdout) must pass the bytes on now.
            wr.flush().await?;
            queued.fetch_sub(n, Ordering::AcqRel);
            consumed += n;
            if consumed >= CREDIT_BATCH {
                let frame = credit_frame(id, consumed);
                consumed = 0;
                shared
                    .out
                    .send(Message::Binary(Bytes::copy_from_slice(&frame)))
                    .await
                    .map_err(|_| TunnelError::Closed)?;
            }
        }
        // FIN from the peer: half-close the local socket.
        wr.shutdown().await?;
        Ok::<(), TunnelError>(())
    };
    let r = tokio::select! {
        r = async { tokio::try_join!(upstream, downstream).map(drop) } => r,
        _ = cancel.notified() => return Err(TunnelError::Reset("reset by the peer or the tunnel closed".into())),
    };
    shared.forget(id);
    if let Err(e) = &r {
        let _ = shared
            .send(reason_frame(Kind::Reset, id, &e.to_string()))
            .await;
    }
    r
}
