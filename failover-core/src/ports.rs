//! The traits adapters implement. They are deliberately small and carry no
//! runtime types; the runtime in the `failover` crate drives them.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::{
    CoordinationEvent, Epoch, FencingToken, Intent, LeaderInfo, Lsn, NodeId, NodeObservation,
    ProbeOutcome, PromoteRequest, RegionWeight, SyncSet, VantageId, Verdict, WeightPlan,
    WriterRecord,
};

/// Checks one target once. Implementations enforce their own timeouts and
/// never panic on anything the target sends.
#[async_trait]
pub trait Probe: Send + Sync {
    /// Runs one check.
    async fn check(&self) -> ProbeOutcome;
}

/// Moves traffic between regions: DNS, a global load balancer.
#[async_trait]
pub trait TrafficRouter: Send + Sync {
    /// Makes `plan` live. Must be idempotent: applying the live plan again is a no-op.
    async fn apply(&self, plan: &WeightPlan) -> Result<(), PortError>;
    /// What is live now. Providers that cannot express weights report
    /// weight 1 for regions whose records are present and 0 for absent ones.
    async fn read_back(&self) -> Result<Vec<RegionWeight>, PortError>;
}

/// Observes, fences and promotes database nodes.
#[async_trait]
pub trait DatabaseAdmin: Send + Sync {
    /// Role and WAL positions of one node. An unreachable node is
    /// `Ok(NodeObservation::Unreachable)`, not an error.
    async fn observe(&self, node: NodeId) -> Result<NodeObservation, PortError>;
    /// Makes `node` stop accepting writes and records `epoch` on it. Returns
    /// the node's final WAL flush position when it can tell (every write the
    /// node acknowledged is at or before it); the driver reports it with
    /// [`Input::FenceDone`](crate::Input::FenceDone).
    async fn fence(&self, node: NodeId, epoch: Epoch) -> Result<Option<Lsn>, PortError>;
    /// Checks the request's gate, promotes, records the epoch durably and
    /// verifies the node accepts writes. Returns the LSN it was promoted at.
    /// Refuses (kind [`PortErrorKind::Refused`]) an epoch not above the
    /// highest one recorded. Idempotent for the same request: a retry after
    /// the node was promoted by this epoch (also when the first call failed
    /// after the promotion took effect) returns `Ok` with the same LSN; a
    /// node promoted by another epoch is refused.
    async fn promote(&self, request: &PromoteRequest) -> Result<Lsn, PortError>;
    /// Lifts a fence placed at `epoch` on `node`, which is still the writer
    /// at that epoch: the promotion the fence was for did not happen, and
    /// writes must come back. Restores what the fence took (the roles'
    /// `LOGIN`, the read-only default) and verifies the node accepts writes.
    /// Refuses (kind [`PortErrorKind::Refused`]) when the node is not a
    /// primary, or when it or any reachable node records a promotion at an
    /// epoch `>= epoch` that made another node the writer, or a fence above
    /// `epoch`: a later epoch owns the node's state. Idempotent: unfencing a
    /// node that is not fenced succeeds.
    async fn unfence(&self, node: NodeId, epoch: Epoch) -> Result<(), PortError>;
    /// The highest epoch durably recorded on any reachable node (`None` if
    /// none was ever recorded), so a restarted controller resumes after it.
    async fn recorded_epoch(&self) -> Result<Option<Epoch>, PortError>;
    /// Makes the writer `node` (carrying `epoch`) require exactly `standbys`
    /// for every commit it acknowledges, and returns once that is in effect
    /// and each standby has flushed everything the writer had acknowledged
    /// (see [`Action::SetSynchronous`](crate::Action::SetSynchronous)).
    /// Refuses (kind [`PortErrorKind::Refused`]) a node that is not a
    /// primary at `epoch`, and a `token` older than the newest one that
    /// configured the node (kept durably on the node). The default refuses with
    /// [`PortErrorKind::Config`]: an adapter that cannot manage synchronous
    /// replication cannot run with `policy.synchronous` on.
    async fn set_synchronous(
        &self,
        node: NodeId,
        epoch: Epoch,
        standbys: SyncSet,
        token: Option<FencingToken>,
    ) -> Result<(), PortError> {
        let _ = (node, epoch, standbys, token);
        Err(PortError::new(
            PortErrorKind::Config,
            "this database adapter does not manage synchronous replication; set policy.synchronous = \"off\"",
        ))
    }
}

