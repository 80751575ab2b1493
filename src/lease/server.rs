//! [`LeaseServer`]: the controller's side of the guard lease protocol.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use failover_core::{CoordinationEvent, Epoch, NodeId, Topology, WriterRecord};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::wire::{ErrorReply, ReleaseReply, RenewReply, RenewRequest, WireWriter};
use super::{check_node_name, secrets_equal, LeaseError, MAX_BODY, MAX_TTL, MIN_TTL};

/// Settings of a [`LeaseServer`].
#[derive(Clone)]
pub struct LeaseServerConfig {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// The shared secret guards send as `Authorization: Bearer <secret>`.
    /// At least 16 bytes.
    pub secret: String,
    /// The nodes whose guards may lease: id and topology name.
    pub nodes: Vec<(NodeId, String)>,
    /// How long one connection may take to deliver its request and get its
    /// answer (default 2 s).
    pub request_timeout: Duration,
    /// Connections served at once; more wait in the accept queue (default 64).
    pub max_connections: usize,
}

impl std::fmt::Debug for LeaseServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseServerConfig")
            .field("listen", &self.listen)
            .field("secret", &"<redacted>")
            .field("nodes", &self.nodes)
            .field("request_timeout", &self.request_timeout)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// Shortest secret the server accepts, bytes.
const MIN_SECRET: usize = 16;

impl LeaseServerConfig {
    /// Listens on `listen`, authenticates with `secret`, no nodes yet.
    pub fn new(listen: SocketAddr, secret: impl Into<String>) -> Self {
        LeaseServerConfig {
            listen,
            secret: secret.into(),
            nodes: Vec::new(),
            request_timeout: Duration::from_secs(2),
            max_connections: 64,
        }
    }

    /// Adds one node that may lease.
    pub fn node(mut self, id: NodeId, name: impl Into<String>) -> Self {
        self.nodes.push((id, name.into()));
        self
    }

    /// Adds every node of `topology`.
    pub fn topology(mut self, topology: &Topology) -> Self {
        for id in topology.node_ids() {
            self.nodes.push((id, topology.node(id).name.clone()));
        }
        self
    }

