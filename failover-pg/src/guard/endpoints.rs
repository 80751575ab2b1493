//! The guard's node endpoints: what a load balancer asks to find the writer
//! and the replicas, as Patroni's agent answers HAProxy.
//!
//! Served (HTTP/1.1, hyper) when [`GuardSettings::http`] is set:
//!
//! | request | 200 when | otherwise |
//! |---|---|---|
//! | `GET /writer` | the node is an unfenced primary **now** (checked in SQL for this request), the guard's lease is valid **now** and for [`GuardSettings::writer_drain`] more (from the instant its last successful renewal was sent, as the guard counts it), the writer record the lease returned names this node and does not mark it draining for a switchover, and the guard saw the node take writes as the writer at that record's epoch | 503 |
//! | `GET /replica?max_lag=BYTES` | the node is in recovery, its WAL receiver is `streaming`, and it has replayed up to within `max_lag` bytes of the upstream's last reported WAL end (default [`DEFAULT_MAX_LAG_BYTES`]) | 503 (400 for a `max_lag` that is not a whole number) |
//! | `GET /health` | the node answers SQL | 503 |
//!
//! `HEAD` is answered like `GET`, without a body. Every answer carries a
//! small JSON body with the reason, for the operator reading HAProxy's log or
//! `curl`: `{"node":"pg-east","check":"writer","ok":false,"reason":"fenced"}`.
//! The reasons: `"fenced"`, `"replica"`, `"no lease: ..."`,
//! `"draining: ..."` (before the guard's own fence, or for a switchover),
//! `"not writer at epoch 3 (the writer record names node 1)"`,
//! `"lag 12345 > 1000"`, `"not streaming (wal receiver: none)"`,
//! `"unreachable: ..."`.
//!
//! `/writer` never answers from a cached guess: the node's role and fence
//! are read for the request, and the lease and writer record are the ones
//! the guard verified within its lease. A node fenced by the guard, by the
//! controller for a switchover, or by hand turns 503 on the next check.
//!
//! **Draining.** So that no connection reaches a fenced node, `/writer` turns
//! 503 *before* the fence, for as long as a load balancer needs to mark the
//! node down: from the moment the controller marks the writer record
//! draining for a planned switchover (it fences `policy.writer_drain`
//! later), and [`GuardSettings::writer_drain`] before the guard's own fence
//! when no lease renewal came. `/replica` and `/health` are unaffected.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections at once (each check opens
//! one PostgreSQL connection), one request per connection (no keep-alive),
//! headers within [`REQUEST_TIMEOUT`], the whole exchange within twice that,
//! and the SQL check within the cluster's own [`PgTimeouts`](crate::PgTimeouts)
//! and [`REQUEST_TIMEOUT`].
//!
//! Metrics: `failover_guard_http_requests_total{node, check, status}`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use failover_core::{Lsn, NodeId};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{GuardSettings, GuardStatus};
use crate::{NodeRole, NodeStatus, PgCluster, PgError};

/// `/replica`'s lag limit when the request gives no `max_lag`: 16 MiB, one
/// WAL segment, in bytes.
pub const DEFAULT_MAX_LAG_BYTES: u64 = 16 * 1024 * 1024;

/// How long a client has to send its request headers, and the bound on the
/// SQL check; the whole exchange gets twice this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 16;

/// What the endpoints need: the guard's verified view and the node itself.
pub(super) struct Endpoints {
    pub(super) node: NodeId,
    pub(super) name: String,
    pub(super) settings: GuardSettings,
    pub(super) guard: watch::Receiver<GuardStatus>,
    pub(super) pg: Arc<PgCluster>,
}

