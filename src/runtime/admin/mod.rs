//! The operator's HTTP API ([`RuntimeBuilder::admin`](super::RuntimeBuilder::admin)),
//! axum on hyper 1, plain HTTP or TLS (rustls).
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /status` | JSON: each region's health, desired and applied weight and capacity; the writer, epoch and leadership; a promotion's phase and the planner's bound on the rest of it from that phase (`bound_ms`); each database node's role and lag; recent events |
//! | `GET /metrics` | the process's metrics in Prometheus' text format |
//! | `GET /history?limit=N` | JSON: the last `N` (default 100) operator commands, events and actions from the audit log |
//! | `POST /traffic` | body `{"region": "us-east", "requests": 120, "errors": 3, "slow": 0, "consecutive_errors": 0}`: one aggregate of real request outcomes from a service instance (failover-tower's `AdminTrafficSink`), fed to `policy.passive`; accepted by every controller, leader or not (202), 409 when the policy has no `passive` |
//! | `POST /commands/drain`, `/commands/undrain` | body `{"region": "us-east"}` |
//! | `POST /commands/switchover` | body `{"to": "pg-west"}` |
//! | `POST /commands/force-promote` | body `{"node": "pg-west"}` |
//! | `POST /commands/pause`, `/resume`, `/abort` | no body, or `{}` |
//!
//! Every command body may carry `"reason": "…"`, which the audit log keeps.
//!
//! - **Auth:** every request carries `Authorization: Bearer <token>`, one of
//!   [`AdminAuth`]'s tokens, compared in constant time. Without one, or with
//!   a wrong one, the answer is 401 and nothing is read or changed.
//! - **Audit:** each command is an `admin_command` record naming the caller
//!   (the token's name), the peer address, the command, the reason and the
//!   outcome; the runtime's own `command` record follows when it is handled.
//! - **Limits:** bodies over [`AdminConfig::max_body`] bytes get 413; a
//!   request not answered within [`AdminConfig::request_timeout`] gets 503
//!   (headers must arrive within it too); at most
//!   [`AdminConfig::max_connections`] connections are served at once.
//! - **Errors** are JSON `{"error": "…"}`: a body that is not JSON or has a
//!   wrong field is 400 naming the field and the rule; a command sent to a
//!   coordinated controller that does not lead is 503 saying so and naming
//!   the leader (`"leader": false`, `"current_leader": {"controller": "ctl-a",
//!   "admin": "http://10.0.0.2:9850"}`, `admin` when the leader listens on a
//!   specific address); a command to a stopped runtime is 503.
//! - A command answered 202 has been handed to the controller; watch
//!   `/status` for its effect.

mod auth;
mod routes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use failover_core::{Policy, Topology};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use auth::{AdminAuth, MIN_TOKEN_LEN};

use super::audit::AuditLog;
use super::handle::RuntimeHandle;
use super::RuntimeError;

/// Settings of the admin API; [`AdminConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AdminConfig {
    /// Address to listen on (`127.0.0.1:0` picks a free port; see
    /// [`Runtime::admin_addr`](super::Runtime::admin_addr)).
    pub listen: SocketAddr,
    /// The tokens accepted, by name.
    pub auth: AdminAuth,
    /// Serve HTTPS with this rustls configuration instead of plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Largest request body accepted, bytes (default 16 KiB).
    pub max_body: usize,
    /// How long a request may take, from its first byte to its answer
    /// (default 10 s).
    pub request_timeout: Duration,
    /// Connections served at once; more wait in the accept queue (default 32).
    pub max_connections: usize,
    /// The Prometheus recorder `/metrics` renders. Without one, the first
    /// admin API of the process installs a Prometheus recorder as the
    /// global `metrics` recorder (and later ones share it); if the
    /// application installed a recorder of its own first, `/metrics`
    /// answers 501 saying so — then pass the handle of a Prometheus
    /// recorder you install instead.
    pub metrics: Option<PrometheusHandle>,
}

impl AdminConfig {
    /// Listens on `listen`, accepts `auth`'s tokens, plain HTTP, the
    /// default limits.
    pub fn new(listen: SocketAddr, auth: AdminAuth) -> Self {
        AdminConfig {
            listen,
            auth,
            tls: None,
            max_body: 16 * 1024,
            request_timeout: Duration::from_secs(10),
            max_connections: 32,
            metrics: None,
        }
    }
}

/// The process-wide Prometheus recorder the admin APIs install when given none.
static RECORDER: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

