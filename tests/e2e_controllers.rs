//! Controllers in every region (issue 9): three runtimes, one per vantage,
//! coordinated by a real 3-member etcd cluster, over real PostgreSQL with a
//! node guard per node leasing from etcd, real HTTP APIs, and each
//! controller's own embedded DNS serving the plan from the store.
//!
//! - Exactly one leads; the others decide but change nothing, and refuse
//!   operator commands.
//! - Every controller's DNS answers from the stored plan.
//! - The leader crashes (its tasks and its etcd session vanish, without
//!   resigning): another takes over within the lease TTL plus one probe
//!   interval (bounded generously here; the printed number is the
//!   measurement).
//! - us-east then fails: the new leader drains it and promotes pg-west once,
//!   after pg-east's fence is confirmed; both remaining DNS servers answer
//!   us-west, and both name pg-west the writer (each follows the store's
//!   record, `RuntimeBuilder::serve_writer_name`).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fleet::*;
use common::*;
use failover::decision::{Config, NodeId, VantageId};
use failover::dns::{EmbeddedConfig, EmbeddedDns};
use failover::etcd::EtcdCoordinator;
use failover::pg::PgCluster;
use failover::{RuntimeBuilder, RuntimeError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_acts_a_crashed_leader_is_replaced_and_the_writer_moves_once() {
    let base = Base::start().await;
    let (cluster, regions) = (&base.cluster, &base.regions);
    let mut controllers = Vec::new();
    for i in 0..VANTAGES.len() {
        controllers.push(base.controller(i).await);
    }
    let leader = one_leader(&controllers, Duration::from_secs(15)).await;
    println!("leader: controller {}", controllers[leader].name);
    for c in &controllers {
        wait_answer(c.dns.local_addr(), EAST_IP, Duration::from_secs(15)).await;
        // Every controller's DNS names the writer, not only the leader's.
        wait_name_answer(
            c.dns.local_addr(),
            WRITER_NAME,
            PG_EAST_IP,
            Duration::from_secs(15),
        )
        .await;
    }
    // A follower refuses operator commands and changes nothing.
    let follower = (leader + 1) % controllers.len();
    let refused = controllers[follower]
        .runtime
        .handle()
        .command(failover::decision::Command::Pause)
        .await;
    assert!(
        matches!(refused, Err(RuntimeError::NotLeader)),
        "{refused:?}"
    );

    // The leader crashes: its tasks and its etcd session vanish, no resign.
    let crashed = controllers.remove(leader);
    let crashed_at = Instant::now();
    drop(crashed);
    let successor = one_leader(&controllers, LEASE_TTL + Duration::from_secs(8)).await;
    let takeover = crashed_at.elapsed();
    println!(
        "takeover after the leader crashed: {takeover:?} (lease TTL {LEASE_TTL:?}, probe interval {:?})",
        fleet_policy().interval
    );
    assert!(
        takeover <= LEASE_TTL + fleet_policy().interval + Duration::from_secs(3),
        "takeover took {takeover:?}"
    );

    // us-east fails: the new leader drains it and promotes pg-west, once.
    regions.east.stop().await;
    let epoch = west_is_the_writer(&controllers).await;
    for c in &controllers {
        wait_answer(c.dns.local_addr(), WEST_IP, Duration::from_secs(15)).await;
        // The follower's too: it learnt pg-west from the store's record
        // and named it once pg-west showed itself promoted.
        wait_name_answer(
            c.dns.local_addr(),
            WRITER_NAME,
            PG_WEST_IP,
            Duration::from_secs(15),
        )
        .await;
    }
    let status = controllers[successor].runtime.handle().status();
    let promoted: Vec<_> = status
        .recent_events
        .iter()
        .filter(|e| e.contains("promoted"))
        .collect();
    println!("successor's promotion events: {promoted:?}");
    assert_eq!(promoted.len(), 1, "{promoted:?}");
    // The follower promoted nothing itself: only the leader acts.
    let other = 1 - successor;
    let follower_status = controllers[other].runtime.handle().status();
    assert!(
        follower_status.controller.leader.is_none(),
        "two leaders: {:?}",
        follower_status.controller.leader
    );
    // The highest epoch the nodes recorded is pg-west's: nothing after it.
    // (It need not be 1: a guard that fences its node before the first
    // writer record exists records a fence epoch, which the controllers'
    // floor then counts.)
    let admin = pg(cluster);
    use failover::decision::ports::DatabaseAdmin;
    assert_eq!(
        admin.recorded_epoch().await.expect("recorded epoch"),
        Some(epoch)
    );
    for c in controllers {
        c.runtime.shutdown().await;
    }
}

/// The number after the last "epoch " in `text`.
fn epoch_in(text: &str) -> u64 {
    let at = text.rfind("epoch ").expect("an epoch in the text") + "epoch ".len();
    text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("an epoch number")
}

/// Waits until every controller names pg-west the writer; returns the
/// epoch they agree on.
async fn west_is_the_writer(controllers: &[Controller]) -> failover::decision::Epoch {
    let mut epochs = Vec::new();
    for c in controllers {
        let status = wait_status(
            &c.runtime.handle(),
            Duration::from_secs(60),
            "pg-west is the writer",
            |s| s.controller.writer == Some(NodeId(1)),
        )
        .await;
        epochs.push(status.controller.epoch);
    }
    assert!(epochs.windows(2).all(|w| w[0] == w[1]), "{epochs:?}");
    epochs[0]
}

// ------------------------------------------------------------------------
// Controllers as processes: this test binary re-executes itself as one
// controller (the ignored test `controller_process`), so a leader can be
// killed with SIGKILL or paused with SIGSTOP like a real one.

/// Environment variable carrying a controller process's settings.
const CHILD_ENV: &str = "FAILOVER_E2E_CONTROLLER";
/// A controller process exits by itself after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(150);

/// Runs one controller when started by [`spawn_controller`]; a no-op
/// otherwise. It prints `READY dns=<addr>`, then `LEADER <token>` /
/// `FOLLOWER` on every leadership change and `EVENT <text>` for every
/// decision, and exits when its stdin closes (the test ended) or after
/// [`CHILD_LIFETIME`].
#[test]
#[ignore = "runs only as a child process of the tests below"]
fn controller_process() {
    let Ok(settings) = std::env::var(CHILD_ENV) else {
        return;
    };
    let fields: Vec<&str> = settings.split('|').collect();
    let [index, endpoints, east_dsn, west_dsn, east_api, west_api] = fields[..] else {
        panic!("bad {CHILD_ENV}: {settings}");
    };
    let index: usize = index.parse().expect("index");
    let endpoints: Vec<String> = endpoints.split(',').map(str::to_owned).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let apis = [
            east_api.parse().expect("API address"),
            west_api.parse().expect("API address"),
        ];
        let Controller { runtime: rt, dns, .. } =
            start_controller(index, &endpoints, east_dsn, west_dsn, apis).await;
        let handle = rt.handle();
        let mut events = handle.subscribe_events();
        let mut status = handle.watch_status();
        println!("READY dns={}", dns.local_addr());
        let topology = fleet_topology();
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        });
        tokio::pin!(stdin_closed);
        let end = tokio::time::sleep(CHILD_LIFETIME);
        tokio::pin!(end);
        let mut leader = None;
        loop {
            tokio::select! {
                _ = &mut stdin_closed => break,
                () = &mut end => break,
                event = events.recv() => match event {
                    Ok(event) => println!("EVENT {}", event.display(&topology)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => println!("EVENT lagged {n}"),
                    Err(_) => break,
                },
                changed = status.changed() => {
                    if changed.is_err() { break }
                    let now = status.borrow_and_update().controller.leader;
                    if now != leader {
                        leader = now;
                        match now {
                            Some(token) => println!("LEADER {}", token.0),
                            None => println!("FOLLOWER"),
                        }
                    }
                }
            }
        }
        rt.shutdown().await;
    });
}

