//! RFC 2136 + TSIG updates against a real BIND (`named`), checked with `dig`.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use failover_core::ports::TrafficRouter;
use failover_core::{
    AllDownPolicy, Policy, PortErrorKind, Region, RegionRole, Topology, WeightPlan,
};
use failover_dns::{DnsError, Rfc2136Config, Rfc2136Router};
use failover_testkit::bind::{dig, dig_raw, BindServer, BindZone};

const SERVICE: &str = "api.example.test.";
const EAST_V4: &str = "192.0.2.10";
const EAST_V6: &str = "2001:db8::10";
const WEST_V4: &str = "198.51.100.20";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

fn topology() -> Topology {
    let mut east = Region::new("east", RegionRole::Active);
    east.records = vec![ip(EAST_V4), ip(EAST_V6)];
    let mut west = Region::new("west", RegionRole::Active);
    west.records = vec![ip(WEST_V4)];
    Topology::builder(SERVICE)
        .region(east)
        .region(west)
        .build()
        .expect("valid topology")
}

fn plan(generation: u64, ttl_secs: u64, east: u32, west: u32) -> WeightPlan {
    WeightPlan::in_region_order(generation, Duration::from_secs(ttl_secs), [east, west])
}

/// BIND serving `example.test.` with east's records only.
async fn start_bind() -> BindServer {
    tokio::task::spawn_blocking(|| {
        BindServer::start(
            BindZone::new("example.test")
                .record("api", ip(EAST_V4))
                .record("api", ip(EAST_V6)),
        )
    })
    .await
    .expect("start task")
    .expect("named starts (install bind9 if missing)")
}

/// A router with a 3 s reply timeout: generous, the machine is loaded.
fn router(bind: &BindServer, all_down: AllDownPolicy, secret: Option<&str>) -> Rfc2136Router {
    router_with_timeout(bind, all_down, secret, Duration::from_secs(3))
}

fn router_with_timeout(
    bind: &BindServer,
    all_down: AllDownPolicy,
    secret: Option<&str>,
    timeout: Duration,
) -> Rfc2136Router {
    let mut config = Rfc2136Config::new(
        bind.addr(),
        bind.zone(),
        bind.key_name(),
        secret.unwrap_or(bind.key_secret()),
    );
    config.timeout = timeout;
    let policy = Policy {
        all_down,
        ..Policy::default()
    };
    Rfc2136Router::new(config, &topology(), &policy).expect("valid config")
}

async fn dig_async(bind: &BindServer, rtype: &str) -> Vec<String> {
    let (addr, rtype) = (bind.addr(), rtype.to_owned());
    tokio::task::spawn_blocking(move || dig(addr, SERVICE, &rtype))
        .await
        .expect("dig task")
        .expect("dig runs")
}

