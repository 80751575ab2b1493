//! The drill's workload and its records: a client and a DNS sampler per
//! region, and the watcher on the host.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use failover_testkit::net::RegionTask;
use failover_testkit::postgres::writer::connect;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

use super::stack::{BoxError, Stack, NODES, REGIONS, SERVICE, WRITER};

/// How often the watcher tries a marker commit on each node, and the DNS
/// samplers resolve the service.
pub const TICK: Duration = Duration::from_millis(100);
/// Longest a client insert or a marker commit may take before it counts as
/// not acknowledged (a commit waiting for a standby that is gone hangs).
const COMMIT_LIMIT: Duration = Duration::from_secs(2);
/// Pause between a client's inserts (keeps two shared cores usable).
const CLIENT_PACE: Duration = Duration::from_millis(10);

/// One acknowledged commit on a node.
#[derive(Clone, Copy, Debug)]
pub struct Commit {
    /// The node that acknowledged it.
    pub node: usize,
    /// The row id (client inserts), `None` for a watcher's marker.
    pub id: Option<i64>,
    /// When it was sent: the commit happened after this.
    pub sent: Instant,
    /// When it was acknowledged: the commit happened before this.
    pub acked: Instant,
}

/// One DNS answer for the service name, seen from a region.
#[derive(Clone, Debug)]
pub struct Answer {
    /// When it arrived.
    pub at: Instant,
    /// The region that asked.
    pub region: usize,
    /// The addresses.
    pub addrs: Vec<IpAddr>,
}

/// Everything the workload saw.
#[derive(Debug, Default)]
pub struct Records {
    /// Acknowledged commits, clients' and watcher's.
    pub commits: Mutex<Vec<Commit>>,
    /// DNS answers for the service name.
    pub answers: Mutex<Vec<Answer>>,
}

impl Records {
    fn commit(&self, c: Commit) {
        self.commits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(c);
    }

    /// A copy of the commits so far.
    pub fn commits(&self) -> Vec<Commit> {
        self.commits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Client (row) commits acknowledged by `node` at or after `since`.
    pub fn client_acks_on(&self, node: usize, since: Instant) -> usize {
        self.commits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|c| c.node == node && c.id.is_some() && c.sent >= since)
            .count()
    }

