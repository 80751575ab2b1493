//! [`LeaseClient`]: a guard's side of the lease protocol.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use failover_core::ports::GuardLease;
use failover_core::{Epoch, NodeId, PortError, WriterRecord};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::wire::{ErrorReply, ReleaseReply, RenewReply, RenewRequest};
use super::{check_node_name, LeaseError, MAX_TTL, MIN_TTL};

/// Largest reply the client reads, bytes.
const MAX_REPLY: usize = 16 * 1024;

/// Implements [`GuardLease`] over the HTTP protocol of a
/// [`LeaseServer`](super::LeaseServer). Every request opens a fresh
/// connection (nothing stale can hide a cut path) and must complete within
/// [`timeout`](Self::with_timeout).
#[derive(Clone)]
pub struct LeaseClient {
    url: String,
    authority: String,
    secret: String,
    nodes: Vec<(NodeId, String)>,
    timeout: Duration,
}

impl std::fmt::Debug for LeaseClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseClient")
            .field("url", &self.url)
            .field("nodes", &self.nodes)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl LeaseClient {
    /// A client of the server at `url` (`http://host:port`), sending
    /// `secret`. The default per-request timeout is 1 s.
    pub fn new(url: &str, secret: impl Into<String>) -> Result<Self, LeaseError> {
        let uri: Uri = url.parse().map_err(|e| LeaseError::Config {
            field: "lease server url",
            reason: format!("{url:?} is not a URL: {e}"),
        })?;
        if uri.scheme_str() != Some("http") {
            return Err(LeaseError::Config {
                field: "lease server url",
                reason: format!("{url:?} must start with http://"),
            });
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(LeaseError::Config {
                field: "lease server url",
                reason: format!("{url:?} must be http://host:port with no path"),
            });
        }
        let Some(authority) = uri.authority() else {
            return Err(LeaseError::Config {
                field: "lease server url",
                reason: format!("{url:?} names no host"),
            });
        };
        let authority = match authority.port_u16() {
            Some(_) => authority.as_str().to_owned(),
            None => format!("{}:80", authority.as_str()),
        };
        let secret = secret.into();
        if secret.is_empty() || secret.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
            return Err(LeaseError::Config {
                field: "secret",
                reason: "must be non-empty printable ASCII without spaces".into(),
            });
        }
        Ok(LeaseClient {
            url: format!("http://{authority}"),
            authority,
            secret,
            nodes: Vec::new(),
            timeout: Duration::from_secs(1),
        })
    }

    /// Maps `id` to the node name the server knows it by.
    pub fn with_node(mut self, id: NodeId, name: &str) -> Result<Self, LeaseError> {
        check_node_name(name)?;
        self.nodes.retain(|(i, _)| *i != id);
        self.nodes.push((id, name.to_owned()));
        Ok(self)
    }

    /// Replaces the per-request timeout (connect, send and reply together).
    pub fn with_timeout(mut self, timeout: Duration) -> Result<Self, LeaseError> {
        if timeout.is_zero() {
            return Err(LeaseError::Config {
                field: "timeout",
                reason: "must be above zero".into(),
            });
        }
        self.timeout = timeout;
        Ok(self)
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn name(&self, id: NodeId) -> Result<&str, LeaseError> {
        self.nodes
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, n)| n.as_str())
            .ok_or_else(|| LeaseError::Config {
                field: "node",
                reason: format!("{id} has no name; add it with LeaseClient::with_node"),
            })
    }

    fn id(&self, name: &str) -> Option<NodeId> {
        self.nodes.iter().find(|(_, n)| n == name).map(|(i, _)| *i)
    }

    /// Renews `node`'s lease for `ttl`; returns the writer record.
    pub async fn renew_lease(
        &self,
        node: NodeId,
        ttl: Duration,
    ) -> Result<Option<WriterRecord>, LeaseError> {
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(LeaseError::Config {
                field: "ttl",
                reason: format!("{ttl:?} is outside {MIN_TTL:?}..={MAX_TTL:?}"),
            });
        }
        let name = self.name(node)?;
        let body = serde_json::to_vec(&RenewRequest {
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        })
        .map_err(|e| self.malformed(e.to_string()))?;
        let reply = self
            .post(&format!("/v1/guard/{name}/renew"), Bytes::from(body))
            .await?;
        let reply: RenewReply = serde_json::from_slice(&reply)
            .map_err(|e| self.malformed(format!("renew reply: {e}")))?;
        match reply.writer {
            None => Ok(None),
            Some(w) => {
                let id = self.id(&w.node).ok_or_else(|| {
                    self.malformed(format!(
                        "the writer record names {:?}, a node this guard does not know",
                        w.node
                    ))
                })?;
                Ok(Some(
                    WriterRecord::new(id, Epoch(w.epoch)).with_draining(w.draining),
                ))
            }
        }
    }

    /// Releases `node`'s lease; returns whether it was held.
    pub async fn release_lease(&self, node: NodeId) -> Result<bool, LeaseError> {
        let name = self.name(node)?;
        let reply = self
            .post(&format!("/v1/guard/{name}/release"), Bytes::new())
            .await?;
        let reply: ReleaseReply = serde_json::from_slice(&reply)
            .map_err(|e| self.malformed(format!("release reply: {e}")))?;
        Ok(reply.released)
    }

    fn malformed(&self, reason: String) -> LeaseError {
        LeaseError::Malformed {
            url: self.url.clone(),
            reason,
        }
    }

    fn unreachable(&self, reason: String) -> LeaseError {
        LeaseError::Unreachable {
            url: self.url.clone(),
            reason,
        }
    }

    async fn post(&self, path: &str, body: Bytes) -> Result<Bytes, LeaseError> {
        match tokio::time::timeout(self.timeout, self.exchange(path, body)).await {
            Ok(r) => r,
            Err(_) => Err(LeaseError::Timeout {
                url: self.url.clone(),
                after: self.timeout,
            }),
        }
    }

    async fn exchange(&self, path: &str, body: Bytes) -> Result<Bytes, LeaseError> {
        let tcp = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| self.unreachable(format!("connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| self.unreachable(format!("handshake: {e}")))?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = Request::post(path)
            .header(http::header::HOST, self.authority.as_str())
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.secret),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| self.malformed(format!("request not built: {e}")))?;
        let result = async {
            let resp = sender
                .send_request(request)
                .await
                .map_err(|e| self.unreachable(format!("request: {e}")))?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_REPLY)
                .collect()
                .await
                .map_err(|e| self.unreachable(format!("reply body: {e}")))?
                .to_bytes();
            Ok::<_, LeaseError>((status, bytes))
        }
        .await;
        conn.abort();
        let (status, bytes) = result?;
        if status == StatusCode::OK {
            return Ok(bytes);
        }
        let message = serde_json::from_slice::<ErrorReply>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => LeaseError::Auth {
                url: self.url.clone(),
                message,
            },
            s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => {
                self.unreachable(format!("{s}: {message}"))
            }
            s => LeaseError::Refused {
                url: self.url.clone(),
                status: s.as_u16(),
                message,
            },
        })
    }
}

#[async_trait]
impl GuardLease for LeaseClient {
    async fn renew(&self, node: NodeId, ttl: Duration) -> Result<Option<WriterRecord>, PortError> {
        self.renew_lease(node, ttl).await.map_err(Into::into)
    }

    async fn release(&self, node: NodeId) -> Result<(), PortError> {
        self.release_lease(node)
            .await
            .map(|_| ())
            .map_err(Into::into)
    }
}
