//! The network-namespace harness with real traffic: servers in one region
//! reached from another, links cut and healed (also partially), a region
//! isolated, processes paused and killed, the delay proxy, and clean-up
//! after a drop and after a panic.
//!
//! Every test skips, printing why, where namespaces cannot be created (not
//! root). Every wait is bounded.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use failover_testkit::http::{ApiMode, RegionalApi};
use failover_testkit::net::{Net, NetError, RegionTask};
use failover_testkit::proxy::TcpProxy;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Port of the echo servers (each region has its own address space).
const PORT: u16 = 7000;
/// How long a client waits where an answer is expected not to come.
const SILENCE: Duration = Duration::from_millis(600);
/// How long a client waits where an answer is expected.
const ANSWER: Duration = Duration::from_secs(10);

/// Starts a net of `regions`, or prints why namespaces are unavailable and
/// returns `None` (the test then passes as skipped).
fn start(regions: &[&str]) -> Option<Net> {
    let mut builder = Net::builder();
    for r in regions {
        builder = builder.region(*r);
    }
    // Every start deletes stale namespaces: not while the stale test is
    // still setting one up.
    let started = {
        let _shared = STALE_SETUP.read().unwrap_or_else(|p| p.into_inner());
        builder.start()
    };
    match started {
        Ok(net) => Some(net),
        Err(e) if e.is_unsupported() => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("the net starts: {e}"),
    }
}

/// Held for writing while a test builds a "crashed run's" namespace, which
/// any [`start`] would delete.
static STALE_SETUP: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// What an exchange with an echo server saw.
#[derive(Debug)]
struct Reply {
    /// The address the server saw the client connect from.
    peer: String,
    /// From sending `ping` to reading it back.
    round_trip: Duration,
}

/// Connects to `to`, reads the server's greeting (the client's address as
/// the server sees it), sends `ping` and reads it back, all within `within`.
async fn exchange(to: SocketAddr, within: Duration) -> Result<Reply, String> {
    let run = async {
        let stream = TcpStream::connect(to)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut stream = BufReader::new(stream);
        let mut line = String::new();
        stream
            .read_line(&mut line)
            .await
            .map_err(|e| format!("greeting: {e}"))?;
        let peer = line.trim().to_owned();
        let sent = Instant::now();
        stream
            .get_mut()
            .write_all(b"ping\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        line.clear();
        stream
            .read_line(&mut line)
            .await
            .map_err(|e| format!("echo: {e}"))?;
        if line != "ping\n" {
            return Err(format!("echo was {line:?}"));
        }
        Ok(Reply {
            peer,
            round_trip: sent.elapsed(),
        })
    };
    match tokio::time::timeout(within, run).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {within:?}")),
    }
}

/// Runs [`exchange`] from region `from`.
fn exchange_from(net: &Net, from: &str, to: SocketAddr, within: Duration) -> Result<Reply, String> {
    net.block_on(from, move || exchange(to, within))
        .expect("the client runs in its region")
}

