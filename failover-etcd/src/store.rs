//! The etcd client, with every request bounded by `request_timeout` and
//! every failure turned into an [`EtcdError`] that names the endpoints.

use std::future::Future;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, ConnectOptions, GetOptions, KeyValue, LeaseKeepAliveStream, LeaseKeeper, Txn,
    TxnResponse,
};

use crate::{EtcdConfig, EtcdError};

/// Pause between attempts of a request that found no serving member.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// A lease's keep-alive stream, opened on first use and dropped on error.
pub(crate) type KeepAlive = Option<(LeaseKeeper, LeaseKeepAliveStream)>;

/// A connected client (connections are made lazily, per request).
#[derive(Clone)]
pub(crate) struct Store {
    client: Client,
    endpoints: String,
    request_timeout: Duration,
}

impl Store {
    /// Builds the client. No request is made yet, so an unreachable cluster
    /// shows at the first request, as `Unavailable` or `Timeout`.
    pub(crate) async fn connect(config: &EtcdConfig) -> Result<Self, EtcdError> {
        let endpoints = config.endpoints_text();
        let options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            // Detects a member that stopped answering on an open connection.
            .with_keep_alive(Duration::from_secs(1), config.request_timeout)
            .with_keep_alive_while_idle(true)
            // A member cut off from the majority refuses at once instead of
            // serving stale reads or hanging.
            .with_require_leader(true);
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(|e| EtcdError::from_client(&endpoints, "connect", e))?;
        Ok(Store {
            client,
            endpoints,
            request_timeout: config.request_timeout,
        })
    }

    /// The configured endpoints, for messages.
    pub(crate) fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// Runs a request, bounded by the request timeout in total, and records
    /// its latency. A request that fails as `Unavailable` (a member just
    /// died under an open connection, or has no leader) is sent again while
    /// time is left: the client's balancer then picks another member. Only
    /// for requests that are safe to repeat; see `set_writer` and
    /// `campaign` for how a repeated conditional write is recognised.
    pub(crate) async fn call<T, F>(
        &self,
        operation: &'static str,
        mut request: impl FnMut() -> F,
    ) -> Result<T, EtcdError>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.request_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.call_within(operation, left, request()).await {
                Err(EtcdError::Unavailable { .. })
                    if deadline.saturating_duration_since(Instant::now()) > RETRY_PAUSE * 2 =>
                {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(EtcdError::Timeout { .. }) => {
                    return Err(EtcdError::Timeout {
                        endpoints: self.endpoints.clone(),
                        operation,
                        after: self.request_timeout,
                    })
                }
                other => return other,
            }
        }
    }

    /// One attempt of a request, at most `limit`.
    async fn call_within<T>(
        &self,
        operation: &'static str,
        limit: Duration,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, EtcdError> {
        let start = Instant::now();
        let result = match tokio::time::timeout(limit, request).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(EtcdError::from_client(&self.endpoints, operation, e)),
            Err(_) => Err(EtcdError::Timeout {
                endpoints: self.endpoints.clone(),
                operation,
                after: limit,
            }),
        };
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::histogram!("failover_etcd_request_seconds", "operation" => operation, "outcome" => outcome)
            .record(start.elapsed().as_secs_f64());
        result
    }

    /// Grants a lease of `ttl` (whole seconds); returns its id.
    pub(crate) async fn grant(
        &self,
        operation: &'static str,
        ttl: Duration,
    ) -> Result<i64, EtcdError> {
        let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let resp = self
            .call(operation, || {
                let mut client = self.client.clone();
                async move { client.lease_grant(secs, None).await }
            })
            .await?;
        if !resp.error().is_empty() {
            return Err(EtcdError::Unavailable {
                endpoints: self.endpoints.clone(),
                operation,
                reason: resp.error().to_owned(),
            });
        }
        Ok(resp.id())
    }

    /// Revokes a lease (deleting its keys). A lease already gone is fine.
    pub(crate) async fn revoke(&self, id: i64) -> Result<(), EtcdError> {
        match self
            .call("revoke lease", || {
                let mut client = self.client.clone();
                async move { client.lease_revoke(id).await }
            })
            .await
        {
            Ok(_) => Ok(()),
            // NotFound: the lease already expired, which is what we wanted.
            Err(e) if e.kind() == failover_core::PortErrorKind::Conflict => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sends one keep-alive for lease `id` and waits for its answer, at most
    /// `limit` (and the request timeout). Returns the TTL left, in seconds:
    /// 0 when the lease is gone at the store. Opens the stream on first use;
    /// on any error the stream is dropped, to be reopened next time.
    pub(crate) async fn keep_alive_once(
        &self,
        stream: &mut KeepAlive,
        id: i64,
        limit: Duration,
    ) -> Result<i64, EtcdError> {
        let deadline = Instant::now() + limit.min(self.request_timeout);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let result = self
                .call_within("lease keep-alive", left, async {
                    if stream.is_none() {
                        *stream = Some(self.client.clone().lease_keep_alive(id).await?);
                    }
                    let Some((keeper, responses)) = stream.as_mut() else {
                        return Err(etcd_client::Error::LeaseKeepAliveError(
                            "keep-alive stream missing".into(),
                        ));
                    };
                    keeper.keep_alive().await?;
                    match responses.message().await? {
                        Some(resp) => Ok(resp.ttl()),
                        None => Err(etcd_client::Error::LeaseKeepAliveError(
                            "keep-alive stream closed by the server".into(),
                        )),
                    }
                })
                .await;
            match result {
                Ok(ttl) => return Ok(ttl),
                // The stream's member died: a keep-alive is safe to repeat
                // on a new stream, which the balancer opens elsewhere.
                Err(EtcdError::Unavailable { .. })
                    if deadline.saturating_duration_since(Instant::now()) > RETRY_PAUSE * 2 =>
                {
                    *stream = None;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => {
                    *stream = None;
                    return Err(e);
                }
            }
        }
    }

    /// Every key under `prefix` and the store revision they were read at.
    pub(crate) async fn get_prefix(
        &self,
        operation: &'static str,
        prefix: &str,
    ) -> Result<(Vec<KeyValue>, i64), EtcdError> {
        let mut resp = self
            .call(operation, || {
                let mut client = self.client.clone();
                let prefix = prefix.to_owned();
                async move {
                    client
                        .get(prefix, Some(GetOptions::new().with_prefix()))
                        .await
                }
            })
            .await?;
        let revision =
            resp.header()
                .map(|h| h.revision())
                .ok_or_else(|| EtcdError::Unavailable {
                    endpoints: self.endpoints.clone(),
                    operation,
                    reason: "reply without a header".into(),
                })?;
        Ok((resp.take_kvs(), revision))
    }

    /// One key, if present.
    pub(crate) async fn get(
        &self,
        operation: &'static str,
        key: &str,
    ) -> Result<Option<KeyValue>, EtcdError> {
        let mut resp = self
            .call(operation, || {
                let mut client = self.client.clone();
                let key = key.to_owned();
                async move { client.get(key, None).await }
            })
            .await?;
        Ok(resp.take_kvs().into_iter().next())
    }

    /// One transaction.
    pub(crate) async fn txn(
        &self,
        operation: &'static str,
        txn: Txn,
    ) -> Result<TxnResponse, EtcdError> {
        self.call(operation, || {
            let mut client = self.client.clone();
            let txn = txn.clone();
            async move { client.txn(txn).await }
        })
        .await
    }

    /// A watch client handle (a clone of the connection).
    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }
}
