//! One side of a session, from its attach to its close: a reader that forwards each binary
//! message of this side to the other side's queue (checking only the 5-byte header), a writer
//! that sends what the other side forwarded (and the keepalive pings), both in this side's task,
//! and the close that ends it.
//!
//! The hot path is `read_loop` and `write_loop`: the `Bytes` tungstenite hands over is forwarded
//! as is (no copy, no allocation of ours), no lock is taken, and a full queue stops the reader
//! (backpressure) instead of buffering.

use crate::relay::{Relay, RelayPhase};
use crate::table::{Ends, Phase, Session};
use crate::{other, role_name, EndCause, Role};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thingport_protocol::tunnel::{Frame, FrameError, Kind};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

type Sink<S> = SplitSink<WebSocketStream<S>, Message>;
type Stream<S> = SplitStream<WebSocketStream<S>>;

/// Why the reader stopped.
#[derive(Debug)]
enum ReadEnd {
    /// This side sent a close frame.
    Closed,
    /// This side's connection failed or ended without a close.
    Lost(String),
    /// Nothing arrived from this side for the idle timeout.
    Silent,
    /// A binary message that is not a valid frame.
    Invalid(FrameError),
    /// A text message.
    Text,
    /// A message larger than a frame can be.
    TooBig(usize),
    /// A WebSocket protocol violation (unmasked frame, bad opcode, ...).
    Protocol(String),
    /// The other side's queue is gone: its task finished.
    PeerGone,
}

/// Why the writer stopped.
#[derive(Debug)]
enum WriteEnd {
    /// The other side's reader is gone and everything it forwarded was written.
    Drained,
    /// Writing to this side failed.
    Failed(String),
}

/// How the main loop of a side ended.
#[derive(Debug)]
enum Outcome {
    Read(ReadEnd),
    WriteFailed(String),
    /// The other side ended the session; what it had forwarded was written (or the close timeout
    /// passed).
    PartnerEnded,
    NotPaired,
    Shutdown,
    /// The platform ended the session: both sides close at once.
    EndedByPlatform,
}

