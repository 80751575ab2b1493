//! Passive health: the service's own request outcomes judge a region next
//! to its probes. Each drill sets up us-east and us-west with passing
//! probes, reports traffic once a second, and reads the timeline.

mod common;

use std::time::Duration;

use common::*;
use failover_core::{
    Config, EventKind, Health, Input, LatencyRule, PassivePolicy, Policy, TrafficReport,
    TrafficRule,
};

/// 30 s window, at least 20 requests, more than 25 % errors; no
/// consecutive-errors rule unless a test sets one.
fn passive() -> PassivePolicy {
    PassivePolicy {
        window: Duration::from_secs(30),
        min_requests: 20,
        max_error_rate: 0.25,
        consecutive_5xx: None,
        latency: Some(LatencyRule {
            threshold: Duration::from_secs(1),
            max_rate: 0.5,
        }),
    }
}

fn drill(passive: Option<PassivePolicy>) -> Drill {
    let policy = Policy {
        passive,
        ..seed_policy()
    };
    let mut d = Drill::new(Config::new(seed_topology(&[]), policy).expect("valid config"));
    // Both regions up by their probes at 0 s and 10 s.
    for t in [0, 10] {
        d.round(t, "us-east", true);
        d.round(t, "us-west", true);
    }
    assert_eq!(d.health("us-east"), Health::Up);
    assert_eq!(d.weights(), vec![100, 0]);
    d
}

fn traffic(d: &mut Drill, secs: u64, region: &str, requests: u32, errors: u32, slow: u32) {
    traffic_in_a_row(d, secs, region, requests, errors, slow, 0);
}

fn traffic_in_a_row(
    d: &mut Drill,
    secs: u64,
    region: &str,
    requests: u32,
    errors: u32,
    slow: u32,
    consecutive_errors: u32,
) {
    d.advance_to(secs);
    let region = d.c.topology().region_id(region).expect("region");
    d.input(Input::Traffic(TrafficReport {
        region,
        at: d.now,
        requests,
        errors,
        slow,
        consecutive_errors,
    }));
}

/// Probes of both regions pass every 10 s up to `until`.
fn probes_pass(d: &mut Drill, from: u64, until: u64) {
    let mut t = from;
    while t <= until {
        d.round(t, "us-east", true);
        d.round(t, "us-west", true);
        t += 10;
    }
}

fn users_failing(d: &Drill) -> Vec<EventKind> {
    d.events()
        .into_iter()
        .filter(|e| matches!(e, EventKind::UsersFailing { .. }))
        .collect()
}

#[test]
fn half_the_requests_failing_drains_the_region_while_its_probes_pass() {
    let mut d = drill(Some(passive()));
    // 10 requests a second, half of them 5xx. The window holds 20 requests
    // from 12 s: judgements fail at 12, 13 and 14 s (fall = 3).
    for t in 11..=13 {
        traffic(&mut d, t, "us-east", 10, 5, 0);
        assert_eq!(d.weights(), vec![100, 0], "still serving at {t} s");
    }
    traffic(&mut d, 14, "us-east", 10, 5, 0);
    assert_eq!(d.health("us-east"), Health::Down);
    assert_eq!(d.weights(), vec![0, 100], "drained at 14 s");
    let events = d.last_events();
    assert!(
        events.iter().any(|e| matches!(
            e,
            EventKind::UsersFailing {
                rule: TrafficRule::ErrorRate { .. },
                requests: 40,
                errors: 20,
                judgements: 3,
                ..
            }
        )),
        "{events:?}"
    );
    // The probes saw nothing: no vantage voted it down.
    assert!(!d.events().iter().any(|e| matches!(
        e,
        EventKind::RegionDown { .. } | EventKind::VantageDown { .. }
    )));
    let text = d
        .log
        .iter()
        .find_map(|(_, a)| match a {
            failover_core::Action::Notify(e)
                if matches!(e.kind, EventKind::UsersFailing { .. }) =>
            {
                Some(e.display(d.c.topology()).to_string())
            }
            _ => None,
        })
        .expect("a UsersFailing event");
    assert!(
        text.contains("20 of 40 requests failed") && text.contains("50 %"),
        "{text}"
    );

    // Passing probes do not bring it back while its users still fail.
    probes_pass(&mut d, 20, 20);
    traffic(&mut d, 21, "us-east", 10, 5, 0);
    assert_eq!(d.health("us-east"), Health::Down);
    assert_eq!(d.weights(), vec![0, 100]);
}

