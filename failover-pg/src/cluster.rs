//! Which PostgreSQL node is which, how to reach it, and how long to wait.
//!
//! Every operation opens its own connection to each node it touches and closes
//! it afterwards: no pool keeps a connection that could hide a firewall or a
//! dead server, and a failure is seen by the very call that met it. Every
//! round trip has a client-side timeout.

use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use failover_core::{NodeId, Topology};
use tokio_postgres::{Client, NoTls, Row};

use crate::tls::{connector, split_tls_options, RustlsConnect, SslMode};
use crate::PgError;

/// Time limits of the adapter. All are wall-clock durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgTimeouts {
    /// Longest wait for a TCP connect plus authentication (default 2 s).
    pub connect: Duration,
    /// Longest wait for one query's reply (default 5 s).
    pub statement: Duration,
    /// How long `pg_promote` may wait for the end of recovery (default 30 s).
    pub promote: Duration,
    /// How long a zero-loss promotion waits for replay to reach the required
    /// LSN (default 30 s).
    pub catch_up: Duration,
    /// How long a promotion or switchover waits for the *other* nodes'
    /// recorded epochs (default 500 ms). The check is a second layer under
    /// the coordination store's writer record and skips a node it cannot
    /// read; without this bound a black-holed old primary would hold every
    /// promotion for `connect`. A node that answers later is skipped too.
    pub peer_epoch: Duration,
}

impl Default for PgTimeouts {
    fn default() -> Self {
        PgTimeouts {
            connect: Duration::from_secs(2),
            statement: Duration::from_secs(5),
            promote: Duration::from_secs(30),
            catch_up: Duration::from_secs(30),
            peer_epoch: Duration::from_millis(500),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct PgNode {
    pub(crate) id: NodeId,
    pub(crate) name: String,
    pub(crate) config: tokio_postgres::Config,
    /// The TLS connector, `None` for `sslmode=disable`.
    pub(crate) tls: Option<RustlsConnect>,
}

/// The PostgreSQL nodes of a topology with the superuser DSN of each: the
/// [`DatabaseAdmin`](failover_core::ports::DatabaseAdmin) implementation.
///
/// The DSN's user must be a superuser (fencing runs `ALTER SYSTEM`,
/// `ALTER ROLE` and `pg_terminate_backend`). The epoch tables live in the
/// DSN's database (`failover.epoch`, `failover.fence`); give every node the
/// same database name.
#[derive(Clone, Debug, Default)]
pub struct PgCluster {
    nodes: Vec<PgNode>,
    timeouts: PgTimeouts,
    observers: ObserverSessions,
}

/// One session per node kept open for [`PgCluster::status`] (and so for
/// every observation), shared by clones: a connection per observation costs
/// the node a backend fork each interval — at 100–200 ms that load is what
/// made observations of healthy nodes time out on a busy host. Patroni keeps
/// its connection open for the same reason. A session that fails (the node
/// restarted, a fence terminated it) is dropped and reopened once.
///
/// Next to it, a replica gets a **spare** session, opened in the background
/// after an observation found it a replica and taken by
/// [`PgCluster::promote`]: the promotion starts on a connection that is
/// already authenticated (a TCP and TLS handshake saved, several round trips
/// across regions), and falls back to a fresh one if the spare fails.
#[derive(Clone, Default)]
pub(crate) struct ObserverSessions(Arc<Mutex<Sessions>>);

#[derive(Default)]
pub(crate) struct Sessions {
    observe: HashMap<NodeId, Arc<Session>>,
    spare: HashMap<NodeId, Session>,
    /// Nodes whose spare is being opened.
    opening: std::collections::HashSet<NodeId>,
}

impl std::fmt::Debug for ObserverSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (open, spare) = self
            .0
            .lock()
            .map(|m| (m.observe.len(), m.spare.len()))
            .unwrap_or((0, 0));
        f.debug_struct("ObserverSessions")
            .field("open", &open)
            .field("spare", &spare)
            .finish()
    }
}

impl ObserverSessions {
    /// The open session of `node`, if it has one that is not closed.
    pub(crate) fn get(&self, node: NodeId) -> Option<Arc<Session>> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let map = &mut all.observe;
        match map.get(&node) {
            Some(s) if !s.is_closed() => Some(Arc::clone(s)),
            Some(_) => {
                map.remove(&node);
                None
            }
            None => None,
        }
    }

