//! A TCP relay the integration tests put in front of a server (Redis, NATS) and take down
//! and bring back on the same port, to stand for that server going away and returning.
//! Included by each test crate that needs it with `#[path]`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// One relayed port; `stop` closes it and every connection through it.
pub struct Relay {
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    pub async fn start(bind: SocketAddr, upstream: SocketAddr) -> Relay {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("reuseaddr");
        socket.bind(bind).expect("bind relay");
        let listener = socket.listen(64).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let tracked = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                if let Ok(mut c) = tracked.lock() {
                    c.push(conn);
                }
            }
        });
        Relay {
            addr,
            accept,
            conns,
        }
    }

    /// Relayed connections still open: a client that dropped its connection has none.
    pub fn open_connections(&self) -> usize {
        self.conns
            .lock()
            .map(|c| c.iter().filter(|h| !h.is_finished()).count())
            .unwrap_or(0)
    }

    /// Waits up to `limit` for every relayed connection to close; whether they did.
    pub async fn all_closed_within(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.open_connections() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// Closes the listener and every relayed connection.
    pub async fn stop(self) {
        self.accept.abort();
        let _ = self.accept.await;
        let conns: Vec<_> = self
            .conns
            .lock()
            .map(|mut c| c.drain(..).collect())
            .unwrap_or_default();
        for c in conns {
            c.abort();
            let _ = c.await;
        }
    }
}
