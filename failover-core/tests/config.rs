//! Configuration errors one by one: each names its field and its rule.

use std::time::Duration;

use failover_core::{
    Config, ConfigError, ConfigLocation, MaxRpo, Node, Policy, Region, RegionRole, RouterKind,
    Topology,
};

const SEED: &str = r#"
service = "api.example.com."
vantages = ["local"]

[[region]]
name = "us-east"
records = ["192.0.2.10"]

[[region]]
name = "us-west"
role = "standby"
capacity = 0.6
records = ["198.51.100.10"]

[[node]]
name = "pg-east"
region = "us-east"
primary = true

[[node]]
name = "pg-west"
region = "us-west"
priority = 1

[policy]
interval = "10s"
timeout = "2s"
fall = 3
ttl = "60s"
auto_promote = true
max_rpo = { bytes = 16777216, time = "5s" }
"#;

fn field(err: ConfigError) -> String {
    err.field()
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no field in {err}"))
}

fn topology_error(edit: impl FnOnce(&mut Vec<Region>)) -> String {
    let mut regions = vec![
        Region::new("us-east", RegionRole::Active),
        Region::new("us-west", RegionRole::Standby),
    ];
    edit(&mut regions);
    let mut b = Topology::builder("api.example.com.");
    for r in regions {
        b = b.region(r);
    }
    field(b.build().expect_err("must be rejected"))
}

fn policy_error(edit: impl FnOnce(&mut Policy)) -> (String, String) {
    let topology = Topology::builder("api.example.com.")
        .region(Region::new("us-east", RegionRole::Active))
        .region(Region::new("us-west", RegionRole::Standby))
        .build()
        .unwrap();
    let mut policy = Policy::default();
    edit(&mut policy);
    let err = Config::new(topology, policy).expect_err("must be rejected");
    let text = err.to_string();
    (field(err), text)
}

#[test]
fn the_seed_file_parses() {
    let config = Config::from_toml(SEED).unwrap();
    assert_eq!(config.topology().regions().len(), 2);
    assert_eq!(config.topology().regions()[1].capacity, 0.6);
    assert_eq!(config.policy().interval, Duration::from_secs(10));
    assert_eq!(
        config.policy().max_rpo,
        Some(MaxRpo {
            bytes: Some(16 << 20),
            time: Some(Duration::from_secs(5))
        })
    );
}

#[test]
fn toml_round_trip_is_lossless() {
    let config = Config::from_toml(SEED).unwrap();
    let text = config.to_toml().unwrap();
    assert_eq!(Config::from_toml(&text).unwrap(), config, "{text}");
    let default = Config::new(config.topology().clone(), Policy::default()).unwrap();
    assert_eq!(
        Config::from_toml(&default.to_toml().unwrap()).unwrap(),
        default
    );
}

#[test]
fn no_regions() {
    assert_eq!(topology_error(|r| r.clear()), "region");
}

#[test]
fn duplicate_region_ids() {
    assert_eq!(
        topology_error(|r| r[1].name = "us-east".into()),
        "region[1].name"
    );
}

#[test]
fn all_base_weights_zero() {
    assert_eq!(
        topology_error(|r| r.iter_mut().for_each(|r| r.base_weight = 0)),
        "region[].base_weight"
    );
}

#[test]
fn standby_regions_with_no_active_region() {
    assert_eq!(
        topology_error(|r| r[0].role = RegionRole::Standby),
        "region[].role"
    );
}

#[test]
fn negative_capacity() {
    assert_eq!(
        topology_error(|r| r[1].capacity = -1.0),
        "region[1].capacity"
    );
}

#[test]
fn node_in_unknown_region_and_two_primaries() {
    let base =
        || Topology::builder("api.example.com.").region(Region::new("us-east", RegionRole::Active));
    let node = |name: &str, region: &str, primary| Node {
        name: name.into(),
        region: region.into(),
        priority: 0,
        primary,
    };
    let err = base().node(node("pg", "mars", true)).build().unwrap_err();
    assert_eq!(field(err), "node[0].region");
    let err = base()
        .node(node("a", "us-east", true))
        .node(node("b", "us-east", true))
        .build()
        .unwrap_err();
    assert_eq!(field(err), "node[].primary");
}