/// A controller process and what it printed, with when.
struct Process {
    child: tokio::process::Child,
    pid: u32,
    lines: Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
    dns: SocketAddr,
}

impl Process {
    /// Waits (at most `limit`) for a line matching `want`; returns it and when it came.
    async fn wait_line(&self, limit: Duration, want: impl Fn(&str) -> bool) -> (Instant, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(found) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|(_, l)| want(l))
                .cloned()
            {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no such line from controller process {} within {limit:?}; it printed:\n{}",
                self.pid,
                self.printed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn printed(&self) -> String {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn leads(&self) -> bool {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .rev()
            .find(|(_, l)| l.starts_with("LEADER") || l == "FOLLOWER")
            .is_some_and(|(_, l)| l.starts_with("LEADER"))
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {}", self.pid);
    }
}

async fn spawn_controller(index: usize, base: &Base) -> Process {
    use tokio::io::AsyncBufReadExt;
    let [east_api, west_api] = base.apis();
    let settings = [
        index.to_string(),
        base.etcd.endpoints().join(","),
        base.cluster.nodes()[0].admin_dsn(),
        base.cluster.nodes()[1].admin_dsn(),
        east_api.to_string(),
        west_api.to_string(),
    ]
    .join("|");
    let mut child = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "controller_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, settings)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("controller process starts");
    let pid = child.id().expect("pid");
    let stdout = child.stdout.take().expect("stdout");
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().unwrap().push((Instant::now(), line));
        }
    });
    let mut process = Process {
        child,
        pid,
        lines,
        dns: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let (_, ready) = process
        .wait_line(Duration::from_secs(30), |l| l.contains("READY dns="))
        .await;
    // libtest prints `test controller_process ... ` before the test's output.
    let at = ready.find("READY dns=").expect("matched") + "READY dns=".len();
    process.dns = ready[at..].trim().parse().expect("DNS address");
    process
}

