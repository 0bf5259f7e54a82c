//! The tunnel's WebSocket as the multiplexer sees it, with a way to end it from outside: when the
//! stop signal fires, [`Closable`] sends a normal close (1000) with the stop's reason, waits (at
//! most the close timeout) for the GAS's answer, then ends the stream, so the multiplexer ends
//! every stream it carries. It also records who closed the WebSocket and why, for the logs.

use futures_util::{Sink, Stream};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Sleep;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error, Message};

/// The longest close reason (a control frame's 125 bytes less the code).
const MAX_REASON: usize = 123;

/// How the tunnel's WebSocket was closed, if it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The agent closed it, for this reason.
    ByAgent(String),
    /// The GAS sent a close frame with this code and reason.
    ByGas { code: u16, reason: String },
}

/// Who closed the WebSocket; shared between the wrapper and the session.
pub type CloseRecord = Arc<Mutex<Option<Closed>>>;

enum State {
    Open,
    /// Send our close frame.
    Send(CloseFrame),
    Flush(Pin<Box<Sleep>>),
    /// Our close is sent; read (and drop) until the GAS's close ends the stream.
    Drain(Pin<Box<Sleep>>),
    /// The GAS closed: flush the reply tungstenite queued, then hand its close frame on.
    Reply(Option<CloseFrame>, Pin<Box<Sleep>>),
    Done,
}

/// A WebSocket that closes itself when `stop` yields a reason (or its sender is dropped).
pub struct Closable<S> {
    inner: S,
    stop: Option<oneshot::Receiver<String>>,
    state: State,
    close_timeout: Duration,
    record: CloseRecord,
}

impl<S> Closable<S> {
    pub fn new(inner: S, stop: oneshot::Receiver<String>, close_timeout: Duration) -> Self {
        Closable {
            inner,
            stop: Some(stop),
            state: State::Open,
            close_timeout,
            record: Arc::default(),
        }
    }

    /// Where the wrapper records who closed the WebSocket.
    pub fn record(&self) -> CloseRecord {
        self.record.clone()
    }

    fn set(&self, closed: Closed) {
        let mut record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        if record.is_none() {
            *record = Some(closed);
        }
    }
}

fn cut(reason: &str) -> String {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

type Item = Result<Message, Error>;

impl<S> Stream for Closable<S>
where
    S: Stream<Item = Item> + Sink<Message, Error = Error> + Unpin,
{
    type Item = Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Open => {
                    if let Some(stop) = &mut this.stop {
                        if let Poll::Ready(reason) = Pin::new(stop).poll(cx) {
                            this.stop = None;
                            let reason = reason.unwrap_or_else(|_| "agent shutting down".into());
                            let reason = cut(&reason);
                            this.set(Closed::ByAgent(reason.clone()));
                            this.state = State::Send(CloseFrame {
                                code: CloseCode::Normal,
                                reason: reason.into(),
                            });
                            continue;
                        }
                    }
                    return match Pin::new(&mut this.inner).poll_next(cx) {
                        Poll::Ready(Some(Ok(Message::Close(frame)))) => {
                            this.set(Closed::ByGas {
                                code: frame.as_ref().map_or(1005, |f| u16::from(f.code)),
                                reason: frame
                                    .as_ref()
                                    .map(|f| f.reason.to_string())
                                    .unwrap_or_default(),
                            });
                            let timer = Box::pin(tokio::time::sleep(this.close_timeout));
                            this.state = State::Reply(frame, timer);
                            continue;
                        }
                        other => other,
                    };
                }
                State::Send(frame) => match Pin::new(&mut this.inner).poll_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(_)) => this.state = State::Done,
                    Poll::Ready(Ok(())) => {
                        let frame = std::mem::replace(
                            frame,
                            CloseFrame {
                                code: CloseCode::Normal,
                                reason: "".into(),
                            },
                        );
                        let timer = Box::pin(tokio::time::sleep(this.close_timeout));
                        this.state = match Pin::new(&mut this.inner)
                            .start_send(Message::Close(Some(frame)))
                        {
                            Ok(()) => State::Flush(timer),
                            Err(_) => State::Done,
                        };
                    }
                },
                State::Flush(timer) => {
                    if timer.as_mut().poll(cx).is_ready() {
                        this.state = State::Done;
                        continue;
                    }
                    match Pin::new(&mut this.inner).poll_flush(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(())) => {
                            let timer = std::mem::replace(
                                timer,
                                Box::pin(tokio::time::sleep(Duration::ZERO)),
                            );
                            this.state = State::Drain(timer);
                        }
                        Poll::Ready(Err(_)) => this.state = State::Done,
                    }
                }
                State::Drain(timer) => {
                    if timer.as_mut().poll(cx).is_ready() {
                        this.state = State::Done;
                        continue;
                    }
                    match Pin::new(&mut this.inner).poll_next(cx) {
                        Poll::Pending => return Poll::Pending,
                        // The GAS's answer completes the close handshake; don't wait for its
                        // TCP close.
                        Poll::Ready(Some(Ok(Message::Close(_)))) => this.state = State::Done,
                        Poll::Ready(Some(Ok(_))) => {} // late frames: dropped
                        Poll::Ready(None | Some(Err(_))) => this.state = State::Done,
                    }
                }
                State::Reply(frame, timer) => {
                    let done = timer.as_mut().poll(cx).is_ready()
                        || Pin::new(&mut this.inner).poll_flush(cx).is_ready();
                    if !done {
                        return Poll::Pending;
                    }
                    let frame = frame.take();
                    this.state = State::Done;
                    return Poll::Ready(Some(Ok(Message::Close(frame))));
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }
}

