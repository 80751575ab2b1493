//! Residency: a region fails over only within its residency group. Two
//! groups: eu (eu-west active, eu-north standby at 60 %) and us (us-east
//! active), each drill breaking one region and reading the timeline.

mod common;

use common::*;
use failover_core::objectives::residency_gaps;
use failover_core::{
    Action, AllDownPolicy, Config, EventKind, Node, NodeId, Policy, Region, RegionRole, Topology,
};

fn region(name: &str, role: RegionRole, group: &str) -> Region {
    Region {
        residency: Some(group.to_owned()),
        capacity: if role == RegionRole::Standby {
            0.6
        } else {
            1.0
        },
        ..Region::new(name, role)
    }
}

/// eu-west (eu, active), eu-north (eu, standby), us-east (us, active);
/// `nodes` as (name, region, primary).
fn topology(nodes: &[(&str, &str, bool)]) -> Topology {
    let mut b = Topology::builder("api.example.com.")
        .region(region("eu-west", RegionRole::Active, "eu"))
        .region(region("eu-north", RegionRole::Standby, "eu"))
        .region(region("us-east", RegionRole::Active, "us"));
    for (name, region, primary) in nodes {
        b = b.node(Node {
            name: (*name).into(),
            region: (*region).into(),
            priority: 0,
            primary: *primary,
        });
    }
    b.build().expect("valid topology")
}

fn drill(topology: Topology, policy: Policy) -> Drill {
    let mut d = Drill::new(Config::new(topology, policy).expect("valid config"));
    for t in [0, 10] {
        for r in ["eu-west", "eu-north", "us-east"] {
            d.round(t, r, true);
        }
    }
    assert_eq!(d.weights(), vec![100, 0, 100]);
    d
}

fn node(d: &Drill, name: &str) -> NodeId {
    d.c.topology().node_id(name).expect("node")
}

#[test]
fn a_lost_region_s_share_goes_only_to_its_own_group() {
    let mut d = drill(topology(&[]), seed_policy());
    d.rounds(30, 3, "eu-west", false);
    // eu-north, eu-west's standby, takes eu's share; us-east keeps its own.
    assert_eq!(d.weights(), vec![0, 100, 100]);

    // Without residency the standby would stay out: us-east, an active
    // region, still serves, so nothing is left for a standby.
    let mut plain = topology(&[]).regions().to_vec();
    for r in &mut plain {
        r.residency = None;
    }
    let mut b = Topology::builder("api.example.com.");
    for r in plain {
        b = b.region(r);
    }
    let mut d = drill(b.build().expect("valid"), seed_policy());
    d.rounds(30, 3, "eu-west", false);
    assert_eq!(d.weights(), vec![0, 0, 100]);
}

#[test]
fn a_group_with_every_region_out_follows_the_all_down_policy_for_itself() {
    for (policy, want) in [
        (AllDownPolicy::FailOpen, vec![100, 100, 100]),
        (AllDownPolicy::FailClosed, vec![0, 0, 100]),
    ] {
        let mut d = drill(
            topology(&[]),
            Policy {
                all_down: policy,
                ..seed_policy()
            },
        );
        for t in [30, 40, 50] {
            d.round(t, "eu-west", false);
            d.round(t, "eu-north", false);
        }
        assert_eq!(d.weights(), want, "{policy:?}");
        let downs: Vec<_> = d
            .events()
            .into_iter()
            .filter(|e| matches!(e, EventKind::ResidencyAllDown { .. }))
            .collect();
        assert_eq!(
            downs,
            vec![EventKind::ResidencyAllDown {
                region: failover_core::RegionId(0),
                policy
            }],
            "one event, for the eu group"
        );
        assert!(
            !d.events()
                .iter()
                .any(|e| matches!(e, EventKind::AllDown { .. })),
            "us-east still serves: not all down"
        );
    }
}

#[test]
fn a_writer_is_never_promoted_into_another_group_and_the_event_names_the_rule() {
    let mut d = drill(
        topology(&[("pg-eu", "eu-west", true), ("pg-us", "us-east", false)]),
        auto_promote(seed_policy(), 16 * 1024),
    );
    d.primary("pg-eu", 1000, None);
    d.replica("pg-us", 1000);
    d.rounds(30, 3, "eu-west", false);
    assert_eq!(d.promotes(), 0);
    assert!(
        !d.log.iter().any(|(_, a)| matches!(a, Action::Fence { .. })),
        "nothing is even fenced for a refused candidate"
    );
    let refusal = d
        .log
        .iter()
        .find_map(|(_, a)| match a {
            Action::Notify(e) if matches!(e.kind, EventKind::ResidencyRefused { .. }) => Some(e),
            _ => None,
        })
        .expect("a ResidencyRefused event");
    assert_eq!(
        refusal.kind,
        EventKind::ResidencyRefused {
            writer: node(&d, "pg-eu"),
            candidate: node(&d, "pg-us"),
        }
    );
    let text = refusal.display(d.c.topology()).to_string();
    assert!(
        text.contains("residency group eu")
            && text.contains("group us")
            && text.contains("region.residency"),
        "{text}"
    );
    assert_eq!(d.c.writer(), Some(node(&d, "pg-eu")));
}

#[test]
fn within_its_group_the_writer_moves_even_when_another_group_has_more_wal() {
    let mut d = drill(
        topology(&[
            ("pg-eu", "eu-west", true),
            ("pg-eun", "eu-north", false),
            ("pg-us", "us-east", false),
        ]),
        auto_promote(seed_policy(), 16 * 1024),
    );
    d.primary("pg-eu", 1000, None);
    d.replica("pg-eun", 900);
    d.replica("pg-us", 1000);
    d.rounds(30, 3, "eu-west", false);
    let (fence, fenced, _) = d.last_fence();
    assert_eq!(fenced, node(&d, "pg-eu"));
    d.done(fence);
    let (_, request) = d.last_promote();
    assert_eq!(
        request.node,
        node(&d, "pg-eun"),
        "pg-us is in another group"
    );
}

#[test]
fn the_planner_reports_regions_left_with_no_target() {
    let gaps = residency_gaps(&topology(&[
        ("pg-eu", "eu-west", true),
        ("pg-us", "us-east", false),
    ]));
    let summary: Vec<_> = gaps
        .iter()
        .map(|g| (g.region.index(), g.group.as_deref(), g.traffic, g.database))
        .collect();
    assert_eq!(
        summary,
        vec![
            // eu-west's writer has no replica in eu.
            (0, Some("eu"), false, true),
            // us-east is alone in us, for its traffic and its database.
            (2, Some("us"), true, true),
        ]
    );
    assert!(
        residency_gaps(&seed_topology(&[])).is_empty(),
        "no residency, no gap"
    );
}

#[test]
fn an_empty_residency_name_is_refused_with_the_field() {
    let error = Topology::builder("api.example.com.")
        .region(Region {
            residency: Some(" ".into()),
            ..Region::new("eu-west", RegionRole::Active)
        })
        .build()
        .expect_err("empty group");
    assert_eq!(error.field(), Some("region[0].residency"));
    let config = Config::from_toml(
        "service = \"api.example.com.\"\n[[region]]\nname = \"eu-west\"\nresidency = \"eu\"\n[[region]]\nname = \"us-east\"\nresidency = \"us\"\n",
    )
    .expect("valid");
    assert_eq!(
        config.topology().residency(failover_core::RegionId(0)),
        Some("eu")
    );
    assert_eq!(
        Config::from_toml(&config.to_toml().expect("toml")).expect("round trip"),
        config
    );
}