    /// Keeps `session` as `node`'s (replacing any other).
    pub(crate) fn keep(&self, node: NodeId, session: Arc<Session>) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.observe.insert(node, session);
    }

    /// Drops `session` if it is still `node`'s.
    pub(crate) fn forget(&self, node: NodeId, session: &Arc<Session>) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if all
            .observe
            .get(&node)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            all.observe.remove(&node);
        }
    }

    /// Takes `node`'s spare session, if it has one that is not closed.
    pub(crate) fn take_spare(&self, node: NodeId) -> Option<Session> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.spare.remove(&node).filter(|s| !s.is_closed())
    }

    /// Whether a spare for `node` should be opened now (none open, none
    /// being opened); if so, marks it as being opened.
    pub(crate) fn begin_spare(&self, node: NodeId) -> bool {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if all.spare.get(&node).is_some_and(|s| !s.is_closed()) {
            return false;
        }
        all.opening.insert(node)
    }

    /// Ends an opening begun by [`Self::begin_spare`].
    pub(crate) fn end_spare(&self, node: NodeId, session: Option<Session>) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.opening.remove(&node);
        if let Some(s) = session {
            all.spare.insert(node, s);
        }
    }
}

/// Extracts the option name from tokio-postgres' parse messages, which quote
/// it in backticks (``invalid value for option `port` ``).
fn dsn_field(message: &str) -> String {
    let mut parts = message.split('`');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(field), Some(_)) if !field.is_empty() => field.to_owned(),
        _ => "dsn".to_owned(),
    }
}

impl PgCluster {
    pub(crate) fn observers(&self) -> &ObserverSessions {
        &self.observers
    }

    /// An empty cluster with default timeouts.
    pub fn new() -> Self {
        PgCluster::default()
    }

    /// One node per topology node, each reached with the DSN given for its
    /// name (`[("pg-east", "host=… user=postgres"), …]`). Every topology node
    /// needs a DSN and every DSN a topology node, else a typed config error.
    pub fn from_topology<N, D>(
        topology: &Topology,
        dsns: impl IntoIterator<Item = (N, D)>,
        timeouts: PgTimeouts,
    ) -> Result<Self, PgError>
    where
        N: AsRef<str>,
        D: AsRef<str>,
    {
        let mut cluster = PgCluster::new().with_timeouts(timeouts);
        for (name, dsn) in dsns {
            let name = name.as_ref();
            let id = topology
                .node_id(name)
                .ok_or_else(|| PgError::NotInTopology {
                    name: name.to_owned(),
                })?;
            cluster = cluster.with_node(id, name, dsn.as_ref())?;
        }
        for id in topology.node_ids() {
            if cluster.node(id).is_err() {
                return Err(PgError::MissingDsn {
                    node: topology.node(id).name.clone(),
                });
            }
        }
        Ok(cluster)
    }

    /// Replaces the time limits. Call before [`with_node`](Self::with_node):
    /// the connect timeout is applied to each node's config as it is added.
    pub fn with_timeouts(mut self, timeouts: PgTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Adds node `id` (the topology's id for it) named `name`, reached with
    /// the libpq-style `dsn` (`host=10.0.0.5 port=5432 user=postgres dbname=postgres`)
    /// or URL (`postgresql://postgres@10.0.0.5/postgres`). A DSN that does not
    /// parse is [`PgError::Dsn`] naming the node and the field. Re-adding an id
    /// replaces it.
    ///
    /// `sslmode` (`disable`, `prefer`, `require`, `verify-ca`,
    /// `verify-full`) and `sslrootcert` (a PEM file, read now) choose TLS:
    /// see the [`tls`](crate::tls) module.
    pub fn with_node(mut self, id: NodeId, name: &str, dsn: &str) -> Result<Self, PgError> {
        let (mut config, tls) = parse_dsn(name, dsn)?;
        if config.get_hosts().is_empty() {
            return Err(PgError::Dsn {
                node: name.to_owned(),
                field: "host".to_owned(),
                reason: "no host given".to_owned(),
            });
        }
        config.connect_timeout(self.timeouts.connect);
        if config.get_application_name().is_none() {
            config.application_name("failover-pg");
        }
        self.nodes.retain(|n| n.id != id);
        self.nodes.push(PgNode {
            id,
            name: name.to_owned(),
            config,
            tls,
        });
        self.nodes.sort_by_key(|n| n.id);
        Ok(self)
    }

    /// The time limits in force.
    pub fn timeouts(&self) -> PgTimeouts {
        self.timeouts
    }

    /// The configured node ids, in order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.iter().map(|n| n.id)
    }

    /// The configured name of a node.
    pub fn node_name(&self, id: NodeId) -> Option<&str> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.name.as_str())
    }

    pub(crate) fn node(&self, id: NodeId) -> Result<&PgNode, PgError> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .ok_or(PgError::UnknownNode { node: id })
    }

    pub(crate) fn all_nodes(&self) -> &[PgNode] {
        &self.nodes
    }

    /// Opens a fresh connection to `id`.
    pub(crate) async fn connect(
        &self,
        id: NodeId,
        operation: &'static str,
    ) -> Result<Session, PgError> {
        let node = self.node(id)?;
        let limit = self.timeouts.connect;
        let connecting = open(&node.config, &node.tls);
        let (client, task) = match tokio::time::timeout(limit + limit / 2, connecting).await {
            Err(_) => {
                return Err(PgError::Timeout {
                    node: node.name.clone(),
                    operation,
                    after: limit,
                })
            }
            Ok(Err(e)) => return Err(PgError::from_pg(&node.name, operation, e)),
            Ok(Ok(pair)) => pair,
        };
        Ok(Session {
            client,
            node: node.name.clone(),
            id,
            statement: self.timeouts.statement,
            task,
        })
    }
}