/// Which of `processes` leads, waiting until exactly one does.
async fn one_leading_process(processes: &[Process], limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let leaders: Vec<usize> = (0..processes.len())
            .filter(|&i| processes[i].leads())
            .collect();
        if leaders.len() == 1 {
            return leaders[0];
        }
        assert!(
            Instant::now() < deadline,
            "no single leading process within {limit:?}: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Three controller processes over the [`Base`].
struct Fleet {
    base: Base,
    processes: Vec<Process>,
}

async fn fleet() -> Fleet {
    let base = Base::start().await;
    let mut processes = Vec::new();
    for i in 0..VANTAGES.len() {
        processes.push(spawn_controller(i, &base).await);
    }
    Fleet { base, processes }
}

/// The leader is killed with SIGKILL in the middle of a failover, right
/// after it claimed the writer record: a successor takes over within the
/// lease TTL plus a probe interval and finishes the failover at the same
/// epoch — pg-west is promoted once, at the epoch the killed leader claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_failover_is_replaced_and_nothing_is_promoted_twice() {
    let mut fleet = fleet().await;
    let leader = one_leading_process(&fleet.processes, Duration::from_secs(20)).await;
    for p in &fleet.processes {
        wait_answer(p.dns, EAST_IP, Duration::from_secs(15)).await;
    }
    fleet.base.regions.east.stop().await;
    // The leader claims the writer record for pg-west; kill it right then.
    let (_, claim) = fleet.processes[leader]
        .wait_line(Duration::from_secs(60), |l| {
            l.starts_with("EVENT") && l.contains("claiming the writer record for pg-west")
        })
        .await;
    fleet.processes[leader].signal("-KILL");
    let killed_at = Instant::now();
    let _ = fleet.processes[leader].child.wait().await;
    let dead = fleet.processes.remove(leader);
    println!("killed leader's output:\n{}", dead.printed());
    let successor = one_leading_process(&fleet.processes, LEASE_TTL + Duration::from_secs(8)).await;
    let (took_over, _) = fleet.processes[successor]
        .wait_line(Duration::from_secs(1), |l| l.starts_with("LEADER"))
        .await;
    let takeover = took_over.saturating_duration_since(killed_at);
    println!(
        "takeover after kill -9 of the leader: {takeover:?} (lease TTL {LEASE_TTL:?}, probe interval {:?})",
        fleet_policy().interval
    );
    assert!(
        takeover <= LEASE_TTL + fleet_policy().interval + Duration::from_secs(3),
        "takeover took {takeover:?}"
    );
    for p in &fleet.processes {
        wait_answer(p.dns, WEST_IP, Duration::from_secs(30)).await;
    }
    let admin = pg(&fleet.base.cluster);
    use failover::decision::ports::DatabaseAdmin;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Mid-promotion an observation may fail (the node is restarting
        // its connections); the next one tells.
        let west = admin.observe(NodeId(1)).await;
        let west = match west {
            Ok(west) => west,
            Err(error) => {
                assert!(Instant::now() < deadline, "cannot observe pg-west: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // The epoch is recorded right after the promotion itself.
        if let failover::decision::NodeObservation::Primary {
            epoch: Some(epoch), ..
        } = west
        {
            // Promoted at the claimed epoch, by the killed leader or its
            // successor, never at another.
            assert_eq!(epoch.0, epoch_in(&claim), "{west:?} after {claim}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pg-west never became the writer: {west:?}; successor printed:\n{}",
            fleet.processes[successor].printed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        admin.recorded_epoch().await.expect("recorded epoch"),
        Some(failover::decision::Epoch(epoch_in(&claim))),
        "promoted more than once"
    );
}

/// us-east fails and the leader is paused (SIGSTOP) as it starts the
/// failover (its fence sent), past its lease; the successor fails over.
/// Resumed (SIGCONT), the old leader learns it was deposed, abandons its
/// own failover and changes nothing: the writer record, the stored plan and
/// every controller's DNS stay as the successor set them, and pg-west stays
/// the only writer, at the epoch the successor promoted it at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_resumed_after_its_lease_changes_nothing() {
    let fleet = fleet().await;
    let leader = one_leading_process(&fleet.processes, Duration::from_secs(20)).await;
    for p in &fleet.processes {
        wait_answer(p.dns, EAST_IP, Duration::from_secs(15)).await;
    }
    // us-east fails; the leader is paused right as it starts the failover
    // (its fence sent), so it resumes with a failover of its own under way.
    fleet.base.regions.east.stop().await;
    let paused = &fleet.processes[leader];
    paused
        .wait_line(Duration::from_secs(30), |l| {
            l.starts_with("EVENT") && l.contains("fencing pg-east")
        })
        .await;
    paused.signal("-STOP");
    let paused_at = Instant::now();
    let others: Vec<&Process> = (0..fleet.processes.len())
        .filter(|&i| i != leader)
        .map(|i| &fleet.processes[i])
        .collect();
    let successor = loop {
        if let Some(p) = others.iter().find(|p| p.leads()) {
            break *p;
        }
        assert!(
            paused_at.elapsed() < LEASE_TTL + Duration::from_secs(8),
            "no successor while the leader is paused"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!("takeover from a paused leader: {:?}", paused_at.elapsed());
    for p in &others {
        wait_answer(p.dns, WEST_IP, Duration::from_secs(30)).await;
    }
    let (_, promoted) = successor
        .wait_line(Duration::from_secs(60), |l| l.contains("pg-west promoted"))
        .await;
    let seen_before = paused.lines.lock().unwrap().len();
    paused.signal("-CONT");
    let resumed_at = Instant::now();
    paused
        .wait_line(Duration::from_secs(10), |l| l == "FOLLOWER")
        .await;
    println!(
        "the resumed leader stepped down after {:?}",
        resumed_at.elapsed()
    );
    // Let it run for a while: several probe rounds and observations.
    tokio::time::sleep(LEASE_TTL).await;
    let after: Vec<String> = paused.lines.lock().unwrap()[seen_before..]
        .iter()
        .map(|(_, l)| l.clone())
        .collect();
    println!("the resumed leader's output:\n{}", after.join("\n"));
    assert!(
        !after
            .iter()
            .any(|l| l.contains("promoting") || l.contains("fencing")),
        "a deposed leader started a database action after resuming"
    );
    for p in &fleet.processes {
        wait_answer(p.dns, WEST_IP, Duration::from_secs(10)).await;
    }
    let admin = pg(&fleet.base.cluster);
    use failover::decision::ports::DatabaseAdmin;
    assert_eq!(
        admin.recorded_epoch().await.expect("recorded epoch"),
        Some(failover::decision::Epoch(epoch_in(&promoted))),
        "promoted more than once"
    );
    assert!(
        matches!(
            admin.observe(NodeId(1)).await.expect("observe pg-west"),
            failover::decision::NodeObservation::Primary { fenced: false, .. }
        ),
        "pg-west is not the writer"
    );
}

/// The [`Base`] and three in-process controllers, one of them leading and
/// every DNS answering us-east.
async fn in_process_fleet() -> (Base, Vec<Controller>) {
    let base = Base::start().await;
    let mut controllers = Vec::new();
    for i in 0..VANTAGES.len() {
        controllers.push(base.controller(i).await);
    }
    one_leader(&controllers, Duration::from_secs(20)).await;
    for c in &controllers {
        wait_answer(c.dns.local_addr(), EAST_IP, Duration::from_secs(15)).await;
    }
    (base, controllers)
}

/// With one etcd member of three down — the raft leader, forcing an
/// election — a failover still happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_minority_down_still_fails_over() {
    let (base, controllers) = in_process_fleet().await;
    let Base {
        mut etcd,
        cluster,
        regions,
        guards: _guards,
    } = base;
    let member = tokio::task::spawn_blocking(move || {
        let member = etcd.leader().unwrap_or(0);
        etcd.stop_member(member);
        (etcd, member)
    })
    .await
    .expect("stop task");
    let (_etcd, stopped) = member;
    println!("stopped etcd member {stopped} (the raft leader)");
    regions.east.stop().await;
    let epoch = west_is_the_writer(&controllers).await;
    for c in &controllers {
        wait_answer(c.dns.local_addr(), WEST_IP, Duration::from_secs(15)).await;
    }
    use failover::decision::ports::DatabaseAdmin;
    assert_eq!(
        pg(&cluster).recorded_epoch().await.expect("recorded epoch"),
        Some(epoch)
    );
    for c in controllers {
        c.runtime.shutdown().await;
    }
}

/// With two etcd members of three down nobody can lead: us-east fails and
/// nothing is promoted and no DNS answer changes; the controllers say they
/// do not lead. The guards, unable to renew, fence their nodes (the store is
/// what lets a node take writes). Once etcd has its majority back, the
/// writer record still names pg-east, its guard lifts the fence, and a
/// leader is elected again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_majority_down_holds_the_last_state_and_says_why() {
    let (base, controllers) = in_process_fleet().await;
    let Base {
        mut etcd,
        cluster,
        regions,
        guards: _guards,
    } = base;
    let epochs: Vec<_> = controllers
        .iter()
        .map(|c| c.runtime.handle().status().controller.epoch)
        .collect();
    let mut etcd = tokio::task::spawn_blocking(move || {
        etcd.stop_member(1);
        etcd.stop_member(2);
        etcd
    })
    .await
    .expect("stop task");
    for c in &controllers {
        wait_status(
            &c.runtime.handle(),
            LEASE_TTL + Duration::from_secs(10),
            "no controller leads",
            |s| s.controller.leader.is_none(),
        )
        .await;
    }
    regions.east.stop().await;
    // Every controller sees us-east down from its vantage and acts on
    // nothing. (The peers' last verdicts, published before the store went,
    // cannot expire without it: no region changes state; nobody could act.)
    for c in &controllers {
        wait_status(
            &c.runtime.handle(),
            Duration::from_secs(30),
            "us-east seen down from this vantage",
            |s| {
                s.recent_events
                    .iter()
                    .any(|e| e.contains("sees us-east down"))
            },
        )
        .await;
    }
    // Long enough for a promotion (proof timeout included) to have happened.
    tokio::time::sleep(GUARD_TTL + fleet_policy().interval * 4).await;
    for (c, epoch) in controllers.iter().zip(&epochs) {
        let status = c.runtime.handle().status();
        assert_eq!(status.controller.writer, Some(NodeId(0)), "{}", c.name);
        assert_eq!(status.controller.epoch, *epoch, "{}", c.name);
        assert!(
            status
                .recent_events
                .iter()
                .any(|e| e.contains("coordination store:") && e.contains("cannot lead")),
            "{}: {:?}",
            c.name,
            status.recent_events
        );
        wait_answer(c.dns.local_addr(), EAST_IP, Duration::from_secs(2)).await;
    }
    use failover::decision::ports::DatabaseAdmin;
    let admin = pg(&cluster);
    assert!(
        matches!(
            admin.observe(NodeId(1)).await.expect("observe pg-west"),
            failover::decision::NodeObservation::Replica { .. }
        ),
        "pg-west was promoted without a store"
    );
    // pg-east's guard could not renew: it fenced its node.
    let east = admin.observe(NodeId(0)).await.expect("observe pg-east");
    assert!(
        matches!(
            east,
            failover::decision::NodeObservation::Primary { fenced: true, .. }
        ),
        "{east:?}"
    );

    // The majority returns: a leader again, and pg-east (still the named
    // writer) unfenced by its guard; us-east still fails, so the leader
    // now fails over.
    let _etcd = tokio::task::spawn_blocking(move || {
        etcd.start_member(1).expect("member 1 restarts");
        etcd.start_member(2).expect("member 2 restarts");
        etcd
    })
    .await
    .expect("start task");
    one_leader(&controllers, Duration::from_secs(20)).await;
    west_is_the_writer(&controllers).await;
    for c in controllers {
        c.runtime.shutdown().await;
    }
}

/// Start-up errors name the setting: an unreachable store, and settings
/// that do not go together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_coordination_settings_are_named_at_start() {
    let policy = fleet_policy();
    // Nothing listens on this port (bound and released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let endpoints = vec![format!("http://127.0.0.1:{port}")];
    let coordinator = EtcdCoordinator::connect(
        etcd_config(&endpoints, "ctl-east", "east"),
        fleet_topology(),
        &policy,
    )
    .await
    .expect("settings are valid; the store is unreachable");
    let config = Config::new(fleet_topology(), policy.clone()).expect("valid config");
    let cluster_free = PgCluster::new();
    let error = RuntimeBuilder::new(config.clone())
        .database(Arc::new(cluster_free))
        .coordinator(Arc::new(coordinator))
        .start()
        .await
        .err()
        .expect("an unreachable store is an error at start");
    let text = error.to_string();
    assert!(
        matches!(error, RuntimeError::Coordinator(_)) && text.contains(&endpoints[0]),
        "{text}"
    );

    // A probe from another vantage than the coordinator's.
    let coordinator = EtcdCoordinator::connect(
        etcd_config(&endpoints, "ctl-east", "east"),
        fleet_topology(),
        &policy,
    )
    .await
    .expect("valid settings");
    let regions = TwoRegions::start();
    let error = RuntimeBuilder::new(config.clone())
        .database(Arc::new(PgCluster::new()))
        .coordinator(Arc::new(coordinator))
        .probe(EAST, VantageId(1), http_probe(&regions.east, &policy))
        .start()
        .await
        .err()
        .expect("a probe from another vantage is refused");
    let text = error.to_string();
    assert!(
        text.contains("vantage `west`") && text.contains("vantage `east`"),
        "{text}"
    );

    // A lease TTL shorter than the probe interval allows.
    let mut short = etcd_config(&endpoints, "ctl-east", "east");
    short.lease_ttl = policy.interval;
    let error = EtcdCoordinator::connect(short, fleet_topology(), &policy)
        .await
        .err()
        .expect("a lease TTL under 2 intervals is refused");
    assert!(error.to_string().contains("lease_ttl"), "{error}");

    // `serve` without a coordinator.
    let dns = EmbeddedDns::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &fleet_topology(),
        &policy,
        EmbeddedConfig::new(ZONE),
    )
    .await
    .expect("embedded DNS");
    let error = RuntimeBuilder::new(config.clone())
        .database(Arc::new(PgCluster::new()))
        .serve(Arc::new(dns.router()))
        .start()
        .await
        .err()
        .expect("serve without a coordinator is refused");
    assert!(
        error.to_string().contains("RuntimeBuilder::serve needs"),
        "{error}"
    );
    // `serve_writer_name` without a coordinator.
    let error = RuntimeBuilder::new(config)
        .database(Arc::new(PgCluster::new()))
        .serve_writer_name(Arc::new(dns.router()))
        .start()
        .await
        .err()
        .expect("serve_writer_name without a coordinator is refused");
    assert!(
        error
            .to_string()
            .contains("RuntimeBuilder::serve_writer_name needs")
            && error.to_string().contains("RuntimeBuilder::writer_name"),
        "{error}"
    );
}