#[test]
fn fall_of_zero() {
    assert_eq!(policy_error(|p| p.fall = 0).0, "policy.fall");
}

#[test]
fn rise_of_zero() {
    assert_eq!(policy_error(|p| p.rise = 0).0, "policy.rise");
}

#[test]
fn timeout_not_below_interval() {
    let (f, text) = policy_error(|p| p.timeout = p.interval);
    assert_eq!(f, "policy.timeout");
    assert!(text.contains("10s ≥ 10s"), "{text}");
}

#[test]
fn ttl_of_zero() {
    assert_eq!(policy_error(|p| p.ttl = Duration::ZERO).0, "policy.ttl");
}

#[test]
fn auto_promotion_without_max_rpo() {
    assert_eq!(policy_error(|p| p.auto_promote = true).0, "policy.max_rpo");
    assert_eq!(
        policy_error(|p| {
            p.auto_promote = true;
            p.max_rpo = Some(MaxRpo::default());
        })
        .0,
        "policy.max_rpo"
    );
}

#[test]
fn ramp_not_strictly_increasing() {
    assert_eq!(
        policy_error(|p| p.ramp_steps = vec![10, 10, 100]).0,
        "policy.ramp_steps"
    );
    assert_eq!(
        policy_error(|p| p.ramp_steps = vec![50, 25, 100]).0,
        "policy.ramp_steps"
    );
}

#[test]
fn ramp_not_ending_at_100() {
    let (f, text) = policy_error(|p| p.ramp_steps = vec![10, 50]);
    assert_eq!(f, "policy.ramp_steps");
    assert!(text.contains("end at 100"), "{text}");
}

#[test]
fn safety_minimum_above_the_number_of_regions() {
    let (f, text) = policy_error(|p| p.min_serving_regions = 3);
    assert_eq!(f, "policy.min_serving_regions");
    assert!(text.contains("(2)"), "{text}");
}

#[test]
fn quorum_above_the_number_of_vantages() {
    assert_eq!(policy_error(|p| p.quorum = Some(2)).0, "policy.quorum");
}

#[test]
fn guard_and_promotion_deadlines_are_checked_against_each_other() {
    use std::time::Duration;
    // A guard lease no longer than the probe interval cannot be renewed in time.
    let (field, rule) = policy_error(|p| p.guard_ttl = Some(p.interval));
    assert_eq!(field, "policy.guard_ttl");
    assert!(rule.contains("policy.interval"), "{rule}");
    // Waiting for proof no longer than a guard TTL would never see a lease expire.
    let (field, rule) = policy_error(|p| {
        p.guard_ttl = Some(Duration::from_secs(30));
        p.proof_timeout = Duration::from_secs(30);
    });
    assert_eq!(field, "policy.proof_timeout");
    assert!(rule.contains("policy.guard_ttl"), "{rule}");
    assert_eq!(
        policy_error(|p| p.step_timeout = Duration::ZERO).0,
        "policy.step_timeout"
    );
    assert_eq!(
        policy_error(|p| p.proof_timeout = Duration::ZERO).0,
        "policy.proof_timeout"
    );
    assert_eq!(
        policy_error(|p| p.max_attempts = 0).0,
        "policy.max_attempts"
    );
}

#[test]
fn unknown_keys_and_unitless_durations_are_rejected() {
    let err = Config::from_toml(&SEED.replace("fall = 3", "fal = 3")).unwrap_err();
    assert!(err.to_string().contains("fal"), "{err}");
    let err =
        Config::from_toml(&SEED.replace("interval = \"10s\"", "interval = \"10\"")).unwrap_err();
    assert!(err.to_string().contains("no unit"), "{err}");
    let err = Config::from_toml(&SEED.replace("fall = 3", "fall = 0")).unwrap_err();
    assert_eq!(err.field(), Some("policy.fall"));
}

