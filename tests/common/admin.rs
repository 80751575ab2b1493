//! The admin API's test fixture: a runtime over two live regions (and,
//! optionally, PostgreSQL nodes), routing through the embedded DNS, with an
//! audit log and the admin API on loopback; and an HTTP client for it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use failover::decision::MaxRpo;
use failover::dns::{EmbeddedConfig, EmbeddedDns, Selection};
use failover::runtime::admin::{AdminAuth, AdminConfig};
use failover::{Runtime, RuntimeBuilder};
use failover_testkit::postgres::PgTestCluster;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::*;

pub const ALICE: &str = "alice-admin-token-0123456789";
pub const BOT: &str = "deploy-bot-token-0123456789";

/// A runtime over two live regions, the embedded DNS as its router, an
/// audit log, and the admin API on a free loopback port.
pub struct Fixture {
    pub runtime: Runtime,
    pub dns: EmbeddedDns,
    pub admin: SocketAddr,
    pub audit: std::path::PathBuf,
    pub dir: tempfile::TempDir,
    pub regions: TwoRegions,
}

impl Fixture {
    pub async fn start(tune: impl FnOnce(&mut AdminConfig)) -> Fixture {
        Fixture::start_with(None, tune).await
    }

    /// [`Fixture::start`], with pg-east and pg-west (the cluster's primary
    /// and replica) when `cluster` is given.
    pub async fn start_with(
        cluster: Option<&PgTestCluster>,
        tune: impl FnOnce(&mut AdminConfig),
    ) -> Fixture {
        let mut policy = fast_policy();
        if cluster.is_some() {
            policy.auto_promote = true;
            policy.max_rpo = Some(MaxRpo::bytes(64 << 20));
        }
        let regions = TwoRegions::start();
        let mut selection = EmbeddedConfig::new(ZONE);
        selection.selection = Selection::AllServing;
        let dns = EmbeddedDns::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            &topology(),
            &policy,
            selection,
        )
        .await
        .expect("embedded DNS binds on loopback");
        let dir = tempfile::tempdir().expect("temp dir");
        let audit = dir.path().join("audit.jsonl");
        let auth = AdminAuth::new()
            .token("alice", ALICE)
            .token("deploy-bot", BOT);
        let mut admin = AdminConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), auth);
        tune(&mut admin);
        let mut builder = RuntimeBuilder::new(config(topology_with(cluster.is_some()), policy))
            .router(Arc::new(dns.router()))
            .audit_log(&audit)
            .admin_config(admin);
        if let Some(cluster) = cluster {
            let nodes = cluster.nodes();
            builder = builder.database(Arc::new(fleet::pg_admin(
                &nodes[0].admin_dsn(),
                &nodes[1].admin_dsn(),
            )));
        }
        let runtime = regions.run(builder).await;
        let admin = runtime.admin_addr().expect("the admin API listens");
        Fixture {
            runtime,
            dns,
            admin,
            audit,
            dir,
            regions,
        }
    }

    pub async fn stop(self) {
        self.runtime.shutdown().await;
        self.dns.shutdown().await;
    }
}

/// One HTTP/1.1 request; the status and the body as text.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("HTTP handshake");
    let conn = tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("the admin API answers within 10 s")
        .expect("response");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    conn.abort();
    (status, String::from_utf8_lossy(&body).into_owned())
}

pub async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = request(addr, "GET", path, Some(ALICE), b"").await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

/// Polls `/status` (at most `limit`) until `check` holds; returns it.
pub async fn wait_api_status(
    addr: SocketAddr,
    limit: Duration,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let status = get_json(addr, "/status").await;
        if check(&status) {
            return status;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}; last /status: {status:#}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn region<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["regions"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("no region {name} in {status:#}"))
}

/// The audit log's records, once `until` holds for them (at most 10 s).
pub async fn wait_audit(path: &Path, what: &str, until: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let records: Vec<Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if until(&records) {
            return records;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("audit log never had: {what}; it has {records:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn commands_in(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["record"] == "command")
        .map(|r| r["command"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Sends `pause` then `resume` as alice and waits for the runtime's own
/// record of the resume: every command sent before them has been handled
/// (the command channel is ordered), so the log shows all that arrived.
pub async fn barrier(f: &Fixture) -> Vec<Value> {
    for verb in ["pause", "resume"] {
        let (status, body) = request(
            f.admin,
            "POST",
            &format!("/commands/{verb}"),
            Some(ALICE),
            b"",
        )
        .await;
        assert_eq!(status, 202, "{verb}: {body}");
    }
    wait_audit(&f.audit, "the barrier's resume", |records| {
        commands_in(records).iter().any(|c| c == "Resume")
    })
    .await
}