    /// Whether `node` acknowledged any commit sent at or after `since`.
    pub fn any_on(&self, node: usize, since: Instant) -> bool {
        self.commits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|c| c.node == node && c.sent >= since)
    }

    /// A copy of the DNS answers.
    pub fn answers(&self) -> Vec<Answer> {
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The running workload: stop it with [`finish`](Workload::finish).
pub struct Workload {
    /// What it saw so far.
    pub records: Arc<Records>,
    stop: Arc<AtomicBool>,
    regional: Vec<RegionTask<()>>,
    watcher: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    /// Starts a client and a DNS sampler in every region and the watcher on the host.
    pub fn start(stack: &Stack) -> Result<Workload, BoxError> {
        let records = Arc::new(Records::default());
        let stop = Arc::new(AtomicBool::new(false));
        let ids = Arc::new(AtomicI64::new(1));
        let mut nodes = Vec::new();
        for i in 0..NODES.len() {
            nodes.push((IpAddr::V4(stack.region_addr(i)?), stack.app_dsn(i)));
        }
        let mut regional = Vec::new();
        for (region, name) in REGIONS.iter().enumerate() {
            // Each region's clients ask the DNS they would in production:
            // the single controller's, or their own region's.
            let dns = stack.dns_addr(region)?;
            let (records, stop, ids, nodes) = (
                Arc::clone(&records),
                Arc::clone(&stop),
                Arc::clone(&ids),
                nodes.clone(),
            );
            let task = stack.net.run(name, move || async move {
                let sampler = tokio::spawn(sample_dns(
                    dns,
                    region,
                    Arc::clone(&records),
                    Arc::clone(&stop),
                ));
                client(dns, nodes, ids, records, stop).await;
                let _ = sampler.await;
            })?;
            regional.push(task);
        }
        let watcher = (0..NODES.len())
            .map(|node| {
                tokio::spawn(watch_node(
                    node,
                    stack.local_dsn(node, true),
                    Arc::clone(&records),
                    Arc::clone(&stop),
                ))
            })
            .collect();
        Ok(Workload {
            records,
            stop,
            regional,
            watcher,
        })
    }

    /// Waits (at most `limit`) until the clients have `n` acknowledged rows
    /// on `node` sent at or after `since`.
    pub async fn wait_client_acks(
        &self,
        node: usize,
        since: Instant,
        n: usize,
        limit: Duration,
    ) -> Result<(), BoxError> {
        let deadline = Instant::now() + limit;
        while self.records.client_acks_on(node, since) < n {
            if Instant::now() > deadline {
                return Err(format!(
                    "the clients did not get {n} rows acknowledged on {} within {limit:?} (got {})",
                    NODES[node],
                    self.records.client_acks_on(node, since)
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Stops every client, sampler and watcher task and returns the records.
    pub async fn finish(mut self) -> Arc<Records> {
        self.stop.store(true, Ordering::SeqCst);
        for task in std::mem::take(&mut self.watcher) {
            let _ = task.await;
        }
        let regional = std::mem::take(&mut self.regional);
        tokio::task::block_in_place(|| {
            for task in regional {
                // Each ends within a commit limit of the stop flag.
                let _ = task.join();
            }
        });
        Arc::clone(&self.records)
    }
}

impl Drop for Workload {
    /// A drill that ends early (an error, a panic) stops the watcher's
    /// tasks too: they run on the caller's runtime, which outlives the drill.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A region's client: resolves the writer name, connects to that node and
/// inserts rows with unique ids until an error, then resolves again.
async fn client(
    dns: SocketAddr,
    nodes: Vec<(IpAddr, String)>,
    ids: Arc<AtomicI64>,
    records: Arc<Records>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        let node = match resolve(dns, WRITER).await {
            Ok(addrs) => addrs
                .first()
                .and_then(|a| nodes.iter().position(|(ip, _)| ip == a)),
            Err(_) => None,
        };
        let Some(node) = node else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(Ok(conn)) = tokio::time::timeout(COMMIT_LIMIT, connect(&nodes[node].1)).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while !stop.load(Ordering::SeqCst) {
            let id = ids.fetch_add(1, Ordering::SeqCst);
            let sent = Instant::now();
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
            let insert = conn.execute("INSERT INTO rows (id) VALUES ($1)", &params);
            match tokio::time::timeout(COMMIT_LIMIT, insert).await {
                Ok(Ok(_)) => records.commit(Commit {
                    node,
                    id: Some(id),
                    sent,
                    acked: Instant::now(),
                }),
                _ => break,
            }
            tokio::time::sleep(CLIENT_PACE).await;
        }
    }
}

/// A region's DNS sampler: the service name, every [`TICK`].
async fn sample_dns(dns: SocketAddr, region: usize, records: Arc<Records>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        if let Ok(addrs) = resolve(dns, SERVICE).await {
            records
                .answers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Answer {
                    at: Instant::now(),
                    region,
                    addrs,
                });
        }
        tokio::time::sleep(TICK).await;
    }
}

/// The watcher of one node: a marker commit as the application role over
/// the node's unix socket every [`TICK`], whatever links are cut.
async fn watch_node(node: usize, dsn: String, records: Arc<Records>, stop: Arc<AtomicBool>) {
    let name = NODES[node];
    let mut conn = None;
    while !stop.load(Ordering::SeqCst) {
        let tick = tokio::time::Instant::now() + TICK;
        if conn.is_none() {
            if let Ok(Ok(c)) = tokio::time::timeout(COMMIT_LIMIT, connect(&dsn)).await {
                conn = Some(c);
            }
        }
        if let Some(c) = &conn {
            let sent = Instant::now();
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&name];
            let insert = c.execute("INSERT INTO markers (node) VALUES ($1)", &params);
            match tokio::time::timeout(COMMIT_LIMIT, insert).await {
                Ok(Ok(_)) => records.commit(Commit {
                    node,
                    id: None,
                    sent,
                    acked: Instant::now(),
                }),
                // A replica refuses (read-only) and keeps the session; any
                // other failure (terminated, fenced, hung) reconnects.
                Ok(Err(e))
                    if e.code()
                        == Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION) => {}
                _ => conn = None,
            }
        }
        tokio::time::sleep_until(tick).await;
    }
}

/// One uncached UDP query to `server` for `name`'s A records (1 s limit).
pub async fn resolve(server: SocketAddr, name: &str) -> Result<Vec<IpAddr>, String> {
    let attempt = async {
        let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
        let id = (Instant::now().elapsed().subsec_nanos() & 0xFFFF) as u16;
        let mut query = Message::new(id, MessageType::Query, OpCode::Query);
        query.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
        socket.send_to(&query.to_vec()?, server).await?;
        let mut buf = vec![0u8; 4096];
        let (n, _) = socket.recv_from(&mut buf).await?;
        let reply = Message::from_vec(buf.get(..n).unwrap_or_default())?;
        let mut ips: Vec<IpAddr> = reply
            .answers
            .iter()
            .filter_map(|r| r.data.ip_addr())
            .collect();
        ips.sort();
        Ok::<_, BoxError>(ips)
    };
    match tokio::time::timeout(Duration::from_secs(1), attempt).await {
        Ok(Ok(ips)) => Ok(ips),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer from {server} within 1 s")),
    }
}