/// README.md shows a configuration file; it must stay one that loads.
#[test]
fn the_readme_configuration_loads() {
    let readme = include_str!("../../README.md");
    let start = readme.find("```toml\n").expect("README has a TOML example") + "```toml\n".len();
    let len = readme[start..].find("```").expect("the TOML block ends");
    let config = failover_core::Config::from_toml(&readme[start..start + len])
        .unwrap_or_else(|e| panic!("README's TOML does not load: {e}"));
    assert_eq!(config.topology().regions().len(), 2);
    assert_eq!(config.topology().nodes().len(), 2);
    assert!(config.policy().auto_promote);
    assert_eq!(config.router().kind, RouterKind::Route53);
    let bounds =
        failover_core::objectives::Bounds::for_policy(config.policy(), std::time::Duration::ZERO);
    assert_eq!(
        bounds.best_detection.as_secs(),
        19,
        "README says detection 19–33 s (2 × 10 s − 1 s of jitter)"
    );
    assert_eq!(
        bounds.worst_detection.as_secs(),
        33,
        "README says detection 19–33 s"
    );
}

/// The 1-based line and column of the first `needle` in `text`.
fn place_of(text: &str, needle: &str) -> ConfigLocation {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the test's TOML"));
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    ConfigLocation {
        line: before.matches('\n').count() as u32 + 1,
        column: before[line_start..].chars().count() as u32 + 1,
    }
}

/// Issue 10, item 14: each error of a file names the field in the file's own
/// terms and the line and column it is written at, at the top level, in a
/// `[[region]]`, in a `[[node]]` and in `[policy]`, whether the TOML reader or
/// a validation rule found it.
#[test]
fn every_file_error_names_its_field_and_place() {
    struct Case {
        what: &'static str,
        replace: &'static str,
        with: &'static str,
        field: &'static str,
        /// The text the location must point at (first occurrence after the edit).
        at: &'static str,
        says: &'static str,
    }
    let cases = [
        Case {
            what: "negative base weight in the second region",
            replace: "role = \"standby\"",
            with: "role = \"standby\"\nbase_weight = -5",
            field: "region[1].base_weight",
            at: "-5",
            says: "-5",
        },
        Case {
            what: "misspelt key in a region",
            replace: "records = [\"192.0.2.10\"]",
            with: "records = [\"192.0.2.10\"]\nwieght = 5",
            field: "region[0].wieght",
            at: "wieght",
            says: "unknown field `wieght`",
        },
        Case {
            what: "not an IP address in a region's records",
            replace: "records = [\"198.51.100.10\"]",
            with: "records = [\"198.51.100.10\", \"not-an-ip\"]",
            field: "region[1].records[1]",
            at: "\"not-an-ip\"",
            says: "not an IPv4 or IPv6 address",
        },
        Case {
            what: "missing service at the top level",
            replace: "service = \"api.example.com.\"\n",
            with: "",
            field: "service",
            // The top-level table, which lacks it, starts the file.
            at: "",
            says: "missing field `service`",
        },
        Case {
            what: "misspelt key at the top level",
            replace: "vantages = [\"local\"]",
            with: "vantage = [\"local\"]",
            field: "vantage",
            at: "vantage =",
            says: "unknown field `vantage`",
        },
        Case {
            what: "misspelt key in a node",
            replace: "priority = 1",
            with: "priorty = 1",
            field: "node[1].priorty",
            at: "priorty",
            says: "unknown field `priorty`",
        },
        Case {
            what: "a node without its region",
            replace: "region = \"us-west\"\n",
            with: "",
            field: "node[1].region",
            // The `[[node]]` header of the table that lacks it.
            at: "[[node]]\nname = \"pg-west\"",
            says: "missing field `region`",
        },
        Case {
            what: "wrong type in a node",
            replace: "primary = true",
            with: "primary = \"yes\"",
            field: "node[0].primary",
            at: "\"yes\"",
            says: "bool",
        },
        Case {
            what: "misspelt key in the policy",
            replace: "fall = 3",
            with: "fal = 3",
            field: "policy.fal",
            at: "fal =",
            says: "unknown field `fal`",
        },
        Case {
            what: "capacity written as a percentage",
            replace: "capacity = 0.6",
            with: "capacity = 60",
            field: "region[1].capacity",
            at: "capacity = 60",
            says: "capacity is a fraction of peak: 0.6 means 60 %; write 0.6 if you meant 60 %",
        },
        Case {
            what: "duplicate region name (a validation rule)",
            replace: "name = \"us-west\"",
            with: "name = \"us-east\"",
            field: "region[1].name",
            at: "name = \"us-east\"\nrole",
            says: "duplicate region",
        },
        Case {
            what: "node in an unknown region (a validation rule)",
            replace: "region = \"us-west\"",
            with: "region = \"mars\"",
            field: "node[1].region",
            at: "region = \"mars\"",
            says: "mars",
        },
        Case {
            what: "a duration without its unit",
            replace: "interval = \"10s\"",
            with: "interval = \"10\"",
            field: "policy.interval",
            at: "\"10\"",
            says: "no unit",
        },
        Case {
            what: "negative bytes in an inline table",
            replace: "bytes = 16777216",
            with: "bytes = -1",
            field: "policy.max_rpo.bytes",
            at: "-1",
            says: "-1",
        },
        Case {
            what: "an empty vantage (a validation rule on a list item)",
            replace: "vantages = [\"local\"]",
            with: "vantages = [\"local\", \"\"]",
            field: "vantages[1]",
            at: "\"\"]",
            says: "must not be empty",
        },
        Case {
            what: "fall of zero (a policy rule)",
            replace: "fall = 3",
            with: "fall = 0",
            field: "policy.fall",
            at: "fall = 0",
            says: "at least 1",
        },
    ];
    for case in cases {
        assert!(SEED.contains(case.replace), "{}: bad test edit", case.what);
        let text = SEED.replacen(case.replace, case.with, 1);
        let err = Config::from_toml(&text).expect_err(case.what);
        let shown = err.to_string();
        assert_eq!(err.field(), Some(case.field), "{}: {shown}", case.what);
        let expected = place_of(&text, case.at);
        assert_eq!(err.location(), Some(expected), "{}: {shown}", case.what);
        assert!(
            shown.contains(case.field) && shown.contains(&expected.to_string()),
            "{}: the message names the field and its place: {shown}",
            case.what
        );
        assert!(shown.contains(case.says), "{}: {shown}", case.what);
    }
}

