//! A loopback TCP relay that can black-hole traffic: the "network cut" of fault tests. A cut keeps
//! every socket open but forwards nothing (as a dead route or a pulled cable looks to both ends:
//! no FIN, no RST, just silence); connections made during a cut wait until it is restored.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Relay {
    addr: SocketAddr,
    cut: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Listens on 127.0.0.1:0 and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let cut = Arc::new(watch::channel(false).0);
        let cut2 = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let cut = cut2.clone();
                tokio::spawn(async move {
                    let mut state = cut.subscribe();
                    // Connections made during a cut wait for the route to come back.
                    if state.wait_for(|c| !*c).await.is_err() {
                        return;
                    }
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    let a = tokio::spawn(pipe(ri, wo, cut.subscribe()));
                    let b = tokio::spawn(pipe(ro, wi, cut.subscribe()));
                    let _ = tokio::join!(a, b);
                });
            }
        });
        Relay { addr, cut, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on nothing is forwarded on existing connections; new ones wait.
    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }

    /// New connections are forwarded again (connections cut earlier stay dead).
    pub fn restore(&self) {
        let _ = self.cut.send(false);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
            _ = cut.wait_for(|c| *c) => 0,
        };
        if *cut.borrow() {
            // Black hole: hold both sockets open and forward nothing, for the relay's life.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