/// Binds `addr` (outside any async context, so
/// [`NodeGuard::start`](super::NodeGuard::start) can report a taken port).
pub(super) fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), PgError> {
    let bad = |e: std::io::Error| PgError::GuardSetting {
        field: "http",
        reason: format!("cannot serve the node endpoints on {addr}: {e}; choose a free address"),
    };
    let std_listener = std::net::TcpListener::bind(addr).map_err(bad)?;
    std_listener.set_nonblocking(true).map_err(bad)?;
    let local = std_listener.local_addr().map_err(bad)?;
    let listener = TcpListener::from_std(std_listener).map_err(bad)?;
    Ok((listener, local))
}

/// Accepts connections until aborted (by the [`NodeGuard`](super::NodeGuard)
/// that owns the task). Aborting it aborts every connection too.
pub(super) async fn serve(listener: TcpListener, endpoints: Arc<Endpoints>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(node = %endpoints.name, error = %e, "guard {}: node endpoints: accept failed", endpoints.name);
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let endpoints = Arc::clone(&endpoints);
        connections.spawn(async move {
            let _permit = permit;
            let name = endpoints.name.clone();
            let service = hyper::service::service_fn(move |req| {
                let endpoints = Arc::clone(&endpoints);
                async move { Ok::<_, Infallible>(endpoints.handle(req).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .keep_alive(false)
                .max_buf_size(16 * 1024)
                .timer(TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(REQUEST_TIMEOUT * 2, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(node = %name, %peer, error = %e, "guard {name}: node endpoints: connection failed")
                }
                Err(_) => {
                    tracing::debug!(node = %name, %peer, "guard {name}: node endpoints: connection timed out")
                }
            }
        });
    }
}

/// One check's answer.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Answer {
    pub(super) ok: bool,
    pub(super) reason: String,
    /// `/replica` only: the lag measured, bytes.
    pub(super) lag_bytes: Option<u64>,
}

impl Answer {
    fn yes(reason: impl Into<String>) -> Self {
        Answer {
            ok: true,
            reason: reason.into(),
            lag_bytes: None,
        }
    }

    fn no(reason: impl Into<String>) -> Self {
        Answer {
            ok: false,
            reason: reason.into(),
            lag_bytes: None,
        }
    }
}

impl Endpoints {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let head = req.method() == Method::HEAD;
        if req.method() != Method::GET && !head {
            return self.reply(
                "",
                StatusCode::METHOD_NOT_ALLOWED,
                &Answer::no(format!(
                    "method {} not allowed: use GET or HEAD",
                    req.method()
                )),
                head,
            );
        }
        let check = req.uri().path().trim_end_matches('/').to_owned();
        let answer = match check.as_str() {
            "/writer" => self.writer().await,
            "/replica" => match max_lag(req.uri().query()) {
                Ok(max) => self.replica(max).await,
                Err(e) => {
                    return self.reply("replica", StatusCode::BAD_REQUEST, &Answer::no(e), head)
                }
            },
            "/health" => self.health().await,
            _ => {
                return self.reply(
                    "",
                    StatusCode::NOT_FOUND,
                    &Answer::no(format!(
                        "no endpoint {:?}: use /writer, /replica or /health",
                        req.uri().path()
                    )),
                    head,
                )
            }
        };
        let status = if answer.ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        self.reply(&check[1..], status, &answer, head)
    }

    fn reply(
        &self,
        check: &str,
        status: StatusCode,
        answer: &Answer,
        head: bool,
    ) -> Response<Full<Bytes>> {
        metrics::counter!(
            "failover_guard_http_requests_total",
            "node" => self.name.clone(),
            "check" => if check.is_empty() { "other".to_owned() } else { check.to_owned() },
            "status" => status.as_u16().to_string()
        )
        .increment(1);
        let mut body = format!(
            "{{\"node\":{},\"check\":{},\"ok\":{},\"reason\":{}",
            json_string(&self.name),
            json_string(check),
            answer.ok,
            json_string(&answer.reason)
        );
        if let Some(lag) = answer.lag_bytes {
            body.push_str(&format!(",\"lag_bytes\":{lag}"));
        }
        body.push_str("}\n");
        let mut resp = Response::new(Full::new(if head {
            Bytes::new()
        } else {
            Bytes::from(body)
        }));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        resp
    }

    /// Reads the node's status for this request, bounded.
    async fn live(&self) -> Result<NodeStatus, String> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.pg.status(self.node)).await {
            Ok(Ok(st)) => Ok(st),
            Ok(Err(e)) => Err(format!("unreachable: {e}")),
            Err(_) => Err(format!(
                "unreachable: no answer to SQL within {REQUEST_TIMEOUT:?}"
            )),
        }
    }

    async fn writer(&self) -> Answer {
        let live = self.live().await;
        let guard = self.guard.borrow().clone();
        writer_answer(&guard, &self.settings, Instant::now(), live)
    }

    async fn replica(&self, max_lag: u64) -> Answer {
        match self.live().await {
            Ok(st) => replica_answer(&st, max_lag),
            Err(e) => Answer::no(e),
        }
    }

    async fn health(&self) -> Answer {
        match self.live().await {
            Ok(st) => Answer::yes(match st.role {
                NodeRole::Primary if st.fenced => "up: a fenced primary",
                NodeRole::Primary => "up: a primary",
                NodeRole::Replica => "up: a replica",
            }),
            Err(e) => Answer::no(e),
        }
    }
}

