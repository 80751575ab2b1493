//! A real BIND (`named`) on a free loopback port, in its own temp dir, with one
//! primary zone that accepts RFC 2136 updates signed with a fresh TSIG key
//! (HMAC-SHA256). Stopped (and its dir removed) when the handle drops.
//!
//! Also [`dig`], a thin wrapper over the `dig` binary for checking answers the
//! way an operator would.

use std::fs;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `bind9` package installs the server.
pub const NAMED: &str = "/usr/sbin/named";

/// How long `named` may take to load its zone and answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `named` serving one zone.
#[derive(Debug)]
pub struct BindServer {
    dir: tempfile::TempDir,
    port: u16,
    zone: String,
    key_name: String,
    key_secret: String,
    child: Option<Child>,
}

/// What the zone holds at start.
#[derive(Clone, Debug)]
pub struct BindZone {
    /// The zone apex, with or without the final dot, like `example.test`.
    pub zone: String,
    /// Address records at start: (owner name, absolute or relative to the
    /// zone, address). A or AAAA is chosen from the address.
    pub records: Vec<(String, IpAddr)>,
    /// TTL of the initial records, seconds.
    pub ttl: u32,
}

impl BindZone {
    /// An empty zone (just SOA, NS and the name server's address), TTL 60 s.
    pub fn new(zone: impl Into<String>) -> Self {
        BindZone {
            zone: zone.into(),
            records: Vec::new(),
            ttl: 60,
        }
    }

    /// Adds an initial address record.
    pub fn record(mut self, owner: impl Into<String>, addr: IpAddr) -> Self {
        self.records.push((owner.into(), addr));
        self
    }
}

impl BindServer {
    /// Starts `named` for `zone` on a free 127.0.0.1 port and waits (bounded)
    /// until it answers for the zone. Fails with a clear message when `named`
    /// is not installed.
    pub fn start(zone: BindZone) -> io::Result<Self> {
        if !Path::new(NAMED).exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{NAMED} not found: install bind9 (apt-get install bind9 bind9-dnsutils)"),
            ));
        }
        let (uid, gid) = bind_user()?;
        let dir = tempfile::Builder::new()
            .prefix("failover-bind-")
            .tempdir_in("/tmp")?;
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        let apex = zone.zone.trim_end_matches('.').to_owned();
        let key_name = format!("failover-key-{}.", std::process::id());
        let key_secret = random_secret()?;
        let zone_file = dir.path().join("zone.db");
        fs::write(&zone_file, zone_text(&apex, &zone))?;
        std::os::unix::fs::chown(&zone_file, Some(uid), Some(gid))?;
        let mut server = BindServer {
            dir,
            port: 0,
            zone: format!("{apex}."),
            key_name,
            key_secret,
            child: None,
        };
        let mut last_error = None;
        // A port that was free when probed can be taken before named binds it.
        for _ in 0..5 {
            server.port = free_port()?;
            server.write_config(uid, gid)?;
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    server.stop();
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("named did not start")))
    }

    /// The address it listens on (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port)
    }
    /// The zone apex, with the final dot.
    pub fn zone(&self) -> &str {
        &self.zone
    }
    /// The TSIG key's name, with the final dot.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }
    /// The TSIG key's secret, base64 (32 random bytes), algorithm hmac-sha256.
    pub fn key_secret(&self) -> &str {
        &self.key_secret
    }
    /// The temp dir `named` runs in (config, zone, journal, `named.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops `named` (SIGTERM, then SIGKILL after 5 s) and waits for it.
    /// The zone and its journal stay, so [`restart`](Self::restart) serves
    /// every update made so far.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts `named` again on the same port and waits until it answers.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                // The old process's socket may linger for a moment.
                Err(e) if Instant::now() < deadline => {
                    self.stop();
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether `named` is running (not stopped, not exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    fn write_config(&self, uid: u32, gid: u32) -> io::Result<()> {
        let dir = self.dir.path().display();
        let conf = format!(
            r#"options {{
    directory "{dir}";
    pid-file "{dir}/named.pid";
    session-keyfile "{dir}/session.key";
    managed-keys-directory "{dir}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
    allow-query {{ any; }};
}};
controls {{ }};
key "{key}" {{
    algorithm hmac-sha256;
    secret "{secret}";
}};
zone "{zone}" {{
    type primary;
    file "{dir}/zone.db";
    update-policy {{ grant {key} zonesub ANY; }};
}};
"#,
            port = self.port,
            key = self.key_name,
            secret = self.key_secret,
            zone = self.zone,
        );
        let path = self.conf_path();
        fs::write(&path, conf)?;
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.path().join("named.conf")
    }

    fn spawn_and_wait(&mut self) -> io::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("named.log"))?;
        let child = Command::new(NAMED)
            .arg("-g")
            .args(["-u", "bind", "-n", "1", "-c"])
            .arg(self.conf_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if !self.is_running() {
                return Err(io::Error::other(format!(
                    "named exited during start-up; log tail:\n{}",
                    self.log_tail()
                )));
            }
            if soa_answers(self.addr(), &self.zone) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "named did not answer for {} on {} within {START_TIMEOUT:?}; log tail:\n{}",
                self.zone,
                self.addr(),
                self.log_tail()
            ),
        ))
    }

    /// The last lines of `named`'s log, for error messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(self.dir.path().join("named.log")) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for BindServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `dig @SERVER -p PORT NAME TYPE +short` (1 try, 2 s) and returns the