/// Serves one echo connection: the peer's address, then every line back.
async fn serve(stream: TcpStream, peer: SocketAddr) {
    let mut stream = BufReader::new(stream);
    if stream
        .get_mut()
        .write_all(format!("{}\n", peer.ip()).as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let mut line = String::new();
    while matches!(stream.read_line(&mut line).await, Ok(n) if n > 0) {
        if stream.get_mut().write_all(line.as_bytes()).await.is_err() {
            return;
        }
        line.clear();
    }
}

/// An echo server on `region`'s address, running in `region`; returns once it listens.
fn echo_in(net: &Net, region: &str) -> (RegionTask<()>, SocketAddr) {
    let addr = SocketAddr::from((net.addr(region).expect("region"), PORT));
    let (tx, rx) = mpsc::channel();
    let task = net
        .run(region, move || async move {
            let listener = match TcpListener::bind(addr).await {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            loop {
                if let Ok((stream, peer)) = listener.accept().await {
                    tokio::spawn(serve(stream, peer));
                }
            }
        })
        .expect("the server's thread enters its region");
    rx.recv_timeout(ANSWER)
        .expect("the server binds in time")
        .unwrap_or_else(|e| panic!("the server binds {addr}: {e}"));
    (task, addr)
}

#[test]
fn a_server_in_one_region_answers_another_until_the_link_is_cut() {
    let Some(net) = start(&["east", "west"]) else {
        return;
    };
    let (_server, east) = echo_in(&net, "east");
    let west_addr = net.addr("west").expect("west").to_string();

    let reply = exchange_from(&net, "west", east, ANSWER).expect("west reaches east");
    assert_eq!(
        reply.peer, west_addr,
        "the client leaves from its region's address"
    );

    // A connection opened before the cut goes silent during it and carries
    // on after the heal, like a real partition (TCP retransmits).
    let (opened_tx, opened_rx) = mpsc::channel();
    let (cut_tx, cut_rx) = tokio::sync::oneshot::channel::<()>();
    let (silent_tx, silent_rx) = mpsc::channel();
    let (healed_tx, healed_rx) = tokio::sync::oneshot::channel::<()>();
    let held = net
        .run("west", move || async move {
            let stream = TcpStream::connect(east).await.map_err(|e| e.to_string())?;
            let mut stream = BufReader::new(stream);
            let mut line = String::new();
            stream
                .read_line(&mut line)
                .await
                .map_err(|e| e.to_string())?;
            let _ = opened_tx.send(());
            cut_rx.await.map_err(|e| e.to_string())?;
            stream
                .get_mut()
                .write_all(b"during\n")
                .await
                .map_err(|e| e.to_string())?;
            line.clear();
            let during = tokio::time::timeout(SILENCE, stream.read_line(&mut line)).await;
            let _ = silent_tx.send(during.is_err());
            healed_rx.await.map_err(|e| e.to_string())?;
            tokio::time::timeout(ANSWER, stream.read_line(&mut line))
                .await
                .map_err(|_| "no answer after the heal".to_owned())?
                .map_err(|e| e.to_string())?;
            Ok::<String, String>(line)
        })
        .expect("the held client runs");
    opened_rx
        .recv_timeout(ANSWER)
        .expect("the held connection opens");

    net.cut("east", "west").expect("cut");
    assert!(net.is_cut("west", "east").expect("regions"));
    let _ = cut_tx.send(());
    assert!(
        silent_rx
            .recv_timeout(ANSWER)
            .expect("the held client reports"),
        "an open connection is silent while the link is cut"
    );
    let started = Instant::now();
    let err = exchange_from(&net, "west", east, SILENCE).expect_err("a cut link carries nothing");
    assert!(
        err.contains("no answer"),
        "a black hole, not a refusal: {err}"
    );
    assert!(
        started.elapsed() < SILENCE + Duration::from_secs(2),
        "bounded by the client's timeout"
    );

    net.heal("west", "east").expect("heal");
    assert!(!net.is_cut("east", "west").expect("regions"));
    let _ = healed_tx.send(());
    assert_eq!(
        held.join().expect("the held client finishes"),
        Ok("during\n".to_owned()),
        "the open connection resumes after the heal"
    );
    exchange_from(&net, "west", east, ANSWER).expect("west reaches east again");
}

/// Which (from, to) pairs of `regions` exchange within [`SILENCE`] (or
/// [`ANSWER`] when `expect` says they should).
fn reachability(
    net: &Net,
    regions: &[&str],
    servers: &[SocketAddr],
    expect: impl Fn(&str, &str) -> bool,
) {
    for (i, from) in regions.iter().enumerate() {
        for (j, to) in regions.iter().enumerate() {
            if i == j {
                continue;
            }
            let reachable = expect(from, to);
            let within = if reachable { ANSWER } else { SILENCE };
            let result = exchange_from(net, from, servers[j], within);
            assert_eq!(
                result.is_ok(),
                reachable,
                "{from} → {to}: expected {}, got {result:?}",
                if reachable { "an answer" } else { "silence" }
            );
        }
    }
}

#[test]
fn a_partial_partition_cuts_one_link_and_leaves_the_others() {
    let regions = ["east", "west", "south"];
    let Some(net) = start(&regions) else {
        return;
    };
    let servers: Vec<_> = regions.iter().map(|r| echo_in(&net, r)).collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|(_, a)| *a).collect();
    reachability(&net, &regions, &addrs, |_, _| true);

    net.cut("east", "west").expect("cut");
    let east_west = |a: &str, b: &str| matches!((a, b), ("east", "west") | ("west", "east"));
    reachability(&net, &regions, &addrs, |a, b| !east_west(a, b));
    assert!(!net.is_cut("east", "south").expect("regions"));

    net.heal_all().expect("heal");
    reachability(&net, &regions, &addrs, |_, _| true);
}

#[test]
fn an_isolated_region_reaches_no_one_until_it_rejoins() {
    let regions = ["east", "west", "south"];
    let Some(net) = start(&regions) else {
        return;
    };
    let servers: Vec<_> = regions.iter().map(|r| echo_in(&net, r)).collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|(_, a)| *a).collect();

    net.isolate("south").expect("isolate");
    reachability(&net, &regions, &addrs, |a, b| a != "south" && b != "south");

    net.rejoin("south").expect("rejoin");
    reachability(&net, &regions, &addrs, |_, _| true);
}