/// A tokio-postgres config and TLS connector (`None`: plain TCP) for a
/// libpq DSN or URL that may carry `sslmode` and `sslrootcert`; `name` is
/// what errors call it.
pub(crate) fn parse_dsn(
    name: &str,
    dsn: &str,
) -> Result<(tokio_postgres::Config, Option<RustlsConnect>), PgError> {
    let (dsn, tls) = split_tls_options(name, dsn)?;
    let connector = connector(name, &tls)?;
    let mut config = tokio_postgres::Config::from_str(&dsn).map_err(|e| {
        let reason = match std::error::Error::source(&e) {
            Some(inner) => inner.to_string(),
            None => e.to_string(),
        };
        PgError::Dsn {
            node: name.to_owned(),
            field: dsn_field(&reason),
            reason,
        }
    })?;
    config.ssl_mode(match tls.mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    Ok((config, connector))
}

/// Connects with `config` over `tls` and spawns the connection's I/O task
/// (abort it to close the connection).
pub(crate) async fn open(
    config: &tokio_postgres::Config,
    tls: &Option<RustlsConnect>,
) -> Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
    match tls {
        None => config
            .connect(NoTls)
            .await
            .map(|(client, conn)| (client, drive(conn))),
        Some(tls) => config
            .connect(tls.clone())
            .await
            .map(|(client, conn)| (client, drive(conn))),
    }
}

/// Runs a connection's I/O until it ends.
fn drive<F>(connection: F) -> tokio::task::JoinHandle<()>
where
    F: Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    })
}