/// Serves one attached side until its session ends, then closes it.
pub(crate) async fn run<S>(
    relay: &Relay,
    ws: WebSocketStream<S>,
    session: Arc<Session>,
    role: Role,
    ends: Ends,
    wait_until: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = &relay.config;
    let (mut sink, mut stream) = ws.split();
    let mut phase = session.phase.subscribe();
    let mut relay_state = relay.state.subscribe();
    let mut data_bytes = 0u64;
    let Ends { to_peer, from_peer } = ends;

    let outcome = {
        let live = &session.live[crate::index(role)];
        let reader = read_loop(
            &mut stream,
            to_peer,
            &mut data_bytes,
            live,
            config.idle_timeout,
        );
        let writer = write_loop(&mut sink, from_peer, config.ping_interval);
        let pairing = sleep_until(wait_until);
        tokio::pin!(reader, writer, pairing);
        let mut paired = false;
        loop {
            let now = *phase.borrow_and_update();
            match now {
                Phase::Waiting => {}
                Phase::Paired => paired = true,
                Phase::Ended if session.cause() == Some(EndCause::EndedByPlatform) => {
                    break Outcome::EndedByPlatform;
                }
                Phase::Ended => {
                    // Deliver what the other side sent before it went, then close.
                    let _ = tokio::time::timeout(config.close_timeout, &mut writer).await;
                    break Outcome::PartnerEnded;
                }
            }
            let relay_now = *relay_state.borrow_and_update();
            match relay_now {
                RelayPhase::Running => {}
                // A lone side cannot be paired any more (nothing new is admitted).
                RelayPhase::Draining if paired => {}
                RelayPhase::Draining | RelayPhase::Closing => break Outcome::Shutdown,
            }
            tokio::select! {
                biased;
                end = &mut reader => {
                    if let ReadEnd::PeerGone = end {
                        let _ = tokio::time::timeout(config.close_timeout, &mut writer).await;
                        break Outcome::PartnerEnded;
                    }
                    break Outcome::Read(end);
                }
                end = &mut writer => match end {
                    WriteEnd::Drained => break Outcome::PartnerEnded,
                    WriteEnd::Failed(e) => break Outcome::WriteFailed(e),
                },
                _ = phase.changed() => {}
                _ = relay_state.changed() => {}
                () = &mut pairing, if !paired => {
                    if relay.give_up(&session) {
                        break Outcome::NotPaired;
                    }
                    // The other side attached at the last moment: the loop sees it paired.
                }
            }
        }
    };
    // The reader and the writer are gone with their queue ends: the other side's writer drains
    // what this side forwarded and sees the end.

    let (cause, close) = match outcome {
        Outcome::Read(ReadEnd::Closed) => (EndCause::Closed(role), None),
        Outcome::Read(ReadEnd::Lost(error)) => {
            debug!(%error, "connection lost");
            (EndCause::Lost(role), None)
        }
        Outcome::WriteFailed(error) => {
            debug!(%error, "write failed");
            (EndCause::Lost(role), None)
        }
        Outcome::Read(ReadEnd::Silent) => (
            EndCause::Silent(role),
            Some(frame(
                CloseCode::Away,
                format!("nothing received for {:?}", config.idle_timeout),
            )),
        ),
        Outcome::Read(ReadEnd::Invalid(e)) => {
            let why = e.to_string();
            let close = frame(CloseCode::Protocol, format!("invalid frame: {why}"));
            (EndCause::Protocol(role, why), Some(close))
        }
        Outcome::Read(ReadEnd::Text) => (
            EndCause::Protocol(role, "a text message".into()),
            Some(frame(
                CloseCode::Unsupported,
                "tunnel frames are binary messages".into(),
            )),
        ),
        Outcome::Read(ReadEnd::TooBig(size)) => (
            EndCause::Protocol(role, format!("a message of {size} bytes")),
            Some(frame(
                CloseCode::Size,
                format!("a message of {size} bytes exceeds a frame"),
            )),
        ),
        Outcome::Read(ReadEnd::Protocol(why)) => (
            EndCause::Protocol(role, why.clone()),
            Some(frame(CloseCode::Protocol, why)),
        ),
        Outcome::Read(ReadEnd::PeerGone) | Outcome::PartnerEnded => {
            // The other side ended it (its cause is recorded; this is a fallback).
            relay.end(&session, EndCause::Closed(other(role)));
            let cause = session.cause().unwrap_or(EndCause::Closed(other(role)));
            let close = partner_close(&cause);
            (cause, Some(close))
        }
        Outcome::NotPaired => (
            EndCause::NotPaired,
            Some(frame(
                CloseCode::Policy,
                "the other side did not attach".into(),
            )),
        ),
        Outcome::Shutdown => (
            EndCause::Shutdown,
            Some(frame(CloseCode::Away, "GAS shutting down".into())),
        ),
        Outcome::EndedByPlatform => (
            EndCause::EndedByPlatform,
            Some(partner_close(&EndCause::EndedByPlatform)),
        ),
    };
    relay.end(&session, cause.clone());
    match cause {
        // Nothing to say to a broken connection.
        EndCause::Lost(r) if r == role => {}
        // A silent side gets the close frame but is not waited for.
        EndCause::Silent(r) if r == role => {
            let _ = tokio::time::timeout(config.close_timeout, async {
                let _ = sink.send(Message::Close(close)).await;
            })
            .await;
        }
        _ => close_side(&mut sink, &mut stream, close, config.close_timeout).await,
    }
    debug!(cause = %cause, data_bytes, "side closed");
    relay.side_done(&session, role, data_bytes);
}

