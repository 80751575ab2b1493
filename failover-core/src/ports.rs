//! The traits adapters implement. They are deliberately small and carry no
//! runtime types; the runtime in the `failover` crate drives them.

use std::fmt;

use async_trait::async_trait;

use crate::{
    Epoch, Lsn, NodeId, NodeObservation, ProbeOutcome, PromoteRequest, RegionWeight, WeightPlan,
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
