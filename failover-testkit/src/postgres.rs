//! A real PostgreSQL primary with streaming replicas, on loopback, in a temp dir.
//!
//! [`PgTestClusterBuilder::start`] runs `initdb` for the primary, starts it on a free
//! `127.0.0.1` port, takes `pg_basebackup -R` copies for the replicas and starts
//! them streaming, synchronously (`synchronous_standby_names = '*'`) or not.
//! Every server process runs as the `postgres` system user (initdb and postgres
//! refuse root), through `runuser -u postgres --` when the test runs as root.
//!
//! [`PgTestClusterBuilder::placements`] puts nodes in network namespaces
//! instead (regions of [`crate::net`]): each listens on its region's
//! address, and a replica streams from the primary's region address, so a
//! cut link stops replication the way a real partition does.
//!
//! Access: the `postgres` superuser authenticates by `trust` (local socket and
//! each node's listen address); the application role [`APP_ROLE`] must give its password
//! ([`APP_PASSWORD`], SCRAM), so a wrong-credentials test is real.
//!
//! `fsync = off` keeps the tests quick. It only matters when the *machine*
//! crashes; a killed process (`kill -9`) still leaves every acknowledged
//! commit in the OS page cache, so `synchronous_commit` semantics — an
//! acknowledged commit is on the synchronous standby — hold for these tests.
//!
//! Each postmaster is a child of the test process (`runuser … postgres -D`),
//! so a killed one is reaped at once and never lingers as a zombie that would
//! look alive to `pg_ctl` and to the next postmaster's lock file check.
//!
//! Dropping the cluster `kill -9`s every postmaster and its children (also
//! ones started by someone else in its data dirs, like a rejoin's `pg_ctl
//! start`), reaps what it started and removes the temp dir, also when the
//! test panicked.

use std::fmt;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod process;
pub mod writer;

use crate::placement::{enter_on_exec, Placement};

pub use process::pg_command;
use process::{
    alive, append, children_of, chown_postgres, free_port, hba, is_ready, kill_tree, proc_stat,
    run, signal_tree,
};

/// The first port of nodes in namespaces: node `i` listens on
/// `NAMESPACED_PORT + i`. A fresh namespace has no other listener, and the
/// index keeps two nodes of one cluster in one namespace apart.
const NAMESPACED_PORT: u16 = 5432;

/// The application role the cluster creates (password authentication).
pub const APP_ROLE: &str = "app";
/// The password of [`APP_ROLE`].
pub const APP_PASSWORD: &str = "app-secret";
/// The database owned by [`APP_ROLE`].
pub const APP_DATABASE: &str = "appdb";

/// Why the cluster could not be set up or changed.
#[derive(Debug)]
#[non_exhaustive]
pub enum PgTestError {
    /// No PostgreSQL binaries were found: install postgresql.
    BinariesMissing(String),
    /// A command failed; its name, exit status and output.
    Command {
        /// What was run.
        command: String,
        /// Exit status and stderr/stdout.
        detail: String,
    },
    /// A file could not be read or written.
    Io {
        /// What was being done.
        what: String,
        /// The error.
        error: std::io::Error,
    },
    /// No node with that index.
    NoSuchNode(usize),
    /// The builder was given something it cannot use.
    Config(String),
}

impl fmt::Display for PgTestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgTestError::BinariesMissing(why) => write!(
                f,
                "PostgreSQL binaries not found ({why}): install postgresql (Debian: apt-get install postgresql)"
            ),
            PgTestError::Command { command, detail } => write!(f, "`{command}` failed: {detail}"),
            PgTestError::Io { what, error } => write!(f, "{what}: {error}"),
            PgTestError::NoSuchNode(i) => write!(f, "no node with index {i} in the test cluster"),
            PgTestError::Config(why) => write!(f, "test cluster configuration: {why}"),
        }
    }
}

impl std::error::Error for PgTestError {}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PgTestError {
    let what = what.into();
    move |error| PgTestError::Io { what, error }
}

