//! Shared test support: serve an axum router on loopback, send real HTTP
//! requests with hyper, start a real PostgreSQL.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use failover_testkit::postgres::{PgTestCluster, PgTestClusterBuilder};
use failover_tower::{PromotionView, RegionView, Snapshot, WriterView};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// Bound on anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(20);

/// Serves `router` on 127.0.0.1 on a free port until the runtime ends.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, router).await.expect("serve");
    });
    addr
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// `Retry-After` in seconds, if present.
    pub fn retry_after(&self) -> Option<u64> {
        self.headers
            .get(http::header::RETRY_AFTER)
            .map(|v| v.to_str().expect("ascii").parse().expect("seconds"))
    }
}

/// Sends one request on a fresh connection and reads the whole answer.
pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    tokio::time::timeout(WAIT, async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Answer {
            status,
            headers,
            body,
        }
    })
    .await
    .expect("an answer within the bound")
}

/// A fresh snapshot: `regions` as (name, weight, capacity), writer
/// `pg-east` at epoch 1.
pub fn snapshot(regions: &[(&str, u32, f64)]) -> Snapshot {
    let mut s = Snapshot::fresh();
    s.regions = regions
        .iter()
        .map(|(name, weight, capacity)| {
            let mut r = RegionView::new(*name);
            r.weight = *weight;
            r.capacity = *capacity;
            r
        })
        .collect();
    let mut writer = WriterView::default();
    writer.node = Some("pg-east".to_owned());
    writer.epoch = 1;
    s.writer = writer;
    s
}

/// `s` with a promotion in `phase` whose bound runs out after `bound`.
pub fn promoting(mut s: Snapshot, phase: &str, bound: Duration) -> Snapshot {
    s.promotion = Some(PromotionView::new(phase, Some(Instant::now() + bound)));
    s
}

/// Starts a PostgreSQL (primary only) off the async runtime's worker.
pub async fn postgres() -> PgTestCluster {
    start(PgTestCluster::builder().replicas(0)).await
}

pub async fn start(builder: PgTestClusterBuilder) -> PgTestCluster {
    tokio::task::spawn_blocking(move || builder.start())
        .await
        .expect("join")
        .expect("start test cluster")
}

/// A connected client on `dsn`.
pub async fn connect(dsn: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(connection);
    client
}

/// A loopback port with nothing listening on it.
pub async fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}
