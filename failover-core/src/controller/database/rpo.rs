//! Which replica to promote, and whether its lag is within `max_rpo`.
//!
//! The lag is the larger of: how far the candidate is behind the writer's
//! last seen position, and how far it was behind when both were last seen
//! (the writer kept writing after its last observation). The evidence has an
//! age — the writer's last observation may be seconds old — and for a time
//! limit that age counts as lag: the old writer may have committed for that
//! long after it was last seen.

use std::time::{Duration, Instant};

use crate::controller::Controller;
use crate::{EventKind, Health, Lsn, NodeId, NodeObservation, RpoGate};

impl Controller {
    /// The replica in a serving region of the writer's residency group with
    /// the most WAL, ties by priority.
    pub(super) fn best_candidate(&self, writer: NodeId) -> Option<(NodeId, Lsn)> {
        let writer_region = self.topology.node_region(writer);
        // With synchronous replication, only the standbys the writer
        // required have every acknowledged commit: they alone are
        // candidates, unless the writer ran asynchronously (none named).
        let sync = self.db.writer_sync;
        let sync_only = self.policy.synchronous != crate::Synchronous::Off && !sync.is_empty();
        self.topology
            .node_ids()
            .filter(|n| *n != writer && self.db.nodes[n.index()].fence.is_none())
            .filter(|n| !sync_only || sync.contains(*n))
            .filter(|n| {
                let r = self.topology.node_region(*n);
                let region = &self.regions[r.index()];
                r != writer_region
                    && self.topology.same_residency(writer_region, r)
                    && region.routed == Health::Up
                    && !region.drained
            })
            .filter_map(|n| self.db.replica_lsn(n).map(|lsn| (n, lsn)))
            .max_by_key(|(n, lsn)| (*lsn, self.topology.node(*n).priority, u32::MAX - n.0))
    }

    /// How far `node` is behind the writer, when anything is known.
    pub(super) fn lag_of(&self, node: NodeId) -> Option<u64> {
        let lsn = self.db.replica_lsn(node)?;
        let seen = self.db.nodes[node.index()].lag;
        let behind = self.db.primary_lsn.map(|(p, _)| p.bytes_after(lsn));
        match (behind, seen) {
            (Some(b), Some(s)) => Some(b.max(s)),
            (b, s) => b.or(s),
        }
    }

    /// The gate for an automatic promotion of `candidate` (at `lsn`), or the
    /// refusal event.
    pub(super) fn rpo_gate(
        &self,
        now: Instant,
        candidate: NodeId,
        lsn: Lsn,
    ) -> Result<(RpoGate, u64), EventKind> {
        let reference = self.db.primary_lsn.map(|(l, _)| l);
        let evidence_age = self
            .db
            .primary_lsn
            .map(|(_, at)| now.saturating_duration_since(at));
        let seen_lag = self.db.nodes[candidate.index()].lag.unwrap_or(0);
        let lag_bytes = reference.map_or(0, |p| p.bytes_after(lsn)).max(seen_lag);
        let delay = match self.db.nodes[candidate.index()].last {
            Some(NodeObservation::Replica { replay_delay, .. }) => replay_delay,
            _ => None,
        };
        let limit = self.policy.max_rpo.unwrap_or_default();
        // With no position of the writer ever seen (a restart while it was
        // down) a byte limit cannot be checked: refuse rather than guess.
        let unknown = reference.is_none() && limit.bytes.is_some() && seen_lag == 0;
        let window = delay.map(|d| d.saturating_add(evidence_age.unwrap_or(Duration::ZERO)));
        if !unknown && limit.admits(lag_bytes, window) {
            Ok((
                RpoGate::Within {
                    max: limit,
                    reference,
                },
                lag_bytes,
            ))
        } else {
            Err(EventKind::PromotionRefused {
                node: candidate,
                lag_bytes: (!unknown).then_some(lag_bytes),
                delay: window,
                limit,
            })
        }
    }
}
