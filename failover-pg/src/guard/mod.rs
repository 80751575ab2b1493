//! [`NodeGuard`]: the sidecar that keeps one PostgreSQL node from writing
//! without a lease.
//!
//! A guard runs next to one node. It holds the node's guard lease at the
//! coordination store (through a [`GuardLease`]: etcd, or the controller's
//! in-process lease server) and acts on the node through a
//! [`PgCluster`] holding this one node (its [`DatabaseAdmin`] face). Its promise, on which the controllers' promotion rule
//! rests: **the node takes writes only while the lease is held.** So when
//! the store reports the lease expired, the node has been fenced by its
//! guard, or guard and node are down, and another node may be promoted
//! without hearing from this one.
//!
//! # What it does
//!
//! Every [`renew_interval`](GuardSettings::renew_interval) it renews the
//! lease. Its deadline is `sent + ttl − margin`, measured from when it
//! *sent* the last successful renewal. Then, on each renewal and in this
//! order:
//! 1. **Deadline first.** If the deadline is less than
//!    [`fence_budget`](GuardSettings::fence_budget) away (or already past,
//!    after a pause), it fences its node ("no lease renewal for 1.6 s,
//!    fencing before the 2 s lease can expire") and keeps it fenced until
//!    a renewal succeeds again.
//! 2. **Stale primary.** With the lease held, if the writer record names
//!    another node, or this node at an epoch other than its promotion epoch
//!    (the record's epoch when the guard first saw the node take writes as
//!    the named writer; forgotten when the node is seen as a replica), while
//!    the node is an unfenced primary, it fences it.
//! 3. **Unfence.** With the lease held, it lifts a fence *it* placed only
//!    when the writer record names its node at the node's promotion epoch
//!    (a record naming it at any other epoch keeps the fence), through
//!    [`DatabaseAdmin::unfence`] at that fence's epoch, which refuses if any
//!    reachable node recorded a promotion that owns the writer role from
//!    that epoch on. A fence the guard did not place (the controller's, for
//!    a switchover or failover in progress) is the controller's to lift.
//! 4. **Re-apply.** Without the lease, a node found to be an unfenced
//!    primary (for example after a PostgreSQL restart by hand) is fenced
//!    again. A node that cannot be reached is not writing either; the guard
//!    keeps trying and re-applies the fence state when it is back.
//!
//! 5. **Last resort.** Started with [`NodeGuard::start_with_kill`], a guard
//!    that cannot confirm its fence by the lease deadline (the fence failed
//!    or hung: a frozen server answers nothing), or at all while it holds no
//!    lease or while it shuts down, kills the node's server ([`NodeKill`]):
//!    a fence needs the server's cooperation, `SIGKILL` does not. Then it
//!    stops renewing, so the lease lapses (the controllers' proof that the
//!    node stopped), until the node is seen again as a replica or fenced (a
//!    server restarted as an unfenced primary is fenced first, by rule 4).
//!    The same when the node, once seen running, is unreachable and no
//!    server runs in its data directory (PostgreSQL crashed or was stopped
//!    while the guard lives; a node not started yet keeps the lease):
//!    a guard that kept renewing for it would deny the controllers their
//!    proof, and the service its failover, for as long as it stays down.
//!    Without a kill switch it logs that the node may still take writes
//!    once the lease expires, and retries.
//!
//! Every outside call is raced against the moment fencing must start, so a
//! hung store or database never holds the guard past its deadline.
//!
//! The fence is [`DatabaseAdmin::fence`] at the epoch of the promotion that
//! would follow the writer record the guard last saw (`epoch + 1`): it never
//! blocks that promotion and, repeated, does not raise the epoch.
//!
//! # Deployment requirement: guard and node share fate
//!
//! An expired lease is taken as proof that the node stopped writing. That
//! holds only if the node cannot outlive its guard: run the guard so that
//! its death stops PostgreSQL. With systemd, give the PostgreSQL unit
//! `BindsTo=failover-guard@%i.service` and `After=failover-guard@%i.service`
//! (or run PostgreSQL as the guard's child in one container/cgroup), so a
//! crashed, killed or OOM-killed guard takes the node down with it. A guard
//! that is only paused is covered by the deadline-first rule above and the
//! [`margin`](GuardSettings::margin). A *server* that is frozen while its
//! guard runs is covered only by the kill switch (rule 5): run the guard on
//! the node's machine with [`NodeGuard::start_with_kill`]. Also disable
//! anything that could give the node writes back behind the guard's back,
//! including an automatic restart of a killed server.
//!
//! # Order the controller must keep
//!
//! The writer record must name a node *before* that node is promoted
//! (compare-and-set, then promote): a guard whose node is a primary not
//! named by the record fences it as stale. And a node that stays the writer
//! keeps its epoch in the record: naming it at a new epoch without promoting
//! it makes its guard fence it.
//!
//! # Node endpoints for load balancers
//!
//! With [`GuardSettings::http`] set, the guard also serves `GET /writer`,
//! `GET /replica?max_lag=BYTES` and `GET /health` there, as Patroni's agent
//! does, so HAProxy (see `examples/haproxy/` in the repository) sends
//! clients to the writer: `/writer` is 200 only on the unfenced primary
//! that the writer record names at its current epoch while the lease is
//! held, 503 otherwise. See [`endpoints`] for every rule and reason.
//!
//! # Observability
//!
//! Every decision is a `tracing` event with a sentence and increments
//! `failover_guard_decisions_total{node, decision}`; gauges
//! `failover_guard_lease_held{node}` and `failover_guard_fenced{node}` follow
//! the state; `failover_guard_renew_seconds{node}` times renewals;
//! `failover_guard_http_requests_total{node, check, status}` counts the node
//! endpoints' answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use failover_core::ports::{DatabaseAdmin, GuardLease};
use failover_core::{Epoch, NodeId, WriterRecord};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub mod endpoints;
pub mod kill;
mod run;
mod settings;