/// answer lines, sorted.
pub fn dig(server: SocketAddr, name: &str, rtype: &str) -> io::Result<Vec<String>> {
    let out = dig_raw(server, &[name, rtype, "+short"])?;
    let mut lines: Vec<String> = out
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    Ok(lines)
}

/// Runs `dig @SERVER -p PORT ARGS… +time=2 +tries=1` and returns its stdout.
pub fn dig_raw(server: SocketAddr, args: &[&str]) -> io::Result<String> {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(args)
        .args(["+time=2", "+tries=1"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot run dig ({e}): install bind9-dnsutils"),
            )
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "dig {args:?} against {server} failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(stdout)
}

fn zone_text(apex: &str, zone: &BindZone) -> String {
    let mut text = format!(
        "$TTL {ttl}\n@ IN SOA ns1.{apex}. hostmaster.{apex}. 1 3600 600 86400 {ttl}\n@ IN NS ns1.{apex}.\nns1 IN A 127.0.0.1\n",
        ttl = zone.ttl
    );
    for (owner, addr) in &zone.records {
        let kind = if addr.is_ipv4() { "A" } else { "AAAA" };
        text.push_str(&format!("{owner} {} IN {kind} {addr}\n", zone.ttl));
    }
    text
}

/// The `bind` user's uid and gid, from /etc/passwd.
fn bind_user() -> io::Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                ["bind", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
                _ => None,
            }
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no `bind` user: install bind9"))
}

fn random_secret() -> io::Result<String> {
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(data_encoding::BASE64.encode(&bytes))
}

/// A 127.0.0.1 port free for both UDP and TCP right now.
fn free_port() -> io::Result<u16> {
    for _ in 0..50 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::other("no free UDP+TCP port pair on 127.0.0.1"))
}

/// Whether the server answers NOERROR to an SOA query for the zone (so the
/// zone is loaded, not just the socket open).
fn soa_answers(server: SocketAddr, zone: &str) -> bool {
    let Ok(socket) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
        return false;
    };
    if socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .is_err()
    {
        return false;
    }
    let id: u16 = 0x5eed;
    let mut query = Vec::with_capacity(64);
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in zone.trim_end_matches('.').split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 6, 0, 1]);
    if socket.send_to(&query, server).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    match socket.recv_from(&mut buf) {
        Ok((n, _)) if n >= 12 => {
            buf[0..2] == id.to_be_bytes() && buf[2] & 0x80 != 0 && buf[3] & 0x0f == 0
        }
        _ => false,
    }
}