/// One controller's membership in the coordination store: its leader
/// campaign, its watches and its writes (see [`crate::coordination`]).
///
/// Contract, for every implementation:
/// - The leader lease and this controller's verdicts live under a lease of
///   this controller; when it cannot renew, the store drops both.
/// - [`next_event`](Self::next_event) reports `Leadership(None)` no later
///   than the leader lease could have expired at the store (measured from
///   the last renewal this side *sent*), so a paused or partitioned leader
///   learns it is deposed before a successor can act.
/// - Every write is conditional: [`set_writer`](Self::set_writer) and
///   [`set_intent`](Self::set_intent) succeed only while `token` is the
///   current leader's; otherwise they fail with kind
///   [`PortErrorKind::Refused`] and change nothing.
/// - An unreachable store is an error of kind `Unavailable` or `Timeout`,
///   never a silent success.
#[async_trait]
pub trait Coordinator: Send + Sync {
    /// Joins: creates this controller's lease, starts campaigning and
    /// watching, and returns the current state (writer record, guard leases,
    /// peer verdicts, intent, leadership) as events to feed in order.
    async fn join(&self) -> Result<Vec<CoordinationEvent>, PortError>;
    /// Waits for the next change. Cancel-safe: dropping the future loses
    /// no event.
    async fn next_event(&self) -> Result<CoordinationEvent, PortError>;
    /// Compare-and-set of the writer record under leadership `token`: writes
    /// `new` only if the store still holds `expected`, `token` still leads
    /// and, when `guard_absent` names a node, that node's guard lease is not
    /// held — all in one transaction. Refused otherwise.
    async fn set_writer(
        &self,
        token: FencingToken,
        expected: Option<WriterRecord>,
        new: WriterRecord,
        guard_absent: Option<NodeId>,
    ) -> Result<(), PortError>;
    /// Stores the weight plan under leadership `token`, for every
    /// controller's embedded DNS to serve (see [`CoordinationEvent::Plan`]).
    /// Refused if `token` no longer leads.
    async fn set_plan(&self, token: FencingToken, plan: &WeightPlan) -> Result<(), PortError>;
    /// The vantage this controller probes from and publishes verdicts as.
    fn vantage(&self) -> VantageId;
    /// Replaces this controller's published verdicts (under its own lease).
    async fn publish_verdicts(&self, verdicts: &[Verdict]) -> Result<(), PortError>;
    /// Stores operator intent under leadership `token`. Refused if `token`
    /// no longer leads.
    async fn set_intent(&self, token: FencingToken, intent: &Intent) -> Result<(), PortError>;
    /// Leaves: gives up leadership and revokes this controller's lease, so a
    /// successor need not wait for it to expire.
    async fn resign(&self) -> Result<(), PortError>;
    /// Where this controller's admin API answers (`https://10.0.0.2:9850`),
    /// published with its leadership so that the others can send operators
    /// there. Called before [`join`](Self::join); the default ignores it.
    fn advertise_admin(&self, _url: &str) {}
    /// The current leader as the store last showed it, to tell an operator
    /// where to send commands; `None` when no controller leads or the
    /// implementation cannot tell (the default).
    fn leader(&self) -> Option<LeaderInfo> {
        None
    }
}

/// A node guard's lease at the coordination store: the guard's promise that
/// its node takes writes only while the lease is held.
///
/// The guard calls [`renew`](Self::renew) well within `ttl` and, if no renewal
/// succeeded for `ttl − margin` after it *sent* the last successful one,
/// fences its own node; the store lets the lease expire `ttl` after it
/// *received* that renewal. So an expired lease proves the node was fenced by
/// its guard (or that guard and node are down), and the controllers may
/// promote another node without hearing from it.
#[async_trait]
pub trait GuardLease: Send + Sync {
    /// Grants or renews `node`'s guard lease for `ttl` and returns the writer
    /// record the store holds now. An unreachable store is an error of kind
    /// `Unavailable` or `Timeout`; the guard then keeps counting down.
    async fn renew(&self, node: NodeId, ttl: Duration) -> Result<Option<WriterRecord>, PortError>;
    /// Releases the lease at once (a guard that has fenced its node and
    /// stops), so the controllers need not wait for it to expire.
    async fn release(&self, node: NodeId) -> Result<(), PortError>;
}

/// Points the writer's DNS name (like `writer.db.example.com.`) at the node
/// that is the writer, so applications that connect by name follow a
/// promotion.
///
/// The runtime calls [`point`](Self::point) only after a promotion has
/// completed ([`EventKind::Promoted`](crate::EventKind::Promoted), or a
/// promoted writer adopted from the nodes,
/// [`EventKind::WriterMoved`](crate::EventKind::WriterMoved)): the old writer
/// was fenced before, and the node named has been promoted. The adapter
/// maps the node to its addresses.
#[async_trait]
pub trait WriterName: Send + Sync {
    /// Makes the writer name resolve to `node`'s addresses. `epoch` is the
    /// promotion's, for the adapter's records and logs; `token` the
    /// leader's fencing token (`None`: a single controller). An adapter
    /// that has seen a newer token refuses with kind `Refused`, so a
    /// deposed leader's late update never moves the name back. Idempotent:
    /// pointing at the node already named changes nothing.
    async fn point(
        &self,
        node: NodeId,
        epoch: Epoch,
        token: Option<FencingToken>,
    ) -> Result<(), PortError>;
}

/// How an adapter call failed, which decides whether the runtime retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PortErrorKind {
    /// The peer did not answer in time. Retryable.
    Timeout,
    /// The peer could not be reached or is not serving. Retryable.
    Unavailable,
    /// Credentials or keys were rejected. Not retryable.
    Auth,
    /// The peer refused on purpose (RPO gate, stale epoch, not a replica,
    /// failed prerequisite). Not retryable as is.
    Refused,
    /// Something else changed the state concurrently. Retryable after re-reading.
    Conflict,
    /// The peer's reply made no sense. Not retryable.
    Malformed,
    /// The adapter's own configuration is wrong. Not retryable.
    Config,
}

impl PortErrorKind {
    /// Whether trying the same call again later may succeed.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            PortErrorKind::Timeout | PortErrorKind::Unavailable | PortErrorKind::Conflict
        )
    }
}

/// An adapter failure: its kind plus the adapter's own error.
#[derive(Debug)]
pub struct PortError {
    kind: PortErrorKind,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl PortError {
    /// Wraps an adapter's error with its kind.
    pub fn new(
        kind: PortErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        PortError {
            kind,
            source: source.into(),
        }
    }
    /// The kind.
    pub fn kind(&self) -> PortErrorKind {
        self.kind
    }
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
    /// The adapter's own error, to downcast to its concrete type.
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }
}

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.source)
    }
}

impl std::error::Error for PortError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}
