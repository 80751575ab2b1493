//! The leader's fencing token in RFC 2136 updates, against a real BIND:
//! a newer leader raises the `_failover` TXT record, and an update under an
//! older token is refused — by the server itself, through the update's
//! prerequisite, not only by our client's read.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use failover_core::ports::TrafficRouter;
use failover_core::{
    FencingToken, Policy, PortError, PortErrorKind, Region, RegionRole, Topology, WeightPlan,
};
use failover_dns::{DnsError, Rfc2136Config, Rfc2136Router};
use failover_testkit::bind::{dig, BindServer, BindZone};

const SERVICE: &str = "api.example.test.";
/// The default owner name of the token's TXT record.
const TOKEN_NAME: &str = "_failover.api.example.test.";
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

/// A plan issued under `token` (`None`: a single controller).
fn plan(generation: u64, east: u32, west: u32, token: Option<u64>) -> WeightPlan {
    let mut plan = WeightPlan::in_region_order(generation, Duration::from_secs(30), [east, west]);
    plan.token = token.map(FencingToken);
    plan
}

/// BIND serving `example.test.` with east's records only, and no TXT.
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

fn config(bind: &BindServer) -> Rfc2136Config {
    let mut config =
        Rfc2136Config::new(bind.addr(), bind.zone(), bind.key_name(), bind.key_secret());
    // Generous: the machine is loaded.
    config.timeout = Duration::from_secs(3);
    config
}

/// One controller's router; each has its own memory of the token it holds.
fn router(bind: &BindServer) -> Rfc2136Router {
    Rfc2136Router::new(config(bind), &topology(), &Policy::default()).expect("valid config")
}

async fn dig_async(bind: &BindServer, name: &str, rtype: &str) -> Vec<String> {
    let (addr, name, rtype) = (bind.addr(), name.to_owned(), rtype.to_owned());
    tokio::task::spawn_blocking(move || dig(addr, &name, &rtype))
        .await
        .expect("dig task")
        .expect("dig runs")
}

/// The service's A and AAAA answers, as a resolver would get them.
async fn served(bind: &BindServer) -> (Vec<String>, Vec<String>) {
    (
        dig_async(bind, SERVICE, "A").await,
        dig_async(bind, SERVICE, "AAAA").await,
    )
}

/// The token TXT as `dig +short` prints it (`"token=5"`, quoted).
async fn token_txt(bind: &BindServer, name: &str) -> Vec<String> {
    dig_async(bind, name, "TXT").await
}

fn txt(token: u64) -> Vec<String> {
    vec![format!("\"token={token}\"")]
}

