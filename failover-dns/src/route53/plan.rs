//! What a plan means in Route 53, without talking to it: the weight
//! scaling, the weighted record sets a plan wants, the all-down mapping and
//! the fencing-token TXT value. Pure, so the unit tests below pin each rule.

use failover_core::{AllDownPolicy, FencingToken, WeightPlan};

/// Route 53's largest weight.
pub(crate) const MAX_WEIGHT: u32 = 255;

/// Scales one plan weight to Route 53's 0–255: when the plan's largest
/// weight is at most 255 the weights go through unchanged (the usual base
/// weights like 100 read back as they were written); otherwise each is
/// multiplied by `255 / max` and rounded to the nearest integer, and a
/// weight above zero never rounds down to 0 (which would drain a serving
/// region).
pub(crate) fn scale_weight(weight: u32, max: u32) -> u32 {
    if weight == 0 {
        return 0;
    }
    if max <= MAX_WEIGHT {
        return weight;
    }
    let scaled = (u64::from(weight) * u64::from(MAX_WEIGHT) + u64::from(max) / 2) / u64::from(max);
    scaled.clamp(1, u64::from(MAX_WEIGHT)) as u32
}

/// One region's weighted record set as written to or read from Route 53.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WeightedSet {
    /// The `SetIdentifier` (the region's name unless configured otherwise).
    pub set_id: String,
    /// Route 53 weight, 0–255.
    pub weight: u32,
    /// TTL, seconds.
    pub ttl: u32,
    /// The record values (addresses), sorted.
    pub values: Vec<String>,
}

impl WeightedSet {
    /// `set_id weight=w ttl=t [values]`, for error messages.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} weight={} ttl={} {:?}",
            self.set_id, self.weight, self.ttl, self.values
        )
    }
}

/// What the record name should hold after a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Desired {
    /// These weighted sets, one per region that has records of the type
    /// (written with UPSERT).
    Sets(Vec<WeightedSet>),
    /// No record at all: every weighted set of ours is deleted, so the name
    /// answers with no address (fail-closed when every region is drained).
    Nothing,
}

/// One region as the router knows it: its `SetIdentifier` and its record
/// values of the configured type (sorted).
#[derive(Clone, Debug)]
pub(crate) struct RegionSet {
    pub(crate) set_id: String,
    pub(crate) values: Vec<String>,
}

/// The record sets `plan` wants, under the all-down policy.
///
/// Route 53 answers with every record of a weighted set when all their
/// weights are 0, so an all-zero plan is never written as such under
/// fail-closed: it deletes the sets instead. Under fail-open the all-zero
/// UPSERT is exactly what fail-open means (every region served, equally).
/// A region without records of the type has no set and counts as drained.
pub(crate) fn desired(
    plan: &WeightPlan,
    regions: &[RegionSet],
    ttl: u32,
    all_down: AllDownPolicy,
) -> Desired {
    let max = plan.weights.iter().map(|w| w.weight).max().unwrap_or(0);
    let sets: Vec<WeightedSet> = regions
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.values.is_empty())
        .map(|(i, r)| WeightedSet {
            set_id: r.set_id.clone(),
            weight: scale_weight(plan.weight(failover_core::RegionId(i as u32)), max),
            ttl,
            values: r.values.clone(),
        })
        .collect();
    if sets.iter().all(|s| s.weight == 0) && all_down == AllDownPolicy::FailClosed {
        return Desired::Nothing;
    }
    Desired::Sets(sets)
}

/// The TXT value that holds `token`, as Route 53 stores it (quoted):
/// `"token=N write=X"`. `write` is fresh for every batch, so each batch's
/// DELETE names a value only the batch it read from wrote: Route 53 then
/// refuses a batch built on a stale read, even under the same token.
pub(crate) fn token_value(token: FencingToken, write: u64) -> String {
    format!("\"token={} write={write:016x}\"", token.0)
}

/// The token in a TXT value written by [`token_value`] (also a bare
/// `"token=N"`), or `None` when the value holds anything else.
pub(crate) fn parse_token(value: &str) -> Option<FencingToken> {
    let inner = value.trim().trim_matches('"');
    let first = inner.split_whitespace().next()?;
    first
        .strip_prefix("token=")?
        .parse::<u64>()
        .ok()
        .map(FencingToken)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn regions() -> Vec<RegionSet> {
        vec![
            RegionSet {
                set_id: "east".into(),
                values: vec!["192.0.2.1".into()],
            },
            RegionSet {
                set_id: "west".into(),
                values: vec!["192.0.2.2".into()],
            },
        ]
    }

    fn plan(weights: [u32; 2]) -> WeightPlan {
        WeightPlan::in_region_order(1, Duration::from_secs(30), weights)
    }

    #[test]
    fn weights_up_to_255_go_through_unchanged() {
        assert_eq!(scale_weight(100, 100), 100);
        assert_eq!(scale_weight(255, 255), 255);
        assert_eq!(scale_weight(0, 255), 0);
    }

    #[test]
    fn larger_weights_scale_to_255_and_never_round_a_serving_region_to_zero() {
        assert_eq!(scale_weight(1000, 1000), 255);
        assert_eq!(scale_weight(500, 1000), 128);
        assert_eq!(scale_weight(1, 1_000_000), 1);
        assert_eq!(scale_weight(0, 1000), 0);
    }

    #[test]
    fn all_drained_fail_closed_deletes_instead_of_writing_all_zero() {
        assert_eq!(
            desired(&plan([0, 0]), &regions(), 30, AllDownPolicy::FailClosed),
            Desired::Nothing
        );
    }

    #[test]
    fn all_drained_fail_open_writes_every_set_at_zero() {
        let Desired::Sets(sets) = desired(&plan([0, 0]), &regions(), 30, AllDownPolicy::FailOpen)
        else {
            panic!("fail-open must keep the sets");
        };
        assert_eq!(sets.len(), 2);
        assert!(sets.iter().all(|s| s.weight == 0));
    }

    #[test]
    fn a_region_without_records_of_the_type_counts_as_drained() {
        let mut r = regions();
        r[1].values.clear();
        assert_eq!(
            desired(&plan([0, 100]), &r, 30, AllDownPolicy::FailClosed),
            Desired::Nothing
        );
    }

    #[test]
    fn token_values_round_trip_and_garbage_is_none() {
        let v = token_value(FencingToken(7), 0xab);
        assert_eq!(v, "\"token=7 write=00000000000000ab\"");
        assert_eq!(parse_token(&v), Some(FencingToken(7)));
        assert_eq!(parse_token("\"token=9\""), Some(FencingToken(9)));
        assert_eq!(parse_token("\"v=spf1 -all\""), None);
        assert_eq!(parse_token("\"token=x\""), None);
    }
}