#[test]
fn one_slow_request_or_errors_below_min_requests_change_nothing() {
    // A single request, and it is slow; then 100 requests a second, one of
    // them slow.
    let mut slow = drill(Some(passive()));
    traffic(&mut slow, 11, "us-east", 1, 0, 1);
    for t in 21..=30 {
        traffic(&mut slow, t, "us-east", 100, 0, u32::from(t == 21));
    }
    // 19 requests, every one an error: below min_requests, no rate to
    // judge (and no consecutive-errors rule).
    let mut few = drill(Some(passive()));
    for t in 11..=15 {
        let n = if t == 11 { 19 } else { 0 };
        traffic_in_a_row(&mut few, t, "us-east", n, n, 0, 19);
    }
    for d in [&slow, &few] {
        assert_eq!(d.health("us-east"), Health::Up);
        assert_eq!(d.weights(), vec![100, 0]);
        assert!(users_failing(d).is_empty(), "{:?}", d.events());
    }
}

#[test]
fn slow_requests_over_the_latency_rate_drain_the_region() {
    let mut d = drill(Some(passive()));
    for t in 11..=14 {
        traffic(&mut d, t, "us-east", 10, 0, 6);
    }
    assert_eq!(d.weights(), vec![0, 100]);
    assert!(matches!(
        users_failing(&d)[..],
        [EventKind::UsersFailing {
            rule: TrafficRule::SlowRate { .. },
            slow: 24,
            ..
        }]
    ));
}

#[test]
fn consecutive_errors_judge_the_region_whatever_the_count() {
    let mut d = drill(Some(PassivePolicy {
        consecutive_5xx: Some(5),
        ..passive()
    }));
    traffic_in_a_row(&mut d, 11, "us-east", 5, 5, 0, 5);
    traffic_in_a_row(&mut d, 12, "us-east", 2, 2, 0, 7);
    assert_eq!(d.weights(), vec![100, 0]);
    traffic_in_a_row(&mut d, 13, "us-east", 2, 2, 0, 9);
    assert_eq!(d.weights(), vec![0, 100]);
    assert!(matches!(
        users_failing(&d)[..],
        [EventKind::UsersFailing {
            rule: TrafficRule::ConsecutiveErrors { limit: 5 },
            consecutive_errors: 9,
            requests: 9,
            ..
        }]
    ));
}

#[test]
fn recovery_follows_rise_then_hold_down_and_the_ramp() {
    let mut d = drill(Some(passive()));
    for t in 11..=14 {
        traffic(&mut d, t, "us-east", 10, 5, 0);
    }
    assert_eq!(d.weights(), vec![0, 100]);
    // Healthy traffic again (the region still gets some: clients that
    // have not re-resolved). The window's error rate falls to 25 % at 18 s.
    for t in 15..=17 {
        traffic(&mut d, t, "us-east", 10, 0, 0);
    }
    assert_eq!(d.health("us-east"), Health::Down);
    traffic(&mut d, 18, "us-east", 10, 0, 0);
    assert_eq!(
        d.health("us-east"),
        Health::Down,
        "one healthy report of rise 2"
    );
    traffic(&mut d, 19, "us-east", 10, 0, 0);
    assert_eq!(d.health("us-east"), Health::Up);
    assert!(d.last_events().iter().any(|e| matches!(
        e,
        EventKind::UsersRecovered {
            judgements: 2,
            requests: 90,
            errors: 20,
            ..
        }
    )));
    assert!(d
        .last_events()
        .iter()
        .any(|e| matches!(e, EventKind::HeldDown { .. })));
    // Held down for 60 s from 14 s, then the ramp.
    probes_pass(&mut d, 20, 70);
    assert_eq!(d.weights(), vec![0, 100]);
    d.advance_to(74);
    assert_eq!(d.weights()[0], 10, "first ramp step after hold-down");
}