use crate::PgCluster;

pub use kill::{KillOutcome, NodeKill};
pub use settings::GuardSettings;

/// What a guard did last, for its status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GuardDecision {
    /// No renewal succeeded in time: the node was fenced before the lease
    /// could expire.
    FencedLeaseDeadline,
    /// The writer record names another node (or an older epoch) while the
    /// node was an unfenced primary: fenced as a stale primary.
    FencedStalePrimary,
    /// The node came back unfenced while the guard held no lease: fenced
    /// again.
    FenceReapplied,
    /// The writer record names this node again: the guard's fence was
    /// lifted.
    Unfenced,
    /// The guard shut down: it fenced the node and released the lease.
    Released,
    /// The node could not be fenced by the lease deadline (or without a
    /// lease): the guard killed its server ([`NodeKill`]).
    KilledNode,
    /// No server runs in the node's data directory (it crashed or was
    /// stopped): with a kill switch the guard lets its lease lapse.
    NodeDown,
}

impl GuardDecision {
    /// A stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            GuardDecision::FencedLeaseDeadline => "fenced_lease_deadline",
            GuardDecision::FencedStalePrimary => "fenced_stale_primary",
            GuardDecision::FenceReapplied => "fence_reapplied",
            GuardDecision::Unfenced => "unfenced",
            GuardDecision::Released => "released",
            GuardDecision::KilledNode => "killed_node",
            GuardDecision::NodeDown => "node_down",
        }
    }
}

/// A guard's state, as [`NodeGuard::status`] and [`NodeGuard::watch`]
/// report it. Instants are on tokio's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardStatus {
    /// The guarded node.
    pub node: NodeId,
    /// Whether the guard counts its lease as held (a renewal succeeded and
    /// its deadline minus the fence budget is still ahead).
    pub lease_held: bool,
    /// Whether the node was last seen fenced (`None`: not yet known, or the
    /// node is a [`replica`](Self::replica), read-only anyway).
    pub fenced: Option<bool>,
    /// Whether the node was last seen as a replica.
    pub replica: bool,
    /// Whether the node answered the last observation.
    pub reachable: bool,
    /// When the last successful renewal was *sent*.
    pub last_renewal: Option<Instant>,
    /// The writer record the last renewal returned.
    pub writer: Option<WriterRecord>,
    /// The epoch of a fence this guard placed and has not lifted.
    pub own_fence: Option<Epoch>,
    /// The writer record's epoch when the guard last saw its node take
    /// writes as the named writer: the node's promotion epoch, the one a
    /// record must name again for the guard to lift its fence.
    pub writer_epoch: Option<Epoch>,
    /// The last decision and when its action completed.
    pub last_decision: Option<(GuardDecision, Instant)>,
    /// Renewals that failed since the last success.
    pub failed_renewals: u32,
}

impl GuardStatus {
    fn new(node: NodeId) -> Self {
        GuardStatus {
            node,
            lease_held: false,
            fenced: None,
            replica: false,
            reachable: false,
            last_renewal: None,
            writer: None,
            own_fence: None,
            writer_epoch: None,
            last_decision: None,
            failed_renewals: 0,
        }
    }
}

