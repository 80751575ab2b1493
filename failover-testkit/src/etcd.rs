//! A real etcd cluster (Debian's `etcd-server`, etcd 3.4) on loopback: `n`
//! members with free client and peer ports, each in its own data dir under
//! one temp dir. Members can be killed and started again (same ports, same
//! data), to take away a minority or a majority of the cluster. Every member
//! is killed and the temp dir removed when the handle drops, also when a test
//! panics.
//!
//! [`EtcdCluster::start_placed`] puts each member in a network namespace
//! instead (a region of [`crate::net`]), listening on the region's address,
//! so that raft traffic crosses links a drill can cut. The cluster's own
//! health checks then run from inside each member's namespace.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::placement::{enter_on_exec, in_namespace, Placement};

/// Where Debian's `etcd-server` package installs the server.
pub const ETCD: &str = "/usr/bin/etcd";

/// How long a fresh cluster may take to elect a leader and report healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Client port of the first member in a namespace; member `i` there uses
/// `CLIENT_PORT + 2i` and the next port for peers (a fresh namespace has
/// no other listener; the index keeps members in one namespace apart).
const NAMESPACED_CLIENT_PORT: u16 = 2379;

/// One member's process and addresses.
#[derive(Debug)]
struct Member {
    name: String,
    placement: Placement,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// A running etcd cluster of `n` members on 127.0.0.1.
#[derive(Debug)]
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    token: String,
    members: Vec<Member>,
}

impl EtcdCluster {
    /// Starts `n` members (1 ≤ n ≤ 7) and waits (bounded) until every member
    /// reports healthy, which means the cluster has a leader. Fails with a
    /// clear message when etcd is not installed, and with the members' log
    /// tails when it does not come up.
    pub fn start(n: usize) -> io::Result<Self> {
        EtcdCluster::start_placed(vec![Placement::loopback(); n])
    }

