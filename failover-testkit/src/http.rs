//! Regional HTTP(S) APIs on loopback whose behaviour can be switched while
//! they run: healthy, a chosen status, a redirect, a server that accepts and
//! never answers, a slow or oversized body, flapping, garbage, and TLS with a
//! throw-away test CA made by rcgen.
//!
//! The server speaks just enough HTTP/1.1 by hand (rather than through a
//! server library) so that it can misbehave in exactly the ways a probe must
//! survive. It must be created inside a tokio runtime; it stops when its
//! [`RegionalApi`] handle drops.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use failover_testkit::http::{ApiMode, RegionalApi};
//! let api = RegionalApi::start_http()?;
//! println!("probe http://{}/healthz", api.addr());
//! api.set_mode(ApiMode::Status(503)); // the region is now failing its checks
//! api.stop().await; // connections are now refused
//! api.start()?; // serving again on the same port
//! # Ok(()) }
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// Largest request head the server reads, in bytes; more is answered by closing.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// How long the server waits for a TLS handshake or a request head before
/// closing the connection, so abandoned client sockets do not pile up.
const CLIENT_IDLE_LIMIT: Duration = Duration::from_secs(30);

/// What the regional API does with each request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiMode {
    /// `200 OK` with the body `healthy region=<name>\n`; keeps connections alive
    /// unless the client asks to close.
    Healthy,
    /// Answers every request with this status (and a short body).
    Status(u16),
    /// `301 Moved Permanently` to `/moved`, whose target would be healthy; a
    /// probe must not follow it.
    Redirect,
    /// Accepts the connection, reads the request and never answers.
    Hang,
    /// Sends `200 OK` headers at once, then the 64-byte body one byte every
    /// `byte_delay`.
    SlowBody {
        /// Pause before each body byte.
        byte_delay: Duration,
    },
    /// `200 OK` with a body of `bytes` bytes (declared in Content-Length and
    /// streamed until done or the client hangs up). The body starts with the
    /// healthy text, so a body match in the first bytes succeeds.
    Oversized {
        /// Body length in bytes.
        bytes: u64,
    },
    /// Alternates between healthy and `503` every `period` requests
    /// (counted over all connections).
    Flapping {
        /// Requests per phase; 0 is treated as 1.
        period: u64,
    },
    /// Answers with bytes that are not HTTP at all.
    Garbage,
    /// Sends a status line and then header lines totalling `bytes` bytes
    /// (streamed until done or the client hangs up), never ending the head.
    HugeHead {
        /// Bytes of header lines to send.
        bytes: u64,
    },
}

/// A TLS identity for the test server: a fresh CA and a server certificate
/// for one DNS name, signed by it.
#[derive(Debug)]
pub struct TestCa {
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivatePkcs8KeyDer<'static>,
}

impl TestCa {
    /// Generates a CA and a server certificate valid for `server_name` (a DNS
    /// name such as `api.us-east.test`, or an IP address).
    pub fn generate(server_name: &str) -> io::Result<TestCa> {
        let ca_key = rcgen::KeyPair::generate().map_err(io::Error::other)?;
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(io::Error::other)?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "failover test CA");
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).map_err(io::Error::other)?;

        let server_key = rcgen::KeyPair::generate().map_err(io::Error::other)?;
        let server_params = rcgen::CertificateParams::new(vec![server_name.to_owned()])
            .map_err(io::Error::other)?;
        let server_cert = server_params
            .signed_by(&server_key, &ca)
            .map_err(io::Error::other)?;
        Ok(TestCa {
            ca_der: ca.der().clone(),
            ca_pem: ca.pem(),
            server_chain: vec![server_cert.der().clone()],
            server_key: PrivatePkcs8KeyDer::from(server_key.serialize_der()),
        })
    }

    /// The CA certificate (DER) a client must trust.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// The CA certificate in PEM form.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A rustls server configuration presenting the server certificate,
    /// for servers of the code under test (e.g. the admin API).
    pub fn server_config(&self) -> io::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(
                self.server_chain.clone(),
                PrivateKeyDer::Pkcs8(self.server_key.clone_key()),
            )
            .map_err(io::Error::other)?;
        Ok(Arc::new(config))
    }

    fn acceptor(&self) -> io::Result<TlsAcceptor> {
        Ok(TlsAcceptor::from(self.server_config()?))
    }
}

struct Shared {
    name: String,
    mode: Mutex<ApiMode>,
    requests: AtomicU64,
    connections: AtomicU64,
    body_bytes: AtomicU64,
    last_request: Mutex<String>,
}

