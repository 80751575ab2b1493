//! The checker: what a drill's records say about S1 (one writer), S2 (no
//! acknowledged loss beyond the promise) and the DNS answers.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::workload::{Answer, Commit};

/// Two nodes acknowledged commits at the same time: `old` acknowledged
/// `commits` commits sent after `new`'s first commit was acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overlap {
    /// The node that was the writer first.
    pub old: usize,
    /// The node that became a writer while `old` still committed.
    pub new: usize,
    /// When `new`'s first commit was acknowledged.
    pub from: Instant,
    /// When `old`'s last overlapping commit was acknowledged.
    pub to: Instant,
    /// `old`'s commits sent after `from`.
    pub commits: usize,
}

/// Every interval in which two nodes committed. For each pair of nodes,
/// ordered by their first acknowledged commit, the older one's commits
/// *sent* after the newer one's first commit was *acknowledged* — commits
/// that certainly happened after the newer writer took writes. (A commit in
/// flight across the promotion is not counted: its instant is unknown.)
pub fn overlaps(commits: &[Commit], nodes: usize) -> Vec<Overlap> {
    let first: Vec<Option<Instant>> = (0..nodes)
        .map(|n| {
            commits
                .iter()
                .filter(|c| c.node == n)
                .map(|c| c.acked)
                .min()
        })
        .collect();
    let mut found = Vec::new();
    for old in 0..nodes {
        for new in 0..nodes {
            let (Some(old_first), Some(new_first)) = (first[old], first[new]) else {
                continue;
            };
            if old == new || old_first > new_first {
                continue;
            }
            let late: Vec<&Commit> = commits
                .iter()
                .filter(|c| c.node == old && c.sent > new_first)
                .collect();
            if let Some(to) = late.iter().map(|c| c.acked).max() {
                found.push(Overlap {
                    old,
                    new,
                    from: new_first,
                    to,
                    commits: late.len(),
                });
            }
        }
    }
    found
}

/// The acknowledged client rows that are not in `present` (the final
/// writer's `rows`), with when each was acknowledged.
pub fn lost(commits: &[Commit], present: &HashSet<i64>) -> Vec<(i64, Instant)> {
    let mut lost: Vec<(i64, Instant)> = commits
        .iter()
        .filter_map(|c| c.id.map(|id| (id, c.acked)))
        .filter(|(id, _)| !present.contains(id))
        .collect();
    lost.sort();
    lost
}

/// DNS answers that still named `drained` (a region's records) after
/// `deadline` (detection + TTL + slack) and before `until` (the heal).
pub fn stale_answers(
    answers: &[Answer],
    drained: &[IpAddr],
    deadline: Instant,
    until: Instant,
) -> Vec<Answer> {
    answers
        .iter()
        .filter(|a| a.at > deadline && a.at < until)
        .filter(|a| a.addrs.iter().any(|ip| drained.contains(ip)))
        .cloned()
        .collect()
}

/// The longest time within `from..to` in which no node acknowledged a
/// commit sent in it: how long writes stopped.
pub fn longest_gap(commits: &[Commit], from: Instant, to: Instant) -> Duration {
    let mut acks: Vec<Instant> = commits
        .iter()
        .filter(|c| c.sent >= from && c.acked <= to)
        .map(|c| c.acked)
        .collect();
    acks.sort();
    let mut last = from;
    let mut gap = Duration::ZERO;
    for at in acks.into_iter().chain(std::iter::once(to)) {
        gap = gap.max(at.saturating_duration_since(last));
        last = last.max(at);
    }
    gap
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(node: usize, base: Instant, sent_ms: u64, acked_ms: u64) -> Commit {
        Commit {
            node,
            id: None,
            sent: base + Duration::from_millis(sent_ms),
            acked: base + Duration::from_millis(acked_ms),
        }
    }

    #[test]
    fn a_clean_handover_has_no_overlap_and_an_interleaving_has_one() {
        let t = Instant::now();
        // Old writer 0 until 1000 ms; new writer 1 from 1500 ms.
        let clean = vec![
            commit(0, t, 0, 10),
            commit(0, t, 990, 1000),
            commit(1, t, 1500, 1510),
            commit(1, t, 1600, 1610),
        ];
        assert!(overlaps(&clean, 3).is_empty());
        // A commit in flight across the promotion is not counted.
        let mut in_flight = clean.clone();
        in_flight.push(commit(0, t, 1400, 1700));
        assert!(overlaps(&in_flight, 3).is_empty());
        // Node 0 commits a request sent after node 1's first ack: two writers.
        let mut split = clean;
        split.push(commit(0, t, 1520, 1530));
        let found = overlaps(&split, 3);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].old, found[0].new, found[0].commits), (0, 1, 1));
    }

    #[test]
    fn an_answer_naming_the_drained_region_after_the_deadline_is_stale() {
        let t = Instant::now();
        let east: IpAddr = "10.201.0.1".parse().expect("literal");
        let west: IpAddr = "10.201.0.2".parse().expect("literal");
        let at = |ms: u64, addrs: Vec<IpAddr>| Answer {
            at: t + Duration::from_millis(ms),
            region: 1,
            addrs,
        };
        let answers = vec![
            at(100, vec![east]),        // before the deadline: allowed
            at(2500, vec![west]),       // drained: fine
            at(2600, vec![east, west]), // stale
            at(9000, vec![east]),       // after the heal: allowed
        ];
        let deadline = t + Duration::from_secs(2);
        let heal = t + Duration::from_secs(5);
        let stale = stale_answers(&answers, &[east], deadline, heal);
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert_eq!(stale[0].addrs, vec![east, west]);
    }

    #[test]
    fn the_longest_gap_counts_from_the_fault_to_the_first_ack() {
        let t = Instant::now();
        let commits = vec![commit(0, t, 0, 10), commit(1, t, 2000, 2100)];
        assert_eq!(
            longest_gap(
                &commits,
                t + Duration::from_millis(20),
                t + Duration::from_secs(3)
            ),
            Duration::from_millis(2080)
        );
    }
}