/// One connection to one node, closed on drop.
pub(crate) struct Session {
    client: Client,
    pub(crate) node: String,
    pub(crate) id: NodeId,
    statement: Duration,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Session {
    /// Whether the connection ended (closed by the server or the network).
    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        limit: Duration,
        fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, PgError> {
        match tokio::time::timeout(limit, fut).await {
            Err(_) => Err(PgError::Timeout {
                node: self.node.clone(),
                operation,
                after: limit,
            }),
            Ok(Err(e)) => Err(PgError::from_pg(&self.node, operation, e)),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// The admin session's own settings: it must write even on a fenced node,
    /// must not wait for a synchronous standby that may be gone, and must not
    /// queue for a lock past half its statement timeout: a lock held by
    /// someone else fails as SQLSTATE `55P03` (kind `Conflict`, retry after
    /// re-reading) rather than as a client-side timeout that would look like
    /// an unreachable node.
    pub(crate) async fn admin_session(&self, operation: &'static str) -> Result<(), PgError> {
        let lock_ms = (self.statement / 2).as_millis().clamp(1, i32::MAX as u128);
        self.batch(
            operation,
            &format!(
                "SET default_transaction_read_only = off; SET synchronous_commit = local; \
                 SET lock_timeout = {lock_ms}"
            ),
        )
        .await
    }

    /// Runs `sql` (no parameters) and returns its rows.
    pub(crate) async fn query(
        &self,
        operation: &'static str,
        sql: &str,
    ) -> Result<Vec<Row>, PgError> {
        self.timed(operation, self.statement, self.client.query(sql, &[]))
            .await
    }

    /// Runs `sql` expecting exactly one row.
    pub(crate) async fn query_one(
        &self,
        operation: &'static str,
        sql: &str,
    ) -> Result<Row, PgError> {
        let mut rows = self.query(operation, sql).await?;
        if rows.len() != 1 {
            return Err(self.malformed(operation, format!("expected 1 row, got {}", rows.len())));
        }
        rows.pop()
            .ok_or_else(|| self.malformed(operation, "no row".into()))
    }

    /// Runs `sql` with parameters and returns its rows.
    pub(crate) async fn query_with(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, PgError> {
        self.timed(operation, self.statement, self.client.query(sql, params))
            .await
    }

    /// Runs one or more statements (simple protocol).
    pub(crate) async fn batch(&self, operation: &'static str, sql: &str) -> Result<(), PgError> {
        self.timed(operation, self.statement, self.client.batch_execute(sql))
            .await
    }

    pub(crate) fn malformed(&self, operation: &'static str, reason: String) -> PgError {
        PgError::Malformed {
            node: self.node.clone(),
            operation,
            reason,
        }
    }

    /// Column `idx` of `row` as `T`, a typed error if the type is wrong.
    pub(crate) fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
        &self,
        operation: &'static str,
        row: &'a Row,
        idx: usize,
    ) -> Result<T, PgError> {
        row.try_get(idx)
            .map_err(|e| self.malformed(operation, format!("column {idx}: {e}")))
    }

    /// Column `idx` as an optional LSN (text in the query).
    pub(crate) fn lsn(
        &self,
        operation: &'static str,
        row: &Row,
        idx: usize,
    ) -> Result<Option<failover_core::Lsn>, PgError> {
        let text: Option<&str> = self.get(operation, row, idx)?;
        text.map(|t| {
            t.parse()
                .map_err(|e: failover_core::ParseLsnError| self.malformed(operation, e.to_string()))
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_field_is_taken_from_the_parser_message() {
        assert_eq!(dsn_field("invalid value for option `port`"), "port");
        assert_eq!(dsn_field("unknown option `foo`"), "foo");
        assert_eq!(dsn_field("unexpected EOF"), "dsn");
        assert_eq!(dsn_field("``"), "dsn");
    }

    #[test]
    fn with_node_replaces_an_id_and_keeps_order() {
        let c = PgCluster::new()
            .with_node(NodeId(1), "b", "host=127.0.0.1")
            .and_then(|c| c.with_node(NodeId(0), "a", "host=127.0.0.1"))
            .and_then(|c| c.with_node(NodeId(1), "b2", "host=127.0.0.1"))
            .expect("valid");
        assert_eq!(c.node_ids().collect::<Vec<_>>(), vec![NodeId(0), NodeId(1)]);
        assert_eq!(c.node_name(NodeId(1)), Some("b2"));
        assert!(matches!(
            c.node(NodeId(5)),
            Err(PgError::UnknownNode { .. })
        ));
    }

    #[test]
    fn from_topology_requires_a_dsn_per_node_and_a_node_per_dsn() {
        let topology = failover_core::TopologyConfig {
            service: "api.example.com.".into(),
            regions: vec![
                failover_core::Region::new("east", failover_core::RegionRole::Active),
                failover_core::Region::new("west", failover_core::RegionRole::Standby),
            ],
            vantages: vec![],
            nodes: vec![
                failover_core::Node {
                    name: "pg-east".into(),
                    region: "east".into(),
                    priority: 0,
                    primary: true,
                },
                failover_core::Node {
                    name: "pg-west".into(),
                    region: "west".into(),
                    priority: 0,
                    primary: false,
                },
            ],
        }
        .validate()
        .expect("valid topology");
        let t = PgTimeouts::default();
        let ok = PgCluster::from_topology(
            &topology,
            [("pg-east", "host=10.0.0.5"), ("pg-west", "host=10.1.0.5")],
            t,
        )
        .expect("complete");
        assert_eq!(
            ok.node_name(topology.node_id("pg-west").unwrap()),
            Some("pg-west")
        );
        let missing = PgCluster::from_topology(&topology, [("pg-east", "host=10.0.0.5")], t);
        assert!(matches!(missing, Err(PgError::MissingDsn { node }) if node == "pg-west"));
        let extra = PgCluster::from_topology(&topology, [("pg-north", "host=10.2.0.5")], t);
        assert!(matches!(extra, Err(PgError::NotInTopology { name }) if name == "pg-north"));
    }
}