/// Finds the PostgreSQL server binaries: `pg_config --bindir` when it points at
/// a directory holding `initdb`, else the newest `/usr/lib/postgresql/*/bin`.
pub fn find_bindir() -> Result<PathBuf, PgTestError> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if dir.join("initdb").is_file() {
                return Ok(dir);
            }
        }
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| PgTestError::BinariesMissing(format!("/usr/lib/postgresql: {e}")))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| PgTestError::BinariesMissing("no /usr/lib/postgresql/*/bin/initdb".into()))
}

/// How to build a [`PgTestCluster`].
#[derive(Clone, Debug)]
pub struct PgTestClusterBuilder {
    replicas: usize,
    synchronous: bool,
    tls: bool,
    names: Vec<String>,
    placements: Vec<Placement>,
}

impl Default for PgTestClusterBuilder {
    fn default() -> Self {
        PgTestClusterBuilder {
            replicas: 1,
            synchronous: false,
            tls: false,
            names: Vec::new(),
            placements: Vec::new(),
        }
    }
}

impl PgTestClusterBuilder {
    /// Number of streaming replicas (default 1).
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }
    /// Whether the primary waits for a standby before acknowledging a commit
    /// (`synchronous_standby_names = '*'`, default false).
    pub fn synchronous(mut self, yes: bool) -> Self {
        self.synchronous = yes;
        self
    }
    /// Whether every node serves TLS only (default false): a throw-away CA
    /// made by rcgen signs a server certificate for `127.0.0.1` and
    /// `localhost`, the nodes run with `ssl = on`, and `pg_hba.conf` rejects
    /// plain TCP connections, so a client that gets in used TLS. The CA is
    /// [`PgTestCluster::tls_root_cert`]. Unix-socket `psql` is unaffected.
    pub fn tls(mut self, yes: bool) -> Self {
        self.tls = yes;
        self
    }
    /// The nodes' names, primary first (default `node0`, `node1`, …): each
    /// node's `cluster_name`, so a replica's `application_name`, which is
    /// what `synchronous_standby_names` names. A node beyond the list keeps
    /// its default name. Names are letters, digits, `-` and `_`.
    pub fn names<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.names = names.into_iter().map(Into::into).collect();
        self
    }
    /// Where each node runs, primary first (default: all on the host's
    /// loopback). A node placed in a network namespace listens on its
    /// placement's address at port 5432 + its index, is started (and its
    /// base backup taken) inside the namespace, and so replicates over the
    /// links between namespaces. A node beyond the list is on loopback.
    pub fn placements<I>(mut self, placements: I) -> Self
    where
        I: IntoIterator<Item = Placement>,
    {
        self.placements = placements.into_iter().collect();
        self
    }
    /// Creates and starts the cluster; blocks for a few seconds.
    pub fn start(self) -> Result<PgTestCluster, PgTestError> {
        PgTestCluster::create(self)
    }
}

/// One PostgreSQL server of a [`PgTestCluster`].
#[derive(Clone, Debug)]
pub struct PgTestNode {
    /// Node name, also its `cluster_name` (the replica's `application_name`).
    pub name: String,
    /// TCP port on [`host`](Self::host).
    pub port: u16,
    /// The address it listens on: 127.0.0.1, or its namespace's address.
    pub host: IpAddr,
    /// The network namespace it runs in (`None`: the host's).
    pub netns: Option<PathBuf>,
    /// Data directory (owned by `postgres`).
    pub data_dir: PathBuf,
    /// Server log file.
    pub log_file: PathBuf,
}