/// Environment variable that turns [`echo_server_process`] into a server.
const ECHO_ENV: &str = "FAILOVER_NET_ECHO";

/// Not a test: the echo server that [`a_paused_process_stops_answering`]
/// runs as a separate process in a region (this test binary, run again
/// with [`ECHO_ENV`] set). Without the variable it returns at once.
#[test]
#[ignore = "a helper process of other tests"]
fn echo_server_process() {
    let Ok(addr) = std::env::var(ECHO_ENV) else {
        eprintln!("{ECHO_ENV} is not set: nothing to serve");
        return;
    };
    let listener = std::net::TcpListener::bind(addr.as_str()).expect("the echo process binds");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            use std::io::{BufRead, Write};
            let Ok(peer) = stream.peer_addr() else { return };
            let mut writer = &stream;
            if writeln!(writer, "{}", peer.ip()).is_err() {
                return;
            }
            for line in std::io::BufReader::new(&stream).lines() {
                let Ok(line) = line else { return };
                if writeln!(writer, "{line}").is_err() {
                    return;
                }
            }
        });
    }
}

/// Waits (bounded) until `to` answers from `from`.
fn wait_for_answer(net: &Net, from: &str, to: SocketAddr) {
    let deadline = Instant::now() + ANSWER;
    loop {
        match exchange_from(net, from, to, Duration::from_secs(1)) {
            Ok(_) => return,
            Err(e) if Instant::now() > deadline => panic!("{to} never answered from {from}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[test]
fn a_paused_process_stops_answering_and_a_killed_one_restarts() {
    let Some(net) = start(&["east", "west"]) else {
        return;
    };
    let exe = std::env::current_exe().expect("the test binary's path");
    let addr = SocketAddr::from((net.addr("east").expect("east"), PORT));
    let mut server = net
        .spawn("east", move || {
            let mut c = Command::new(&exe);
            c.args([
                "echo_server_process",
                "--exact",
                "--ignored",
                "--test-threads=1",
            ])
            .env(ECHO_ENV, addr.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
            c
        })
        .expect("the echo process starts");
    assert_eq!(server.region(), "east");
    wait_for_answer(&net, "west", addr);

    server.pause().expect("SIGSTOP");
    let err =
        exchange_from(&net, "west", addr, SILENCE).expect_err("a paused process answers nothing");
    assert!(
        err.contains("no answer"),
        "the kernel still accepts; the process is silent: {err}"
    );
    assert!(server.is_running(), "paused is not dead");

    server.resume().expect("SIGCONT");
    exchange_from(&net, "west", addr, ANSWER).expect("a resumed process answers");

    let first = server.pid();
    let status = server.kill().expect("kill -9").expect("it was running");
    assert!(!status.success());
    assert!(!server.is_running());
    let err = exchange_from(&net, "west", addr, ANSWER).expect_err("nothing listens");
    assert!(
        err.contains("refused"),
        "a dead server's host refuses: {err}"
    );
    assert!(matches!(server.pause(), Err(NetError::NotRunning { .. })));

    server.restart().expect("restart");
    assert_ne!(server.pid(), first);
    wait_for_answer(&net, "west", addr);
}

#[test]
fn the_proxy_adds_its_delay_and_drops_connections_by_seed() {
    let Some(net) = start(&["east", "west", "south"]) else {
        return;
    };
    let (_server, east) = echo_in(&net, "east");
    let delay = Duration::from_millis(150);
    let proxy = net
        .proxy("west", TcpProxy::builder(east).delay(delay))
        .expect("the proxy starts in west");
    assert_eq!(proxy.addr().ip(), net.addr("west").expect("west"));

    let direct = exchange_from(&net, "south", east, ANSWER).expect("direct");
    assert!(
        direct.round_trip < delay,
        "the link itself is fast: {direct:?}"
    );
    let slowed = exchange_from(&net, "south", proxy.addr(), ANSWER).expect("through the proxy");
    assert!(
        slowed.round_trip >= 2 * delay,
        "a round trip through the proxy takes at least twice its one-way delay: {slowed:?}"
    );
    assert_eq!(
        slowed.peer,
        net.addr("west").expect("west").to_string(),
        "the proxy connects from west"
    );

    // Drops follow the seed: two proxies with one seed drop the same connections.
    let pattern = |seed: u64| -> (Vec<bool>, u64) {
        let p = net
            .proxy(
                "west",
                TcpProxy::builder(east).drop_probability(0.5).seed(seed),
            )
            .expect("a lossy proxy starts");
        let answered = (0..8)
            .map(|_| exchange_from(&net, "south", p.addr(), SILENCE).is_ok())
            .collect();
        (answered, p.dropped())
    };
    let (first, dropped) = pattern(7);
    let (second, _) = pattern(7);
    assert_eq!(first, second, "one seed, one pattern");
    assert_eq!(dropped, first.iter().filter(|ok| !**ok).count() as u64);
    assert!(
        first.contains(&true) && first.contains(&false),
        "half are dropped: {first:?}"
    );
}

/// Our namespaces still listed by `ip netns list`.
fn listed_namespaces(prefix: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// Host interfaces whose name mentions `needle`.
fn host_links(needle: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// Threads of this process whose name starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
        })
        .count()
}

/// Builds a net with a process, a task and a proxy in it, reports what
/// must disappear, then panics if `panic` (or drops the net if not).
fn populate_then(regions: [&'static str; 2], panic: bool, report: mpsc::Sender<(String, u32)>) {
    let Some(net) = start(&regions) else {
        return;
    };
    let sleeper = net
        .spawn(regions[0], || {
            let mut c = Command::new("sleep");
            c.arg("600");
            c
        })
        .expect("a process starts");
    let (_task, addr) = echo_in(&net, regions[0]);
    let _proxy = net
        .proxy(regions[1], TcpProxy::builder(addr))
        .expect("a proxy starts");
    let _ = report.send((net.prefix().to_owned(), sleeper.pid().expect("started")));
    assert_eq!(threads_named(&format!("region-{}", regions[0])), 1);
    if !panic {
        return; // the net and its handles drop here
    }
    panic!("on purpose, to show the clean-up");
}

fn assert_all_gone(regions: [&str; 2], prefix: &str, pid: u32) {
    assert_eq!(
        listed_namespaces(prefix),
        Vec::<String>::new(),
        "namespaces left"
    );
    for r in regions {
        assert_eq!(
            host_links(&format!("to-{r}")),
            Vec::<String>::new(),
            "links left"
        );
        assert_eq!(
            threads_named(&format!("region-{r}")),
            0,
            "threads left in {r}"
        );
    }
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} left"
    );
}

#[test]
fn everything_is_removed_on_drop_and_after_a_panic() {
    for (regions, panic) in [(["drop-a", "drop-b"], false), (["pan-a", "pan-b"], true)] {
        let (tx, rx) = mpsc::channel();
        let outcome = std::thread::spawn(move || populate_then(regions, panic, tx)).join();
        let Ok((prefix, pid)) = rx.try_recv() else {
            return; // skipped: no namespaces here
        };
        assert_eq!(outcome.is_err(), panic, "the panic is the one we asked for");
        assert_all_gone(regions, &prefix, pid);
    }
}

/// A process group started by a test, `kill -9`ed on drop whatever
/// happened. Its leader is reaped only by [`Orphan::exited`] or the drop,
/// so the group id cannot be reused by a stranger before the kill.
struct Orphan(Option<std::process::Child>);

impl Orphan {
    /// Waits (bounded) until the leader exited, then reaps it.
    fn exited(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        let pid = self.0.as_ref()?.id();
        while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        }) {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.0.take()?.wait().ok()
    }
}

impl Drop for Orphan {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-9", "--", &group]).output();
            let _ = child.wait();
        }
    }
}