/// A capacity above ten times peak is refused in code too, with the hint.
#[test]
fn capacity_as_a_percentage_is_refused_with_a_hint() {
    let topology = Topology::builder("api.example.com.")
        .region(Region {
            capacity: 60.0,
            ..Region::new("us-east", RegionRole::Active)
        })
        .build()
        .expect_err("60 is a percentage");
    assert_eq!(topology.field(), Some("region[0].capacity"));
    assert_eq!(topology.location(), None, "built in code: no file");
    assert!(
        topology.to_string().contains("0.6 means 60 %"),
        "{topology}"
    );
    // Overprovisioned but plausible capacities still pass.
    Topology::builder("api.example.com.")
        .region(Region {
            capacity: 2.5,
            ..Region::new("us-east", RegionRole::Active)
        })
        .build()
        .unwrap();
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Whatever the file says, reading it never panics, and a place it
    /// reports is inside the text.
    #[test]
    fn any_edit_of_the_file_reads_or_fails_with_a_place_inside_it(
        at in 0usize..SEED.len(),
        cut in 0usize..12,
        insert in "[a-z0-9 =\\[\\]\"\\.\\-é\n]{0,8}",
    ) {
        let mut text = SEED.to_owned();
        let at = (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        let end = (at..=(at + cut).min(text.len()))
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(at);
        text.replace_range(at..end, &insert);
        if let Err(err) = Config::from_toml(&text) {
            let shown = err.to_string();
            proptest::prop_assert!(!shown.is_empty());
            if let Some(place) = err.location() {
                let lines = text.split('\n').count() as u32;
                proptest::prop_assert!(place.line >= 1 && place.line <= lines, "{shown}");
                proptest::prop_assert!(place.column >= 1, "{shown}");
            }
        }
    }
}

#[test]
fn move_writer_on_parses_and_an_unknown_value_is_named() {
    let text = SEED.replace(
        "auto_promote = true",
        "auto_promote = true\nmove_writer_on = \"database\"",
    );
    let config = Config::from_toml(&text).unwrap();
    assert_eq!(
        config.policy().move_writer_on,
        failover_core::MoveWriterOn::Database
    );
    assert_eq!(
        Config::from_toml(SEED).unwrap().policy().move_writer_on,
        failover_core::MoveWriterOn::RegionOrDatabase,
        "the default"
    );
    let bad = SEED.replace(
        "auto_promote = true",
        "auto_promote = true\nmove_writer_on = \"api\"",
    );
    let error = Config::from_toml(&bad).unwrap_err().to_string();
    assert!(error.contains("move_writer_on"), "{error}");
}

#[test]
fn the_router_table_picks_route53_with_its_settings() {
    let text = format!(
        "{SEED}\n[router]\nkind = \"route53\"\nhosted_zone_id = \"Z0123456789ABCDEFGHIJ\"\nset_identifiers = {{ us-east = \"use1\" }}\nendpoint = \"http://127.0.0.1:5000\"\n"
    );
    let config = Config::from_toml(&text).unwrap();
    let router = config.router();
    assert_eq!(router.kind, RouterKind::Route53);
    assert_eq!(
        router.hosted_zone_id.as_deref(),
        Some("Z0123456789ABCDEFGHIJ")
    );
    assert_eq!(router.set_identifiers["us-east"], "use1");
    // It survives a round trip, and without [router] the kind is embedded.
    let back = Config::from_toml(&config.to_toml().unwrap()).unwrap();
    assert_eq!(back, config);
    assert_eq!(
        Config::from_toml(SEED).unwrap().router().kind,
        RouterKind::Embedded
    );
}

#[test]
fn an_unknown_router_kind_names_the_field_and_the_choices() {
    let text = format!("{SEED}\n[router]\nkind = \"route-53\"\n");
    let err = Config::from_toml(&text).unwrap_err();
    let message = err.to_string();
    assert_eq!(err.field(), Some("router.kind"), "{message}");
    assert!(
        message.contains("route53") && message.contains("rfc2136"),
        "{message}"
    );
    assert!(err.location().is_some(), "{message}");
}

#[test]
fn router_keys_are_checked_against_the_kind() {
    let error = |router: &str| {
        let err = Config::from_toml(&format!("{SEED}\n[router]\n{router}\n")).unwrap_err();
        (field(err.clone()), err.to_string())
    };
    let (f, m) = error("kind = \"route53\"");
    assert_eq!(f, "router.hosted_zone_id", "{m}");
    assert!(m.contains("required"), "{m}");
    let (f, m) = error("kind = \"route53\"\nhosted_zone_id = \"not a zone!\"");
    assert_eq!(f, "router.hosted_zone_id", "{m}");
    assert!(m.contains("not a zone!"), "{m}");
    let (f, m) = error("kind = \"rfc2136\"\nhosted_zone_id = \"Z1\"");
    assert_eq!(f, "router.hosted_zone_id", "{m}");
    assert!(m.contains("route53"), "{m}");
    let (f, _) = error(
        "kind = \"route53\"\nhosted_zone_id = \"Z1\"\nset_identifiers = { eu-north = \"x\" }",
    );
    assert_eq!(f, "router.set_identifiers.eu-north");
    let (f, _) = error("kind = \"rfc2136\"\nserver = \"192.0.2.53:53\"\nzone = \"example.com.\"\nkey_name = \"k.\"");
    assert_eq!(f, "router.key_secret_env");
}

#[test]
fn writer_drain_parses_defaults_to_zero_and_is_bounded_by_the_step_timeout() {
    use std::time::Duration;
    assert_eq!(Policy::default().writer_drain, Duration::ZERO);
    let (field, rule) = policy_error(|p| {
        p.step_timeout = Duration::from_secs(10);
        p.writer_drain = Duration::from_secs(11);
    });
    assert_eq!(field, "policy.writer_drain");
    assert!(rule.contains("policy.step_timeout"), "{rule}");
    let with_drain = SEED.replace("[policy]", "[policy]\nwriter_drain = \"2500ms\"");
    let config = Config::from_toml(&with_drain).unwrap();
    assert_eq!(config.policy().writer_drain, Duration::from_millis(2500));
}
