//! [`DatabaseAdmin`] for [`PgCluster`]: core's view of the adapter.

use async_trait::async_trait;
use failover_core::ports::DatabaseAdmin;
use failover_core::{
    Epoch, FencingToken, Lsn, NodeId, NodeObservation, PortError, PromoteRequest, SyncSet,
};

use crate::{PgCluster, PgError};

#[async_trait]
impl DatabaseAdmin for PgCluster {
    /// The node's [`NodeStatus`](crate::NodeStatus) as core's observation. A
    /// node that cannot be reached or does not answer in time is
    /// `Ok(Unreachable)`; rejected credentials or an unknown node are errors.
    async fn observe(&self, node: NodeId) -> Result<NodeObservation, PortError> {
        match self.status(node).await {
            Ok(st) => Ok(st.observation()),
            Err(e @ (PgError::Unreachable { .. } | PgError::Timeout { .. })) => {
                tracing::debug!(%node, error = %e, "node unreachable");
                Ok(NodeObservation::Unreachable)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn fence(&self, node: NodeId, epoch: Epoch) -> Result<Option<Lsn>, PortError> {
        PgCluster::fence(self, node, epoch)
            .await
            .map(|report| report.flush_lsn)
            .map_err(Into::into)
    }

    async fn promote(&self, request: &PromoteRequest) -> Result<Lsn, PortError> {
        PgCluster::promote(self, request).await.map_err(Into::into)
    }

    async fn unfence(&self, node: NodeId, epoch: Epoch) -> Result<(), PortError> {
        PgCluster::unfence(self, node, epoch)
            .await
            .map(|_| ())
            .map_err(Into::into)
    }

    async fn recorded_epoch(&self) -> Result<Option<Epoch>, PortError> {
        self.highest_epoch().await.map_err(Into::into)
    }

    async fn set_synchronous(
        &self,
        node: NodeId,
        epoch: Epoch,
        standbys: SyncSet,
        token: Option<FencingToken>,
    ) -> Result<(), PortError> {
        PgCluster::set_synchronous(self, node, epoch, standbys, token)
            .await
            .map_err(Into::into)
    }
}
