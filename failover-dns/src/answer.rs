//! The answers the embedded server gives for one weight plan: an immutable
//! snapshot, built once per plan and swapped in atomically, so a query never
//! sees half of one plan and half of another.

use std::net::IpAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use failover_core::{AllDownPolicy, RegionWeight, WeightPlan};
use hickory_proto::rr::rdata::{NS, SOA};
use hickory_proto::rr::{Name, RData, Record};

/// How the embedded server picks the addresses it returns for the service name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Selection {
    /// Each query gets the records of one serving region, chosen at random
    /// with probability proportional to its weight (clients that cache one
    /// answer then spread like the plan says).
    #[default]
    Weighted,
    /// Each query gets the records of every serving region (weights only
    /// decide whether a region serves at all).
    AllServing,
}

/// What the server knows about one region: its addresses and base weight.
#[derive(Clone, Debug)]
pub(crate) struct RegionRecords {
    pub(crate) addrs: Vec<IpAddr>,
    pub(crate) base_weight: u32,
}

/// The records of one type (A or AAAA) grouped by serving region.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    /// Every serving region's records, region after region.
    all: Vec<Record>,
    /// (cumulative weight up to and including this region, its slice of `all`).
    groups: Vec<(u64, Range<usize>)>,
    total: u64,
}

impl Pool {
    fn push(&mut self, weight: u32, records: impl Iterator<Item = Record>) {
        let start = self.all.len();
        self.all.extend(records);
        let end = self.all.len();
        if end > start && weight > 0 {
            self.total += u64::from(weight);
            self.groups.push((self.total, start..end));
        }
    }

    /// The records one query gets; `draw` is a uniform random number.
    pub(crate) fn pick(&self, selection: Selection, draw: u64) -> &[Record] {
        match selection {
            Selection::AllServing => &self.all,
            Selection::Weighted => {
                if self.total == 0 {
                    return &[];
                }
                let target = draw % self.total;
                // Few regions: a linear scan beats a binary search here.
                let range = self
                    .groups
                    .iter()
                    .find(|(cumulative, _)| target < *cumulative)
                    .map(|(_, range)| range.clone())
                    .unwrap_or(0..0);
                self.all.get(range).unwrap_or(&[])
            }
        }
    }
}

/// One plan's answers. Immutable once built.
#[derive(Debug)]
pub(crate) struct AnswerSet {
    /// The plan as applied (for idempotence), `None` before the first plan.
    pub(crate) plan: Option<WeightPlan>,
    /// The weights actually served (differs from the plan when fail-open kept
    /// the previous records because the plan drained everything).
    pub(crate) effective: Vec<RegionWeight>,
    pub(crate) a: Pool,
    pub(crate) aaaa: Pool,
    pub(crate) soa: Record,
    pub(crate) ns: Record,
}

/// The zone's fixed facts the snapshots are built from.
#[derive(Debug)]
pub(crate) struct ZoneFacts {
    pub(crate) zone: Name,
    pub(crate) service: Name,
    pub(crate) nameserver: Name,
    pub(crate) hostmaster: Name,
    pub(crate) regions: Vec<RegionRecords>,
    pub(crate) all_down: AllDownPolicy,
}

impl ZoneFacts {
    /// Builds the answers for `plan`, given the previous answers (for
    /// fail-open and the SOA serial).
    pub(crate) fn build(
        &self,
        plan: Option<&WeightPlan>,
        ttl: u32,
        previous: Option<&AnswerSet>,
    ) -> AnswerSet {
        let requested: Vec<RegionWeight> = (0..self.regions.len())
            .map(|i| {
                let region = failover_core::RegionId(i as u32);
                RegionWeight {
                    region,
                    weight: plan.map_or(self.regions[i].base_weight, |p| p.weight(region)),
                }
            })
            .collect();
        let effective = if requested.iter().any(|w| w.weight > 0) {
            requested
        } else {
            match self.all_down {
                AllDownPolicy::FailClosed => requested,
                // Never go dark on a plan that drains everything: keep what
                // was served, or every region at its base weight at start-up.
                AllDownPolicy::FailOpen => match previous {
                    Some(prev) if prev.effective.iter().any(|w| w.weight > 0) => {
                        prev.effective.clone()
                    }
                    _ => (0..self.regions.len())
                        .map(|i| RegionWeight {
                            region: failover_core::RegionId(i as u32),
                            weight: self.regions[i].base_weight.max(1),
                        })
                        .collect(),
                },
            }
        };
        let mut a = Pool::default();
        let mut aaaa = Pool::default();
        for (w, region) in effective.iter().zip(&self.regions) {
            if w.weight == 0 {
                continue;
            }
            let record =
                |addr: &IpAddr| Record::from_rdata(self.service.clone(), ttl, RData::from(*addr));
            a.push(
                w.weight,
                region.addrs.iter().filter(|a| a.is_ipv4()).map(record),
            );
            aaaa.push(
                w.weight,
                region.addrs.iter().filter(|a| a.is_ipv6()).map(record),
            );
        }
        let serial = previous.map_or(1, |p| match &p.soa.data {
            RData::SOA(soa) => soa.serial.wrapping_add(1).max(1),
            _ => 1,
        });
        let soa = Record::from_rdata(
            self.zone.clone(),
            ttl,
            RData::SOA(SOA::new(
                self.nameserver.clone(),
                self.hostmaster.clone(),
                serial,
                3600,
                600,
                86400,
                ttl,
            )),
        );
        let ns = Record::from_rdata(
            self.zone.clone(),
            ttl,
            RData::NS(NS(self.nameserver.clone())),
        );
        AnswerSet {
            plan: plan.cloned(),
            effective,
            a,
            aaaa,
            soa,
            ns,
        }
    }
}