fn sorted(addrs: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = addrs.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

/// The error a deposed leader must get: `Refused`, not retryable, naming
/// both tokens and saying a newer leader's token is in place.
fn assert_stale(err: &PortError, ours: u64, newer: u64) {
    assert_eq!(err.kind(), PortErrorKind::Refused, "{err}");
    assert!(!err.is_retryable(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("token {ours}")),
        "names ours: {text}"
    );
    assert!(
        text.contains(&format!("token {newer}")),
        "names the newer: {text}"
    );
    assert!(text.contains("newer leader"), "says why: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_leader_raises_the_token_and_an_older_one_is_refused() {
    let bind = start_bind().await;
    let leader = router(&bind);

    leader
        .apply(&plan(1, 0, 100, Some(5)))
        .await
        .expect("token 5 applies on a zone without a token");
    assert_eq!(token_txt(&bind, TOKEN_NAME).await, txt(5), "TXT created");
    assert_eq!(served(&bind).await, (sorted(&[WEST_V4]), vec![]));

    leader
        .apply(&plan(2, 100, 100, Some(7)))
        .await
        .expect("a newer term applies");
    assert_eq!(token_txt(&bind, TOKEN_NAME).await, txt(7), "TXT raised");
    let both = (sorted(&[EAST_V4, WEST_V4]), sorted(&[EAST_V6]));
    assert_eq!(served(&bind).await, both);
    let accepted = leader.updates_sent();

    // The deposed leader of term 5, still trying to drain east.
    let deposed = router(&bind);
    let err = deposed
        .apply(&plan(3, 0, 100, Some(5)))
        .await
        .expect_err("token 5 is older than the 7 in place");
    eprintln!("deposed leader: {err}");
    assert_stale(&err, 5, 7);
    assert_eq!(deposed.updates_sent(), 0);
    // The same router going back to an old token is refused too.
    let err = leader
        .apply(&plan(3, 0, 100, Some(5)))
        .await
        .expect_err("token 5 again");
    assert_stale(&err, 5, 7);
    assert_eq!(leader.updates_sent(), accepted);
    assert_eq!(served(&bind).await, both, "weights unchanged");
    assert_eq!(
        token_txt(&bind, TOKEN_NAME).await,
        txt(7),
        "token unchanged"
    );

    // The current leader goes on.
    leader
        .apply(&plan(4, 0, 100, Some(7)))
        .await
        .expect("token 7 again");
    assert_eq!(served(&bind).await, (sorted(&[WEST_V4]), vec![]));
    assert_eq!(token_txt(&bind, TOKEN_NAME).await, txt(7));

    // A single controller's plan (no token) ignores the TXT and leaves it.
    let single = router(&bind);
    single
        .apply(&plan(5, 100, 0, None))
        .await
        .expect("no token, no check");
    assert_eq!(
        served(&bind).await,
        (sorted(&[EAST_V4]), sorted(&[EAST_V6]))
    );
    assert_eq!(token_txt(&bind, TOKEN_NAME).await, txt(7), "TXT untouched");
}

/// A leader of term 9 raised the token behind the back of a router that
/// still believes it holds token 7. That router sends its update without
/// reading the TXT first, carrying the prerequisite `token=7`: BIND must
/// refuse it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_itself_refuses_an_update_under_a_superseded_token() {
    let bind = start_bind().await;
    let stale = router(&bind);
    stale
        .apply(&plan(1, 100, 100, Some(7)))
        .await
        .expect("token 7 applies");
    assert_eq!(token_txt(&bind, TOKEN_NAME).await, txt(7));
    let accepted = stale.updates_sent();

    // Term 9's leader, through plain nsupdate.
    nsupdate(
        &bind,
        &format!("update delete {TOKEN_NAME} TXT\nupdate add {TOKEN_NAME} 60 TXT \"token=9\""),
    );
    assert_eq!(token_txt(&bind, TOKEN_NAME).await, txt(9));
    let before = served(&bind).await;

    // `apply_from` reads nothing: the refusal can only come from BIND.
    let seen = stale.live_records().await.expect("read records");
    let err = stale
        .apply_from(&plan(2, 0, 100, Some(7)), &seen)
        .await
        .expect_err("BIND must refuse: its TXT holds token=9");
    eprintln!("server refusal: {err}");
    assert!(
        matches!(&err, DnsError::StaleToken { rcode: Some(_), .. }),
        "refused by the server's prerequisite, which reports its rcode: {err:?}"
    );
    assert_stale(&PortError::from(err), 7, 9);
    named_logged_the_token_prerequisite_failing(&bind).await;
    assert_eq!(stale.updates_sent(), accepted);
    assert_eq!(served(&bind).await, before, "weights unchanged");
    assert_eq!(token_txt(&bind, TOKEN_NAME).await, txt(9));
}

/// The same through `apply`: a router that established token 7 itself
/// trusts it and skips the TXT read, so its update is checked by BIND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_holding_an_old_token_is_refused_by_the_server_on_apply() {
    let bind = start_bind().await;
    let stale = router(&bind);
    stale
        .apply(&plan(1, 100, 100, Some(7)))
        .await
        .expect("token 7 applies");
    let accepted = stale.updates_sent();
    nsupdate(
        &bind,
        &format!("update delete {TOKEN_NAME} TXT\nupdate add {TOKEN_NAME} 60 TXT \"token=9\""),
    );
    let before = served(&bind).await;

    let err = stale
        .apply(&plan(2, 0, 100, Some(7)))
        .await
        .expect_err("BIND must refuse token 7");
    eprintln!("apply under a superseded token: {err}");
    assert_stale(&err, 7, 9);
    assert!(
        matches!(
            err.inner().downcast_ref::<DnsError>(),
            Some(DnsError::StaleToken { rcode: Some(_), .. })
        ),
        "refused by the server's prerequisite, not by a read: {err:?}"
    );
    named_logged_the_token_prerequisite_failing(&bind).await;
    assert_eq!(stale.updates_sent(), accepted);
    assert_eq!(served(&bind).await, before, "weights unchanged");
    assert_eq!(token_txt(&bind, TOKEN_NAME).await, txt(9));
}