impl PgTestNode {
    /// libpq-style DSN of the `postgres` superuser over TCP (trust).
    pub fn admin_dsn(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres application_name=failover-admin",
            self.host, self.port
        )
    }
    /// libpq-style DSN of [`APP_ROLE`] on [`APP_DATABASE`] with its password.
    pub fn app_dsn(&self) -> String {
        format!(
            "host={} port={} user={APP_ROLE} password={APP_PASSWORD} dbname={APP_DATABASE}",
            self.host, self.port
        )
    }
    /// libpq-style conninfo a replica uses to stream from this node.
    pub fn replication_conninfo(&self) -> String {
        format!("host={} port={} user=postgres", self.host, self.port)
    }
    /// The postmaster's pid from `postmaster.pid`, if it has one.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// The id of the System V shared memory segment the postmaster made
    /// (line 7 of `postmaster.pid`: key and id). A postmaster killed with
    /// `SIGKILL` leaves it behind; only a restart on the same data
    /// directory would remove it.
    fn shm_id(&self) -> Option<String> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let id = text.lines().nth(6)?.split_whitespace().nth(1)?;
        id.chars()
            .all(|c| c.is_ascii_digit())
            .then(|| id.to_owned())
    }
}

/// A running primary and its replicas. Node 0 starts as the primary.
pub struct PgTestCluster {
    bindir: PathBuf,
    nodes: Vec<PgTestNode>,
    /// The `runuser`/`postgres` processes this cluster started.
    children: Mutex<Vec<Child>>,
    /// The CA file when the cluster serves TLS.
    tls_root: Option<PathBuf>,
    /// Names given by the builder, primary first.
    names: Vec<String>,
    /// Placements given by the builder, primary first.
    placements: Vec<Placement>,
    // Declared last: removed after `Drop::drop` stopped the servers.
    dir: tempfile::TempDir,
}

impl fmt::Debug for PgTestCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTestCluster")
            .field("dir", &self.dir.path())
            .field("nodes", &self.nodes)
            .finish()
    }
}

impl PgTestCluster {
    /// A builder: one asynchronous replica by default.
    pub fn builder() -> PgTestClusterBuilder {
        PgTestClusterBuilder::default()
    }

    fn create(b: PgTestClusterBuilder) -> Result<Self, PgTestError> {
        let bindir = find_bindir()?;
        let dir = tempfile::Builder::new()
            .prefix("failover-pg-")
            .tempdir()
            .map_err(io_err("create temp dir"))?;
        fs::create_dir_all(dir.path().join("sock")).map_err(io_err("create socket dir"))?;
        chown_postgres(dir.path())?;
        let mut cluster = PgTestCluster {
            bindir,
            nodes: Vec::new(),
            children: Mutex::new(Vec::new()),
            tls_root: None,
            names: b.names.clone(),
            placements: b.placements.clone(),
            dir,
        };
        cluster.init_primary(b.tls)?;
        for i in 1..=b.replicas {
            cluster.add_replica(i)?;
        }
        if b.synchronous {
            // Set after the base backups so replicas do not inherit it: a
            // promoted replica must not wait for a standby it does not have.
            let conf = cluster.nodes[0].data_dir.join("postgresql.conf");
            append(&conf, "synchronous_standby_names = '*'\n")?;
            cluster.ctl(0, &["reload"])?;
        }
        cluster.wait_streaming(b.replicas)?;
        Ok(cluster)
    }