    /// Starts one member per placement (1 to 7), like [`start`](Self::start):
    /// a member placed in a namespace runs there and listens on the
    /// placement's address (client port 2379 + 2i, peer port the next).
    pub fn start_placed(placements: Vec<Placement>) -> io::Result<Self> {
        let n = placements.len();
        if !(1..=7).contains(&n) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("EtcdCluster: {n} members; give 1 to 7"),
            ));
        }
        if !Path::new(ETCD).exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{ETCD} not found: install etcd-server (apt-get install etcd-server)"),
            ));
        }
        let mut last_error = None;
        // A port that was free when probed can be taken before etcd binds it.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("failover-etcd-")
                .tempdir_in("/tmp")?;
            let token = dir
                .path()
                .file_name()
                .and_then(|s| s.to_str())
                .unwrap_or("failover-etcd")
                .to_owned();
            let mut members = Vec::with_capacity(n);
            let mut taken = Vec::with_capacity(2 * n);
            for (i, placement) in placements.iter().enumerate() {
                let (client_port, peer_port) = match placement.netns {
                    Some(_) => {
                        let client = NAMESPACED_CLIENT_PORT + 2 * i as u16;
                        (client, client + 1)
                    }
                    None => {
                        let client_port = free_port(&taken)?;
                        taken.push(client_port);
                        let peer_port = free_port(&taken)?;
                        taken.push(peer_port);
                        (client_port, peer_port)
                    }
                };
                members.push(Member {
                    name: format!("m{i}"),
                    placement: placement.clone(),
                    client_port,
                    peer_port,
                    child: None,
                });
            }
            let mut cluster = EtcdCluster {
                dir,
                token,
                members,
            };
            let started = (0..n).try_for_each(|i| cluster.spawn(i, "new"));
            match started.and_then(|()| cluster.wait_healthy(START_TIMEOUT)) {
                Ok(()) => return Ok(cluster),
                Err(e) => last_error = Some(e),
            }
            // `cluster` drops here: its members are killed, its dir removed.
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("etcd did not start")))
    }

    /// Number of members (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no members (never: `start` needs at least one).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Every member's client URL, like `http://127.0.0.1:PORT`, in member
    /// order. A member placed in a region is reached at its region address,
    /// from regions only.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Member `i`'s client URL. Panics if `i` is out of range (a test bug).
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://{}", self.client_addr(i))
    }

    /// Member `i`'s client address.
    pub fn client_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::new(self.members[i].placement.host, self.members[i].client_port)
    }

    /// One HTTP request to member `i`'s client port, from inside its
    /// namespace when it is placed in one.
    fn request(&self, i: usize, method: &str, path: &str, body: &str) -> Option<String> {
        let addr = self.client_addr(i);
        in_namespace(self.members[i].placement.netns.as_deref(), || {
            http_request(addr, method, path, body)
        })
        .ok()
        .flatten()
    }

    /// The temp dir holding every member's data dir and log (`mN.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether member `i` runs (was not stopped and did not exit).
    pub fn is_running(&mut self, i: usize) -> bool {
        matches!(
            self.members[i].child.as_mut().map(Child::try_wait),
            Some(Ok(None))
        )
    }

    /// Kills member `i` at once (SIGKILL, like a crash) and waits for it to
    /// exit. Its data dir stays, so [`start_member`](Self::start_member)
    /// brings it back with its data.
    pub fn stop_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its ports with its data and waits (bounded)
    /// until it answers on its client port; if a majority of the members
    /// then runs, also until every running member reports healthy.
    pub fn start_member(&mut self, i: usize) -> io::Result<()> {
        if self.is_running(i) {
            return Ok(());
        }
        self.stop_member(i);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.spawn(i, "existing")?;
            match self.wait_answering(i, deadline) {
                Ok(()) => break,
                // The killed process's ports may linger for a moment.
                Err(_) if Instant::now() < deadline => {
                    self.stop_member(i);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
        let running = (0..self.len()).filter(|&m| self.is_running(m)).count();
        if running > self.len() / 2 {
            self.wait_healthy(deadline.saturating_duration_since(Instant::now()))?;
        }
        Ok(())
    }

    /// Waits until every running member answers `GET /health` with
    /// `"health":"true"` (it sees a leader), at most `timeout`.
    pub fn wait_healthy(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut unhealthy = None;
            for i in 0..self.len() {
                if self.members[i].child.is_none() {
                    continue;
                }
                if !self.is_running(i) {
                    return Err(io::Error::other(format!(
                        "etcd member {} exited; log tail:\n{}",
                        self.members[i].name,
                        self.log_tail(i)
                    )));
                }
                if !self.is_healthy(i) {
                    unhealthy = Some(i);
                    break;
                }
            }
            let Some(i) = unhealthy else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "etcd member {} at {} not healthy within {timeout:?}; log tail:\n{}",
                        self.members[i].name,
                        self.endpoint(i),
                        self.log_tail(i)
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether member `i` answers `GET /health` with `"health":"true"`: it
    /// runs and sees a leader (a member cut off from the majority does not).
    pub fn is_healthy(&self, i: usize) -> bool {
        self.request(i, "GET", "/health", "")
            .is_some_and(|body| body.contains("\"health\":\"true\""))
    }

    /// The member that is the raft leader now, as the running members report
    /// it (`POST /v3/maintenance/status`); `None` when none knows one. Tests
    /// use it to take away a follower without also forcing an election.
    pub fn leader(&mut self) -> Option<usize> {
        for i in 0..self.len() {
            if !self.is_running(i) {
                continue;
            }
            let Some(body) = self.request(i, "POST", "/v3/maintenance/status", "{}") else {
                continue;
            };
            let (Some(member), Some(leader)) =
                (json_field(&body, "member_id"), json_field(&body, "leader"))
            else {
                continue;
            };
            if member == leader {
                return Some(i);
            }
        }
        None
    }

    /// The last lines of member `i`'s log, for error messages.
    pub fn log_tail(&self, i: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(self.log_path(i)) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[i].name))
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, url(m.placement.host, m.peer_port)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize, state: &str) -> io::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))?;
        let member = &self.members[i];
        let client = url(member.placement.host, member.client_port);
        let peer = url(member.placement.host, member.peer_port);
        let mut command = Command::new(ETCD);
        enter_on_exec(&mut command, member.placement.netns.as_deref())?;
        let child = command
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("{}.etcd", member.name)))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster()])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .args(["--logger", "zap"])
            // etcd 3.5's default (3.4 ships it off): a member that cannot
            // hear the leader (a partial partition) does not force
            // elections that the rest of the cluster did not need.
            .arg("--pre-vote=true")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run {ETCD}: {e}")))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// Waits until member `i` answers any HTTP request on its client port.
    fn wait_answering(&mut self, i: usize, deadline: Instant) -> io::Result<()> {
        loop {
            if !self.is_running(i) {
                return Err(io::Error::other(format!(
                    "etcd member {} exited during start-up; log tail:\n{}",
                    self.members[i].name,
                    self.log_tail(i)
                )));
            }
            if self.request(i, "GET", "/health", "").is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "etcd member {} did not answer on {}; log tail:\n{}",
                        self.members[i].name,
                        self.endpoint(i),
                        self.log_tail(i)
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop_member(i);
        }
        // `dir` drops after this and removes every data dir.
    }
}

/// `http://host:port`, with brackets for IPv6.
fn url(host: IpAddr, port: u16) -> String {
    format!("http://{}", SocketAddr::new(host, port))
}

/// The string value of `"name":"..."` in a flat JSON text.
fn json_field<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let start = body.find(&format!("\"{name}\":\""))? + name.len() + 4;
    let len = body[start..].find('"')?;
    Some(&body[start..start + len])
}

/// One plain HTTP/1.0 request with short timeouts; the whole response, or `None`.
fn http_request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<String> {
    let timeout = Duration::from_millis(500);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    stream
        .write_all(
            format!(
                "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.starts_with("HTTP/").then_some(response)
}

/// A free 127.0.0.1 TCP port not in `taken`. Released before etcd binds it,
/// so a start retries on new ports if another test takes one meanwhile.
fn free_port(taken: &[u16]) -> io::Result<u16> {
    for _ in 0..50 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
    Err(io::Error::other("no free TCP port on 127.0.0.1"))
}