/// Two leaders raise the token at the same time, several rounds, each
/// round with the other one polled first. The newer token and its plan
/// win whatever the order; the older one is refused or overwritten. In
/// half the rounds the plans differ (the weights tell who won); in the
/// other half both route as already live, so only the token changes and
/// only the prerequisite on the token's old value stops the older leader
/// from writing its token over the newer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_leaders_end_with_the_newer_token_and_its_weights() {
    let bind = start_bind().await;
    let (a, b) = (router(&bind), router(&bind));
    let (east_only, west_only) = ((100, 0), (0, 100));
    let mut live = (100, 100);
    for round in 0..12u64 {
        let (older, newer) = (8 + 2 * round, 9 + 2 * round);
        let (old_w, new_w) = match round % 4 {
            0 => (east_only, west_only),
            1 => (west_only, east_only),
            _ => (live, live),
        };
        let old_plan = plan(2 * round + 1, old_w.0, old_w.1, Some(older));
        let new_plan = plan(2 * round + 2, new_w.0, new_w.1, Some(newer));
        // Router a leads term `older` on even rounds, term `newer` on odd ones.
        let (first, second) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let (r_old, r_new) = tokio::join!(first.apply(&old_plan), second.apply(&new_plan));
        r_new.unwrap_or_else(|e| panic!("round {round}: token {newer} must apply: {e}"));
        match r_old {
            Ok(()) => eprintln!("round {round}: token {older} applied, then {newer} raised it"),
            Err(e) => {
                eprintln!("round {round}: token {older}: {e}");
                assert_stale(&e, older, newer);
            }
        }
        assert_eq!(
            token_txt(&bind, TOKEN_NAME).await,
            txt(newer),
            "round {round}"
        );
        live = new_w;
        let expected = match live {
            (0, _) => (sorted(&[WEST_V4]), vec![]),
            (_, 0) => (sorted(&[EAST_V4]), sorted(&[EAST_V6])),
            _ => (sorted(&[EAST_V4, WEST_V4]), sorted(&[EAST_V6])),
        };
        assert_eq!(served(&bind).await, expected, "round {round}");
    }
}

/// The token record can live at another name in the zone; the router says
/// where, reads it back, and rejects names that would break the answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_record_name_is_configurable_and_checked() {
    let bind = start_bind().await;
    let default = router(&bind);
    assert_eq!(default.token_name(), TOKEN_NAME);
    assert_eq!(default.live_token().await.expect("read"), None);

    let mut moved = config(&bind);
    moved.token_name = Some("_leader.example.test".to_owned());
    let moved = Rfc2136Router::new(moved, &topology(), &Policy::default()).expect("config");
    assert_eq!(moved.token_name(), "_leader.example.test.");
    moved
        .apply(&plan(1, 0, 100, Some(3)))
        .await
        .expect("token 3 applies");
    assert_eq!(token_txt(&bind, "_leader.example.test.").await, txt(3));
    assert!(token_txt(&bind, TOKEN_NAME).await.is_empty());
    assert_eq!(
        moved.live_token().await.expect("read"),
        Some(FencingToken(3))
    );
    // The service name still answers A only: the token is never among them.
    assert_eq!(served(&bind).await, (sorted(&[WEST_V4]), vec![]));

    for (name, why) in [
        ("_failover.other.test.", "not inside zone"),
        (SERVICE, "must differ from the service name"),
    ] {
        let mut bad = config(&bind);
        bad.token_name = Some(name.to_owned());
        let err = Rfc2136Router::new(bad, &topology(), &Policy::default())
            .expect_err("token name refused");
        assert!(
            matches!(
                err,
                DnsError::Config {
                    field: "rfc2136.token_name",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(why), "{err}");
    }
}

/// Something else at the token's name cannot be compared with a token: the
/// plan is not applied, and the error names the record and what it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_txt_at_the_token_name_is_an_error_and_changes_nothing() {
    let bind = start_bind().await;
    nsupdate(
        &bind,
        &format!("update add {TOKEN_NAME} 60 TXT \"owner=ops-team\""),
    );
    let before = served(&bind).await;
    let err = router(&bind)
        .apply(&plan(1, 0, 100, Some(4)))
        .await
        .expect_err("cannot compare with a foreign record");
    eprintln!("foreign TXT: {err}");
    assert!(!err.is_retryable(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(TOKEN_NAME) && text.contains("owner=ops-team"),
        "{text}"
    );
    assert_eq!(served(&bind).await, before);
}

/// Waits (bounded) until `named` logs that an update failed on the token
/// record's value-dependent prerequisite: the proof that BIND, not our
/// client, refused it.
async fn named_logged_the_token_prerequisite_failing(bind: &BindServer) {
    let line = "_failover.api.example.test/TXT: 'RRset exists (value dependent)' prerequisite not satisfied (NXRRSET)";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = bind.log_tail();
        if log.contains(line) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "named never logged the failed prerequisite; log tail:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the real `nsupdate` with the zone's key.
fn nsupdate(bind: &BindServer, commands: &str) {
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
        "server 127.0.0.1 {}\nzone {}\n{commands}\nsend\n",
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
