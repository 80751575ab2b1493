//! The admin API over real HTTP on loopback, in front of a real runtime
//! probing real regional APIs and routing through the embedded DNS; and the
//! `failoverctl` binary driven against it (with real PostgreSQL nodes for
//! a switchover).

mod common;

use std::time::Duration;

use common::admin::*;
use common::*;
use failover_testkit::postgres::PgTestCluster;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_right_token_get_401_and_change_nothing() {
    let f = Fixture::start(|_| {}).await;
    let drain = br#"{"region": "us-east"}"#;
    for token in [
        None,
        Some("alice-admin-token-012345678X"),
        Some(""),
        Some("alice"),
    ] {
        let (status, body) = request(f.admin, "POST", "/commands/drain", token, drain).await;
        assert_eq!(status, 401, "token {token:?}: {body}");
        assert!(body.contains("bearer token"), "{body}");
    }
    for path in ["/status", "/metrics", "/history"] {
        let (status, body) = request(f.admin, "GET", path, None, b"").await;
        assert_eq!(status, 401, "GET {path} without a token: {body}");
    }

    let records = barrier(&f).await;
    assert_eq!(
        commands_in(&records),
        ["Pause", "Resume"],
        "only the authenticated commands reached the controller"
    );
    let status = get_json(f.admin, "/status").await;
    assert_eq!(region(&status, "us-east")["drained"], false, "{status:#}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_posted_by_alice_shows_in_status_and_in_the_audit_log() {
    let f = Fixture::start(|_| {}).await;
    wait_api_status(f.admin, Duration::from_secs(10), "us-east serving", |s| {
        region(s, "us-east")["applied_weight"].as_u64() > Some(0)
    })
    .await;

    let (status, body) = request(
        f.admin,
        "POST",
        "/commands/drain",
        Some(ALICE),
        br#"{"region": "us-east", "reason": "kernel upgrade"}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let drained = wait_api_status(
        f.admin,
        Duration::from_secs(10),
        "us-east drained, desired and applied",
        |s| {
            let east = region(s, "us-east");
            east["drained"] == true && east["desired_weight"] == 0 && east["applied_weight"] == 0
        },
    )
    .await;
    assert!(
        region(&drained, "us-west")["applied_weight"].as_u64() > Some(0),
        "us-west takes the traffic: {drained:#}"
    );
    assert_eq!(drained["plan"]["applied"], true, "{drained:#}");
    assert_eq!(drained["leader"]["leading"], true, "{drained:#}");
    assert!(drained["epoch"].is_u64(), "{drained:#}");
    wait_answer(f.dns.local_addr(), WEST_IP, Duration::from_secs(5)).await;

    let records = wait_audit(&f.audit, "alice's drain", |records| {
        records.iter().any(|r| r["record"] == "admin_command")
    })
    .await;
    let entry = records
        .iter()
        .find(|r| r["record"] == "admin_command")
        .expect("admin_command record");
    assert_eq!(entry["caller"], "alice", "{entry:#}");
    assert_eq!(entry["command"], "drain us-east", "{entry:#}");
    assert_eq!(entry["reason"], "kernel upgrade", "{entry:#}");
    assert_eq!(entry["outcome"], "accepted", "{entry:#}");
    assert!(
        entry["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{entry:#}"
    );

    let history = get_json(f.admin, "/history?limit=50").await;
    let history = history["records"].as_array().expect("records");
    assert!(
        history
            .iter()
            .any(|r| r["record"] == "admin_command" && r["caller"] == "alice"),
        "{history:#?}"
    );

    let (status, body) = request(
        f.admin,
        "POST",
        "/commands/undrain",
        Some(BOT),
        br#"{"region": "us-east"}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    wait_api_status(f.admin, Duration::from_secs(10), "us-east back", |s| {
        region(s, "us-east")["drained"] == false
    })
    .await;
    wait_audit(&f.audit, "the bot's undrain", |records| {
        records
            .iter()
            .any(|r| r["record"] == "admin_command" && r["caller"] == "deploy-bot")
    })
    .await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_bodies_are_refused_without_touching_state() {
    let f = Fixture::start(|admin| admin.max_body = 4096).await;
    let cases: [(&str, &[u8], &str); 8] = [
        (
            "/commands/drain",
            br#"{"region": 5}"#,
            "field `region` must be a string",
        ),
        (
            "/commands/drain",
            br#"{"regoin": "us-east"}"#,
            "unknown field `regoin`",
        ),
        ("/commands/drain", b"{}", "field `region` is missing"),
        (
            "/commands/drain",
            br#"{"region": "eu-north"}"#,
            "no region named `eu-north`",
        ),
        ("/commands/drain", br#"{"region": "us-east""#, "not JSON"),
        ("/commands/drain", b"[\"us-east\"]", "must be a JSON object"),
        (
            "/commands/switchover",
            br#"{"to": "pg-nowhere"}"#,
            "field `to`",
        ),
        (
            "/commands/pause",
            br#"{"reason": 7}"#,
            "field `reason` must be a string",
        ),
    ];
    for (path, body, want) in cases {
        let (status, answer) = request(f.admin, "POST", path, Some(ALICE), body).await;
        assert_eq!(
            status,
            400,
            "{path} {}: {answer}",
            String::from_utf8_lossy(body)
        );
        let error: Value = serde_json::from_str(&answer).expect("JSON error");
        let error = error["error"].as_str().expect("error text");
        assert!(
            error.contains(want),
            "{path}: {error:?} should say {want:?}"
        );
    }
    let huge = format!(
        r#"{{"region": "us-east", "reason": "{}"}}"#,
        "x".repeat(8192)
    );
    let (status, answer) = request(
        f.admin,
        "POST",
        "/commands/drain",
        Some(ALICE),
        huge.as_bytes(),
    )
    .await;
    assert_eq!(status, 413, "a body over max_body: {answer}");

    let records = barrier(&f).await;
    assert_eq!(
        commands_in(&records),
        ["Pause", "Resume"],
        "no refused command reached the controller"
    );
    assert!(
        !records
            .iter()
            .any(|r| r["record"] == "admin_command" && r["command"] == "drain us-east"),
        "{records:#?}"
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_reports_are_checked_field_by_field_and_refused_without_passive_health() {
    let f = Fixture::start(|_| {}).await;
    let valid = br#"{"region": "us-east", "requests": 40, "errors": 20, "slow": 0}"#;
    let (status, body) = request(f.admin, "POST", "/traffic", None, valid).await;
    assert_eq!(status, 401, "{body}");
    for (report, says) in [
        (&br#"[1]"#[..], "must be a JSON object"),
        (br#"{"requests": 1, "errors": 0}"#, "`region` is required"),
        (
            br#"{"region": "mars", "requests": 1, "errors": 0}"#,
            "is not a region of the topology (us-east, us-west)",
        ),
        (
            br#"{"region": "us-east", "requests": -1, "errors": 0}"#,
            "`requests` must be a whole number",
        ),
        (
            br#"{"region": "us-east", "requests": 1.5, "errors": 0}"#,
            "`requests` must be a whole number",
        ),
        (
            br#"{"region": "us-east", "requests": 1}"#,
            "`errors` is required",
        ),
        (
            br#"{"region": "us-east", "requests": 1, "errors": 2}"#,
            "`errors` (2) must not exceed `requests` (1)",
        ),
        (
            br#"{"region": "us-east", "requests": 1, "errors": 0, "slow": 3}"#,
            "`slow` (3) must not exceed",
        ),
        (
            br#"{"region": "us-east", "requests": 1, "errors": 0, "latency": 3}"#,
            "unknown field `latency`",
        ),
    ] {
        let (status, body) = request(f.admin, "POST", "/traffic", Some(BOT), report).await;
        assert_eq!(status, 400, "{}: {body}", String::from_utf8_lossy(report));
        assert!(
            body.contains(says),
            "{}: {body}",
            String::from_utf8_lossy(report)
        );
    }
    // A valid report to a controller whose policy has no passive health is
    // refused out loud, not silently ignored.
    let (status, body) = request(f.admin, "POST", "/traffic", Some(BOT), valid).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("policy.passive"), "{body}");
    assert_eq!(f.runtime.handle().status().traffic_reports_handled, 0);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_stalls_is_cut_off_at_the_time_limit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = Fixture::start(|admin| admin.request_timeout = Duration::from_millis(500)).await;
    let mut tcp = tokio::net::TcpStream::connect(f.admin)
        .await
        .expect("connect");
    // Headers, then only part of the promised body.
    let head = format!(
        "POST /commands/drain HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ALICE}\r\ncontent-length: 100\r\n\r\n{{\"region\""
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server held the stalled request beyond 5 s"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let records = barrier(&f).await;
    assert_eq!(commands_in(&records), ["Pause", "Resume"]);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_serve_the_runtime_metric_names() {
    let f = Fixture::start(|_| {}).await;
    let (status, text) = request(f.admin, "GET", "/metrics", Some(ALICE), b"").await;
    assert_eq!(status, 200, "{text}");
    for name in [
        "failover_region_health",
        "failover_region_weight",
        "failover_epoch",
        "failover_events_total",
        "failover_region_probe_latency_seconds",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    assert!(text.contains("region=\"us-east\""), "{text}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_that_does_not_lead_refuses_commands_with_503() {
    use failover::runtime::admin::{AdminAuth, AdminConfig};
    let base = fleet::Base::start().await;
    let with_admin = |b: failover::RuntimeBuilder| {
        let auth = AdminAuth::new().token("alice", ALICE);
        b.admin_config(AdminConfig::new(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            auth,
        ))
    };
    let controllers = vec![
        base.controller_with(0, with_admin).await,
        base.controller_with(1, with_admin).await,
    ];
    let leader = fleet::one_leader(&controllers, Duration::from_secs(20)).await;
    let follower = 1 - leader;
    let addr = |i: usize| controllers[i].runtime.admin_addr().expect("admin API");

    let status = get_json(addr(follower), "/status").await;
    assert_eq!(status["leader"]["coordinated"], true, "{status:#}");
    assert_eq!(status["leader"]["leading"], false, "{status:#}");
    let drain = br#"{"region": "us-west"}"#;
    let (code, body) = request(
        addr(follower),
        "POST",
        "/commands/drain",
        Some(ALICE),
        drain,
    )
    .await;
    assert_eq!(code, 503, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["leader"], false, "{answer:#}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("does not lead")),
        "{answer:#}"
    );
    // It names the leader and where its admin API answers, so failoverctl
    // can say where to go.
    let leader_url = format!("http://{}", addr(leader));
    let leader_id = format!("ctl-{}", controllers[leader].name);
    assert_eq!(
        answer["current_leader"]["controller"], leader_id,
        "{answer:#}"
    );
    assert_eq!(answer["current_leader"]["admin"], leader_url, "{answer:#}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains(&leader_id) && e.contains(&leader_url)),
        "{answer:#}"
    );
    let (code, _, err) = ctl_at(
        &format!("http://{}", addr(follower)),
        ALICE,
        &["drain", "us-west"],
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("retry with --url {leader_url}")),
        "failoverctl names the leader: {err}"
    );

    let (code, body) = request(addr(leader), "POST", "/commands/drain", Some(ALICE), drain).await;
    assert_eq!(code, 202, "{body}");
    // The leader stores the drain; every controller converges on it.
    for i in [leader, follower] {
        wait_api_status(
            addr(i),
            Duration::from_secs(20),
            "us-west drained everywhere",
            |s| region(s, "us-west")["drained"] == true,
        )
        .await;
    }
    for c in controllers {
        c.runtime.shutdown().await;
        c.dns.shutdown().await;
    }
}

// ---------------------------------------------------------------------------
// failoverctl

/// Runs the built `failoverctl` against the fixture's admin API with
/// `token`; its exit code, stdout and stderr.
async fn ctl(f: &Fixture, token: &str, args: &[&str]) -> (i32, String, String) {
    ctl_at(&format!("http://{}", f.admin), token, args).await
}

async fn ctl_at(url: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_failoverctl"))
        .args(["--url", url])
        .args(args)
        .env("FAILOVERCTL_TOKEN", token)
        .env_remove("FAILOVERCTL_URL")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("failoverctl ends within 30 s")
        .expect("failoverctl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `failoverctl status --json` until `check` holds (at most `limit`).
async fn wait_ctl_status(
    f: &Fixture,
    limit: Duration,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (code, out, err) = ctl(f, ALICE, &["--json", "status"]).await;
        assert_eq!(code, 0, "status --json: {err}");
        let status: Value = serde_json::from_str(&out).expect("status --json prints JSON");
        if check(&status) {
            return status;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}; last status: {status:#}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failoverctl_shows_status_drains_and_reports_errors_by_exit_code() {
    let f = Fixture::start(|_| {}).await;
    wait_api_status(f.admin, Duration::from_secs(10), "us-east serving", |s| {
        region(s, "us-east")["applied_weight"].as_u64() > Some(0)
    })
    .await;

    let (code, table, err) = ctl(&f, ALICE, &["status"]).await;
    assert_eq!(code, 0, "{err}");
    let east_row = table
        .lines()
        .find(|l| l.contains("| us-east"))
        .unwrap_or_else(|| panic!("no us-east row:\n{table}"));
    assert!(
        east_row.contains("up") && east_row.contains("| no "),
        "{table}"
    );
    assert!(table.contains("Service: api.failover.test."), "{table}");

    let (code, out, err) = ctl(&f, ALICE, &["drain", "us-east", "--reason", "maintenance"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("accepted: drain us-east"), "{out}");
    let status = wait_ctl_status(&f, Duration::from_secs(10), "us-east drained", |s| {
        let east = region(s, "us-east");
        east["drained"] == true && east["applied_weight"] == 0
    })
    .await;
    assert_eq!(region(&status, "us-east")["desired_weight"], 0);
    let (_, table, _) = ctl(&f, ALICE, &["status"]).await;
    let east_row = table
        .lines()
        .find(|l| l.contains("| us-east"))
        .unwrap_or_default();
    assert!(
        east_row.contains("| yes "),
        "drained shows in the table:\n{table}"
    );

    // The history comes from the audit log, which is written behind.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (code, out, err) = ctl(&f, ALICE, &["history", "--limit", "50"]).await;
        assert_eq!(code, 0, "{err}");
        if out.contains("drain us-east by alice") && out.contains("(reason: maintenance)") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "history lacks the drain:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 1: the server refused (wrong token; unknown region, named).
    let (code, _, err) = ctl(&f, "wrong-token-0123456789abc", &["undrain", "us-east"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("401"), "{err}");
    let (code, out, err) = ctl(&f, ALICE, &["--json", "drain", "eu-north"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no region named `eu-north`"), "{err}");
    assert!(
        out.contains("\"error\""),
        "--json prints the server's error: {out}"
    );
    // 2: usage.
    let (code, _, err) = ctl(&f, ALICE, &["drain"]).await;
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = ctl(&f, ALICE, &["force-promote", "pg-west"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--i-accept-split-brain-risk"), "{err}");
    // 3: nobody there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let (code, _, err) = ctl_at(&url, ALICE, &["status"]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot connect"), "{err}");

    // Nothing refused reached the controller: still drained.
    let status = get_json(f.admin, "/status").await;
    assert_eq!(region(&status, "us-east")["drained"], true, "{status:#}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failoverctl_switches_the_writer_over_to_a_replica() {
    let cluster = tokio::task::spawn_blocking(|| PgTestCluster::builder().replicas(1).start())
        .await
        .expect("cluster task")
        .expect("PostgreSQL primary + replica start");
    let f = Fixture::start_with(Some(&cluster), |_| {}).await;
    let node = |s: &Value, name: &str| -> Value {
        s["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no node {name} in {s:#}"))
    };
    // Each node's role and lag come from the observer.
    wait_ctl_status(
        &f,
        Duration::from_secs(20),
        "pg-east primary, pg-west a replica with a known lag",
        |s| {
            let (east, west) = (node(s, "pg-east"), node(s, "pg-west"));
            east["role"] == "primary"
                && east["lag_bytes"] == 0
                && west["role"] == "replica"
                && west["lag_bytes"].is_u64()
        },
    )
    .await;
    let (_, table, _) = ctl(&f, ALICE, &["status"]).await;
    let east_row = table
        .lines()
        .find(|l| l.contains("| pg-east"))
        .unwrap_or_default();
    assert!(east_row.contains("Leader"), "{table}");

    // On a loaded machine one observation of pg-west can time out and the
    // switchover be refused ("not seen as a replica"): the operator tries
    // again, as this test does (bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let switched = loop {
        let (code, out, err) = ctl(&f, ALICE, &["switchover", "--to", "pg-west"]).await;
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("accepted: switchover pg-west"), "{out}");
        let attempt = tokio::time::Instant::now() + Duration::from_secs(15);
        let mut last = Value::Null;
        while tokio::time::Instant::now() < attempt {
            let (_, out, _) = ctl(&f, ALICE, &["--json", "status"]).await;
            last = serde_json::from_str(&out).expect("JSON");
            if last["writer"] == "pg-west"
                || last["promotion"]["phase"] == "idle"
                    && last["recent_events"].to_string().contains("refused")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if last["writer"] == "pg-west" {
            break last;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no switchover within 60 s: {last:#}"
        );
    };
    assert!(switched["epoch"].as_u64() >= Some(1), "{switched:#}");
    let status = wait_ctl_status(
        &f,
        Duration::from_secs(20),
        "pg-west observed as the primary",
        |s| node(s, "pg-west")["role"] == "primary",
    )
    .await;
    assert_eq!(node(&status, "pg-west")["writer"], true, "{status:#}");
    let (_, table, _) = ctl(&f, ALICE, &["status"]).await;
    assert!(table.contains("writer: pg-west"), "{table}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failoverctl_talks_to_an_admin_api_over_tls() {
    let ca = failover_testkit::http::TestCa::generate("127.0.0.1").expect("test CA");
    let config = ca.server_config().expect("TLS server config");
    let f = Fixture::start(|admin| admin.tls = Some(config)).await;
    let ca_file = f.dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.ca_pem()).expect("write CA");
    let url = format!("https://{}", f.admin);
    let ca_arg = ca_file.to_str().expect("UTF-8 path");

    let (code, out, err) = ctl_at(&url, ALICE, &["--ca", ca_arg, "--json", "status"]).await;
    assert_eq!(code, 0, "{err}");
    let status: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(region(&status, "us-east")["health"], "up", "{status:#}");
    let (code, _, err) = ctl_at(
        &url,
        "wrong-token-0123456789abc",
        &["--ca", ca_arg, "status"],
    )
    .await;
    assert_eq!(code, 1, "a wrong token over TLS is still 401: {err}");
    assert!(err.contains("401"), "{err}");

    // Without the CA, or over plain HTTP, nothing is exchanged.
    let (code, _, err) = ctl_at(&url, ALICE, &["status"]).await;
    assert_eq!(code, 2, "{err}");
    let other = failover_testkit::http::TestCa::generate("127.0.0.1").expect("second CA");
    let other_file = f.dir.path().join("other.pem");
    std::fs::write(&other_file, other.ca_pem()).expect("write CA");
    let (code, _, err) = ctl_at(
        &url,
        ALICE,
        &["--ca", other_file.to_str().expect("UTF-8 path"), "status"],
    )
    .await;
    assert_eq!(code, 3, "a certificate from another CA is refused: {err}");
    assert!(err.contains("TLS"), "{err}");
    let (code, _, err) = ctl_at(&format!("http://{}", f.admin), ALICE, &["status"]).await;
    assert_eq!(code, 3, "plain HTTP to the TLS port gets no answer: {err}");
    f.stop().await;
}