    fn validate(&self) -> Result<(), LeaseError> {
        if self.secret.len() < MIN_SECRET {
            return Err(LeaseError::Config {
                field: "secret",
                reason: format!(
                    "is {} bytes; use at least {MIN_SECRET} random bytes",
                    self.secret.len()
                ),
            });
        }
        if self.nodes.is_empty() {
            return Err(LeaseError::Config {
                field: "nodes",
                reason: "no node may lease; add the topology's nodes".into(),
            });
        }
        for (i, (id, name)) in self.nodes.iter().enumerate() {
            check_node_name(name)?;
            if self.nodes[..i].iter().any(|(j, n)| j == id || n == name) {
                return Err(LeaseError::Config {
                    field: "nodes",
                    reason: format!("{name} ({id}) is listed twice"),
                });
            }
        }
        if self.request_timeout.is_zero() {
            return Err(LeaseError::Config {
                field: "request_timeout",
                reason: "must be above zero".into(),
            });
        }
        if self.max_connections == 0 {
            return Err(LeaseError::Config {
                field: "max_connections",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// One node's guard lease as the server sees it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseState {
    /// The node.
    pub node: NodeId,
    /// Its name.
    pub name: String,
    /// Time left until it expires (`None`: not held).
    pub remaining: Option<Duration>,
}

struct Inner {
    /// Expiry of each held lease.
    leases: HashMap<NodeId, Instant>,
    writer: Option<WriterRecord>,
}

struct Shared {
    secret: Vec<u8>,
    names: Vec<(NodeId, String)>,
    inner: Mutex<Inner>,
    events: mpsc::UnboundedSender<CoordinationEvent>,
    /// Wakes the expiry task when a lease changed.
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (every update is one insert or remove), so a poisoned lock is used.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn name(&self, id: NodeId) -> &str {
        self.names
            .iter()
            .find(|(i, _)| *i == id)
            .map_or("?", |(_, n)| n.as_str())
    }

    fn id(&self, name: &str) -> Option<NodeId> {
        self.names.iter().find(|(_, n)| n == name).map(|(i, _)| *i)
    }

    fn emit(&self, node: NodeId, held: bool) {
        metrics::gauge!("failover_lease_held", "node" => self.name(node).to_owned()).set(if held {
            1.0
        } else {
            0.0
        });
        // The receiver may be gone (the runtime stopped); leases still work.
        let _ = self
            .events
            .send(CoordinationEvent::GuardLease { node, held });
    }

    fn renew(&self, node: NodeId, ttl: Duration) -> Option<WriterRecord> {
        let now = Instant::now();
        let (granted, writer) = {
            let mut inner = self.lock();
            let expires = now + ttl;
            let granted = match inner.leases.get_mut(&node) {
                Some(e) => {
                    *e = (*e).max(expires);
                    false
                }
                None => {
                    inner.leases.insert(node, expires);
                    true
                }
            };
            (granted, inner.writer)
        };
        let name = self.name(node);
        metrics::counter!("failover_lease_renewals_total", "node" => name.to_owned()).increment(1);
        if granted {
            tracing::info!(
                node = name,
                ttl_ms = ttl.as_millis() as u64,
                "lease server: {name}'s guard lease granted for {ttl:?}; {name} may take writes if it is the named writer"
            );
            self.emit(node, true);
        }
        self.wake.notify_one();
        writer
    }

    fn release(&self, node: NodeId) -> bool {
        let released = self.lock().leases.remove(&node).is_some();
        if released {
            let name = self.name(node);
            tracing::warn!(
                node = name,
                "lease server: {name}'s guard released its lease (it fenced its node and stopped)"
            );
            metrics::counter!("failover_lease_released_total", "node" => name.to_owned())
                .increment(1);
            self.emit(node, false);
            self.wake.notify_one();
        }
        released
    }

    /// Removes expired leases; returns the earliest remaining expiry.
    fn expire(&self, now: Instant) -> Option<Instant> {
        let (expired, next) = {
            let mut inner = self.lock();
            let expired: Vec<NodeId> = inner
                .leases
                .iter()
                .filter(|(_, e)| **e <= now)
                .map(|(n, _)| *n)
                .collect();
            for n in &expired {
                inner.leases.remove(n);
            }
            (expired, inner.leases.values().min().copied())
        };
        for node in expired {
            let name = self.name(node);
            tracing::warn!(
                node = name,
                "lease server: {name}'s guard lease expired without renewal; its guard has fenced {name} by now, or guard and node are down"
            );
            metrics::counter!("failover_lease_expired_total", "node" => name.to_owned())
                .increment(1);
            self.emit(node, false);
        }
        next
    }
}

/// The lease store of the single-controller default, served over HTTP (see
/// the [module docs](super) for the protocol).
///
/// Dropping it (or [`shutdown`](Self::shutdown)) stops serving and stops
/// tracking leases.
pub struct LeaseServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    request_timeout: Duration,
    max_connections: usize,
    accept: Mutex<Option<JoinHandle<()>>>,
    expiry: JoinHandle<()>,
}

impl std::fmt::Debug for LeaseServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for LeaseServer {
    fn drop(&mut self) {
        self.close_listener();
        self.expiry.abort();
    }
}

impl LeaseServer {
    /// Binds and starts serving. Returns the server and the channel of
    /// [`CoordinationEvent::GuardLease`] transitions, for the controller.
    pub async fn start(
        config: LeaseServerConfig,
    ) -> Result<(LeaseServer, mpsc::UnboundedReceiver<CoordinationEvent>), LeaseError> {
        config.validate()?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| LeaseError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| LeaseError::Bind {
            addr: config.listen,
            source,
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            secret: config.secret.into_bytes(),
            names: config.nodes,
            inner: Mutex::new(Inner {
                leases: HashMap::new(),
                writer: None,
            }),
            events: tx,
            wake: Notify::new(),
        });
        let accept = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&shared),
            config.request_timeout,
            config.max_connections,
        ));
        let expiry = tokio::spawn(expiry_loop(Arc::clone(&shared)));
        tracing::info!(%addr, "lease server: serving guard leases on {addr}");
        Ok((
            LeaseServer {
                shared,
                addr,
                request_timeout: config.request_timeout,
                max_connections: config.max_connections,
                accept: Mutex::new(Some(accept)),
                expiry,
            },
            rx,
        ))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://<addr>`, for [`LeaseClient`](super::LeaseClient).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets the writer record that renewals report (the controller calls it
    /// once the writer changed, before promoting the new writer).
    pub fn set_writer(&self, writer: Option<WriterRecord>) {
        self.shared.lock().writer = writer;
        if let Some(w) = writer {
            let name = self.shared.name(w.node);
            tracing::info!(
                node = name,
                epoch = w.epoch.0,
                "lease server: the writer record now names {name} at {}",
                w.epoch
            );
        }
    }