/// `/writer`: the node's live state, then the guard's lease and record.
pub(super) fn writer_answer(
    guard: &GuardStatus,
    settings: &GuardSettings,
    now: Instant,
    live: Result<NodeStatus, String>,
) -> Answer {
    let st = match live {
        Ok(st) => st,
        Err(e) => return Answer::no(e),
    };
    if st.role == NodeRole::Replica {
        return Answer::no("replica");
    }
    if st.fenced {
        return Answer::no("fenced");
    }
    // The lease as the guard counts it, re-checked at this instant: the
    // status may have been published before the deadline passed.
    let lease_until = guard
        .last_renewal
        .map(|sent| sent + settings.valid_for())
        .and_then(|until| until.checked_sub(settings.fence_budget));
    match lease_until {
        Some(until) if guard.lease_held && now < until => {
            // Draining before the guard's own fence: a load balancer marks
            // the node down before it is fenced.
            let drain_from = until.checked_sub(settings.writer_drain).unwrap_or(until);
            if now >= drain_from {
                return Answer::no(format!(
                    "draining: no lease renewal; the guard fences this node in {:.1} s",
                    until.saturating_duration_since(now).as_secs_f64()
                ));
            }
        }
        Some(until) => {
            return Answer::no(format!(
                "no lease: the last renewal that counted ran out {:.1} s ago",
                now.saturating_duration_since(until).as_secs_f64()
            ))
        }
        None => return Answer::no("no lease: the guard has not renewed its lease yet"),
    }
    match guard.fenced {
        Some(false) => {}
        Some(true) => return Answer::no("fenced"),
        None => {
            return Answer::no("the guard has not yet observed its node as an unfenced primary")
        }
    }
    let Some(record) = guard.writer else {
        return Answer::no("no writer record: the store has named no writer yet");
    };
    if record.node != guard.node {
        return Answer::no(format!(
            "not writer at {} (the writer record names node {})",
            record.epoch, record.node.0
        ));
    }
    if record.draining {
        return Answer::no(format!(
            "draining for switchover: the writer record at {} marks it draining; it is fenced once load balancers have marked it down",
            record.epoch
        ));
    }
    match guard.writer_epoch {
        Some(e) if e == record.epoch => Answer::yes(format!("writer at {}", record.epoch)),
        Some(e) => Answer::no(format!(
            "not writer at {} (it took writes at {e})",
            record.epoch
        )),
        None => Answer::no(format!(
            "not writer at {} (the guard has not yet seen it take writes as the writer)",
            record.epoch
        )),
    }
}

