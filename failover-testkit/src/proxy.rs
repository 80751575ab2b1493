//! A TCP proxy on loopback whose path can be cut and healed: a network
//! partition between one client and one server, for tests that need a live
//! server to become unreachable from some parties but not others.
//!
//! [`cut`](TcpProxy::cut) is a black hole, like most real partitions:
//! connections in progress are dropped, new ones are accepted but nothing is
//! forwarded, so the client sees silence (its own timeouts).
//! [`refuse`](TcpProxy::refuse) closes every connection at once instead, the
//! way a firewall that rejects, or a dead host's neighbour, answers: the
//! client's call fails within milliseconds.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A cuttable TCP proxy from a loopback port to `upstream`. Dropping it stops
/// it and closes every connection.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    refusing: Arc<AtomicBool>,
    /// Bumped on every cut: connections opened before it end.
    generation: watch::Sender<u64>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<TcpProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let refusing = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let accept = tokio::spawn(accept_loop(
            listener,
            upstream,
            Arc::clone(&cut),
            Arc::clone(&refusing),
            generation.clone(),
        ));
        Ok(TcpProxy {
            addr,
            cut,
            refusing,
            generation,
            accept,
        })
    }

    /// The proxy's own address: give it to the client instead of the server's.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts the path: open connections are dropped, new ones hang.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Cuts the path, refusing: open connections are dropped and new ones
    /// are closed as soon as they are accepted.
    pub fn refuse(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        self.cut();
    }

    /// Heals the path: new connections are forwarded again.
    pub fn heal(&self) {
        self.refusing.store(false, Ordering::SeqCst);
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Whether the path is cut now.
    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Ends every connection task.
        self.generation.send_modify(|g| *g += 1);
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    cut: Arc<AtomicBool>,
    refusing: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors or similar: back off instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        if refusing.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let mut ended = generation.subscribe();
        let opened = *ended.borrow_and_update();
        let cut = Arc::clone(&cut);
        tokio::spawn(async move {
            // A black hole while cut: hold the connection, forward nothing,
            // until the proxy is dropped or cut again after a heal.
            if cut.load(Ordering::SeqCst) {
                let _ = ended.changed().await;
                drop(client);
                return;
            }
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (mut client, mut server) = (client, server);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = async {
                    while ended.changed().await.is_ok() {
                        if *ended.borrow() != opened {
                            return;
                        }
                    }
                } => {}
            }
        });
    }
}
