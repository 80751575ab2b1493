//! Processes and files of the test cluster: running PostgreSQL binaries as
//! the `postgres` user, free ports, readiness, and killing a postmaster with
//! its children.

use std::fs;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Command, Output};

use super::{io_err, PgTestError, PgTestNode, APP_ROLE};

/// Picks a free loopback TCP port. The port is released before PostgreSQL binds
/// it, so a start retries on a new port if another test takes it meanwhile.
pub(crate) fn free_port() -> Result<u16, PgTestError> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_err("bind 127.0.0.1:0"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(io_err("local_addr"))
}

pub(crate) fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command for a PostgreSQL binary run as the `postgres` user.
pub fn pg_command(bindir: &Path, program: &str) -> Command {
    let exe = bindir.join(program);
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(exe);
        c
    } else {
        Command::new(exe)
    }
}

pub(crate) fn run(mut cmd: Command) -> Result<Output, PgTestError> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(io_err(command.clone()))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(PgTestError::Command {
            command,
            detail: format!(
                "{}; stderr: {}; stdout: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        })
    }
}

pub(crate) fn chown_postgres(path: &Path) -> Result<(), PgTestError> {
    if running_as_root() {
        let mut c = Command::new("chown");
        c.args(["-R", "postgres:postgres"]).arg(path);
        run(c)?;
    }
    Ok(())
}

pub(crate) fn append(path: &Path, text: &str) -> Result<(), PgTestError> {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io_err(format!("open {}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(io_err(format!("append to {}", path.display())))
}

/// `/proc/PID/stat` fields after the command name (which may hold spaces):
/// state, ppid, ...
pub(crate) fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Whether `pid` runs (exists and is not a zombie).
pub(crate) fn alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|f| f.first().map(String::as_str) != Some("Z"))
}

/// Whether the postmaster that `launcher` started wrote "ready" (primary) or
/// "standby" (hot standby) as its status in `postmaster.pid`, as `pg_ctl -w`
/// checks. A stale file of an earlier postmaster does not count.
pub(crate) fn is_ready(node: &PgTestNode, launcher: u32) -> bool {
    let Ok(text) = fs::read_to_string(node.data_dir.join("postmaster.pid")) else {
        return false;
    };
    let lines: Vec<&str> = text.lines().collect();
    let Some(pid) = lines.first().and_then(|l| l.trim().parse::<u32>().ok()) else {
        return false;
    };
    let ours = pid == launcher
        || proc_stat(pid).and_then(|f| f.get(1).and_then(|p| p.parse::<u32>().ok()))
            == Some(launcher);
    let status = lines.get(7).map(|l| l.trim()).unwrap_or("");
    ours && (status == "ready" || status == "standby")
}

/// Children of `pid`, from `/proc/*/stat`.
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            proc_stat(*child).and_then(|f| f.get(1).and_then(|p| p.parse::<u32>().ok()))
                == Some(pid)
        })
        .collect()
}

pub(crate) fn kill_tree(pid: u32) {
    let children = children_of(pid);
    // The postmaster first, so it cannot restart children we then kill.
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
    for c in children {
        let _ = Command::new("kill").args(["-9", &c.to_string()]).output();
    }
}

/// Sends `signal` (a `kill -s` name: `STOP`, `CONT`) to `pid` and to each
/// of its children: a postmaster with its backends, WAL sender or receiver.
pub(crate) fn signal_tree(pid: u32, signal: &str) -> Result<(), PgTestError> {
    let mut c = Command::new("kill");
    c.args(["-s", signal, &pid.to_string()]);
    run(c)?;
    for child in children_of(pid) {
        // A child may have just exited; the postmaster is what must succeed.
        let _ = Command::new("kill")
            .args(["-s", signal, &child.to_string()])
            .output();
    }
    Ok(())
}

/// `pg_hba.conf`: unix-socket trust for the superuser, and for every host
/// the nodes listen on, a password for [`APP_ROLE`] and trust for the rest
/// (replication included).
pub(crate) fn hba(tls: bool, hosts: &[IpAddr]) -> String {
    let tcp = if tls { "hostssl" } else { "host" };
    let mut text = String::from("local all all trust\nlocal replication all trust\n");
    let mut seen = Vec::new();
    for host in std::iter::once(IpAddr::V4(Ipv4Addr::LOCALHOST)).chain(hosts.iter().copied()) {
        if seen.contains(&host) {
            continue;
        }
        seen.push(host);
        let net = match host {
            IpAddr::V4(_) => format!("{host}/32"),
            IpAddr::V6(_) => format!("{host}/128"),
        };
        text.push_str(&format!(
            "{tcp} all {APP_ROLE} {net} scram-sha-256\n{tcp} all all {net} trust\n\
             {tcp} replication all {net} trust\n"
        ));
    }
    text
}
