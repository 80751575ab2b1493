//! Regions as Linux network namespaces, for chaos drills: each region is a
//! namespace, every pair of regions is joined by its own veth pair, and
//! faults are real — a cut link drops packets in the kernel, a killed
//! process is `kill -9`ed, a paused one is `SIGSTOP`ped.
//!
//! # Topology
//!
//! ```text
//!            east (fo<pid>-<seq>-east)
//!            lo: 10.201.0.1/32  ← the region's address
//!        to-west │          │ to-south
//!   10.200.0.1/30│          │10.200.0.5/30
//!   10.200.0.2/30│          │10.200.0.6/30
//!        to-east │          │ to-east
//!   west ────────┘          └──────── south
//!   lo: 10.201.0.2    to-south ── to-west    lo: 10.201.0.3
//!                  10.200.0.9/30  10.200.0.10/30
//! ```
//!
//! - A region has **one address**, [`Region::addr`] (`10.201.0.<n>`), on
//!   its loopback device. Services bind to it; every other region reaches
//!   it through a host route over their direct link, and leaves with its
//!   own region address as the source, so a server sees the client's
//!   region address whichever link carried the packets.
//! - Each link is a veth pair with a `/30` from `10.200.0.0/16`; the end in
//!   region `a` facing region `b` is named `to-b`. These link addresses are
//!   plumbing; use region addresses.
//! - No region forwards for another: with the link `east`–`west` cut,
//!   `east` and `west` cannot talk, even though both still reach `south`
//!   (a partial partition).
//! - Links carry IPv4 only (no IPv6 link-local addresses), so nothing
//!   crosses a link around the cut rules.
//! - Only the namespaces the harness creates hold these addresses; nothing
//!   is added to the host's namespace, so the host's own addresses and
//!   routes are untouched.
//!
//! # Faults
//!
//! - [`Net::cut`] drops, in the kernel, every packet arriving over one
//!   link, at both ends: a black hole, like most real partitions. Open
//!   connections go silent (the peers' TCP retransmits) and resume after
//!   [`Net::heal`] if neither side gave up meanwhile; new connections time
//!   out. It is a policy-routing rule (`ip rule … iif to-b blackhole`)
//!   placed before the local table. Adding a rule invalidates the routes
//!   that established sockets cached, so they are caught too (a test
//!   holds a connection across a cut); the namespaces also run with
//!   `ip_early_demux = 0`, so no cached route can outlive a rule.
//!   Neighbours are static (ARP would be cut too), so a heal takes effect
//!   at once.
//! - [`Net::isolate`] cuts every link of a region, [`Net::rejoin`] heals them.
//! - [`RegionProcess`] kills (`SIGKILL`), pauses (`SIGSTOP`), resumes
//!   (`SIGCONT`) and restarts a process started in a region, with every
//!   process of its process group.
//! - Delay and loss: the kernel has no `netem`, so a [`TcpProxy`](crate::proxy::TcpProxy) started
//!   in a region by [`Net::proxy`] adds them in user space (see
//!   [`crate::proxy`]).
//!
//! # Running things in a region
//!
//! - [`Net::command`] gives a `std::process::Command` that runs in the
//!   region's namespace; [`Net::spawn`] starts one as a [`RegionProcess`].
//! - [`Net::run`] runs async code on a dedicated OS thread moved into the
//!   namespace, with its own current-thread tokio runtime, so every socket
//!   it opens (a controller, an embedded DNS server, an HTTP API) lives in
//!   the region. [`Net::block_on`] runs one to completion.
//!
//! # Clean-up
//!
//! Dropping the [`Net`] — also while a test unwinds from a panic — kills
//! every process group it started, stops every task and proxy, and deletes
//! its namespaces, which destroys their veth pairs. Namespace names carry
//! the creating process's pid (`fo<pid>-<seq>-<region>`); a run that was
//! killed before it could clean up leaves namespaces whose pid is gone, and
//! the next [`NetBuilder::start`] kills what still runs in them and deletes
//! them.
//!
//! Creating namespaces needs root; without it `start` fails with
//! [`NetError::Unsupported`] and tests skip with that reason.