    /// Compare-and-set of the writer record, the runtime's execution of
    /// [`Action::SetWriter`](failover_core::Action::SetWriter): writes `new`
    /// only if the record is still `expected` and, when `guard_absent` names
    /// a node, that node's guard lease is not held — checked under one lock,
    /// so a guard cannot renew between the check and the write. Returns the
    /// reason when refused.
    pub fn compare_and_set_writer(
        &self,
        expected: Option<WriterRecord>,
        new: WriterRecord,
        guard_absent: Option<NodeId>,
    ) -> Result<(), String> {
        let now = Instant::now();
        {
            let mut inner = self.shared.lock();
            if inner.writer != expected {
                return Err(format!(
                    "the writer record is {:?}, not the expected {:?}",
                    inner.writer, expected
                ));
            }
            if let Some(node) = guard_absent {
                if inner.leases.get(&node).is_some_and(|e| *e > now) {
                    return Err(format!(
                        "the guard lease of {} is held again: it is not proven stopped",
                        self.shared.name(node)
                    ));
                }
            }
            inner.writer = Some(new);
        }
        let name = self.shared.name(new.node);
        tracing::info!(
            node = name,
            epoch = new.epoch.0,
            "lease server: the writer record now names {name} at {}",
            new.epoch
        );
        Ok(())
    }

    /// The writer record renewals report now.
    pub fn writer(&self) -> Option<WriterRecord> {
        self.shared.lock().writer
    }

    /// Convenience for [`set_writer`](Self::set_writer) by node and epoch.
    pub fn set_writer_at(&self, node: NodeId, epoch: Epoch) {
        self.set_writer(Some(WriterRecord::new(node, epoch)));
    }

    /// Whether `node`'s guard lease is held now.
    pub fn is_held(&self, node: NodeId) -> bool {
        let now = Instant::now();
        self.shared
            .lock()
            .leases
            .get(&node)
            .is_some_and(|e| *e > now)
    }

    /// Every configured node's lease now.
    pub fn leases(&self) -> Vec<LeaseState> {
        let now = Instant::now();
        let inner = self.shared.lock();
        self.shared
            .names
            .iter()
            .map(|(id, name)| LeaseState {
                node: *id,
                name: name.clone(),
                remaining: inner.leases.get(id).filter(|e| **e > now).map(|e| *e - now),
            })
            .collect()
    }