#[test]
fn a_stale_namespace_of_a_dead_process_is_removed_at_start() {
    let setup = STALE_SETUP.write().unwrap_or_else(|p| p.into_inner());
    let mut gone = Command::new("true").spawn().expect("true runs");
    let pid = gone.id();
    gone.wait().expect("true ends");
    let stale = format!("fo{pid}-0-stale");
    if Command::new("ip")
        .args(["netns", "add", &stale])
        .output()
        .map_or(true, |o| !o.status.success())
    {
        eprintln!("skipped: cannot create a network namespace here");
        return;
    }
    // A server the crashed run left behind in its namespace.
    let mut orphan = Orphan(Some(
        std::os::unix::process::CommandExt::process_group(
            Command::new("ip").args(["netns", "exec", &stale, "sleep", "600"]),
            0,
        )
        .spawn()
        .expect("a process in the stale namespace"),
    ));
    // Wait until it is in there (`ip netns exec` enters, then runs sleep).
    let deadline = Instant::now() + ANSWER;
    while !Command::new("ip")
        .args(["netns", "pids", &stale])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "the orphan never entered {stale}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(setup);

    let Some(_net) = start(&["east"]) else {
        return;
    };
    assert_eq!(
        listed_namespaces(&stale),
        Vec::<String>::new(),
        "the stale namespace is deleted"
    );
    let status = orphan
        .exited(ANSWER)
        .expect("the stale namespace's process is killed");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed by the clean-up, not ended on its own"
    );
}

