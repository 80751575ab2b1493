//! Runs a node guard next to one PostgreSQL node until ctrl-c.
//!
//! ```text
//! cargo run --example guard --features pg -- \
//!     --node pg-east --dsn "host=127.0.0.1 port=5432 user=postgres dbname=postgres" \
//!     --lease-url http://10.0.0.1:7070 --peer pg-west --ttl 10s
//! ```
//!
//! The shared secret comes from `--secret` or, better (it stays out of the
//! process list), the `FAILOVER_GUARD_SECRET` environment variable.
//! `--peer` names the other nodes (repeat it), so a writer record naming
//! one of them is understood. `--margin`, `--renew`, `--fence-budget`
//! override the values derived from `--ttl` (see `GuardSettings`).
//! `--http 0.0.0.0:8008` serves `GET /writer`, `/replica?max_lag=BYTES` and
//! `/health` there for load balancers (see `examples/haproxy/`).
//! `--data-dir /var/lib/postgresql/16/main` arms the kill switch: a server
//! the guard cannot fence by its lease deadline (frozen) is killed (see
//! `failover::pg::NodeKill`). Give it whenever the guard runs on the node's
//! machine.
//!
//! Deployment: the guard and its PostgreSQL node must share fate; for
//! example, give the PostgreSQL unit `BindsTo=` and `After=` on this guard's
//! unit, so the guard's death stops PostgreSQL. See `failover::pg::guard`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use failover::decision::NodeId;
use failover::lease::LeaseClient;
use failover::pg::{GuardSettings, NodeGuard, NodeKill, PgCluster};

struct Args {
    node: String,
    dsn: String,
    lease_url: String,
    secret: String,
    peers: Vec<String>,
    settings: GuardSettings,
    data_dir: Option<String>,
}

const USAGE: &str = "usage: guard --node NAME --dsn DSN --lease-url http://HOST:PORT \
[--secret S | env FAILOVER_GUARD_SECRET] [--peer NAME]... [--ttl 10s] [--margin D] \
[--renew D] [--fence-budget D] [--http ADDR:PORT] [--data-dir PGDATA]";

/// `10s`, `1500ms`, `2.5s`.
fn duration(flag: &str, v: &str) -> Result<Duration, String> {
    let parsed = if let Some(ms) = v.strip_suffix("ms") {
        ms.parse::<u64>().ok().map(Duration::from_millis)
    } else if let Some(s) = v.strip_suffix('s') {
        s.parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
    } else {
        None
    };
    parsed.ok_or_else(|| format!("{flag} {v:?}: give a duration like 10s or 1500ms"))
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut node, mut dsn, mut url) = (None, None, None);
    let mut secret = std::env::var("FAILOVER_GUARD_SECRET").ok();
    let mut peers = Vec::new();
    let (mut ttl, mut margin, mut renew, mut budget) = (None, None, None, None);
    let mut http = None;
    let mut data_dir = None;
    while let Some(flag) = argv.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let value = argv
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--node" => node = Some(value),
            "--dsn" => dsn = Some(value),
            "--lease-url" => url = Some(value),
            "--secret" => secret = Some(value),
            "--peer" => peers.push(value),
            "--ttl" => ttl = Some(duration(&flag, &value)?),
            "--margin" => margin = Some(duration(&flag, &value)?),
            "--renew" => renew = Some(duration(&flag, &value)?),
            "--fence-budget" => budget = Some(duration(&flag, &value)?),
            "--data-dir" => data_dir = Some(value),
            "--http" => {
                http = Some(value.parse().map_err(|e| {
                    format!("--http {value:?}: {e}; give an address like 0.0.0.0:8008")
                })?)
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let mut settings = match ttl {
        Some(ttl) => GuardSettings::for_ttl(ttl),
        None => GuardSettings::default(),
    };
    settings.margin = margin.unwrap_or(settings.margin);
    settings.renew_interval = renew.unwrap_or(settings.renew_interval);
    settings.fence_budget = budget.unwrap_or(settings.fence_budget);
    settings.http = http;
    Ok(Args {
        node: node.ok_or_else(|| format!("--node is required\n{USAGE}"))?,
        dsn: dsn.ok_or_else(|| format!("--dsn is required\n{USAGE}"))?,
        lease_url: url.ok_or_else(|| format!("--lease-url is required\n{USAGE}"))?,
        secret: secret
            .ok_or_else(|| format!("--secret or FAILOVER_GUARD_SECRET is required\n{USAGE}"))?,
        peers,
        settings,
        data_dir,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guard: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse(std::env::args().skip(1))?;
    // Ids are local to this process: this node is 0, peers follow. The
    // protocol speaks names.
    let me = NodeId(0);
    let mut lease = LeaseClient::new(&args.lease_url, args.secret)?
        .with_node(me, &args.node)?
        .with_timeout(args.settings.renew_interval)?;
    for (i, peer) in args.peers.iter().enumerate() {
        let id = NodeId(u32::try_from(i + 1)?);
        lease = lease.with_node(id, peer)?;
    }
    let pg = PgCluster::new().with_node(me, &args.node, &args.dsn)?;
    let guard = match &args.data_dir {
        Some(dir) => NodeGuard::start_with_kill(
            me,
            args.node.clone(),
            args.settings,
            Arc::new(lease),
            Arc::new(pg),
            NodeKill::new(dir)?,
        )?,
        None => {
            tracing::warn!("no --data-dir: the kill switch is off, so a frozen server that thaws after its lease expired may take writes; see failover::pg::NodeKill");
            NodeGuard::start(
                me,
                args.node.clone(),
                args.settings,
                Arc::new(lease),
                Arc::new(pg),
            )?
        }
    };
    if let Some(addr) = guard.http_addr() {
        println!(
            "guard {}: serving /writer, /replica and /health on http://{addr}",
            args.node
        );
    }
    println!(
        "guard {}: running (ttl {:?}, margin {:?}, renew every {:?}, fence budget {:?}); ctrl-c stops it",
        args.node,
        args.settings.ttl,
        args.settings.margin,
        args.settings.renew_interval,
        args.settings.fence_budget
    );
    tokio::signal::ctrl_c().await?;
    let status = guard.shutdown(Duration::from_secs(30)).await;
    println!(
        "guard {}: stopped; fenced: {:?}, last decision: {:?}",
        args.node,
        status.fenced,
        status.last_decision.map(|(d, _)| d)
    );
    Ok(())
}