mod error;
mod ns;
mod plan;
mod process;
mod registry;
mod task;

use std::collections::BTreeSet;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use error::NetError;
pub use plan::{MAX_REGIONS, MAX_REGION_NAME};
pub use process::RegionProcess;
pub use task::{RegionProxy, RegionService, RegionTask};

use crate::placement::Placement;
use crate::proxy::TcpProxyBuilder;
use plan::{link_addrs, link_device, link_mac, owner_pid, region_addr, validate};
pub(crate) use registry::Registry;

/// Where `ip netns add` mounts namespaces.
const NETNS_DIR: &str = "/var/run/netns";
/// Priority of the cut rules: before [`LOCAL_PREF`], so a cut also drops
/// packets for the region's own addresses.
const CUT_PREF: &str = "100";
/// Where the local routing table's rule moves (from its default 0).
const LOCAL_PREF: &str = "1000";
/// How long a server may take to start in its region.
const SERVICE_START: Duration = Duration::from_secs(10);

/// Makes the namespaces of two nets of one process distinct.
static NEXT_NET: AtomicU32 = AtomicU32::new(0);

/// The regions of a [`Net`] to create.
#[derive(Clone, Debug, Default)]
pub struct NetBuilder {
    regions: Vec<String>,
}

impl NetBuilder {
    /// Adds a region: 1 to [`MAX_REGION_NAME`] ASCII letters, digits, `-`
    /// or `_`, unique in the net.
    pub fn region(mut self, name: impl Into<String>) -> Self {
        self.regions.push(name.into());
        self
    }

    /// Deletes namespaces left by crashed runs, then creates one namespace
    /// per region, links every pair, and addresses and routes them. On an
    /// error, whatever was created is removed again.
    pub fn start(self) -> Result<Net, NetError> {
        validate(&self.regions)?;
        if !ns::is_root() {
            return Err(NetError::Unsupported {
                why: "creating network namespaces needs root (effective uid 0)".into(),
            });
        }
        if let Err(e) = Command::new("ip").arg("-V").output() {
            return Err(NetError::Unsupported {
                why: format!("iproute2's `ip` cannot be run ({e}): install iproute2"),
            });
        }
        remove_stale();
        let prefix = format!(
            "fo{}-{}-",
            std::process::id(),
            NEXT_NET.fetch_add(1, Ordering::SeqCst)
        );
        let mut net = Net {
            prefix,
            regions: Vec::new(),
            cuts: Mutex::new(BTreeSet::new()),
            registry: Arc::new(Registry::default()),
        };
        for (index, name) in self.regions.iter().enumerate() {
            let namespace = format!("{}{name}", net.prefix);
            ip(None, &["netns", "add", &namespace]).map_err(unsupported_if_denied)?;
            net.regions.push(Region {
                name: name.clone(),
                namespace,
                addr: region_addr(index),
            });
        }
        for region in &net.regions {
            net.prepare(region)?;
        }
        for i in 0..net.regions.len() {
            for j in i + 1..net.regions.len() {
                net.link(i, j)?;
            }
        }
        Ok(net)
    }
}

/// One region of a [`Net`]: a network namespace and its address.
#[derive(Clone, Debug)]
pub struct Region {
    name: String,
    namespace: String,
    addr: Ipv4Addr,
}

impl Region {
    /// The region's name, as given to [`NetBuilder::region`].
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The region's one address: bind services to it, reach them at it
    /// from any other region.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }
    /// The network namespace's name (`fo<pid>-<seq>-<region>`), for
    /// `ip netns exec` by hand.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
    /// Where the namespace is mounted, `/var/run/netns/<namespace>`.
    pub fn netns_path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.namespace)
    }
    /// A server placement in this region, listening on its address: give
    /// it to a PostgreSQL node or an etcd member.
    pub fn placement(&self) -> Placement {
        Placement::namespace(self.netns_path(), self.addr)
    }
}