fn process_recorder() -> Result<PrometheusHandle, String> {
    RECORDER
        .get_or_init(|| {
            PrometheusBuilder::new().install_recorder().map_err(|error| {
                format!(
                    "no Prometheus recorder: {error} (the application installed a metrics recorder of its own; pass a Prometheus one in AdminConfig::metrics)"
                )
            })
        })
        .clone()
}

/// What the request handlers share.
pub(crate) struct AdminState {
    pub(crate) handle: RuntimeHandle,
    pub(crate) topology: Topology,
    /// For the planner's bound on a promotion in `/status`.
    pub(crate) policy: Policy,
    pub(crate) auth: AdminAuth,
    pub(crate) audit: AuditLog,
    pub(crate) audit_path: Option<PathBuf>,
    pub(crate) metrics: Result<PrometheusHandle, String>,
    pub(crate) request_timeout: Duration,
}

/// The running admin API: its address and its accept task.
pub(crate) struct AdminServer {
    pub(crate) addr: SocketAddr,
    pub(crate) task: JoinHandle<()>,
}

impl AdminServer {
    /// Checks the settings and binds `config.listen`; nothing is served
    /// until [`AdminBound::serve`]. (Done before the runtime's tasks start,
    /// so a bad setting or a taken port leaves nothing running.)
    pub(crate) async fn bind(config: AdminConfig) -> Result<AdminBound, RuntimeError> {
        config.auth.check().map_err(RuntimeError::Setup)?;
        if config.max_connections == 0 {
            return Err(RuntimeError::Setup(
                "AdminConfig::max_connections is 0; at least 1 is needed".into(),
            ));
        }
        let listen = config.listen;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| RuntimeError::Admin { listen, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| RuntimeError::Admin { listen, source })?;
        // Installed now, before the runtime registers its metrics.
        let metrics = match config.metrics.clone() {
            Some(handle) => Ok(handle),
            None => process_recorder(),
        };
        Ok(AdminBound {
            config,
            listener,
            addr,
            metrics,
        })
    }
}

/// A bound, not yet serving, admin API.
pub(crate) struct AdminBound {
    config: AdminConfig,
    listener: TcpListener,
    addr: SocketAddr,
    metrics: Result<PrometheusHandle, String>,
}

impl AdminBound {
    /// The URL it answers at, to advertise to other controllers; `None`
    /// when it listens on an unspecified address (`0.0.0.0`), which names
    /// no host another machine could reach.
    pub(crate) fn url(&self) -> Option<String> {
        if self.addr.ip().is_unspecified() {
            return None;
        }
        let scheme = if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Some(format!("{scheme}://{}", self.addr))
    }

    /// Serves the runtime behind `handle` until the task is aborted.
    pub(crate) fn serve(
        self,
        handle: RuntimeHandle,
        topology: Topology,
        policy: Policy,
        audit: AuditLog,
        audit_path: Option<PathBuf>,
    ) -> AdminServer {
        let AdminBound {
            config,
            listener,
            addr,
            metrics,
        } = self;
        let state = Arc::new(AdminState {
            handle,
            topology,
            policy,
            auth: config.auth,
            audit,
            audit_path,
            metrics,
            request_timeout: config.request_timeout,
        });
        let router = routes::router(state, config.max_body);
        tracing::info!(%addr, tls = config.tls.is_some(), "admin API listening");
        let task = tokio::spawn(accept_loop(
            listener,
            router,
            config.tls.map(tokio_rustls::TlsAcceptor::from),
            config.request_timeout,
            config.max_connections,
        ));
        AdminServer { addr, task }
    }
}

/// The peer of a connection, for the audit log.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub(crate) SocketAddr);

async fn accept_loop(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
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
                Err(error) => {
                    tracing::debug!(%error, "admin API: accept failed");
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let router = router.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let _permit = permit;
            match tls {
                None => serve(stream, peer, router, request_timeout).await,
                Some(acceptor) => {
                    match tokio::time::timeout(request_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve(stream, peer, router, request_timeout).await,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "admin API: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "admin API: TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// Serves one connection (keep-alive allowed, each request under the time limit).
async fn serve<IO>(io: IO, peer: SocketAddr, router: axum::Router, request_timeout: Duration)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper::service::Service as _;
    let tower = hyper_util::service::TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |mut req: http::Request<_>| {
        req.extensions_mut().insert(Peer(peer));
        tower.call(req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(64 * 1024)
        .timer(TokioTimer::new())
        .header_read_timeout(request_timeout);
    if let Err(error) = builder.serve_connection(TokioIo::new(io), service).await {
        tracing::debug!(%peer, %error, "admin API: connection ended with an error");
    }
}
