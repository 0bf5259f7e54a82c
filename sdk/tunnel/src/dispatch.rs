//! The reader's side of the multiplexer: each frame from the peer routed to its stream (data to
//! the stream's queue, credit to its sender, opens answered by dialling on the agent).

use crate::stream::{pump, Credit, StreamState};
use crate::{lock, Entry, Role, Shared};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use thingport_protocol::tunnel::{
    reason_frame, write_frame, Frame, Kind, HEADER_LEN, INITIAL_WINDOW,
};
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Bytes;

/// Routes one frame from the peer.
pub(crate) async fn dispatch(shared: &Arc<Shared>, role: &Role, bytes: Bytes) {
    let frame = match Frame::parse(&bytes) {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(error = %e, "invalid tunnel frame ignored");
            return;
        }
    };
    let id = frame.stream;
    match frame.kind {
        Kind::Data => {
            let len = frame.payload.len() as u32;
            let violation = {
                let streams = lock(&shared.streams);
                match streams.get(&id) {
                    Some(Entry {
                        inbound: Some(tx),
                        queued,
                        ..
                    }) => {
                        if queued.fetch_add(len, Ordering::AcqRel) + len > INITIAL_WINDOW {
                            true
                        } else {
                            // The payload is a view of the received message: no copy.
                            let _ = tx.send(bytes.slice(HEADER_LEN..));
                            false
                        }
                    }
                    _ => false, // a stream we no longer know: late data, dropped
                }
            };
            if violation {
                reset(shared, id, "the peer sent more than its window").await;
            }
        }
        Kind::Credit => {
            if let Some(e) = lock(&shared.streams).get(&id) {
                e.credit.grant(frame.credit());
            }
        }
        Kind::Fin => {
            if let Some(e) = lock(&shared.streams).get_mut(&id) {
                e.inbound = None;
            }
        }
        Kind::Reset => {
            if let Some(mut e) = shared.remove(id) {
                e.cancel.notify_one();
                if let Some(o) = e.opened.take() {
                    let _ = o.send(Err(frame.reason()));
                }
            }
        }
        Kind::Opened | Kind::OpenFailed => {
            let opened = lock(&shared.streams)
                .get_mut(&id)
                .and_then(|e| e.opened.take());
            if let Some(o) = opened {
                let _ = o.send(if frame.kind == Kind::Opened {
                    Ok(())
                } else {
                    Err(frame.reason())
                });
            }
        }
        Kind::Open => {
            let Role::Agent { dial } = role else {
                return; // only the agent accepts streams
            };
            let (known, open) = {
                let streams = lock(&shared.streams);
                (streams.contains_key(&id), streams.len())
            };
            if known {
                return reset(shared, id, "stream already open").await;
            }
            if open >= crate::MAX_STREAMS {
                // Each stream is a socket on the gateway: a session cannot exhaust its file
                // descriptors (and with them the agent's control channel and other sessions).
                let _ = shared
                    .send(reason_frame(
                        Kind::OpenFailed,
                        id,
                        &format!(
                            "too many connections in this session (at most {})",
                            crate::MAX_STREAMS
                        ),
                    ))
                    .await;
                return;
            }
            let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
            let queued = Arc::new(AtomicU32::new(0));
            let credit = Arc::new(Credit::new());
            let cancel = Arc::new(Notify::new());
            lock(&shared.streams).insert(
                id,
                Entry {
                    inbound: Some(inbound_tx),
                    queued: queued.clone(),
                    credit: credit.clone(),
                    opened: None,
                    cancel: cancel.clone(),
                },
            );
            let (shared2, dial) = (shared.clone(), dial.clone());
            tokio::spawn(async move {
                let local = match dial().await {
                    Ok(s) => s,
                    Err(e) => {
                        shared2.forget(id);
                        let _ = shared2
                            .send(reason_frame(Kind::OpenFailed, id, &e.to_string()))
                            .await;
                        return;
                    }
                };
                let mut ok = Vec::with_capacity(HEADER_LEN);
                write_frame(&mut ok, Kind::Opened, id, &[]);
                if shared2.send(ok).await.is_err() {
                    return;
                }
                let stream = StreamState {
                    id,
                    inbound: inbound_rx,
                    queued,
                    credit,
                    cancel,
                };
                let _ = local.set_nodelay(true);
                let (rd, wr) = local.into_split();
                if let Err(e) = pump(&shared2, stream, rd, wr).await {
                    tracing::debug!(stream = id, error = %e, "stream ended with an error");
                }
            });
        }
    }
}

pub(crate) async fn reset(shared: &Arc<Shared>, id: u32, why: &str) {
    if let Some(e) = shared.remove(id) {
        e.cancel.notify_one();
    }
    let _ = shared.send(reason_frame(Kind::Reset, id, why)).await;
}