/// Regions in network namespaces, linked pairwise, with faults to inject.
/// See the [module docs](self) for the topology. Dropping it removes
/// everything it created.
#[derive(Debug)]
pub struct Net {
    prefix: String,
    regions: Vec<Region>,
    /// Cut links, as (lower, higher) region index.
    cuts: Mutex<BTreeSet<(usize, usize)>>,
    registry: Arc<Registry>,
}

impl Net {
    /// A net to describe region by region, then [`start`](NetBuilder::start).
    pub fn builder() -> NetBuilder {
        NetBuilder::default()
    }

    /// The prefix of every namespace of this net (`fo<pid>-<seq>-`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The regions, in the order they were added.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// The region called `name`.
    pub fn region(&self, name: &str) -> Result<&Region, NetError> {
        self.regions
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| NetError::UnknownRegion {
                region: name.to_owned(),
                known: self.regions.iter().map(|r| r.name.clone()).collect(),
            })
    }

    /// The address of the region called `name` ([`Region::addr`]).
    pub fn addr(&self, name: &str) -> Result<Ipv4Addr, NetError> {
        self.region(name).map(Region::addr)
    }

    // ---- faults on links ------------------------------------------------

    /// Cuts the link between `a` and `b`: packets over it are dropped
    /// silently in both directions. Other links are untouched. Cutting a
    /// cut link does nothing.
    pub fn cut(&self, a: &str, b: &str) -> Result<(), NetError> {
        let (i, j) = self.pair(a, b)?;
        let mut cuts = self.cuts();
        if cuts.contains(&(i, j)) {
            return Ok(());
        }
        self.rule("add", i, j)?;
        if let Err(e) = self.rule("add", j, i) {
            let _ = self.rule("del", i, j);
            return Err(e);
        }
        cuts.insert((i, j));
        tracing::info!(a, b, "net: link cut");
        Ok(())
    }

    /// Heals the link between `a` and `b`. Healing a healthy link does nothing.
    pub fn heal(&self, a: &str, b: &str) -> Result<(), NetError> {
        let (i, j) = self.pair(a, b)?;
        let mut cuts = self.cuts();
        if !cuts.contains(&(i, j)) {
            return Ok(());
        }
        // Both ends, even if one fails, and a rule already gone is healed:
        // a heal that failed half-way can be retried.
        let gone = |r: Result<(), NetError>| match r {
            Err(NetError::Command { stderr, .. }) if stderr.contains("No such file") => Ok(()),
            other => other,
        };
        let first = gone(self.rule("del", i, j));
        gone(self.rule("del", j, i))?;
        first?;
        cuts.remove(&(i, j));
        tracing::info!(a, b, "net: link healed");
        Ok(())
    }

    /// Whether the link between `a` and `b` is cut.
    pub fn is_cut(&self, a: &str, b: &str) -> Result<bool, NetError> {
        let pair = self.pair(a, b)?;
        Ok(self.cuts().contains(&pair))
    }

    /// Cuts every link of `region`: it reaches no other region, and the
    /// others still reach each other.
    pub fn isolate(&self, region: &str) -> Result<(), NetError> {
        self.region(region)?;
        for other in self.others(region) {
            self.cut(region, &other)?;
        }
        Ok(())
    }

    /// Heals every link of `region`, whatever cut it.
    pub fn rejoin(&self, region: &str) -> Result<(), NetError> {
        self.region(region)?;
        for other in self.others(region) {
            self.heal(region, &other)?;
        }
        Ok(())
    }

    /// Heals every link of the net.
    pub fn heal_all(&self) -> Result<(), NetError> {
        let cut: Vec<(usize, usize)> = self.cuts().iter().copied().collect();
        for (i, j) in cut {
            let (a, b) = (self.regions[i].name.clone(), self.regions[j].name.clone());
            self.heal(&a, &b)?;
        }
        Ok(())
    }

    // ---- running things in a region --------------------------------------

    /// A command for `program` that runs in `region`'s namespace: its
    /// sockets are the region's. Configure it further and spawn it, or use
    /// [`Net::spawn`] for a process to kill and restart.
    pub fn command(
        &self,
        region: &str,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Result<Command, NetError> {
        let region = self.region(region)?;
        let mut command = Command::new(program);
        place(&mut command, region)?;
        Ok(command)
    }

    /// Starts the command that `make` builds in `region`, in a process
    /// group of its own. `make` is called again by
    /// [`RegionProcess::restart`]. The harness sets the namespace and the
    /// process group; `make` sets everything else (arguments, environment,
    /// standard streams).
    pub fn spawn<F>(&self, region: &str, make: F) -> Result<RegionProcess, NetError>
    where
        F: FnMut() -> Command + Send + 'static,
    {
        let region = self.region(region)?.clone();
        RegionProcess::start(region, Box::new(make), Arc::clone(&self.registry))
    }

    /// Runs the future that `make` builds on a new OS thread in `region`'s
    /// namespace, on a current-thread tokio runtime of its own (with I/O
    /// and time). Sockets it opens, and threads it starts, are in the
    /// region. Returns once the thread is in the namespace; the handle
    /// stops the future and joins the thread.
    pub fn run<F, Fut, T>(&self, region: &str, make: F) -> Result<RegionTask<T>, NetError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let region = self.region(region)?.clone();
        RegionTask::start(region, Arc::clone(&self.registry), make)
    }

    /// Runs the future that `make` builds in `region` (as [`Net::run`]) to
    /// completion and returns its output. Blocks the calling thread: call
    /// it from synchronous code or `spawn_blocking`. Put a timeout in the
    /// future for anything that may hang.
    pub fn block_on<F, Fut, T>(&self, region: &str, make: F) -> Result<T, NetError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + 'static,
        T: Send + 'static,
    {
        self.run(region, make)?.join()
    }

    /// Starts a server in `region`: `start` runs on a region thread (as
    /// [`Net::run`]) and returns the server's handle, which is handed back
    /// while the runtime keeps serving. For the testkit's servers that
    /// must be started inside a runtime, such as a
    /// [`RegionalApi`](crate::http::RegionalApi) on the region's address.
    pub fn serve<F, Fut, T>(&self, region: &str, start: F) -> Result<RegionService<T>, NetError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = std::io::Result<T>> + 'static,
        T: Send + 'static,
    {
        let namespace = self.region(region)?.namespace.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let task = self.run(region, move || async move {
            match start().await {
                Ok(service) => {
                    let _ = tx.send(Ok(service));
                    std::future::pending::<()>().await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })?;
        let io = |error| NetError::Io {
            what: "start a server".into(),
            namespace: Some(namespace.clone()),
            error,
        };
        match rx.recv_timeout(SERVICE_START) {
            Ok(Ok(service)) => Ok(RegionService::new(service, task)),
            Ok(Err(error)) => Err(io(error)),
            Err(_) => Err(io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("not started after {SERVICE_START:?}"),
            ))),
        }
    }

    /// Starts the proxy that `builder` describes in `region`, listening on
    /// the region's address (at the port of the builder's listen address;
    /// 0, the default, is a free one). Its connections to the upstream
    /// leave from `region`, so they take `region`'s links.
    pub fn proxy(&self, region: &str, builder: TcpProxyBuilder) -> Result<RegionProxy, NetError> {
        let at = self.region(region)?;
        let listen = SocketAddr::from((at.addr, builder.listen_addr().port()));
        let builder = builder.listen(listen);
        self.serve(region, move || builder.start())
    }

    // ---- internals ---------------------------------------------------------

    fn cuts(&self) -> MutexGuard<'_, BTreeSet<(usize, usize)>> {
        self.cuts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The indices of two distinct regions, lower first.
    fn pair(&self, a: &str, b: &str) -> Result<(usize, usize), NetError> {
        let i = self.index(a)?;
        let j = self.index(b)?;
        if i == j {
            return Err(NetError::Config(format!(
                "a link joins two regions; `{a}` was named twice"
            )));
        }
        Ok((i.min(j), i.max(j)))
    }

    fn index(&self, name: &str) -> Result<usize, NetError> {
        self.region(name)?;
        Ok(self
            .regions
            .iter()
            .position(|r| r.name == name)
            .unwrap_or(0))
    }

    fn others(&self, name: &str) -> Vec<String> {
        self.regions
            .iter()
            .filter(|r| r.name != name)
            .map(|r| r.name.clone())
            .collect()
    }

    /// Adds or deletes the rule in region `at` that drops what arrives from `from`.
    fn rule(&self, op: &str, at: usize, from: usize) -> Result<(), NetError> {
        let device = link_device(&self.regions[from].name);
        ip(
            Some(&self.regions[at].namespace),
            &["rule", op, "pref", CUT_PREF, "iif", &device, "blackhole"],
        )
    }

    /// Loopback up with the region's address, the local table's rule moved
    /// after the cut rules, no forwarding, no early demux.
    fn prepare(&self, region: &Region) -> Result<(), NetError> {
        let ns = Some(region.namespace.as_str());
        let addr = format!("{}/32", region.addr);
        ip(ns, &["link", "set", "lo", "up"])?;
        ip(ns, &["addr", "add", &addr, "dev", "lo"])?;
        ip(ns, &["rule", "add", "pref", LOCAL_PREF, "lookup", "local"])?;
        ip(ns, &["rule", "del", "pref", "0"])?;
        let path = region.netns_path();
        let namespace = region.namespace.clone();
        std::thread::scope(|s| {
            s.spawn(|| -> Result<(), NetError> {
                ns::enter(&path).map_err(|error| NetError::Io {
                    what: format!("enter {}", path.display()),
                    namespace: Some(namespace.clone()),
                    error,
                })?;
                for (key, value) in [("ip_forward", "0"), ("ip_early_demux", "0")] {
                    let file = format!("/proc/sys/net/ipv4/{key}");
                    fs::write(&file, value).map_err(|error| NetError::Io {
                        what: format!("write {value} to {file}"),
                        namespace: Some(namespace.clone()),
                        error,
                    })?;
                }
                Ok(())
            })
            .join()
            .unwrap_or_else(|_| Err(NetError::Config("the sysctl thread panicked".into())))
        })
    }

    /// Creates the veth pair between regions `i` and `j`, addresses it and
    /// routes each region's address over it.
    fn link(&self, i: usize, j: usize) -> Result<(), NetError> {
        let (a, b) = (&self.regions[i], &self.regions[j]);
        let (a_dev, b_dev) = (link_device(&b.name), link_device(&a.name));
        let (a_link, b_link) = link_addrs(i, j, self.regions.len());
        let (a_mac, b_mac) = (link_mac(a_link), link_mac(b_link));
        // Both ends are born in their namespaces: nothing ever appears in
        // the host's, so a crash cannot strand a device there.
        ip_line(
            None,
            &format!(
                "link add {a_dev} netns {} address {a_mac} type veth \
                 peer name {b_dev} netns {} address {b_mac}",
                a.namespace, b.namespace
            ),
        )?;
        for (region, dev, own, peer, peer_mac, peer_region) in [
            (a, &a_dev, a_link, b_link, &b_mac, b),
            (b, &b_dev, b_link, a_link, &a_mac, a),
        ] {
            let ns = Some(region.namespace.as_str());
            ip_line(ns, &format!("addr add {own}/30 dev {dev}"))?;
            // IPv4 only: no IPv6 link-local address, so nothing crosses a
            // link that the (IPv4) cut rules would miss.
            ip_line(ns, &format!("link set {dev} addrgenmode none"))?;
            ip_line(ns, &format!("link set {dev} up"))?;
            // A cut also drops ARP (the kernel routes an ARP request's
            // target before answering it), and a neighbour that failed to
            // resolve during a cut would fail the first connections after
            // the heal with "no route to host". Static neighbours keep a
            // cut a pure black hole and a heal immediate.
            ip_line(
                ns,
                &format!("neigh replace {peer} lladdr {peer_mac} dev {dev} nud permanent"),
            )?;
            ip_line(
                ns,
                &format!(
                    "route add {}/32 via {peer} src {}",
                    peer_region.addr, region.addr
                ),
            )?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.registry.shut_down();
        for region in self.regions.iter().rev() {
            if let Err(e) = ip(None, &["netns", "del", &region.namespace]) {
                tracing::warn!(namespace = %region.namespace, "net: namespace not deleted: {e}");
            }
        }
    }
}