/// `/replica`: streaming, and replayed to within `max_lag` bytes of the
/// upstream's last reported WAL end.
pub(super) fn replica_answer(st: &NodeStatus, max_lag: u64) -> Answer {
    if st.role == NodeRole::Primary {
        return Answer::no(if st.fenced {
            "not a replica: a fenced primary"
        } else {
            "not a replica: a primary"
        });
    }
    let receiver = match &st.wal_receiver {
        Some(w) if w.status == "streaming" => w,
        Some(w) => return Answer::no(format!("not streaming (wal receiver: {})", w.status)),
        None => return Answer::no("not streaming (wal receiver: none)"),
    };
    let Some(replayed) = st.replay_lsn else {
        return Answer::no("no WAL replayed yet");
    };
    // The upstream's WAL end as it last reported it, or what was received
    // if that is further: what this replica has not applied yet.
    let upstream = receiver
        .latest_end_lsn
        .max(st.receive_lsn)
        .unwrap_or(Lsn(0));
    let lag = upstream.bytes_after(replayed);
    let mut answer = if lag > max_lag {
        Answer::no(format!("lag {lag} > {max_lag}"))
    } else {
        Answer::yes(format!("streaming, lag {lag} <= {max_lag}"))
    };
    answer.lag_bytes = Some(lag);
    answer
}