    /// Stops accepting connections and drops those in progress, while the
    /// leases keep counting down and expiring (what a guard sees when the
    /// controller's network path is cut).
    pub fn close_listener(&self) {
        let handle = self.accept.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            h.abort();
            tracing::info!(addr = %self.addr, "lease server: stopped listening on {}", self.addr);
        }
    }

    /// Listens again on the same address after
    /// [`close_listener`](Self::close_listener) (the path is restored).
    /// Does nothing if it is listening.
    pub async fn resume_listener(&self) -> Result<(), LeaseError> {
        if self
            .accept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return Ok(());
        }
        let listener = TcpListener::bind(self.addr)
            .await
            .map_err(|source| LeaseError::Bind {
                addr: self.addr,
                source,
            })?;
        let task = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&self.shared),
            self.request_timeout,
            self.max_connections,
        ));
        *self.accept.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        tracing::info!(addr = %self.addr, "lease server: listening again on {}", self.addr);
        Ok(())
    }

    /// Stops serving and tracking leases.
    pub fn shutdown(self) {
        drop(self);
    }
}

async fn expiry_loop(shared: Arc<Shared>) {
    loop {
        let next = shared.expire(Instant::now());
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = shared.wake.notified() => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    request_timeout: Duration,
    max_connections: usize,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(max_connections));
    // Owned here, so aborting this task aborts every connection too.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "lease server: accept failed");
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let shared = Arc::clone(&shared);
        connections.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(handle(&shared, req, request_timeout).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .keep_alive(false)
                .max_buf_size(16 * 1024)
                .timer(TokioTimer::new())
                .header_read_timeout(request_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(request_timeout * 2, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "lease server: connection failed"),
                Err(_) => tracing::debug!(%peer, "lease server: connection timed out"),
            }
        });
    }
}

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    metrics::counter!("failover_lease_requests_refused_total", "status" => status.as_u16().to_string())
        .increment(1);
    json(status, &ErrorReply { error: message })
}

fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    let Some(value) = req.headers().get(http::header::AUTHORIZATION) else {
        return false;
    };
    let Some(token) = value.as_bytes().strip_prefix(b"Bearer ") else {
        return false;
    };
    secrets_equal(token, &shared.secret)
}

async fn handle(
    shared: &Shared,
    req: Request<Incoming>,
    request_timeout: Duration,
) -> Response<Full<Bytes>> {
    if !authorized(shared, &req) {
        tracing::warn!(
            path = req.uri().path(),
            "lease server: refused a request without the right secret"
        );
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong secret in `Authorization: Bearer <secret>`".into(),
        );
    }
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.split('/').collect();
    let (name, op) = match parts.as_slice() {
        ["", "v1", "guard", name, op] if matches!(*op, "renew" | "release") => {
            ((*name).to_owned(), (*op).to_owned())
        }
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no such path {path}; use /v1/guard/<node>/renew or /release"),
            )
        }
    };
    if req.method() != Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} {path}: only POST is served", req.method()),
        );
    }
    let Some(node) = shared.id(&name) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown node {name:?}: not in this controller's topology"),
        );
    };
    let body = Limited::new(req.into_body(), MAX_BODY);
    let body = match tokio::time::timeout(request_timeout, body.collect()).await {
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!("body not received within {request_timeout:?}"),
            )
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {MAX_BODY} bytes"),
            )
        }
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("body not readable: {e}")),
        Ok(Ok(b)) => b.to_bytes(),
    };
    match op.as_str() {
        "renew" => {
            let request: RenewRequest = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("renew body must be {{\"ttl_ms\": <milliseconds>}}: {e}"),
                    )
                }
            };
            let ttl = Duration::from_millis(request.ttl_ms);
            if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "ttl_ms {} is outside {}..={}",
                        request.ttl_ms,
                        MIN_TTL.as_millis(),
                        MAX_TTL.as_millis()
                    ),
                );
            }
            let writer = shared.renew(node, ttl).map(|w| WireWriter {
                node: shared.name(w.node).to_owned(),
                epoch: w.epoch.0,
                draining: w.draining,
            });
            json(StatusCode::OK, &RenewReply { writer })
        }
        _ => {
            let released = shared.release(node);
            json(StatusCode::OK, &ReleaseReply { released })
        }
    }
}