/// While open, writes go to the WebSocket; once closing, the multiplexer's writes are dropped
/// (the tunnel is ending) so they cannot race the close.
impl<S> Sink<Message> for Closable<S>
where
    S: Sink<Message, Error = Error> + Unpin,
{
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        match this.state {
            State::Open => Pin::new(&mut this.inner).poll_ready(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        let this = self.get_mut();
        match this.state {
            State::Open => Pin::new(&mut this.inner).start_send(item),
            _ => Ok(()),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        match this.state {
            State::Open => Pin::new(&mut this.inner).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        match this.state {
            State::Open => Pin::new(&mut this.inner).poll_close(cx),
            _ => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::{accept_async, client_async, WebSocketStream};

    async fn pair() -> (WebSocketStream<TcpStream>, WebSocketStream<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            accept_async(tcp).await.unwrap()
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (client, _) = client_async(format!("ws://{addr}/"), tcp).await.unwrap();
        (client, server.await.unwrap())
    }

    #[tokio::test]
    async fn a_stop_closes_normally_with_the_reason_and_ends_the_stream() {
        let (client, mut server) = pair().await;
        let (tx, rx) = oneshot::channel();
        let mut ws = Closable::new(client, rx, Duration::from_secs(5));
        let record = ws.record();
        let reader = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(m) = ws.next().await {
                seen.push(m.unwrap());
            }
            seen
        });
        server.send(Message::binary(vec![1u8, 2])).await.unwrap();
        tx.send("ended by the platform".into()).unwrap();
        let close = loop {
            match server.next().await.unwrap().unwrap() {
                Message::Close(frame) => break frame.unwrap(),
                _ => continue,
            }
        };
        assert_eq!(close.code, CloseCode::Normal);
        assert_eq!(close.reason.as_str(), "ended by the platform");
        // The server's reply completes the handshake; the wrapper's stream ends.
        while server.next().await.is_some() {}
        let seen = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .unwrap()
            .unwrap();
        assert!(seen.len() <= 1, "{seen:?}");
        assert_eq!(
            *record.lock().unwrap(),
            Some(Closed::ByAgent("ended by the platform".into()))
        );
    }

    #[tokio::test]
    async fn a_close_from_the_gas_is_recorded_and_answered() {
        let (client, mut server) = pair().await;
        let (_tx, rx) = oneshot::channel();
        let mut ws = Closable::new(client, rx, Duration::from_secs(5));
        let record = ws.record();
        server
            .close(Some(CloseFrame {
                code: CloseCode::Away,
                reason: "GAS shutting down".into(),
            }))
            .await
            .unwrap();
        let m = ws.next().await.unwrap().unwrap();
        assert!(matches!(m, Message::Close(Some(_))), "{m:?}");
        assert!(ws.next().await.is_none());
        // The server saw our reply: its stream ends cleanly.
        while let Some(m) = server.next().await {
            m.unwrap();
        }
        assert_eq!(
            *record.lock().unwrap(),
            Some(Closed::ByGas {
                code: 1001,
                reason: "GAS shutting down".into()
            })
        );
    }
}