fn sorted(addrs: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = addrs.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_move_traffic_and_dig_sees_each_plan() {
    let bind = start_bind().await;
    let router = router(&bind, AllDownPolicy::FailOpen, None);

    router
        .apply(&plan(1, 30, 0, 100))
        .await
        .expect("drain east");
    assert_eq!(dig_async(&bind, "A").await, sorted(&[WEST_V4]));
    assert!(dig_async(&bind, "AAAA").await.is_empty());
    let answer = tokio::task::spawn_blocking({
        let addr = bind.addr();
        move || dig_raw(addr, &[SERVICE, "A", "+noall", "+answer"])
    })
    .await
    .expect("task")
    .expect("dig");
    assert!(
        answer.contains("\t30\tIN\tA\t198.51.100.20"),
        "TTL comes from the plan: {answer}"
    );
    let weights: Vec<u32> = router
        .read_back()
        .await
        .expect("read back")
        .iter()
        .map(|w| w.weight)
        .collect();
    assert_eq!(weights, vec![0, 1]);

    router
        .apply(&plan(2, 60, 100, 50))
        .await
        .expect("serve both");
    assert_eq!(dig_async(&bind, "A").await, sorted(&[EAST_V4, WEST_V4]));
    assert_eq!(dig_async(&bind, "AAAA").await, sorted(&[EAST_V6]));
    assert_eq!(router.updates_sent(), 2);

    // Idempotent: the live plan again sends nothing.
    router
        .apply(&plan(3, 60, 100, 100))
        .await
        .expect("same routing");
    assert_eq!(router.updates_sent(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_an_auth_error_and_leaves_the_zone_unchanged() {
    let bind = start_bind().await;
    let before = dig_async(&bind, "A").await;
    let wrong_secret = data_encoding::BASE64.encode(&[7u8; 32]);
    let err = router(&bind, AllDownPolicy::FailOpen, Some(&wrong_secret))
        .apply(&plan(1, 30, 0, 100))
        .await
        .expect_err("BIND must reject a wrong secret");
    assert_eq!(err.kind(), PortErrorKind::Auth, "{err}");
    eprintln!("wrong secret: {err}");
    assert!(!err.is_retryable());
    assert!(
        matches!(
            err.inner().downcast_ref::<DnsError>(),
            Some(DnsError::Auth { .. })
        ),
        "{err}"
    );

    // An unknown key name: BADKEY.
    let mut config = Rfc2136Config::new(bind.addr(), bind.zone(), "nobody.", bind.key_secret());
    config.timeout = Duration::from_secs(3);
    let stranger = Rfc2136Router::new(config, &topology(), &Policy::default()).expect("config");
    let err = stranger
        .apply(&plan(1, 30, 0, 100))
        .await
        .expect_err("unknown key");
    eprintln!("unknown key: {err}");
    assert_eq!(err.kind(), PortErrorKind::Auth, "{err}");

    assert_eq!(dig_async(&bind, "A").await, before, "zone unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_bind_stopped_an_update_times_out_then_succeeds_after_restart() {
    let mut bind = start_bind().await;
    // Short, since this test waits for it to expire once.
    let router = router_with_timeout(
        &bind,
        AllDownPolicy::FailOpen,
        None,
        Duration::from_millis(1500),
    );
    bind.stop();
    let err = router
        .apply(&plan(1, 30, 0, 100))
        .await
        .expect_err("server is down");
    assert_eq!(err.kind(), PortErrorKind::Timeout, "{err}");
    eprintln!("stopped: {err}");
    assert!(err.is_retryable());

    let mut bind = tokio::task::spawn_blocking(move || bind.restart().map(|()| bind))
        .await
        .expect("task")
        .expect("named restarts on the same port");
    router
        .apply(&plan(1, 30, 0, 100))
        .await
        .expect("retry after restart");
    assert_eq!(dig_async(&bind, "A").await, sorted(&[WEST_V4]));
    assert!(bind.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_every_region_leaves_records_under_fail_open_only() {
    let bind = start_bind().await;
    let open = router(&bind, AllDownPolicy::FailOpen, None);
    open.apply(&plan(1, 30, 0, 0))
        .await
        .expect("fail-open drain-all is a no-op");
    assert_eq!(dig_async(&bind, "A").await, sorted(&[EAST_V4]));
    assert_eq!(dig_async(&bind, "AAAA").await, sorted(&[EAST_V6]));
    assert_eq!(open.updates_sent(), 0);

    let closed = router(&bind, AllDownPolicy::FailClosed, None);
    closed
        .apply(&plan(2, 30, 0, 0))
        .await
        .expect("fail-closed removes everything");
    assert!(dig_async(&bind, "A").await.is_empty());
    assert!(dig_async(&bind, "AAAA").await.is_empty());
    let weights: Vec<u32> = closed
        .read_back()
        .await
        .expect("read")
        .iter()
        .map(|w| w.weight)
        .collect();
    assert_eq!(weights, vec![0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_change_is_detected_as_a_conflict() {
    let bind = start_bind().await;
    let router = router(&bind, AllDownPolicy::FailOpen, None);
    let seen = router.live_records().await.expect("read");

    // Someone else changes the RRset between our read and our update.
    nsupdate(&bind, "update add api.example.test. 60 A 203.0.113.99");
    let err = router
        .apply_from(&plan(1, 30, 0, 100), &seen)
        .await
        .expect_err("prerequisite must fail");
    assert_eq!(err.kind(), PortErrorKind::Conflict, "{err}");
    assert!(err.kind().is_retryable());
    assert!(matches!(err, DnsError::Conflict { .. }), "{err}");
    assert_eq!(
        dig_async(&bind, "A").await,
        sorted(&[EAST_V4, "203.0.113.99"]),
        "our update must not apply"
    );

    // Re-reading and retrying (what the runtime does) converges.
    router.apply(&plan(1, 30, 0, 100)).await.expect("retry");
    assert_eq!(dig_async(&bind, "A").await, sorted(&[WEST_V4]));
}

#[test]
fn configuration_errors_name_the_field() {
    let addr = "127.0.0.1:53".parse().expect("addr");
    let err = Rfc2136Router::new(
        Rfc2136Config::new(addr, "example.test.", "k.", "not base64!"),
        &topology(),
        &Policy::default(),
    )
    .expect_err("bad secret");
    assert!(
        matches!(
            err,
            DnsError::Config {
                field: "rfc2136.key_secret",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("rfc2136.key_secret"));
    let err = Rfc2136Router::new(
        Rfc2136Config::new(addr, "other.test.", "k.", "AAAA"),
        &topology(),
        &Policy::default(),
    )
    .expect_err("zone");
    assert!(
        matches!(
            err,
            DnsError::Config {
                field: "rfc2136.zone",
                ..
            }
        ),
        "{err}"
    );
}

/// Runs the real `nsupdate` with the zone's key.
fn nsupdate(bind: &BindServer, command: &str) {
    let key = format!(
        "hmac-sha256:{}:{}",
        bind.key_name().trim_end_matches('.'),
        bind.key_secret()
    );
    let mut child = Command::new("nsupdate")
        .args(["-y", &key, "-t", "5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nsupdate runs (install bind9-dnsutils)");
    let script = format!(
        "server 127.0.0.1 {}\nzone {}\n{command}\nsend\n",
        bind.addr().port(),
        bind.zone()
    );
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write script");
    let out = child.wait_with_output().expect("nsupdate finishes");
    assert!(
        out.status.success(),
        "nsupdate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbled_reply_is_malformed_not_retried() {
    // A UDP peer that answers every message with a header claiming one
    // question and one answer, followed by bytes that are neither.
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = peer.local_addr().expect("addr");
    let garbler = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        for _ in 0..4 {
            let Ok((n, from)) = peer.recv_from(&mut buf).await else {
                return;
            };
            if n < 2 {
                continue;
            }
            let mut reply = vec![buf[0], buf[1], 0x80, 0, 0, 1, 0, 1, 0, 0, 0, 0];
            reply.extend_from_slice(&[0xff; 7]);
            let _ = peer.send_to(&reply, from).await;
        }
    });
    let mut config = Rfc2136Config::new(addr, "example.test.", "k.", "AAAA");
    config.timeout = Duration::from_secs(2);
    let router = Rfc2136Router::new(config, &topology(), &Policy::default()).expect("config");
    let err = router
        .apply(&plan(1, 30, 0, 100))
        .await
        .expect_err("garbage");
    assert_eq!(err.kind(), PortErrorKind::Malformed, "{err}");
    assert!(!err.is_retryable());
    garbler.abort();
}