/// Reads this side's messages and forwards its frames to the other side's queue.
async fn read_loop<S>(
    stream: &mut Stream<S>,
    to_peer: mpsc::Sender<Bytes>,
    data_bytes: &mut u64,
    live: &AtomicU64,
    idle: Duration,
) -> ReadEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut last = Instant::now();
    let silence = sleep_until(last + idle);
    tokio::pin!(silence);
    loop {
        let message = tokio::select! {
            biased;
            m = stream.next() => m,
            () = &mut silence => {
                // The timer is re-armed lazily, not per message.
                let quiet_until = last + idle;
                if Instant::now() >= quiet_until {
                    return ReadEnd::Silent;
                }
                silence.as_mut().reset(quiet_until);
                continue;
            }
        };
        last = Instant::now();
        let bytes = match message {
            Some(Ok(Message::Binary(bytes))) => bytes,
            // Pongs answer our pings (and count as life); pings are answered by tungstenite.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Text(_))) => return ReadEnd::Text,
            Some(Ok(Message::Close(_))) => return ReadEnd::Closed,
            Some(Err(e)) => return classify(e),
            None => return ReadEnd::Lost("the connection ended".into()),
        };
        match Frame::parse(&bytes) {
            Ok(f) if f.kind == Kind::Data => {
                *data_bytes += f.payload.len() as u64;
                // This reader is the counter's only writer: a plain store, no read-modify-write.
                live.store(*data_bytes, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => return ReadEnd::Invalid(e),
        }
        if to_peer.send(bytes).await.is_err() {
            return ReadEnd::PeerGone;
        }
    }
}

fn classify(error: WsError) -> ReadEnd {
    match error {
        WsError::Capacity(CapacityError::MessageTooLong { size, .. }) => ReadEnd::TooBig(size),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            ReadEnd::Lost("reset without a close".into())
        }
        WsError::Protocol(e) => ReadEnd::Protocol(e.to_string()),
        WsError::Capacity(e) => ReadEnd::Protocol(e.to_string()),
        WsError::Utf8(e) => ReadEnd::Protocol(format!("invalid UTF-8: {e}")),
        e => ReadEnd::Lost(e.to_string()),
    }
}

/// Writes what the other side forwarded, and a ping whenever this side's queue was quiet for the
/// ping interval. Queued messages are written together and flushed once.
async fn write_loop<S>(
    sink: &mut Sink<S>,
    mut from_peer: mpsc::Receiver<Bytes>,
    ping_every: Duration,
) -> WriteEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let message = tokio::select! {
            biased;
            next = from_peer.recv() => match next {
                Some(bytes) => Message::Binary(bytes),
                None => return WriteEnd::Drained,
            },
            _ = ping.tick() => Message::Ping(Bytes::new()),
        };
        if let Err(e) = sink.feed(message).await {
            return WriteEnd::Failed(e.to_string());
        }
        while let Ok(bytes) = from_peer.try_recv() {
            if let Err(e) = sink.feed(Message::Binary(bytes)).await {
                return WriteEnd::Failed(e.to_string());
            }
        }
        if let Err(e) = sink.flush().await {
            return WriteEnd::Failed(e.to_string());
        }
    }
}

/// The close a side gets when the other side ended the session.
fn partner_close(cause: &EndCause) -> CloseFrame {
    match cause {
        EndCause::Closed(r) => frame(
            CloseCode::Normal,
            format!("the {} side closed", role_name(*r)),
        ),
        EndCause::Lost(r) | EndCause::Silent(r) => frame(
            CloseCode::Away,
            format!("the {} side was lost", role_name(*r)),
        ),
        EndCause::Protocol(r, _) => frame(
            CloseCode::Away,
            format!("the {} side broke the tunnel protocol", role_name(*r)),
        ),
        EndCause::NotPaired => frame(CloseCode::Policy, "the other side did not attach".into()),
        EndCause::Shutdown => frame(CloseCode::Away, "GAS shutting down".into()),
        EndCause::EndedByPlatform => {
            frame(CloseCode::Normal, "the platform ended the session".into())
        }
        EndCause::Console(_, _) => frame(CloseCode::Normal, "the browser console ended".into()),
    }
}

/// A close frame; the reason is cut to what a control frame holds (123 bytes).
fn frame(code: CloseCode, mut reason: String) -> CloseFrame {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.truncate(end);
    CloseFrame {
        code,
        reason: reason.into(),
    }
}

/// Closes this side: sends `close` (or, without one, completes the close this side started),
/// then waits for the other end's close so that ours is not lost to a reset. Bounded by
/// `within`; after that the connection is dropped.
async fn close_side<S>(
    sink: &mut Sink<S>,
    stream: &mut Stream<S>,
    close: Option<CloseFrame>,
    within: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(within, async {
        let sent = match close {
            Some(f) => sink.send(Message::Close(Some(f))).await,
            None => sink.close().await,
        };
        if sent.is_ok() {
            while let Some(Ok(_)) = stream.next().await {}
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_control_frame() {
        let f = frame(CloseCode::Protocol, "é".repeat(100));
        assert!(f.reason.len() <= 123);
        assert!(f.reason.chars().all(|c| c == 'é'));
        assert_eq!(
            partner_close(&EndCause::Closed(Role::Agent)).code,
            CloseCode::Normal
        );
        assert_eq!(
            partner_close(&EndCause::Silent(Role::Client)).code,
            CloseCode::Away
        );
    }
}