/// `max_lag` from the query string, in bytes.
pub(super) fn max_lag(query: Option<&str>) -> Result<u64, String> {
    let Some(query) = query else {
        return Ok(DEFAULT_MAX_LAG_BYTES);
    };
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "max_lag" {
            return value
                .parse::<u64>()
                .map_err(|_| format!("max_lag must be a whole number of bytes, got {value:?}"));
        }
    }
    Ok(DEFAULT_MAX_LAG_BYTES)
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WalReceiver;
    use failover_core::{Epoch, WriterRecord};

    const ME: NodeId = NodeId(0);

    fn primary(fenced: bool) -> NodeStatus {
        NodeStatus {
            node: ME,
            role: NodeRole::Primary,
            timeline: 1,
            current_lsn: Some(Lsn(100)),
            flush_lsn: Some(Lsn(100)),
            receive_lsn: None,
            replay_lsn: None,
            replay_backlog_bytes: None,
            replay_delay: None,
            replay_paused: false,
            wal_receiver: None,
            retrieve_retry_interval: None,
            replicas: Vec::new(),
            sync_wait: None,
            epoch: None,
            fenced,
        }
    }

    fn replica(status: &str, end: u64, replayed: u64) -> NodeStatus {
        NodeStatus {
            role: NodeRole::Replica,
            current_lsn: None,
            flush_lsn: None,
            receive_lsn: Some(Lsn(end)),
            replay_lsn: Some(Lsn(replayed)),
            wal_receiver: Some(WalReceiver {
                status: status.into(),
                received_timeline: Some(1),
                sender_host: None,
                sender_port: None,
                latest_end_lsn: Some(Lsn(end)),
                last_message_age: None,
            }),
            fenced: false,
            ..primary(false)
        }
    }

    fn holding(now: Instant, epoch: u64, named: NodeId) -> GuardStatus {
        GuardStatus {
            lease_held: true,
            fenced: Some(false),
            reachable: true,
            last_renewal: Some(now),
            writer: Some(WriterRecord::new(named, Epoch(epoch))),
            writer_epoch: Some(Epoch(epoch)),
            ..GuardStatus::new(ME)
        }
    }

    #[test]
    fn writer_needs_live_unfenced_primary_fresh_lease_and_the_record_at_its_epoch() {
        let s = GuardSettings::for_ttl(Duration::from_secs(2));
        let now = Instant::now();
        let g = holding(now, 3, ME);
        assert_eq!(
            writer_answer(&g, &s, now, Ok(primary(false))),
            Answer::yes("writer at epoch 3")
        );
        assert_eq!(
            writer_answer(&g, &s, now, Ok(primary(true))).reason,
            "fenced"
        );
        assert_eq!(
            writer_answer(&g, &s, now, Ok(replica("streaming", 1, 1))).reason,
            "replica"
        );
        assert!(
            writer_answer(&g, &s, now, Err("unreachable: refused".into()))
                .reason
                .starts_with("unreachable")
        );
        // The published status says held, but the lease ran out since.
        let later = now + s.ttl;
        let a = writer_answer(&g, &s, later, Ok(primary(false)));
        assert!(!a.ok && a.reason.starts_with("no lease"), "{a:?}");
        let other = holding(now, 4, NodeId(1));
        assert_eq!(
            writer_answer(&other, &s, now, Ok(primary(false))).reason,
            "not writer at epoch 4 (the writer record names node 1)"
        );
        let moved = GuardStatus {
            writer_epoch: Some(Epoch(2)),
            ..g.clone()
        };
        assert_eq!(
            writer_answer(&moved, &s, now, Ok(primary(false))).reason,
            "not writer at epoch 3 (it took writes at epoch 2)"
        );
        let guard_fenced = GuardStatus {
            fenced: Some(true),
            ..g
        };
        assert_eq!(
            writer_answer(&guard_fenced, &s, now, Ok(primary(false))).reason,
            "fenced"
        );
    }

    #[test]
    fn writer_is_503_while_draining_for_a_switchover_or_before_the_guards_own_fence() {
        let s = GuardSettings {
            writer_drain: Duration::from_millis(600),
            ..GuardSettings::for_ttl(Duration::from_secs(2))
        };
        let now = Instant::now();
        let mut g = holding(now, 3, ME);
        g.writer = g.writer.map(|r| r.with_draining(true));
        let a = writer_answer(&g, &s, now, Ok(primary(false)));
        assert!(
            !a.ok && a.reason.starts_with("draining for switchover"),
            "{a:?}"
        );
        // Not draining: 200 until 600 ms before fencing starts (2 s lease:
        // 1.8 s usable, fencing at 1.4 s after the renewal was sent, 503
        // from 0.8 s).
        let g = holding(now, 3, ME);
        assert!(writer_answer(&g, &s, now + Duration::from_millis(799), Ok(primary(false))).ok);
        let a = writer_answer(&g, &s, now + Duration::from_millis(800), Ok(primary(false)));
        assert!(
            !a.ok && a.reason.starts_with("draining: no lease renewal"),
            "{a:?}"
        );
        // Without a drain it stays 200 up to the fence.
        let plain = GuardSettings::for_ttl(Duration::from_secs(2));
        assert!(
            writer_answer(
                &g,
                &plain,
                now + Duration::from_millis(1399),
                Ok(primary(false))
            )
            .ok
        );
    }

    #[test]
    fn replica_needs_streaming_within_max_lag() {
        assert!(replica_answer(&replica("streaming", 5000, 4000), 1000).ok);
        assert_eq!(
            replica_answer(&replica("streaming", 5000, 3999), 1000).reason,
            "lag 1001 > 1000"
        );
        assert_eq!(
            replica_answer(&replica("waiting", 5000, 5000), 1000).reason,
            "not streaming (wal receiver: waiting)"
        );
        assert!(!replica_answer(&primary(false), 1000).ok);
    }

    #[test]
    fn max_lag_defaults_and_refuses_what_is_not_bytes() {
        assert_eq!(max_lag(None), Ok(DEFAULT_MAX_LAG_BYTES));
        assert_eq!(max_lag(Some("x=1")), Ok(DEFAULT_MAX_LAG_BYTES));
        assert_eq!(max_lag(Some("x=1&max_lag=1000")), Ok(1000));
        assert!(max_lag(Some("max_lag=1MB"))
            .unwrap_err()
            .contains("max_lag"));
        assert!(max_lag(Some("max_lag=-1")).is_err());
    }

    #[test]
    fn reasons_are_escaped_json_strings() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