impl Shared {
    fn mode(&self) -> ApiMode {
        self.mode
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One regional HTTP(S) API on `127.0.0.1`. Stops serving when dropped.
pub struct RegionalApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tls: Option<(Arc<TestCa>, TlsAcceptor)>,
    accept_task: Mutex<Option<Serving>>,
}

/// The running accept loop and the switch that ends it.
struct Serving {
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for RegionalApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionalApi")
            .field("name", &self.shared.name)
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl RegionalApi {
    /// Starts a healthy plain-HTTP API named `region` on a free loopback port.
    /// Must be called inside a tokio runtime.
    pub fn start_http() -> io::Result<RegionalApi> {
        RegionalApi::start_named("region", None)
    }

    /// Starts a healthy HTTPS API whose certificate is valid for
    /// `server_name` and signed by a fresh test CA (see [`RegionalApi::ca`]).
    pub fn start_https(server_name: &str) -> io::Result<RegionalApi> {
        let ca = TestCa::generate(server_name)?;
        RegionalApi::start_named("region", Some(Arc::new(ca)))
    }

    /// Starts an API whose healthy body names `region`, with TLS when `ca` is given.
    pub fn start_named(region: &str, ca: Option<Arc<TestCa>>) -> io::Result<RegionalApi> {
        RegionalApi::start_at(region, ca, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Like [`start_named`](Self::start_named), listening on `listen`
    /// (port 0: a free one): a region's address, when started on a
    /// [`Net::run`](crate::net::Net::run) task in that region.
    pub fn start_at(
        region: &str,
        ca: Option<Arc<TestCa>>,
        listen: SocketAddr,
    ) -> io::Result<RegionalApi> {
        in_runtime()?;
        let tls = match ca {
            Some(ca) => {
                let acceptor = ca.acceptor()?;
                Some((ca, acceptor))
            }
            None => None,
        };
        let listener = bind(listen)?;
        let addr = listener.local_addr()?;
        let api = RegionalApi {
            addr,
            shared: Arc::new(Shared {
                name: region.to_owned(),
                mode: Mutex::new(ApiMode::Healthy),
                requests: AtomicU64::new(0),
                connections: AtomicU64::new(0),
                body_bytes: AtomicU64::new(0),
                last_request: Mutex::new(String::new()),
            }),
            tls,
            accept_task: Mutex::new(None),
        };
        api.spawn_accept(listener);
        Ok(api)
    }

    /// The address it listens on (kept across [`stop`](Self::stop) / [`start`](Self::start)).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` or `https://…`, without a trailing slash.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The test CA, when serving HTTPS.
    pub fn ca(&self) -> Option<&TestCa> {
        self.tls.as_ref().map(|(ca, _)| &**ca)
    }

    /// Switches behaviour for every request from now on (open keep-alive
    /// connections included).
    pub fn set_mode(&self, mode: ApiMode) {
        tracing::debug!(addr = %self.addr, ?mode, "regional API mode");
        *self
            .shared
            .mode
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = mode;
    }

    /// The current behaviour.
    pub fn mode(&self) -> ApiMode {
        self.shared.mode()
    }

    /// Requests whose head was read so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Body bytes of [`ApiMode::Oversized`] responses (and header bytes of
    /// [`ApiMode::HugeHead`] ones) written to sockets so far: shows how much
    /// of a huge response a client actually took.
    pub fn oversized_bytes_sent(&self) -> u64 {
        self.shared.body_bytes.load(Ordering::Relaxed)
    }

    /// The head (request line and headers) of the latest request, as text.
    pub fn last_request(&self) -> String {
        self.shared
            .last_request
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Closes the listener and every open connection, and waits until they
    /// are closed: new connections are refused until [`start`](Self::start).
    pub async fn stop(&self) {
        let serving = self
            .accept_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(serving) = serving {
            let _ = serving.stop.send(());
            let _ = serving.task.await;
            tracing::debug!(addr = %self.addr, "regional API stopped");
        }
    }

    /// Listens again on the same port after [`stop`](Self::stop); does
    /// nothing when already serving. Must be called inside a tokio runtime.
    pub fn start(&self) -> io::Result<()> {
        in_runtime()?;
        if self.is_serving() {
            return Ok(());
        }
        let listener = bind(self.addr)?;
        self.spawn_accept(listener);
        Ok(())
    }

    /// Whether the listener is open.
    pub fn is_serving(&self) -> bool {
        self.accept_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|s| !s.task.is_finished())
    }

    fn spawn_accept(&self, listener: TcpListener) {
        let shared = Arc::clone(&self.shared);
        let acceptor = self.tls.as_ref().map(|(_, a)| a.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, shared, acceptor, stopped));
        let old = self
            .accept_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(Serving { stop, task });
        if let Some(old) = old {
            old.task.abort();
        }
    }
}

impl Drop for RegionalApi {
    fn drop(&mut self) {
        // No waiting in Drop: aborting the accept task drops the listener and
        // every connection task with it.
        let serving = self
            .accept_task
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(serving) = serving {
            serving.task.abort();
        }
    }
}

/// Sockets and tasks need a tokio runtime: say so instead of panicking.
fn in_runtime() -> io::Result<()> {
    tokio::runtime::Handle::try_current()
        .map(|_| ())
        .map_err(|_| io::Error::other("RegionalApi must be started inside a tokio runtime"))
}

/// Binds with SO_REUSEADDR so a restart on the same port is not blocked by
/// connections in TIME_WAIT.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Owns every connection task in a `JoinSet`, so ending this task (stop or
/// drop) closes all connections too.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => {
                drop(listener);
                connections.shutdown().await;
                return;
            }
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else {
                    // Out of file descriptors and the like: back off briefly.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                shared.connections.fetch_add(1, Ordering::Relaxed);
                let shared = Arc::clone(&shared);
                let tls = tls.clone();
                connections.spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            let handshake = tokio::time::timeout(CLIENT_IDLE_LIMIT, acceptor.accept(stream)).await;
                            if let Ok(Ok(stream)) = handshake {
                                serve_connection(stream, &shared).await;
                            }
                        }
                        None => serve_connection(stream, &shared).await,
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Serves requests on one connection until the mode or the client ends it.
async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, shared: &Shared) {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let Some((head_len, wants_close, is_head)) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        if let Some(head) = buf.get(..head_len) {
            *shared
                .last_request
                .lock()
                .unwrap_or_else(PoisonError::into_inner) =
                String::from_utf8_lossy(head).into_owned();
        }
        buf.drain(..head_len);
        let n = shared.requests.fetch_add(1, Ordering::Relaxed);
        let keep_alive = match respond(&mut stream, shared, n, is_head).await {
            Ok(keep_alive) => keep_alive && !wants_close,
            Err(_) => false,
        };
        if !keep_alive {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// Reads one request head into `buf`; returns its length, whether the client
/// asked to close, and whether it was a HEAD request.
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Option<(usize, bool, bool)> {
    let read = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Some(end + 4);
            }
            if buf.len() > MAX_REQUEST_HEAD {
                return None;
            }
            let mut chunk = [0u8; 2048];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(chunk.get(..n)?),
            }
        }
    };
    let len = tokio::time::timeout(CLIENT_IDLE_LIMIT, read).await.ok()??;
    let head = String::from_utf8_lossy(buf.get(..len)?).to_ascii_lowercase();
    let wants_close = head.contains("\r\nconnection: close");
    Some((len, wants_close, head.starts_with("head ")))
}