/// A running guard: spawn it with [`NodeGuard::start`], watch it, stop it
/// with [`shutdown`](Self::shutdown). Dropping it stops the guard without
/// releasing the lease (it then expires `ttl` later).
pub struct NodeGuard {
    status: watch::Receiver<GuardStatus>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// The node endpoints' address and accept loop, when served.
    http: Option<(SocketAddr, JoinHandle<()>)>,
}

impl std::fmt::Debug for NodeGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeGuard")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some((_, t)) = self.http.take() {
            t.abort();
        }
    }
}

impl NodeGuard {
    /// Validates `settings` and starts guarding `node` (called `name` in
    /// events): renews through `lease`, observes and fences through `pg`,
    /// and serves the node endpoints if [`GuardSettings::http`] is set (an
    /// address that cannot be bound is a [`GuardSetting`](crate::PgError::GuardSetting)
    /// error naming `http`). Must be called inside a tokio runtime.
    ///
    /// Without a kill switch, a node that cannot be fenced (a frozen
    /// server) is only retried; prefer [`start_with_kill`](Self::start_with_kill)
    /// when the guard runs on the node's machine.
    pub fn start(
        node: NodeId,
        name: impl Into<String>,
        settings: GuardSettings,
        lease: Arc<dyn GuardLease>,
        pg: Arc<PgCluster>,
    ) -> Result<NodeGuard, crate::PgError> {
        Self::start_inner(node, name, settings, lease, pg, None)
    }

    /// As [`start`](Self::start), with a last resort: when the guard cannot
    /// confirm a fence by its lease deadline, or at all while it holds no
    /// lease (or while it shuts down), it kills the node's server through
    /// `kill` ([`GuardDecision::KilledNode`]). This closes the case no fence
    /// can: a frozen server (`SIGSTOP`, a cgroup freeze) that thaws after
    /// another node was promoted and commits on. See [`kill`].
    pub fn start_with_kill(
        node: NodeId,
        name: impl Into<String>,
        settings: GuardSettings,
        lease: Arc<dyn GuardLease>,
        pg: Arc<PgCluster>,
        kill: NodeKill,
    ) -> Result<NodeGuard, crate::PgError> {
        Self::start_inner(node, name, settings, lease, pg, Some(kill))
    }

    fn start_inner(
        node: NodeId,
        name: impl Into<String>,
        settings: GuardSettings,
        lease: Arc<dyn GuardLease>,
        pg: Arc<PgCluster>,
        kill: Option<NodeKill>,
    ) -> Result<NodeGuard, crate::PgError> {
        settings.validate()?;
        let name = name.into();
        let bound = settings.http.map(endpoints::bind).transpose()?;
        let (tx, rx) = watch::channel(GuardStatus::new(node));
        let (stop_tx, stop_rx) = oneshot::channel();
        let http = bound.map(|(listener, addr)| {
            tracing::info!(node = %name, %addr, "guard {name}: serving /writer, /replica and /health on http://{addr}");
            let served = Arc::new(endpoints::Endpoints {
                node,
                name: name.clone(),
                settings,
                guard: rx.clone(),
                pg: Arc::clone(&pg),
            });
            (addr, tokio::spawn(endpoints::serve(listener, served)))
        });
        let admin: Arc<dyn DatabaseAdmin> = pg;
        let guard = run::Guard::new(node, name, settings, lease, admin, tx, kill);
        let task = tokio::spawn(guard.run(stop_rx));
        Ok(NodeGuard {
            status: rx,
            stop: Some(stop_tx),
            task: Some(task),
            http,
        })
    }

    /// Where the node endpoints are served (the bound address, with the
    /// port picked when [`GuardSettings::http`] asked for port 0); `None`
    /// when they are not.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|(addr, _)| *addr)
    }

    /// The guard's state now.
    pub fn status(&self) -> GuardStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every state change, to wait on.
    pub fn watch(&self) -> watch::Receiver<GuardStatus> {
        self.status.clone()
    }

    /// Stops the guard: it fences its node and, if the fence was confirmed,
    /// releases the lease so the controllers need not wait for it to expire
    /// (otherwise the lease runs out after `ttl`). Waits at most `limit`.
    pub async fn shutdown(mut self, limit: Duration) -> GuardStatus {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(limit, task).await.is_err() {
                abort.abort();
            }
        }
        // Served until the node is fenced, so checks see it turn 503.
        if let Some((_, t)) = self.http.take() {
            t.abort();
        }
        self.status.borrow().clone()
    }
}
