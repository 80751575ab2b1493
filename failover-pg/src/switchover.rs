//! Planned switchover: no acknowledged write is lost.

use std::time::{Duration, Instant};

use failover_core::{Epoch, Lsn, NodeId, PromoteRequest, RpoGate};

use crate::{FenceReport, PgCluster, PgError};

/// What a switchover did and how long each step took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchoverReport {
    /// The fence of the old primary.
    pub fence: FenceReport,
    /// The old primary's final flush position the target replayed.
    pub final_lsn: Lsn,
    /// What [`PgCluster::promote`] returned.
    pub promoted_lsn: Lsn,
    /// Time spent fencing.
    pub fence_time: Duration,
    /// Time from the start until the target was promoted (includes catch-up).
    pub total_time: Duration,
}

impl PgCluster {
    /// Moves the primary role from `from` to `to` with zero loss:
    /// 1. fences `from` with `epoch` (no new write can commit there);
    /// 2. takes its final flush LSN, which covers every acknowledged commit;
    /// 3. promotes `to` with [`RpoGate::CaughtUp`] on that LSN: it waits (up to
    ///    `timeouts.catch_up`) until `to` has replayed it, then promotes.
    ///
    /// The old primary stays up, fenced; stop it and [`rejoin`](fn@crate::rejoin)
    /// it as a replica. If step 3 fails, `from` remains fenced and nothing was
    /// promoted: retry, or lift the fence by promoting again elsewhere.
    pub async fn switchover(
        &self,
        from: NodeId,
        to: NodeId,
        epoch: Epoch,
    ) -> Result<SwitchoverReport, PgError> {
        let started = Instant::now();
        // The target must be a replica before anything irreversible happens.
        let target = self.status(to).await?;
        if target.role != crate::NodeRole::Replica {
            return Err(PgError::NotAReplica {
                node: self.node(to)?.name.clone(),
            });
        }
        let source = self.status(from).await?;
        if source.role != crate::NodeRole::Primary {
            return Err(PgError::NotAPrimary {
                node: self.node(from)?.name.clone(),
            });
        }
        self.check_epoch(&self.node(to)?.name, epoch).await?;
        let fence = self.fence(from, epoch).await?;
        let fence_time = started.elapsed();
        let final_lsn = fence.flush_lsn.ok_or_else(|| PgError::NotAPrimary {
            node: self.node(from).map(|n| n.name.clone()).unwrap_or_default(),
        })?;
        let promoted_lsn = self
            .promote(&PromoteRequest {
                node: to,
                epoch,
                gate: RpoGate::CaughtUp { lsn: final_lsn },
                synchronous: failover_core::Synchronous::Off,
            })
            .await?;
        let total_time = started.elapsed();
        tracing::warn!(?from, ?to, %epoch, %final_lsn, ?total_time, "switchover done");
        Ok(SwitchoverReport {
            fence,
            final_lsn,
            promoted_lsn,
            fence_time,
            total_time,
        })
    }
}