    fn node_dirs(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join(name),
            self.dir.path().join(format!("{name}.log")),
        )
    }

    fn sock_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn node_conf(&self, node: &PgTestNode) -> String {
        format!(
            "\n# failover-testkit\nport = {}\nlisten_addresses = '{}'\n\
             unix_socket_directories = '{}'\ncluster_name = '{}'\n",
            node.port,
            node.host,
            self.sock_dir().display(),
            node.name
        )
    }

    /// Node `i`'s placement: the builder's, or loopback.
    fn placement(&self, i: usize) -> Placement {
        self.placements.get(i).cloned().unwrap_or_default()
    }

    /// A node that is not started yet, placed as the builder said.
    fn new_node(&self, i: usize, name: String) -> PgTestNode {
        let (data_dir, log_file) = self.node_dirs(&name);
        let placement = self.placement(i);
        PgTestNode {
            name,
            port: 0,
            host: placement.host,
            netns: placement.netns,
            data_dir,
            log_file,
        }
    }

    fn init_primary(&mut self, tls: bool) -> Result<(), PgTestError> {
        let name = self.node_name(0)?;
        let (data_dir, _) = self.node_dirs(&name);
        let mut c = pg_command(&self.bindir, "initdb");
        c.arg("-D").arg(&data_dir).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        ]);
        run(c)?;
        let conf = data_dir.join("postgresql.conf");
        // `dynamic_shared_memory_type = mmap`: dynamic shared memory lives in
        // the data directory and goes with it. With the default (posix) every
        // postmaster killed at clean-up left its segments in /dev/shm — 4 GB
        // after a few hundred runs, until PostgreSQL could not start.
        append(
            &conf,
            "\nwal_level = replica\nmax_wal_senders = 10\nmax_replication_slots = 10\n\
             hot_standby = on\nwal_log_hints = on\nshared_buffers = 16MB\nmax_connections = 40\n\
             fsync = off\nfull_page_writes = on\nwal_receiver_status_interval = 1s\n\
             wal_retrieve_retry_interval = 50ms\nwal_keep_size = 128MB\nlog_line_prefix = '%m [%p] %a '\n\
             dynamic_shared_memory_type = mmap\n",
        )?;
        let hosts: Vec<IpAddr> = self.placements.iter().map(|p| p.host).collect();
        fs::write(data_dir.join("pg_hba.conf"), hba(tls, &hosts))
            .map_err(io_err("write pg_hba.conf"))?;
        if tls {
            self.tls_root = Some(self.write_tls_files(&data_dir)?);
        }
        let mut node = self.new_node(0, name);
        self.start_on_free_port(&mut node)?;
        self.nodes.push(node);
        self.psql(
            0,
            &format!("CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{APP_PASSWORD}'"),
        )?;
        self.psql(
            0,
            &format!("CREATE DATABASE {APP_DATABASE} OWNER {APP_ROLE}"),
        )?;
        Ok(())
    }

    /// Makes a CA and a server certificate, installs the certificate and its
    /// key in `data_dir` with `ssl = on`, and returns the CA's PEM file.
    fn write_tls_files(&self, data_dir: &Path) -> Result<PathBuf, PgTestError> {
        let tls_err = |what: &str| {
            let what = what.to_owned();
            move |e: rcgen::Error| PgTestError::Command {
                command: format!("rcgen: {what}"),
                detail: e.to_string(),
            }
        };
        let ca_key = rcgen::KeyPair::generate().map_err(tls_err("CA key"))?;
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(tls_err("CA params"))?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "failover-testkit PostgreSQL CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)
            .map_err(tls_err("CA certificate"))?;
        let key = rcgen::KeyPair::generate().map_err(tls_err("server key"))?;
        let mut names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        names.extend(self.placements.iter().map(|p| p.host.to_string()));
        names.dedup();
        let cert = rcgen::CertificateParams::new(names)
            .map_err(tls_err("server params"))?
            .signed_by(&key, &ca)
            .map_err(tls_err("server certificate"))?;
        let crt = data_dir.join("server.crt");
        let pem_key = data_dir.join("server.key");
        fs::write(&crt, cert.pem()).map_err(io_err("write server.crt"))?;
        fs::write(&pem_key, key.serialize_pem()).map_err(io_err("write server.key"))?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&pem_key, fs::Permissions::from_mode(0o600))
                .map_err(io_err("chmod server.key"))?;
        }
        chown_postgres(&crt)?;
        chown_postgres(&pem_key)?;
        append(
            &data_dir.join("postgresql.conf"),
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        )?;
        let root = self.dir.path().join("root.crt");
        fs::write(&root, ca.pem()).map_err(io_err("write root.crt"))?;
        Ok(root)
    }

    /// Starts `node` on a fresh free port, retrying when another process took
    /// the port between picking and binding.
    fn start_on_free_port(&self, node: &mut PgTestNode) -> Result<(), PgTestError> {
        let mut last = None;
        for _ in 0..5 {
            node.port = match node.netns {
                // The namespace's port space is the cluster's own.
                Some(_) => NAMESPACED_PORT + self.nodes.len() as u16,
                None => free_port()?,
            };
            append(
                &node.data_dir.join("postgresql.conf"),
                &self.node_conf(node),
            )?;
            match self.pg_ctl_start(node) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(PgTestError::NoSuchNode(usize::MAX)))
    }

    /// Starts the postmaster as a child of this process (through `runuser`,
    /// which reaps it), not through `pg_ctl`: a killed postmaster must not be
    /// left a zombie that `pg_ctl` and the lock file check take for a live
    /// server (the init process of some sandboxes never reaps orphans).
    fn pg_ctl_start(&self, node: &PgTestNode) -> Result<(), PgTestError> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_file)
            .map_err(io_err(format!("open {}", node.log_file.display())))?;
        chown_postgres(&node.log_file)?;
        let log2 = log.try_clone().map_err(io_err("dup log file"))?;
        let mut c = pg_command(&self.bindir, "postgres");
        c.arg("-D")
            .arg(&node.data_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        enter_on_exec(&mut c, node.netns.as_deref())
            .map_err(io_err("enter the node's namespace"))?;
        let mut child = c.spawn().map_err(io_err("spawn postgres"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = fs::read_to_string(&node.log_file).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(PgTestError::Command {
                    command: format!("postgres -D {}", node.data_dir.display()),
                    detail: format!("exited with {status}; log tail: {:?}", tail),
                });
            }
            if is_ready(node, child.id()) {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(PgTestError::Command {
                    command: format!("postgres -D {}", node.data_dir.display()),
                    detail: "not ready after 60 s".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Ok(mut children) = self.children.lock() {
            children.push(child);
        }
        Ok(())
    }

    /// Node `i`'s name: the builder's, or `node{i}`.
    fn node_name(&self, i: usize) -> Result<String, PgTestError> {
        let Some(name) = self.names.get(i) else {
            return Ok(format!("node{i}"));
        };
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(PgTestError::Config(format!(
                "node name {name:?}: use letters, digits, '-' and '_'"
            )));
        }
        Ok(name.clone())
    }

    fn add_replica(&mut self, i: usize) -> Result<(), PgTestError> {
        let name = self.node_name(i)?;
        let mut node = self.new_node(i, name);
        let primary = &self.nodes[0];
        // Taken from the replica's namespace, so the recovery settings it
        // writes (-R) name the primary as the replica reaches it.
        let mut c = pg_command(&self.bindir, "pg_basebackup");
        c.arg("-D")
            .arg(&node.data_dir)
            .args([
                "-h",
                &primary.host.to_string(),
                "-p",
                &primary.port.to_string(),
            ])
            .args([
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ]);
        enter_on_exec(&mut c, node.netns.as_deref())
            .map_err(io_err("enter the node's namespace"))?;
        run(c)?;
        self.start_on_free_port(&mut node)?;
        self.nodes.push(node);
        Ok(())
    }

    fn wait_streaming(&self, replicas: usize) -> Result<(), PgTestError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n = self
                .psql(
                    0,
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                )?
                .trim()
                .parse::<usize>()
                .unwrap_or(0);
            if n >= replicas {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(PgTestError::Command {
                    command: "wait for replicas".into(),
                    detail: format!("{n} of {replicas} replicas streaming after 60 s"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The PEM file of the CA that signed the nodes' certificates, when the
    /// cluster was built with [`tls(true)`](PgTestClusterBuilder::tls).
    pub fn tls_root_cert(&self) -> Option<&Path> {
        self.tls_root.as_deref()
    }

    /// The directory of every node's unix socket: a client on the host
    /// reaches a node placed in a network namespace through it (as
    /// `host=<this dir> port=<node's port>`), whatever links are cut —
    /// namespaces do not separate unix sockets. `pg_hba.conf` trusts every
    /// role there, so a fenced application role (no `LOGIN`) is still refused.
    pub fn socket_dir(&self) -> PathBuf {
        self.sock_dir()
    }

    /// The directory holding PostgreSQL's binaries.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }
    /// All nodes; node 0 started as the primary.
    pub fn nodes(&self) -> &[PgTestNode] {
        &self.nodes
    }
    /// One node.
    pub fn node(&self, i: usize) -> Result<&PgTestNode, PgTestError> {
        self.nodes.get(i).ok_or(PgTestError::NoSuchNode(i))
    }

    fn ctl(&self, i: usize, args: &[&str]) -> Result<Output, PgTestError> {
        let node = self.node(i)?;
        let mut c = pg_command(&self.bindir, "pg_ctl");
        c.arg("-D").arg(&node.data_dir).args(args);
        run(c)
    }

    /// Runs SQL as the superuser through `psql` over the node's unix socket,
    /// returning unaligned, tuples-only output.
    pub fn psql(&self, i: usize, sql: &str) -> Result<String, PgTestError> {
        self.psql_db(i, "postgres", sql)
    }

    /// Like [`psql`](Self::psql), in database `db`.
    pub fn psql_db(&self, i: usize, db: &str, sql: &str) -> Result<String, PgTestError> {
        let node = self.node(i)?;
        let mut c = pg_command(&self.bindir, "psql");
        c.arg("-h")
            .arg(self.sock_dir())
            .args(["-p", &node.port.to_string(), "-U", "postgres", "-d"])
            .args([db, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        let out = run(c)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Crashes a node: SIGKILL to the postmaster and every child it had, like
    /// a machine losing power (minus the page cache).
    pub fn kill(&self, i: usize) -> Result<(), PgTestError> {
        let node = self.node(i)?;
        if let Some(pid) = node.postmaster_pid() {
            kill_tree(pid);
            let deadline = Instant::now() + Duration::from_secs(10);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// Pauses a node: `SIGSTOP` to the postmaster and its children, like a
    /// frozen VM or a long stall. It keeps its sockets and its role, and
    /// answers nothing (connections hang, they are not refused) until
    /// [`resume`](Self::resume).
    pub fn pause(&self, i: usize) -> Result<(), PgTestError> {
        signal_tree(self.running_postmaster(i)?, "STOP")
    }

    /// Resumes a paused node (`SIGCONT` to the postmaster and its children).
    pub fn resume(&self, i: usize) -> Result<(), PgTestError> {
        signal_tree(self.running_postmaster(i)?, "CONT")
    }

    /// Whether node `i`'s postmaster runs (a killed one, zombie or gone,
    /// does not).
    pub fn is_running(&self, i: usize) -> bool {
        self.running_postmaster(i).is_ok()
    }

    fn running_postmaster(&self, i: usize) -> Result<u32, PgTestError> {
        let node = self.node(i)?;
        node.postmaster_pid()
            .filter(|pid| alive(*pid))
            .ok_or_else(|| PgTestError::Config(format!("node {} is not running", node.name)))
    }

    /// Stops a node cleanly (`pg_ctl stop -m fast`).
    pub fn stop(&self, i: usize) -> Result<(), PgTestError> {
        self.ctl(i, &["-w", "-t", "60", "-m", "fast", "stop"])
            .map(|_| ())
    }

    /// Starts a stopped or killed node again with its existing configuration.
    pub fn start_node(&self, i: usize) -> Result<(), PgTestError> {
        let node = self.node(i)?;
        // A killed postmaster's children exit on their own once they notice;
        // wait for them so the new postmaster finds no shared memory in use.
        let pid_file = node.data_dir.join("postmaster.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        // A postmaster killed while paused (by a guard's kill switch, say)
        // stays a zombie: its launcher, `runuser`, stopped itself when its
        // child was stopped and cannot reap it. A zombie's pid passes
        // PostgreSQL's "is the postmaster in postmaster.pid alive" check,
        // so wake the stopped launchers whose postmaster is dead.
        if let Ok(children) = self.children.lock() {
            for launcher in children.iter().map(Child::id) {
                let stopped = proc_stat(launcher)
                    .is_some_and(|f| matches!(f.first().map(String::as_str), Some("T" | "t")));
                if stopped && children_of(launcher).iter().all(|c| !alive(*c)) {
                    let _ = Command::new("kill")
                        .args(["-s", "CONT", &launcher.to_string()])
                        .output();
                }
            }
        }
        // Until the old postmaster is gone, zombie included.
        while pid_file.exists() && Instant::now() < deadline {
            match node.postmaster_pid() {
                Some(pid) if proc_stat(pid).is_some() => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => break,
            }
        }
        if let Ok(mut children) = self.children.lock() {
            children.retain_mut(|child| !matches!(child.try_wait(), Ok(Some(_))));
        }
        self.pg_ctl_start(node)
    }
}

impl Drop for PgTestCluster {
    fn drop(&mut self) {
        let segments: Vec<String> = self.nodes.iter().filter_map(PgTestNode::shm_id).collect();
        for node in &self.nodes {
            if let Some(pid) = node.postmaster_pid() {
                if alive(pid) {
                    kill_tree(pid);
                }
            }
        }
        // Reap the launchers (bounded); they exit once their postmaster died.
        if let Ok(mut children) = self.children.lock() {
            for child in children.iter_mut() {
                let deadline = Instant::now() + Duration::from_secs(5);
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // The killed postmasters' System V segments: a postmaster killed
        // with SIGKILL (here, or by `kill`) leaves its segment behind, and
        // thousands of test runs exhaust the kernel's SHMMNI (4096) until
        // every `initdb` fails with "could not create shared memory
        // segment: No space left on device". (Their dynamic shared memory
        // is in the data directory, `dynamic_shared_memory_type = mmap`,
        // and goes with it.) Removal waits for the last detach, so a
        // straggler still attached is not harmed.
        for id in segments {
            let _ = Command::new("ipcrm").args(["-m", &id]).output();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica_streams(c: &PgTestCluster) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if c.psql(1, "SELECT status FROM pg_stat_wal_receiver")
                .is_ok_and(|s| s.trim() == "streaming")
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    #[test]
    fn nodes_can_be_stopped_killed_and_started_again_and_are_gone_after_drop() {
        let c = PgTestCluster::builder()
            .replicas(1)
            .start()
            .expect("cluster");
        assert_eq!(c.psql(1, "SELECT pg_is_in_recovery()").unwrap().trim(), "t");
        c.stop(1).expect("stop replica");
        assert!(
            c.psql(1, "SELECT 1").is_err(),
            "a stopped node does not answer"
        );
        c.start_node(1).expect("start replica");
        assert!(replica_streams(&c), "replica streams again after a restart");

        let pid = c
            .node(0)
            .unwrap()
            .postmaster_pid()
            .expect("running primary");
        c.kill(0).expect("kill primary");
        assert!(
            c.psql(0, "SELECT 1").is_err(),
            "a killed node does not answer"
        );
        c.start_node(0).expect("restart after crash");
        assert_ne!(c.node(0).unwrap().postmaster_pid(), Some(pid));
        assert_eq!(c.psql(0, "SELECT 1").unwrap().trim(), "1");

        let dir = c.dir.path().to_path_buf();
        let pids: Vec<u32> = c
            .nodes()
            .iter()
            .filter_map(|n| n.postmaster_pid())
            .collect();
        let segments: Vec<String> = c.nodes().iter().filter_map(PgTestNode::shm_id).collect();
        assert_eq!(segments.len(), 2, "each postmaster names its segment");
        let dynamic = c.nodes()[0].data_dir.join("pg_dynshmem");
        assert!(dynamic.is_dir(), "dynamic shared memory in the data dir");
        drop(c);
        assert!(!dir.exists(), "temp dir removed on drop");
        let listed = Command::new("ipcs").arg("-m").output().expect("ipcs runs");
        let listed = String::from_utf8_lossy(&listed.stdout);
        for id in segments {
            assert!(
                !listed
                    .lines()
                    .any(|l| l.split_whitespace().nth(1) == Some(id.as_str())),
                "shared memory segment {id} left behind: {listed}"
            );
        }
        for p in pids {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Path::new(&format!("/proc/{p}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(
                !Path::new(&format!("/proc/{p}")).exists(),
                "postmaster {p} still runs"
            );
        }
    }
}