/// Writes the response for request number `n`; returns whether the
/// connection may be kept alive.
async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    shared: &Shared,
    n: u64,
    is_head: bool,
) -> io::Result<bool> {
    let healthy_body = format!("healthy region={}\n", shared.name);
    let simple = |status: u16, extra: &str, body: &str| {
        let reason = reason(status);
        let len = body.len();
        let body = if is_head { "" } else { body };
        format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {len}\r\n{extra}\r\n{body}"
        )
    };
    match shared.mode() {
        ApiMode::Healthy => {
            stream
                .write_all(simple(200, "", &healthy_body).as_bytes())
                .await?;
            Ok(true)
        }
        ApiMode::Status(code) => {
            let body = format!("status {code} region={}\n", shared.name);
            stream.write_all(simple(code, "", &body).as_bytes()).await?;
            Ok(true)
        }
        ApiMode::Redirect => {
            let resp = simple(301, "location: /moved\r\n", "moved\n");
            stream.write_all(resp.as_bytes()).await?;
            Ok(true)
        }
        ApiMode::Flapping { period } => {
            let healthy = (n / period.max(1)) % 2 == 0;
            let resp = if healthy {
                simple(200, "", &healthy_body)
            } else {
                simple(503, "", "flapping\n")
            };
            stream.write_all(resp.as_bytes()).await?;
            Ok(true)
        }
        ApiMode::Hang => {
            std::future::pending::<()>().await;
            Ok(false)
        }
        ApiMode::SlowBody { byte_delay } => {
            let body = format!("{healthy_body:<64}");
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.flush().await?;
            for byte in body.as_bytes() {
                tokio::time::sleep(byte_delay).await;
                stream.write_all(std::slice::from_ref(byte)).await?;
                stream.flush().await?;
            }
            Ok(false)
        }
        ApiMode::Oversized { bytes } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {bytes}\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await?;
            let mut chunk = vec![b'x'; 64 * 1024];
            let prefix = healthy_body.as_bytes();
            if let Some(dst) = chunk.get_mut(..prefix.len()) {
                dst.copy_from_slice(prefix);
            }
            let mut left = bytes;
            while left > 0 {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(chunk.len());
                let part = chunk.get(..take).unwrap_or_default();
                stream.write_all(part).await?;
                shared.body_bytes.fetch_add(take as u64, Ordering::Relaxed);
                if left == bytes {
                    // Only the first chunk carries the healthy prefix.
                    chunk.fill(b'x');
                }
                left -= take as u64;
            }
            Ok(false)
        }
        ApiMode::HugeHead { bytes } => {
            stream.write_all(b"HTTP/1.1 200 OK\r\n").await?;
            let line = format!("x-filler: {}\r\n", "f".repeat(1000));
            let mut sent = 0u64;
            while sent < bytes {
                stream.write_all(line.as_bytes()).await?;
                sent += line.len() as u64;
                shared
                    .body_bytes
                    .fetch_add(line.len() as u64, Ordering::Relaxed);
            }
            Ok(false)
        }
        ApiMode::Garbage => {
            stream
                .write_all(b"\x00\x01NOT HTTP AT ALL\r\n\r\n\xff\xfe")
                .await?;
            Ok(false)
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