#[test]
fn bad_names_and_unknown_regions_are_clear_errors() {
    let err = Net::builder()
        .region("east")
        .region("east")
        .start()
        .expect_err("a region named twice");
    assert!(err.to_string().contains("`east` is named twice"), "{err}");
    let err = Net::builder()
        .region("a/b")
        .start()
        .expect_err("a bad name");
    assert!(err.to_string().contains("a/b"), "{err}");

    let Some(net) = start(&["east", "west"]) else {
        return;
    };
    let err = net.cut("east", "mars").expect_err("no mars");
    assert!(err.to_string().contains("no region `mars`"), "{err}");
    let err = net.cut("east", "east").expect_err("a region with itself");
    assert!(err.to_string().contains("`east` was named twice"), "{err}");
    let err = net
        .spawn("mars", || Command::new("true"))
        .expect_err("no mars");
    assert!(matches!(err, NetError::UnknownRegion { .. }), "{err}");
}

/// `GET /healthz` from `region` to `api`; the whole response, within `within`.
fn get_from(net: &Net, region: &str, api: SocketAddr, within: Duration) -> Result<String, String> {
    net.block_on(region, move || async move {
        let get = async {
            let mut stream = TcpStream::connect(api).await.map_err(|e| e.to_string())?;
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
                .await
                .map_err(|e| e.to_string())?;
            let mut response = Vec::new();
            stream
                .read_to_end(&mut response)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<String, String>(String::from_utf8_lossy(&response).into_owned())
        };
        tokio::time::timeout(within, get)
            .await
            .map_err(|_| format!("no answer within {within:?}"))?
    })
    .expect("the client runs in its region")
}

#[test]
fn a_regional_api_serves_on_its_region_address_and_is_switched_from_the_test() {
    let Some(net) = start(&["east", "west"]) else {
        return;
    };
    let listen = SocketAddr::from((net.addr("east").expect("east"), 8080));
    let api = net
        .serve("east", move || async move {
            RegionalApi::start_at("east", None, listen)
        })
        .expect("the API starts in east");
    assert_eq!(api.addr(), listen);

    let healthy = get_from(&net, "west", listen, ANSWER).expect("west reaches east's API");
    assert!(
        healthy.starts_with("HTTP/1.1 200") && healthy.contains("region=east"),
        "{healthy}"
    );
    api.set_mode(ApiMode::Status(503));
    let failing = get_from(&net, "west", listen, ANSWER).expect("west reaches east's API");
    assert!(failing.starts_with("HTTP/1.1 503"), "{failing}");

    net.cut("east", "west").expect("cut");
    let err = get_from(&net, "west", listen, SILENCE).expect_err("the API is cut off");
    assert!(err.contains("no answer"), "{err}");
}

#[test]
fn a_command_runs_in_its_region_and_sees_its_links() {
    let Some(net) = start(&["east", "west", "south"]) else {
        return;
    };
    let out = net
        .command("west", "ip")
        .expect("west")
        .args(["-o", "-4", "addr"])
        .output()
        .expect("ip runs in west");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let west = net.addr("west").expect("west").to_string();
    let east = net.addr("east").expect("east").to_string();
    assert!(text.contains(&format!("lo    inet {west}/32")), "{text}");
    assert!(
        !text.contains(&format!("{east}/32")),
        "east's address is east's only: {text}"
    );
    assert!(
        text.contains("to-east") && text.contains("to-south"),
        "{text}"
    );
    assert!(
        !text.contains("eth0"),
        "the host's devices are not here: {text}"
    );
}