/// A lock-free, seedable random source for the weighted choice (splitmix64
/// over an atomic counter): the same seed gives the same sequence of draws,
/// which makes the distribution tests reproducible.
#[derive(Debug)]
pub(crate) struct QueryRng {
    state: AtomicU64,
}

impl QueryRng {
    pub(crate) fn new(seed: u64) -> Self {
        QueryRng {
            state: AtomicU64::new(seed),
        }
    }

    pub(crate) fn next(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn facts(all_down: AllDownPolicy) -> ZoneFacts {
        let name = |s: &str| Name::from_ascii(s).expect("literal name");
        ZoneFacts {
            zone: name("example.test."),
            service: name("api.example.test."),
            nameserver: name("ns1.example.test."),
            hostmaster: name("hostmaster.example.test."),
            regions: vec![
                RegionRecords {
                    addrs: vec![
                        "192.0.2.1".parse().expect("v4"),
                        "2001:db8::1".parse().expect("v6"),
                    ],
                    base_weight: 100,
                },
                RegionRecords {
                    addrs: vec!["192.0.2.2".parse().expect("v4")],
                    base_weight: 50,
                },
            ],
            all_down,
        }
    }

    fn plan(east: u32, west: u32) -> WeightPlan {
        WeightPlan::in_region_order(1, Duration::from_secs(30), [east, west])
    }

    fn addrs(records: &[Record]) -> Vec<IpAddr> {
        records.iter().filter_map(|r| r.data.ip_addr()).collect()
    }

    #[test]
    fn weighted_pick_maps_draws_onto_cumulative_weights() {
        let f = facts(AllDownPolicy::FailOpen);
        let set = f.build(Some(&plan(3, 1)), 30, None);
        let east: IpAddr = "192.0.2.1".parse().expect("v4");
        let west: IpAddr = "192.0.2.2".parse().expect("v4");
        assert_eq!(addrs(set.a.pick(Selection::Weighted, 0)), vec![east]);
        assert_eq!(addrs(set.a.pick(Selection::Weighted, 2)), vec![east]);
        assert_eq!(addrs(set.a.pick(Selection::Weighted, 3)), vec![west]);
        assert_eq!(addrs(set.a.pick(Selection::Weighted, 7)), vec![west]);
        assert_eq!(
            addrs(set.a.pick(Selection::AllServing, 0)),
            vec![east, west]
        );
        // Only east has IPv6: every AAAA draw lands on it.
        assert_eq!(set.aaaa.pick(Selection::Weighted, 3).len(), 1);
        assert!(set
            .a
            .pick(Selection::Weighted, 0)
            .iter()
            .all(|r| r.ttl == 30));
    }

    #[test]
    fn draining_everything_keeps_the_previous_answers_only_when_fail_open() {
        let open = facts(AllDownPolicy::FailOpen);
        let first = open.build(Some(&plan(0, 10)), 30, None);
        let drained = open.build(Some(&plan(0, 0)), 30, Some(&first));
        assert_eq!(drained.effective, first.effective);
        assert_eq!(drained.a.pick(Selection::AllServing, 0).len(), 1);
        // At start-up with nothing to keep, fail-open serves every region.
        let cold = open.build(Some(&plan(0, 0)), 30, None);
        assert_eq!(cold.a.pick(Selection::AllServing, 0).len(), 2);

        let closed = facts(AllDownPolicy::FailClosed);
        let first = closed.build(Some(&plan(0, 10)), 30, None);
        let drained = closed.build(Some(&plan(0, 0)), 30, Some(&first));
        assert!(drained.a.pick(Selection::AllServing, 0).is_empty());
        assert!(drained.a.pick(Selection::Weighted, 5).is_empty());
    }

    #[test]
    fn every_new_snapshot_moves_the_soa_serial() {
        let f = facts(AllDownPolicy::FailOpen);
        let serial = |s: &AnswerSet| match &s.soa.data {
            RData::SOA(soa) => soa.serial,
            _ => 0,
        };
        let first = f.build(None, 30, None);
        let second = f.build(Some(&plan(1, 1)), 30, Some(&first));
        assert_eq!(serial(&second), serial(&first) + 1);
    }

    #[test]
    fn the_same_seed_gives_the_same_draws() {
        let (a, b) = (QueryRng::new(42), QueryRng::new(42));
        let xs: Vec<u64> = (0..8).map(|_| a.next()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
    }
}