/// Runs `ip [-n namespace] args…`, and names the command, the namespace
/// and stderr when it fails.
fn ip(namespace: Option<&str>, args: &[&str]) -> Result<(), NetError> {
    let mut command = Command::new("ip");
    if let Some(ns) = namespace {
        command.args(["-n", ns]);
    }
    command.args(args);
    let text = format!(
        "ip {}{}",
        namespace.map(|n| format!("-n {n} ")).unwrap_or_default(),
        args.join(" ")
    );
    let out = command.output().map_err(|error| NetError::Io {
        what: format!("run `{text}`"),
        namespace: namespace.map(str::to_owned),
        error,
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Command {
            command: text,
            namespace: namespace.map(str::to_owned),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// [`ip`] with its arguments written as one line (no argument of ours
/// holds a space: region names are checked).
fn ip_line(namespace: Option<&str>, line: &str) -> Result<(), NetError> {
    ip(namespace, &line.split_whitespace().collect::<Vec<_>>())
}

/// A failure to create the first namespace for lack of privilege is
/// `Unsupported`, so tests can skip.
fn unsupported_if_denied(e: NetError) -> NetError {
    match &e {
        NetError::Command { stderr, .. }
            if stderr.contains("Permission denied")
                || stderr.contains("Operation not permitted") =>
        {
            NetError::Unsupported { why: e.to_string() }
        }
        _ => e,
    }
}

/// Makes `command`, when spawned, run in the network namespace mounted at
/// `netns` (for other testkit modules that place servers in a region).
pub(crate) fn enter_on_exec(command: &mut Command, netns: &Path) -> std::io::Result<()> {
    ns::place(command, netns)
}

/// Moves the calling thread into the network namespace mounted at `netns`
/// (for probes of servers placed in a region).
pub(crate) fn enter_this_thread(netns: &Path) -> std::io::Result<()> {
    ns::enter(netns)
}

fn place(command: &mut Command, region: &Region) -> Result<(), NetError> {
    let path = region.netns_path();
    ns::place(command, &path).map_err(|error| NetError::Io {
        what: format!("open {}", path.display()),
        namespace: Some(region.namespace.clone()),
        error,
    })
}

/// Deletes namespaces of ours whose creating process is gone: a crashed
/// run's. Failures are logged, not fatal: they are not this run's.
fn remove_stale() {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        // Servers the crashed run started there outlived it; they would
        // keep the namespace (and its veths) alive after the name is gone.
        let pids = Command::new("ip").args(["netns", "pids", &name]).output();
        if let Ok(out) = pids {
            for pid in String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
            {
                if let Err(e) = ns::kill_process(pid) {
                    tracing::warn!(namespace = %name, pid, "net: a stale namespace's process not killed: {e}");
                }
            }
        }
        match ip(None, &["netns", "del", &name]) {
            Ok(()) => {
                tracing::info!(namespace = %name, pid, "net: deleted a stale namespace of a process that is gone")
            }
            Err(e) => tracing::warn!(namespace = %name, "net: stale namespace not deleted: {e}"),
        }
    }
}
