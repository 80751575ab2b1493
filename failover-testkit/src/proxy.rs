//! A TCP proxy whose path can be cut and healed, slowed and made lossy: a
//! network partition (or a bad link) between one client and one server, for
//! tests that need a live server to become unreachable or slow from some
//! parties but not others.
//!
//! [`cut`](TcpProxy::cut) is a black hole, like most real partitions:
//! connections in progress are dropped, new ones are accepted but nothing is
//! forwarded, so the client sees silence (its own timeouts).
//! [`refuse`](TcpProxy::refuse) closes every connection at once instead, the
//! way a firewall that rejects, or a dead host's neighbour, answers: the
//! client's call fails within milliseconds.
//!
//! Delay and loss stand in for `tc netem`, which the test kernel lacks:
//! - [`delay`](TcpProxyBuilder::delay) holds every chunk of bytes for that
//!   long in each direction (a delay line, so throughput is not limited:
//!   a round trip through the proxy takes at least twice the delay);
//! - [`drop_probability`](TcpProxyBuilder::drop_probability) black-holes
//!   that share of new connections, drawn from a seeded generator, so a
//!   run is replayed by its seed. A stream proxy cannot lose bytes without
//!   corrupting the stream; TCP turns packet loss into delay and, past the
//!   client's timeouts, into connections that never answer, which is what
//!   a dropped connection is.
//!
//! The proxy listens on 127.0.0.1 by default; [`TcpProxyBuilder::listen`]
//! picks another address, such as a region's in [`crate::net`], where
//! [`Net::proxy`](crate::net::Net::proxy) runs one inside a namespace.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Probabilities are stored in parts per million.
const PPM: f64 = 1_000_000.0;

/// How to start a [`TcpProxy`]: where it listens, where it forwards, and
/// the delay and loss it adds (both can be changed while it runs).
#[derive(Clone, Debug)]
pub struct TcpProxyBuilder {
    upstream: SocketAddr,
    listen: SocketAddr,
    delay: Duration,
    drop_probability: f64,
    seed: u64,
}

impl TcpProxyBuilder {
    /// The address to listen on (default `127.0.0.1:0`, a free port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }
    /// Added one-way delay of every chunk, in each direction (default 0).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
    /// The probability, 0.0 to 1.0 (clamped), that a new connection is
    /// black-holed (default 0).
    pub fn drop_probability(mut self, p: f64) -> Self {
        self.drop_probability = p;
        self
    }
    /// The seed of the generator that draws which connections are dropped
    /// (default 0). The same seed and the same order of connections drop
    /// the same connections.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// The address it will listen on.
    pub(crate) fn listen_addr(&self) -> SocketAddr {
        self.listen
    }
    /// Binds and starts forwarding on the current tokio runtime.
    pub async fn start(self) -> std::io::Result<TcpProxy> {
        let listener = TcpListener::bind(self.listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            cut: AtomicBool::new(false),
            refusing: AtomicBool::new(false),
            delay_us: AtomicU64::new(0),
            drop_ppm: AtomicU32::new(0),
            rng: Mutex::new(SplitMix64(self.seed)),
            accepted: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        shared.set_delay(self.delay);
        shared.set_drop_probability(self.drop_probability);
        let (generation, _) = watch::channel(0u64);
        let accept = tokio::spawn(accept_loop(
            listener,
            self.upstream,
            Arc::clone(&shared),
            generation.clone(),
        ));
        Ok(TcpProxy {
            addr,
            shared,
            generation,
            accept,
        })
    }
}

/// A cuttable, slowable TCP proxy to `upstream`. Dropping it stops it and
/// closes every connection.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Bumped on every cut: connections opened before it end.
    generation: watch::Sender<u64>,
    accept: JoinHandle<()>,
}

/// The state the accept loop and the test share.
#[derive(Debug)]
struct Shared {
    cut: AtomicBool,
    refusing: AtomicBool,
    delay_us: AtomicU64,
    drop_ppm: AtomicU32,
    rng: Mutex<SplitMix64>,
    accepted: AtomicU64,
    dropped: AtomicU64,
}