#[test]
fn a_region_with_no_traffic_left_returns_once_the_window_passes() {
    let mut d = drill(Some(passive()));
    for t in 11..=14 {
        traffic(&mut d, t, "us-east", 10, 5, 0);
    }
    assert_eq!(d.weights(), vec![0, 100]);
    // Drained: no more reports. Probes at 20..=40 s: the last failing
    // judgement (14 s) is less than a window old.
    probes_pass(&mut d, 20, 40);
    assert_eq!(d.health("us-east"), Health::Down);
    // At 50 s it is 36 s old and the window holds no request.
    probes_pass(&mut d, 50, 50);
    assert_eq!(d.health("us-east"), Health::Up);
    assert!(d.events().iter().any(|e| matches!(
        e,
        EventKind::UsersRecovered {
            judgements: 0,
            requests: 0,
            ..
        }
    )));
}

#[test]
fn passive_health_never_drains_below_min_serving_regions() {
    let mut d = drill(Some(passive()));
    // us-west is down by its probes (fall 3).
    for t in [20, 30, 40] {
        d.round(t, "us-west", false);
    }
    assert_eq!(d.health("us-west"), Health::Down);
    assert_eq!(d.weights(), vec![100, 0]);
    for t in 41..=44 {
        traffic(&mut d, t, "us-east", 10, 5, 0);
    }
    assert_eq!(d.health("us-east"), Health::Down);
    assert!(!users_failing(&d).is_empty());
    assert!(d.weights()[0] > 0, "the last serving region keeps serving");
}

#[test]
fn traffic_reports_change_nothing_while_passive_health_is_off() {
    let mut d = drill(None);
    for t in 11..=20 {
        traffic_in_a_row(&mut d, t, "us-east", 10, 10, 10, 50);
    }
    assert_eq!(d.weights(), vec![100, 0]);
    assert!(users_failing(&d).is_empty());
}

#[test]
fn passive_thresholds_are_validated_with_the_field_and_rule() {
    let base = "service = \"api.example.com.\"\n[[region]]\nname = \"us-east\"\nrecords = [\"192.0.2.10\"]\n[policy.passive]\n";
    for (line, field, rule) in [
        (
            "max_error_rate = 1.5",
            "policy.passive.max_error_rate",
            "between 0 and 1",
        ),
        (
            "max_error_rate = 0.0",
            "policy.passive.max_error_rate",
            "between 0 and 1",
        ),
        (
            "min_requests = 0",
            "policy.passive.min_requests",
            "at least 1",
        ),
        ("window = \"0s\"", "policy.passive.window", "greater than 0"),
        (
            "consecutive_5xx = 0",
            "policy.passive.consecutive_5xx",
            "at least 1",
        ),
        (
            "latency = { threshold = \"1s\", max_rate = 2.0 }",
            "policy.passive.latency.max_rate",
            "between 0 and 1",
        ),
    ] {
        let error = Config::from_toml(&format!("{base}{line}\n")).expect_err(line);
        let text = error.to_string();
        assert_eq!(error.field(), Some(field), "{line}: {text}");
        assert!(text.contains(rule), "{line}: {text}");
    }
    let config = Config::from_toml(&format!(
        "{base}window = \"10s\"\nmin_requests = 50\nlatency = {{ threshold = \"250ms\", max_rate = 0.1 }}\n"
    ))
    .expect("valid passive policy");
    let passive = config.policy().passive.clone().expect("passive on");
    assert_eq!(passive.window, Duration::from_secs(10));
    assert_eq!(passive.min_requests, 50);
    assert_eq!(passive.max_error_rate, 0.25, "default");
    assert_eq!(
        Config::from_toml(&config.to_toml().expect("toml")).expect("round trip"),
        config
    );
    let off = Config::from_toml(base.trim_end_matches("[policy.passive]\n")).expect("valid");
    assert_eq!(off.policy().passive, None, "off by default");
}
