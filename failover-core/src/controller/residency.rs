//! Residency: a region fails over only within its residency group, for
//! traffic (routing computes standby shares per group and applies the
//! all-down policy per group) and for the database (an automatic promotion
//! never picks a replica in another group).

use std::time::Instant;

use super::Controller;
use crate::{AllDownPolicy, EventKind, Health, NodeId, RegionId};

impl Controller {
    /// The all-down policy, group by group, once some region serves: a
    /// group whose every region is out cannot send its traffic to another
    /// group, so `fail-open` serves its undrained regions at base weight
    /// (its users keep a chance) and `fail-closed` serves none of them.
    pub(super) fn apply_residency_floors(&mut self, now: Instant) {
        let count = self.topology.regions().len();
        for first in 0..count {
            let regions = self.topology.regions();
            let group = &regions[first].residency;
            // Each group once, at its first region.
            if regions[..first].iter().any(|r| &r.residency == group) {
                continue;
            }
            let member = |i: &usize| regions[*i].residency == *group;
            let carries = (first..count)
                .filter(member)
                .any(|i| regions[i].base_weight > 0 && !self.regions[i].drained);
            let down = carries && (first..count).filter(member).all(|i| self.scratch[i] == 0);
            let fail_open = down && self.policy.all_down == AllDownPolicy::FailOpen;
            if fail_open {
                for i in (first..count).filter(member) {
                    if !self.regions[i].drained {
                        self.scratch[i] = regions[i].base_weight;
                    }
                }
            }
            if down && !self.regions[first].group_all_down {
                let policy = self.policy.all_down;
                self.notify(
                    now,
                    EventKind::ResidencyAllDown {
                        region: RegionId(first as u32),
                        policy,
                    },
                );
            }
            self.regions[first].group_all_down = down;
        }
    }

    /// When no replica of the writer's residency group can be promoted:
    /// the refusal naming the rule, if a replica in another group could
    /// have been (it is never promoted automatically).
    pub(super) fn residency_refusal(&self, writer: NodeId) -> Option<EventKind> {
        let writer_region = self.topology.node_region(writer);
        self.topology
            .node_ids()
            .filter(|n| *n != writer && self.db.nodes[n.index()].fence.is_none())
            .filter(|n| {
                let r = self.topology.node_region(*n);
                let region = &self.regions[r.index()];
                r != writer_region
                    && !self.topology.same_residency(writer_region, r)
                    && region.routed == Health::Up
                    && !region.drained
            })
            .filter_map(|n| self.db.replica_lsn(n).map(|lsn| (n, lsn)))
            .max_by_key(|(n, lsn)| (*lsn, self.topology.node(*n).priority, u32::MAX - n.0))
            .map(|(candidate, _)| EventKind::ResidencyRefused { writer, candidate })
    }
}