impl Shared {
    fn set_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.delay_us.store(us, Ordering::SeqCst);
    }
    fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::SeqCst))
    }
    fn set_drop_probability(&self, p: f64) {
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        self.drop_ppm
            .store((p * PPM).round() as u32, Ordering::SeqCst);
    }
    /// Draws whether the next connection is dropped. One draw per
    /// connection, also at probability 0, so a replay sees the same stream.
    fn draw_drop(&self) -> bool {
        let draw = match self.rng.lock() {
            Ok(mut rng) => rng.next_ppm(),
            Err(poisoned) => poisoned.into_inner().next_ppm(),
        };
        draw < self.drop_ppm.load(Ordering::SeqCst)
    }
}

impl TcpProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream`, with
    /// no delay and no loss.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<TcpProxy> {
        TcpProxy::builder(upstream).start().await
    }

    /// A proxy to `upstream`, to configure before [`start`](TcpProxyBuilder::start).
    pub fn builder(upstream: SocketAddr) -> TcpProxyBuilder {
        TcpProxyBuilder {
            upstream,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            delay: Duration::ZERO,
            drop_probability: 0.0,
            seed: 0,
        }
    }

    /// The proxy's own address: give it to the client instead of the server's.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts the path: open connections are dropped, new ones hang.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Cuts the path, refusing: open connections are dropped and new ones
    /// are closed as soon as they are accepted.
    pub fn refuse(&self) {
        self.shared.refusing.store(true, Ordering::SeqCst);
        self.cut();
    }

    /// Heals the path: new connections are forwarded again.
    pub fn heal(&self) {
        self.shared.refusing.store(false, Ordering::SeqCst);
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Whether the path is cut now.
    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::SeqCst)
    }

    /// Sets the added one-way delay; chunks read from now on are held this long.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.set_delay(delay);
    }

    /// The added one-way delay.
    pub fn delay(&self) -> Duration {
        self.shared.delay()
    }

    /// Sets the probability (0.0 to 1.0, clamped) that a new connection is
    /// black-holed.
    pub fn set_drop_probability(&self, p: f64) {
        self.shared.set_drop_probability(p);
    }

    /// Connections accepted so far (dropped ones included).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections black-holed by the drop probability so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::SeqCst)
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
    shared: Arc<Shared>,
    generation: watch::Sender<u64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if shared.refusing.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let dropped = shared.draw_drop();
        if dropped {
            shared.dropped.fetch_add(1, Ordering::SeqCst);
        }
        let mut ended = generation.subscribe();
        let opened = *ended.borrow_and_update();
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            // A black hole while cut (or for a dropped connection): hold the
            // connection, forward nothing, until the proxy is dropped or cut
            // again after a heal, or the client gives up (read and
            // discarded, so a long drill does not pile up sockets).
            if dropped || shared.cut.load(Ordering::SeqCst) {
                let mut client = client;
                let mut sink = [0u8; 4096];
                tokio::select! {
                    _ = ended.changed() => {}
                    _ = async {
                        while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
                    } => {}
                }
                return;
            }
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::select! {
                _ = async {
                    tokio::join!(
                        pipe(client_read, server_write, &shared),
                        pipe(server_read, client_write, &shared),
                    )
                } => {}
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

/// Forwards one direction through a delay line: the reader stamps each
/// chunk with its due time, the writer waits for it, so a delay does not
/// limit throughput. End of stream is forwarded as a half-close.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, shared: &Shared) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Option<Vec<u8>>)>();
    let reader = async move {
        loop {
            let mut buf = vec![0u8; 16 * 1024];
            let read = from.read(&mut buf).await;
            let due = Instant::now() + shared.delay();
            match read {
                Ok(0) | Err(_) => {
                    let _ = tx.send((due, None));
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send((due, Some(buf))).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            match chunk {
                Some(bytes) => {
                    if to.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = to.shutdown().await;
                    return;
                }
            }
        }
    };
    tokio::join!(reader, writer);
}

/// A small seeded generator (SplitMix64): enough for drawing drops, and it
/// keeps the testkit free of an RNG dependency.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..1_000_000.
    fn next_ppm(&mut self) -> u32 {
        (self.next_u64() % PPM as u64) as u32
    }
}
